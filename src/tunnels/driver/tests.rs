//! The driver with a fake clock: what the node adds to the policy
//! (interface ids, staged removal with linger, late dial results).

use rand::SeedableRng;

use super::*;
use crate::tunnels::policy::Replacement;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn key(serial: u64) -> PeerKey {
    PeerKey {
        serial,
        prefix: format!("fd00:1:0:{serial:x}::/64").parse().unwrap(),
    }
}

fn driver(me: u64, k: usize, t0: Instant) -> Driver {
    driver_with(me, k, Replacement::LeastUsed, t0)
}

fn driver_with(me: u64, k: usize, replacement: Replacement, t0: Instant) -> Driver {
    let policy = PolicyConfig {
        refresh: secs(10),
        backoff_min: secs(2),
        backoff_max: secs(8),
        drain_timeout: secs(5),
        probe_timeout: secs(3),
        replacement,
        // k = 0 is a node that only accepts: give it room anyway.
        max_tunnels: 3 * k.max(1),
        ..PolicyConfig::with_k(k)
    };
    Driver::new(
        key(me),
        policy,
        StdRng::seed_from_u64(3),
        DriverConfig {
            linger: Duration::from_millis(500),
            peer_wait: secs(2),
            quarantine: secs(3),
        },
        t0,
    )
    .unwrap()
}

fn commands(d: &mut Driver) -> Vec<Command> {
    std::iter::from_fn(|| d.poll_command()).collect()
}

fn dials(cmds: &[Command]) -> Vec<(TunnelId, PeerKey)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Dial { tunnel, peer } => Some((*tunnel, *peer)),
            _ => None,
        })
        .collect()
}

#[test]
fn peer_keys_are_nodes_ordered_by_serial() {
    let a = key(5);
    let renewed = PeerKey {
        serial: 40,
        prefix: a.prefix,
    };
    assert_eq!(a, renewed, "a renewed certificate is the same node");
    assert_eq!(a.cmp(&renewed), Ordering::Equal);
    let b = PeerKey {
        serial: 7,
        prefix: "fd00::/64".parse().unwrap(),
    };
    assert!(a < b, "serial first, whatever the prefixes");
}

/// k tunnels up, carrying `dests` destinations each; returns their ids
/// and interfaces.
fn up_with_routes(
    d: &mut Driver,
    k: usize,
    dests: &[usize],
    t0: Instant,
) -> Vec<(TunnelId, IfaceId)> {
    d.handle_candidates((2..10).map(key), t0);
    let opened = dials(&commands(d));
    assert_eq!(opened.len(), k);
    let mut up = vec![];
    for (t, _) in &opened {
        match d.handle_dialled(*t, Ok(Some(Duration::from_millis(20))), t0) {
            Dialled::Up(i) => up.push((*t, i)),
            Dialled::Discard => panic!("discarded"),
        }
    }
    let counts: BTreeMap<IfaceId, usize> =
        up.iter().map(|x| x.1).zip(dests.iter().copied()).collect();
    d.handle_routes(&counts, t0);
    assert!(commands(d).is_empty());
    up
}

#[test]
fn refresh_drains_the_least_used_and_closes_once_both_ends_moved_away() {
    let t0 = Instant::now();
    let mut d = driver(1, 3, t0);
    let up = up_with_routes(&mut d, 3, &[5, 1, 9], t0);
    assert_eq!(
        up.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![IfaceId(0), IfaceId(1), IfaceId(2)]
    );
    let (victim, vi) = up[1];

    let t1 = d.poll_timeout().unwrap();
    assert_eq!(t1, t0 + secs(10), "the refresh period");
    d.handle_timeout(t1);
    let cmds = commands(&mut d);
    assert!(
        cmds.contains(&Command::Drain {
            tunnel: victim,
            iface: vi,
            notify_peer: true
        }),
        "{cmds:?}"
    );
    assert_eq!(dials(&cmds).len(), 1, "make before break: {cmds:?}");
    assert!(d.is_draining(victim));

    // Babel moved our routes away (the interface is still up, with 0).
    let counts = BTreeMap::from([(up[0].1, 6), (vi, 0), (up[2].1, 9)]);
    d.handle_routes(&counts, t1);
    assert!(commands(&mut d).is_empty(), "waits for the peer");
    assert_eq!(d.poll_timeout(), Some(t1 + secs(2)), "peer_wait");
    // The peer's routes moved away too: closed after the linger.
    let t2 = t1 + Duration::from_millis(100);
    d.handle_peer_drained(victim, t2);
    let t3 = d.poll_timeout().unwrap();
    assert_eq!(t3, t2 + Duration::from_millis(500));
    d.handle_timeout(t3 - Duration::from_millis(1));
    assert!(commands(&mut d).is_empty());
    d.handle_timeout(t3);
    assert_eq!(
        commands(&mut d),
        vec![Command::Close {
            tunnel: victim,
            iface: Some(vi),
            close: Some((close::REPLACED, "replaced by the tunnel refresh")),
        }]
    );
    let s = d.stats();
    assert_eq!(
        (s.drained, s.closed_drained, s.closed_unanswered),
        (1, 1, 0)
    );
    assert_eq!(
        (
            s.replacements,
            s.replacements_least_used,
            s.replaced_destinations
        ),
        (1, 1, 1)
    );
    // A late close report of the closed tunnel is ignored.
    d.handle_closed(victim, t3);
    assert!(commands(&mut d).is_empty());
}

