//! ipMasq: one nftables rule set per network, created once and checked cheaply.
//!
//! Each network gets its own table, `table inet twill-masq-<network>`, holding one nat chain
//! hooked at postrouting with one rule per IP family:
//!
//! ```text
//! ip saddr { <pod subnets> } ip daddr != { <cluster networks>, <pod subnets>, 224.0.0.0/4 } \
//!     masquerade fully-random
//! ip6 saddr { ... } ip6 daddr != { ..., ff00::/8 } masquerade fully-random
//! ```
//!
//! The table and its rules carry the comment `twill masq <fingerprint>` (a hash of the rule
//! set), stored by the kernel as table/rule userdata. [`ensure`] asks the kernel for the table
//! directly over NETLINK_NETFILTER (one request, no exec): present with the right fingerprint →
//! done. Otherwise it runs `nft -f -` with one atomic transaction (add table; delete table;
//! define table, chain and rules), so concurrent creators all converge on the same single rule
//! set and a changed configuration replaces the old one. Everything happens in the network
//! namespace of the calling thread.

use crate::error::{Error, Result, code};
use crate::flannel::subnet_file::network_of;
use crate::node::peers::fnv1a64;
use ipnetwork::IpNetwork;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Every masquerade table is named this prefix + the network name.
pub const TABLE_PREFIX: &str = "twill-masq-";
/// The chain inside the table.
pub const CHAIN: &str = "postrouting";
/// Where `nft` is looked for after `PATH`.
const NFT_FALLBACK_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// The rule set of one network, rendered (pure; see [`ruleset`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// Table name (`twill-masq-<network>`), family `inet`.
    pub table: String,
    /// The comment carried by the table and every rule: `twill masq <fingerprint hex>`.
    pub comment: String,
    /// The rules (without comment), one per IP family that has a pod subnet.
    pub rules: Vec<String>,
    /// The atomic `nft -f` script that (re)creates the table.
    pub script: String,
}

/// The table name for `network` (validated: letters, digits, `_`, `.`, `-`; code 7).
pub fn table_name(network: &str) -> Result<String> {
    let ok = !network.is_empty()
        && network.len() <= 200
        && network.starts_with(|c: char| c.is_ascii_alphanumeric())
        && network
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(Error::invalid_config(format!(
            "invalid network name {network:?} for ipMasq: use letters, digits, '_', '.', '-'"
        )));
    }
    Ok(format!("{TABLE_PREFIX}{network}"))
}

/// Networks reduced to their network address, those inside another dropped, sorted.
fn minimal(nets: impl IntoIterator<Item = IpNetwork>) -> Vec<IpNetwork> {
    let mut all: Vec<IpNetwork> = nets.into_iter().map(network_of).collect();
    all.sort_by_key(|n| n.prefix());
    let mut kept: Vec<IpNetwork> = Vec::new();
    for n in all {
        if !kept
            .iter()
            .any(|k| k.prefix() <= n.prefix() && k.contains(n.network()))
        {
            kept.push(n);
        }
    }
    kept.sort();
    kept
}

fn set_of(nets: &[IpNetwork]) -> String {
    let items: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
    format!("{{ {} }}", items.join(", "))
}

/// Renders the rule set: masquerade from `pod_subnets` to anything outside `cluster_networks`,
/// the pod subnets themselves and multicast. No pod subnet is code 7.
pub fn ruleset(
    network: &str,
    pod_subnets: &[IpNetwork],
    cluster_networks: &[IpNetwork],
) -> Result<Ruleset> {
    let table = table_name(network)?;
    if pod_subnets.is_empty() {
        return Err(Error::invalid_config(format!(
            "ipMasq for network {network:?} needs at least one pod subnet"
        )));
    }
    let mut rules = Vec::new();
    for v6 in [false, true] {
        let fam = |n: &&IpNetwork| n.is_ipv6() == v6;
        let pods = minimal(pod_subnets.iter().filter(fam).copied());
        if pods.is_empty() {
            continue;
        }
        let multicast = if v6 {
            IpNetwork::new(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0).into(), 8)
        } else {
            IpNetwork::new(Ipv4Addr::new(224, 0, 0, 0).into(), 4)
        }
        .map_err(|e| Error::new(code::INVALID_CONFIG, "multicast prefix").with_details(e))?;
        let excluded = minimal(
            cluster_networks
                .iter()
                .filter(fam)
                .chain(pods.iter())
                .copied()
                .chain([multicast]),
        );
        let proto = if v6 { "ip6" } else { "ip" };
        rules.push(format!(
            "{proto} saddr {} {proto} daddr != {} masquerade fully-random",
            set_of(&pods),
            set_of(&excluded)
        ));
    }
    let fp = fnv1a64(format!("twill-masq 1\n{table}\n{}\n", rules.join("\n")).as_bytes());
    let comment = format!("twill masq {fp:016x}");
    let mut script = format!(
        "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n\
         \tcomment \"{comment}\"\n\tchain {CHAIN} {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n"
    );
    for r in &rules {
        script.push_str(&format!("\t\t{r} comment \"{comment}\"\n"));
    }
    script.push_str("\t}\n}\n");
    Ok(Ruleset {
        table,
        comment,
        rules,
        script,
    })
}

