//! Replays the corpora of the node's control socket
//! (fuzz/corpus/node_control: request lines, and answers recorded from a
//! running node) and of its configuration file (fuzz/corpus/node_config:
//! `node.toml` examples) on stable. The seeds are plain files.

use std::path::{Path, PathBuf};

use re6st::control::api::Response;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus(target)).expect("fuzz corpus missing") {
        run(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    n
}

#[test]
fn replay_node_control_corpus() {
    let n = replay("node_control", re6st::control::fuzzing::control_socket);
    assert!(n >= 10, "only {n} corpus files");
    // The recorded answers reach the CLI's tables.
    let status = std::fs::read(corpus("node_control").join("answer-status")).unwrap();
    assert!(matches!(
        serde_json::from_slice::<Response>(&status),
        Ok(Response::Status(_))
    ));
}

#[test]
fn replay_node_config_corpus() {
    let n = replay("node_config", re6st::node::program::options::fuzz);
    assert!(n >= 8, "only {n} corpus files");
}
