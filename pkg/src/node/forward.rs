//! Forwarding: accept the network's pod traffic in the host's own forward filter chains.
//!
//! A node whose forward path drops by default (Docker sets the iptables FORWARD policy to DROP;
//! hardened hosts do the same) cuts its pods off from other nodes and the outside. A table of
//! twill's own cannot help: a packet dropped by any base chain at the forward hook is gone,
//! whatever another table accepts. So, as flannel does, twill appends accept rules to the
//! chains the host uses: every base chain of type `filter` at the forward hook in an `ip`,
//! `ip6` or `inet` table (iptables-nft's `ip filter FORWARD` / `ip6 filter FORWARD`, an
//! nftables `inet filter forward`, ...). For each CIDR of the network's space, of the chain's
//! family, two rules:
//!
//! ```text
//! ip saddr <cidr> accept comment "twill forward <network> <fingerprint> <cidr>"
//! ip daddr <cidr> accept comment "twill forward <network> <fingerprint> <cidr>"
//! ```
//!
//! They are appended, so whatever the host put before them (e.g. Docker's DOCKER-USER jump)
//! still decides first; they use only payload matches and a verdict, so iptables-nft lists
//! and edits those chains as before. Nothing else is ever accepted.
//!
//! Ownership: twill's rules are known by their comment alone (`twill forward <network> `, or
//! `twill forward #<hash of the name> ` for names longer than 48 bytes); the
//! fingerprint (a hash of the network's space) tells stale ones. [`ensure`] reads the chains
//! (one dump) and the rules of the tables holding forward chains (one dump per table) and, only
//! when a chain's rules of this network differ, replaces them in one `nft -f -` transaction
//! under a lock file. [`remove`] deletes every rule of the network over netlink (no `nft`).
//!
//! Every function works over the caller's [`Netfilter`] socket, in the network namespace that
//! socket was opened in; `nft` runs in the calling thread's.

use crate::error::{Error, Result, code};
use crate::hash::fnv1a64;
use crate::kernel::netlink::netfilter::{
    self, NF_INET_FORWARD, Netfilter, NfChain, NfFamily, NfRule,
};
use crate::node::masq::{self, minimal};
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The comment prefix of every forward rule twill owns.
pub const MARK: &str = "twill forward ";

/// One rule twill wants in one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The chain's family.
    pub family: NfFamily,
    /// The chain's table.
    pub table: String,
    /// The chain.
    pub chain: String,
    /// The rule, without its comment (`ip saddr 10.244.0.0/16 accept`).
    pub rule: String,
    /// Its comment (`twill forward <network> <fingerprint> <cidr>`).
    pub comment: String,
}

/// The longest network name a rule comment carries as is (nft caps comments at 128 bytes).
const NAME_IN_COMMENT_MAX: usize = 48;

/// The comment prefix of the rules of `network`: its name, or `#<hash>` for a longer name.
fn prefix(network: &str) -> String {
    if network.len() <= NAME_IN_COMMENT_MAX {
        format!("{MARK}{network} ")
    } else {
        format!("{MARK}#{:016x} ", fnv1a64(network.as_bytes()))
    }
}

/// A name `nft` takes unquoted in a script (letters, digits, `_`, `.`, `-`, a letter first).
fn plain_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The chains twill adds its rules to: base chains of type filter at the forward hook in
/// `ip`, `ip6` and `inet` tables (not twill's own tables, not names nft would need quoted).
pub fn host_chains(chains: &[NfChain]) -> Vec<&NfChain> {
    chains
        .iter()
        .filter(|c| {
            c.hook == Some(NF_INET_FORWARD)
                && c.kind.as_deref().unwrap_or("filter") == "filter"
                && !c.table.starts_with("twill-")
                && plain_name(&c.table)
                && plain_name(&c.name)
        })
        .collect()
}

/// The rules `network` wants in `chains` for its `space` (pure).
pub fn wanted(network: &str, space: &[IpNetwork], chains: &[&NfChain]) -> Result<Vec<Wanted>> {
    masq::table_name(network)?; // the same naming rule as the masquerade
    let space = minimal(space.iter().copied());
    let items: Vec<String> = space.iter().map(|n| n.to_string()).collect();
    let fp = fnv1a64(format!("twill-forward 1\n{network}\n{}\n", items.join(",")).as_bytes());
    let mut out = Vec::new();
    for c in chains {
        for n in &space {
            let proto = if n.is_ipv4() { "ip" } else { "ip6" };
            let fits = match c.family {
                NfFamily::Inet => true,
                NfFamily::Ip => n.is_ipv4(),
                NfFamily::Ip6 => n.is_ipv6(),
            };
            if !fits {
                continue;
            }
            for dir in ["saddr", "daddr"] {
                out.push(Wanted {
                    family: c.family,
                    table: c.table.clone(),
                    chain: c.name.clone(),
                    rule: format!("{proto} {dir} {n} accept"),
                    comment: format!("{}{fp:016x} {n}", prefix(network)),
                });
            }
        }
    }
    Ok(out)
}

