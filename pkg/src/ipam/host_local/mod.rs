//! host-local IPAM, in-process: a drop-in for the reference host-local plugin, same config and
//! same on-disk state (see [`store`] for the layout), so either binary can take over a node.
//!
//! Use [`HostLocal`] directly (validated config, explicit owner), or the [`add`], [`del`],
//! [`check`], [`gc`] and [`status`] functions that take the CNI command arguments and the
//! network config, as the plugins and the `host-local` binary do.
//!
//! Deviations from the reference, on purpose:
//! - ADD of an owner (container ID, ifname) that already holds an address in a range set
//!   returns that address instead of failing with "duplicate allocation", so a retried ADD is
//!   idempotent.
//! - CHECK requires a reservation of the owner in every range set (the reference is satisfied
//!   with one anywhere) and, when `prevResult` is given, that each of its addresses is a
//!   reservation of the owner (the reference ignores `prevResult`); it fails with code 105.
//! - The IPv4 network and broadcast addresses are never handed out, even when an explicit
//!   `rangeStart`/`rangeEnd` includes them.
//! - Errors carry CNI codes: 7 bad config, 101 range set exhausted, 102 requested address
//!   unavailable, 105 CHECK failed, 50 STATUS not available (the reference answers 999).
//! - DEL does not create the data directory; a missing one means nothing to release.
//! - No operation waits for the lock longer than `ipam.lockTimeout` (default 5 s; code 11
//!   naming the holder after, see [`lock`]).
//! - The first ADD after a reboot releases the reservations of earlier boots
//!   (`ipam.releaseOnReboot`, default true; see [`reboot`]).
//! - Directories it creates are 0700, files 0600; no file is opened through a symlink.
//!
//! Beyond the shared state, twill keeps a private owner index outside the data directory (see
//! [`index`]) so that ADD and DEL of an attachment do not read every reservation file. It is
//! only a hint: its answers are verified against the reservation files, and whenever it cannot
//! prove an answer complete (the directory changed behind it or was restored, the index is an
//! older copy, a file names another owner than indexed, an owner holds fewer addresses than
//! there are range sets) the operation reads every file as the reference does.

pub mod allocator;
pub mod config;
pub mod index;
pub mod lock;
pub mod reboot;
pub mod store;

pub use crate::cni::types::Attachment;
pub use config::{Config, DEFAULT_DATA_DIR, Policy, Range, RangeSet};
pub use store::Owner;

use crate::cni::args::{CniArgs, requested_ips};
use crate::cni::skeleton::CmdArgs;
use crate::cni::types::{self, CniResult, Dns, IpConfig, NetConf};
use crate::error::{Error, Result, code};
use crate::ipam::resolv::read_resolv_conf;
use allocator::Candidates;
use ipnetwork::IpNetwork;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use store::{Store, StoredOwner};

/// ADD from the CNI arguments and network config: requested addresses are taken from
/// `CNI_ARGS` `IP=`, `runtimeConfig.ips` and `args.cni.ips`.
pub fn add<P>(args: &CmdArgs, conf: &NetConf<P>) -> Result<CniResult> {
    let hl = HostLocal::from_netconf(conf)?;
    let requested = requested_ips(&CniArgs::parse(&args.args)?, conf)?;
    hl.add(&args.container_id, &args.ifname, &requested)
}

/// DEL from the CNI arguments and network config (idempotent).
pub fn del<P>(args: &CmdArgs, conf: &NetConf<P>) -> Result<()> {
    HostLocal::from_netconf(conf)?.del(&args.container_id, &args.ifname)
}

/// CHECK from the CNI arguments and network config: the attachment's reservations, and every
/// address of `prevResult` (when given) being one of them.
pub fn check<P>(args: &CmdArgs, conf: &NetConf<P>) -> Result<()> {
    let hl = HostLocal::from_netconf(conf)?;
    let expected: Vec<IpAddr> = match conf.prev_result()? {
        Some(prev) => prev.ips.iter().map(|c| c.address.ip()).collect(),
        None => Vec::new(),
    };
    hl.check(&args.container_id, &args.ifname, &expected)
}