#[test]
fn a_peer_that_never_answers_is_closed_after_peer_wait() {
    let t0 = Instant::now();
    let mut d = driver(1, 2, t0);
    let up = up_with_routes(&mut d, 2, &[3, 0], t0);
    let t1 = d.poll_timeout().unwrap();
    d.handle_timeout(t1);
    let _ = commands(&mut d);
    d.handle_routes(&BTreeMap::from([(up[0].1, 3), (up[1].1, 0)]), t1);
    assert!(commands(&mut d).is_empty());
    d.handle_timeout(t1 + secs(2));
    let cmds = commands(&mut d);
    assert!(
        cmds.iter().any(|c| matches!(c, Command::Close { tunnel, close: Some((close::REPLACED, _)), .. } if *tunnel == up[1].0)),
        "{cmds:?}"
    );
    assert_eq!(d.stats().closed_unanswered, 1);
}

#[test]
fn a_dial_that_lost_the_duplicate_rule_is_discarded() {
    let t0 = Instant::now();
    let mut d = driver(5, 1, t0);
    d.handle_candidates([key(3)], t0);
    let opened = dials(&commands(&mut d));
    assert_eq!(opened.len(), 1);
    // Node 3 (smaller serial) dials us at the same time: its tunnel wins.
    let (t_in, iface) = d.handle_incoming(key(3), t0).unwrap();
    assert_eq!(
        commands(&mut d),
        vec![Command::CancelDial {
            tunnel: opened[0].0
        }]
    );
    assert_eq!(d.tunnel_of(iface), Some(t_in));
    // Our connection completes anyway: discard it.
    assert_eq!(
        d.handle_dialled(opened[0].0, Ok(None), t0),
        Dialled::Discard
    );
    assert_eq!(d.stats().discarded_dials, 1);
    // And a larger serial dialling us while we hold its tunnel is refused.
    let mut d = driver(2, 1, t0);
    d.handle_candidates([key(3)], t0);
    let opened = dials(&commands(&mut d));
    assert_eq!(d.handle_incoming(key(3), t0), Err(Refusal::Duplicate));
    assert!(matches!(
        d.handle_dialled(opened[0].0, Ok(None), t0),
        Dialled::Up(_)
    ));
}

#[test]
fn after_a_renewal_the_duplicate_rule_uses_the_new_serial() {
    let t0 = Instant::now();
    // Node 5 holds a tunnel to 7; 7 dials us too. 5 < 7: ours is kept.
    let mut d = driver(5, 1, t0);
    d.handle_candidates([key(7)], t0);
    let _ = dials(&commands(&mut d));
    assert_eq!(d.handle_incoming(key(7), t0), Err(Refusal::Duplicate));
    // We renewed and are now serial 9 > 7: the peer's tunnel wins.
    d.set_me(PeerKey {
        serial: 9,
        prefix: key(5).prefix,
    });
    assert!(d.handle_incoming(key(7), t0).is_ok());
    assert!(
        commands(&mut d)
            .iter()
            .any(|c| matches!(c, Command::CancelDial { .. }))
    );
}

