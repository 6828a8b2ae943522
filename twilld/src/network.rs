//! One twill network as twilld keeps it: loaded with the plugins' own library code
//! (`twill::network::Network`), its data plane from the registry (`twill::node::planes`), and
//! the three things done to it: sync (reconcile peers, ensure masquerade and forward rules),
//! check (the drift, changing nothing) and forget (a network gone from the conf dir).

use ipnetwork::IpNetwork;

use serde_json::Value;
use std::path::Path;

use twill::kernel::netlink::Netlink;
use twill::kernel::netlink::netfilter::Netfilter;
use twill::network::{Need, Network, SharedKeys};

use twill::node::reconcile::{self, DataPlane, Inputs, Reconciled, Report};
use twill::node::state::StateFile;
use twill::node::{forward, masq, planes};
use twill::{Result, code};

use crate::confdir::{NetworkFile, plugin_type};

/// The keys twilld reads of any plugin: the shared ones (the plugin's own stay in `rest`; its
/// data plane reads what it needs from the raw entry).
pub type Keys = SharedKeys;

/// A network twilld keeps.
pub struct Managed {
    /// The network, loaded as its plugin's ADD loads it.
    pub net: Network<Keys>,
    /// Its data plane.
    pub plane: Box<dyn DataPlane>,
}

/// What loading a conf-dir network gave.
pub enum Loaded {
    /// A network twilld keeps.
    Managed(Box<Managed>),
    /// No plugin entry of a type with node state twilld knows (the types, in order).
    Unknown(Vec<String>),
    /// A twill network whose config cannot be used now (e.g. its subnet file is missing).
    Failed(String),
}

/// Loads `nf`: its first plugin entry whose type has a data plane.
pub fn load(nf: &NetworkFile, node: &mut Netlink) -> Loaded {
    for p in &nf.plugins {
        let ty = plugin_type(p);
        let plane = match planes::plane_for(ty, p, node) {
            Ok(Some(plane)) => plane,
            Ok(None) => continue,
            Err(e) => return Loaded::Failed(e.to_string()),
        };
        let bytes = match serde_json::to_vec(p) {
            Ok(b) => b,
            Err(e) => return Loaded::Failed(format!("cannot serialize the {ty} entry: {e}")),
        };
        return match Network::from_bytes(&bytes, Need::Required) {
            Ok(net) => Loaded::Managed(Box::new(Managed { net, plane })),
            Err(e) => Loaded::Failed(e.to_string()),
        };
    }
    Loaded::Unknown(
        nf.plugins
            .iter()
            .map(|p| plugin_type(p).to_string())
            .collect(),
    )
}

/// The twill plugin entry of `nf` (the first whose type has a data plane), as given.
pub fn twill_entry<'a>(nf: &'a NetworkFile, node: &mut Netlink) -> Option<&'a Value> {
    nf.plugins.iter().find(|p| {
        matches!(
            planes::plane_for(plugin_type(p), p, node),
            Ok(Some(_)) | Err(_)
        )
    })
}

/// What one operation on a network did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Changes applied to the node, one line each.
    pub changes: Vec<String>,
    /// Things a person should know that did not fail (skipped view entries, conflicts).
    pub warnings: Vec<String>,
    /// What failed (retried by the next round).
    pub errors: Vec<String>,
}

impl Managed {
    /// The network name.
    pub fn name(&self) -> &str {
        self.net.name()
    }

    /// Where this network's run state lives.
    pub fn run_dir(&self) -> &Path {
        self.net.keys().peers.run_dir()
    }

