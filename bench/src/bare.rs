//! The baselines: the kernel floor of a pod's ADD and DEL. ADD's floor is one exec of
//! `twill-bare-add` (this crate), which makes the same links, addresses, routes and neighbour
//! entries as the plugin with no checks, lookups or IPAM. DEL's floor is one RTM_DELLINK request
//! on an already open rtnetlink socket plus its ACK, i.e. the kernel's cost alone, no exec.

use crate::cleanup::{ip_batch, netns_path};
use crate::invoke::{find_bin, twill_bin_dir};
use nix::libc;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Bridge name used by every bridge config of the benchmark.
pub const BRIDGE: &str = "twbr0";

/// Which data plane's kernel sequence the baseline makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareMode {
    /// Host end on [`BRIDGE`], pod `10.99.x.y/16` with a default route via `10.99.0.1`.
    Bridge,
    /// Routed: host end with proxy ARP and a `/32` host route, pod `/32` behind 169.254.1.1.
    Routed,
}

/// Bare pods between a node netns (host end `links[k]`) and pod netns (end `eth0`); pod index
/// `i` of a benchmark maps to slot `i - offset`.
pub struct BareVeths {
    /// The node netns path.
    pub node: PathBuf,
    /// Host-side link name per slot.
    pub links: Vec<String>,
    /// Pod netns path per slot.
    pub pods: Vec<PathBuf>,
    /// The `twill-bare-add` binary.
    pub bin: PathBuf,
    mode: BareMode,
    bridge_index: u32,
    offset: usize,
}

impl BareVeths {
    /// Prepares the node (in bridge mode: [`BRIDGE`] with 10.99.0.1/16, made once with `ip`,
    /// untimed) for bare pods in `pods`, indexed from `offset`. Nothing per pod is made here.
    pub fn prepare(
        node: &str,
        pods: &[String],
        offset: usize,
        mode: BareMode,
    ) -> Result<BareVeths, String> {
        if pods.len() > 65_000 {
            return Err("too many bare pods".into());
        }
        let dir = twill_bin_dir();
        let bin = find_bin(&dir, "twill-bare-add").ok_or_else(|| {
            format!(
                "twill-bare-add not found in {} (it is built with the workspace)",
                dir.display()
            )
        })?;
        let mut bridge_index = 0;
        if mode == BareMode::Bridge {
            bridge_index = match link_index(node, BRIDGE) {
                Some(i) => i,
                None => {
                    let lines = vec![
                        format!("link add {BRIDGE} type bridge"),
                        format!("addr add 10.99.0.1/16 dev {BRIDGE}"),
                        format!("link set {BRIDGE} up"),
                    ];
                    ip_batch(&["-n", node], &lines, false)?;
                    link_index(node, BRIDGE).ok_or_else(|| {
                        format!("bridge {BRIDGE} missing in {node} after creation")
                    })?
                }
            };
        }
        Ok(BareVeths {
            node: netns_path(node),
            links: (0..pods.len()).map(|k| format!("vb{k}")).collect(),
            pods: pods.iter().map(|p| netns_path(p)).collect(),
            bin,
            mode,
            bridge_index,
            offset,
        })
    }

