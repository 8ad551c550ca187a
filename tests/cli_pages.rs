//! `re6st --version`, `re6st completions` and `re6st man` through the
//! binary: the version names the commit, the completion scripts parse in
//! their shells and know the subcommands and flags, the manual pages render
//! without a warning; output into a closed pipe ends quietly.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn re6st(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .args(args)
        .output()
        .expect("running re6st");
    assert!(
        out.status.success(),
        "re6st {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(re6st(args).stdout).expect("UTF-8 output")
}

/// Whether `tool` runs here.
fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `shell -n` (parse only) on `script`.
fn parses_in(shell: &str, script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script");
    std::fs::write(&file, script).unwrap();
    let out = Command::new(shell).arg("-n").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{shell} -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_names_the_commit_and_the_target() {
    let v = stdout(&["--version"]);
    let first = v.lines().next().unwrap();
    assert!(
        first.starts_with(concat!("re6st ", env!("CARGO_PKG_VERSION"), " (commit ")),
        "{v}"
    );
    assert!(v.contains("target: "), "{v}");
    let commit = first
        .rsplit_once("(commit ")
        .and_then(|(_, c)| c.strip_suffix(')'))
        .unwrap();
    if let Ok(given) = std::env::var("RE6ST_COMMIT") {
        assert_eq!(commit, given.trim());
        return;
    }
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(h) if h.status.success() => {
            assert_eq!(commit, String::from_utf8_lossy(&h.stdout).trim(), "{v}")
        }
        _ => eprintln!("SKIPPED: the commit check: not a git checkout ({commit})"),
    }
    // Every subcommand says the same.
    assert!(stdout(&["node", "--version"]).contains(commit));
}

#[test]
fn bash_completion_parses_and_completes_subcommands_and_flags() {
    let script = stdout(&["completions", "bash"]);
    parses_in("bash", &script);
    for word in [
        "registry",
        "node",
        "status",
        "--tun-attach",
        "--dir",
        "completions",
    ] {
        assert!(script.contains(word), "{word} missing");
    }
    // What a user gets at `re6st no<TAB>` and `re6st node --tun-a<TAB>`.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("re6st.bash");
    std::fs::write(&file, &script).unwrap();
    let complete = |line: &str| -> String {
        let words: Vec<&str> = line.split(' ').collect();
        let probe = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT={}; _re6st re6st; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display(),
            words.join(" "),
            words.len() - 1,
            line.len()
        );
        let out = Command::new("bash").arg("-c").arg(probe).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let subs = complete("re6st no");
    assert!(subs.lines().any(|l| l == "node"), "{subs}");
    let flags = complete("re6st node --tun-a");
    assert!(flags.lines().any(|l| l == "--tun-attach"), "{flags}");
}

#[test]
fn zsh_and_fish_completions_know_the_flags() {
    for (shell, marker) in [("zsh", "#compdef re6st"), ("fish", "complete -c re6st")] {
        let script = stdout(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: {marker} missing");
        assert!(
            script.contains("tun-attach"),
            "{shell}: --tun-attach missing"
        );
        if have(shell) {
            parses_in(shell, &script);
        } else {
            eprintln!("SKIPPED: {shell} -n: {shell} is not installed");
        }
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("possible values"));
}

/// Renders a page with groff and returns the text; groff's warnings fail.
fn render(page: &Path) -> String {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-rLL=200n", "-rHY=0"])
        .arg(page)
        .env("GROFF_NO_SGR", "1")
        .output()
        .expect("running groff");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.trim().is_empty(),
        "{}: {warnings}",
        page.display()
    );
    // Bold and underline are overstrikes: "X\u{8}X", "_\u{8}X".
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    text
}

#[test]
fn manual_pages_cover_every_subcommand_and_render() {
    let top = stdout(&["man"]);
    assert!(top.contains(".TH re6st 1"), "{top}");
    let dir = tempfile::tempdir().unwrap();
    re6st(&["man", "--out", dir.path().to_str().unwrap()]);
    for page in [
        "re6st.1",
        "re6st-node.1",
        "re6st-join.1",
        "re6st-registry.1",
        "re6st-registry-run.1",
        "re6st-status.1",
        "re6st-completions.1",
    ] {
        assert!(dir.path().join(page).exists(), "{page} missing");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("re6st.1")).unwrap(),
        top,
        "re6st man and re6st man --out write the same re6st(1)"
    );
    if !have("groff") {
        eprintln!("SKIPPED: rendering the pages: groff is not installed");
        return;
    }
    let node = render(&dir.path().join("re6st-node.1"));
    for text in ["--tun-attach", "RE6ST_DIR", "--suspect-after"] {
        assert!(node.contains(text), "re6st-node(1) lacks {text}:\n{node}");
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        render(&entry.unwrap().path());
    }
}

/// Output into a pipe whose reader has gone (`re6st ... | head -1`, `|
/// grep -q`) ends the command quietly by SIGPIPE, as with any command-line
/// tool: no panic message, no error.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    for args in [&["completions", "bash"][..], &["man"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_re6st"))
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("running re6st");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "re6st {args:?}: {:?}, stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
