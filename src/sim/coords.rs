//! Vivaldi network coordinates (Dabek et al., SIGCOMM 2004: 2-D Euclidean
//! plus a height), as nodes could compute them from the RTTs of their own
//! tunnels and carry them in their signed announcements (3 × f32 and an
//! error estimate: 16 bytes). [`crate::tunnels::Replacement::Shortcut`]
//! uses them to estimate the direct RTT to a destination without probing.

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;

use super::data::LatencyMatrix;

/// Weight of a sample in the coordinate update (the paper's `c_c`).
const CC: f64 = 0.25;
/// Weight of a sample in the error update (the paper's `c_e`).
const CE: f64 = 0.25;
/// Smallest height (ms): keeps every estimate positive.
const MIN_HEIGHT: f64 = 0.1;

/// One node's coordinate.
#[derive(Debug, Clone, Copy)]
struct Coord {
    x: f64,
    y: f64,
    /// The access-link part of every RTT from this node (ms).
    h: f64,
    /// Relative error estimate, 1 = knows nothing.
    err: f64,
}

/// The coordinates of every node.
#[derive(Debug, Clone)]
pub struct Vivaldi {
    c: Vec<Coord>,
}

impl Vivaldi {
    /// `n` nodes near the origin (a little apart, so that the first samples
    /// have a direction).
    pub fn new(n: usize, rng: &mut Xoshiro256PlusPlus) -> Self {
        let c = (0..n)
            .map(|_| Coord {
                x: rng.random::<f64>() - 0.5,
                y: rng.random::<f64>() - 0.5,
                h: MIN_HEIGHT,
                err: 1.0,
            })
            .collect();
        Vivaldi { c }
    }

    /// The estimated RTT (ms) between `i` and `j`.
    pub fn estimate_ms(&self, i: usize, j: usize) -> f64 {
        let (a, b) = (&self.c[i], &self.c[j]);
        (a.x - b.x).hypot(a.y - b.y) + a.h + b.h
    }

    /// Node `i` measured `rtt_ms` to `j` (whose coordinate it got from
    /// `j`'s announcement) and moves its own coordinate.
    pub fn sample(&mut self, i: usize, j: usize, rtt_ms: f64) {
        if i == j || rtt_ms.is_nan() || rtt_ms <= 0.0 {
            return;
        }
        let (a, b) = (self.c[i], self.c[j]);
        let est = self.estimate_ms(i, j);
        let w = a.err / (a.err + b.err).max(1e-9);
        let es = (est - rtt_ms).abs() / rtt_ms;
        let err = (es * CE * w + a.err * (1.0 - CE * w)).min(1.0);
        let delta = CC * w * (rtt_ms - est);
        let (dx, dy) = (a.x - b.x, a.y - b.y);
        let norm = dx.hypot(dy);
        // The unit vector from j to i in the height-vector space; a random
        // direction when the two coincide.
        let (ux, uy) = if norm > 1e-9 {
            (dx / norm, dy / norm)
        } else {
            let t = (i as f64 * 0.618_033_988_7 + j as f64 * 0.414_213_562_3).fract()
                * std::f64::consts::TAU;
            (t.cos(), t.sin())
        };
        // Serf's form of the height update: the height takes the share of
        // the force that the heights have in the distance.
        let c = &mut self.c[i];
        c.x += delta * ux;
        c.y += delta * uy;
        if norm > 1e-9 {
            c.h = ((a.h + b.h) * delta / norm + a.h).max(MIN_HEIGHT);
        }
        c.err = err;
    }

    /// `rounds` passes over `edges` (tunnels), both ends updating from the
    /// other, in a random order per pass.
    pub fn update(
        &mut self,
        edges: &[(u32, u32)],
        m: &LatencyMatrix,
        rounds: usize,
        rng: &mut Xoshiro256PlusPlus,
    ) {
        let mut order: Vec<usize> = (0..edges.len()).collect();
        for _ in 0..rounds {
            for k in (1..order.len()).rev() {
                order.swap(k, rng.random_range(0..=k));
            }
            for &e in &order {
                let (i, j) = (edges[e].0 as usize, edges[e].1 as usize);
                if let Some(us) = m.rtt_us(i, j) {
                    let ms = f64::from(us) / 1000.0;
                    self.sample(i, j, ms);
                    self.sample(j, i, ms);
                }
            }
        }
    }

    /// Median and 90th percentile of the relative error |estimate − RTT| /
    /// RTT over every pair with an RTT in `m`.
    pub fn relative_error(&self, m: &LatencyMatrix) -> (f64, f64) {
        let n = m.len();
        let mut errs = Vec::with_capacity(n * (n - 1) / 2);
        for i in 0..n {
            for j in i + 1..n {
                if let Some(us) = m.rtt_us(i, j) {
                    let rtt = f64::from(us) / 1000.0;
                    errs.push((self.estimate_ms(i, j) - rtt).abs() / rtt);
                }
            }
        }
        if errs.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        errs.sort_by(f64::total_cmp);
        let at = |q: f64| errs[((errs.len() - 1) as f64 * q) as usize];
        (at(0.5), at(0.9))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// Nodes on a plane: 4 corners of a 30 × 40 ms rectangle and its
    /// centre. Coordinates learnt from a ring of samples (each node only
    /// measures two others) predict the pairs never measured within 25 %.
    #[test]
    fn learns_a_plane_from_some_pairs_and_predicts_the_others() {
        let pts = [
            (0.0, 0.0),
            (30.0, 0.0),
            (30.0, 40.0),
            (0.0, 40.0),
            (15.0, 20.0),
        ];
        let rows: Vec<Vec<f64>> = pts
            .iter()
            .map(|a: &(f64, f64)| {
                pts.iter()
                    .map(|b| (a.0 - b.0).hypot(a.1 - b.1) + 2.0)
                    .collect()
            })
            .collect();
        let mut rows = rows;
        for (i, r) in rows.iter_mut().enumerate() {
            r[i] = 0.0;
        }
        let m = LatencyMatrix::from_ms_rows("plane", &rows).expect("square");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut v = Vivaldi::new(5, &mut rng);
        let ring = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 0), (4, 2), (4, 1)];
        v.update(&ring, &m, 400, &mut rng);
        // 1-3 (the diagonal, 52 ms) and 4-3 were never measured.
        for (i, j) in [(1usize, 3usize), (3, 4)] {
            let rtt = rows[i][j];
            let e = v.estimate_ms(i, j);
            assert!((e - rtt).abs() / rtt < 0.25, "{i}-{j}: {e} vs {rtt}");
        }
        let (median, _) = v.relative_error(&m);
        assert!(median < 0.1, "median relative error {median}");
    }
}
