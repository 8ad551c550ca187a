//! `re6st babel-dump`: decode the Babel packets of a pcap capture.

use std::path::PathBuf;

/// Arguments of `re6st babel-dump`.
#[derive(Debug, clap::Args)]
pub struct BabelDumpArgs {
    /// The capture to read (pcap format).
    pub file: PathBuf,
    /// One JSON object per packet instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BabelDumpArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "babel-dump is not implemented yet ({})",
        args.file.display()
    )
}
