//! ipMasq: one nftables rule set per network, decided by the cluster, created once and checked
//! cheaply.
//!
//! Each network gets its own table, `table inet twill-masq-<network>`, holding one nat chain
//! hooked at postrouting with one rule per masqueraded source (the network's configured pod
//! ranges):
//!
//! ```text
//! ip saddr <source> ip daddr != { <cluster space>, <sources>, 224.0.0.0/4 } masquerade fully-random
//! ip6 saddr <source> ip6 daddr != { ..., ff00::/8 } masquerade fully-random
//! ```
//!
//! The cluster space (the caller's union of the flannel network, every podCIDR of the cluster
//! view and `clusterNetworks`) is never masqueraded: pod-to-pod traffic keeps its addresses.
//!
//! Ownership and drift: the table is twill's alone. Its comment is `twill masq <fingerprint>`
//! (a hash of the whole rule set) and every rule's comment is `twill masq <fingerprint>
//! <source>`. [`ensure`] asks the kernel for the table over NETLINK_NETFILTER: the table's
//! comment equal to the fingerprint → done (one request). Table comments need Linux 5.10 (and
//! nft 0.9.7); on older kernels the comment is silently dropped, so a table without one is
//! judged by its rules' comments instead (one more request, a dump of the table's rules); on
//! older nft the table is written without a comment (see [`Ruleset::legacy_script`]).
//! Kernels before 5.2 have no nat in the inet family: there the same rules go into an `ip` and
//! an `ip6` table of the same name ([`Ruleset::split_script`]), found and judged the same way.
//! Every script clears both layouts first, so a node holds exactly one.
//! Otherwise it runs `nft -f -` with one atomic transaction (add table; delete table; define
//! table, chain and rules), so concurrent creators converge on one rule set and a changed
//! configuration replaces the old one.
//!
//! Sources an IPAM does not declare (an exec'd IPAM plugin): [`ensure_growing`] never narrows.
//! The sources become the union of the pod's subnets and those the table already holds (read
//! back from the rules' comments), and the read-modify-write runs under a lock file, so
//! concurrent ADDs in two new subnets both end up masqueraded. A source stays until the network's
//! table is rebuilt from a declared range set or removed.
//!
//! Every function works over the caller's [`Netfilter`] socket (one per plugin run), in the
//! network namespace that socket was opened in; `nft` runs in the calling thread's.

use crate::error::{Error, Result, code};
use crate::flannel::subnet_file::network_of;
use crate::hash::fnv1a64;
use crate::kernel::netlink::netfilter::{self, Netfilter, NfChain, NfFamily, NfRule, NfTable};
use ipnetwork::IpNetwork;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// Every masquerade table is named this prefix + the network name.
pub const TABLE_PREFIX: &str = "twill-masq-";
/// The chain inside the table.
pub const CHAIN: &str = "postrouting";
/// The comment prefix of the table and of every rule.
pub const MARK: &str = "twill masq ";

/// The rule set of one network, rendered (pure; see [`ruleset`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// Table name (`twill-masq-<network>`), family `inet`.
    pub table: String,
    /// The table's comment: `twill masq <fingerprint hex>`.
    pub comment: String,
    /// The masqueraded sources, minimal and sorted.
    pub sources: Vec<IpNetwork>,
    /// The rules (without comment), one per source.
    pub rules: Vec<String>,
    /// The comment of each rule: `twill masq <fingerprint hex> <source>`.
    pub rule_comments: Vec<String>,
    /// The atomic `nft -f` script that (re)creates the table, table comment included.
    pub script: String,
    /// The same without the table comment, for nft before 0.9.7.
    pub legacy_script: String,
    /// The same rules in one `ip` and one `ip6` table of the same name, for kernels before
    /// 5.2 (no nat in the inet family), without table comments.
    pub split_script: String,
}

/// What the kernel holds compared with a [`Ruleset`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Drift {
    /// The table holds exactly this rule set.
    None,
    /// The table does not exist.
    Missing,
    /// The table exists with something else; the text says what.
    Differs(String),
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
            "invalid network name \"{network}\" for ipMasq: use letters, digits, '_', '.', '-'"
        )));
    }
    Ok(format!("{TABLE_PREFIX}{network}"))
}

