//! `re6st soak`, short: a registry and 6 real node processes (one network
//! namespace and TUN device each, as root) under two minutes of chaos, with
//! every pair probed through the overlay once a second. It must pass (no
//! panic, no process exit, no outage longer than its fault's bar, revoked
//! nodes cut off), print its summary as the last line, and leave no
//! namespace behind. Without root the same soak runs `--no-tun` nodes on
//! loopback (process faults only, reachability read from the routes).

use std::process::Command;

fn soak(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .arg("soak")
        .args(args)
        .output()
        .expect("running re6st soak");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn check_last_line(text: &str, nodes: usize) {
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("soak: {nodes} nodes, 2 min, ")),
        "last line: {last}"
    );
    for part in [
        " faults, reachability ",
        " % (among live pairs), max outage ",
        " s, panics 0, RSS growth ",
        " %, fd growth ",
    ] {
        assert!(last.contains(part), "last line lacks {part:?}: {last}");
    }
}

#[test]
fn a_two_minute_soak_passes_and_cleans_up() {
    let (ok, text) = soak(&[
        "--nodes",
        "6",
        "--minutes",
        "2",
        "--seed",
        "1",
        "--fault-every",
        "8s",
    ]);
    assert!(ok, "the soak failed");
    check_last_line(&text, 6);
    assert!(text.contains("soak: PASSED"), "{text}");
    // Every kind of process fault ran.
    for kind in ["kill", "freeze", "registry kill"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{kind} "))),
            "no {kind} in the report"
        );
    }
    if re6st::netns::is_root() {
        // The soak names its namespaces after its pid, as its directory.
        let pid = text
            .split("working directory ")
            .nth(1)
            .and_then(|s| s.split(';').next())
            .and_then(|d| d.rsplit('-').next())
            .expect("the working directory line")
            .to_string();
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&format!("re6st-soak-{pid}-")))
            .map(String::from)
            .collect();
        assert!(left.is_empty(), "namespaces left behind: {left:?}");
        assert!(text.contains("link down "), "no link fault in the report");
    } else {
        eprintln!("SKIPPED the namespace soak: needs root (the loopback soak ran instead)");
    }
}
