//! Replays every committed corpus input through its target's body (a smoke
//! run of the fuzzers on stable): a panic fails the test and names the file.

use std::path::Path;

#[test]
fn every_corpus_input_runs_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, run) in mesh_fuzz_cases::TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "corpus {name} is empty");
        for input in &inputs {
            let data = std::fs::read(input).unwrap();
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                panic!("{name}: input {} panics", input.display());
            }
        }
        eprintln!("{name}: {} inputs", inputs.len());
    }
}