/// Makes sure the network's masquerade table exists with exactly this rule set.
/// Cost when it does: one NETLINK_NETFILTER request. Otherwise one `nft -f -` transaction.
/// `nft` missing or failing is code 106; a netlink failure is code 100.
pub fn ensure(
    network: &str,
    pod_subnets: &[IpNetwork],
    cluster_networks: &[IpNetwork],
) -> Result<()> {
    let rs = ruleset(network, pod_subnets, cluster_networks)?;
    let mut nl = Nfnl::open()?;
    if let Some(t) = nl.get_table(&rs.table)?
        && t.comment.as_deref() == Some(rs.comment.as_str())
    {
        return Ok(());
    }
    run_nft(&rs.script, &rs.table)
}

/// Recreates the table unconditionally (one `nft -f -` transaction), e.g. after [`check`]
/// found it tampered with: [`ensure`] only compares the table's fingerprint comment.
pub fn rebuild(
    network: &str,
    pod_subnets: &[IpNetwork],
    cluster_networks: &[IpNetwork],
) -> Result<()> {
    let rs = ruleset(network, pod_subnets, cluster_networks)?;
    run_nft(&rs.script, &rs.table)
}

/// CHECK: the table exists with this rule set's fingerprint and its chain holds exactly the
/// expected rules (each carrying the fingerprint comment). Anything else is code 105.
pub fn check(
    network: &str,
    pod_subnets: &[IpNetwork],
    cluster_networks: &[IpNetwork],
) -> Result<()> {
    let rs = ruleset(network, pod_subnets, cluster_networks)?;
    let mut nl = Nfnl::open()?;
    let failed = |what: String| Error::new(code::CHECK_FAILED, what);
    let Some(table) = nl.get_table(&rs.table)? else {
        return Err(failed(format!(
            "masquerade table inet {} does not exist",
            rs.table
        )));
    };
    if table.comment.as_deref() != Some(rs.comment.as_str()) {
        return Err(failed(format!(
            "masquerade table inet {} holds another rule set ({:?}, expected {:?})",
            rs.table, table.comment, rs.comment
        )));
    }
    let rules = nl.dump_rules(&rs.table)?;
    let good = rules
        .iter()
        .filter(|r| r.chain == CHAIN && r.comment.as_deref() == Some(rs.comment.as_str()))
        .count();
    if good != rs.rules.len() || rules.len() != rs.rules.len() {
        return Err(failed(format!(
            "masquerade table inet {}: expected {} twill rules in chain {CHAIN}, found {} \
             ({} in total)",
            rs.table,
            rs.rules.len(),
            good,
            rules.len()
        )));
    }
    Ok(())
}

/// Deletes the network's masquerade table (over netlink, no `nft` needed). Absent is `Ok`.
pub fn remove(network: &str) -> Result<()> {
    let table = table_name(network)?;
    Nfnl::open()?.delete_table(&table)
}

/// True when the network's masquerade table exists (one netlink request).
pub fn exists(network: &str) -> Result<bool> {
    let table = table_name(network)?;
    Ok(Nfnl::open()?.get_table(&table)?.is_some())
}

fn find_nft() -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    find_nft_in(
        path_dirs
            .into_iter()
            .chain(NFT_FALLBACK_DIRS.iter().map(PathBuf::from)),
    )
}