#[test]
fn failures_back_off_and_full_nodes_refuse() {
    let t0 = Instant::now();
    let mut d = driver(1, 1, t0);
    d.handle_candidates([key(2)], t0);
    let opened = dials(&commands(&mut d));
    let full = Refusal::Full { tunnels: 3, max: 3 };
    d.handle_dialled(opened[0].0, Err(Failure::Refused(full)), t0);
    assert!(commands(&mut d).is_empty(), "backed off");
    let retry = d.poll_timeout().unwrap();
    assert!(retry <= t0 + secs(2));
    d.handle_timeout(retry);
    assert_eq!(dials(&commands(&mut d)).len(), 1);

    // Max arity 3 (k = 1): the fourth incoming tunnel is refused.
    let mut d = driver(1, 1, t0);
    for s in 10..12 {
        d.handle_incoming(key(s), t0).unwrap();
    }
    d.handle_candidates([key(2)], t0);
    let _ = commands(&mut d);
    assert!(matches!(
        d.handle_incoming(key(13), t0),
        Err(Refusal::Full { tunnels: 3, max: 3 })
    ));
}

#[test]
fn interface_ids_are_quarantined_before_reuse() {
    let t0 = Instant::now();
    let mut d = driver(1, 0, t0);
    let (ta, ia) = d.handle_incoming(key(2), t0).unwrap();
    let (_, ib) = d.handle_incoming(key(3), t0).unwrap();
    assert_eq!((ia, ib), (IfaceId(0), IfaceId(1)));
    d.handle_closed(ta, t0);
    assert_eq!(
        commands(&mut d),
        vec![Command::Close {
            tunnel: ta,
            iface: Some(ia),
            close: None
        }]
    );
    let (_, ic) = d.handle_incoming(key(4), t0 + secs(1)).unwrap();
    assert_eq!(ic, IfaceId(2), "0 is still quarantined");
    let (_, id) = d.handle_incoming(key(5), t0 + secs(4)).unwrap();
    assert_eq!(id, IfaceId(0), "reused after the quarantine");
}

#[test]
fn a_peer_drain_is_answered_once_our_routes_moved_away() {
    let t0 = Instant::now();
    let mut d = driver(1, 0, t0);
    let (t, i) = d.handle_incoming(key(2), t0).unwrap();
    d.handle_peer_drain(t);
    assert_eq!(
        commands(&mut d),
        vec![Command::Drain {
            tunnel: t,
            iface: i,
            notify_peer: false
        }]
    );
    d.handle_peer_drain(t);
    assert!(commands(&mut d).is_empty(), "once");
    // Still routing through it: no answer yet.
    d.handle_routes(&BTreeMap::from([(i, 2)]), t0);
    assert!(commands(&mut d).is_empty());
    d.handle_routes(&BTreeMap::from([(i, 0)]), t0);
    assert_eq!(commands(&mut d), vec![Command::NotifyDrained { tunnel: t }]);
    d.handle_routes(&BTreeMap::from([(i, 0)]), t0);
    assert!(commands(&mut d).is_empty(), "answered once");
    // The peer closes it: gone here too (Babel interface down, next hop
    // removed).
    d.handle_closed(t, t0 + secs(1));
    assert_eq!(
        commands(&mut d),
        vec![Command::Close {
            tunnel: t,
            iface: Some(i),
            close: None
        }]
    );
    assert_eq!(d.policy().tunnel_count(), 0);
}

/// Candidates 2..6; every dial comes up. Returns the dials.
fn all_up(d: &mut Driver, t0: Instant) -> Vec<(TunnelId, PeerKey)> {
    d.handle_candidates((2..6).map(key), t0);
    let opened = dials(&commands(d));
    for (t, _) in &opened {
        d.handle_dialled(*t, Ok(None), t0);
    }
    let _ = commands(d);
    opened
}

#[test]
fn a_lost_tunnel_is_replaced_at_once() {
    let t0 = Instant::now();
    let mut d = driver(1, 2, t0);
    let opened = all_up(&mut d, t0);
    d.handle_closed(opened[0].0, t0);
    let cmds = commands(&mut d);
    assert!(matches!(
        cmds[0],
        Command::Close {
            iface: Some(_),
            close: None,
            ..
        }
    ));
    assert_eq!(dials(&cmds).len(), 1, "{cmds:?}");
    // The node drops a revoked peer: closed with its code, and replaced.
    d.close(opened[1].0, close::REVOKED, "revoked", t0);
    let cmds = commands(&mut d);
    assert!(matches!(
        cmds[0],
        Command::Close {
            close: Some((close::REVOKED, _)),
            ..
        }
    ));
    assert_eq!(dials(&cmds).len(), 1);
}

