//! The policy alone, with a fake clock: time is a base `Instant` plus what
//! each test adds; nothing sleeps.

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

use super::*;

type P = Policy<u32, Xoshiro256PlusPlus>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config(k: usize) -> PolicyConfig {
    PolicyConfig {
        refresh: secs(10),
        backoff_min: secs(2),
        backoff_max: secs(16),
        drain_timeout: secs(5),
        probe_timeout: secs(3),
        ..PolicyConfig::with_k(k)
    }
}

fn policy(me: u32, config: PolicyConfig, t0: Instant) -> P {
    Policy::new(me, config, Xoshiro256PlusPlus::seed_from_u64(7), t0).expect("valid config")
}

fn actions(p: &mut P) -> Vec<Action<u32>> {
    std::iter::from_fn(|| p.poll_action()).collect()
}

/// The `Open` actions, as (tunnel, peer).
fn opens(actions: &[Action<u32>]) -> Vec<(TunnelId, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Open { tunnel, peer } => Some((*tunnel, *peer)),
            _ => None,
        })
        .collect()
}

/// Brings every pending open up, with the RTT `rtt(peer)`.
fn bring_up(p: &mut P, opened: &[(TunnelId, u32)], rtt: impl Fn(u32) -> u64, now: Instant) {
    for &(t, peer) in opened {
        p.handle_tunnel_up(t, Some(Duration::from_millis(rtt(peer))), now);
    }
}

#[test]
fn opens_k_distinct_random_peers_and_no_more() {
    let t0 = Instant::now();
    let mut p = policy(0, config(10), t0);
    p.handle_candidates(0..100, t0);
    let opened = opens(&actions(&mut p));
    assert_eq!(opened.len(), 10);
    let mut peers: Vec<u32> = opened.iter().map(|o| o.1).collect();
    peers.sort();
    peers.dedup();
    assert_eq!(peers.len(), 10, "never two tunnels to one node");
    assert!(!peers.contains(&0), "never to itself");
    // A new DB does not open more once k are pending or up.
    p.handle_candidates(0..200, t0);
    assert!(actions(&mut p).is_empty());
    bring_up(&mut p, &opened, |_| 10, t0);
    assert_eq!(p.own_count(), 10);
}

#[test]
fn few_candidates_open_what_exists() {
    let t0 = Instant::now();
    let mut p = policy(5, config(10), t0);
    p.handle_candidates([5, 1, 2, 2, 3], t0);
    let mut peers: Vec<u32> = opens(&actions(&mut p)).iter().map(|o| o.1).collect();
    peers.sort();
    assert_eq!(peers, vec![1, 2, 3]);
}

#[test]
fn accepts_incoming_up_to_3k_then_refuses_with_reason() {
    let t0 = Instant::now();
    let mut p = policy(0, config(10), t0);
    p.handle_candidates(1..=10, t0);
    let opened = opens(&actions(&mut p));
    bring_up(&mut p, &opened, |_| 10, t0);
    // 10 own + 20 incoming = 30 = 3k.
    for peer in 100..120 {
        assert!(p.handle_incoming(peer, t0).is_ok(), "peer {peer}");
    }
    assert_eq!(p.tunnel_count(), 30);
    assert_eq!(
        p.handle_incoming(500, t0),
        Err(Refusal::Full {
            tunnels: 30,
            max: 30
        })
    );
    assert_eq!(p.handle_incoming(0, t0), Err(Refusal::Loopback));
    assert_eq!(p.stats().refused_full, 1);
    assert_eq!(p.tunnel_count(), 30);
}

/// A crossing dial from a smaller serial reaches a node whose incoming
/// tunnels are full: taking it for the node's own would free an own slot
/// that the node dials again, one tunnel past 3k. It is refused as full.
#[test]
fn crossing_tunnel_at_a_full_node_is_refused_not_swapped() {
    let t0 = Instant::now();
    let mut p = policy(50, config(3), t0);
    p.handle_candidates(1..=10, t0);
    let opened = opens(&actions(&mut p));
    bring_up(&mut p, &opened, |_| 10, t0);
    for peer in 100..106 {
        p.handle_incoming(peer, t0).expect("room for 2k incoming");
    }
    assert_eq!(p.tunnel_count(), 9);
    let (_, crossing) = opened[0];
    assert!(crossing < 50, "the dialler has the smaller serial");
    assert_eq!(
        p.handle_incoming(crossing, t0),
        Err(Refusal::Full { tunnels: 9, max: 9 })
    );
    assert!(opens(&actions(&mut p)).is_empty(), "no own slot freed");
    assert_eq!((p.tunnel_count(), p.own_count()), (9, 3));
    assert_eq!(p.stats().refused_full, 1);
}

