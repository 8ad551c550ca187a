//! The chaos schedule: which fault, on which node, when, and when it
//! heals. Sans-IO and seeded: [`Planner::poll`] takes the time and the
//! tunnels the soak sees and returns the actions that are due, so the same
//! seed gives the same plan (a link fault picks among the tunnels up at
//! that moment, so a run repeats its plan, not every packet).
//!
//! A few *witness* nodes are never faulted: they run the whole soak, so
//! their memory and descriptors show what churn around a node costs it.

use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// A kind of fault the soak injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub(crate) enum Fault {
    /// SIGKILL a node; restart it with its state directory a little later.
    Kill,
    /// SIGKILL a node, delete its state directory, start it again: it
    /// enrols anew (new certificate, new prefix, same underlay address).
    Wipe,
    /// SIGSTOP a node for up to 20 s (longer than the idle timeout), then
    /// SIGCONT.
    Freeze,
    /// Drop every packet of a node's underlay link (nftables), then restore.
    Isolate,
    /// Drop the packets between two nodes that have a tunnel (nftables).
    Link,
    /// Delay and loss on a node's underlay link (tc netem; nftables loss
    /// only when the kernel has no netem).
    Netem,
    /// SIGKILL the registry; start it again later.
    Registry,
    /// Revoke a node's certificate, restart another node so that it fetches
    /// the new CRL and floods it, then wipe the revoked node (it enrols anew).
    Revoke,
}

impl Fault {
    /// Every kind, in report order.
    pub(crate) const ALL: [Fault; 8] = [
        Fault::Kill,
        Fault::Wipe,
        Fault::Freeze,
        Fault::Isolate,
        Fault::Link,
        Fault::Netem,
        Fault::Registry,
        Fault::Revoke,
    ];

    /// How often it is drawn relative to the others.
    fn weight(self) -> u32 {
        match self {
            Fault::Kill => 4,
            Fault::Freeze | Fault::Link | Fault::Netem => 2,
            Fault::Wipe | Fault::Isolate | Fault::Registry | Fault::Revoke => 1,
        }
    }

    /// Whether it needs network namespaces (root).
    pub(crate) fn needs_namespaces(self) -> bool {
        matches!(self, Fault::Isolate | Fault::Link | Fault::Netem)
    }
}

/// What the soak does at a moment of the schedule. Each action is also an
/// event of the report: outages are blamed on the action before them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Action {
    /// SIGKILL the node (and delete its state directory when `wipe`).
    Kill { node: usize, wipe: bool },
    /// Start the node's process (again).
    Start { node: usize },
    /// SIGKILL and start at once, with the state directory (the carrier of
    /// a new CRL: a node fetches it when it starts).
    Restart { node: usize },
    /// SIGSTOP.
    Freeze { node: usize },
    /// SIGCONT.
    Thaw { node: usize },
    /// Drop all of the node's underlay traffic.
    Isolate { node: usize },
    /// Stop dropping it.
    Rejoin { node: usize },
    /// Drop the traffic between `a` and `b`.
    LinkDown { a: usize, b: usize },
    /// Stop dropping it.
    LinkUp { a: usize, b: usize },
    /// Delay (with jitter) and loss on the node's underlay link.
    NetemOn {
        node: usize,
        delay_ms: u32,
        jitter_ms: u32,
        loss_pct: u32,
    },
    /// Back to a clean link.
    NetemOff { node: usize },
    /// SIGKILL the registry.
    RegistryKill,
    /// Start the registry again.
    RegistryStart,
    /// Revoke the node's certificate at the registry.
    Revoke { node: usize },
}

/// The kind of an [`Action`], as the report groups outages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum EventKind {
    /// [`Action::Kill`] without wipe.
    Kill,
    /// [`Action::Kill`] with wipe.
    Wipe,
    /// [`Action::Start`].
    Start,
    /// [`Action::Restart`].
    Restart,
    /// [`Action::Freeze`].
    Freeze,
    /// [`Action::Thaw`].
    Thaw,
    /// [`Action::Isolate`].
    Isolate,
    /// [`Action::Rejoin`].
    Rejoin,
    /// [`Action::LinkDown`].
    LinkDown,
    /// [`Action::LinkUp`].
    LinkUp,
    /// [`Action::NetemOn`].
    NetemOn,
    /// [`Action::NetemOff`].
    NetemOff,
    /// [`Action::RegistryKill`].
    RegistryKill,
    /// [`Action::RegistryStart`].
    RegistryStart,
    /// [`Action::Revoke`].
    Revoke,
}

