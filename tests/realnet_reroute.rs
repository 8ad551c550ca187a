//! Reroute around a node that dies, on real kernels: four `re6st node`
//! processes in a diamond (a–b–d and a–c–d, one veth per link, no other
//! path between a and d). During a ping flood from a to d, the process of
//! the intermediate node that carries the traffic is killed (SIGKILL: no
//! clean close; the peers notice the silence). The nodes run with their
//! default timers: the liveness detector suspects a tunnel silent for 600 ms
//! (3 keep-alives of 200 ms) and moves its routes away, long before the
//! 10 s idle timeout closes it. The test measures how long the traffic was
//! interrupted (the longest run of lost pings) and asserts under 1 s
//! (the goal for the default timers).
//!
//! The registry sits on a separate management bridge that only it uses
//! (nodes announce their link addresses only).

mod realnet_support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use realnet_support::{TestNode, lab_or_skip, start_node, start_registry, wait_until};

/// Interval of the ping flood.
const INTERVAL_MS: u64 = 10;

/// The goal for the interruption with the default timers.
const GOAL: Duration = Duration::from_secs(1);

#[test]
fn traffic_moves_to_the_other_path_when_an_intermediate_node_is_killed() {
    let Some(mut lab) = lab_or_skip(
        "traffic_moves_to_the_other_path_when_an_intermediate_node_is_killed",
        "reroute",
    ) else {
        return;
    };
    let mgmt: Vec<(&str, &str)> = vec![
        ("a", "fd00:ff::a/64"),
        ("b", "fd00:ff::b/64"),
        ("c", "fd00:ff::c/64"),
        ("d", "fd00:ff::d/64"),
    ];
    lab.star("mgmt", "fd00:ff::ff/64", &mgmt).unwrap();
    for (x, y) in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")] {
        lab.veth(
            (x, &format!("{x}{y}"), Some(&format!("fd00:{x}{y}::{x}/64"))),
            (y, &format!("{y}{x}"), Some(&format!("fd00:{x}{y}::{y}/64"))),
        )
        .unwrap();
    }
    let fp = start_registry(
        &mut lab,
        "mgmt",
        "[fd00:ff::ff]:8443",
        &["fd00:ff::ff"],
        2,
        &[],
    );
    let url = "https://[fd00:ff::ff]:8443";
    let adv = |links: &[&str], me: &str| -> Vec<String> {
        links
            .iter()
            .map(|l| format!("[fd00:{l}::{me}]:4326"))
            .collect()
    };
    let mut nodes: Vec<TestNode> = Vec::new();
    for (name, links) in [
        ("a", vec!["ab", "ac"]),
        ("b", vec!["ab", "bd"]),
        ("c", vec!["ac", "cd"]),
        ("d", vec!["bd", "cd"]),
    ] {
        let a = adv(&links, name);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        nodes.push(start_node(&mut lab, name, url, &fp, &refs, &[]));
    }
    let (a, b, c, d) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3]);
    let took = wait_until(
        "a and d route to each other, with tunnels a-b, a-c, b-d, c-d",
        Duration::from_secs(90),
        || {
            a.has_tunnel_to(b)
                && a.has_tunnel_to(c)
                && d.has_tunnel_to(b)
                && d.has_tunnel_to(c)
                && a.via(d).is_some()
                && d.via(a).is_some()
        },
    );
    eprintln!("diamond up after {took:?}");
    let via = a.via(d).unwrap();
    let (victim, other) = if via == b.prefix { (b, c) } else { (c, b) };
    eprintln!("a -> d goes through {}; killing it", victim.name);

    // The flood: one ping every 10 ms for 8 s, each line timestamped.
    let flood = lab
        .command("a", "ping")
        .args(["-6", "-n", "-D", "-W", "1", "-c", "800"])
        .args(["-i", &format!("{:.3}", INTERVAL_MS as f64 / 1000.0)])
        .arg(d.address.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut flood = scopeguard(flood);
    // Answers as (arrival time from `ping -D`, icmp_seq), read by a thread
    // so that ping never blocks on a full pipe.
    let out = BufReader::new(flood.0.stdout.take().unwrap());
    let reader = std::thread::spawn(move || -> Vec<(f64, u32)> {
        out.lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                let t = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
                let seq = l
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("icmp_seq="))?
                    .parse()
                    .ok()?;
                Some((t, seq))
            })
            .collect()
    });
    std::thread::sleep(Duration::from_secs(3));
    let killed_at = Instant::now();
    lab.proc(&victim.name).unwrap().signal(libc::SIGKILL);

    // Well before the 10 s idle timeout: the routes have moved by
    // suspicion, the tunnel to the victim is still there.
    std::thread::sleep(Duration::from_secs(2));
    let moved = (a.via(d), d.via(a));
    let state = a
        .tunnels()
        .into_iter()
        .find(|t| t.peer_prefix == victim.prefix)
        .map(|t| t.state);
    let suspected = a.counter("liveness", "suspected");

    let answers = reader.join().unwrap();
    let _ = flood.0.wait();
    let after = killed_at.elapsed();
    // The interruption: the longest time without an answer, less the
    // flood's interval (ping slows down while answers are missing, so
    // sequence numbers would understate it).
    let (silence, at) = answers
        .windows(2)
        .map(|w| (w[1].0 - w[0].0, w[0].1))
        .fold((0.0f64, 0u32), |m, x| if x.0 > m.0 { x } else { m });
    let interrupted =
        Duration::from_secs_f64(silence).saturating_sub(Duration::from_millis(INTERVAL_MS));
    let last = answers.last().map_or(0, |a| a.1);
    eprintln!(
        "REROUTE: {} of 800 pings answered; traffic interrupted for {interrupted:?} \
         (no answer for {silence:.3} s after icmp_seq={at}); flood ended {after:?} after the kill",
        answers.len()
    );
    // Traffic came back (answers until the end of the flood), and the
    // routes now go through the survivor.
    assert!(last >= 790, "no answers after icmp_seq={last}");
    assert!(
        answers.len() < 800,
        "no ping was lost: the victim did not carry the traffic?"
    );
    assert!(
        interrupted < GOAL,
        "interrupted for {interrupted:?} with the default timers (goal: under {GOAL:?})"
    );
    assert_eq!(moved, (Some(other.prefix), Some(other.prefix)));
    assert_eq!(
        state.as_deref(),
        Some("suspect"),
        "a's tunnel to the killed node is suspected, not closed; a's log:\n{}",
        lab.proc("a").map(|p| p.log_text()).unwrap_or_default()
    );
    assert!(suspected >= 1);
}

/// Kills the child when dropped (a failed assertion must not leave a ping
/// running).
struct Guard(std::process::Child);

fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c)
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