#[test]
fn refused_dialler_tries_another_peer_and_backs_off_exponentially() {
    let t0 = Instant::now();
    // A long refresh period, so that poll_timeout shows the back-off.
    let mut p = policy(
        0,
        PolicyConfig {
            refresh: secs(1000),
            ..config(1)
        },
        t0,
    );
    p.handle_candidates([1, 2], t0);
    let (t, first) = opens(&actions(&mut p))[0];
    let full = Failure::Refused(Refusal::Full { tunnels: 3, max: 3 });
    p.handle_tunnel_failed(t, full, t0);
    let (t, second) = opens(&actions(&mut p))[0];
    assert_ne!(
        first, second,
        "the refusing peer is not dialled again at once"
    );
    // The other one refuses too: nobody is eligible until a back-off ends.
    p.handle_tunnel_failed(t, full, t0);
    assert!(actions(&mut p).is_empty());
    assert_eq!(p.poll_timeout(), Some(t0 + secs(2)), "back-off of 2 s");
    // At expiry one of them is dialled again.
    p.handle_timeout(t0 + secs(2));
    let (t, again) = opens(&actions(&mut p))[0];
    // Keep only `again` in the DB, so that each dial below is to it.
    p.handle_candidates([again], t0 + secs(2));
    assert!(actions(&mut p).is_empty());
    // It refuses again: its delay doubles to 4, then 8, 16, and stays at 16.
    let mut now = t0 + secs(2);
    let mut t = t;
    for expected in [4, 8, 16, 16] {
        p.handle_tunnel_failed(t, full, now);
        assert_eq!(p.backoff.delay_of(&again), Some(secs(expected)));
        assert!(
            actions(&mut p).is_empty(),
            "blocked until the back-off ends"
        );
        assert_eq!(p.poll_timeout(), Some(now + secs(expected)));
        now += secs(expected);
        p.handle_timeout(now);
        let o = opens(&actions(&mut p));
        assert_eq!(o.len(), 1);
        t = o[0].0;
    }
    // Success resets the back-off.
    p.handle_tunnel_up(t, None, now);
    assert_eq!(p.backoff.delay_of(&again), None);
    assert_eq!(p.stats().failed, 6);
}

#[test]
fn a_node_cut_off_retries_soon_and_reconnects_at_once() {
    let t0 = Instant::now();
    let mut p = policy(
        0,
        PolicyConfig {
            refresh: secs(1000),
            backoff_min: secs(30),
            backoff_max: secs(3600),
            ..config(2)
        },
        t0,
    );
    p.handle_candidates(1..=6, t0);
    let opened = opens(&actions(&mut p));
    bring_up(&mut p, &opened, |_| 10, t0);
    // With a tunnel up, an unreachable peer is the peer's fault: 30 s.
    p.handle_tunnel_closed(opened[0].0, t0);
    let (t, peer) = opens(&actions(&mut p))[0];
    p.handle_tunnel_failed(t, Failure::Unreachable, t0);
    assert_eq!(p.backoff.delay_of(&peer), Some(secs(30)));
    let (t, _) = opens(&actions(&mut p))[0];
    p.handle_tunnel_up(t, None, t0);
    // Now our link goes down: every tunnel times out, every dial fails.
    let mut now = t0 + secs(1);
    let up: Vec<TunnelId> = p.tunnels().map(|t| t.id).collect();
    for t in up {
        p.handle_tunnel_closed(t, now);
    }
    let mut dials = 0;
    for _ in 0..60 {
        for (t, _) in opens(&actions(&mut p)) {
            dials += 1;
            p.handle_tunnel_failed(t, Failure::Unreachable, now);
        }
        now += secs(1);
        p.handle_timeout(now);
    }
    // Cut off, failed peers are retried every 5 s, without doubling: about
    // one dial a second, where 30 s, 60 s, ... back-offs would allow 12.
    assert!(dials >= 40, "{dials} dials in 60 s");
    assert!((1..=6).all(|q| p.backoff.delay_of(&q).is_none_or(|d| d <= secs(30))));
    for (t, _) in opens(&actions(&mut p)) {
        p.handle_tunnel_failed(t, Failure::Unreachable, now);
    }
    // The link is back and a peer dials us: every back-off is forgotten
    // and our own tunnels are dialled at once.
    p.handle_incoming(9, now).expect("accepted");
    assert_eq!(
        opens(&actions(&mut p)).len(),
        2,
        "both own tunnels dialled at once"
    );
    assert!((1..=6).all(|q| p.backoff.delay_of(&q).is_none()));
}

