//! Tamper evidence that holds against someone who can write the journal directory.
//!
//! The hash chain alone catches accidents, not an adversary: whoever rewrites a record can
//! recompute every link after it. Two things close that gap:
//!
//! - **A keyed seal** ([`SealKey`]): at every durable point the writer stores, with the records
//!   and in the same flush, `seal = seq ‖ chain hash of record seq ‖ MAC`, where the MAC is
//!   keyed blake3 over the head. The chain hash of the head commits to every record before it,
//!   so without the key no record can be changed, removed or added (and the chain recomputed)
//!   without the seal failing to check. The key is the shim's and is kept outside the journal
//!   directory; [`Journal::check_seal`] checks it.
//! - **An anchor** ([`Head`]): the head (sequence number and chain hash) exported by the shim or
//!   an operator and kept elsewhere. [`Journal::check_anchor`] finds the record it names with
//!   that hash, which catches a dropped tail and a whole directory rolled back to an older copy,
//!   which a seal cannot (an older copy carries an older, valid seal).

use crate::error::JournalError;
use crate::record::{ChainHash, HASH_LEN};
use crate::store::Journal;
use std::fmt;
use std::path::Path;

/// The key of the keyed seal: 32 bytes, kept by the shim outside the journal directory.
#[derive(Clone, PartialEq, Eq)]
pub struct SealKey([u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> SealKey {
        SealKey(bytes)
    }

    /// Reads a key file: 32 raw bytes, or 64 hexadecimal digits (surrounding white space is
    /// ignored). Only a regular file of at most 256 bytes is read.
    pub fn from_file(path: &Path) -> Result<SealKey, JournalError> {
        let bad = |what: &str| JournalError::BadEntry {
            path: path.to_path_buf(),
            what: what.to_string(),
        };
        let bytes = crate::safe_fs::read_regular(path, 256)?
            .ok_or_else(|| bad("does not exist (the seal key file)"))?;
        if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(SealKey(raw));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| bad("is neither 32 raw bytes nor 64 hexadecimal digits"))?
            .trim();
        parse_hex32(text)
            .map(SealKey)
            .ok_or_else(|| bad("is neither 32 raw bytes nor 64 hexadecimal digits"))
    }
}

/// A journal's head: the sequence number of a record and its chain hash. Written `SEQ:HEX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The record's sequence number.
    pub seq: u64,
    /// blake3 of the record's stored bytes.
    pub hash: ChainHash,
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, hex(&self.hash))
    }
}

impl std::str::FromStr for Head {
    type Err = String;

    fn from_str(s: &str) -> Result<Head, String> {
        let (seq, hash) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not SEQ:HASH"))?;
        let seq = seq
            .parse()
            .map_err(|_| format!("{seq:?} is not a sequence number"))?;
        let hash = parse_hex32(hash)
            .ok_or_else(|| format!("{hash:?} is not a 64-digit hexadecimal chain hash"))?;
        Ok(Head { seq, hash })
    }
}

/// What checking the seal found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SealCheck {
    /// The seal checks and covers every record up to the last.
    Sealed {
        /// The sealed head.
        head: u64,
    },
    /// The journal holds records but no seal (written without a key, or the seal was removed).
    Missing,
    /// The seal's MAC does not check with this key (a forged seal, or another key).
    BadMac,
    /// The sealed head's chain hash is not the stored record's (the record, or one before it,
    /// was changed; or it is gone).
    HeadChanged {
        /// The sealed sequence number.
        seq: u64,
    },
    /// Records after the sealed head carry no seal: never acknowledged as durable (the tail of a
    /// crash), or appended by someone without the key.
    Unsealed {
        /// The sealed head.
        head: u64,
        /// The journal's last record.
        last: u64,
    },
}

impl SealCheck {
    /// Whether the journal is sealed up to its last record.
    pub fn is_ok(&self) -> bool {
        matches!(self, SealCheck::Sealed { .. })
    }
}

impl fmt::Display for SealCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealCheck::Sealed { head } => write!(f, "sealed up to seq {head}"),
            SealCheck::Missing => f.write_str("the journal carries no keyed seal"),
            SealCheck::BadMac => {
                f.write_str("the keyed seal does not check with this key (forged, or another key)")
            }
            SealCheck::HeadChanged { seq } => write!(
                f,
                "record {seq}, the sealed head, is not the record that was sealed (it or a record before it was changed)"
            ),
            SealCheck::Unsealed { head, last } => write!(
                f,
                "records {}..={last} come after the sealed head (seq {head}) and carry no seal",
                head + 1
            ),
        }
    }
}