/// GC from the network config: keeps only the reservations of `cni.dev/valid-attachments`
/// (see [`valid_attachments`]).
pub fn gc<P: Serialize>(args: &CmdArgs, conf: &NetConf<P>) -> Result<()> {
    let valid = valid_attachments(args, conf)?;
    HostLocal::from_netconf(conf)?.gc(&valid)
}

/// STATUS from the network config.
pub fn status<P>(_args: &CmdArgs, conf: &NetConf<P>) -> Result<()> {
    HostLocal::from_netconf(conf)?.status()
}

/// The attachments GC must keep: `cni.dev/valid-attachments` (or `cni.dev/attachments`) of
/// `conf`, else of the raw config in `args.stdin` (a typed `P` may drop the key). Missing in
/// both is code 7 (GC would otherwise release everything); an empty list means "none in use".
pub fn valid_attachments<P: Serialize>(
    args: &CmdArgs,
    conf: &NetConf<P>,
) -> Result<Vec<Attachment>> {
    let bytes = serde_json::to_vec(conf).map_err(|e| {
        Error::invalid_config("cannot serialize the network config").with_details(e)
    })?;
    match types::valid_attachments(&bytes) {
        Ok(valid) => Ok(valid),
        Err(e) if args.stdin.is_empty() => Err(e),
        Err(_) => types::valid_attachments(&args.stdin),
    }
}

/// host-local over a validated [`Config`].
#[derive(Debug, Clone)]
pub struct HostLocal {
    config: Config,
    policy: Policy,
    index_dir: Option<PathBuf>,
}

impl HostLocal {
    /// host-local over `config`, with the owner index in the directory named by the
    /// environment ([`index::index_dir_from_env`]).
    pub fn new(config: Config) -> Self {
        HostLocal {
            config,
            policy: Policy::default(),
            index_dir: index::index_dir_from_env(),
        }
    }

    /// The same, guarding the directory with `policy` instead of the default one.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The same, keeping the owner index in `index_dir` (`None`: no index, every operation
    /// reads all reservation files).
    pub fn with_index_dir(mut self, index_dir: Option<PathBuf>) -> Self {
        self.index_dir = index_dir;
        self
    }