/// Two policies dial each other at the same time: both keep the tunnel
/// opened by the smaller serial, whatever the order of the messages.
#[test]
fn crossing_tunnels_keep_the_one_of_the_smaller_serial() {
    for a_first in [true, false] {
        let t0 = Instant::now();
        let mut a = policy(3, config(1), t0);
        let mut b = policy(8, config(1), t0);
        a.handle_candidates([8], t0);
        b.handle_candidates([3], t0);
        let (ta, _) = opens(&actions(&mut a))[0];
        let (tb, _) = opens(&actions(&mut b))[0];
        // Each dial reaches the other side while its own dial is pending.
        let (at_b, at_a) = if a_first {
            let at_b = b.handle_incoming(3, t0);
            (at_b, a.handle_incoming(8, t0))
        } else {
            let at_a = a.handle_incoming(8, t0);
            (b.handle_incoming(3, t0), at_a)
        };
        // a (serial 3) wins: b accepts a's tunnel and cancels its own;
        // a refuses b's.
        assert_eq!(at_a, Err(Refusal::Duplicate));
        let tb_in = at_b.expect("b accepts the smaller serial's tunnel");
        assert!(actions(&mut b).contains(&Action::Close {
            tunnel: tb,
            peer: 3,
            reason: CloseReason::Duplicate
        }));
        a.handle_tunnel_up(ta, None, t0);
        // b's dial comes back refused; b has nobody else to dial.
        b.handle_tunnel_failed(tb, Failure::Refused(Refusal::Duplicate), t0);
        assert!(opens(&actions(&mut b)).is_empty());
        let a_view: Vec<_> = a.tunnels().collect();
        let b_view: Vec<_> = b.tunnels().collect();
        assert_eq!(a_view.len(), 1);
        assert_eq!(b_view.len(), 1);
        assert_eq!(
            (a_view[0].peer, a_view[0].direction),
            (8, Direction::Outgoing)
        );
        assert_eq!(
            (b_view[0].peer, b_view[0].direction),
            (3, Direction::Incoming)
        );
        assert_eq!(b_view[0].id, tb_in);
    }
}

#[test]
fn a_peer_dialling_again_supersedes_its_old_tunnel() {
    let t0 = Instant::now();
    let mut p = policy(
        0,
        PolicyConfig {
            max_tunnels: 3,
            ..config(0)
        },
        t0,
    );
    let old = p.handle_incoming(4, t0).expect("accepted");
    let new = p.handle_incoming(4, t0 + secs(1)).expect("accepted again");
    assert_ne!(old, new);
    assert_eq!(
        actions(&mut p),
        vec![Action::Close {
            tunnel: old,
            peer: 4,
            reason: CloseReason::Superseded
        }]
    );
    assert_eq!(p.tunnel_count(), 1);
}

/// Sets up a node with own tunnels to 1..=k, all up, and the given route
/// counts and RTTs (ms) per peer.
fn optimising(
    k: u32,
    routes: &[u32],
    rtts: &[u64],
    replacement: Replacement,
) -> (P, Vec<(TunnelId, u32)>, Instant) {
    let t0 = Instant::now();
    let mut p = policy(
        0,
        PolicyConfig {
            replacement,
            ..config(k as usize)
        },
        t0,
    );
    p.handle_candidates(1..=k, t0);
    let mut opened = opens(&actions(&mut p));
    opened.sort_by_key(|o| o.1);
    bring_up(&mut p, &opened, |peer| rtts[peer as usize - 1], t0);
    p.handle_routes(
        opened
            .iter()
            .map(|&(t, peer)| (t, routes[peer as usize - 1])),
        t0,
    );
    // More peers in the DB for the replacements.
    p.handle_candidates(1..=k + 50, t0);
    assert!(actions(&mut p).is_empty());
    (p, opened, t0)
}

#[test]
fn refresh_drains_the_least_used_tunnel_ties_by_highest_rtt_then_closes_it() {
    let (mut p, opened, t0) =
        optimising(4, &[7, 1, 1, 3], &[10, 20, 50, 5], Replacement::LeastUsed);
    assert_eq!(p.poll_timeout(), Some(t0 + secs(10)));
    p.handle_timeout(t0 + secs(9));
    assert!(actions(&mut p).is_empty(), "not before the refresh period");
    let now = t0 + secs(10);
    p.handle_timeout(now);
    let a = actions(&mut p);
    let victim = opened[2].0; // peer 3: 1 destination, 50 ms
    assert_eq!(
        a[0],
        Action::Drain {
            tunnel: victim,
            peer: 3
        }
    );
    // Make before break: the replacement is dialled as the drain starts.
    let new = opens(&a);
    assert_eq!(new.len(), 1);
    assert!(new[0].1 > 4, "a new peer, not one we have");
    assert_eq!(p.stats().replaced_destinations, 1);
    // Staged: still open while a route uses it.
    p.handle_routes([(victim, 1)], now + secs(1));
    assert!(actions(&mut p).is_empty());
    assert_eq!(
        p.tunnel(victim).map(|t| t.state),
        Some(TunnelState::Draining)
    );
    // Routes moved away: closed.
    p.handle_routes([(opened[0].0, 8)], now + secs(2));
    assert_eq!(
        actions(&mut p),
        vec![Action::Close {
            tunnel: victim,
            peer: 3,
            reason: CloseReason::Replaced
        }]
    );
    assert!(p.tunnel(victim).is_none());
}

