//! `re6st sim` end to end, small: every experiment runs with `--quick`,
//! writes its CSV, its SVG and the results table. The figures themselves
//! are checked by the unit tests of `src/sim` (bounds, heuristic, routing on
//! a hand-made matrix) and reproduced by `re6st sim all`.

use std::path::Path;
use std::process::Command;

fn sim(args: &[&str], out: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .arg("sim")
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--quick")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("re6st runs");
    assert!(
        output.status.success(),
        "re6st sim {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(out.join("results.md")).expect("results.md written")
}

#[test]
fn graph_experiments_write_csv_svg_and_table() {
    let dir = std::env::temp_dir().join(format!("re6st-sim-graph-{}", std::process::id()));
    let table = sim(&["arity"], &dir);
    assert!(table.contains("| 1 arity | share of nodes with arity 12..32 | 99.9% |"));
    for exp in ["disconnection", "fault", "k", "distance", "availability"] {
        let table = sim(&[exp], &dir);
        assert!(table.lines().count() > 4, "{exp}: {table}");
    }
    for f in [
        "arity.csv",
        "arity.svg",
        "fig1_disconnection_bound.svg",
        "fig2_distance.svg",
        "fig3_fault_bound.svg",
        "fig4_fault_simulation.svg",
        "fig5_distance_vs_k.svg",
        "availability.csv",
    ] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(text.len() > 100, "{f} is empty");
    }
    let svg = std::fs::read_to_string(dir.join("arity.svg")).expect("svg");
    assert!(svg.starts_with("<svg") && svg.contains("formula (3.2)"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn latency_experiments_run_on_the_real_data() {
    let dir = std::env::temp_dir().join(format!("re6st-sim-latency-{}", std::process::id()));
    let table = sim(&["latency"], &dir);
    // The reference points of the real subset, as its README gives them.
    assert!(table.contains("79.21 ms (27 pairs missing)"), "{table}");
    assert!(
        table.contains("21.50 ms exact; 23.38 ms by the report's method"),
        "{table}"
    );
    for exp in ["dynamics", "fault-optimised", "beyond"] {
        let table = sim(&[exp], &dir);
        assert!(table.lines().count() > 4, "{exp}: {table}");
    }
    // The strategies are named as the network option that enables them.
    let table = std::fs::read_to_string(dir.join("results.md")).unwrap();
    assert!(
        table.contains("network option: --tunnel-replacement least-used-best-of-5"),
        "{table}"
    );
    assert!(dir.join("beyond_real500.svg").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn all_only_runs_the_named_experiments_and_refuses_unknown_ones() {
    let dir = std::env::temp_dir().join(format!("re6st-sim-all-{}", std::process::id()));
    let table = sim(&["all", "--only", "arity,availability"], &dir);
    assert!(table.contains("| 1 arity |") && table.contains("| 5 availability |"));
    assert!(!table.contains("| 6 k |"));
    let output = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .args(["sim", "all", "--only", "nope", "--out"])
        .arg(&dir)
        .output()
        .expect("re6st runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no experiment named \"nope\""));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wrong_data_directory_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("re6st-sim-nodata-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .args([
            "sim",
            "latency",
            "--quick",
            "--data",
            "/nonexistent",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("re6st runs");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("/nonexistent"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn network_runs_node_cores_to_full_reachability_and_writes_its_files() {
    let dir = std::env::temp_dir().join(format!("re6st-sim-network-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .args([
            "sim",
            "network",
            "--nodes",
            "20",
            "--data",
            "meridian500",
            "--duration",
            "2m",
            "--kill",
            "0.5",
            "--json",
            "--out",
        ])
        .arg(&dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("re6st runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "re6st sim network failed: {stderr}"
    );
    let s: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON summary");
    assert_eq!(s["nodes"], 20);
    assert_eq!(s["data"], "meridian500 (real)");
    let start = s["full_reach_after_start_s"]
        .as_f64()
        .expect("full reach after start");
    assert!(start > 0.0 && start < 60.0, "{s}");
    assert_eq!(s["killed"], 10, "{s}");
    assert!(s["full_reach_after_kill_s"].as_f64().is_some(), "{s}");
    assert_eq!(s["final_reach"], 1.0, "{s}");
    assert_eq!(s["invariant_violation"], serde_json::Value::Null, "{s}");
    for key in [
        "babel_bytes_per_s_node",
        "exchange_bytes_per_s_node",
        "routes_per_node",
    ] {
        assert!(s[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {s}");
    }
    let rtt = s["mean_route_rtt_ms"].as_f64().expect("mean RTT");
    assert!(rtt > 1.0 && rtt < 1000.0, "{s}");
    let csv = std::fs::read_to_string(dir.join("network_meridian500_20.csv")).expect("csv");
    let last = csv.lines().last().expect("a sample");
    assert!(last.starts_with("120,10,90,90,"), "{last}");
    for what in ["reach", "traffic", "routes"] {
        let svg = std::fs::read_to_string(dir.join(format!("network_meridian500_20_{what}.svg")))
            .expect("svg");
        assert!(svg.starts_with("<svg"), "{what}");
    }
    let table = std::fs::read_to_string(dir.join("results.md")).expect("results.md");
    assert!(
        table.contains("| 10 network | full reachability after a cold start |"),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn network_refuses_more_nodes_than_the_data_set_has() {
    let dir = std::env::temp_dir().join(format!("re6st-sim-network-big-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .args([
            "sim",
            "network",
            "--nodes",
            "501",
            "--data",
            "meridian500",
            "--out",
        ])
        .arg(&dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("re6st runs");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("meridian500 has 500 hosts"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
