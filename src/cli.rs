//! Command-line interface: one subcommand per role. Each subcommand's
//! arguments live next to the code that runs it.

use clap::{Parser, Subcommand};

use crate::{babel_dump, control, demo, join, node, registry, sim};

/// re6st-rs: a resilient IPv6 overlay network in one userspace process.
///
/// A registry hands out certificates and IPv6 prefixes; every node keeps
/// QUIC tunnels to random peers, routes over them with Babel (RTT metric)
/// and keeps replacing its least useful tunnel.
#[derive(Debug, Parser)]
#[command(name = "re6st", version, propagate_version = true)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The roles and tools of the `re6st` binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run or administer a registry (CA, prefix allocation, CRL, bootstrap).
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Enrol a node with a registry and write its state directory.
    Join(join::JoinArgs),
    /// Run a node.
    Node(node::NodeArgs),
    /// Show a running node's status.
    Status(control::ClientArgs),
    /// List a running node's peer database.
    Peers(control::ClientArgs),
    /// List a running node's tunnels.
    Tunnels(control::ClientArgs),
    /// List a running node's routes.
    Routes(control::ClientArgs),
    /// Start a registry and several nodes on this machine and show them working.
    Demo(demo::DemoArgs),
    /// Reproduce the figures of the 2012 re6stnet report.
    Sim(sim::SimArgs),
    /// Decode the Babel packets of a pcap capture.
    BabelDump(babel_dump::BabelDumpArgs),
}

impl Command {
    /// The log level without `-v` or `RUST_LOG`: the demo prints its own
    /// story and keeps the nodes' logs for warnings.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Demo(_) => "warn",
            _ => "info",
        }
    }

    /// Runs the chosen subcommand to completion.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Registry(cmd) => registry::run(cmd),
            Command::Join(args) => join::run(args),
            Command::Node(args) => node::run(args),
            Command::Status(args) => control::run(control::Query::Status, args),
            Command::Peers(args) => control::run(control::Query::Peers, args),
            Command::Tunnels(args) => control::run(control::Query::Tunnels, args),
            Command::Routes(args) => control::run(control::Query::Routes, args),
            Command::Demo(args) => demo::run(args),
            Command::Sim(args) => sim::run(args),
            Command::BabelDump(args) => babel_dump::run(args),
        }
    }
}
