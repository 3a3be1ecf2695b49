//! Writes the seed corpus to `corpus/<target>/<name>` beside this crate's
//! `Cargo.toml`, replacing what is there, so the seeds follow the schema.
//! Run it after changing the schema or the seeds: `cargo run -p
//! chatroom-fuzz --bin seed`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, _) in chatroom_fuzz::TARGETS {
        let dir = corpus.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
    }
    let seeds = chatroom_fuzz::seeds::all();
    for seed in &seeds {
        std::fs::write(corpus.join(seed.target).join(&seed.name), &seed.bytes)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), corpus.display());
    Ok(())
}
