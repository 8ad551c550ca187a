//! The control socket of a running node and its command-line client.

use std::path::PathBuf;

/// What a control command asks a node for.
#[derive(Debug, Clone, Copy)]
pub enum Query {
    Status,
    Peers,
    Tunnels,
    Routes,
}

/// Arguments shared by `re6st status/peers/tunnels/routes`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// State directory of the node to ask.
    #[arg(long)]
    pub dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(query: Query, args: ClientArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "the control client is not implemented yet ({query:?}, {})",
        args.dir.display()
    )
}