    /// Makes the node hold what the network wants: the data plane's objects for the cluster
    /// view (the same reconcile and lock as the plugin's ADD), then the masquerade and forward
    /// rules (written only when they drift). The plane prepares itself first
    /// ([`DataPlane::prepare`]: a tunnel plane's devices).
    pub fn sync(&mut self, node: &mut Netlink, nf: &mut Netfilter) -> Result<Outcome> {
        let mut out = Outcome::default();
        if let Some(source) = &self.net.view {
            let state = state_file(node, self.run_dir(), self.name())?;
            let own = self.net.own_ranges_with(&[]);
            self.plane.prepare(node, &own)?;
            let inputs = Inputs {
                source,
                own_ranges: &own,
                plane: self.plane.as_ref(),
            };
            if let Reconciled::Applied(r) = reconcile::reconcile(node, &state, &inputs)? {
                report_into(&r, &mut out);
            }
        }
        let drift = self.node_rules_drift(nf)?;
        if !drift.is_empty() {
            self.net.ensure_node_rules(&[])?;
            out.changes
                .extend(drift.into_iter().map(|d| format!("{d}: rewritten")));
        }
        Ok(out)
    }

    /// The drift between the network's config and the node, changing nothing: missing, stale
    /// and foreign peer objects, an unreadable view, masquerade and forward rules that differ.
    /// Skipped view entries are warnings.
    pub fn check(&self, node: &mut Netlink, nf: &mut Netfilter) -> Result<Outcome> {
        let mut out = Outcome::default();
        if let Some(source) = &self.net.view {
            let state = state_file(node, self.run_dir(), self.name())?;
            let own = self.net.own_ranges_with(&[]);
            let inputs = Inputs {
                source,
                own_ranges: &own,
                plane: self.plane.as_ref(),
            };
            let r = reconcile::verify(node, &state, &inputs)?;
            let p = &r.plan;
            out.changes
                .extend(p.apply.iter().map(|o| format!("missing {o}")));
            out.changes
                .extend(p.remove.iter().map(|o| format!("stale {o}")));
            out.changes.extend(
                p.conflicts
                    .iter()
                    .map(|o| format!("another owner's {o} where twill wants one")),
            );
            if let Some(u) = &r.unreadable {
                out.changes.push(format!("cannot compare: {u}"));
            }
            out.warnings
                .extend(r.skipped.iter().map(|s| format!("skipped view entry {s}")));
        }
        out.changes.extend(self.node_rules_drift(nf)?);
        Ok(out)
    }

    /// How the masquerade table and the forward rules differ from what the network wants
    /// (nothing when they match), judged exactly as `Network::ensure_node_rules` acts with no
    /// pod at hand: ipMasq or `forwardRules` off, any such rule left is drift; an IPAM that
    /// does not declare its ranges leaves the masquerade to the pods' ADDs.
    fn node_rules_drift(&self, nf: &mut Netfilter) -> Result<Vec<String>> {
        let net = &self.net;
        let name = net.name();
        let mut drift = Vec::new();
        let ranges = net.pod_ranges()?;
        if !net.ip_masq {
            if masq::exists(nf, name)? {
                drift.push(format!(
                    "masquerade table of network {name} present while ipMasq is off"
                ));
            }
        } else if let (false, Some(r)) = (net.l2_only, &ranges) {
            let cluster = net.cluster_networks()?;
            drift.extend(as_drift(masq::check(nf, name, r, &cluster))?);
        }
        if !net.forward_rules() {
            drift.extend(as_drift(forward::check(nf, name, &[], false))?);
        } else if !net.l2_only {
            let mut space: Vec<IpNetwork> = net.cluster_networks()?;
            let grow = ranges.is_none();
            space.extend(ranges.unwrap_or_default());
            drift.extend(as_drift(forward::check(nf, name, &space, grow))?);
        }
        Ok(drift)
    }
}

/// A CHECK answer as drift: code 105 is drift (its message), another error is a failure.
fn as_drift(r: Result<()>) -> Result<Option<String>> {
    match r {
        Ok(()) => Ok(None),
        Err(e) if e.code == code::CHECK_FAILED => Ok(Some(e.msg)),
        Err(e) => Err(e),
    }
}

