//! Compact undirected graphs (CSR) for up to millions of nodes, and the
//! graph-only measures: hop distances by BFS, connected components.

use std::collections::VecDeque;

/// An undirected graph in compressed sparse rows: the neighbours of `v` are
/// `targets[offsets[v]..offsets[v+1]]`, each edge stored at both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    offsets: Vec<usize>,
    targets: Vec<u32>,
}

impl Csr {
    /// Builds the graph of `n` nodes from undirected edges (each listed
    /// once). Neighbour order follows the edge order, so it is deterministic.
    pub fn from_edges(n: usize, edges: &[(u32, u32)]) -> Self {
        let mut degree = vec![0usize; n + 1];
        for &(a, b) in edges {
            degree[a as usize] += 1;
            degree[b as usize] += 1;
        }
        let mut offsets = vec![0usize; n + 1];
        for v in 0..n {
            offsets[v + 1] = offsets[v] + degree[v];
        }
        let mut fill = offsets.clone();
        let mut targets = vec![0u32; offsets[n]];
        for &(a, b) in edges {
            targets[fill[a as usize]] = b;
            fill[a as usize] += 1;
            targets[fill[b as usize]] = a;
            fill[b as usize] += 1;
        }
        Csr { offsets, targets }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Neighbours of `v`.
    #[inline]
    pub fn neighbours(&self, v: usize) -> &[u32] {
        &self.targets[self.offsets[v]..self.offsets[v + 1]]
    }

    /// Position of `v`'s first neighbour in the edge arrays.
    #[inline]
    pub fn offset(&self, v: usize) -> usize {
        self.offsets[v]
    }

    /// Degree (arity) of `v`.
    pub fn degree(&self, v: usize) -> usize {
        self.offsets[v + 1] - self.offsets[v]
    }

    /// Number of arcs (twice the number of edges).
    pub fn arcs(&self) -> usize {
        self.targets.len()
    }

    /// BFS from `src` over nodes with `alive[v]` (all if `None`): returns
    /// (sum of hop distances, nodes reached other than `src`). `dist` and
    /// `queue` are scratch space of `len()` entries, reused between calls.
    pub fn bfs(&self, src: usize, dist: &mut [u32], queue: &mut VecDeque<u32>) -> (u64, u64) {
        dist.fill(u32::MAX);
        queue.clear();
        dist[src] = 0;
        queue.push_back(src as u32);
        let (mut sum, mut reached) = (0u64, 0u64);
        while let Some(v) = queue.pop_front() {
            let d = dist[v as usize];
            sum += u64::from(d);
            reached += 1;
            for &w in self.neighbours(v as usize) {
                if dist[w as usize] == u32::MAX {
                    dist[w as usize] = d + 1;
                    queue.push_back(w);
                }
            }
        }
        (sum, reached - 1)
    }
}

/// Sizes of the connected components among the nodes with `alive[v]`,
/// ignoring edges to dead nodes (union-find).
pub fn component_sizes(n: usize, edges: &[(u32, u32)], alive: &[bool]) -> Vec<u64> {
    let mut parent: Vec<u32> = (0..n as u32).collect();
    fn find(parent: &mut [u32], mut v: u32) -> u32 {
        while parent[v as usize] != v {
            let p = parent[v as usize];
            parent[v as usize] = parent[p as usize];
            v = p;
        }
        v
    }
    for &(a, b) in edges {
        if alive[a as usize] && alive[b as usize] {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            if ra != rb {
                parent[ra.max(rb) as usize] = ra.min(rb);
            }
        }
    }
    let mut size = vec![0u64; n];
    for (v, _) in alive.iter().enumerate().take(n).filter(|(_, a)| **a) {
        let r = find(&mut parent, v as u32);
        size[r as usize] += 1;
    }
    size.into_iter().filter(|&s| s > 0).collect()
}

/// Share of ordered pairs of alive nodes that cannot reach each other.
pub fn unreachable_share(sizes: &[u64]) -> f64 {
    let alive: u64 = sizes.iter().sum();
    if alive < 2 {
        return 0.0;
    }
    let connected: u64 = sizes.iter().map(|s| s * (s - 1)).sum();
    1.0 - connected as f64 / (alive * (alive - 1)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bfs_and_components_on_a_small_graph() {
        // 0-1-2-3 path, 4-5 apart, 6 alone.
        let edges = [(0, 1), (1, 2), (2, 3), (4, 5)];
        let g = Csr::from_edges(7, &edges);
        assert_eq!(g.degree(1), 2);
        assert_eq!(g.arcs(), 8);
        let mut dist = vec![0; 7];
        let mut q = VecDeque::new();
        assert_eq!(g.bfs(0, &mut dist, &mut q), (1 + 2 + 3, 3));
        let mut sizes = component_sizes(7, &edges, &[true; 7]);
        sizes.sort();
        assert_eq!(sizes, vec![1, 2, 4]);
        // 7 nodes, 42 ordered pairs, 12 + 2 connected.
        assert!((unreachable_share(&sizes) - (1.0 - 14.0 / 42.0)).abs() < 1e-12);
        // Killing node 1 splits the path.
        let mut alive = [true; 7];
        alive[1] = false;
        let mut sizes = component_sizes(7, &edges, &alive);
        sizes.sort();
        assert_eq!(sizes, vec![1, 1, 2, 2]);
    }
}
