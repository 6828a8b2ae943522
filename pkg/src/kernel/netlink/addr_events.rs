//! Waiting for IPv6 duplicate address detection by listening to the kernel's address
//! notifications (RTNLGRP_IPV6_IFADDR): no polling, the kernel says when DAD is over.

use std::collections::HashSet;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use nix::libc;

use super::attr::{self, Attrs};
use super::error::NlResult;
use super::{Family, IFA_F_DADFAILED, IFA_F_TENTATIVE, Netlink};

const RTNLGRP_IPV6_IFADDR: u32 = 9;
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_OVERRUN: u16 = 4;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFADDRMSG_LEN: usize = 8;

/// How DAD of the watched addresses ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DadOutcome {
    /// None of them is tentative any more.
    Settled,
    /// This address is in use by another host on the link (IFA_F_DADFAILED, or removed).
    Failed(Ipv6Addr),
    /// These addresses were still tentative when the time ran out.
    TimedOut(Vec<Ipv6Addr>),
}

/// A subscription to the IPv6 address notifications of the network namespace it was opened
/// in. Open it before adding the addresses to watch, so no notification is missed.
pub struct Ipv6AddrEvents {
    sock: Socket,
    buf: Vec<u8>,
}

impl Ipv6AddrEvents {
    /// Subscribes in the calling thread's network namespace.
    pub fn open() -> NlResult<Ipv6AddrEvents> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.add_membership(RTNLGRP_IPV6_IFADDR)?;
        Ok(Ipv6AddrEvents {
            sock,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Waits until none of `addrs` on ifindex `index` is tentative, reading notifications for
    /// at most `timeout`. A lost notification (socket overrun) is made up for by one address
    /// dump over `nl`, which must be a socket of the same namespace.
    pub fn wait_dad(
        &mut self,
        nl: &mut Netlink,
        index: u32,
        addrs: &[Ipv6Addr],
        timeout: Duration,
    ) -> NlResult<DadOutcome> {
        let mut pending: HashSet<Ipv6Addr> = addrs.iter().copied().collect();
        let deadline = Instant::now() + timeout;
        // Addresses settled before the subscription's first notification arrive are seen in
        // the queue anyway; one dump up front covers addresses added before `open`.
        if let Some(out) = resync(nl, index, &mut pending)? {
            return Ok(out);
        }
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.readable(left)? {
                let mut rest: Vec<Ipv6Addr> = pending.into_iter().collect();
                rest.sort();
                return Ok(DadOutcome::TimedOut(rest));
            }
            let n = match self.recv() {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    if let Some(out) = resync(nl, index, &mut pending)? {
                        return Ok(out);
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let mut msgs = &self.buf[..n.min(self.buf.len())];
            while msgs.len() >= NLMSG_HDRLEN {
                let len = attr::u32_ne(msgs).unwrap_or(0) as usize;
                if len < NLMSG_HDRLEN || len > msgs.len() {
                    break;
                }
                let ty = u16::from_ne_bytes([msgs[4], msgs[5]]);
                let body = &msgs[NLMSG_HDRLEN..len];
                msgs = &msgs[((len + 3) & !3).min(msgs.len())..];
                if ty == NLMSG_OVERRUN || ty == NLMSG_ERROR {
                    if let Some(out) = resync(nl, index, &mut pending)? {
                        return Ok(out);
                    }
                    continue;
                }
                if ty != RTM_NEWADDR && ty != RTM_DELADDR {
                    continue;
                }
                let Some((ifindex, ip, flags)) = parse_v6(body) else {
                    continue;
                };
                if ifindex != index || !pending.contains(&ip) {
                    continue;
                }
                if ty == RTM_DELADDR || flags & IFA_F_DADFAILED != 0 {
                    return Ok(DadOutcome::Failed(ip));
                }
                if flags & IFA_F_TENTATIVE == 0 {
                    pending.remove(&ip);
                }
            }
        }
        Ok(DadOutcome::Settled)
    }

    /// Reads one datagram of notifications into `buf` (messages longer than `buf` are cut,
    /// which address notifications never are).
    fn recv(&mut self) -> std::io::Result<usize> {
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// True when a notification can be read within `wait`.
    fn readable(&self, wait: Duration) -> NlResult<bool> {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        loop {
            // SAFETY: one valid pollfd, for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r >= 0 {
                return Ok(r > 0);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
    }
}

/// Brings `pending` up to date from an address dump: drops the settled, reports a failure
/// or an address that is gone.
fn resync(
    nl: &mut Netlink,
    index: u32,
    pending: &mut HashSet<Ipv6Addr>,
) -> NlResult<Option<DadOutcome>> {
    let have = nl.addresses(Some(index), Some(Family::V6))?;
    for ip in pending.clone() {
        let Some(a) = have.iter().find(|a| a.addr == std::net::IpAddr::V6(ip)) else {
            return Ok(Some(DadOutcome::Failed(ip)));
        };
        if a.flags & IFA_F_DADFAILED != 0 {
            return Ok(Some(DadOutcome::Failed(ip)));
        }
        if a.flags & IFA_F_TENTATIVE == 0 {
            pending.remove(&ip);
        }
    }
    Ok(pending.is_empty().then_some(DadOutcome::Settled))
}

/// (ifindex, address, IFA_F_* flags) of an IPv6 RTM_NEWADDR/RTM_DELADDR payload.
fn parse_v6(p: &[u8]) -> Option<(u32, Ipv6Addr, u32)> {
    if p.len() < IFADDRMSG_LEN || i32::from(p[0]) != libc::AF_INET6 {
        return None;
    }
    let index = attr::u32_ne(&p[4..8])?;
    let mut flags = u32::from(p[2]);
    let mut ip = None;
    for (ty, v) in Attrs::after(p, IFADDRMSG_LEN) {
        match ty {
            IFA_ADDRESS | IFA_LOCAL => {
                if let Some(std::net::IpAddr::V6(a)) = attr::ip(v) {
                    ip = Some(a);
                }
            }
            IFA_FLAGS => flags = attr::u32_ne(v).unwrap_or(flags),
            _ => {}
        }
    }
    Some((index, ip?, flags))
}