/// Removes what network `name` (run state under `run_dir`) installed on the node: its peer
/// objects (never those another network claims), its masquerade table, its forward rules.
pub fn forget(
    name: &str,
    run_dir: &Path,
    node: &mut Netlink,
    nf: &mut Netfilter,
) -> Result<Outcome> {
    let mut out = Outcome::default();
    let state = state_file(node, run_dir, name)?;
    report_into(&reconcile::forget(node, &state)?, &mut out);
    if masq::remove(nf, name)? {
        out.changes.push("removed its masquerade table".into());
    }
    let n = forward::remove(nf, name)?;
    if n > 0 {
        out.changes.push(format!("removed its {n} forward rules"));
    }
    Ok(out)
}

/// The state file of `network` in the namespace of `node` (the one the plugins use); the
/// reconcile learns the namespace's nsfs identity when it writes, as the plugins' does.
pub fn state_file(node: &mut Netlink, run_dir: &Path, network: &str) -> Result<StateFile> {
    StateFile::of_key(run_dir, network, node.netns_key()?)
}

fn report_into(r: &Report, out: &mut Outcome) {
    let failed = |verb: &str, o: &String| {
        r.failures
            .iter()
            .any(|f| f.starts_with(&format!("could not {verb} {o}:")))
    };
    for o in r.plan.apply.iter().map(ToString::to_string) {
        if !failed("install", &o) {
            out.changes.push(format!("installed {o}"));
        }
    }
    for o in r.plan.remove.iter().map(ToString::to_string) {
        if !failed("remove", &o) {
            out.changes.push(format!("removed {o}"));
        }
    }
    if let Some(u) = &r.unreadable {
        out.errors
            .push(format!("{u}; keeping the node state last applied"));
    }
    out.warnings
        .extend(r.skipped.iter().map(|s| format!("skipped view entry {s}")));
    out.warnings.extend(
        r.plan
            .conflicts
            .iter()
            .map(|c| format!("left alone: another owner's {c} sits where twill wants one")),
    );
    out.errors.extend(compact(&r.failures));
}

/// Failures of one verb with one cause, more than [`SPELLED_OUT`] of them, become one line
/// (an uplink down fails every route alike); others stay as they are, in order.
fn compact(failures: &[String]) -> Vec<String> {
    let mut groups: Vec<((&str, &str), Vec<&str>)> = Vec::new();
    let mut out = Vec::new();
    for f in failures {
        let parsed = ["install", "remove"].iter().find_map(|verb| {
            let rest = f
                .strip_prefix("could not ")?
                .strip_prefix(verb)?
                .strip_prefix(' ')?;
            let (object, cause) = rest.split_once(": ")?;
            Some(((*verb, cause), object))
        });
        match parsed {
            Some((key, object)) => match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, objects)) => objects.push(object),
                None => groups.push((key, vec![object])),
            },
            None => out.push(f.clone()),
        }
    }
    for ((verb, cause), objects) in groups {
        if objects.len() <= SPELLED_OUT {
            out.extend(
                objects
                    .iter()
                    .map(|o| format!("could not {verb} {o}: {cause}")),
            );
        } else {
            out.push(format!(
                "could not {verb} {} objects ({}, and {} more): {cause}",
                objects.len(),
                objects[..SPELLED_OUT].join(", "),
                objects.len() - SPELLED_OUT
            ));
        }
    }
    out
}

/// How many objects of one kind of failure are named before they are counted.
const SPELLED_OUT: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_failures_with_one_cause_become_one_line_and_few_stay_as_they_are() {
        let mut f: Vec<String> = (0..5)
            .map(|i| {
                format!(
                    "could not install route 10.0.{i}.0/24 via 10.9.0.{i}: Network is unreachable"
                )
            })
            .collect();
        f.push("could not remove route fd00::/64 via fd99::2: Operation not permitted".into());
        f.push("something else".into());
        let got = compact(&f);
        assert_eq!(
            got,
            vec![
                "something else".to_string(),
                "could not install 5 objects (route 10.0.0.0/24 via 10.9.0.0, route 10.0.1.0/24 \
                 via 10.9.0.1, route 10.0.2.0/24 via 10.9.0.2, and 2 more): Network is unreachable"
                    .to_string(),
                "could not remove route fd00::/64 via fd99::2: Operation not permitted".to_string(),
            ]
        );
    }
}
