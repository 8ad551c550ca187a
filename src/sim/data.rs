//! The latency data of the repository's `data/latency` (see
//! `data/README.md`): where it is, and how it is read. RTTs are kept in
//! microseconds, as the report's simulator kept them; a pair whose RTT is
//! missing, or below 100 µs (the report's filter), is no edge.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The environment variable that names the latency data directory.
pub const DATA_ENV: &str = "RE6ST_LATENCY_DATA";

/// The report's simulator treats RTTs below this as missing.
const MIN_RTT_US: f64 = 100.0;

/// Finds the latency data: `$RE6ST_LATENCY_DATA` if set, else
/// `data/latency` in the first ancestor of `start` that has one, else the
/// `data/latency` of the source tree this binary was built from.
pub fn find_latency_dir(start: &Path) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(DATA_ENV) {
        let dir = PathBuf::from(dir);
        if dir.is_dir() {
            return Ok(dir);
        }
        bail!("{DATA_ENV} is set but {} is not a directory", dir.display());
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .chain(std::iter::once(built))
        .map(|dir| dir.join("data/latency"))
        .find(|candidate| candidate.is_dir())
        .with_context(|| {
            format!(
                "no data/latency directory above {} nor in {}; pass --data DIR or set {DATA_ENV}",
                start.display(),
                built.display()
            )
        })
}

/// A symmetric RTT matrix in microseconds; 0 means missing (also on the
/// diagonal).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyMatrix {
    /// Name of the data set, as printed in tables ("meridian500 (real)").
    pub name: String,
    n: usize,
    rtt_us: Vec<u32>,
}

impl LatencyMatrix {
    /// A matrix from rows of RTTs in ms; negative, NaN or below 0.1 ms is
    /// missing. Rows must be square; the matrix is made symmetric from the
    /// upper triangle when the two halves disagree.
    pub fn from_ms_rows(name: &str, rows: &[Vec<f64>]) -> anyhow::Result<Self> {
        let n = rows.len();
        let mut rtt_us = vec![0u32; n * n];
        for (i, row) in rows.iter().enumerate() {
            if row.len() != n {
                bail!("row {} has {} values, expected {n}", i + 1, row.len());
            }
            for (j, &ms) in row.iter().enumerate() {
                let us = ms * 1000.0;
                if i == j || us.is_nan() || us < MIN_RTT_US || us > f64::from(u32::MAX) {
                    continue;
                }
                rtt_us[i * n + j] = us.round() as u32;
            }
        }
        for i in 0..n {
            for j in i + 1..n {
                let v = rtt_us[i * n + j];
                rtt_us[j * n + i] = v;
            }
        }
        Ok(LatencyMatrix {
            name: name.to_owned(),
            n,
            rtt_us,
        })
    }

    /// Reads a dense matrix in ms (optionally gzipped): one row per line,
    /// values separated by white space.
    pub fn load_dense_ms(path: &Path, name: &str) -> anyhow::Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut rows = Vec::new();
        for (i, line) in BufReader::with_capacity(1 << 20, reader)
            .lines()
            .enumerate()
        {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let row = line
                .split_ascii_whitespace()
                .map(|v| v.parse::<f64>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{} line {}: not a number", path.display(), i + 1))?;
            rows.push(row);
        }
        Self::from_ms_rows(name, &rows).with_context(|| format!("reading {}", path.display()))
    }

    /// The real Meridian 500-node subset.
    pub fn meridian500(dir: &Path) -> anyhow::Result<Self> {
        Self::load_dense_ms(&dir.join("meridian500_rtt_ms.txt.gz"), "meridian500 (real)")
    }

    /// The synthetic 2500-node matrix (never to be cited as measured data).
    pub fn synthetic2500(dir: &Path) -> anyhow::Result<Self> {
        Self::load_dense_ms(
            &dir.join("synthetic_meridian2500_rtt_ms.txt.gz"),
            "synthetic2500 (SYNTHETIC)",
        )
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.n
    }

    /// RTT between `i` and `j` in µs, `None` if missing.
    #[inline]
    pub fn rtt_us(&self, i: usize, j: usize) -> Option<u32> {
        match self.rtt_us[i * self.n + j] {
            0 => None,
            v => Some(v),
        }
    }

    /// Row `i` (0 = missing).
    #[inline]
    pub fn row(&self, i: usize) -> &[u32] {
        &self.rtt_us[i * self.n..(i + 1) * self.n]
    }

    /// Mean RTT of direct connections in ms over the defined ordered pairs,
    /// and the number of missing unordered pairs.
    pub fn direct_mean_ms(&self) -> (f64, usize) {
        let (mut sum, mut count) = (0u64, 0u64);
        for &v in &self.rtt_us {
            if v > 0 {
                sum += u64::from(v);
                count += 1;
            }
        }
        let pairs = self.n * self.n.saturating_sub(1);
        let missing = (pairs - count as usize) / 2;
        (sum as f64 / count.max(1) as f64 / 1000.0, missing)
    }

    /// Each node's mean RTT to the others (ms), over defined pairs.
    pub fn node_mean_ms(&self) -> Vec<f64> {
        (0..self.n)
            .map(|i| {
                let row = self.row(i);
                let (s, c) = row
                    .iter()
                    .filter(|&&v| v > 0)
                    .fold((0u64, 0u64), |(s, c), &v| (s + u64::from(v), c + 1));
                s as f64 / c.max(1) as f64 / 1000.0
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_tiny_values_are_no_edge() {
        let m = LatencyMatrix::from_ms_rows(
            "t",
            &[
                vec![0.0, 10.0, -1.0],
                vec![10.0, 0.0, 0.05],
                vec![-1.0, 0.05, 0.0],
            ],
        )
        .expect("square");
        assert_eq!(m.rtt_us(0, 1), Some(10_000));
        assert_eq!(m.rtt_us(0, 2), None);
        assert_eq!(m.rtt_us(1, 2), None, "below 100 µs is missing");
        assert_eq!(m.direct_mean_ms(), (10.0, 2));
        assert!(LatencyMatrix::from_ms_rows("t", &[vec![0.0, 1.0]]).is_err());
    }

    /// The real subset as its README describes it: 500 nodes, 27 missing
    /// pairs, mean RTT 79.21 ms. CI has the data; a missing directory fails.
    #[test]
    fn meridian500_matches_its_readme() {
        let dir = find_latency_dir(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("data/latency");
        let m = LatencyMatrix::meridian500(&dir).expect("readable");
        assert_eq!(m.len(), 500);
        let (mean, missing) = m.direct_mean_ms();
        assert_eq!(missing, 27);
        assert!((mean - 79.21).abs() < 0.005, "mean {mean}");
    }
}
