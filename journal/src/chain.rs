//! The record-chain rule, in one place: a stored record holds the sequence number it is stored
//! under, follows its predecessor without a gap, and carries the chain hash of its
//! predecessor's stored bytes. Opening, reading and `verify` all judge links with [`link`]; each
//! words a break for its own report.

use crate::record::{ChainHash, Record};

/// How a record fails to follow its predecessor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Break {
    /// Stored under one sequence number, holding another.
    Misfiled {
        /// The sequence number the record holds.
        holds: u64,
    },
    /// Records between the predecessor and this one are missing.
    Gap {
        /// The predecessor's sequence number.
        after: u64,
    },
    /// The record's `prev_hash` is not the hash of the predecessor's stored bytes (either was
    /// changed): the predecessor is blamed, as its bytes are what the link vouches for.
    Hash {
        /// The predecessor's sequence number.
        prev: u64,
    },
}

/// Judges the record `rec`, stored under `seq`, against its predecessor `prev` (sequence number
/// and chain hash of its stored bytes; `None` for the first record looked at, whose link is the
/// caller's to check against an anchor).
pub(crate) fn link(seq: u64, rec: &Record, prev: Option<(u64, ChainHash)>) -> Option<Break> {
    if rec.seq != seq {
        return Some(Break::Misfiled { holds: rec.seq });
    }
    let (ps, ph) = prev?;
    if seq != ps.saturating_add(1) {
        return Some(Break::Gap { after: ps });
    }
    (rec.prev_hash != ph).then_some(Break::Hash { prev: ps })
}
