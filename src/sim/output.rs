//! Where results go: CSV files, the results table (markdown) and the
//! progress bars on stderr.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One line of the results table: a figure of the report next to ours.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Experiment number and name, e.g. "7 latency".
    pub experiment: String,
    /// What is measured.
    pub quantity: String,
    /// The report's figure, as the report states it.
    pub report: String,
    /// Our figure.
    pub ours: String,
    /// Data set and size.
    pub dataset: String,
    /// Whether it reproduces, and why not when it does not.
    pub note: String,
    /// The SVG that shows it, relative to the output directory.
    pub svg: String,
    /// The command that produced it.
    pub command: String,
}

/// The output directory of a run.
#[derive(Debug, Clone)]
pub struct Out {
    dir: PathBuf,
}

impl Out {
    /// Creates `dir` if needed.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Out {
            dir: dir.to_owned(),
        })
    }

    /// The path of an output file.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `name` (CSV) with a header and rows of already formatted cells.
    pub fn csv(&self, name: &str, header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
        let path = self.path(name);
        let mut text = header.join(",");
        text.push('\n');
        for row in rows {
            text.push_str(&row.join(","));
            text.push('\n');
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Writes `results.md`: the table of `rows`, with links to the SVGs.
    pub fn table(&self, rows: &[Row], seed: u64) -> anyhow::Result<PathBuf> {
        let path = self.path("results.md");
        let mut md = String::new();
        let _ = writeln!(
            md,
            "<!-- written by `re6st sim`, seed {seed}; do not edit by hand -->\n\n\
             | experiment | quantity | report | ours | data set | note | plot | command |\n\
             |---|---|---|---|---|---|---|---|"
        );
        for r in rows {
            let svg = if r.svg.is_empty() {
                String::new()
            } else {
                format!("[svg]({})", r.svg)
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | `{}` |",
                r.experiment, r.quantity, r.report, r.ours, r.dataset, r.note, svg, r.command
            );
        }
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
        f.write_all(md.as_bytes())?;
        Ok(path)
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal, so logs
/// and CI output stay clean).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:28} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Formats a float with `digits` decimals.
pub fn f(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

/// Formats a probability given as `ln p` in scientific notation, however
/// small ("1.2e-345").
pub fn sci_ln(ln_p: f64) -> String {
    if ln_p == f64::NEG_INFINITY {
        return "0".to_owned();
    }
    let l10 = ln_p / std::f64::consts::LN_10;
    let e = l10.floor();
    let m = 10f64.powf(l10 - e);
    format!("{m:.2}e{e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sci_ln_prints_tiny_values() {
        assert_eq!(sci_ln((2.5e-300f64).ln()), "2.50e-300");
        assert_eq!(sci_ln(-1000.0 * std::f64::consts::LN_10), "1.00e-1000");
        assert_eq!(sci_ln(f64::NEG_INFINITY), "0");
    }
}