#[test]
fn a_drain_that_never_ends_is_closed_at_its_deadline() {
    let (mut p, opened, t0) = optimising(3, &[4, 0, 9], &[10, 10, 10], Replacement::LeastUsed);
    let now = t0 + secs(10);
    p.handle_timeout(now);
    let victim = opened[1].0;
    assert_eq!(
        actions(&mut p)[0],
        Action::Drain {
            tunnel: victim,
            peer: 2
        }
    );
    p.handle_routes([(victim, 2)], now);
    assert_eq!(p.poll_timeout(), Some(now + secs(5)));
    p.handle_timeout(now + secs(5));
    assert!(actions(&mut p).contains(&Action::Close {
        tunnel: victim,
        peer: 2,
        reason: CloseReason::Replaced
    }));
}

#[test]
fn no_refresh_while_short_of_k_or_with_never() {
    let (mut p, opened, t0) = optimising(3, &[1, 2, 3], &[1, 1, 1], Replacement::Never);
    assert_eq!(p.poll_timeout(), None);
    p.handle_timeout(t0 + secs(100));
    assert!(actions(&mut p).is_empty());

    let (mut p, opened2, t0) = optimising(3, &[1, 2, 3], &[1, 1, 1], Replacement::LeastUsed);
    let _ = opened;
    // One own tunnel is lost: it is replaced at once, and the refresh waits
    // until the replacement is up.
    p.handle_tunnel_closed(opened2[0].0, t0);
    let new = opens(&actions(&mut p));
    assert_eq!(new.len(), 1);
    p.handle_timeout(t0 + secs(10));
    assert!(actions(&mut p).is_empty());
    p.handle_tunnel_up(new[0].0, None, t0 + secs(11));
    p.handle_timeout(t0 + secs(20));
    assert!(matches!(actions(&mut p)[0], Action::Drain { .. }));
}

#[test]
fn best_of_keeps_the_fastest_probe() {
    let (mut p, _opened, t0) = optimising(
        3,
        &[5, 0, 5],
        &[10, 10, 10],
        Replacement::LeastUsedBestOf { probes: 3 },
    );
    let now = t0 + secs(10);
    p.handle_timeout(now);
    let a = actions(&mut p);
    assert!(matches!(a[0], Action::Drain { .. }));
    let probes = opens(&a);
    assert_eq!(probes.len(), 3);
    // The policy waits for all of them.
    p.handle_tunnel_up(probes[0].0, Some(Duration::from_millis(80)), now);
    p.handle_tunnel_up(probes[1].0, Some(Duration::from_millis(20)), now);
    assert!(actions(&mut p).is_empty());
    // Another estimator's figure for one probe (Babel's, say) does not
    // rank it against the others' handshake RTTs.
    p.handle_rtt(probes[0].0, Duration::from_millis(5), now);
    p.handle_rtt(probes[1].0, Duration::from_millis(90), now);
    p.handle_tunnel_failed(probes[2].0, Failure::Unreachable, now);
    assert_eq!(
        actions(&mut p),
        vec![Action::Close {
            tunnel: probes[0].0,
            peer: probes[0].1,
            reason: CloseReason::ProbeLost
        }]
    );
    assert_eq!(p.own_count(), 3);
    assert_eq!(p.tunnel(probes[1].0).map(|t| t.peer), Some(probes[1].1));
    let ms = |m| Some(Duration::from_millis(m));
    assert_eq!(
        p.probe_rounds().collect::<Vec<_>>(),
        vec![&ProbeRound {
            up: vec![(probes[0].1, ms(80)), (probes[1].1, ms(20))],
            cancelled: 0,
            kept: Some(probes[1].1),
        }]
    );
    assert_eq!(p.stats().probe_rounds, 1);
}