/// The first executable file named `nft` in `dirs`.
fn find_nft_in(dirs: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dirs.into_iter().map(|d| d.join("nft")).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

fn run_nft(script: &str, table: &str) -> Result<()> {
    run_nft_at(find_nft(), script, table)
}

fn run_nft_at(nft: Option<PathBuf>, script: &str, table: &str) -> Result<()> {
    let Some(nft) = nft else {
        return Err(Error::new(
            code::EXTERNAL_TOOL,
            "ipMasq needs the nft binary, not found in PATH or /usr/sbin, /sbin, /usr/local/sbin: \
             install nftables on the node, or set \"ipMasq\": false",
        ));
    };
    let tool_err = |what: &str| {
        Error::new(
            code::EXTERNAL_TOOL,
            format!("{what} {} -f - (table inet {table})", nft.display()),
        )
    };
    let mut child = Command::new(&nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| tool_err("cannot run").with_details(e))?;
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(script.as_bytes()),
        None => Ok(()),
    };
    let out = child
        .wait_with_output()
        .map_err(|e| tool_err("cannot wait for").with_details(e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(tool_err("failed:").with_details(format!("{}: {}", out.status, stderr.trim())));
    }
    written.map_err(|e| tool_err("cannot feed").with_details(e))
}

// ---------------------------------------------------------------------------------------------
// NETLINK_NETFILTER, by hand. Every message is
//
//   struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid }   16 bytes, host order
//   struct nfgenmsg { u8 family; u8 version = 0; be16 res_id }           4 bytes
//   attributes: struct nlattr { u16 len; u16 type } + payload, each padded to 4 bytes
//
// with type = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_*. A GET for one table carries
// NFTA_TABLE_NAME (NUL-terminated); the kernel answers with a NEWTABLE message or an
// NLMSG_ERROR (-ENOENT when absent). Table and rule userdata (NFTA_*_USERDATA) is libnftnl's
// TLV list { u8 type; u8 len; value } where type 0 is the comment (NUL-terminated).
// Changes go in a batch: NFNL_MSG_BATCH_BEGIN, the message, NFNL_MSG_BATCH_END, with the
// subsystem in res_id of the batch markers.
// ---------------------------------------------------------------------------------------------

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_USERDATA: u16 = 7;
const NFPROTO_INET: u8 = 1;
const UDATA_COMMENT: u8 = 0;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const ENOENT: i32 = 2;

/// What the kernel says about a table.
struct TableInfo {
    comment: Option<String>,
}

/// What the kernel says about a rule.
struct RuleInfo {
    chain: String,
    comment: Option<String>,
}

/// One NETLINK_NETFILTER socket.
struct Nfnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn nl_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(code::NETLINK, format!("nftables netlink: {what}")).with_details(e)
}

fn push_msg(
    out: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[(u16, &[u8])],
) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]); // length, patched below
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    for (at, payload) in attrs {
        let len = 4 + payload.len();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&at.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(out.len() + (4 - len % 4) % 4, 0);
    }
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One received message: type, flags, seq and the bytes after the nlmsghdr.
struct Msg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    body: &'a [u8],
}

fn messages(mut b: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    std::iter::from_fn(move || {
        if b.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 16 || len > b.len() {
            return None;
        }
        let m = Msg {
            ty: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            body: &b[16..len],
        };
        b = &b[((len + 3) & !3).min(b.len())..];
        Some(m)
    })
}

/// The attributes of an nftables message body (after the 4-byte nfgenmsg).
fn attrs(body: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut b = body.get(4..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        if len < 4 || len > b.len() {
            return None;
        }
        let item = (u16::from_ne_bytes([b[2], b[3]]) & 0x3fff, &b[4..len]);
        b = &b[((len + 3) & !3).min(b.len())..];
        Some(item)
    })
}

