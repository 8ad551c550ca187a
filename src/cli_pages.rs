//! What is generated from the clap definitions instead of written by hand:
//! shell completion scripts (`re6st completions SHELL`) and manual pages
//! (`re6st man`), so that neither can drift from the flags.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;

/// Arguments of `re6st completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Install, for example:
  re6st completions bash > /etc/bash_completion.d/re6st   (or ~/.local/share/bash-completion/completions/re6st)
  re6st completions zsh  > \"${fpath[1]}/_re6st\"
  re6st completions fish > ~/.config/fish/completions/re6st.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `re6st man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write re6st.1 and one page per subcommand (re6st-node.1,
    /// re6st-registry-run.1, ...) into this directory instead of printing
    /// re6st.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "re6st", &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("writing the completion script")
}

/// Prints re6st(1), or writes every page into `args.out`.
pub fn man(args: ManArgs) -> anyhow::Result<()> {
    // `re6st help` is clap's, not worth a page (and generate_to leaves it out).
    let cmd = Cli::command().disable_help_subcommand(true);
    match args.out {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing the manual pages into {}", dir.display()))
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            std::io::stdout()
                .write_all(&out)
                .context("writing the manual page")
        }
    }
}