    /// The baseline as it was before the bare ADD existed: [`BareVeths::prepare`] (bridge mode,
    /// slots from 0) plus every pair made with `ip`, untimed (pod `k` gets 10.99.x.y/16 and a
    /// default route via 10.99.0.1), so only [`crate::runner::Job::BareDel`] runs on them.
    #[allow(
        dead_code,
        reason = "the pre-bare-ADD API, kept for the vxlan and twilld benches written in parallel"
    )]
    pub fn create(node: &str, pods: &[String]) -> Result<BareVeths, String> {
        let b = BareVeths::prepare(node, pods, 0, BareMode::Bridge)?;
        let mut lines = Vec::with_capacity(2 * pods.len());
        for (k, pod) in pods.iter().enumerate() {
            let link = &b.links[k];
            lines.push(format!(
                "link add {link} up type veth peer name eth0 netns {pod}"
            ));
            lines.push(format!("link set {link} master {BRIDGE}"));
        }
        ip_batch(&["-n", node], &lines, false)?;
        for (k, pod) in pods.iter().enumerate() {
            let host = k + 2;
            let lines = vec![
                "link set eth0 up".to_string(),
                format!("addr add 10.99.{}.{}/16 dev eth0", host / 256, host % 256),
                "route add default via 10.99.0.1".to_string(),
            ];
            ip_batch(&["-n", pod], &lines, false)?;
        }
        Ok(b)
    }

    /// The slot of pod index `i`.
    pub fn slot(&self, i: usize) -> Result<usize, String> {
        i.checked_sub(self.offset)
            .filter(|k| *k < self.links.len())
            .ok_or_else(|| format!("bare pod index {i} out of range"))
    }

    /// The command line of `twill-bare-add` for pod index `i`.
    pub fn add_args(&self, i: usize) -> Result<Vec<String>, String> {
        let k = self.slot(i)?;
        let host = k + 2;
        let pod = self.pods[k].display().to_string();
        let ip = format!("10.99.{}.{}", host / 256, host % 256);
        Ok(match self.mode {
            BareMode::Bridge => vec![
                "bridge".into(),
                pod,
                self.links[k].clone(),
                self.bridge_index.to_string(),
                format!("{ip}/16"),
                "10.99.0.1".into(),
            ],
            BareMode::Routed => vec!["routed".into(), pod, self.links[k].clone(), ip],
        })
    }
}

/// The ifindex of `link` in netns `node`, from `ip -o link show` ("N: name: ...").
fn link_index(node: &str, link: &str) -> Option<u32> {
    let out = std::process::Command::new("ip")
        .args(["-n", node, "-o", "link", "show", link])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// An rtnetlink socket bound in the netns of the thread that opened it.
pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
}

const NLMSG_ERROR: u16 = 2;
const RTM_DELLINK: u16 = 17;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFLA_IFNAME: u16 = 3;

impl RouteSocket {
    /// Opens a NETLINK_ROUTE socket (in the calling thread's netns).
    pub fn open() -> Result<RouteSocket, String> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(format!(
                "netlink socket: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: fd is a fresh, valid descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(RouteSocket { fd, seq: 1 })
    }

    /// Deletes link `name` with one RTM_DELLINK and waits for the ACK; returns the time taken.
    pub fn del_link_timed(&self, name: &str) -> Result<Duration, String> {
        let msg = dellink_message(name, self.seq);
        let mut buf = [0u8; 8192];
        let start = Instant::now();
        // SAFETY: msg/buf are valid for their lengths for the duration of the calls.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(format!("netlink send: {}", std::io::Error::last_os_error()));
        }
        let got = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let elapsed = start.elapsed();
        if got < 0 {
            return Err(format!("netlink recv: {}", std::io::Error::last_os_error()));
        }
        parse_ack(&buf[..got as usize]).map_err(|e| format!("RTM_DELLINK {name}: {e}"))?;
        Ok(elapsed)
    }
}

/// nlmsghdr + ifinfomsg + IFLA_IFNAME(name).
fn dellink_message(name: &str, seq: u32) -> Vec<u8> {
    let attr_len = 4 + name.len() + 1;
    let total = 16 + 16 + attr_len.next_multiple_of(4);
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&RTM_DELLINK.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[0u8; 16]); // ifinfomsg: AF_UNSPEC, index 0 (look up by name)
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
    m.extend_from_slice(name.as_bytes());
    m.resize(total, 0);
    m
}

/// Ok for an NLMSG_ERROR with error 0 (the ACK).
fn parse_ack(b: &[u8]) -> Result<(), String> {
    if b.len() < 20 {
        return Err(format!("short netlink answer ({} bytes)", b.len()));
    }
    let ty = u16::from_ne_bytes([b[4], b[5]]);
    if ty != NLMSG_ERROR {
        return Err(format!("unexpected netlink message type {ty}"));
    }
    let err = i32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
    if err != 0 {
        return Err(format!("{}", std::io::Error::from_raw_os_error(-err)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let m = dellink_message("eth0", 7);
        assert_eq!(m.len(), 44);
        assert_eq!(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]), 44);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_DELLINK);
        assert_eq!(u16::from_ne_bytes([m[32], m[33]]), 9);
        assert_eq!(&m[36..41], b"eth0\0");
    }

    #[test]
    fn ack_parsing() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(parse_ack(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-19i32).to_ne_bytes());
        assert!(parse_ack(&ack).is_err());
        assert!(parse_ack(&ack[..10]).is_err());
    }
}