fn string_of(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// The comment in a libnftnl userdata TLV list.
fn udata_comment(mut u: &[u8]) -> Option<String> {
    while u.len() >= 2 {
        let (ty, len) = (u[0], u[1] as usize);
        let value = u.get(2..2 + len)?;
        if ty == UDATA_COMMENT {
            return Some(string_of(value));
        }
        u = &u[2 + len..];
    }
    None
}

/// The errno of an NLMSG_ERROR body (0 = ack).
fn error_code(body: &[u8]) -> i32 {
    body.get(..4)
        .map_or(-1, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

impl Nfnl {
    fn open() -> Result<Nfnl> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| nl_err("socket", e))?;
        sock.bind_auto().map_err(|e| nl_err("bind", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| nl_err("connect", e))?;
        Ok(Nfnl {
            sock,
            seq: 0,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    fn send(&self, msg: &[u8]) -> Result<()> {
        self.sock.send(msg, 0).map_err(|e| nl_err("send", e))?;
        Ok(())
    }

    /// Receives one datagram into `self.buf`.
    fn recv(&mut self) -> Result<()> {
        self.buf.clear();
        let n = self
            .sock
            .recv(&mut self.buf, 0)
            .map_err(|e| nl_err("recv", e))?;
        if n > self.buf.len() {
            return Err(nl_err("recv", "reply truncated"));
        }
        Ok(())
    }

    fn get_table(&mut self, name: &str) -> Result<Option<TableInfo>> {
        let seq = self.next_seq();
        let mut msg = Vec::with_capacity(64);
        let ty = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE;
        push_msg(
            &mut msg,
            ty,
            NLM_F_REQUEST,
            seq,
            NFPROTO_INET,
            0,
            &[(NFTA_TABLE_NAME, &cstr(name))],
        );
        self.send(&msg)?;
        loop {
            self.recv()?;
            for m in messages(&self.buf) {
                if m.seq != seq {
                    continue;
                }
                if m.ty == NLMSG_ERROR {
                    return match error_code(m.body) {
                        0 => continue,
                        e if e == -ENOENT => Ok(None),
                        e => Err(nl_err(
                            &format!("get table inet {name}"),
                            std::io::Error::from_raw_os_error(-e),
                        )),
                    };
                }
                if m.ty == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE {
                    let comment = attrs(m.body)
                        .find(|(t, _)| *t == NFTA_TABLE_USERDATA)
                        .and_then(|(_, u)| udata_comment(u));
                    return Ok(Some(TableInfo { comment }));
                }
            }
        }
    }

    fn dump_rules(&mut self, table: &str) -> Result<Vec<RuleInfo>> {
        let seq = self.next_seq();
        let mut msg = Vec::with_capacity(64);
        let ty = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETRULE;
        let flags = NLM_F_REQUEST | NLM_F_DUMP;
        push_msg(
            &mut msg,
            ty,
            flags,
            seq,
            NFPROTO_INET,
            0,
            &[(NFTA_RULE_TABLE, &cstr(table))],
        );
        self.send(&msg)?;
        let mut rules = Vec::new();
        loop {
            self.recv()?;
            let mut done = false;
            for m in messages(&self.buf) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => match error_code(m.body) {
                        0 => done = true,
                        e if e == -ENOENT => return Ok(Vec::new()),
                        e => {
                            return Err(nl_err(
                                &format!("dump rules of inet {table}"),
                                std::io::Error::from_raw_os_error(-e),
                            ));
                        }
                    },
                    t if t == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE => {
                        let (mut rtable, mut chain, mut comment) =
                            (String::new(), String::new(), None);
                        for (at, p) in attrs(m.body) {
                            match at {
                                NFTA_RULE_TABLE => rtable = string_of(p),
                                NFTA_RULE_CHAIN => chain = string_of(p),
                                NFTA_RULE_USERDATA => comment = udata_comment(p),
                                _ => {}
                            }
                        }
                        if rtable == table {
                            rules.push(RuleInfo { chain, comment });
                        }
                    }
                    _ => {}
                }
                if m.flags & NLM_F_MULTI == 0 && m.ty != NLMSG_ERROR {
                    done = true;
                }
            }
            if done {
                return Ok(rules);
            }
        }
    }

    fn delete_table(&mut self, name: &str) -> Result<()> {
        let (s0, s1, s2) = (self.next_seq(), self.next_seq(), self.next_seq());
        let mut msg = Vec::with_capacity(128);
        let sub = NFNL_SUBSYS_NFTABLES;
        push_msg(
            &mut msg,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            s0,
            0,
            sub,
            &[],
        );
        let ty = sub << 8 | NFT_MSG_DELTABLE;
        let name_attr = cstr(name);
        push_msg(
            &mut msg,
            ty,
            NLM_F_REQUEST | NLM_F_ACK,
            s1,
            NFPROTO_INET,
            0,
            &[(NFTA_TABLE_NAME, &name_attr)],
        );
        push_msg(&mut msg, NFNL_MSG_BATCH_END, NLM_F_REQUEST, s2, 0, sub, &[]);
        self.send(&msg)?;
        loop {
            self.recv()?;
            for m in messages(&self.buf) {
                if m.ty != NLMSG_ERROR || m.seq != s1 {
                    continue;
                }
                return match error_code(m.body) {
                    0 => Ok(()),
                    e if e == -ENOENT => Ok(()),
                    e => Err(nl_err(
                        &format!("delete table inet {name}"),
                        std::io::Error::from_raw_os_error(-e),
                    )),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn ruleset_dual_stack() {
        let rs = ruleset(
            "cbr0",
            &[net("10.244.1.1/24"), net("fd10:0:0:1::/64")],
            &[net("10.244.0.0/16"), net("fd10::/48")],
        )
        .unwrap();
        assert_eq!(rs.table, "twill-masq-cbr0");
        assert_eq!(
            rs.rules,
            vec![
                "ip saddr { 10.244.1.0/24 } ip daddr != { 10.244.0.0/16, 224.0.0.0/4 } \
                 masquerade fully-random",
                "ip6 saddr { fd10:0:0:1::/64 } ip6 daddr != { fd10::/48, ff00::/8 } \
                 masquerade fully-random",
            ]
        );
        assert!(
            rs.comment.starts_with("twill masq ") && rs.comment.len() == 27,
            "{}",
            rs.comment
        );
        assert!(
            rs.script
                .starts_with("table inet twill-masq-cbr0 {}\ndelete table inet twill-masq-cbr0\n")
        );
        assert_eq!(rs.script.matches(&rs.comment).count(), 3);
    }

    #[test]
    fn ruleset_pod_subnet_outside_cluster_and_v4_only() {
        let rs = ruleset(
            "n",
            &[net("192.168.5.0/24")],
            &[net("10.0.0.0/8"), net("fd00::/8")],
        )
        .unwrap();
        assert_eq!(
            rs.rules,
            vec![
                "ip saddr { 192.168.5.0/24 } ip daddr != { 10.0.0.0/8, 192.168.5.0/24, \
                 224.0.0.0/4 } masquerade fully-random"
            ]
        );
    }

    #[test]
    fn fingerprint_follows_content() {
        let a = ruleset("n", &[net("10.1.0.0/24")], &[net("10.0.0.0/8")]).unwrap();
        let b = ruleset("n", &[net("10.1.0.0/24")], &[net("10.0.0.0/8")]).unwrap();
        let c = ruleset("n", &[net("10.1.0.0/24")], &[net("10.0.0.0/9")]).unwrap();
        let d = ruleset("m", &[net("10.1.0.0/24")], &[net("10.0.0.0/8")]).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.comment, c.comment);
        assert_ne!(a.comment, d.comment);
    }

    #[test]
    fn bad_input() {
        assert_eq!(ruleset("n", &[], &[]).unwrap_err().code, 7);
        for bad in ["", "../x", "a b", "-x", "a;b", "a\"b"] {
            assert_eq!(table_name(bad).unwrap_err().code, 7, "{bad:?}");
        }
    }

    #[test]
    fn nft_missing_or_failing_is_code_106() {
        let empty = std::env::temp_dir().join(format!("twill-masq-nonft-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        assert_eq!(find_nft_in([empty.clone()]), None);
        let e = run_nft_at(find_nft_in([empty.clone()]), "", "t").unwrap_err();
        assert_eq!(e.code, code::EXTERNAL_TOOL);
        assert!(
            e.msg.contains("nft") && e.msg.contains("install nftables"),
            "{e}"
        );
        std::fs::remove_dir_all(&empty).unwrap();
        // A "nft" that fails: its exit status and stderr end up in the details.
        let e = run_nft_at(Some("/bin/false".into()), "x", "t").unwrap_err();
        assert_eq!(e.code, code::EXTERNAL_TOOL);
        assert!(e.msg.contains("failed"), "{e}");
        assert!(
            find_nft_in([PathBuf::from("/usr/sbin")]).is_some(),
            "nft installed here"
        );
    }

    #[test]
    fn message_layout() {
        let mut m = Vec::new();
        push_msg(
            &mut m,
            0x0a01,
            NLM_F_REQUEST,
            7,
            NFPROTO_INET,
            0,
            &[(NFTA_TABLE_NAME, &cstr("ab"))],
        );
        // 16 header + 4 nfgenmsg + 4 attr header + "ab\0" padded to 4.
        assert_eq!(m.len(), 28);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 0x0a01);
        assert_eq!(&m[16..20], &[1, 0, 0, 0]);
        assert_eq!(u16::from_ne_bytes(m[20..22].try_into().unwrap()), 7);
        assert_eq!(&m[24..28], b"ab\0\0");
        let parsed: Vec<Msg> = messages(&m).collect();
        assert_eq!(parsed.len(), 1);
        let a: Vec<(u16, &[u8])> = attrs(parsed[0].body).collect();
        assert_eq!(a, vec![(1u16, &b"ab\0"[..])]);
        assert_eq!(
            udata_comment(&[1, 1, b'x', 0, 4, b'h', b'i', b'!', 0]).as_deref(),
            Some("hi!")
        );
    }
}
