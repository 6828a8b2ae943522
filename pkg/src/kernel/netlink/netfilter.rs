//! nf_tables access: a small synchronous client over NETLINK_NETFILTER (look up a table, list
//! chains and rules with their comments, delete a table or rules), and [`run_nft`], which
//! writes rule sets with one atomic `nft -f -` transaction (see `node::masq`, `node::forward`).
//!
//! It runs on the same socket code as rtnetlink ([`super::socket`]: sequencing, ACK/error and
//! extack decoding, dump retries); only the messages differ. Every message is
//!
//! ```text
//! struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid }   16 bytes, host order
//! struct nfgenmsg { u8 family; u8 version = 0; be16 res_id }           4 bytes
//! attributes (struct nlattr TLVs, 4-byte aligned)
//! ```
//!
//! with type = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_*. Changes go in a batch:
//! NFNL_MSG_BATCH_BEGIN, the messages, NFNL_MSG_BATCH_END (subsystem in `res_id`). Table,
//! chain and rule userdata is libnftnl's TLV list `{ u8 type; u8 len; value }`, type 0 being the
//! comment (NUL-terminated). Tables carry userdata since Linux 5.10; rules since long before.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::attr::Attrs;
use super::error::NlResult;
use super::socket::{NETLINK_NETFILTER, NlSocket};
use crate::error::{Error, Result, code};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_USERDATA: u16 = 7;
const UDATA_COMMENT: u8 = 0;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NFPROTO_UNSPEC: u8 = 0;

/// The netfilter hook number of the forward hook (NF_INET_FORWARD).
pub const NF_INET_FORWARD: u32 = 2;
/// A base chain's drop policy (NF_DROP).
pub const NF_DROP: u32 = 0;

/// An nf_tables family twill deals with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NfFamily {
    /// `inet` (NFPROTO_INET): IPv4 and IPv6.
    Inet,
    /// `ip` (NFPROTO_IPV4), e.g. iptables-nft's tables.
    Ip,
    /// `ip6` (NFPROTO_IPV6), e.g. ip6tables-nft's tables.
    Ip6,
}

impl NfFamily {
    /// The NFPROTO_* number.
    pub fn proto(self) -> u8 {
        match self {
            NfFamily::Inet => 1,
            NfFamily::Ip => 2,
            NfFamily::Ip6 => 10,
        }
    }

    /// The family of an NFPROTO_* number, None for families twill does not handle.
    pub fn from_proto(p: u8) -> Option<NfFamily> {
        match p {
            1 => Some(NfFamily::Inet),
            2 => Some(NfFamily::Ip),
            10 => Some(NfFamily::Ip6),
            _ => None,
        }
    }

    /// The name `nft` uses (`inet`, `ip`, `ip6`).
    pub fn name(self) -> &'static str {
        match self {
            NfFamily::Inet => "inet",
            NfFamily::Ip => "ip",
            NfFamily::Ip6 => "ip6",
        }
    }
}

/// A table as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfTable {
    /// Its family.
    pub family: NfFamily,
    /// Its name.
    pub name: String,
    /// The comment in its userdata (None on kernels before 5.10, or without one).
    pub comment: Option<String>,
}

/// A chain as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfChain {
    /// Family of its table.
    pub family: NfFamily,
    /// Its table.
    pub table: String,
    /// Its name.
    pub name: String,
    /// The hook number of a base chain (e.g. [`NF_INET_FORWARD`]); None for a regular chain.
    pub hook: Option<u32>,
    /// The policy of a base chain (e.g. [`NF_DROP`]).
    pub policy: Option<u32>,
    /// The type of a base chain (`filter`, `nat`, `route`).
    pub kind: Option<String>,
}

/// A rule as the kernel reports it (only what twill needs: where it is and its comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfRule {
    /// Family of its table.
    pub family: NfFamily,
    /// Its table.
    pub table: String,
    /// Its chain.
    pub chain: String,
    /// Its handle (unique in the table).
    pub handle: u64,
    /// The comment in its userdata.
    pub comment: Option<String>,
}

/// A synchronous nf_tables client over one NETLINK_NETFILTER socket.
pub struct Netfilter {
    sock: NlSocket,
}

impl Netfilter {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn new() -> NlResult<Netfilter> {
        Ok(Netfilter {
            sock: NlSocket::open_protocol(NETLINK_NETFILTER)
                .map_err(|e| e.with_op(|| "open NETLINK_NETFILTER socket".into()))?,
        })
    }

