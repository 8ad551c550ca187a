//! A member with a valid certificate whose Babel lies, among ten honest
//! nodes of the virtual network: route-origin authentication keeps its
//! lies out of every honest routing table, and each lie is counted.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv6Net};
use re6st_babel::engine::{Claim, OriginCounters};
use re6st_babel::wire::{Message, OriginProof, PacketBuilder, RouterId, UpdateRepr};

use crate::identity::origin::router_id;
use crate::identity::unix_secs;
use crate::vnet::{NetConfig, Network};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// Honest nodes 0..10, the rogue 10.
const ROGUE: usize = 10;
const VICTIM: usize = 3;
const HONEST: std::ops::Range<usize> = 0..10;

fn converged() -> Network {
    converged_with(NetConfig::default())
}

fn converged_with(config: NetConfig) -> Network {
    let mut net = Network::new(NetConfig {
        nodes: 11,
        ..config
    });
    let took = net.run_until_true(S, 120 * S, Network::converged);
    assert!(
        took.is_some(),
        "no convergence: {:?}",
        net.reachable_pairs()
    );
    assert_eq!(net.violation(), None);
    net
}

/// The origin drops of every honest node, summed.
fn drops(net: &Network) -> OriginCounters {
    let mut sum = OriginCounters::default();
    for i in HONEST {
        let c = &net.core(i).unwrap().engine().counters().origin;
        sum.unknown_origin += c.unknown_origin;
        sum.not_authorised += c.not_authorised;
        sum.bad_proof += c.bad_proof;
        sum.stale_proof += c.stale_proof;
        sum.throttled += c.throttled;
        sum.missing_proof += c.missing_proof;
        sum.own_unproven += c.own_unproven;
    }
    sum
}

/// Honest node `i`'s routes (selected or not) to `prefix`.
fn routes_to(net: &Network, i: usize, prefix: IpNet) -> Vec<re6st_babel::engine::RouteInfo> {
    net.core(i)
        .unwrap()
        .routes(Instant::now())
        .into_iter()
        .filter(|r| r.prefix == prefix)
        .collect()
}

/// Runs `d` in steps of 250 ms; after each, `ok` must hold and every
/// honest node's packets to the victim must arrive there.
fn hold(
    net: &mut Network,
    d: Duration,
    mut every: impl FnMut(&mut Network),
    ok: impl Fn(&Network) -> Result<(), String>,
) {
    let steps = (d.as_millis() / 250) as usize;
    for _ in 0..steps {
        every(net);
        net.run_for(250 * MS);
        if let Err(e) = ok(net) {
            panic!("at {:?}: {e}", net.elapsed());
        }
        for i in HONEST.filter(|i| *i != VICTIM) {
            let path = net.path(i, VICTIM);
            assert!(
                path.as_ref().and_then(|p| p.last()) == Some(&VICTIM),
                "at {:?}: n{i} to the victim: {path:?}",
                net.elapsed()
            );
        }
    }
    assert_eq!(net.violation(), None);
}

/// No honest node holds a route to `prefix` originated by the rogue.
fn no_route_from_rogue(net: &Network, prefix: IpNet) -> Result<(), String> {
    let rogue = router_id(net.cert(ROGUE).prefix);
    for i in HONEST {
        if routes_to(net, i, prefix)
            .iter()
            .any(|r| r.router_id == rogue)
        {
            return Err(format!("n{i} has the rogue's route to {prefix}"));
        }
    }
    Ok(())
}

/// No honest node holds any route to `prefix`.
fn no_route(net: &Network, prefix: IpNet) -> Result<(), String> {
    for i in HONEST {
        if !routes_to(net, i, prefix).is_empty() {
            return Err(format!("n{i} has a route to {prefix}"));
        }
    }
    Ok(())
}

#[test]
fn rogue_announcing_the_victims_prefix_is_ignored() {
    let mut net = converged();
    let victim: IpNet = net.cert(VICTIM).prefix.into();
    let before = drops(&net);
    net.with_core(ROGUE, |c, now| c.rogue_announce(victim, now));
    hold(&mut net, 60 * S, |_| {}, |n| no_route_from_rogue(n, victim));
    let after = drops(&net);
    assert!(after.not_authorised > before.not_authorised, "{after:?}");
    println!(
        "not authorised: {}",
        after.not_authorised - before.not_authorised
    );
}