/// Networks reduced to their network address, those inside another dropped, sorted.
pub fn minimal(nets: impl IntoIterator<Item = IpNetwork>) -> Vec<IpNetwork> {
    let mut all: Vec<IpNetwork> = nets.into_iter().map(network_of).collect();
    all.sort_by_key(|n| n.prefix());
    let mut kept: Vec<IpNetwork> = Vec::new();
    for n in all {
        if !kept.iter().any(|k| {
            k.is_ipv4() == n.is_ipv4() && k.prefix() <= n.prefix() && k.contains(n.network())
        }) {
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

fn multicast(v6: bool) -> Result<IpNetwork> {
    let (addr, len) = if v6 {
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0).into(), 8)
    } else {
        (Ipv4Addr::new(224, 0, 0, 0).into(), 4)
    };
    IpNetwork::new(addr, len)
        .map_err(|e| Error::new(code::INTERNAL, "multicast prefix").with_details(e))
}

/// Renders the rule set: masquerade from each of `sources` to anything outside the
/// `cluster` space, the sources themselves and multicast. No source is code 7.
pub fn ruleset(network: &str, sources: &[IpNetwork], cluster: &[IpNetwork]) -> Result<Ruleset> {
    let table = table_name(network)?;
    let sources = minimal(sources.iter().copied());
    if sources.is_empty() {
        return Err(Error::invalid_config(format!(
            "ipMasq for network \"{network}\" needs at least one pod subnet"
        )));
    }
    let mut rules = Vec::new();
    for v6 in [false, true] {
        let fam = |n: &&IpNetwork| n.is_ipv6() == v6;
        let own: Vec<IpNetwork> = sources.iter().filter(fam).copied().collect();
        let excluded = minimal(
            cluster
                .iter()
                .filter(fam)
                .chain(own.iter())
                .copied()
                .chain([multicast(v6)?]),
        );
        let proto = if v6 { "ip6" } else { "ip" };
        for src in &own {
            rules.push(format!(
                "{proto} saddr {src} {proto} daddr != {} masquerade fully-random",
                set_of(&excluded)
            ));
        }
    }
    let fp = fnv1a64(format!("twill-masq 2\n{table}\n{}\n", rules.join("\n")).as_bytes());
    let comment = format!("{MARK}{fp:016x}");
    let rule_comments: Vec<String> = sources.iter().map(|s| format!("{comment} {s}")).collect();
    // Every script first clears both layouts (add then delete: no error when absent), so the
    // node holds exactly one. Priority 100 is srcnat (numeric for nft before 0.9.1).
    let mut clear = String::new();
    for fam in ["inet", "ip", "ip6"] {
        clear.push_str(&format!(
            "table {fam} {table} {{}}\ndelete table {fam} {table}\n"
        ));
    }
    let define = |fam: &str, table_comment: bool, v6: Option<bool>| {
        let mut s = format!("table {fam} {table} {{\n");
        if table_comment {
            s.push_str(&format!("\tcomment \"{comment}\"\n"));
        }
        s.push_str(&format!(
            "\tchain {CHAIN} {{\n\t\ttype nat hook postrouting priority 100; policy accept;\n"
        ));
        for ((r, c), src) in rules.iter().zip(&rule_comments).zip(&sources) {
            if v6.is_none_or(|v6| src.is_ipv6() == v6) {
                s.push_str(&format!("\t\t{r} comment \"{c}\"\n"));
            }
        }
        s.push_str("\t}\n}\n");
        s
    };
    let mut split_script = clear.clone();
    if sources.iter().any(IpNetwork::is_ipv4) {
        split_script.push_str(&define("ip", false, Some(false)));
    }
    if sources.iter().any(IpNetwork::is_ipv6) {
        split_script.push_str(&define("ip6", false, Some(true)));
    }
    Ok(Ruleset {
        script: format!("{clear}{}", define("inet", true, None)),
        legacy_script: format!("{clear}{}", define("inet", false, None)),
        split_script,
        table,
        comment,
        sources,
        rules,
        rule_comments,
    })
}

impl Ruleset {
    /// The families of the split layout this rule set needs (`ip` and/or `ip6`).
    fn split_families(&self) -> Vec<NfFamily> {
        let mut out = Vec::new();
        if self.sources.iter().any(IpNetwork::is_ipv4) {
            out.push(NfFamily::Ip);
        }
        if self.sources.iter().any(IpNetwork::is_ipv6) {
            out.push(NfFamily::Ip6);
        }
        out
    }
}

/// Compares the kernel's table(s) with `rs`: the inet table, else (kernels before 5.2) the
/// `ip`/`ip6` pair. `thorough` also reads the rules when the table comments match (CHECK);
/// otherwise a matching table comment is trusted (one request).
fn drift(nf: &mut Netfilter, rs: &Ruleset, thorough: bool) -> Result<Drift> {
    if let Some(t) = nf.table(NfFamily::Inet, &rs.table)? {
        return judge(nf, rs, &[t], thorough);
    }
    let mut tables = Vec::new();
    for fam in rs.split_families() {
        match nf.table(fam, &rs.table)? {
            Some(t) => tables.push(t),
            None => return Ok(Drift::Missing),
        }
    }
    judge(nf, rs, &tables, thorough)
}

fn judge(nf: &mut Netfilter, rs: &Ruleset, tables: &[NfTable], thorough: bool) -> Result<Drift> {
    for t in tables {
        if let Some(c) = t.comment.as_deref().filter(|c| *c != rs.comment) {
            return Ok(Drift::Differs(format!(
                "table {} {} holds another rule set (\"{c}\", expected \"{}\")",
                t.family.name(),
                rs.table,
                rs.comment
            )));
        }
    }
    if !thorough
        && tables
            .iter()
            .all(|t| t.comment.as_deref() == Some(rs.comment.as_str()))
    {
        return Ok(Drift::None);
    }
    // Thorough, or no table comment (kernel before 5.10, nft before 0.9.7): the rules'
    // comments decide.
    let mut rules = Vec::new();
    for t in tables {
        rules.extend(nf.rules(t.family, &rs.table)?);
    }
    let got: Vec<Option<&str>> = rules
        .iter()
        .map(|r| (r.chain == CHAIN).then_some(r.comment.as_deref()).flatten())
        .collect();
    let want: Vec<Option<&str>> = rs.rule_comments.iter().map(|c| Some(c.as_str())).collect();
    if got == want {
        return Ok(Drift::None);
    }
    let good = got
        .iter()
        .filter(|c| c.is_some_and(|c| c.starts_with(&rs.comment)))
        .count();
    let names: Vec<String> = tables
        .iter()
        .map(|t| format!("table {} {}", t.family.name(), rs.table))
        .collect();
    Ok(Drift::Differs(format!(
        "{}: expected {} twill rules in chain {CHAIN}, found {good} ({} in total)",
        names.join(" + "),
        want.len(),
        rules.len()
    )))
}

/// Makes sure the network's masquerade table holds exactly the rule set of `sources` and
/// `cluster`; returns whether it had to be written. Cost when it does: one NETLINK_NETFILTER
/// request (a rule dump more on kernels before 5.10, a table lookup per family more before
/// 5.2). Otherwise one `nft -f -` transaction. `nft` missing or failing is code 106; a
/// netlink failure is code 100.
pub fn ensure(
    nf: &mut Netfilter,
    network: &str,
    sources: &[IpNetwork],
    cluster: &[IpNetwork],
) -> Result<bool> {
    let rs = ruleset(network, sources, cluster)?;
    if drift(nf, &rs, false)? == Drift::None {
        return Ok(false);
    }
    write(&rs)?;
    Ok(true)
}

/// [`ensure`] for sources an IPAM does not declare: the sources are `pod_subnets` plus those
/// the table already holds, never fewer. The fast path (nothing new) is one rule dump; a change
/// is read again and written under the lock file `masq-<network>.lock` in `lock_dir` (created
/// if needed), so concurrent ADDs never drop each other's sources.
pub fn ensure_growing(
    nf: &mut Netfilter,
    network: &str,
    pod_subnets: &[IpNetwork],
    cluster: &[IpNetwork],
    lock_dir: &Path,
) -> Result<bool> {
    let table = table_name(network)?;
    let plan = |nf: &mut Netfilter| -> Result<(Ruleset, Drift)> {
        let held = held_sources(nf, &table)?;
        let rs = ruleset(network, &[held, pod_subnets.to_vec()].concat(), cluster)?;
        let d = drift(nf, &rs, false)?;
        Ok((rs, d))
    };
    if plan(nf)?.1 == Drift::None {
        return Ok(false);
    }
    let _lock = lock_file(lock_dir, &format!("masq-{network}.lock"))?;
    let (rs, d) = plan(nf)?;
    if d == Drift::None {
        return Ok(false);
    }
    write(&rs)?;
    Ok(true)
}

/// Takes the exclusive lock on `dir/name` (both created if needed), held until the file is
/// dropped: serializes the read-modify-write slow paths of concurrent plugin runs.
pub(crate) fn lock_file(dir: &Path, name: &str) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let path = dir.join(name);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("open lock file {}", path.display()), e))?;
    lock.lock()
        .map_err(|e| Error::io(format!("lock {}", path.display()), e))?;
    Ok(lock)
}