/// The sealed bytes: seq (big-endian) ‖ chain hash ‖ MAC.
const SEAL_LEN: usize = 8 + HASH_LEN + 32;
/// Domain separation for the MAC.
const SEAL_CONTEXT: &[u8] = b"lunledger-seal-v1";

fn mac(key: &SealKey, seq: u64, hash: &ChainHash) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(SEAL_CONTEXT);
    h.update(&seq.to_be_bytes());
    h.update(hash);
    *h.finalize().as_bytes()
}

/// The seal of head (`seq`, `hash`) under `key`.
pub(crate) fn seal_bytes(key: &SealKey, seq: u64, hash: &ChainHash) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEAL_LEN);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(hash);
    out.extend_from_slice(&mac(key, seq, hash));
    out
}

impl Journal {
    /// The journal's head: its last record and that record's chain hash (`None` when empty).
    /// Exported and kept outside the directory, it is an anchor for [`Journal::check_anchor`].
    pub fn head(&self) -> Result<Option<Head>, JournalError> {
        let seq = self.last_seq();
        if seq == 0 {
            return Ok(None);
        }
        Ok(self.stored_hash(seq)?.map(|hash| Head { seq, hash }))
    }

    /// Checks an anchor kept outside the directory: `Ok(None)` when record `anchor.seq` is here
    /// with that chain hash (so the history up to it is the anchored one, given a verified
    /// chain); otherwise what differs.
    pub fn check_anchor(&self, anchor: &Head) -> Result<Option<String>, JournalError> {
        let last = self.last_seq();
        if anchor.seq > last {
            return Ok(Some(format!(
                "the journal ends at seq {last}, before the anchored head {anchor}: records were dropped or the directory was rolled back"
            )));
        }
        match self.stored_hash(anchor.seq)? {
            Some(h) if h == anchor.hash => Ok(None),
            Some(h) => Ok(Some(format!(
                "record {} has chain hash {}, not the anchored {}: history up to it was changed or replaced",
                anchor.seq,
                hex(&h),
                hex(&anchor.hash)
            ))),
            None => Ok(Some(format!(
                "record {}, the anchored head, is not stored (pruned or removed)",
                anchor.seq
            ))),
        }
    }

    /// Checks the keyed seal with `key` (see the module docs). The chain itself is checked by
    /// [`Journal::verify`]; both together say no record was changed.
    pub fn check_seal(&self, key: &SealKey) -> Result<SealCheck, JournalError> {
        let stored = self.shared().active().meta.get(crate::store::META_SEAL)?;
        let last = self.last_seq();
        let Some(stored) = stored else {
            return Ok(if last == 0 {
                SealCheck::Sealed { head: 0 }
            } else {
                SealCheck::Missing
            });
        };
        if stored.len() != SEAL_LEN {
            return Ok(SealCheck::BadMac);
        }
        let mut seq_b = [0u8; 8];
        seq_b.copy_from_slice(&stored[..8]);
        let seq = u64::from_be_bytes(seq_b);
        let mut hash = [0u8; HASH_LEN];
        hash.copy_from_slice(&stored[8..8 + HASH_LEN]);
        let want = mac(key, seq, &hash);
        // Constant-time comparison of the MAC (blake3's Hash equality is).
        if blake3::Hash::from(want) != blake3::Hash::from(to32(&stored[8 + HASH_LEN..])) {
            return Ok(SealCheck::BadMac);
        }
        if self.stored_hash(seq)? != Some(hash) {
            return Ok(SealCheck::HeadChanged { seq });
        }
        if last > seq {
            return Ok(SealCheck::Unsealed { head: seq, last });
        }
        Ok(SealCheck::Sealed { head: seq })
    }
}

fn to32(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&b[..32]);
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip_and_bad_text_is_refused() {
        let h = Head {
            seq: 42,
            hash: [0xab; 32],
        };
        assert_eq!(h.to_string().parse::<Head>(), Ok(h));
        for bad in [
            "",
            "42",
            "x:00",
            "42:abc",
            &format!("42:{}", "zz".repeat(32)),
        ] {
            assert!(bad.parse::<Head>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_mac_depends_on_key_seq_and_hash() {
        let k1 = SealKey([1; 32]);
        let k2 = SealKey([2; 32]);
        let base = seal_bytes(&k1, 7, &[3; 32]);
        assert_ne!(base, seal_bytes(&k2, 7, &[3; 32]));
        assert_ne!(base[40..], seal_bytes(&k1, 8, &[3; 32])[40..]);
        assert_ne!(base[40..], seal_bytes(&k1, 7, &[4; 32])[40..]);
    }
}
