//! `re6st sim`: the report's experiments, run on the node's tunnel policy.

/// Arguments of `re6st sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// The experiment to run.
    pub experiment: String,
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    anyhow::bail!("the simulator is not implemented yet ({})", args.experiment)
}
