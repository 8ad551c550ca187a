//! `re6st join`: enrol with a registry and write the node's state directory.

use std::path::PathBuf;

/// Arguments of `re6st join`.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// State directory to write.
    #[arg(long)]
    pub dir: PathBuf,
}

pub fn run(args: JoinArgs) -> anyhow::Result<()> {
    anyhow::bail!("join is not implemented yet ({})", args.dir.display())
}