#[test]
fn rogue_announcing_a_more_specific_of_the_victim_is_ignored() {
    let mut net = converged();
    let v = net.cert(VICTIM).prefix;
    // The first /80 of the victim's /64 holds its address (prefix::1).
    let specific: IpNet = Ipv6Net::new(v.network(), 80).unwrap().into();
    assert!(specific.contains(&std::net::IpAddr::V6(net.cert(VICTIM).address)));
    let before = drops(&net);
    net.with_core(ROGUE, |c, now| c.rogue_announce(specific, now));
    hold(&mut net, 60 * S, |_| {}, |n| no_route(n, specific));
    let after = drops(&net);
    assert!(after.not_authorised > before.not_authorised, "{after:?}");
}

#[test]
fn rogue_announcing_a_default_route_unauthorised_is_ignored() {
    let mut net = converged();
    let default: IpNet = "::/0".parse().unwrap();
    let outside: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let before = drops(&net);
    net.with_core(ROGUE, |c, now| c.rogue_announce(default, now));
    hold(
        &mut net,
        60 * S,
        |_| {},
        |n| {
            no_route(n, default)?;
            for i in HONEST {
                if n.path_to(i, outside).is_some_and(|p| p.contains(&ROGUE)) {
                    return Err(format!("n{i} sends {outside} to the rogue"));
                }
            }
            Ok(())
        },
    );
    let after = drops(&net);
    assert!(after.not_authorised > before.not_authorised, "{after:?}");
}

/// The rogue's forged Update: the victim's prefix under the victim's
/// router-id, one seqno ahead of the victim, metric 0, with `proof`.
fn forged(prefix: IpNet, rid: RouterId, seqno: u16, proof: Option<OriginProof>) -> Vec<u8> {
    let mut b = PacketBuilder::new(1400);
    b.push(&Message::Update(UpdateRepr {
        prefix: Some(prefix),
        interval: Duration::from_secs(16),
        seqno,
        metric: 0,
        router_id: Some(rid),
        next_hop: None,
        proof,
    }))
    .unwrap();
    b.finish()
}

#[test]
fn rogue_claiming_the_victims_router_id_with_a_newer_seqno_is_ignored() {
    let mut net = converged();
    let victim: IpNet = net.cert(VICTIM).prefix.into();
    let rid = router_id(net.cert(VICTIM).prefix);
    let catch_ups = |n: &Network| n.core(VICTIM).unwrap().engine().counters().seqno_catch_ups;
    assert_eq!(catch_ups(&net), 0);
    let before = drops(&net);
    let mut round = 0u32;
    hold(
        &mut net,
        30 * S,
        |n| {
            let seqno = n.core(VICTIM).unwrap().engine().seqno().wrapping_add(1);
            round += 1;
            n.with_core(ROGUE, |c, now| {
                // In turn: no proof, a proof made up (fresh date, random
                // signature), a proof dated long ago.
                let at = u32::try_from(unix_secs(now.wall)).unwrap();
                let proof = match round % 3 {
                    0 => None,
                    1 => {
                        let mut p = at.to_be_bytes().to_vec();
                        p.extend_from_slice(&[7; 64]);
                        OriginProof::new(&p)
                    }
                    _ => {
                        let mut p = (at - 86_400).to_be_bytes().to_vec();
                        p.extend_from_slice(&[7; 64]);
                        OriginProof::new(&p)
                    }
                };
                c.rogue_send_babel(&forged(victim, rid, seqno, proof));
            });
        },
        |n| {
            // The victim's seqno is never pushed by the rogue, and no
            // honest node holds a route ahead of the victim's own seqno.
            if catch_ups(n) != 0 {
                return Err("the rogue moved the victim's seqno".into());
            }
            let own = n.core(VICTIM).unwrap().engine().seqno();
            for i in HONEST.filter(|i| *i != VICTIM) {
                for r in routes_to(n, i, victim) {
                    if re6st_babel::metric::seqno_gt(r.seqno, own) {
                        return Err(format!("n{i} holds seqno {} > {own}", r.seqno));
                    }
                }
            }
            Ok(())
        },
    );
    let after = drops(&net);
    assert!(after.missing_proof > before.missing_proof, "{after:?}");
    assert!(after.bad_proof > before.bad_proof, "{after:?}");
    assert!(after.stale_proof > before.stale_proof, "{after:?}");
    println!(
        "missing {} bad {} stale {} own unproven {}",
        after.missing_proof - before.missing_proof,
        after.bad_proof - before.bad_proof,
        after.stale_proof - before.stale_proof,
        after.own_unproven - before.own_unproven,
    );
}

