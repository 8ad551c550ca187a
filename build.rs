//! Stamps the binary with the commit it was built from, for `re6st
//! --version`: `RE6ST_COMMIT` when set (builds from a source tarball, or
//! a container build without `.git`), else `git rev-parse HEAD`, else
//! "unknown"; and with the target it was built for.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RE6ST_COMMIT");
    let commit = std::env::var("RE6ST_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RE6ST_COMMIT={}", commit.trim());
    // The target triple, for `re6st --version` (a musl, glibc or macOS build).
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=RE6ST_TARGET={target}");
}

/// The checked-out commit (12 hex digits); watches the files whose change
/// means another commit.
fn git_commit() -> Option<String> {
    let head = git(&["rev-parse", "--short=12", "HEAD"])?;
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it
    // points to, loose or packed (a commit, a rebase).
    for path in ["HEAD", "packed-refs"] {
        watch(path);
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(&branch);
    }
    Some(head)
}

fn watch(git_path: &str) {
    if let Some(p) = git(&["rev-parse", "--git-path", git_path]) {
        let p = PathBuf::from(p);
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}
