//! Decoding the guest agent's exec output (base64, RFC 4648) with the `base64` crate.

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// The standard alphabet, padding optional: qemu-guest-agent pads, but nothing is gained by
/// refusing output that is not.
const AGENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes the agent's base64 (whitespace such as line breaks ignored). Never fails: the
/// output is advisory text, so what does not decode is shown as a note instead.
pub(crate) fn decode(input: &str) -> Vec<u8> {
    let compact: String = input.split_ascii_whitespace().collect();
    match AGENT.decode(compact.as_bytes()) {
        Ok(bytes) => bytes,
        Err(e) => format!("(agent output is not base64: {e})").into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_padded_and_unpadded() {
        assert_eq!(decode("aGVsbG8="), b"hello");
        assert_eq!(decode("aGVsbG8"), b"hello");
        assert_eq!(decode("aGVsbG8K\n"), b"hello\n");
        assert_eq!(decode(""), b"");
        assert_eq!(decode("YWJj"), b"abc");
    }

    #[test]
    fn output_that_is_not_base64_becomes_a_note() {
        let out = String::from_utf8(decode("not base64!")).unwrap();
        assert!(out.starts_with("(agent output is not base64"), "{out}");
    }
}
