//! Gratuitous ARP: the broadcast "who has A? tell A" a host sends to announce that IPv4
//! address A is now at its MAC, so every neighbour cache holding A under an older MAC is
//! corrected at once (Linux's `arp_notify` sends the same frame when a link comes up or
//! changes its MAC).
//!
//! Sent through a packet socket (AF_PACKET, SOCK_DGRAM, protocol 0: it receives nothing)
//! opened in the namespace of the sending link: no RTNL lock is taken, and no netdevice
//! notifier runs, unlike a MAC change made to trigger the kernel's own announcement.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

use super::netlink::MacAddr;

/// ARP payload of an Ethernet/IPv4 announcement: header (8) + 2 × (MAC 6 + IPv4 4).
const ARP_LEN: usize = 28;
const ARPHRD_ETHER: u16 = 1;
const ARPOP_REQUEST: u16 = 1;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;

/// A packet socket in one network namespace that sends gratuitous ARP requests.
#[derive(Debug)]
pub struct Announcer {
    fd: OwnedFd,
}

impl Announcer {
    /// Opens the socket in the calling thread's network namespace; it stays there whatever
    /// namespace the thread enters later.
    pub fn open() -> std::io::Result<Announcer> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(Announcer {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Broadcasts on link `ifindex` (of the socket's namespace, with MAC `mac`) the
    /// announcement of `ip`: an ARP request with sender and target address `ip`, sender MAC
    /// `mac` and a zero target MAC, to ff:ff:ff:ff:ff:ff, exactly the frame `arp_notify`
    /// sends. Fails only when the link cannot send (down, gone).
    pub fn announce(&self, ifindex: u32, mac: MacAddr, ip: Ipv4Addr) -> std::io::Result<()> {
        let frame = frame(mac, ip);
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = ETH_P_ARP.to_be();
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        loop {
            // SAFETY: frame and `to` are valid for the lengths given for the whole call.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&to as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// The ARP payload announcing `ip` at `mac`.
fn frame(mac: MacAddr, ip: Ipv4Addr) -> [u8; ARP_LEN] {
    let mut f = [0u8; ARP_LEN];
    f[0..2].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    f[2..4].copy_from_slice(&ETH_P_IP.to_be_bytes());
    f[4] = 6;
    f[5] = 4;
    f[6..8].copy_from_slice(&ARPOP_REQUEST.to_be_bytes());
    f[8..14].copy_from_slice(&mac.0);
    f[14..18].copy_from_slice(&ip.octets());
    // Target MAC stays zero, as in the kernel's own announcement.
    f[24..28].copy_from_slice(&ip.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_is_a_gratuitous_request() {
        let f = frame(MacAddr([2, 0, 0, 0, 0, 7]), Ipv4Addr::new(10, 1, 0, 7));
        assert_eq!(&f[0..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[8..14], &[2, 0, 0, 0, 0, 7]);
        assert_eq!(&f[14..18], &[10, 1, 0, 7]);
        assert_eq!(&f[18..24], &[0; 6]);
        assert_eq!(&f[24..28], &[10, 1, 0, 7]);
    }
}