impl EventKind {
    /// Every kind.
    #[cfg(test)]
    pub(crate) const ALL: [EventKind; 15] = [
        EventKind::Kill,
        EventKind::Wipe,
        EventKind::Start,
        EventKind::Restart,
        EventKind::Freeze,
        EventKind::Thaw,
        EventKind::Isolate,
        EventKind::Rejoin,
        EventKind::LinkDown,
        EventKind::LinkUp,
        EventKind::NetemOn,
        EventKind::NetemOff,
        EventKind::RegistryKill,
        EventKind::RegistryStart,
        EventKind::Revoke,
    ];

    /// Its name in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            EventKind::Kill => "kill",
            EventKind::Wipe => "kill+wipe",
            EventKind::Start => "start",
            EventKind::Restart => "restart",
            EventKind::Freeze => "freeze",
            EventKind::Thaw => "thaw",
            EventKind::Isolate => "isolate",
            EventKind::Rejoin => "rejoin",
            EventKind::LinkDown => "link down",
            EventKind::LinkUp => "link up",
            EventKind::NetemOn => "netem on",
            EventKind::NetemOff => "netem off",
            EventKind::RegistryKill => "registry kill",
            EventKind::RegistryStart => "registry start",
            EventKind::Revoke => "revoke",
        }
    }

    /// Whether it can break paths between other nodes (they must reroute
    /// around the node or link it hits).
    pub(crate) fn breaks_transit(self) -> bool {
        matches!(
            self,
            EventKind::Kill
                | EventKind::Wipe
                | EventKind::Restart
                | EventKind::Freeze
                | EventKind::Isolate
                | EventKind::LinkDown
                | EventKind::NetemOn
                | EventKind::Revoke
        )
    }
}

impl Action {
    /// Its kind.
    pub(crate) fn kind(&self) -> EventKind {
        match self {
            Action::Kill { wipe: false, .. } => EventKind::Kill,
            Action::Kill { wipe: true, .. } => EventKind::Wipe,
            Action::Start { .. } => EventKind::Start,
            Action::Restart { .. } => EventKind::Restart,
            Action::Freeze { .. } => EventKind::Freeze,
            Action::Thaw { .. } => EventKind::Thaw,
            Action::Isolate { .. } => EventKind::Isolate,
            Action::Rejoin { .. } => EventKind::Rejoin,
            Action::LinkDown { .. } => EventKind::LinkDown,
            Action::LinkUp { .. } => EventKind::LinkUp,
            Action::NetemOn { .. } => EventKind::NetemOn,
            Action::NetemOff { .. } => EventKind::NetemOff,
            Action::RegistryKill => EventKind::RegistryKill,
            Action::RegistryStart => EventKind::RegistryStart,
            Action::Revoke { .. } => EventKind::Revoke,
        }
    }

    /// The nodes it hits.
    pub(crate) fn nodes(&self) -> Vec<usize> {
        match *self {
            Action::Kill { node, .. }
            | Action::Start { node }
            | Action::Restart { node }
            | Action::Freeze { node }
            | Action::Thaw { node }
            | Action::Isolate { node }
            | Action::Rejoin { node }
            | Action::NetemOn { node, .. }
            | Action::NetemOff { node }
            | Action::Revoke { node } => vec![node],
            Action::LinkDown { a, b } | Action::LinkUp { a, b } => vec![a, b],
            Action::RegistryKill | Action::RegistryStart => Vec::new(),
        }
    }
}

/// What the planner needs to know about the soak.
#[derive(Debug, Clone)]
pub(crate) struct PlanConfig {
    /// Nodes in the network.
    pub nodes: usize,
    /// Of them, the first `witnesses` are never faulted.
    pub witnesses: usize,
    /// Mean time between two faults (each gap is 0.5x to 1.5x it).
    pub mean_gap: Duration,
    /// No fault starts after this (the network gets a quiet end).
    pub last_fault: Duration,
    /// First fault at this time (after the warm-up).
    pub first_fault: Duration,
    /// The kinds to draw from.
    pub kinds: Vec<Fault>,
}

/// The seeded schedule.
#[derive(Debug)]
pub(crate) struct Planner {
    cfg: PlanConfig,
    rng: Xoshiro256PlusPlus,
    next_fault: Duration,
    /// Actions planned for later (heals, second steps), by due time.
    pending: Vec<(Duration, Action)>,
    /// Nodes under a fault (not to be hit twice at once).
    busy: Vec<bool>,
    /// Of them, the nodes the fault takes out of the network (killed,
    /// frozen, isolated, revoked): these count against the cap.
    down: Vec<bool>,
    registry_busy: bool,
    /// The node being revoked (one at a time).
    revoking: Option<usize>,
    /// Faults started so far, per kind.
    pub(crate) started: Vec<(Fault, u32)>,
}