#[test]
fn best_of_decides_at_the_probe_deadline() {
    let (mut p, _opened, t0) = optimising(
        2,
        &[5, 0],
        &[10, 10],
        Replacement::LeastUsedBestOf { probes: 2 },
    );
    let now = t0 + secs(10);
    p.handle_timeout(now);
    let probes = opens(&actions(&mut p));
    p.handle_tunnel_up(probes[1].0, Some(Duration::from_millis(90)), now);
    assert_eq!(p.poll_timeout(), Some(now + secs(3)));
    p.handle_timeout(now + secs(3));
    let a = actions(&mut p);
    assert!(a.contains(&Action::Close {
        tunnel: probes[0].0,
        peer: probes[0].1,
        reason: CloseReason::ProbeLost
    }));
    assert!(p.tunnel(probes[1].0).is_some());
    let round = p.probe_rounds().last().unwrap();
    assert_eq!((round.cancelled, round.kept), (1, Some(probes[1].1)));
}

#[test]
fn random_replacement_picks_among_own_tunnels_only() {
    let (mut p, opened, t0) = optimising(3, &[9, 9, 9], &[1, 1, 1], Replacement::Random);
    p.handle_incoming(99, t0).expect("accepted");
    p.handle_timeout(t0 + secs(10));
    let a = actions(&mut p);
    let Action::Drain { tunnel, .. } = a[0] else {
        panic!("expected a drain, got {a:?}")
    };
    assert!(opened.iter().any(|o| o.0 == tunnel));
}

#[test]
fn bad_configs_are_refused() {
    let t0 = Instant::now();
    let rng = || Xoshiro256PlusPlus::seed_from_u64(1);
    let bad = PolicyConfig {
        max_tunnels: 5,
        ..PolicyConfig::with_k(10)
    };
    assert!(matches!(
        Policy::new(0u32, bad, rng(), t0),
        Err(ConfigError::MaxBelowOutgoing { .. })
    ));
    let bad = PolicyConfig {
        replacement: Replacement::LeastUsedBestOf { probes: 1 },
        ..PolicyConfig::default()
    };
    assert!(Policy::new(0u32, bad, rng(), t0).is_err());
    let bad = PolicyConfig {
        refresh: Duration::ZERO,
        ..PolicyConfig::default()
    };
    assert!(Policy::new(0u32, bad, rng(), t0).is_err());
}

#[test]
fn events_for_unknown_tunnels_are_ignored_and_counted() {
    let t0 = Instant::now();
    let mut p = policy(0, config(1), t0);
    p.handle_tunnel_up(TunnelId(42), None, t0);
    p.handle_tunnel_failed(TunnelId(43), Failure::Unreachable, t0);
    p.handle_tunnel_closed(TunnelId(44), t0);
    assert_eq!(p.stats().unknown_tunnel, 3);
    assert_eq!(p.tunnel_count(), 0);
}

#[test]
fn a_node_that_accepted_before_opening_keeps_room_for_its_own() {
    let t0 = Instant::now();
    let mut p = policy(0, config(2), t0);
    // 2k = 4 incoming are accepted before the node has any candidate.
    for peer in 1..=4 {
        assert!(p.handle_incoming(peer, t0).is_ok());
    }
    assert!(matches!(
        p.handle_incoming(5, t0),
        Err(Refusal::Full { .. })
    ));
    p.handle_candidates(1..=20, t0);
    let own = opens(&actions(&mut p));
    assert_eq!(own.len(), 2);
    assert!(
        own.iter().all(|o| o.1 > 4),
        "not to the peers it already has"
    );
    bring_up(&mut p, &own, |_| 1, t0);
    assert_eq!(p.tunnel_count(), 6, "arity 3k exactly");
}

#[test]
fn replacement_names_round_trip_and_bad_ones_are_refused() {
    for r in [
        Replacement::Never,
        Replacement::Random,
        Replacement::LeastUsed,
        Replacement::LeastUsedBestOf { probes: 2 },
        Replacement::LeastUsedBestOf { probes: 16 },
        Replacement::Shortcut { random: 0 },
        Replacement::Shortcut { random: 3 },
        Replacement::Shortcut { random: 64 },
    ] {
        assert_eq!(r.to_string().parse::<Replacement>(), Ok(r));
    }
    assert_eq!(
        "shortcut-3".parse(),
        Ok(Replacement::Shortcut { random: 3 })
    );
    assert_eq!(
        "least-used-best-of-5".parse(),
        Ok(Replacement::LeastUsedBestOf { probes: 5 })
    );
    for bad in [
        "",
        "least_used",
        "least-used-best-of-",
        "least-used-best-of-1",
        "least-used-best-of-17",
        "least-used-best-of-+5",
        "least-used-best-of-999",
        "LEAST-USED",
        "shortcut",
        "shortcut-",
        "shortcut-65",
        "shortcut--1",
        "shortcut-300",
    ] {
        let e = bad.parse::<Replacement>().unwrap_err();
        assert_eq!(e, ParseReplacementError(bad.to_string()));
        assert!(e.to_string().contains("least-used-best-of-N"), "{e}");
    }
}