/// The sources the table's rules name in their comments (empty when there is no table): the
/// inet table's, else those of the `ip`/`ip6` pair.
fn held_sources(nf: &mut Netfilter, table: &str) -> Result<Vec<IpNetwork>> {
    let mut rules = nf.rules(NfFamily::Inet, table)?;
    if rules.is_empty() {
        rules.extend(nf.rules(NfFamily::Ip, table)?);
        rules.extend(nf.rules(NfFamily::Ip6, table)?);
    }
    Ok(rules.iter().filter_map(source_of).collect())
}

fn source_of(r: &NfRule) -> Option<IpNetwork> {
    let rest = r.comment.as_deref()?.strip_prefix(MARK)?;
    rest.split(' ').nth(1)?.parse().ok()
}

/// The sources held by the network's masquerade table, read from its rules (one dump).
pub fn sources(nf: &mut Netfilter, network: &str) -> Result<Vec<IpNetwork>> {
    let table = table_name(network)?;
    held_sources(nf, &table)
}

/// Recreates the table unconditionally (one `nft -f -` transaction), e.g. after [`check`]
/// found it tampered with: [`ensure`] trusts a matching table comment.
pub fn rebuild(network: &str, sources: &[IpNetwork], cluster: &[IpNetwork]) -> Result<()> {
    write(&ruleset(network, sources, cluster)?)
}