#[test]
fn rogue_flooding_forged_proofs_is_throttled_and_bounded() {
    let mut net = converged();
    let v = net.cert(VICTIM).prefix;
    let rid = router_id(v);
    let before = drops(&net);
    // 4,500 forged Updates in 300 packets of 15: more-specifics of the
    // victim under its router-id, each with a fresh-dated made-up proof
    // (every one costs a signature check until the budget runs out).
    net.with_core(ROGUE, |c, now| {
        let at = u32::try_from(unix_secs(now.wall)).unwrap();
        let mut proof = at.to_be_bytes().to_vec();
        proof.extend_from_slice(&[9; 64]);
        let proof = OriginProof::new(&proof);
        for p in 0..300u32 {
            let mut b = PacketBuilder::new(1400);
            for j in 0..15u32 {
                let n = u128::from(v.network()) | (u128::from(p * 15 + j) << 48);
                let prefix = IpNet::V6(Ipv6Net::new(n.into(), 80).unwrap());
                let _ = b.push(&Message::Update(UpdateRepr {
                    prefix: Some(prefix),
                    interval: Duration::from_secs(16),
                    seqno: 1,
                    metric: 0,
                    router_id: Some(rid),
                    next_hop: None,
                    proof: proof.clone(),
                }));
            }
            c.rogue_send_babel(&b.finish());
        }
    });
    let victim: IpNet = v.into();
    hold(
        &mut net,
        10 * S,
        |_| {},
        |n| {
            for i in HONEST {
                let core = n.core(i).unwrap();
                let extra = core
                    .routes(Instant::now())
                    .iter()
                    .filter(|r| victim.contains(&r.prefix) && r.prefix != victim)
                    .count();
                if extra > 0 {
                    return Err(format!("n{i} holds {extra} forged routes"));
                }
            }
            Ok(())
        },
    );
    let after = drops(&net);
    assert!(after.throttled > before.throttled, "{after:?}");
    assert!(after.bad_proof > before.bad_proof, "{after:?}");
    println!(
        "bad proofs {} throttled {}",
        after.bad_proof - before.bad_proof,
        after.throttled - before.throttled
    );
}

#[test]
fn rogue_revoked_its_routes_vanish_once_the_crl_spreads() {
    let mut net = converged();
    let rogue: IpNet = net.cert(ROGUE).prefix.into();
    let serial = net.cert(ROGUE).serial;
    assert!(
        HONEST
            .clone()
            .all(|i| !routes_to(&net, i, rogue).is_empty())
    );
    net.revoke(&[serial]);
    net.registry_round(0);
    let crl = net.run_until_true(MS, 10 * S, |n| {
        HONEST.clone().all(|i| {
            n.core(i)
                .unwrap()
                .crl()
                .is_some_and(|c| c.is_revoked(serial))
        })
    });
    let mut net2 = net;
    let routes = net2.run_until_true(MS, 10 * S, |n| {
        HONEST.clone().all(|i| routes_to(n, i, rogue).is_empty())
    });
    println!("CRL everywhere after {crl:?}, the revoked node's routes gone {routes:?} later");
    assert!(crl.is_some() && routes.is_some());
}