#[test]
fn a_new_replacement_applies_from_the_next_refresh() {
    let (mut p, _opened, t0) = optimising(3, &[5, 0, 5], &[10, 10, 10], Replacement::LeastUsed);
    assert_eq!(
        p.set_replacement(Replacement::LeastUsedBestOf { probes: 1 }),
        Err(ConfigError::TooFewProbes(1))
    );
    assert_eq!(p.config().replacement, Replacement::LeastUsed, "unchanged");
    p.set_replacement(Replacement::LeastUsedBestOf { probes: 3 })
        .unwrap();
    p.handle_timeout(t0 + secs(10));
    let a = actions(&mut p);
    assert!(matches!(a[0], Action::Drain { .. }), "{a:?}");
    assert_eq!(opens(&a).len(), 3, "three probes: {a:?}");
}

#[test]
fn a_larger_k_opens_the_missing_tunnels_at_once() {
    let (mut p, _opened, t0) = optimising(2, &[1, 1], &[10, 10], Replacement::LeastUsed);
    assert_eq!(p.own_count(), 2);
    let now = t0 + secs(3);
    p.set_limits(4, 12, secs(10), now).unwrap();
    let a = actions(&mut p);
    assert_eq!(opens(&a).len(), 2, "{a:?}");
    assert!(
        !a.iter()
            .any(|a| matches!(a, Action::Drain { .. } | Action::Close { .. }))
    );
    assert_eq!(p.own_count(), 4);
    // Bad limits are refused and change nothing.
    assert_eq!(
        p.set_limits(5, 4, secs(10), now),
        Err(ConfigError::MaxBelowOutgoing {
            max_tunnels: 4,
            outgoing: 5
        })
    );
    assert_eq!(
        p.set_limits(4, 12, Duration::ZERO, now),
        Err(ConfigError::ZeroDuration("refresh"))
    );
    assert_eq!((p.config().outgoing, p.config().max_tunnels), (4, 12));
}

/// A smaller `k`: nothing closes at once; each refresh drains the least
/// used surplus tunnel (two stages, no replacement) until `k` are left,
/// then refreshes replace as before.
fn lower_k_drains_one_surplus_per_refresh(replacement: Replacement) {
    let (mut p, opened, t0) = optimising(4, &[7, 1, 0, 3], &[10, 10, 10, 10], replacement);
    p.set_limits(2, 6, secs(10), t0 + secs(1)).unwrap();
    assert!(actions(&mut p).is_empty(), "nothing closes at once");
    assert_eq!(p.poll_timeout(), Some(t0 + secs(10)));
    let mut now = t0 + secs(10);
    // The least used first (peer 3: 0 routes), then peer 2 (1 route).
    for (round, victim) in [(1, opened[2]), (2, opened[1])] {
        p.handle_timeout(now);
        let a = actions(&mut p);
        assert_eq!(
            a,
            vec![Action::Drain {
                tunnel: victim.0,
                peer: victim.1
            }],
            "refresh {round}: one drain, no replacement"
        );
        // Staged: closed once its routes moved away.
        p.handle_routes([(opened[0].0, 8)], now + secs(1));
        assert_eq!(
            actions(&mut p),
            vec![Action::Close {
                tunnel: victim.0,
                peer: victim.1,
                reason: CloseReason::Replaced
            }]
        );
        now += secs(10);
    }
    assert_eq!(p.own_count(), 2);
    assert_eq!(p.stats().surplus_drained, 2);
    assert_eq!(p.stats().replaced, 0, "surplus drains are not replacements");
    p.handle_timeout(now);
    let a = actions(&mut p);
    if replacement == Replacement::Never {
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(p.poll_timeout(), None);
    } else {
        assert!(matches!(a[0], Action::Drain { .. }), "{a:?}");
        assert_eq!(opens(&a).len(), 1, "back to replacing: {a:?}");
    }
}

#[test]
fn a_smaller_k_drains_the_surplus_one_per_refresh() {
    lower_k_drains_one_surplus_per_refresh(Replacement::LeastUsed);
}

#[test]
fn a_smaller_k_drains_the_surplus_even_with_never() {
    lower_k_drains_one_surplus_per_refresh(Replacement::Never);
}

