//! Tells the test helpers borrowed from the main crate (tests/common) that they are built for
//! the fuzz crate, which lacks the `lunledger` binary and some dev-dependencies.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(lunledger_fuzz)");
    println!("cargo::rustc-cfg=lunledger_fuzz");
    // tests/common names the main crate's `testing` feature, which this crate does not have.
    println!("cargo::rustc-check-cfg=cfg(feature, values(\"testing\"))");
}