fn write(rs: &Ruleset) -> Result<()> {
    let Some(nft) = netfilter::find_nft() else {
        return Err(netfilter::nft_missing("ipMasq", "ipMasq"));
    };
    write_with(&nft, rs)
}

/// Writes `rs` with the `nft` at `nft`: an nft that refuses the table comment (before
/// 0.9.7) gets the legacy script, a kernel without inet nat (before 5.2) the split one; the
/// first error is reported when all fail.
fn write_with(nft: &Path, rs: &Ruleset) -> Result<()> {
    let what = format!("table inet {}", rs.table);
    let Err(first) = netfilter::run_nft(nft, &rs.script, &what) else {
        return Ok(());
    };
    for fallback in [&rs.legacy_script, &rs.split_script] {
        if netfilter::run_nft(nft, fallback, &what).is_ok() {
            return Ok(());
        }
    }
    Err(first)
}

/// CHECK: the table holds exactly this rule set (table comment, when the kernel keeps one, and
/// every rule's comment). Anything else is code 105 saying what differs.
pub fn check(
    nf: &mut Netfilter,
    network: &str,
    sources: &[IpNetwork],
    cluster: &[IpNetwork],
) -> Result<()> {
    let rs = ruleset(network, sources, cluster)?;
    match drift(nf, &rs, true)? {
        Drift::None => Ok(()),
        Drift::Missing => Err(Error::new(
            code::CHECK_FAILED,
            format!("masquerade table inet {} does not exist", rs.table),
        )),
        Drift::Differs(what) => Err(Error::new(code::CHECK_FAILED, format!("masquerade {what}"))),
    }
}

/// The network's masquerade tables present: the inet one, or the `ip`/`ip6` pair (one dump).
fn present(nf: &mut Netfilter, table: &str) -> Result<Vec<NfFamily>> {
    Ok(nf
        .tables()?
        .into_iter()
        .filter(|t| t.name == table)
        .map(|t| t.family)
        .collect())
}