#[test]
fn a_lower_max_refuses_new_incoming_and_cuts_none() {
    let t0 = Instant::now();
    let mut p = policy(0, config(1), t0);
    for peer in 1..=2 {
        p.handle_incoming(peer, t0).unwrap();
    }
    // max 3 with k 1 leaves room for 2 incoming; lowered to 2: room for 1.
    p.set_limits(1, 2, secs(10), t0).unwrap();
    assert!(actions(&mut p).is_empty(), "no tunnel is closed");
    assert_eq!(p.incoming_count(), 2);
    assert_eq!(
        p.handle_incoming(3, t0),
        Err(Refusal::Full { tunnels: 2, max: 2 })
    );
    // Once the peers' refreshes took theirs away, the new limit holds.
    let ids: Vec<TunnelId> = p.tunnels().map(|t| t.id).collect();
    p.handle_tunnel_closed(ids[0], t0 + secs(1));
    assert_eq!(
        p.handle_incoming(4, t0 + secs(1)),
        Err(Refusal::Full { tunnels: 1, max: 2 })
    );
    p.handle_tunnel_closed(ids[1], t0 + secs(2));
    assert!(p.handle_incoming(5, t0 + secs(2)).is_ok());
}

#[test]
fn a_new_refresh_period_counts_from_the_scheduled_refresh() {
    let (mut p, _opened, t0) = optimising(2, &[1, 1], &[10, 10], Replacement::LeastUsed);
    // Longer: the refresh already scheduled (t0 + 10 s) stays, the next
    // ones are 30 s apart.
    p.set_limits(2, 6, secs(30), t0 + secs(2)).unwrap();
    assert_eq!(p.poll_timeout(), Some(t0 + secs(10)));
    p.handle_timeout(t0 + secs(10));
    assert!(matches!(actions(&mut p)[0], Action::Drain { .. }));
    assert_eq!(
        p.poll_timeout(),
        Some(t0 + secs(10) + secs(5)),
        "drain deadline"
    );
    p.handle_timeout(t0 + secs(15));
    let _ = actions(&mut p);
    assert_eq!(p.poll_timeout(), Some(t0 + secs(40)));
    // Shorter: at most one new period from now.
    p.set_limits(2, 6, secs(4), t0 + secs(16)).unwrap();
    assert_eq!(p.poll_timeout(), Some(t0 + secs(20)));
}

/// Destinations 5..=54, each routed at `metric` ms and estimated at
/// `metric - gain(peer)` ms direct; plus peer 2, which already has a
/// tunnel, with the largest gain of all.
fn destinations(p: &mut P, metric: u64, gain: impl Fn(u32) -> u64, now: Instant) {
    let ms = Duration::from_millis;
    let d = (5..=54u32)
        .map(|peer| (peer, ms(metric), ms(metric - gain(peer))))
        .chain([(2, ms(500), ms(1))]);
    p.handle_destinations(d, now);
}

