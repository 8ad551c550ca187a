//! `re6st node`: the overlay router.

use std::path::PathBuf;

/// Arguments of `re6st node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// State directory (key, certificate, CA, peer DB, control socket).
    #[arg(long)]
    pub dir: PathBuf,
}

pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    anyhow::bail!("the node is not implemented yet ({})", args.dir.display())
}