#[test]
fn rogue_replaying_old_signed_updates_is_ignored_even_after_the_seqno_went_round() {
    // Proofs live 60 s here (2 h by default): the victim signs afresh
    // every 30 s, and a proof the rogue keeps goes stale within the test.
    let mut config = NetConfig::default();
    config.core.origins.proof_lifetime = 60 * S;
    let mut net = converged_with(config);
    let victim: IpNet = net.cert(VICTIM).prefix.into();
    let rid = router_id(net.cert(VICTIM).prefix);
    let own = |n: &Network| n.core(VICTIM).map(|c| c.engine().seqno());
    let catch_ups = |n: &Network| n.core(VICTIM).unwrap().engine().counters().seqno_catch_ups;
    // The rogue keeps the victim's genuine signed claim of today.
    let s0 = own(&net).unwrap();
    let claim = Claim {
        prefix: victim,
        router_id: rid,
        seqno: s0,
    };
    let mut kept = None;
    net.with_core(ROGUE, |c, now| kept = c.rogue_keep_proof(&claim, now));
    let kept = kept.expect("the rogue relays the victim's proof");
    let replay = forged(victim, rid, s0, Some(kept));
    // No honest node selects the replayed seqno while the victim is at
    // another.
    let no_replay_selected = |n: &Network| -> Result<(), String> {
        if own(n) == Some(s0) {
            return Ok(());
        }
        for i in HONEST.filter(|i| *i != VICTIM) {
            if routes_to(n, i, victim)
                .iter()
                .any(|r| r.selected && r.seqno == s0)
            {
                return Err(format!("n{i} selects the replayed seqno {s0}"));
            }
        }
        Ok(())
    };

    // Replayed while the victim moves on: older, so never preferred.
    hold(
        &mut net,
        45 * S,
        |n| n.with_core(ROGUE, |c, _| c.rogue_send_babel(&replay)),
        |_| Ok(()),
    );
    assert_ne!(own(&net), Some(s0), "the victim never signed afresh");
    no_replay_selected(&net).unwrap();

    // The victim goes away, long enough for every proof of it to go
    // stale and its routes to go, and comes back 999 seqnos behind the
    // kept claim: as if its seqno had gone round (or it had restarted
    // without its state), the replay is now the newer in Babel's order.
    net.crash(VICTIM);
    net.run_for(90 * S);
    net.set_persisted_seqno(VICTIM, s0.wrapping_sub(1000));
    net.restart(VICTIM, true);
    let back = net.run_until_true(S, 120 * S, Network::converged);
    assert!(back.is_some(), "no convergence after the restart");
    let now_at = own(&net).unwrap();
    assert!(
        re6st_babel::metric::seqno_gt(s0, now_at),
        "the victim is at {now_at}, not behind {s0}"
    );
    let before = drops(&net);
    hold(
        &mut net,
        30 * S,
        |n| n.with_core(ROGUE, |c, _| c.rogue_send_babel(&replay)),
        |n| {
            if catch_ups(n) != 0 {
                return Err("the replay moved the victim's seqno".into());
            }
            no_replay_selected(n)
        },
    );
    let after = drops(&net);
    assert!(after.stale_proof > before.stale_proof, "{after:?}");
    println!(
        "replays refused as stale: {}",
        after.stale_proof - before.stale_proof
    );
}

#[test]
fn rogue_flooding_certificate_requests_is_throttled() {
    use crate::node::core::origins::{CERT_ANSWERS_BURST, CERT_ANSWERS_RATE};
    use crate::transport::control::{Control, MAX_WANT_CERTS};
    let mut net = converged();
    // Every honest node's router-id, 32 to a message: each answer would
    // carry 32 certificates.
    let rids: Vec<RouterId> = HONEST.map(|i| router_id(net.cert(i).prefix)).collect();
    let want = Control::WantCerts(rids.iter().cycle().take(MAX_WANT_CERTS).copied().collect());
    let answered = |n: &Network| -> Vec<(u64, u64)> {
        HONEST
            .map(|i| {
                let s = n.core(i).unwrap().cert_fetch_stats();
                (s.answered, s.throttled)
            })
            .collect()
    };
    let before = answered(&net);
    let cert_bytes = net.stats().cert_bytes;
    // 200 requests a second on every tunnel, for 10 s.
    let secs = 10;
    for _ in 0..secs * 4 {
        net.with_core(ROGUE, |c, _| {
            for _ in 0..50 {
                c.rogue_send_control(&want);
            }
        });
        net.run_for(250 * MS);
    }
    let after = answered(&net);
    let mut throttled = 0;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let sent = a.0 - b.0;
        // The rogue reached only its neighbours; each answered at most
        // the burst and the rate, and counted the rest.
        assert!(
            sent <= u64::from(CERT_ANSWERS_BURST + CERT_ANSWERS_RATE * (secs + 1)),
            "n{i} answered {sent}"
        );
        throttled += a.1 - b.1;
    }
    assert!(throttled > 0, "{after:?}");
    let bytes = net.stats().cert_bytes - cert_bytes;
    println!(
        "certificate bytes sent to the rogue in {secs} s: {bytes}, requests throttled {throttled}"
    );
    // Honest flows are untouched.
    hold(&mut net, 5 * S, |_| {}, |_| Ok(()));
}
