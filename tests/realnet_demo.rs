//! `re6st demo`, the README's main command: it must run to the end, show
//! every ping answered and a tunnel replaced, and leave nothing behind,
//! also when interrupted with Ctrl-C. The userspace mode runs everywhere;
//! the namespace mode needs root.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn demo(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .arg("demo")
        .args(args)
        .output()
        .expect("running re6st demo");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn check_story(text: &str) {
    assert!(text.contains("36 of 36 pings answered"), "{text}");
    assert!(text.contains("replaced its tunnel to"), "{text}");
    assert!(text.contains("cleaned up"), "{text}");
}

fn namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("re6st-demo-{pid}-")))
        .map(String::from)
        .collect()
}

#[test]
fn userspace_demo_runs_to_the_end() {
    let (ok, text) = demo(&[
        "--userspace",
        "--nodes",
        "4",
        "--tunnels",
        "1",
        "--refresh",
        "3s",
    ]);
    assert!(ok);
    assert!(text.contains("userspace"), "{text}");
    check_story(&text);
}

#[test]
fn namespace_demo_runs_and_cleans_up_even_on_ctrl_c() {
    if !re6st::netns::is_root() {
        eprintln!("SKIPPED namespace_demo_runs_and_cleans_up_even_on_ctrl_c: needs root");
        return;
    }
    let (ok, text) = demo(&["--nodes", "4", "--tunnels", "1", "--refresh", "3s"]);
    assert!(ok);
    assert!(
        text.contains("in its own network namespace with a TUN device"),
        "{text}"
    );
    check_story(&text);

    // Interrupted in the middle: every namespace and process goes away.
    let mut child = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .args(["demo", "--nodes", "3", "--refresh", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = Instant::now();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("[5/5]") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "demo too slow");
    }
    assert_eq!(namespaces_of(pid).len(), 4, "hub and 3 nodes while it runs");
    // SAFETY: kill has no memory preconditions; `pid` is our child's.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
    assert!(namespaces_of(pid).is_empty(), "{:?}", namespaces_of(pid));
    let procs = Command::new("pgrep")
        .args(["-f", &format!("re6st-demo-{pid}")])
        .output()
        .unwrap();
    assert!(procs.stdout.is_empty(), "processes left: {:?}", procs);
}
