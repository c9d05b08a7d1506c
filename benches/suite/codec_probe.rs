//! A probe for one proposed codec change: the record envelope with `prev_hash` encoded as one
//! msgpack `bin` (as `serde_bytes` would) instead of serde's default 32-element integer tuple.
//! Only used to time decoding in the bench; the journal's format is not touched.

use lunledger::journal::Record;
use lunledger::model::Event;
use serde::de::{Error as _, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

pub struct Hash32(pub [u8; 32]);

impl Serialize for Hash32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Hash32;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Hash32, E> {
                let a: [u8; 32] = v.try_into().map_err(|_| E::custom("not 32 bytes"))?;
                Ok(Hash32(a))
            }
        }
        d.deserialize_bytes(V).map_err(D::Error::custom)
    }
}

/// `Record` with the hash as bytes.
#[derive(Serialize, Deserialize)]
pub struct RecordBin {
    pub schema: u16,
    pub seq: u64,
    pub ts_micros: u64,
    pub op: u64,
    pub event: Event,
    pub prev_hash: Hash32,
}

impl From<&Record> for RecordBin {
    fn from(r: &Record) -> Self {
        RecordBin {
            schema: r.schema,
            seq: r.seq,
            ts_micros: r.ts_micros,
            op: r.op,
            event: r.event.clone(),
            prev_hash: Hash32(r.prev_hash),
        }
    }
}
