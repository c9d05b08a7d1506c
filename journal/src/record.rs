//! The record envelope: what one journal entry holds around its event.

use lunledger_model::Event;
use lunledger_model::OpId;
use serde::{Deserialize, Serialize};

/// The schema version this build writes. Records with a newer version are refused with a typed
/// error; older ones are migrated on read.
///
/// - 1: `prev_hash` encoded as an array of 32 integers.
/// - 2: `prev_hash` encoded as one 32-byte binary (a quarter of the decode time, 17 bytes less).
/// - 3: the envelope of 2; the vocabulary gains `Drift::UnknownMountUnmounted` (recovery's
///   repair of a stray mount), so that a build that does not know it refuses such a journal
///   with `NewerSchema` instead of failing to decode one record.
/// - 4: the envelope of 2; `ManagerConfig` gains `guest` (Linux or Windows) as its last field.
///   A build that knows 3 only would read a Windows configuration as a Linux one (it ignores
///   the extra array element), so it must refuse the journal with `NewerSchema` instead. Older
///   configurations decode as Linux (the field defaults).
pub const SCHEMA_VERSION: u16 = 4;

/// Length of the hash that chains each record to the one before it.
pub const HASH_LEN: usize = 32;

/// A hash in the chain (blake3 of the previous record's stored bytes).
pub type ChainHash = [u8; HASH_LEN];

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Schema version the record was written with.
    pub schema: u16,
    /// Sequence number: gap-free and monotonic over the journal's whole life, starting at 1.
    pub seq: u64,
    /// Wall-clock time of the append, microseconds since the Unix epoch.
    pub ts_micros: u64,
    /// The operation the event belongs to.
    pub op: OpId,
    /// What happened.
    pub event: Event,
    #[serde(with = "serde_bytes")]
    /// blake3 of the previous record's stored bytes (all zero for the first record ever).
    pub prev_hash: ChainHash,
}

/// A schema-1 record: identical but for how `prev_hash` is encoded. Read-only (migration).
#[derive(Deserialize)]
pub(crate) struct RecordV1 {
    pub schema: u16,
    pub seq: u64,
    pub ts_micros: u64,
    pub op: OpId,
    pub event: Event,
    pub prev_hash: ChainHash,
}

impl From<RecordV1> for Record {
    fn from(r: RecordV1) -> Record {
        Record {
            schema: r.schema,
            seq: r.seq,
            ts_micros: r.ts_micros,
            op: r.op,
            event: r.event,
            prev_hash: r.prev_hash,
        }
    }
}

impl lunledger_model::Entry for Record {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn op(&self) -> OpId {
        self.op
    }
    fn event(&self) -> &Event {
        &self.event
    }
}