/// What the node holds: the host's forward chains and every rule of `network` in their tables.
struct Seen {
    chains: Vec<NfChain>,
    ours: Vec<NfRule>,
}

fn read(nf: &mut Netfilter, network: &str) -> Result<Seen> {
    let chains = nf.chains(None)?;
    read_rules(nf, network, chains)
}

/// [`read`] on a node whose chains are `chains` (already dumped): the rule dumps only.
fn read_rules(nf: &mut Netfilter, network: &str, chains: Vec<NfChain>) -> Result<Seen> {
    // Only tables holding a host forward chain: twill's rules are never anywhere else, and
    // a node's other tables (kube-proxy's, say) may be large.
    let tables: BTreeSet<(NfFamily, String)> = host_chains(&chains)
        .iter()
        .map(|c| (c.family, c.table.clone()))
        .collect();
    let mine = prefix(network);
    let mut ours = Vec::new();
    for (family, table) in tables {
        ours.extend(
            nf.rules(family, &table)?
                .into_iter()
                .filter(|r| r.comment.as_deref().is_some_and(|c| c.starts_with(&mine))),
        );
    }
    Ok(Seen { chains, ours })
}

/// The CIDRs named by the rules of `network` (from their comments).
fn held(ours: &[NfRule]) -> Vec<IpNetwork> {
    ours.iter()
        .filter_map(|r| r.comment.as_deref()?.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// The change that makes the node hold `want`: the rules to delete and the chains to refill
/// (empty when in sync).
struct Plan {
    delete: Vec<NfRule>,
    add: Vec<Wanted>,
}

fn plan(seen: &Seen, want: &[Wanted]) -> Plan {
    let key = |f: NfFamily, t: &str, c: &str| (f, t.to_string(), c.to_string());
    let mut chains: BTreeSet<(NfFamily, String, String)> = BTreeSet::new();
    chains.extend(want.iter().map(|w| key(w.family, &w.table, &w.chain)));
    chains.extend(seen.ours.iter().map(|r| key(r.family, &r.table, &r.chain)));
    let mut p = Plan {
        delete: Vec::new(),
        add: Vec::new(),
    };
    for (f, t, c) in chains {
        let have: Vec<&NfRule> = seen
            .ours
            .iter()
            .filter(|r| r.family == f && r.table == t && r.chain == c)
            .collect();
        let need: Vec<&Wanted> = want
            .iter()
            .filter(|w| w.family == f && w.table == t && w.chain == c)
            .collect();
        let have_c: Vec<Option<&str>> = have.iter().map(|r| r.comment.as_deref()).collect();
        let need_c: Vec<Option<&str>> = need.iter().map(|w| Some(w.comment.as_str())).collect();
        if have_c != need_c {
            p.delete.extend(have.into_iter().cloned());
            p.add.extend(need.into_iter().cloned());
        }
    }
    p
}

fn script(p: &Plan) -> String {
    let mut s = String::new();
    for r in &p.delete {
        s.push_str(&format!(
            "delete rule {} {} {} handle {}\n",
            r.family.name(),
            r.table,
            r.chain,
            r.handle
        ));
    }
    for w in &p.add {
        s.push_str(&format!(
            "add rule {} {} {} {} comment \"{}\"\n",
            w.family.name(),
            w.table,
            w.chain,
            w.rule,
            w.comment
        ));
    }
    s
}

/// Makes the host's forward chains accept `network`'s traffic from and to `space`, and
/// nothing else of this network; returns whether anything changed. With `grow`, the CIDRs
/// already accepted stay (for an IPAM that does not declare its ranges). In sync: one chain
/// dump plus one rule dump per table holding a forward chain, no exec. A change takes the lock
/// file `forward-<network>.lock` in `lock_dir`, reads again and writes one `nft -f -`
/// transaction. No forward chain on the node: nothing to do (the kernel forwards).
pub fn ensure(
    nf: &mut Netfilter,
    network: &str,
    space: &[IpNetwork],
    grow: bool,
    lock_dir: &Path,
) -> Result<bool> {
    let compute = |nf: &mut Netfilter| -> Result<Plan> {
        let seen = read(nf, network)?;
        let mut space = space.to_vec();
        if grow {
            space.extend(held(&seen.ours));
        }
        let want = wanted(network, &space, &host_chains(&seen.chains))?;
        Ok(plan(&seen, &want))
    };
    let p = compute(nf)?;
    if p.delete.is_empty() && p.add.is_empty() {
        return Ok(false);
    }
    let _lock = masq::lock_file(lock_dir, &format!("forward-{network}.lock"))?;
    let p = compute(nf)?;
    if p.delete.is_empty() && p.add.is_empty() {
        return Ok(false);
    }
    if p.add.is_empty() {
        nf.delete_rules(&p.delete)?;
        return Ok(true);
    }
    let nft = netfilter::find_nft().ok_or_else(nft_missing)?;
    netfilter::run_nft(
        &nft,
        &script(&p),
        &format!("forward rules of network {network}"),
    )?;
    Ok(true)
}

fn nft_missing() -> Error {
    netfilter::nft_missing(
        "accepting pod traffic in the host's forward chains",
        "forwardRules",
    )
}

/// What [`ensure`] or [`remove`] would do to a node, judged without changing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    /// The node holds exactly the wanted rules.
    Nothing,
    /// Only rules to delete (netlink; no `nft` needed).
    Delete,
    /// Rules to add (one `nft -f -` transaction).
    Write,
}

/// What [`ensure`] (`space` given, with `grow` false) or [`remove`] (`space` None) would do
/// for `network` on a node whose chains are `chains` (from one chain dump the caller made):
/// one rule dump per table holding a host forward chain, none on a node without such chains.
pub fn needed(
    nf: &mut Netfilter,
    network: &str,
    chains: &[NfChain],
    space: Option<&[IpNetwork]>,
) -> Result<Needed> {
    masq::table_name(network)?;
    let seen = read_rules(nf, network, chains.to_vec())?;
    let p = match space {
        Some(space) => plan(&seen, &wanted(network, space, &host_chains(&seen.chains))?),
        None => Plan {
            delete: seen.ours,
            add: Vec::new(),
        },
    };
    Ok(if !p.add.is_empty() {
        Needed::Write
    } else if !p.delete.is_empty() {
        Needed::Delete
    } else {
        Needed::Nothing
    })
}

/// CHECK: the host's forward chains hold exactly the rules [`ensure`] would leave; code 105
/// naming the chains that differ.
pub fn check(nf: &mut Netfilter, network: &str, space: &[IpNetwork], grow: bool) -> Result<()> {
    let seen = read(nf, network)?;
    let mut space = space.to_vec();
    if grow {
        space.extend(held(&seen.ours));
    }
    let want = wanted(network, &space, &host_chains(&seen.chains))?;
    let p = plan(&seen, &want);
    if p.delete.is_empty() && p.add.is_empty() {
        return Ok(());
    }
    let chains: BTreeSet<String> = p
        .delete
        .iter()
        .map(|r| format!("{} {} {}", r.family.name(), r.table, r.chain))
        .chain(
            p.add
                .iter()
                .map(|w| format!("{} {} {}", w.family.name(), w.table, w.chain)),
        )
        .collect();
    Err(Error::new(
        code::CHECK_FAILED,
        format!(
            "forward rules of network {network} differ in chain(s) {}",
            chains.into_iter().collect::<Vec<_>>().join(", ")
        ),
    ))
}

/// Deletes every forward rule of `network` from every table (netlink only, one batch);
/// returns how many there were.
pub fn remove(nf: &mut Netfilter, network: &str) -> Result<usize> {
    masq::table_name(network)?;
    let seen = read(nf, network)?;
    nf.delete_rules(&seen.ours)?;
    Ok(seen.ours.len())
}

/// STATUS: what [`ensure`] needs is there, nothing is created: `nft` is found (code 106
/// otherwise) and nf_tables answers a chain dump (code 100 otherwise).
pub fn available(nf: &mut Netfilter) -> Result<PathBuf> {
    let nft = netfilter::find_nft().ok_or_else(nft_missing)?;
    nf.chains(None)?;
    Ok(nft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn chain(family: NfFamily, table: &str, name: &str, hook: u32) -> NfChain {
        NfChain {
            family,
            table: table.into(),
            name: name.into(),
            hook: Some(hook),
            policy: Some(netfilter::NF_DROP),
            kind: Some("filter".into()),
        }
    }

    #[test]
    fn rules_per_chain_family_and_direction() {
        let all = [
            chain(NfFamily::Ip, "filter", "FORWARD", NF_INET_FORWARD),
            chain(NfFamily::Ip6, "filter", "FORWARD", NF_INET_FORWARD),
            chain(NfFamily::Inet, "filter", "forward", NF_INET_FORWARD),
            chain(NfFamily::Ip, "filter", "INPUT", 1),
            chain(NfFamily::Inet, "twill-masq-x", "fwd", NF_INET_FORWARD),
            chain(NfFamily::Inet, "weird table", "forward", NF_INET_FORWARD),
        ];
        let chains = host_chains(&all);
        assert_eq!(chains.len(), 3);
        let w = wanted(
            "pods",
            &[
                net("10.244.0.0/16"),
                net("10.244.1.0/24"),
                net("fd00:10::/56"),
            ],
            &chains,
        )
        .unwrap();
        let got: Vec<String> = w
            .iter()
            .map(|w| format!("{} {} {}: {}", w.family.name(), w.table, w.chain, w.rule))
            .collect();
        assert_eq!(
            got,
            vec![
                "ip filter FORWARD: ip saddr 10.244.0.0/16 accept",
                "ip filter FORWARD: ip daddr 10.244.0.0/16 accept",
                "ip6 filter FORWARD: ip6 saddr fd00:10::/56 accept",
                "ip6 filter FORWARD: ip6 daddr fd00:10::/56 accept",
                "inet filter forward: ip saddr 10.244.0.0/16 accept",
                "inet filter forward: ip daddr 10.244.0.0/16 accept",
                "inet filter forward: ip6 saddr fd00:10::/56 accept",
                "inet filter forward: ip6 daddr fd00:10::/56 accept",
            ]
        );
        assert!(w[0].comment.starts_with("twill forward pods "));
        assert!(w[0].comment.ends_with(" 10.244.0.0/16"));
        assert_eq!(wanted("a b", &[], &chains).unwrap_err().code, 7);
        // A long network name still fits nft's 128-byte comment limit.
        let long = "n".repeat(200);
        let w = wanted(&long, &[net("fd00:1234:5678:9abc::/64")], &chains).unwrap();
        assert!(w[0].comment.len() <= 128, "{}", w[0].comment);
        assert!(w[0].comment.starts_with(&prefix(&long)));
        assert_ne!(prefix(&long), prefix(&"n".repeat(199)));
    }

    #[test]
    fn plan_touches_only_chains_that_differ() {
        let all = [
            chain(NfFamily::Ip, "filter", "FORWARD", NF_INET_FORWARD),
            chain(NfFamily::Ip6, "filter", "FORWARD", NF_INET_FORWARD),
        ];
        let chains = host_chains(&all);
        let want = wanted("n", &[net("10.1.0.0/16"), net("fd01::/48")], &chains).unwrap();
        let rule = |i: u64, w: &Wanted| NfRule {
            family: w.family,
            table: w.table.clone(),
            chain: w.chain.clone(),
            handle: i,
            comment: Some(w.comment.clone()),
        };
        // ip in sync, ip6 missing one rule, plus a stale rule in a chain no longer wanted.
        let mut ours: Vec<NfRule> = vec![rule(1, &want[0]), rule(2, &want[1]), rule(3, &want[2])];
        ours.push(NfRule {
            family: NfFamily::Inet,
            table: "old".into(),
            chain: "fwd".into(),
            handle: 9,
            comment: Some("twill forward n 0000000000000000 10.9.0.0/16".into()),
        });
        let seen = Seen {
            chains: all.to_vec(),
            ours,
        };
        let p = plan(&seen, &want);
        assert_eq!(
            p.delete.iter().map(|r| r.handle).collect::<Vec<_>>(),
            vec![9, 3]
        );
        assert_eq!(p.add, want[2..].to_vec());
        let s = script(&p);
        assert!(
            s.starts_with(
                "delete rule inet old fwd handle 9\ndelete rule ip6 filter FORWARD handle 3\n"
            ),
            "{s}"
        );
        assert!(
            s.contains(
                "add rule ip6 filter FORWARD ip6 saddr fd01::/48 accept comment \"twill forward n "
            ),
            "{s}"
        );
        assert_eq!(held(&seen.ours).len(), 4);
    }
}
