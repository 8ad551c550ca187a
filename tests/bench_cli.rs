//! `re6st bench --short` as root: the whole benchmark in seconds (the CI
//! smoke run). It must set up its namespaces, measure every row, print
//! sane JSON and leave nothing behind.

use std::process::Command;

#[test]
fn short_bench_measures_every_row_and_cleans_up() {
    if !re6st::netns::is_root() {
        eprintln!(
            "SKIPPED short_bench_measures_every_row_and_cleans_up: needs root for network namespaces and TUN devices"
        );
        return;
    }
    for tool in ["iperf3", "ping"] {
        if Command::new(tool).arg("-V").output().is_err() {
            eprintln!(
                "SKIPPED short_bench_measures_every_row_and_cleans_up: no {tool} (scripts/install-deps installs it)"
            );
            return;
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .args(["bench", "--short", "--json"])
        .output()
        .expect("running re6st bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "re6st bench failed: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let paths = r["paths"].as_array().expect("paths");
    let keys: Vec<&str> = paths.iter().filter_map(|p| p["key"].as_str()).collect();
    // The row over a TCP tunnel needs nft (to drop its node's UDP).
    let nft = Command::new("nft").arg("--version").output().is_ok();
    let mut want = vec!["raw", "two-node", "chain", "two-node-v4", "chain-v4"];
    if nft {
        want.push("tcp");
    }
    assert_eq!(keys, want);
    for p in paths {
        let tcp = p["tcp_gbps"]["median"].as_f64().unwrap_or(0.0);
        let rtt = p["rtt_idle_ms"]["median"].as_f64().unwrap_or(0.0);
        assert!(tcp > 0.0 && rtt > 0.0, "{p}");
        if p["key"] != "raw" {
            assert!(p["ratio_to_raw"].as_f64().unwrap() > 0.0, "{p}");
            assert!(p["added_rtt_idle_ms"].is_number(), "{p}");
            assert!(p["node_cpu_percent"].as_f64().unwrap() > 0.0, "{p}");
        }
    }
    let idle = &r["idle"][0];
    assert_eq!(idle["tunnels"], 2, "{idle}");
    let cpu = idle["cpu_percent"]["median"].as_f64().expect("idle CPU");
    assert!(cpu > 0.0 && cpu < 100.0, "{idle}");
    // Nothing left behind: no namespace of this bench (its pid is gone).
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout);
    assert!(
        !ns.lines().any(|l| l.starts_with("re6st-bench-")),
        "namespaces left: {ns}"
    );
}

#[test]
fn an_interrupted_bench_removes_its_namespaces() {
    if !re6st::netns::is_root() {
        eprintln!("SKIPPED an_interrupted_bench_removes_its_namespaces: needs root");
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .args(["bench", "--short", "--json", "--only", "two-node"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting re6st bench");
    let mine = format!("re6st-bench-{}-", child.id());
    let list = || {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&mine))
            .count()
    };
    let start = std::time::Instant::now();
    while list() < 3 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the bench made no namespaces"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted bench reports failure");
    assert_eq!(list(), 0, "namespaces left after Ctrl-C");
}
