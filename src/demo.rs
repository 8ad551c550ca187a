//! `re6st demo`: a registry and several nodes on this machine.

/// Arguments of `re6st demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 6)]
    pub nodes: usize,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("the demo is not implemented yet ({} nodes)", args.nodes)
}
