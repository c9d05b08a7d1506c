//! How a journal is opened: durability mode, cache size and sled's background flush interval.

use crate::model::Durability;

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
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            durability: Durability::Flush,
            cache_capacity: 8 * 1024 * 1024,
            flush_every_ms: Some(500),
            accept_lost_records: false,
        }
    }
}