#[test]
fn lan_links_are_outside_the_policy() {
    let t0 = Instant::now();
    let mut d = driver(1, 2, t0);
    let opened = all_up(&mut d, t0);
    assert_eq!(d.policy().own_count(), 2);

    // A LAN link to a node next door: an interface, no policy tunnel.
    let lan = d.new_lan_id();
    let iface = d.handle_lan_up(key(9), lan, t0).unwrap();
    assert!(d.is_lan(lan));
    assert!(!d.is_lan(opened[0].0));
    assert_eq!(d.tunnel_of(iface), Some(lan));
    assert_eq!(d.policy().tunnel_count(), 2, "not counted against k or 3k");
    assert_eq!(d.lan_peers().collect::<Vec<_>>(), vec![key(9)]);
    let again = d.new_lan_id();
    assert_ne!(again, lan);
    assert_eq!(
        d.handle_lan_up(key(9), again, t0),
        None,
        "one LAN link per node"
    );
    assert_eq!(d.handle_lan_up(key(8), lan, t0), None, "an id in use");
    assert_eq!(
        d.handle_lan_up(key(8), opened[0].0, t0),
        None,
        "not a LAN link id"
    );
    // Routes and RTTs through it do not reach the policy (which would
    // not know the id), so its tunnels keep their counts.
    let counts: BTreeMap<IfaceId, usize> = [(iface, 50)].into();
    d.handle_routes(&counts, t0);
    d.handle_rtt(iface, Duration::from_millis(1), t0);
    // The refresh never picks it; its close frees the interface and does
    // not make the policy dial a replacement.
    d.handle_timeout(t0 + secs(11));
    let cmds = commands(&mut d);
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, Command::Drain { tunnel, .. } if *tunnel == lan)),
        "{cmds:?}"
    );
    d.handle_closed(lan, t0 + secs(11));
    let cmds = commands(&mut d);
    assert_eq!(
        cmds,
        vec![Command::Close {
            tunnel: lan,
            iface: Some(iface),
            close: None
        }]
    );
    assert_eq!(d.tunnel_of(iface), None);
    assert_eq!(d.lan_peers().count(), 0);
    assert!(d.handle_lan_up(key(9), again, t0 + secs(12)).is_some());
}

/// A best-of-3 driver (k = 2) taken up to its first probes' resolution:
/// the victim drains, probe 0 is up (30 ms) and carries 2 destinations,
/// probe 1 is up (10 ms), probe 2 still dials when the probe deadline
/// passes. Returns the driver, the deadline, (loser, winner) with their
/// interfaces, and the three probes.
fn best_of_3_resolved(t0: Instant) -> (Driver, Instant, [(TunnelId, IfaceId); 2], [TunnelId; 3]) {
    let mut driver = driver_with(1, 2, Replacement::LeastUsedBestOf { probes: 3 }, t0);
    let d = &mut driver;
    let up = up_with_routes(d, 2, &[5, 1], t0);
    let t1 = d.poll_timeout().unwrap();
    d.handle_timeout(t1);
    let cmds = commands(d);
    let probes: Vec<TunnelId> = dials(&cmds).into_iter().map(|x| x.0).collect();
    assert_eq!(probes.len(), 3, "{cmds:?}");
    let victim = up[1];
    assert!(cmds.contains(&Command::Drain {
        tunnel: victim.0,
        iface: victim.1,
        notify_peer: true
    }));
    let mut ifaces = vec![];
    for (p, ms) in [(probes[0], 30), (probes[1], 10)] {
        match d.handle_dialled(p, Ok(Some(Duration::from_millis(ms))), t1) {
            Dialled::Up(i) => ifaces.push(i),
            Dialled::Discard => panic!("a probe is wanted until the round ends"),
        }
        assert!(d.policy().tunnel(p).unwrap().probe);
    }
    // Babel already routes through the first probe; the victim is drained.
    let counts = BTreeMap::from([(up[0].1, 5), (victim.1, 0), (ifaces[0], 2)]);
    d.handle_routes(&counts, t1);
    assert!(
        !commands(d)
            .iter()
            .any(|c| matches!(c, Command::Close { tunnel, .. } if probes.contains(tunnel))),
        "nothing is decided while a probe still dials"
    );
    let deadline = t1 + secs(3);
    assert!(d.poll_timeout().unwrap() <= deadline);
    d.handle_timeout(deadline);
    let cmds = commands(d);
    assert!(
        cmds.contains(&Command::CancelDial { tunnel: probes[2] }),
        "{cmds:?}"
    );
    assert!(
        cmds.contains(&Command::Drain {
            tunnel: probes[0],
            iface: ifaces[0],
            notify_peer: true
        }),
        "the up loser is drained, not cut: {cmds:?}"
    );
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, Command::Close { tunnel, .. } if probes.contains(tunnel))),
        "{cmds:?}"
    );
    let kept = d.policy().tunnel(probes[1]).unwrap();
    assert!(!kept.probe, "the fastest probe is one of the k now");
    assert!(d.policy().tunnel(probes[0]).is_none());
    assert_eq!(d.policy().own_count(), 2);
    (
        driver,
        deadline,
        [(probes[0], ifaces[0]), (probes[1], ifaces[1])],
        [probes[0], probes[1], probes[2]],
    )
}

