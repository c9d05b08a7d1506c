//! The checkpoint's persisted form: the one place the state is encoded for storage and decoded
//! back.
//!
//! A checkpoint is `MAGIC ‖ format (u16 BE) ‖ crc32 of the payload (u32 BE) ‖ payload`, the
//! payload the MessagePack of [`PersistedV1`]. The persisted struct is kept apart from the
//! runtime [`State`], so the state can change shape without silently changing what is on disk:
//! a change to the persisted form is a new format version with its own struct and a frozen
//! fixture (`tests/fixtures/checkpoint-v<N>.bin`, checked byte for byte).
//!
//! Formats:
//! - 0: what builds before the header wrote: the bare payload, without magic or checksum. Read
//!   (migrated), never written.
//! - 1: the header, payload [`PersistedV1`].
//! - 2: the same struct; the configuration inside it carries the guest OS (`ManagerConfig::guest`,
//!   a trailing field). Formats 0 and 1 decode with the default, Linux. A build that knows only
//!   format 1 refuses a format-2 checkpoint with [`PersistError::NewerFormat`] instead of
//!   reading a Windows configuration as Linux.
//!
//! Format 0 is told apart because a MessagePack array (its payload) never starts with `L`, the
//! first byte of [`MAGIC`].
//!
//! The nested records (attachments, mounts, handles, operations, counters, drift) are plain data
//! shared with the runtime state; the fixture test fails if their encoding changes.

use crate::state::{Attachment, Counters, Handle, Mount, Op, State};
use lunledger_model::{AttachId, Drift, HandleId, ManagerConfig, MountId, OpId, Slot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The first bytes of every checkpoint this build writes.
pub const MAGIC: [u8; 4] = *b"LLCP";
/// The format this build writes (see the module docs for the versions).
pub const FORMAT_VERSION: u16 = 2;
const HEADER_LEN: usize = MAGIC.len() + 2 + 4;

/// Why a checkpoint's bytes do not give a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// The header is cut short.
    #[error("checkpoint is {len} bytes, shorter than its {HEADER_LEN}-byte header")]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// Written by a newer build in a format this one does not know.
    #[error("checkpoint format {found} is newer than this build's {FORMAT_VERSION}")]
    NewerFormat {
        /// The format found.
        found: u16,
    },
    /// The payload does not match its checksum.
    #[error(
        "checkpoint payload fails its checksum (stored {stored:08x}, computed {computed:08x})"
    )]
    Checksum {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the payload present.
        computed: u32,
    },
    /// The payload does not decode as the state of its format.
    #[error("checkpoint state (format {format}) does not decode: {what}")]
    Decode {
        /// The format it claims (0: no header).
        format: u16,
        /// The decoder's message.
        what: String,
    },
    /// The state could not be encoded.
    #[error("checkpoint state does not encode: {0}")]
    Encode(String),
}

/// Formats 0 to 2 of the persisted state: every field of the state, by name, in this order.
#[derive(Debug, Serialize, Deserialize)]
pub struct PersistedV1 {
    /// Configuration in force.
    pub config: Option<ManagerConfig>,
    /// Sequence number of the last record applied.
    pub last_seq: u64,
    /// Next operation id.
    pub next_op: OpId,
    /// Next handle id.
    pub next_handle: HandleId,
    /// Next mount id.
    pub next_mount: MountId,
    /// Next attachment generation id.
    pub next_attach: AttachId,
    /// Attachments by slot.
    pub attachments: BTreeMap<Slot, Attachment>,
    /// Mounts by id.
    pub mounts: BTreeMap<MountId, Mount>,
    /// Live handles by id.
    pub handles: BTreeMap<HandleId, Handle>,
    /// Operations in flight.
    pub ops: BTreeMap<OpId, Op>,
    /// Drift found by the most recent recovery.
    pub drift: Vec<Drift>,
    /// Life-time counters.
    pub counters: Counters,
}

impl From<&State> for PersistedV1 {
    fn from(s: &State) -> Self {
        PersistedV1 {
            config: s.config.clone(),
            last_seq: s.last_seq,
            next_op: s.next_op,
            next_handle: s.next_handle,
            next_mount: s.next_mount,
            next_attach: s.next_attach,
            attachments: s.attachments.clone(),
            mounts: s.mounts.clone(),
            handles: s.handles.clone(),
            ops: s.ops.clone(),
            drift: s.drift.clone(),
            counters: s.counters.clone(),
        }
    }
}

impl From<PersistedV1> for State {
    fn from(p: PersistedV1) -> Self {
        State {
            config: p.config,
            last_seq: p.last_seq,
            next_op: p.next_op,
            next_handle: p.next_handle,
            next_mount: p.next_mount,
            next_attach: p.next_attach,
            attachments: p.attachments,
            mounts: p.mounts,
            handles: p.handles,
            ops: p.ops,
            drift: p.drift,
            counters: p.counters,
        }
    }
}

/// Encodes `state` as a checkpoint in the current format.
pub fn encode_checkpoint(state: &State) -> Result<Vec<u8>, PersistError> {
    let payload = rmp_serde::to_vec(&PersistedV1::from(state))
        .map_err(|e| PersistError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes a checkpoint of any known format (0 migrated) into a state.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<State, PersistError> {
    if !bytes.starts_with(&MAGIC) {
        return decode_v1(0, bytes);
    }
    if bytes.len() < HEADER_LEN {
        return Err(PersistError::Truncated { len: bytes.len() });
    }
    let format = u16::from_be_bytes([bytes[4], bytes[5]]);
    let stored = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let payload = &bytes[HEADER_LEN..];
    if format > FORMAT_VERSION {
        return Err(PersistError::NewerFormat { found: format });
    }
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(PersistError::Checksum { stored, computed });
    }
    match format {
        1 | 2 => decode_v1(format, payload),
        // Format 0 never had a header: a header that claims it is damage.
        found => Err(PersistError::Decode {
            format: found,
            what: "format 0 has no header".into(),
        }),
    }
}

fn decode_v1(format: u16, payload: &[u8]) -> Result<State, PersistError> {
    rmp_serde::from_slice::<PersistedV1>(payload)
        .map(State::from)
        .map_err(|e| PersistError::Decode {
            format,
            what: e.to_string(),
        })
}
