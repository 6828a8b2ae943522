//! The kernel telling twilld that state it owns may have changed: rtnetlink notifications
//! (routes and permanent neighbour or FDB entries deleted, links going down or up, addresses
//! changed) and nf_tables
//! notifications (rule sets changed, e.g. a masquerade table deleted by hand). Nothing is
//! polled: the daemon sleeps in poll(2) on these sockets.

use netlink_sys::Socket;
use netlink_sys::protocols::{NETLINK_NETFILTER, NETLINK_ROUTE};
use nix::libc;
use std::os::fd::{AsRawFd, BorrowedFd};

use twill::kernel::netlink::TWILL_PROTO;

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const NFNLGRP_NFTABLES: u32 = 7;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_OVERRUN: u16 = 4;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_DELROUTE: u16 = 25;
const RTM_DELNEIGH: u16 = 29;
/// Offset of `ndm_state` in `struct ndmsg`.
const NDM_STATE_OFFSET: usize = 8;
const NUD_PERMANENT: u16 = 0x80;
/// Offset of `rtm_table` in `struct rtmsg`.
const RTM_TABLE_OFFSET: usize = 4;
/// Offset of `rtm_protocol` in `struct rtmsg`.
const RTM_PROTOCOL_OFFSET: usize = 5;
/// The main routing table.
const RT_TABLE_MAIN: u8 = 254;

/// Subscriptions to the kernel's notifications in the daemon's network namespace.
pub struct KernelEvents {
    route: Socket,
    nft: Option<Socket>,
    buf: Vec<u8>,
}

impl KernelEvents {
    /// Subscribes to link, address and route notifications, and to nf_tables ones when the
    /// kernel has nf_tables (the second is `None` otherwise).
    pub fn open() -> std::io::Result<KernelEvents> {
        let mut route = Socket::new(NETLINK_ROUTE)?;
        route.bind_auto()?;
        for g in [
            RTNLGRP_LINK,
            RTNLGRP_NEIGH,
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_IFADDR,
            RTNLGRP_IPV6_ROUTE,
        ] {
            route.add_membership(g)?;
        }
        route.set_non_blocking(true)?;
        let nft = Socket::new(NETLINK_NETFILTER).and_then(|mut s| {
            s.bind_auto()?;
            s.add_membership(NFNLGRP_NFTABLES)?;
            s.set_non_blocking(true)?;
            Ok(s)
        });
        Ok(KernelEvents {
            route,
            nft: nft.ok(),
            buf: vec![0; 256 * 1024],
        })
    }

    /// The rtnetlink socket, for poll.
    pub fn rtnl_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the socket lives as long as self, which the borrow is tied to.
        unsafe { BorrowedFd::borrow_raw(self.route.as_raw_fd()) }
    }

    /// The nf_tables socket, for poll.
    pub fn nft_fd(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: as for rtnl_fd.
        self.nft
            .as_ref()
            .map(|s| unsafe { BorrowedFd::borrow_raw(s.as_raw_fd()) })
    }

    /// Reads every queued rtnetlink notification; true when one may concern twill's state
    /// (see [`rtnl_relevant`]) or notifications were lost (the socket overran).
    pub fn drain_rtnl(&mut self) -> bool {
        let fd = self.route.as_raw_fd();
        let mut relevant = false;
        loop {
            match recv(fd, &mut self.buf) {
                Ok(0) => break,
                Ok(n) => relevant |= rtnl_relevant(&self.buf[..n]),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => relevant = true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        relevant
    }

    /// Reads every queued nf_tables notification; true when there was any.
    pub fn drain_nft(&mut self) -> bool {
        let Some(fd) = self.nft.as_ref().map(AsRawFd::as_raw_fd) else {
            return false;
        };
        let mut any = false;
        loop {
            match recv(fd, &mut self.buf) {
                Ok(0) => break,
                Ok(_) => any = true,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => any = true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        any
    }
}

/// One datagram from a non-blocking socket (`WouldBlock` ends a drain as an error).
fn recv(fd: i32, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// True when a datagram of rtnetlink notifications holds one that may concern twill's state.
/// New routes are not (twill's own writes make them); deleted twill routes are, and deleted
/// main-table routes of other owners (one may have blocked a route twill wants), and deleted
/// permanent neighbour or FDB entries.
fn rtnl_relevant(mut msgs: &[u8]) -> bool {
    let mut relevant = false;
    while msgs.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([msgs[0], msgs[1], msgs[2], msgs[3]]) as usize;
        if len < NLMSG_HDRLEN || len > msgs.len() {
            break;
        }
        let ty = u16::from_ne_bytes([msgs[4], msgs[5]]);
        let body = &msgs[NLMSG_HDRLEN..len];
        relevant |= match ty {
            NLMSG_OVERRUN | RTM_NEWLINK | RTM_DELLINK | RTM_NEWADDR | RTM_DELADDR => true,
            // Twill's own, or another owner's that may have stood where twill wants one.
            RTM_DELROUTE => {
                body.get(RTM_PROTOCOL_OFFSET) == Some(&TWILL_PROTO)
                    || body.get(RTM_TABLE_OFFSET) == Some(&RT_TABLE_MAIN)
            }
            // Permanent neighbour and FDB entries are what tunnel planes install; the
            // kernel's own reachability churn (learned entries) is not.
            RTM_DELNEIGH => body
                .get(NDM_STATE_OFFSET..NDM_STATE_OFFSET + 2)
                .is_some_and(|b| u16::from_ne_bytes([b[0], b[1]]) & NUD_PERMANENT != 0),
            _ => false,
        };
        msgs = &msgs[((len + 3) & !3).min(msgs.len())..];
    }
    relevant
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, body: &[u8]) -> Vec<u8> {
        let len = (NLMSG_HDRLEN + body.len()) as u32;
        let mut m = len.to_ne_bytes().to_vec();
        m.extend(ty.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(body);
        while !m.len().is_multiple_of(4) {
            m.push(0);
        }
        m
    }

    #[test]
    fn deleted_routes_permanent_neighbours_and_link_or_address_changes_matter() {
        let rtmsg = |table: u8, proto: u8| [2, 24, 0, 0, table, proto, 0, 1];
        assert!(rtnl_relevant(&msg(RTM_DELROUTE, &rtmsg(254, TWILL_PROTO))));
        assert!(rtnl_relevant(&msg(RTM_DELROUTE, &rtmsg(254, 4))));
        assert!(!rtnl_relevant(&msg(RTM_DELROUTE, &rtmsg(255, 2)))); // local table
        assert!(!rtnl_relevant(&msg(24, &rtmsg(254, TWILL_PROTO)))); // RTM_NEWROUTE
        assert!(rtnl_relevant(&msg(RTM_NEWLINK, &[0; 16])));
        let ndmsg = |state: u16| {
            let mut b = vec![2u8, 0, 0, 0, 3, 0, 0, 0];
            b.extend(state.to_ne_bytes());
            b.extend([0u8, 1]);
            b
        };
        assert!(rtnl_relevant(&msg(RTM_DELNEIGH, &ndmsg(NUD_PERMANENT))));
        assert!(!rtnl_relevant(&msg(RTM_DELNEIGH, &ndmsg(0x04)))); // a stale learned entry
        assert!(!rtnl_relevant(&msg(28, &ndmsg(NUD_PERMANENT)))); // RTM_NEWNEIGH
        let mut two = msg(24, &rtmsg(254, TWILL_PROTO));
        two.extend(msg(RTM_DELADDR, &[0; 8]));
        assert!(rtnl_relevant(&two));
    }
}