#[test]
fn best_of_3_keeps_the_fastest_and_drains_the_losers_before_closing() {
    let (mut d, t, [(loser, li), (winner, wi)], probes) = best_of_3_resolved(Instant::now());
    assert!(d.is_draining(loser));
    // The peer has moved its routes, ours still go through the loser: wait.
    d.handle_peer_drained(loser, t);
    let t = t + Duration::from_millis(100);
    d.handle_timeout(t);
    assert!(commands(&mut d).is_empty());
    // Ours have moved too: closed after the linger, as a replaced tunnel.
    d.handle_routes(&BTreeMap::from([(li, 0), (wi, 3)]), t);
    assert_eq!(d.poll_timeout(), Some(t + Duration::from_millis(500)));
    d.handle_timeout(t + Duration::from_millis(500));
    let cmds = commands(&mut d);
    assert!(
        cmds.contains(&Command::Close {
            tunnel: loser,
            iface: Some(li),
            close: Some((close::REPLACED, "probe tunnel not kept")),
        }),
        "{cmds:?}"
    );
    // The cancelled dial that connects anyway is discarded.
    assert_eq!(
        d.handle_dialled(probes[2], Ok(Some(Duration::from_millis(1))), t),
        Dialled::Discard
    );
    // A late close report of the loser is not news to the policy.
    d.handle_closed(loser, t + secs(1));
    let s = d.stats();
    assert_eq!((s.probes_drained, s.probes_cancelled), (1, 1));
    assert_eq!(s.discarded_dials, 1);
    assert_eq!(d.policy().stats().unknown_tunnel, 0);
    assert_eq!(d.iface_of(winner), Some(wi));
    assert!(!d.is_draining(winner));
}

#[test]
fn a_losing_probe_that_keeps_routes_is_closed_at_the_drain_timeout() {
    let (mut d, t, [(loser, li), _], _) = best_of_3_resolved(Instant::now());
    d.handle_peer_drained(loser, t);
    // Its routes never move away (no alternative): the policy's drain
    // timeout (5 s) bounds the wait.
    d.handle_routes(&BTreeMap::from([(li, 1)]), t);
    d.handle_timeout(t + secs(5) - Duration::from_millis(1));
    assert!(
        !commands(&mut d)
            .iter()
            .any(|c| matches!(c, Command::Close { tunnel, .. } if *tunnel == loser))
    );
    d.handle_timeout(t + secs(5));
    let cmds = commands(&mut d);
    assert!(
        cmds.iter().any(|c| matches!(c, Command::Close { tunnel, iface: Some(i), .. } if *tunnel == loser && *i == li)),
        "{cmds:?}"
    );
    assert!(d.iface_of(loser).is_none());
}

