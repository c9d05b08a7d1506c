//! One module per fuzz target; each exposes `run(&[u8])`, which panics exactly when the target
//! finds a bug. Shared by the libFuzzer wrappers (`fuzz/fuzz_targets/`) and the stable seed-corpus
//! test (`tests/fuzz_corpus.rs`).

pub mod decode_record;
pub mod manager_ops;
pub mod open_journal_dir;
