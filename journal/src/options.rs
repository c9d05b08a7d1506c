//! How a journal is opened: durability mode, cache size, sled's background flush interval and
//! when history is sealed into archive segments.

use serde::{Deserialize, Serialize};

/// How much an acknowledged durable append survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Durability {
    /// sled `flush()` (pwrite + sync_file_range): survives a crash of the process, not power loss.
    #[default]
    Flush,
    /// `flush()` then fdatasync of sled's data file: survives power loss.
    Sync,
}

/// Options for [`crate::Journal::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalOptions {
    /// What a durable append survives (see [`Durability`]).
    pub durability: Durability,
    /// sled page cache size in bytes (default 8 MiB).
    pub cache_capacity: u64,
    /// sled's background flush interval in milliseconds (`None` turns it off); the writer also
    /// flushes non-durable appends after this long idle (default `Some(500)`).
    pub flush_every_ms: Option<u64>,
    /// Open even when records that were durable are missing (reported in
    /// [`crate::OpenReport::lost_records`]); by default such an open is refused with
    /// [`crate::JournalError::LostRecords`].
    pub accept_lost_records: bool,
    /// Seal history into an archive segment (and start a fresh sled generation) at a checkpoint
    /// once the active generation holds at least this many records up to it (default 10 000;
    /// 0 never rotates). Bounds what sled loads on open, so recovery time does not grow with
    /// history (see `segment.rs`).
    pub segment_records: u64,
    /// Seal the head at every durable point with this key (see [`crate::SealKey`]); `None` (the
    /// default) seals nothing, and the chain then catches accidents only.
    pub seal_key: Option<crate::seal::SealKey>,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            durability: Durability::Flush,
            cache_capacity: 8 * 1024 * 1024,
            flush_every_ms: Some(500),
            accept_lost_records: false,
            segment_records: 10_000,
            seal_key: None,
        }
    }
}