impl Planner {
    /// A planner for `cfg`, seeded.
    pub(crate) fn new(cfg: PlanConfig, seed: u64) -> Self {
        let busy = vec![false; cfg.nodes];
        let down = vec![false; cfg.nodes];
        let started = Fault::ALL.iter().map(|f| (*f, 0)).collect();
        Self {
            next_fault: cfg.first_fault,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            cfg,
            pending: Vec::new(),
            busy,
            down,
            registry_busy: false,
            revoking: None,
            started,
        }
    }

    /// Faults started so far.
    pub(crate) fn faults(&self) -> u32 {
        self.started.iter().map(|(_, n)| n).sum()
    }

    /// Most nodes out of the network at once: a sixth of the faultable
    /// ones (at least two), so the network keeps a majority to route over.
    fn max_down(&self) -> usize {
        ((self.cfg.nodes - self.cfg.witnesses) / 6).max(2)
    }

    fn down_count(&self) -> usize {
        self.down.iter().filter(|b| **b).count()
    }

    /// Marks `node` under a fault (`down`: out of the network).
    fn take(&mut self, node: usize, down: bool) {
        self.busy[node] = true;
        self.down[node] = down;
    }

    /// A node that may be faulted now, if any.
    fn free_node(&mut self) -> Option<usize> {
        let free: Vec<usize> = (self.cfg.witnesses..self.cfg.nodes)
            .filter(|i| !self.busy[*i])
            .collect();
        if free.is_empty() {
            return None;
        }
        Some(free[self.rng.random_range(0..free.len())])
    }

