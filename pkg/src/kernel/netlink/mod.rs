//! A small synchronous rtnetlink client: links, addresses, routes, neighbours, FDB.
//!
//! One [`Netlink`] = one NETLINK_ROUTE socket bound in one network namespace. Every request is
//! sent with a fresh sequence number and waits for its ACK (or dump end) before returning, so
//! a plugin does its whole job over one socket per namespace without threads or async.
//! Requests are built with netlink-packet-route's message types; replies are decoded by the
//! tolerant reader in `attr` (unknown or resized attributes never break a reply).
//!
//! Errors are [`NetlinkError`]s naming the operation and carrying the kernel's errno and
//! extended-ACK text; they convert into [`crate::Error`] with code 100 (NETLINK).

mod addr;
mod addr_events;
mod attr;
mod batch;
mod bridge_port;
mod error;
mod link;
mod neigh;
pub mod netfilter;
mod route;
mod socket;
mod tunnel;

use std::fmt;
use std::str::FromStr;

pub use addr::{
    AddrOptions, Address, Broadcast, IFA_F_DADFAILED, IFA_F_NODAD, IFA_F_NOPREFIXROUTE,
    IFA_F_TENTATIVE,
};
pub use addr_events::{DadOutcome, Ipv6AddrEvents};
pub use batch::{Batch, LinkChange, Replies, inet_conf};
pub use bridge_port::{IFF_PROMISC, PortFlags};
pub use error::{NetlinkError, NetlinkErrorKind, NlResult};
pub use link::{BridgeSpec, Link, VethSpec, VxlanInfo, VxlanSpec, validate_ifname};
pub use neigh::{FdbEntry, Neighbour, NeighbourSpec, nud};
pub use route::{Route, RouteFilter, RouteSpec, TWILL_PROTO, probe_address, rt_scope, rt_table};
pub use socket::DUMP_RETRIES;
pub use tunnel::{IPIP_FALLBACK, IpipLink, IpipSpec, is_missing_kind};

use crate::kernel::netns::Netns;
use socket::NlSocket;

/// A synchronous rtnetlink client over one NETLINK_ROUTE socket.
///
/// The socket stays in the network namespace it was opened in; see [`Netlink::new_in`].
pub struct Netlink {
    sock: NlSocket,
}

impl Netlink {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn new() -> NlResult<Netlink> {
        Ok(Netlink {
            sock: NlSocket::open().map_err(|e| e.with_op(|| "open socket".into()))?,
        })
    }

    /// Opens a socket inside `ns` (a short setns bracket on the calling thread, then back):
    /// every request on it then acts in `ns`, whatever namespace the thread is in later.
    pub fn new_in(ns: &Netns) -> crate::Result<Netlink> {
        Ok(ns.run(Netlink::new)??)
    }

    /// The cookie of the namespace this socket lives in (SO_NETNS_COOKIE; unique per boot).
    pub fn netns_cookie(&self) -> NlResult<u64> {
        crate::kernel::netns::socket_netns_cookie(self.sock.raw_fd())
            .map_err(|e| NetlinkError::from(e).with_op(|| "read SO_NETNS_COOKIE".into()))
    }
}

/// An IP address family, to filter listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (AF_INET).
    V4,
    /// IPv6 (AF_INET6).
    V6,
}

impl Family {
    /// The AF_* value.
    pub fn af(self) -> u8 {
        match self {
            Family::V4 => nix::libc::AF_INET as u8,
            Family::V6 => nix::libc::AF_INET6 as u8,
        }
    }

    /// The family of an address.
    pub fn of(ip: &std::net::IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

/// A 48-bit Ethernet (MAC) address; displays as lowercase `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The all-zero address (`00:00:00:00:00:00`), e.g. the vxlan default FDB destination.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The six bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// A MAC address that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?} (want six hex bytes separated by ':' or '-')")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;
    /// Parses `aa:bb:cc:dd:ee:ff` (also `-` separated, any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_display() {
        let m: MacAddr = "0A:1b:2c:3d:4e:5F".parse().unwrap();
        assert_eq!(m.0, [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]);
        assert_eq!(m.to_string(), "0a:1b:2c:3d:4e:5f");
        assert_eq!("0a-1b-2c-3d-4e-5f".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5f:00",
            "0a:1b:2c:3d:4e:5",
            "zz:1b:2c:3d:4e:5f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
