//! Standard base64 (RFC 4648, `+/`, padded): how etcd's JSON gateway carries keys and values.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `data` in padded standard base64.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of padded (or unpadded) standard base64 `text`, or which character is wrong.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 || body.len() % 4 == 1 {
        return Err(format!("{text:?} is not base64: bad length or padding"));
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => {
                return Err(format!(
                    "{text:?} is not base64: unexpected {:?}",
                    c as char
                ));
            }
        };
        acc = (acc << 6 | u32::from(v)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_encode_and_decode() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            (
                "/coreos.com/network/subnets/",
                "L2NvcmVvcy5jb20vbmV0d29yay9zdWJuZXRzLw==",
            ),
        ] {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn every_byte_value_and_length_round_trips() {
        let all: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
        for len in 0..all.len() {
            let data = &all[..len];
            assert_eq!(decode(&encode(data)).unwrap(), data, "length {len}");
        }
        assert_eq!(decode("Zm8").unwrap(), b"fo", "unpadded input is accepted");
    }

    #[test]
    fn malformed_base64_names_the_problem() {
        assert!(decode("Zm9!").unwrap_err().contains("unexpected '!'"));
        assert!(decode("Z").unwrap_err().contains("bad length"));
        assert!(decode("Zg===").unwrap_err().contains("padding"));
    }
}
