//! Replays the corpus of the stateful engine target
//! (fuzz/corpus/babel_engine: sequences of packets, clock steps and caller
//! inputs, see `re6st_babel::fuzzing::engine_sequence`) on stable.

use std::path::Path;

#[test]
fn replay_babel_engine_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/babel_engine");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("fuzz corpus missing") {
        re6st_babel::fuzzing::engine_sequence(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 8, "only {n} corpus files");
}