/// The families of the network's masquerade tables among `chains` (from one chain dump): a
/// table twill wrote always holds its chain, so this is every table [`remove`] would delete,
/// except one emptied by hand (which masquerades nothing).
pub fn tables_in(chains: &[NfChain], network: &str) -> Result<Vec<NfFamily>> {
    let table = table_name(network)?;
    let mut out: Vec<NfFamily> = Vec::new();
    for c in chains.iter().filter(|c| c.table == table) {
        if !out.contains(&c.family) {
            out.push(c.family);
        }
    }
    Ok(out)
}

/// Whether the network's masquerade table holds exactly the rule set of `sources` and
/// `cluster`, as [`ensure`] judges it, on a node whose chains are `chains` (from one chain
/// dump): no table chain there is no table (nothing asked); otherwise one table request.
pub fn in_sync(
    nf: &mut Netfilter,
    chains: &[NfChain],
    network: &str,
    sources: &[IpNetwork],
    cluster: &[IpNetwork],
) -> Result<bool> {
    if tables_in(chains, network)?.is_empty() {
        return Ok(false);
    }
    let rs = ruleset(network, sources, cluster)?;
    Ok(drift(nf, &rs, false)? == Drift::None)
}

/// Deletes the network's masquerade table(s) over netlink, no `nft` needed (one request when
/// there is none); returns whether there was one.
pub fn remove(nf: &mut Netfilter, network: &str) -> Result<bool> {
    let table = table_name(network)?;
    let families = present(nf, &table)?;
    for fam in &families {
        nf.delete_table(*fam, &table)?;
    }
    Ok(!families.is_empty())
}

/// True when the network has a masquerade table (one netlink request).
pub fn exists(nf: &mut Netfilter, network: &str) -> Result<bool> {
    let table = table_name(network)?;
    Ok(!present(nf, &table)?.is_empty())
}

