//! `docs/babel-conformance.md` names, in the last column of every table
//! row, the tests that show the row; each of them must exist as a test of
//! this crate, so the table cannot claim a test that was renamed or
//! removed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Names of the functions marked `#[test]` in this crate.
fn test_names() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let mut names = BTreeSet::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        let mut after_test = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with("#[test]") {
                after_test = true;
            } else if after_test && let Some(rest) = line.strip_prefix("fn ") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
                after_test = false;
            }
        }
    }
    names
}

#[test]
fn every_row_names_tests_that_exist() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/babel-conformance.md");
    let doc = fs::read_to_string(&doc_path).unwrap();
    let tests = test_names();
    assert!(tests.len() > 100, "{} tests found", tests.len());
    let mut rows = 0;
    let mut missing = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let last = cells.last().copied().unwrap_or_default();
        if last == "tests" || last.starts_with("---") {
            continue;
        }
        rows += 1;
        let named: Vec<&str> = last
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|n| !n.is_empty())
            .collect();
        if named.is_empty() {
            missing.push(format!("no test named in: {line}"));
        }
        for n in named {
            if !tests.contains(n) {
                missing.push(format!("no test {n}"));
            }
        }
    }
    assert!(rows >= 40, "{rows} rows");
    assert!(missing.is_empty(), "{missing:#?}");
}
