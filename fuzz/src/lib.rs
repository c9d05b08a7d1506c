//! The fuzz targets' logic, as plain functions over bytes. Each `fuzz_targets/<name>.rs` is a
//! one-line libFuzzer wrapper around [`targets`]; `tests/fuzz_corpus.rs` in the main crate
//! includes the same module and runs every committed seed on stable, so the seeds stay green in
//! the default `cargo test`.

// The reference model and test helpers live with the integration tests; the fuzz crate borrows
// them by path so the `manager_ops` target checks exactly what the property test checks.
#[path = "../../tests/common/mod.rs"]
pub mod common;
#[path = "../../tests/model/mod.rs"]
pub mod model;
#[path = "targets/mod.rs"]
pub mod targets;
