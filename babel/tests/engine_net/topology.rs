//! The topologies of the simulations.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use re6st_babel::engine::Config;

use super::Net;

impl Net {
    pub fn line(n: usize, seed: u64) -> Net {
        let edges: Vec<_> = (1..n).map(|i| (i - 1, i)).collect();
        Net::new(n, &edges, seed, Config::default())
    }

    pub fn ring(n: usize, seed: u64) -> Net {
        let edges: Vec<_> = (0..n).map(|i| (i, (i + 1) % n)).collect();
        Net::new(n, &edges, seed, Config::default())
    }

    pub fn grid(w: usize, h: usize, seed: u64) -> Net {
        let mut edges = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if x + 1 < w {
                    edges.push((i, i + 1));
                }
                if y + 1 < h {
                    edges.push((i, i + w));
                }
            }
        }
        Net::new(w * h, &edges, seed, Config::default())
    }

    /// A connected random graph: a random spanning tree plus extra random
    /// edges until the mean degree is about `degree`.
    pub fn random(n: usize, degree: usize, seed: u64) -> Net {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let mut edges = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in 1..n {
            let j = rng.random_range(0..i);
            edges.push((j, i));
            seen.insert((j, i));
        }
        while edges.len() < n * degree / 2 {
            let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
            let key = (a.min(b), a.max(b));
            if a != b && seen.insert(key) {
                edges.push(key);
            }
        }
        Net::new(n, &edges, seed, Config::default())
    }
}
