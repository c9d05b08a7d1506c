//! Record framing: how one [`Record`] is turned into the bytes stored under its key, and back.
//!
//! A stored record is `payload || check`, where `payload` is the record as a MessagePack array
//! (rmp-serde, compact struct encoding, the schema version first) and `check` is the first
//! [`CHECK_LEN`] bytes of blake3(`payload`). The check makes any change to a stored record
//! detectable on its own, including the newest record, which no successor's `prev_hash` covers.
//!
//! Decoding reads the schema version first and dispatches on it, so older versions can be
//! migrated and newer ones refused before the rest of the record is interpreted. Every future
//! schema must keep the version as the first array element.

use crate::error::JournalError;
use crate::record::{ChainHash, Record, RecordV1, SCHEMA_VERSION};

/// Length of the per-record check appended to the payload.
pub const CHECK_LEN: usize = 8;

/// Encodes a record into its stored bytes (payload followed by its check). Pure. An encode
/// failure (none is known for these plain types) is [`JournalError::Internal`], never a record.
pub fn encode_record(record: &Record) -> Result<Vec<u8>, JournalError> {
    encode_record_hashed(record).map(|(bytes, _)| bytes)
}

/// [`encode_record`] that also returns [`chain_hash`] of the stored bytes, hashing them once
/// (the writer needs both for every record; see [`decode_record_hashed`] for why one hasher
/// gives both).
pub fn encode_record_hashed(record: &Record) -> Result<(Vec<u8>, ChainHash), JournalError> {
    let mut out = rmp_serde::to_vec(record)
        .map_err(|e| JournalError::Internal(format!("encoding record {}: {e}", record.seq)))?;
    let mut h = blake3::Hasher::new();
    h.update(&out);
    let check = h.finalize();
    let check = &check.as_bytes()[..CHECK_LEN];
    h.update(check);
    out.extend_from_slice(check);
    Ok((out, *h.finalize().as_bytes()))
}

/// Decodes stored bytes into a record, migrating older schemas. Pure; never panics on any input.
///
/// Errors: [`JournalError::Corrupt`] when the check does not match, [`JournalError::NewerSchema`]
/// for a record from a newer build, [`JournalError::Decode`] for anything else malformed. The
/// errors carry no sequence number (see [`JournalError::at_seq`]).
pub fn decode_record(bytes: &[u8]) -> Result<Record, JournalError> {
    if bytes.len() <= CHECK_LEN {
        return Err(JournalError::corrupt(
            None,
            format!("record is {} bytes, too short to hold a check", bytes.len()),
        ));
    }
    let (payload, check) = bytes.split_at(bytes.len() - CHECK_LEN);
    if blake3::hash(payload).as_bytes()[..CHECK_LEN] != *check {
        return Err(JournalError::corrupt(None, "record check mismatch"));
    }
    decode_payload(payload)
}

/// [`decode_record`] that also returns [`chain_hash`] of the stored bytes, hashing them once:
/// the check is blake3 of the payload and the chain hash blake3 of payload ‖ check, so one
/// incremental hasher finalised twice computes both (a checked read used to hash twice).
pub fn decode_record_hashed(bytes: &[u8]) -> Result<(Record, ChainHash), JournalError> {
    if bytes.len() <= CHECK_LEN {
        return Err(JournalError::corrupt(
            None,
            format!("record is {} bytes, too short to hold a check", bytes.len()),
        ));
    }
    let (payload, check) = bytes.split_at(bytes.len() - CHECK_LEN);
    let mut h = blake3::Hasher::new();
    h.update(payload);
    if h.finalize().as_bytes()[..CHECK_LEN] != *check {
        return Err(JournalError::corrupt(None, "record check mismatch"));
    }
    h.update(check);
    let chain = *h.finalize().as_bytes();
    Ok((decode_payload(payload)?, chain))
}

fn decode_payload(payload: &[u8]) -> Result<Record, JournalError> {
    let schema = peek_schema(payload)?;
    match schema {
        1 => decode_v1(payload),
        // 3 and 4 added vocabulary only (4: the configuration's guest OS, defaulted when
        // absent): the same envelope as 2.
        2..=4 => decode_v2(payload),
        s if s > SCHEMA_VERSION => Err(JournalError::NewerSchema {
            found: s,
            supported: SCHEMA_VERSION,
        }),
        s => Err(JournalError::Decode {
            seq: None,
            what: format!("unknown schema version {s}"),
        }),
    }
}

