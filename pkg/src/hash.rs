//! twill's one stable hash: 64-bit FNV-1a, plus a finalizer for when few of its bits are kept.
//!
//! Every name or fingerprint twill derives and finds again later (host veth names, the cluster
//! view's fingerprint, masquerade rule comments) uses this, so the same input gives the same
//! value in every build and version: a changed hash would orphan what older runs made.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// FNV-1a, 64 bit, fed incrementally: stable across builds, platforms and versions.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a64 {
    /// Feeds `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Feeds `bytes` and a NUL after them: a sequence of fields without NULs is unambiguous.
    pub fn write_field(&mut self, bytes: &[u8]) {
        self.write(bytes);
        self.write(&[0]);
    }

    /// Feeds an address as family tag + octets (fixed length per family: unambiguous).
    pub fn write_ip(&mut self, ip: &IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.write(&[4]);
                self.write(&a.octets());
            }
            IpAddr::V6(a) => {
                self.write(&[6]);
                self.write(&a.octets());
            }
        }
    }

    /// Feeds a network as its address and prefix length.
    pub fn write_net(&mut self, n: &IpNetwork) {
        self.write_ip(&n.ip());
        self.write(&[n.prefix()]);
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The hash so far through [`mix64`]: use it when only some bits are kept.
    pub fn finish_mixed(&self) -> u64 {
        mix64(self.0)
    }
}

/// FNV-1a 64 of `bytes` in one go.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a64::default();
    h.write(bytes);
    h.finish()
}

/// The splitmix64 finalizer: every input bit reaches every output bit, so any slice of the
/// result is as good as any other (FNV-1a's high bits depend weakly on the last bytes).
pub fn mix64(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
        let mut h = Fnv1a64::default();
        h.write(b"foo");
        h.write(b"bar");
        assert_eq!(h.finish(), fnv1a64(b"foobar"), "incremental = one go");
    }

    #[test]
    fn fields_are_unambiguous() {
        let of = |parts: &[&str]| {
            let mut h = Fnv1a64::default();
            for p in parts {
                h.write_field(p.as_bytes());
            }
            h.finish()
        };
        assert_ne!(of(&["ab", "c"]), of(&["a", "bc"]));
        assert_ne!(of(&["ab", ""]), of(&["ab"]));
    }

    #[test]
    fn mix_is_pinned() {
        // Pinned: host veth names depend on it.
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692161d100b05e5);
    }
}
