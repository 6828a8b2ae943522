//! HTTP/1.1 chunked transfer decoding (RFC 9112 section 7.1), incremental: bytes are fed as they
//! arrive and the decoder keeps its place across reads.

/// Where the decoder is in the chunk framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size line; the size so far and whether an extension (`;..`) began.
    Size(u64, bool, usize),
    /// Inside a chunk's data; bytes left.
    Data(u64),
    /// After a chunk's data: expecting CR LF.
    DataEnd(bool),
    /// After the last (zero) chunk: trailer lines; length of the current line.
    Trailer(usize),
    /// The body is complete.
    Done,
}

/// An incremental chunked-body decoder.
#[derive(Debug)]
pub struct Chunked {
    state: State,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size(0, false, 0),
        }
    }
}

impl Chunked {
    /// True once the terminating chunk and trailers were read.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, appending body bytes to `out`; the number of input bytes consumed
    /// (less than `input.len()` only when the body ended: the rest belongs to the next
    /// response).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data(left) => {
                    let n = (left.min((input.len() - i) as u64)) as usize;
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.state = if left == n as u64 {
                        State::DataEnd(false)
                    } else {
                        State::Data(left - n as u64)
                    };
                }
                State::Size(size, ext, digits) => {
                    let c = input[i];
                    i += 1;
                    self.state = match (c, ext) {
                        (b'\n', _) if digits == 0 => {
                            return Err("a chunk size line holds no size".into());
                        }
                        (b'\n', _) if size == 0 => State::Trailer(0),
                        (b'\n', _) => State::Data(size),
                        (b'\r', _) | (_, true) => State::Size(size, ext, digits),
                        (b';', false) => State::Size(size, true, digits),
                        (b' ' | b'\t', false) => State::Size(size, false, digits),
                        (_, false) => {
                            let d = (c as char).to_digit(16).ok_or_else(|| {
                                format!("a chunk size holds {:?}, not a hex digit", c as char)
                            })?;
                            if digits >= 15 {
                                return Err("a chunk size is too large".into());
                            }
                            State::Size(size << 4 | u64::from(d), false, digits + 1)
                        }
                    };
                }
                State::DataEnd(cr) => {
                    let c = input[i];
                    i += 1;
                    self.state = match (c, cr) {
                        (b'\r', false) => State::DataEnd(true),
                        (b'\n', _) => State::Size(0, false, 0),
                        _ => return Err("a chunk's data is not followed by CRLF".into()),
                    };
                }
                State::Trailer(len) => {
                    let c = input[i];
                    i += 1;
                    self.state = match c {
                        b'\n' if len == 0 => State::Done,
                        b'\n' => State::Trailer(0),
                        b'\r' => State::Trailer(len),
                        _ => State::Trailer(len + 1),
                    };
                }
            }
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway's shapes: chunks with a newline, a trailer, an extension, then the next
    /// response's first bytes.
    const WIRE: &[u8] = b"8\r\n{\"a\":1}\n\r\n5;name=x\r\n{\"b\":\r\nA\r\n[1,2,3,4]}\r\n0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\nHTTP/1.1";
    const BODY: &[u8] = b"{\"a\":1}\n{\"b\":[1,2,3,4]}";

    fn decode(pieces: &[&[u8]]) -> (Vec<u8>, usize, bool) {
        let mut d = Chunked::default();
        let mut out = Vec::new();
        let mut used = 0;
        for p in pieces {
            used += d.feed(p, &mut out).unwrap();
        }
        (out, used, d.done())
    }

    #[test]
    fn a_body_split_at_every_byte_position_decodes_the_same() {
        let end = WIRE.len() - b"HTTP/1.1".len();
        for cut in 0..=WIRE.len() {
            let (out, used, done) = decode(&[&WIRE[..cut], &WIRE[cut..]]);
            assert_eq!(out, BODY, "cut {cut}");
            assert_eq!(used, end, "cut {cut}: the next response's bytes are left");
            assert!(done);
        }
        let singles: Vec<&[u8]> = WIRE.chunks(1).collect();
        assert_eq!(decode(&singles), (BODY.to_vec(), end, true));
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let (out, _, done) = decode(&[&WIRE[..20]]);
        assert!(!done);
        assert_eq!(out, b"{\"a\":1}\n");
    }

    #[test]
    fn broken_framing_is_an_error_naming_it() {
        let mut d = Chunked::default();
        assert!(
            d.feed(b"zz\r\n", &mut Vec::new())
                .unwrap_err()
                .contains("'z'")
        );
        let mut d = Chunked::default();
        let e = d.feed(b"2\r\nabX", &mut Vec::new()).unwrap_err();
        assert!(e.contains("CRLF"), "{e}");
        let mut d = Chunked::default();
        assert!(
            d.feed(b"\r\n", &mut Vec::new())
                .unwrap_err()
                .contains("no size")
        );
    }
}
