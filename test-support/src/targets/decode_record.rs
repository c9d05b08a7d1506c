//! `lunledger_journal::decode_record` on arbitrary bytes: it returns `Ok` or a typed error and
//! never panics; whatever it accepts re-encodes to bytes that decode to the same record.

use lunledger::journal::{chain_hash, CHECK_LEN};
use lunledger::journal::{decode_record, encode_record, JournalError, Record};

/// Checks one input twice: as stored bytes, and as a payload sealed with a valid check. Random
/// bytes almost never pass the 8-byte check, so without the sealed form the fuzzer would never
/// reach the MessagePack decoder and the schema dispatch.
pub fn run(data: &[u8]) {
    check(data);
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&chain_hash(data)[..CHECK_LEN]);
    check(&sealed);
}

fn check(bytes: &[u8]) {
    match decode_record(bytes) {
        Ok(rec) => round_trip(&rec),
        Err(JournalError::Corrupt { seq: None, .. })
        | Err(JournalError::Decode { seq: None, .. })
        | Err(JournalError::NewerSchema { .. }) => {}
        // The pure decoder knows no sequence number and does no I/O: any other error is a bug.
        Err(e) => panic!("decode_record returned an unexpected error kind: {e:?}"),
    }
}

fn round_trip(rec: &Record) {
    let again = match encode_record(rec) {
        Ok(b) => b,
        Err(e) => panic!("a decoded record {rec:?} does not encode: {e}"),
    };
    match decode_record(&again) {
        Ok(back) => assert_eq!(&back, rec, "re-encoded record decodes differently"),
        Err(e) => panic!("re-encoded record {rec:?} does not decode: {e}"),
    }
}