    fn secs(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(lo * 1000..=hi * 1000))
    }

    fn later(&mut self, at: Duration, action: Action) {
        self.pending.push((at, action));
        self.pending.sort_by_key(|(t, _)| *t);
    }

    /// The actions due at `now`. `links` are the node pairs that have a
    /// tunnel up (candidates of a link fault).
    pub(crate) fn poll(&mut self, now: Duration, links: &[(usize, usize)]) -> Vec<Action> {
        let mut due = Vec::new();
        while self.pending.first().is_some_and(|(t, _)| *t <= now) {
            let (_, a) = self.pending.remove(0);
            self.release(&a);
            due.push(a);
        }
        if now >= self.next_fault && now <= self.cfg.last_fault && !self.cfg.kinds.is_empty() {
            // A few draws: the first kind drawn may not fit right now (no
            // free node, registry already down).
            let mut started = false;
            for _ in 0..4 {
                let kind = self.draw_kind();
                if let Some(mut actions) = self.start(kind, now, links) {
                    self.bump(kind);
                    due.append(&mut actions);
                    started = true;
                    break;
                }
            }
            // A kind not seen yet that does not fit is tried again at the
            // next poll, for up to one mean gap; then the slot passes.
            let waited = now.saturating_sub(self.next_fault);
            if started || !self.unseen() || waited >= self.cfg.mean_gap {
                let gap = self.cfg.mean_gap.mul_f64(self.rng.random_range(0.5..1.5));
                self.next_fault = now + gap;
            }
        }
        due
    }

    /// Frees what a healing action ends.
    fn release(&mut self, a: &Action) {
        match *a {
            Action::Start { node }
            | Action::Thaw { node }
            | Action::Rejoin { node }
            | Action::NetemOff { node }
            | Action::Restart { node } => {
                self.busy[node] = false;
                self.down[node] = false;
                if self.revoking == Some(node) {
                    self.revoking = None;
                }
            }
            Action::LinkUp { a, b } => {
                self.busy[a] = false;
                self.busy[b] = false;
            }
            Action::Kill { node, wipe: true } if self.revoking == Some(node) => {
                // The revoked node stays down until its Start.
                self.down[node] = true;
            }
            Action::RegistryStart => self.registry_busy = false,
            _ => {}
        }
    }

    /// The next kind to try: every kind once first (in a seeded order), so
    /// that a short soak sees them all, then by weight.
    fn draw_kind(&mut self) -> Fault {
        let unseen: Vec<Fault> = (self.cfg.kinds.iter().copied())
            .filter(|k| self.started_of(*k) == 0)
            .collect();
        if !unseen.is_empty() {
            return unseen[self.rng.random_range(0..unseen.len())];
        }
        let total: u32 = self.cfg.kinds.iter().map(|k| k.weight()).sum();
        let mut x = self.rng.random_range(0..total);
        for k in &self.cfg.kinds {
            if x < k.weight() {
                return *k;
            }
            x -= k.weight();
        }
        self.cfg.kinds[0]
    }

    fn started_of(&self, kind: Fault) -> u32 {
        (self.started.iter())
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    /// Whether a kind to draw from has not started yet.
    fn unseen(&self) -> bool {
        self.cfg.kinds.iter().any(|k| self.started_of(*k) == 0)
    }

    fn bump(&mut self, kind: Fault) {
        if let Some(e) = self.started.iter_mut().find(|(k, _)| *k == kind) {
            e.1 += 1;
        }
    }

    /// The first actions of a fault of `kind` (the rest is planned), or
    /// `None` when it cannot start now.
    fn start(
        &mut self,
        kind: Fault,
        now: Duration,
        links: &[(usize, usize)],
    ) -> Option<Vec<Action>> {
        let nodes_ok = self.down_count() < self.max_down();
        match kind {
            Fault::Registry => {
                // Not while a revocation needs the registry to spread.
                if self.registry_busy || self.revoking.is_some() {
                    return None;
                }
                self.registry_busy = true;
                let back = now + self.secs(5, 40);
                self.later(back, Action::RegistryStart);
                Some(vec![Action::RegistryKill])
            }
            Fault::Link => {
                let w = self.cfg.witnesses;
                let free: Vec<(usize, usize)> = links
                    .iter()
                    .copied()
                    .filter(|&(a, b)| a != b && a >= w && b >= w && !self.busy[a] && !self.busy[b])
                    .collect();
                if free.is_empty() {
                    return None;
                }
                let (a, b) = free[self.rng.random_range(0..free.len())];
                self.take(a, false);
                self.take(b, false);
                let back = now + self.secs(10, 60);
                self.later(back, Action::LinkUp { a, b });
                Some(vec![Action::LinkDown { a, b }])
            }
            _ if !nodes_ok => None,
            Fault::Kill | Fault::Wipe => {
                let node = self.free_node()?;
                self.take(node, true);
                let wipe = kind == Fault::Wipe;
                let back = now
                    + if wipe {
                        self.secs(1, 10)
                    } else {
                        self.secs(1, 20)
                    };
                self.later(back, Action::Start { node });
                Some(vec![Action::Kill { node, wipe }])
            }
            Fault::Freeze => {
                let node = self.free_node()?;
                self.take(node, true);
                let back = now + self.secs(2, 20);
                self.later(back, Action::Thaw { node });
                Some(vec![Action::Freeze { node }])
            }
            Fault::Isolate => {
                let node = self.free_node()?;
                self.take(node, true);
                let back = now + self.secs(5, 30);
                self.later(back, Action::Rejoin { node });
                Some(vec![Action::Isolate { node }])
            }
            Fault::Netem => {
                let node = self.free_node()?;
                self.take(node, false);
                let delay_ms = self.rng.random_range(10..=100);
                let jitter_ms = delay_ms / 4;
                let loss_pct = self.rng.random_range(1..=10);
                let back = now + self.secs(20, 60);
                self.later(back, Action::NetemOff { node });
                Some(vec![Action::NetemOn {
                    node,
                    delay_ms,
                    jitter_ms,
                    loss_pct,
                }])
            }
            Fault::Revoke => {
                // The carrier fetches the new CRL from the registry: not
                // while it is down.
                if self.revoking.is_some()
                    || self.registry_busy
                    || self.down_count() + 2 > self.max_down()
                {
                    return None;
                }
                let node = self.free_node()?;
                self.take(node, true);
                self.revoking = Some(node);
                let carrier = self.free_node();
                if let Some(c) = carrier {
                    self.take(c, true);
                }
                // The carrier restarts a second later and floods the CRL;
                // the revoked node is wiped once it has been cut off.
                if let Some(c) = carrier {
                    self.later(now + Duration::from_secs(1), Action::Restart { node: c });
                }
                let wipe = now + Duration::from_secs(25);
                self.later(wipe, Action::Kill { node, wipe: true });
                self.later(wipe + Duration::from_secs(2), Action::Start { node });
                Some(vec![Action::Revoke { node }])
            }
        }
    }

    /// The healing actions still pending.
    #[cfg(test)]
    pub(crate) fn drain(&mut self) -> Vec<Action> {
        let all: Vec<Action> = self.pending.drain(..).map(|(_, a)| a).collect();
        for a in &all {
            self.release(a);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(nodes: usize) -> PlanConfig {
        PlanConfig {
            nodes,
            witnesses: 2,
            mean_gap: Duration::from_secs(10),
            first_fault: Duration::from_secs(30),
            last_fault: Duration::from_secs(3000),
            kinds: Fault::ALL.to_vec(),
        }
    }

    /// Runs a plan to the end with a fixed set of links; every action in
    /// order, with its time.
    fn run(seed: u64, nodes: usize) -> Vec<(Duration, Action)> {
        let mut p = Planner::new(cfg(nodes), seed);
        let links: Vec<(usize, usize)> = (0..nodes).map(|i| (i, (i + 1) % nodes)).collect();
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(3100) {
            for a in p.poll(t, &links) {
                out.push((t, a));
            }
            t += Duration::from_millis(100);
        }
        out.extend(p.drain().into_iter().map(|a| (t, a)));
        out
    }

    #[test]
    fn same_seed_same_plan() {
        assert_eq!(run(7, 30), run(7, 30));
        assert_ne!(run(7, 30), run(8, 30));
    }

    #[test]
    fn every_kind_happens_and_heals() {
        let plan = run(1, 30);
        for k in EventKind::ALL {
            assert!(
                plan.iter().any(|(_, a)| a.kind() == k),
                "no {} in an hour of plan",
                k.name()
            );
        }
        // Every node fault is healed: kills and wipes by a start, freezes
        // by a thaw, and so on, in that order.
        let count = |k: EventKind| plan.iter().filter(|(_, a)| a.kind() == k).count();
        assert_eq!(
            count(EventKind::Kill) + count(EventKind::Wipe),
            count(EventKind::Start)
        );
        assert_eq!(count(EventKind::Freeze), count(EventKind::Thaw));
        assert_eq!(count(EventKind::Isolate), count(EventKind::Rejoin));
        assert_eq!(count(EventKind::LinkDown), count(EventKind::LinkUp));
        assert_eq!(count(EventKind::NetemOn), count(EventKind::NetemOff));
        assert_eq!(
            count(EventKind::RegistryKill),
            count(EventKind::RegistryStart)
        );
    }

    /// What CI runs (6 nodes, 2 minutes, a fault every 8 s after 20 s):
    /// every kind of fault, whatever the seed.
    #[test]
    fn a_short_plan_has_every_kind() {
        for seed in 0..50 {
            let mut p = Planner::new(
                PlanConfig {
                    nodes: 6,
                    witnesses: 1,
                    mean_gap: Duration::from_secs(8),
                    first_fault: Duration::from_secs(20),
                    last_fault: Duration::from_secs(100),
                    kinds: Fault::ALL.to_vec(),
                },
                seed,
            );
            let links = [(1, 2), (2, 3), (3, 4), (4, 5), (5, 1)];
            let mut t = Duration::ZERO;
            while t < Duration::from_secs(120) {
                let _ = p.poll(t, &links);
                t += Duration::from_millis(100);
            }
            for (kind, n) in &p.started {
                assert!(*n > 0, "seed {seed}: no {kind:?} in {:?}", p.started);
            }
        }
    }

    #[test]
    fn witnesses_are_spared_and_load_is_capped() {
        let plan = run(3, 30);
        let mut down = [false; 30];
        let mut most = 0;
        for (_, a) in &plan {
            for n in a.nodes() {
                assert!(n >= 2, "witness {n} hit by {a:?}");
            }
            match *a {
                Action::Kill { node, .. } | Action::Freeze { node } | Action::Isolate { node } => {
                    down[node] = true
                }
                Action::Start { node } | Action::Thaw { node } | Action::Rejoin { node } => {
                    down[node] = false
                }
                _ => {}
            }
            most = most.max(down.iter().filter(|d| **d).count());
        }
        // (30 - 2) / 6 = 4 nodes under a fault at most, one more for a
        // link or revocation that takes two.
        assert!(most <= 5, "{most} nodes down at once");
    }

    #[test]
    fn gaps_follow_the_mean() {
        let mut p = Planner::new(cfg(30), 5);
        let links = [(3, 4)];
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(3100) {
            let _ = p.poll(t, &links);
            t += Duration::from_millis(100);
        }
        // (3000 - 30) s at 10 s on average: about 297 faults (a draw that
        // does not fit is skipped).
        let n = p.faults();
        assert!((200..=330).contains(&n), "{n} faults");
    }
}
