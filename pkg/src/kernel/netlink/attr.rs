//! Minimal, allocation-free reading of netlink attributes (TLVs) from kernel replies.
//!
//! Replies are decoded here rather than by netlink-packet-route's full parsers so that an
//! attribute a newer kernel adds (or resizes) can never make a whole reply undecodable:
//! unknown attributes are skipped, only the few fields twill uses are read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::MacAddr;

const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Iterator over `(type, value)` of the attributes in a buffer; stops at the first malformed one.
pub(crate) struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Attrs<'a> {
    /// Attributes starting at the beginning of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Attrs { buf }
    }

    /// Attributes following a fixed header of `hdr` bytes (empty if `buf` is shorter).
    pub(crate) fn after(buf: &'a [u8], hdr: usize) -> Self {
        Attrs {
            buf: buf.get(hdr..).unwrap_or(&[]),
        }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([self.buf[0], self.buf[1]]) as usize;
        let ty = u16::from_ne_bytes([self.buf[2], self.buf[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let val = &self.buf[NLA_HDRLEN..len];
        let next = ((len + 3) & !3).min(self.buf.len());
        self.buf = &self.buf[next..];
        Some((ty, val))
    }
}

/// A big-endian (network order) u16 value.
pub(crate) fn u16_be(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
}

/// A native-endian u32 value.
pub(crate) fn u32_ne(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

/// A native-endian i32 value.
pub(crate) fn i32_ne(v: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

/// A NUL-terminated (or not) string value.
pub(crate) fn string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// An IPv4 or IPv6 address by value length.
pub(crate) fn ip(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
        16 => {
            let b: [u8; 16] = v.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// A 6-byte Ethernet address (other lengths, e.g. tunnels' 4-byte ones, give None).
pub(crate) fn mac(v: &[u8]) -> Option<MacAddr> {
    let b: [u8; 6] = v.try_into().ok()?;
    Some(MacAddr(b))
}

/// Appends one attribute (header, value, padding) to `out`.
pub(crate) fn push(out: &mut Vec<u8>, ty: u16, val: &[u8]) {
    let len = (NLA_HDRLEN + val.len()) as u16;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(val);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let mut b = Vec::new();
        push(&mut b, 3, b"eth0\0");
        push(&mut b, 4, &1500u32.to_ne_bytes());
        let got: Vec<_> = Attrs::new(&b).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 3);
        assert_eq!(string(got[0].1), "eth0");
        assert_eq!(u32_ne(got[1].1), Some(1500));
        // A length running past the buffer ends the iteration instead of panicking.
        let cut = &b[..b.len() - 2];
        assert_eq!(Attrs::new(cut).count(), 1);
        // Nested flag bits are masked off the type.
        let mut n = Vec::new();
        push(&mut n, 18 | 0x8000, &[]);
        assert_eq!(Attrs::new(&n).next().map(|a| a.0), Some(18));
    }
}
