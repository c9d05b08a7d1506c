//! `lunledger demo`: the crash-and-recover story end to end, and what it needs that an embedder
//! does not: a child shim process, the choice of VM, and a QEMU launcher (also used by the QEMU
//! test tiers). Behind the `cli` feature, with the command itself.

mod args;
pub mod backend;
pub mod shim;
mod story;
pub mod vm;

pub use args::{BackendArg, DemoArgs, DemoShimArgs, GuestArg};
pub use story::run;
