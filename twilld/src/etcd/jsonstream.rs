//! Splits a byte stream of concatenated JSON values (the body of a gateway stream:
//! `{"result":{..}}\n{"result":{..}}`) into whole values, whatever the read boundaries.

/// Bytes received so far and how far the current value has been scanned; scanning resumes
/// where it stopped, so a value arriving in many pieces is scanned once.
#[derive(Debug, Default)]
pub struct JsonStream {
    buf: Vec<u8>,
    /// Start of the value being scanned (bytes before it are consumed).
    start: usize,
    /// Scan position (`start..scan` holds a prefix of the value).
    scan: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl JsonStream {
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.scan -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete top-level value (an object or array), None until one is complete;
    /// an error for bytes that cannot start a value.
    pub fn next_value(&mut self) -> Result<Option<&[u8]>, String> {
        while self.scan < self.buf.len() {
            let c = self.buf[self.scan];
            self.scan += 1;
            if self.depth == 0 {
                match c {
                    b' ' | b'\t' | b'\r' | b'\n' => self.start = self.scan,
                    b'{' | b'[' => self.depth = 1,
                    _ => {
                        return Err(format!(
                            "the stream holds {:?} where a JSON object should start",
                            c as char
                        ));
                    }
                }
            } else if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if c == b'\\' {
                    self.escaped = true;
                } else if c == b'"' {
                    self.in_string = false;
                }
            } else {
                match c {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            let value = self.start..self.scan;
                            self.start = self.scan;
                            return Ok(Some(&self.buf[value]));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "{\"result\":{\"created\":true}}\n{\"result\":{\"events\":[{\"kv\":{\"key\":\"a}\\\"{\"}}]}}\n\r\n[1,{\"x\":[]}]  {\"error\":{\"message\":\"no leader\"}}";
    const VALUES: [&str; 4] = [
        "{\"result\":{\"created\":true}}",
        "{\"result\":{\"events\":[{\"kv\":{\"key\":\"a}\\\"{\"}}]}}",
        "[1,{\"x\":[]}]",
        "{\"error\":{\"message\":\"no leader\"}}",
    ];

    fn values_of(pieces: &[&[u8]]) -> Vec<String> {
        let mut s = JsonStream::default();
        let mut got = Vec::new();
        for p in pieces {
            s.push(p);
            while let Some(v) = s.next_value().unwrap() {
                got.push(String::from_utf8(v.to_vec()).unwrap());
            }
        }
        got
    }

    #[test]
    fn values_split_at_every_position_come_out_whole() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            assert_eq!(
                values_of(&[&bytes[..cut], &bytes[cut..]]),
                VALUES,
                "cut {cut}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(values_of(&singles), VALUES);
    }

    #[test]
    fn braces_and_quotes_inside_strings_do_not_end_a_value() {
        let mut s = JsonStream::default();
        s.push(b"{\"k\":\"}}\\\\\"}");
        assert_eq!(s.next_value().unwrap().unwrap(), b"{\"k\":\"}}\\\\\"}");
        s.push(b"{\"k\":\"\\\"}\"");
        assert_eq!(
            s.next_value().unwrap(),
            None,
            "the value is not complete yet"
        );
        s.push(b"}");
        assert_eq!(s.next_value().unwrap().unwrap(), b"{\"k\":\"\\\"}\"}");
    }

    #[test]
    fn garbage_between_values_is_an_error() {
        let mut s = JsonStream::default();
        s.push(b"{}x");
        assert!(s.next_value().unwrap().is_some());
        assert!(s.next_value().unwrap_err().contains("'x'"));
    }
}