    /// The table `family name`, or None when it does not exist (one request).
    pub fn table(&mut self, family: NfFamily, name: &str) -> NlResult<Option<NfTable>> {
        let mut msg = Vec::with_capacity(64);
        push_msg(
            &mut msg,
            nft(NFT_MSG_GETTABLE),
            NLM_F_REQUEST | NLM_F_ACK,
            family.proto(),
            0,
            &[(NFTA_TABLE_NAME, &cstr(name))],
        );
        let mut found = None;
        let res = self.sock.request_raw(&msg, &mut |ty, p| {
            if ty == nft(NFT_MSG_NEWTABLE) {
                found = parse_table(p);
            }
            Ok(())
        });
        match res {
            Ok(()) => Ok(found),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.with_op(|| format!("get table {} {name}", family.name()))),
        }
    }

    /// Every table of the families twill handles (one dump).
    pub fn tables(&mut self) -> NlResult<Vec<NfTable>> {
        let mut msg = Vec::with_capacity(32);
        push_msg(
            &mut msg,
            nft(NFT_MSG_GETTABLE),
            NLM_F_REQUEST | NLM_F_DUMP,
            NFPROTO_UNSPEC,
            0,
            &[],
        );
        self.sock
            .dump_raw(&msg, &mut |ty, p| {
                (ty == nft(NFT_MSG_NEWTABLE))
                    .then(|| parse_table(p))
                    .flatten()
            })
            .map_err(|e| e.with_op(|| "dump nftables tables".into()))
    }

    /// Every chain of `family` (every family twill handles when None), one dump.
    pub fn chains(&mut self, family: Option<NfFamily>) -> NlResult<Vec<NfChain>> {
        let mut msg = Vec::with_capacity(32);
        let proto = family.map_or(NFPROTO_UNSPEC, NfFamily::proto);
        push_msg(
            &mut msg,
            nft(NFT_MSG_GETCHAIN),
            NLM_F_REQUEST | NLM_F_DUMP,
            proto,
            0,
            &[],
        );
        self.sock
            .dump_raw(&msg, &mut |ty, p| {
                (ty == nft(NFT_MSG_NEWCHAIN))
                    .then(|| parse_chain(p))
                    .flatten()
            })
            .map_err(|e| e.with_op(|| "dump nftables chains".into()))
    }

    /// The rules of table `family table` (empty when the table does not exist), one dump.
    pub fn rules(&mut self, family: NfFamily, table: &str) -> NlResult<Vec<NfRule>> {
        let mut msg = Vec::with_capacity(64);
        push_msg(
            &mut msg,
            nft(NFT_MSG_GETRULE),
            NLM_F_REQUEST | NLM_F_DUMP,
            family.proto(),
            0,
            &[(NFTA_RULE_TABLE, &cstr(table))],
        );
        let res = self.sock.dump_raw(&msg, &mut |ty, p| {
            // Older kernels ignore the table filter of a dump: filter here as well.
            (ty == nft(NFT_MSG_NEWRULE))
                .then(|| parse_rule(p))
                .flatten()
                .filter(|r| r.family == family && r.table == table)
        });
        match res {
            Ok(rules) => Ok(rules),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e.with_op(|| format!("dump rules of table {} {table}", family.name()))),
        }
    }

    /// Deletes table `family name` with everything in it; returns false when it did not
    /// exist (one batch request).
    pub fn delete_table(&mut self, family: NfFamily, name: &str) -> NlResult<bool> {
        let mut inner = Vec::with_capacity(64);
        push_msg(
            &mut inner,
            nft(NFT_MSG_DELTABLE),
            NLM_F_REQUEST | NLM_F_ACK,
            family.proto(),
            0,
            &[(NFTA_TABLE_NAME, &cstr(name))],
        );
        match self.batch(&inner) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.with_op(|| format!("delete table {} {name}", family.name()))),
        }
    }

    /// Deletes `rules` (by table, chain and handle) in one atomic batch: all or none.
    pub fn delete_rules(&mut self, rules: &[NfRule]) -> NlResult<()> {
        let mut inner = Vec::with_capacity(96 * rules.len());
        for (i, r) in rules.iter().enumerate() {
            let ack = if i + 1 == rules.len() { NLM_F_ACK } else { 0 };
            push_msg(
                &mut inner,
                nft(NFT_MSG_DELRULE),
                NLM_F_REQUEST | ack,
                r.family.proto(),
                0,
                &[
                    (NFTA_RULE_TABLE, &cstr(&r.table)),
                    (NFTA_RULE_CHAIN, &cstr(&r.chain)),
                    (NFTA_RULE_HANDLE, &r.handle.to_be_bytes()),
                ],
            );
        }
        if rules.is_empty() {
            return Ok(());
        }
        self.batch(&inner).map_err(|e| {
            e.with_op(|| {
                let what: Vec<String> = rules
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {} {} handle {}",
                            r.family.name(),
                            r.table,
                            r.chain,
                            r.handle
                        )
                    })
                    .collect();
                format!("delete rules {}", what.join(", "))
            })
        })
    }

    /// Sends `inner` (messages whose last one asks for an ACK) wrapped in a batch.
    fn batch(&mut self, inner: &[u8]) -> NlResult<()> {
        let mut msg = Vec::with_capacity(inner.len() + 40);
        let begin = NFNL_MSG_BATCH_BEGIN;
        push_msg(
            &mut msg,
            begin,
            NLM_F_REQUEST,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        msg.extend_from_slice(inner);
        let end = NFNL_MSG_BATCH_END;
        push_msg(
            &mut msg,
            end,
            NLM_F_REQUEST,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        self.sock.request_raw(&msg, &mut |_, _| Ok(()))
    }
}

/// Where `nft` is looked for after `PATH`.
const NFT_FALLBACK_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// The `nft` binary: the first executable `nft` in `PATH`, else in /usr/sbin, /sbin,
/// /usr/local/sbin.
pub fn find_nft() -> Option<PathBuf> {
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
pub fn find_nft_in(dirs: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dirs.into_iter().map(|d| d.join("nft")).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The code-106 error for a missing `nft`, naming the feature that needs it and how to
/// turn that feature off.
pub fn nft_missing(feature: &str, key: &str) -> Error {
    Error::new(
        code::EXTERNAL_TOOL,
        format!(
            "{feature} needs the nft binary, not found in PATH or /usr/sbin, /sbin, \
             /usr/local/sbin: install nftables on the node, or set \"{key}\": false"
        ),
    )
}

/// Runs `nft -f -` (the binary `nft`, see [`find_nft`]) with `script` on stdin, in the calling
/// thread's network namespace: one atomic transaction. `what` names the rule set in errors.
/// Failing is code 106 with nft's exit status and stderr in the details.
pub fn run_nft(nft: &std::path::Path, script: &str, what: &str) -> Result<()> {
    let tool_err = |how: &str| {
        Error::new(
            code::EXTERNAL_TOOL,
            format!("{how} {} -f - ({what})", nft.display()),
        )
    };
    let mut child = Command::new(nft)
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

fn nft(msg: u16) -> u16 {
    NFNL_SUBSYS_NFTABLES << 8 | msg
}

/// Appends one message (sequence 0: the socket stamps it) to `out`.
fn push_msg(
    out: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    family: u8,
    res_id: u16,
    attrs: &[(u16, &[u8])],
) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]); // length, patched below
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&[0; 8]); // seq (stamped at send time), pid
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

/// The attributes of an nf_tables message payload (after the 4-byte nfgenmsg).
fn attrs(payload: &[u8]) -> Attrs<'_> {
    Attrs::after(payload, 4)
}