#[test]
fn shortcut_dials_the_destinations_with_the_largest_gain() {
    let (mut p, _, t0) = optimising(
        4,
        &[7, 1, 1, 3],
        &[10, 20, 50, 5],
        Replacement::Shortcut { random: 1 },
    );
    // 20 and 30 are routed at 100 ms but estimated at 10 and 40 ms direct:
    // 2 of 51 destinations are far (at least twice their estimate), 3.9 %.
    destinations(
        &mut p,
        100,
        |peer| match peer {
            20 => 90,
            30 => 60,
            _ => 5,
        },
        t0,
    );
    p.handle_timeout(t0 + secs(10));
    let a = actions(&mut p);
    let drained: Vec<u32> = a
        .iter()
        .filter_map(|a| match a {
            Action::Drain { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect();
    // The two least used (1 destination each), the slower first.
    assert_eq!(drained, vec![3, 2]);
    let new: Vec<u32> = opens(&a).iter().map(|o| o.1).collect();
    assert_eq!(new, vec![20, 30], "largest gains first, never peer 2 again");
    assert_eq!(p.stats().shortcuts_opened, 2);
    assert_eq!(p.stats().replaced, 2);
}

#[test]
fn shortcut_replaces_more_while_many_destinations_are_far() {
    let (mut p, opened, t0) = optimising(
        10,
        &[9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
        &[10; 10],
        Replacement::Shortcut { random: 2 },
    );
    // Every destination routed at 100 ms, estimated at 20: all far.
    destinations(&mut p, 100, |_| 80, t0);
    let now = t0 + secs(10);
    p.handle_timeout(now);
    let a = actions(&mut p);
    let drains = a
        .iter()
        .filter(|a| matches!(a, Action::Drain { .. }))
        .count();
    assert_eq!(drains, Replacement::MAX_SHORTCUTS);
    assert_eq!(opens(&a).len(), Replacement::MAX_SHORTCUTS);
    // The drains end; the new tunnels come up.
    bring_up(&mut p, &opens(&a), |_| 10, now);
    p.handle_routes(opened.iter().take(7).map(|&(t, _)| (t, 5)), now);
    let _ = actions(&mut p);
    assert_eq!(p.own_count(), 10);
    // Now routes are within 10 % of their estimates: one per refresh.
    destinations(&mut p, 100, |_| 10, now);
    p.handle_timeout(now + secs(10));
    let a = actions(&mut p);
    let drains = a
        .iter()
        .filter(|a| matches!(a, Action::Drain { .. }))
        .count();
    assert_eq!(drains, 1);
    assert_eq!(opens(&a).len(), 1);
}

#[test]
fn shortcut_keeps_its_random_tunnels_random() {
    // All 4 own tunnels must stay random: the victim is replaced by a
    // random peer, whatever the gains.
    let (mut p, _, t0) = optimising(
        4,
        &[7, 1, 2, 3],
        &[10, 20, 50, 5],
        Replacement::Shortcut { random: 4 },
    );
    // Only peer 2 is far (1 of 51): one replacement.
    destinations(&mut p, 100, |peer| if peer == 20 { 45 } else { 0 }, t0);
    p.handle_timeout(t0 + secs(10));
    let a = actions(&mut p);
    assert_eq!(opens(&a).len(), 1);
    assert_eq!(p.stats().shortcuts_opened, 0);
    assert_eq!(p.stats().replaced, 1);
    assert!(
        p.tunnels()
            .filter(|t| t.direction == Direction::Outgoing)
            .count()
            == 5
    );
}

#[test]
fn a_refused_shortcut_is_followed_by_the_next_one() {
    let (mut p, _, t0) = optimising(
        4,
        &[7, 1, 2, 3],
        &[10, 20, 50, 5],
        Replacement::Shortcut { random: 1 },
    );
    destinations(
        &mut p,
        100,
        // None far but peer 2 (1 of 51): one replacement.
        |peer| match peer {
            20 => 45,
            30 => 40,
            40 => 30,
            _ => 0,
        },
        t0,
    );
    let now = t0 + secs(10);
    p.handle_timeout(now);
    let new = opens(&actions(&mut p));
    assert_eq!(new.iter().map(|o| o.1).collect::<Vec<_>>(), vec![20]);
    p.handle_tunnel_failed(
        new[0].0,
        Failure::Refused(Refusal::Full {
            tunnels: 12,
            max: 12,
        }),
        now,
    );
    let next: Vec<u32> = opens(&actions(&mut p)).iter().map(|o| o.1).collect();
    assert_eq!(next, vec![30]);
    assert_eq!(p.stats().shortcuts_opened, 2);
}

#[test]
fn shortcut_list_is_bounded_and_ignores_me_and_no_gain() {
    let t0 = Instant::now();
    let mut p = policy(
        0,
        PolicyConfig {
            replacement: Replacement::Shortcut { random: 1 },
            ..config(4)
        },
        t0,
    );
    let ms = Duration::from_millis;
    p.handle_destinations(
        (0..10_000u32).map(|d| (d, ms(100), ms(u64::from(d % 150)))),
        t0,
    );
    assert!(p.shortcuts.len() <= SHORTCUTS_KEPT);
    assert!(!p.shortcuts.iter().any(|s| s.0 == 0), "not me");
    assert!(p.shortcuts.iter().all(|s| s.1 > 0), "only gains");
    assert!(p.shortcuts.windows(2).all(|w| w[0].1 >= w[1].1));
    // The largest gain: estimate 0 (d % 150 == 0, d > 0: peer 150).
    assert_eq!(p.shortcuts[0], (150, 100_000));
    // Far: estimate <= 50 ms, 51 of every 150 destinations (me excluded).
    assert_eq!(p.far.1, 9_999);
}

#[test]
fn networks_may_not_be_given_the_simulators_only_policy() {
    assert_eq!(
        Replacement::parse_for_nodes("least-used-best-of-5"),
        Ok(Replacement::LeastUsedBestOf { probes: 5 })
    );
    let e = Replacement::parse_for_nodes("shortcut-3").unwrap_err();
    assert!(e.contains("re6st sim"), "{e}");
    assert!(Replacement::parse_for_nodes("fastest").is_err());
    // The simulator still parses it.
    assert_eq!(
        "shortcut-3".parse::<Replacement>(),
        Ok(Replacement::Shortcut { random: 3 })
    );
}
