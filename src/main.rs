//! `re6st`: one binary for the registry, the node, their control commands,
//! the demo network and the simulator.

use clap::Parser;

// The registry, join and identity live in the library (src/lib.rs) so the
// node and the integration tests reuse them.
use re6st::{control, join, node, registry};
// The tunnel policy and driver live in the library too (the node and the
// simulator share them); `crate::tunnels` keeps naming them here.
#[allow(unused_imports)]
use re6st::tunnels;

/// mimalloc instead of glibc malloc: the packet path allocates and frees
/// a buffer per packet on different threads, where glibc's arenas contend.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod babel_dump;
mod bench;
mod cli;
mod cli_pages;
mod demo;
mod sim;
mod soak;
mod tun_setup;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if !cli.command.runs_until_stopped() {
        die_of_sigpipe();
    }
    init_tracing(cli.verbose, cli.command.default_log_level());
    match cli.command.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line, which is what
            // an operator needs to act on.
            eprintln!("re6st: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Restores SIGPIPE's default action, which Rust's runtime sets to
/// ignore: output into a closed pipe then ends the process quietly instead
/// of failing a write (a panic in `println!`).
fn die_of_sigpipe() {
    // SAFETY: called before any thread is spawned; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the level chosen by `-v`.
fn init_tracing(verbose: u8, quiet: &'static str) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => quiet,
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