fn family_of(payload: &[u8]) -> Option<NfFamily> {
    payload.first().copied().and_then(NfFamily::from_proto)
}

fn string_of(v: &[u8]) -> String {
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

fn parse_table(p: &[u8]) -> Option<NfTable> {
    let mut t = NfTable {
        family: family_of(p)?,
        name: String::new(),
        comment: None,
    };
    for (ty, v) in attrs(p) {
        match ty {
            NFTA_TABLE_NAME => t.name = string_of(v),
            NFTA_TABLE_USERDATA => t.comment = udata_comment(v),
            _ => {}
        }
    }
    Some(t)
}

fn parse_chain(p: &[u8]) -> Option<NfChain> {
    let mut c = NfChain {
        family: family_of(p)?,
        table: String::new(),
        name: String::new(),
        hook: None,
        policy: None,
        kind: None,
    };
    for (ty, v) in attrs(p) {
        match ty {
            NFTA_CHAIN_TABLE => c.table = string_of(v),
            NFTA_CHAIN_NAME => c.name = string_of(v),
            NFTA_CHAIN_POLICY => c.policy = be32(v),
            NFTA_CHAIN_TYPE => c.kind = Some(string_of(v)),
            NFTA_CHAIN_HOOK => {
                c.hook = Attrs::new(v)
                    .find(|(t, _)| *t == NFTA_HOOK_HOOKNUM)
                    .and_then(|(_, h)| be32(h));
            }
            _ => {}
        }
    }
    Some(c)
}

fn parse_rule(p: &[u8]) -> Option<NfRule> {
    let mut r = NfRule {
        family: family_of(p)?,
        table: String::new(),
        chain: String::new(),
        handle: 0,
        comment: None,
    };
    for (ty, v) in attrs(p) {
        match ty {
            NFTA_RULE_TABLE => r.table = string_of(v),
            NFTA_RULE_CHAIN => r.chain = string_of(v),
            NFTA_RULE_HANDLE => r.handle = u64::from_be_bytes(v.get(..8)?.try_into().ok()?),
            NFTA_RULE_USERDATA => r.comment = udata_comment(v),
            _ => {}
        }
    }
    Some(r)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout_and_userdata() {
        let mut m = Vec::new();
        push_msg(
            &mut m,
            0x0a01,
            NLM_F_REQUEST,
            NfFamily::Inet.proto(),
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
        let a: Vec<(u16, &[u8])> = attrs(&m[16..]).collect();
        assert_eq!(a, vec![(1u16, &b"ab\0"[..])]);
        assert_eq!(
            udata_comment(&[1, 1, b'x', 0, 4, b'h', b'i', b'!', 0]).as_deref(),
            Some("hi!")
        );
        assert_eq!(udata_comment(&[1, 1, b'x']), None);
        assert_eq!(udata_comment(&[0, 9, b'x']), None, "truncated value");
    }

    #[test]
    fn nft_lookup_and_failures_are_code_106() {
        let empty = std::env::temp_dir().join(format!("twill-nf-nonft-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let found = find_nft_in([empty.clone()]);
        std::fs::remove_dir_all(&empty).unwrap();
        assert_eq!(found, None);
        let e = nft_missing("ipMasq", "ipMasq");
        assert_eq!(e.code, code::EXTERNAL_TOOL);
        assert!(e.msg.contains("install nftables") && e.msg.contains("\"ipMasq\": false"));
        // A "nft" that fails: its exit status and stderr end up in the details.
        let e = run_nft(std::path::Path::new("/bin/false"), "x", "t").unwrap_err();
        assert_eq!(e.code, code::EXTERNAL_TOOL);
        assert!(e.msg.contains("failed") && e.msg.contains("(t)"), "{e}");
        let e = run_nft(std::path::Path::new("/nonexistent/nft"), "x", "t").unwrap_err();
        assert!(e.msg.contains("cannot run"), "{e}");
    }

    #[test]
    fn chain_and_rule_replies_decode() {
        let mut hook = Vec::new();
        hook.extend_from_slice(&8u16.to_ne_bytes());
        hook.extend_from_slice(&NFTA_HOOK_HOOKNUM.to_ne_bytes());
        hook.extend_from_slice(&NF_INET_FORWARD.to_be_bytes());
        let mut m = Vec::new();
        push_msg(
            &mut m,
            nft(NFT_MSG_NEWCHAIN),
            0,
            NfFamily::Ip.proto(),
            0,
            &[
                (NFTA_CHAIN_TABLE, &cstr("filter")),
                (NFTA_CHAIN_NAME, &cstr("FORWARD")),
                (NFTA_CHAIN_HOOK | 0x8000, &hook),
                (NFTA_CHAIN_POLICY, &NF_DROP.to_be_bytes()),
                (NFTA_CHAIN_TYPE, &cstr("filter")),
            ],
        );
        let c = parse_chain(&m[16..]).unwrap();
        assert_eq!(
            c,
            NfChain {
                family: NfFamily::Ip,
                table: "filter".into(),
                name: "FORWARD".into(),
                hook: Some(NF_INET_FORWARD),
                policy: Some(NF_DROP),
                kind: Some("filter".into()),
            }
        );
        let mut m = Vec::new();
        push_msg(
            &mut m,
            nft(NFT_MSG_NEWRULE),
            0,
            NfFamily::Ip6.proto(),
            0,
            &[
                (NFTA_RULE_TABLE, &cstr("filter")),
                (NFTA_RULE_CHAIN, &cstr("FORWARD")),
                (NFTA_RULE_HANDLE, &7u64.to_be_bytes()),
                (NFTA_RULE_USERDATA, &[0, 3, b'a', b'b', 0]),
            ],
        );
        let r = parse_rule(&m[16..]).unwrap();
        assert_eq!((r.family, r.handle), (NfFamily::Ip6, 7));
        assert_eq!(r.comment.as_deref(), Some("ab"));
        assert_eq!(parse_rule(&[99, 0, 0, 0]), None, "unknown family");
    }
}
