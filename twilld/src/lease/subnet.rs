//! Lease keys (`10.244.3.0-24`, dual stack `10.244.3.0-24&fd00:10:0:3::-64`) and the range of
//! subnets a flannel network hands out (SubnetMin to SubnetMax, every SubnetLen).

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The subnets of one lease: IPv4, and IPv6 on a dual-stack network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnets {
    /// The IPv4 subnet.
    pub v4: Ipv4Network,
    /// The IPv6 subnet, when the network is dual stack.
    pub v6: Option<Ipv6Network>,
}

impl Subnets {
    /// The key's last part as flannel writes it: `a.b.c.d-len[&v6-len]`.
    pub fn key_name(&self) -> String {
        let v4 = format!("{}-{}", self.v4.network(), self.v4.prefix());
        match self.v6 {
            None => v4,
            Some(v6) => format!("{v4}&{}-{}", v6.network(), v6.prefix()),
        }
    }

    /// Parses a key's last part; None when it is not a flannel subnet key.
    pub fn parse_key_name(name: &str) -> Option<Subnets> {
        let (v4, v6) = match name.split_once('&') {
            None => (name, None),
            Some((a, b)) => (a, Some(b)),
        };
        let (ip, len) = v4.rsplit_once('-')?;
        let v4 = Ipv4Network::new(ip.parse::<Ipv4Addr>().ok()?, len.parse().ok()?).ok()?;
        let v6 = match v6 {
            None => None,
            Some(v6) => {
                let (ip, len) = v6.rsplit_once('-')?;
                Some(Ipv6Network::new(ip.parse::<Ipv6Addr>().ok()?, len.parse().ok()?).ok()?)
            }
        };
        let aligned = v4.network() == v4.ip() && v6.is_none_or(|n| n.network() == n.ip());
        aligned.then_some(Subnets { v4, v6 })
    }

    /// The subnets for people: `10.244.3.0/24` or `10.244.3.0/24 and fd00::/64`.
    pub fn describe(&self) -> String {
        match self.v6 {
            None => self.v4.to_string(),
            Some(v6) => format!("{} and {v6}", self.v4),
        }
    }
}

/// The full key of a lease under `prefix`.
pub fn lease_key(prefix: &str, s: &Subnets) -> String {
    format!("{}{}", subnets_prefix(prefix), s.key_name())
}

/// The prefix every lease key starts with (`<prefix>/subnets/`).
pub fn subnets_prefix(prefix: &str) -> String {
    format!("{prefix}/subnets/")
}

/// The key of flannel's network config (`<prefix>/config`).
pub fn config_key(prefix: &str) -> String {
    format!("{prefix}/config")
}

/// The subnets of one family a network hands out: every `subnet_len` block from `min` to
/// `max` (both aligned, inside `network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// The cluster network (`Network`, `IPv6Network`).
    pub network: IpNetwork,
    /// The prefix length of a node's subnet (`SubnetLen`, `IPv6SubnetLen`).
    pub subnet_len: u8,
    /// The first subnet handed out (`SubnetMin`).
    pub min: IpAddr,
    /// The last subnet handed out (`SubnetMax`).
    pub max: IpAddr,
}

/// An address as a number (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The number `n` as an address of the family of `like`.
pub fn from_u128(n: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// How many addresses a prefix of `len` holds in a family of `bits` (saturating at /0 v6).
pub fn block_size(bits: u8, len: u8) -> u128 {
    let shift = u32::from(bits.saturating_sub(len));
    1u128.checked_shl(shift).unwrap_or(u128::MAX)
}

impl Pool {
    fn bits(&self) -> u8 {
        if self.network.is_ipv4() { 32 } else { 128 }
    }

    fn size(&self) -> u128 {
        block_size(self.bits(), self.subnet_len)
    }

    /// How many subnets the pool holds (0 when SubnetMin is above SubnetMax).
    pub fn count(&self) -> u128 {
        let (min, max) = (to_u128(self.min), to_u128(self.max));
        if max < min {
            0
        } else {
            (max - min) / self.size() + 1
        }
    }

    /// The `i`-th subnet of the pool (i < count).
    pub fn nth(&self, i: u128) -> IpNetwork {
        let ip = from_u128(to_u128(self.min) + i * self.size(), self.min);
        // The length came from a validated config: it fits the family.
        IpNetwork::new(ip, self.subnet_len).unwrap_or(self.network)
    }

    /// Whether `n` is one of the pool's subnets (same length, aligned, from min to max).
    pub fn holds(&self, n: IpNetwork) -> bool {
        let ip = to_u128(n.ip());
        n.is_ipv4() == self.network.is_ipv4()
            && n.prefix() == self.subnet_len
            && n.network() == n.ip()
            && ip >= to_u128(self.min)
            && ip <= to_u128(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_and_read_as_flannel_names_them() {
        let s = Subnets {
            v4: "10.244.3.0/24".parse().unwrap(),
            v6: None,
        };
        assert_eq!(s.key_name(), "10.244.3.0-24");
        assert_eq!(Subnets::parse_key_name("10.244.3.0-24"), Some(s));
        let d = Subnets {
            v4: "10.244.3.0/24".parse().unwrap(),
            v6: Some("fd00:10:0:3::/64".parse().unwrap()),
        };
        assert_eq!(d.key_name(), "10.244.3.0-24&fd00:10:0:3::-64");
        assert_eq!(Subnets::parse_key_name(&d.key_name()), Some(d));
        assert_eq!(
            lease_key("/coreos.com/network", &d),
            "/coreos.com/network/subnets/10.244.3.0-24&fd00:10:0:3::-64"
        );
        for bad in [
            "10.244.3.0",
            "10.244.3.1-24",
            "10.244.3.0-33",
            "x-24",
            "10.244.3.0-24&fd00::1-64",
            "",
        ] {
            assert_eq!(Subnets::parse_key_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_pool_counts_and_names_its_subnets_from_min_to_max() {
        let p = Pool {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet_len: 24,
            min: "10.244.1.0".parse().unwrap(),
            max: "10.244.255.0".parse().unwrap(),
        };
        assert_eq!(p.count(), 255);
        assert_eq!(p.nth(0).to_string(), "10.244.1.0/24");
        assert_eq!(p.nth(254).to_string(), "10.244.255.0/24");
        assert!(p.holds("10.244.7.0/24".parse().unwrap()));
        assert!(!p.holds("10.244.0.0/24".parse().unwrap()));
        assert!(!p.holds("10.244.7.0/25".parse().unwrap()));
        assert!(!p.holds("10.245.7.0/24".parse().unwrap()));
        let v6 = Pool {
            network: "fd00::/48".parse().unwrap(),
            subnet_len: 64,
            min: "fd00:0:0:1::".parse().unwrap(),
            max: "fd00:0:0:ffff::".parse().unwrap(),
        };
        assert_eq!(v6.count(), 0xffff);
        assert_eq!(v6.nth(1).to_string(), "fd00:0:0:2::/64");
    }
}