/// blake3 of a record's stored bytes: the `prev_hash` of the record after it.
pub fn chain_hash(stored: &[u8]) -> ChainHash {
    *blake3::hash(stored).as_bytes()
}

/// The sled key of a sequence number (big-endian, so key order is seq order).
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The sequence number of a sled key, if it is 8 bytes long.
pub fn key_seq(key: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

fn decode_v1(payload: &[u8]) -> Result<Record, JournalError> {
    let rec: RecordV1 = rmp_serde::from_slice(payload).map_err(|e| JournalError::Decode {
        seq: None,
        what: e.to_string(),
    })?;
    Ok(rec.into())
}

fn decode_v2(payload: &[u8]) -> Result<Record, JournalError> {
    rmp_serde::from_slice(payload).map_err(|e| JournalError::Decode {
        seq: None,
        what: e.to_string(),
    })
}

/// Reads only the schema version: the array header and its first element. Everything else is
/// left to the version's own decoder.
fn peek_schema(payload: &[u8]) -> Result<u16, JournalError> {
    let bad = |what: String| JournalError::Decode {
        seq: None,
        what: format!("cannot read schema version: {what}"),
    };
    let mut rd = payload;
    let len = rmp::decode::read_array_len(&mut rd).map_err(|e| bad(e.to_string()))?;
    if len == 0 {
        return Err(bad("empty record array".into()));
    }
    let v: u64 = rmp::decode::read_int(&mut rd).map_err(|e| bad(e.to_string()))?;
    u16::try_from(v).map_err(|_| bad(format!("{v} is not a schema version")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lunledger_model::Event;

    fn rec(schema: u16) -> Record {
        Record {
            schema,
            seq: 7,
            ts_micros: 1,
            op: 3,
            event: Event::OpFinished,
            prev_hash: [9; 32],
        }
    }

    #[test]
    fn round_trip() {
        let r = rec(SCHEMA_VERSION);
        assert_eq!(decode_record(&encode_record(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn hashed_encode_agrees_with_the_two_hashes() {
        for schema in [1, SCHEMA_VERSION] {
            let (bytes, h) = encode_record_hashed(&rec(schema)).unwrap();
            assert_eq!(bytes, encode_record(&rec(schema)).unwrap());
            assert_eq!(h, chain_hash(&bytes));
        }
    }

    #[test]
    fn hashed_decode_agrees_with_the_two_hashes() {
        for schema in [1, SCHEMA_VERSION] {
            let bytes = encode_record(&rec(schema)).unwrap();
            let (r, h) = decode_record_hashed(&bytes).unwrap();
            assert_eq!(r, decode_record(&bytes).unwrap());
            assert_eq!(h, chain_hash(&bytes));
            let mut bad = bytes.clone();
            bad[3] ^= 1;
            assert!(decode_record_hashed(&bad).is_err());
        }
    }

    #[test]
    fn newer_schema_is_refused() {
        let e = decode_record(&encode_record(&rec(SCHEMA_VERSION + 1)).unwrap()).unwrap_err();
        assert!(
            matches!(
                e,
                JournalError::NewerSchema { found, supported }
                    if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION
            ),
            "{e}"
        );
    }

    #[test]
    fn unknown_old_schema_is_a_decode_error() {
        let e = decode_record(&encode_record(&rec(0)).unwrap()).unwrap_err();
        assert!(matches!(e, JournalError::Decode { .. }), "{e}");
    }

    #[test]
    fn every_single_byte_change_is_caught() {
        let bytes = encode_record(&rec(1)).unwrap();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                assert!(
                    decode_record(&b).is_err(),
                    "byte {i} flip {flip:#x} accepted"
                );
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..64usize {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let _ = decode_record(&junk);
        }
        // Valid check over an invalid payload reaches the decoder.
        let payload = [0x9f_u8, 0xff, 0xff, 0xff];
        let mut b = payload.to_vec();
        b.extend_from_slice(&blake3::hash(&payload).as_bytes()[..CHECK_LEN]);
        assert!(decode_record(&b).is_err());
    }
}