#[test]
fn a_peer_whose_tunnel_is_still_closing_is_not_dialled_again() {
    let t0 = Instant::now();
    let mut d = driver(1, 1, t0);
    // Two peers: one tunnel to each possible.
    d.handle_candidates([key(2), key(3)], t0);
    let first = dials(&commands(&mut d));
    assert_eq!(first.len(), 1);
    let (old, old_peer) = first[0];
    let Dialled::Up(oi) = d.handle_dialled(old, Ok(Some(secs(0))), t0) else {
        panic!("discarded")
    };
    // The refresh drains it and dials the other peer.
    let t1 = t0 + secs(10);
    d.handle_timeout(t1);
    let repl = dials(&commands(&mut d));
    assert_eq!(repl.len(), 1);
    assert_ne!(repl[0].1, old_peer);
    // Its routes moved: the policy lets it go; the driver waits for the
    // peer. Meanwhile the replacement fails and the other peer backs off.
    d.handle_routes(&BTreeMap::from([(oi, 0)]), t1);
    assert!(d.policy().tunnel(old).is_none());
    d.handle_dialled(repl[0].0, Err(Failure::Unreachable), t1);
    assert!(
        dials(&commands(&mut d)).is_empty(),
        "the peer being left is not dialled again while its tunnel closes"
    );
    // Once it is closed (the peer drained too, then the 500 ms linger), it
    // is a candidate again; the other peer is still backed off (2 s).
    d.handle_peer_drained(old, t1);
    d.handle_timeout(t1 + Duration::from_millis(500));
    let cmds = commands(&mut d);
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Close { tunnel, .. } if *tunnel == old)),
        "{cmds:?}"
    );
    assert_eq!(
        dials(&cmds).iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![old_peer],
        "{cmds:?}"
    );
}

#[test]
fn a_superseded_tunnel_is_closed_only_once_our_routes_left_it() {
    // The demo's lost ping: node 2 drains its tunnel to us (refresh), its
    // policy forgets it while its driver waits for our answer, and it dials
    // us again. Our routes still used the old tunnel (no alternative yet):
    // closing it at once retracted them.
    let t0 = Instant::now();
    let mut d = driver(1, 0, t0);
    let (old, oi) = d.handle_incoming(key(2), t0).unwrap();
    d.handle_routes(&BTreeMap::from([(oi, 4)]), t0);
    d.handle_peer_drain(old);
    let _ = commands(&mut d);
    d.handle_routes(&BTreeMap::from([(oi, 4)]), t0);
    assert!(commands(&mut d).is_empty(), "still routing through it");

    let t1 = t0 + Duration::from_millis(300);
    let (new, ni) = d.handle_incoming(key(2), t1).unwrap();
    assert_ne!(new, old);
    assert!(
        commands(&mut d).is_empty(),
        "not closed while our routes use it"
    );
    assert_eq!(d.iface_of(old), Some(oi), "still up");
    assert_eq!(
        d.poll_timeout(),
        Some(t1 + secs(5)),
        "only the drain-timeout bound"
    );
    // Babel moved the routes to the new tunnel: answered, closed after the
    // linger (the peer dialled again, so nothing of its own uses it).
    let t2 = t1 + Duration::from_millis(50);
    d.handle_routes(&BTreeMap::from([(oi, 0), (ni, 4)]), t2);
    assert_eq!(
        commands(&mut d),
        vec![Command::NotifyDrained { tunnel: old }]
    );
    assert_eq!(d.poll_timeout(), Some(t2 + Duration::from_millis(500)));
    d.handle_timeout(t2 + Duration::from_millis(500));
    assert_eq!(
        commands(&mut d),
        vec![Command::Close {
            tunnel: old,
            iface: Some(oi),
            close: Some((
                close::DONE,
                "superseded by a newer tunnel from the same node"
            )),
        }]
    );
    assert_eq!(d.iface_of(new), Some(ni));

    // Superseded again: drained first (its cost raised), closed once the
    // routes moved.
    let (third, ti) = d.handle_incoming(key(2), t2 + secs(1)).unwrap();
    assert_eq!(
        commands(&mut d),
        vec![Command::Drain {
            tunnel: new,
            iface: ni,
            notify_peer: false
        }]
    );
    d.handle_routes(&BTreeMap::from([(ni, 0), (ti, 4)]), t2 + secs(1));
    let _ = commands(&mut d);
    d.handle_timeout(t2 + secs(1) + Duration::from_millis(500));
    assert!(matches!(
        commands(&mut d)[..],
        [Command::Close { tunnel, .. }] if tunnel == new
    ));
    assert_eq!(d.iface_of(third), Some(ti));
}
