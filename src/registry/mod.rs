//! The registry: CA, prefix allocation, CRL, network configuration and
//! bootstrap peers, served over HTTPS.

/// `re6st registry` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Run the registry server.
    Run,
}

pub fn run(cmd: RegistryCommand) -> anyhow::Result<()> {
    anyhow::bail!("the registry is not implemented yet ({cmd:?})")
}