/// STATUS: what [`ensure`] needs is there, nothing is created: `nft` is found (code 106
/// otherwise) and nf_tables answers a lookup of the network's table (code 100 otherwise).
pub fn available(nf: &mut Netfilter, network: &str) -> Result<PathBuf> {
    let table = table_name(network)?;
    let nft = netfilter::find_nft().ok_or_else(|| netfilter::nft_missing("ipMasq", "ipMasq"))?;
    nf.table(NfFamily::Inet, &table)?;
    Ok(nft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn ruleset_dual_stack_one_rule_per_source() {
        let rs = ruleset(
            "cbr0",
            &[
                net("10.244.1.1/24"),
                net("fd10:0:0:1::/64"),
                net("10.245.0.0/24"),
            ],
            &[net("10.244.0.0/16"), net("fd10::/48")],
        )
        .unwrap();
        assert_eq!(rs.table, "twill-masq-cbr0");
        assert_eq!(
            rs.rules,
            vec![
                "ip saddr 10.244.1.0/24 ip daddr != { 10.244.0.0/16, 10.245.0.0/24, \
                 224.0.0.0/4 } masquerade fully-random",
                "ip saddr 10.245.0.0/24 ip daddr != { 10.244.0.0/16, 10.245.0.0/24, \
                 224.0.0.0/4 } masquerade fully-random",
                "ip6 saddr fd10:0:0:1::/64 ip6 daddr != { fd10::/48, ff00::/8 } \
                 masquerade fully-random",
            ]
        );
        assert!(
            rs.comment.starts_with("twill masq ") && rs.comment.len() == 27,
            "{}",
            rs.comment
        );
        assert_eq!(rs.rule_comments[1], format!("{} 10.245.0.0/24", rs.comment));
        assert!(
            rs.script
                .starts_with("table inet twill-masq-cbr0 {}\ndelete table inet twill-masq-cbr0\n")
        );
        assert!(rs.script.contains("delete table ip twill-masq-cbr0\n"));
        assert!(rs.script.contains("delete table ip6 twill-masq-cbr0\n"));
        assert_eq!(rs.script.matches(&rs.comment).count(), 4);
        assert_eq!(rs.legacy_script.matches(&rs.comment).count(), 3);
        assert!(
            !rs.legacy_script
                .contains(&format!("comment \"{}\"\n", rs.comment))
        );
    }

    #[test]
    fn fingerprint_follows_content() {
        let a = ruleset("n", &[net("10.1.0.0/24")], &[net("10.0.0.0/8")]).unwrap();
        let b = ruleset("n", &[net("10.1.0.0/24")], &[net("10.0.0.0/8")]).unwrap();
        let c = ruleset("n", &[net("10.1.0.0/24")], &[net("10.0.0.0/9")]).unwrap();
        let d = ruleset("m", &[net("10.1.0.0/24")], &[net("10.0.0.0/8")]).unwrap();
        let e = ruleset("n", &[net("10.1.0.0/24"), net("10.2.0.0/24")], &[]).unwrap();
        assert_eq!(a, b);
        for other in [&c, &d, &e] {
            assert_ne!(a.comment, other.comment);
        }
    }

    #[test]
    fn bad_input() {
        assert_eq!(ruleset("n", &[], &[]).unwrap_err().code, 7);
        for bad in ["", "../x", "a b", "-x", "a;b", "a\"b"] {
            let e = table_name(bad).unwrap_err();
            assert_eq!(e.code, 7, "{bad:?}");
            assert!(!e.msg.contains("Some("), "{e}");
        }
    }

    #[test]
    fn held_sources_come_from_twill_rule_comments_only() {
        let rule = |c: Option<&str>| NfRule {
            family: NfFamily::Inet,
            table: "t".into(),
            chain: CHAIN.into(),
            handle: 1,
            comment: c.map(str::to_string),
        };
        assert_eq!(
            source_of(&rule(Some("twill masq 0123456789abcdef 10.1.0.0/24"))),
            Some(net("10.1.0.0/24"))
        );
        assert_eq!(source_of(&rule(Some("twill masq 0123456789abcdef"))), None);
        assert_eq!(source_of(&rule(Some("someone 10.1.0.0/24"))), None);
        assert_eq!(source_of(&rule(None)), None);
    }

    /// An nft that refuses table comments (as nft before 0.9.7 does) gets the legacy script, a
    /// kernel without inet nat the split one; a failure of all reports the first error.
    #[test]
    fn old_nft_and_old_kernels_get_their_fallback_scripts() {
        struct Tmp(PathBuf);
        impl Drop for Tmp {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let tmp =
            Tmp(std::env::temp_dir().join(format!("twill-masq-oldnft-{}", std::process::id())));
        let dir = tmp.0.clone();
        std::fs::create_dir_all(&dir).unwrap();
        let seen = dir.join("seen");
        let fake = dir.join("nft");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nin=$(cat)\nif printf '%s' \"$in\" | grep -q '^\tcomment'; then \
                 echo 'syntax error, unexpected comment' >&2; exit 1; fi\n\
                 printf '%s' \"$in\" > {}\n",
                seen.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let rs = ruleset("n", &[net("10.1.0.0/24")], &[net("10.0.0.0/8")]).unwrap();
        write_with(&fake, &rs).unwrap();
        assert_eq!(
            std::fs::read_to_string(&seen).unwrap(),
            rs.legacy_script.trim_end()
        );
        // A kernel without inet nat: both inet scripts fail, the split one is written.
        let no_inet = dir.join("no-inet");
        std::fs::create_dir_all(&no_inet).unwrap();
        let fake2 = no_inet.join("nft");
        std::fs::write(
            &fake2,
            format!(
                "#!/bin/sh\nin=$(cat)\nif printf '%s' \"$in\" | grep -q '^table inet .* {{$'; then \
                 echo 'Could not process rule: No such file or directory' >&2; exit 1; fi\n\
                 printf '%s' \"$in\" > {}\n",
                seen.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake2, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dual = ruleset("n", &[net("10.1.0.0/24"), net("fd01::/64")], &[]).unwrap();
        write_with(&fake2, &dual).unwrap();
        assert_eq!(
            std::fs::read_to_string(&seen).unwrap(),
            dual.split_script.trim_end()
        );
        assert!(dual.split_script.contains("table ip twill-masq-n {\n"));
        assert!(dual.split_script.contains("table ip6 twill-masq-n {\n"));
        assert_eq!(dual.split_script.matches(" masquerade ").count(), 2);
        let e = write_with(Path::new("/bin/false"), &rs).unwrap_err();
        assert_eq!(e.code, code::EXTERNAL_TOOL);
    }
}
