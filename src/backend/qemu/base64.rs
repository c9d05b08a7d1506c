//! Standard base64 decoding for guest-exec output (a dozen lines instead of a dependency).

/// Decodes standard (RFC 4648, padded or not) base64, skipping bytes outside the alphabet such
/// as line breaks. Never fails: the agent's output is advisory text.
pub(crate) fn decode(input: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for b in input.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
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
}
