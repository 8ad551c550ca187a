//! Command-line interface: one subcommand per role. Each subcommand's
//! arguments live next to the code that runs it.

use clap::{Parser, Subcommand};

use crate::{
    babel_dump, bench, cli_pages, control, demo, join, node, registry, sim, soak, tun_setup,
};

/// `re6st --version`: the release and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RE6ST_COMMIT"),
    ")"
);

/// `re6st --version` with the target too (which build a report came from).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RE6ST_COMMIT"),
    ")\ntarget: ",
    env!("RE6ST_TARGET")
);

/// re6st-rs: a resilient IPv6 overlay network in one userspace process.
///
/// A registry hands out certificates and IPv6 prefixes; every node keeps
/// QUIC tunnels to random peers, routes over them with Babel (RTT metric)
/// and keeps replacing its least useful tunnel.
#[derive(Debug, Parser)]
#[command(
    name = "re6st",
    version = VERSION,
    long_version = LONG_VERSION,
    propagate_version = true
)]
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
    #[command(
        after_long_help = "Signals: SIGTERM or SIGINT stop the node cleanly (Babel retracts its \
routes, tunnels close, the route it installed goes). SIGHUP re-reads the configuration file and \
applies tunnel-replacement, gateway, gateway-metric and metrics without dropping a tunnel; other \
changed options are logged as needing a restart."
    )]
    Node(node::NodeArgs),
    /// Make the TUN device a node attaches to without privileges (run
    /// once as root in the node's network namespace, after enrolment).
    TunSetup(tun_setup::TunSetupArgs),
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
    /// Run a registry and many nodes on this machine for minutes or hours
    /// under a chaos schedule (kills, freezes, wiped state, registry
    /// restarts, cut and degraded links, revocations), measuring all-pairs
    /// reachability, outages after each fault, memory and descriptors.
    Soak(soak::SoakArgs),
    /// Reproduce the figures of the 2012 re6stnet report.
    Sim(sim::SimArgs),
    /// Decode the Babel packets of a pcap capture.
    BabelDump(babel_dump::BabelDumpArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or
    /// PowerShell.
    Completions(cli_pages::CompletionsArgs),
    /// Print the manual page re6st(1), or write every page with --out.
    Man(cli_pages::ManArgs),
    /// Measure the packet path (root): raw veth, two nodes, a three-node
    /// chain, TCP and ping RTT, and the CPU of an idle node.
    Bench(bench::BenchArgs),
}

impl Command {
    /// The log level without `-v` or `RUST_LOG`: the demo prints its own
    /// story and keeps the nodes' logs for warnings; so does `sim network`,
    /// whose thousands of nodes would log every tunnel.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Demo(_) | Command::Bench(_) | Command::Soak(_) => "warn",
            Command::Sim(s) if matches!(s.experiment, sim::Experiment::Network(_)) => "warn",
            _ => "info",
        }
    }

    /// Whether the command runs until stopped and cleans up behind it (a
    /// node, a registry server, the demo, the benchmarks). Those keep
    /// SIGPIPE ignored: a closed stdout must not kill them before they
    /// retract routes or remove what they made. Every other command dies
    /// quietly of SIGPIPE when its reader goes away (`| head`, `| grep -q`),
    /// as command-line tools do.
    pub fn runs_until_stopped(&self) -> bool {
        matches!(
            self,
            Command::Node(_)
                | Command::Registry(registry::RegistryCommand::Run(_))
                | Command::Demo(_)
                | Command::Bench(_)
        )
    }

    /// Runs the chosen subcommand to completion.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Registry(cmd) => registry::run(cmd),
            Command::Join(args) => join::run(args),
            Command::Node(args) => node::run(args),
            Command::TunSetup(args) => tun_setup::run(args),
            Command::Status(args) => control::run(control::Query::Status, args),
            Command::Peers(args) => control::run(control::Query::Peers, args),
            Command::Tunnels(args) => control::run(control::Query::Tunnels, args),
            Command::Routes(args) => control::run(control::Query::Routes, args),
            Command::Demo(args) => demo::run(args),
            Command::Soak(args) => soak::run(args),
            Command::Sim(args) => sim::run(args),
            Command::BabelDump(args) => babel_dump::run(args),
            Command::Completions(args) => cli_pages::completions(args),
            Command::Man(args) => cli_pages::man(args),
            Command::Bench(args) => bench::run(args),
        }
    }
}
