//! The committed seed corpus is the one `seeds` generates, and every input
//! kept for a target (its seeds, and the inputs that once crashed it, under
//! `regressions/<target>/`) runs through it without a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chatroom_fuzz::TARGETS;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files in `dir`, by name; none when it does not exist.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn the_committed_corpus_is_the_generated_one() {
    for (target, _) in TARGETS {
        let generated: BTreeMap<String, Vec<u8>> = chatroom_fuzz::seeds::all()
            .into_iter()
            .filter(|seed| seed.target == target)
            .map(|seed| (seed.name, seed.bytes))
            .collect();
        assert!(!generated.is_empty(), "{target} has no seeds");
        let committed = files(&root().join("corpus").join(target));
        assert!(
            committed == generated,
            "corpus/{target} is not what the seeds make; run `cargo run -p chatroom-fuzz --bin seed`"
        );
    }
}

#[test]
fn every_kept_input_runs_clean() {
    let mut ran = 0;
    for (target, run) in TARGETS {
        for dir in ["corpus", "regressions"] {
            let dir: PathBuf = root().join(dir).join(target);
            for (name, bytes) in files(&dir) {
                eprintln!("{}/{name}", dir.display());
                run(&bytes);
                ran += 1;
            }
        }
    }
    assert!(ran > 0);
}