    /// Parses and validates the `ipam` section (and `runtimeConfig.ipRanges`) of `conf`,
    /// including twill's [`Policy`] keys.
    pub fn from_netconf<P>(conf: &NetConf<P>) -> Result<Self> {
        let ipam = conf.ipam.as_ref().ok_or_else(|| {
            Error::invalid_config("ipam: missing; host-local needs an ipam section")
        })?;
        let config = Config::parse(
            &conf.name,
            &conf.cni_version,
            ipam,
            conf.runtime_config.as_ref(),
        )?;
        Ok(HostLocal::new(config).with_policy(Policy::parse(ipam)?))
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn open(&self, create: bool) -> Result<Option<Store>> {
        Store::open(
            &self.config.network_dir(),
            create,
            self.index_dir.as_deref(),
            self.policy.lock_timeout,
        )
    }

    /// Reserves one address per range set for `(container_id, ifname)` and returns them with
    /// their gateways, the configured routes and the DNS of `resolvConf`.
    ///
    /// Each address of `requested` must fall in a distinct range set and be free (code 102);
    /// other sets get the next free address after the set's cursor (code 101 when none is
    /// left). An owner that already holds an address in a set gets it back (idempotent ADD).
    /// On failure nothing this call reserved is left behind.
    pub fn add(&self, container_id: &str, ifname: &str, requested: &[IpAddr]) -> Result<CniResult> {
        let owner = owner(container_id, ifname)?;
        let sets = &self.config.range_sets;
        let dns = match &self.config.resolv_conf {
            Some(path) => read_resolv_conf(path)?,
            None => Dns::default(),
        };
        let wanted = self.assign_requested(requested)?;

        let store = self.open(true)?.ok_or_else(|| {
            Error::new(
                code::IO,
                format!("{} vanished", self.config.network_dir().display()),
            )
        })?;
        if self.policy.release_on_reboot
            && let Some(boot) = reboot::Boot::current()
        {
            store.release_earlier_boots(&boot)?;
        }
        // A fresh attachment (nothing indexed) is not looked for further: a file of it that the
        // index missed can only be a hand edit in place (see the module doc). Part of a set of
        // addresses is not an answer, though: the rest may be there.
        let owned = store.owned(&owner, |o| o.is_empty() || self.covers_every_set(&o.exact))?;
        let mut mine: Vec<IpAddr> = owned.exact.iter().map(|(ip, _)| *ip).collect();
        mine.sort_by_key(|ip| config::to_u128(*ip));
        let mut taken = owned.taken;

        let mut created: Vec<IpAddr> = Vec::new();
        let outcome = (|| -> Result<Vec<IpConfig>> {
            let mut ips = Vec::with_capacity(sets.len());
            let mut cursors = Vec::new();
            for (i, set) in sets.iter().enumerate() {
                let ip = if let Some(&held) = mine.iter().find(|ip| set.contains(**ip)) {
                    if let Some(w) = wanted[i].filter(|w| *w != held) {
                        return Err(Error::new(
                            code::IPAM_UNAVAILABLE_ADDRESS,
                            format!(
                                "requested IP {w}: container {} ifname {} already holds {held} \
                                 in range set {i} ({set}); DEL it first",
                                owner.id, owner.ifname
                            ),
                        ));
                    }
                    held
                } else if let Some(w) = wanted[i] {
                    if taken.contains(&w) || !store.reserve(w, &owner)? {
                        return Err(Error::new(
                            code::IPAM_UNAVAILABLE_ADDRESS,
                            format!(
                                "requested IP {w} is not available{} in range set {i} ({set})",
                                holder(&store, w)
                            ),
                        ));
                    }
                    created.push(w);
                    cursors.push((i, w));
                    w
                } else {
                    let ip = self.reserve_next(&store, i, set, &owner, &mut taken)?;
                    created.push(ip);
                    cursors.push((i, ip));
                    ip
                };
                taken.insert(ip);
                let range = set.range_for(ip).ok_or_else(|| {
                    Error::new(code::IO, format!("{ip} left range set {i} ({set})"))
                })?;
                let address = IpNetwork::new(ip, range.subnet.prefix())
                    .map_err(|e| Error::invalid_config(format!("range {range}: {e}")))?;
                ips.push(IpConfig {
                    address,
                    gateway: Some(range.gateway),
                    interface: None,
                });
            }
            for (i, ip) in cursors {
                store.set_cursor(i, ip)?;
            }
            Ok(ips)
        })();

        match outcome {
            Ok(ips) => Ok(CniResult {
                interfaces: Vec::new(),
                ips,
                routes: self.config.routes.clone(),
                dns,
            }),
            Err(e) => {
                for ip in created {
                    let _ = store.remove(&ip.to_string());
                }
                Err(e)
            }
        }
    }

    /// True when `held` has an address in every range set.
    fn covers_every_set(&self, held: &[(IpAddr, String)]) -> bool {
        self.config
            .range_sets
            .iter()
            .all(|set| held.iter().any(|(ip, _)| set.contains(*ip)))
    }

    /// Maps each requested address to its range set (no two in one set), or code 102.
    fn assign_requested(&self, requested: &[IpAddr]) -> Result<Vec<Option<IpAddr>>> {
        let sets = &self.config.range_sets;
        let mut wanted: Vec<Option<IpAddr>> = vec![None; sets.len()];
        for &ip in requested {
            let ip = ip.to_canonical();
            let Some(i) = sets.iter().position(|s| s.contains(ip)) else {
                let all: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
                return Err(Error::new(
                    code::IPAM_UNAVAILABLE_ADDRESS,
                    format!(
                        "requested IP {ip} is not in any range of network {}: {}",
                        self.config.network,
                        all.join("; ")
                    ),
                ));
            };
            if let Some(other) = wanted[i].filter(|o| *o != ip) {
                return Err(Error::new(
                    code::IPAM_UNAVAILABLE_ADDRESS,
                    format!(
                        "requested IPs {other} and {ip} both fall in range set {i} ({}); \
                         only one address per range set can be assigned",
                        sets[i]
                    ),
                ));
            }
            if let Some(r) = sets[i].range_for(ip).filter(|r| r.is_excluded(ip)) {
                let what = if ip == r.gateway {
                    "the gateway"
                } else {
                    "the network or broadcast address"
                };
                return Err(Error::new(
                    code::IPAM_UNAVAILABLE_ADDRESS,
                    format!("requested IP {ip} is {what} of subnet {}", r.subnet),
                ));
            }
            wanted[i] = Some(ip);
        }
        Ok(wanted)
    }

    /// Reserves the next free address of range set `i` after its cursor, or code 101. At the
    /// first taken candidate, the owner index (when complete) adds every reservation to
    /// `taken`, so the rest of the walk, and an exhausted set, cost no file system call per
    /// address.
    fn reserve_next(
        &self,
        store: &Store,
        i: usize,
        set: &RangeSet,
        owner: &Owner,
        taken: &mut BTreeSet<IpAddr>,
    ) -> Result<IpAddr> {
        let mut from_index = false;
        for (ip, _) in Candidates::new(set, store.cursor(i)) {
            if taken.contains(&ip) {
                continue;
            }
            if store.reserve(ip, owner)? {
                return Ok(ip);
            }
            taken.insert(ip);
            if !from_index {
                from_index = true;
                taken.extend(store.indexed_addresses().unwrap_or_default());
            }
        }
        Err(Error::new(
            code::IPAM_EXHAUSTED,
            format!(
                "no IP addresses available in range set {i} ({set}) of network {}",
                self.config.network
            ),
        ))
    }

    /// Releases every reservation of `(container_id, ifname)`; when there is none, releases the
    /// legacy (container ID only) reservations of the container, as the reference does.
    /// Idempotent: nothing reserved, or no network directory, is success.
    pub fn del(&self, container_id: &str, ifname: &str) -> Result<()> {
        let owner = owner(container_id, ifname)?;
        let Some(store) = self.open(false)? else {
            return Ok(());
        };
        // Nothing but a full set of addresses is known to be everything the owner holds.
        let owned = store.owned(&owner, |o| self.covers_every_set(&o.exact))?;
        let held = if owned.exact.is_empty() {
            &owned.legacy
        } else {
            &owned.exact
        };
        remove_all(&store, held.iter().map(|(_, name)| name.as_str()).collect())
    }

    /// Ok when `(container_id, ifname)` holds a reservation (or a legacy one of the container)
    /// in every range set, and each address of `expected` (the `prevResult` addresses) is one of
    /// its reservations; code 105 naming what is missing otherwise.
    pub fn check(&self, container_id: &str, ifname: &str, expected: &[IpAddr]) -> Result<()> {
        let owner = owner(container_id, ifname)?;
        let dir = self.config.network_dir();
        let failed = |what: String| {
            Error::new(
                code::CHECK_FAILED,
                format!(
                    "host-local: container {} ifname {} {what} (network {})",
                    owner.id, owner.ifname, self.config.network
                ),
            )
        };
        let Some(store) = self.open(false)? else {
            return Err(failed(format!(
                "holds no address: {} does not exist",
                dir.display()
            )));
        };
        let owned = store.owned(&owner, |o| {
            self.covers_every_set(&o.exact) || self.covers_every_set(&o.legacy)
        })?;
        let held: BTreeSet<IpAddr> = owned
            .exact
            .iter()
            .chain(&owned.legacy)
            .map(|(ip, _)| *ip)
            .collect();
        for (i, set) in self.config.range_sets.iter().enumerate() {
            if !held.iter().any(|ip| set.contains(*ip)) {
                return Err(failed(format!("holds no address in range set {i} ({set})")));
            }
        }
        for ip in expected.iter().map(|ip| ip.to_canonical()) {
            if !self.config.range_sets.iter().any(|s| s.contains(ip)) {
                return Err(failed(format!(
                    "has prevResult address {ip} outside every range"
                )));
            }
            if !held.contains(&ip) {
                return Err(failed(format!(
                    "has prevResult address {ip}, which is not its reservation{}",
                    holder(&store, ip)
                )));
            }
        }
        Ok(())
    }

    /// Releases every reservation whose owner is not in `valid` (a legacy reservation is kept
    /// when its container ID is), and removes left-over temporary files. The lock and cursor
    /// files are kept. A missing network directory is success.
    pub fn gc(&self, valid: &[Attachment]) -> Result<()> {
        let Some(store) = self.open(false)? else {
            return Ok(());
        };
        let listing = store.list(true)?;
        let keep: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.trim(), a.ifname.as_str()))
            .collect();
        let keep_ids: HashSet<&str> = valid.iter().map(|a| a.container_id.trim()).collect();
        let stale = listing.reservations.values().filter(|r| match &r.owner {
            None => false,
            Some(o) => match &o.ifname {
                Some(ifname) => !keep.contains(&(o.id.as_str(), ifname.as_str())),
                None => !keep_ids.contains(o.id.as_str()),
            },
        });
        let names = stale
            .map(|r| r.name.as_str())
            .chain(listing.temps.iter().map(String::as_str));
        remove_all(&store, names.collect())
    }

    /// Ok when the data directory is usable and every range set has a free address; code 50
    /// with the reason otherwise.
    pub fn status(&self) -> Result<()> {
        let dir = self.config.network_dir();
        let unusable = |e: Error| {
            Error::new(
                code::NOT_AVAILABLE,
                format!("host-local: data directory {} is not usable", dir.display()),
            )
            .with_details(e)
        };
        let store = self
            .open(true)
            .map_err(unusable)?
            .ok_or_else(|| unusable(Error::new(code::IO, "directory vanished")))?;
        nix::unistd::access(
            &dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .map_err(|e| unusable(Error::new(code::IO, "not writable").with_details(e)))?;
        let listing = store.list(false).map_err(unusable)?;
        for (i, set) in self.config.range_sets.iter().enumerate() {
            let capacity = set
                .ranges
                .iter()
                .fold(0u128, |acc, r| acc.saturating_add(r.capacity()));
            let used = count_used(&listing.reservations, set);
            if used >= capacity {
                return Err(Error::new(
                    code::NOT_AVAILABLE,
                    format!(
                        "host-local: range set {i} ({set}) of network {} is exhausted: all \
                         {capacity} addresses are reserved",
                        self.config.network
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Number of reserved addresses of `set` that count against its capacity.
fn count_used(reservations: &HashMap<IpAddr, store::Reservation>, set: &RangeSet) -> u128 {
    reservations
        .keys()
        .filter(|ip| set.range_for(**ip).is_some_and(|r| !r.is_excluded(**ip)))
        .count() as u128
}

/// " (reserved by container <id> ifname <ifname>)" for the holder of `ip`, if known.
fn holder(store: &Store, ip: IpAddr) -> String {
    match store.holder(ip) {
        Some(StoredOwner { id, ifname }) if id.is_empty() && ifname.is_none() => String::new(),
        Some(o) => match &o.ifname {
            Some(ifname) => format!(" (reserved by container {} ifname {ifname})", o.id),
            None => format!(" (reserved by container {})", o.id),
        },
        None => String::new(),
    }
}

/// Removes every named file, trying them all; the first failure is returned.
fn remove_all(store: &Store, names: Vec<&str>) -> Result<()> {
    let mut first = None;
    for name in names {
        if let Err(e) = store.remove(name) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Validates the owner key: both parts non-empty and free of control characters (the file
/// format separates them with CR LF).
fn owner<'a>(container_id: &'a str, ifname: &'a str) -> Result<Owner<'a>> {
    for (what, v) in [("CNI_CONTAINERID", container_id), ("CNI_IFNAME", ifname)] {
        if v.trim().is_empty() || v.chars().any(char::is_control) {
            return Err(Error::invalid_env(format!(
                "{what} {v:?} must be non-empty and free of control characters"
            )));
        }
    }
    Ok(Owner {
        id: container_id,
        ifname,
    })
}

#[cfg(test)]
mod tests;
