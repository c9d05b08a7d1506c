//! The CLI's modules.

pub(crate) mod args;
pub(crate) mod audit;
pub(crate) mod backend;
pub(crate) mod clock;
pub(crate) mod cursor;
pub(crate) mod demo;
pub(crate) mod demo_shim;
pub(crate) mod dry_run;
pub(crate) mod fail;
pub(crate) mod filter;
pub(crate) mod history;
pub(crate) mod interrupt;
pub(crate) mod progress;
pub(crate) mod replay;
pub(crate) mod snapshot;
pub(crate) mod status;
pub(crate) mod style;
pub(crate) mod table;
pub(crate) mod timeline;
pub(crate) mod trail;
pub(crate) mod verify;
pub(crate) mod view;
