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
