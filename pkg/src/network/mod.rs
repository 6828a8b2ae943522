//! A twill network as every data-plane plugin loads it: the keys all plugins share, IPAM
//! (configured, or derived from flannel's subnet file), the pod MAC, the MTU, and the node
//! state the network owns (the cluster view's objects through one reconcile, the masquerade
//! and the forward rules). A plugin adds only its own keys ([`PluginKeys`]) and its story.

pub mod node_rules;
pub mod space;
pub mod undo;

pub use node_rules::NodeRules;

use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cni::args::CniArgs;
use crate::cni::types::parse_netconf;
use crate::flannel::subnet_file::{self, SubnetFile};
use crate::ipam::host_local::{self, HostLocal};
use crate::kernel::netlink::netfilter::Netfilter;
use crate::kernel::netlink::{Family, MacAddr, Netlink, RouteFilter, rt_table};
use crate::kernel::netns::Netns;
use crate::node::peers::{PeersConf, ViewSource};
use crate::node::reconcile::{self, DataPlane, Inputs, Reconciled, Report};
use crate::node::state::StateFile;
use crate::node::{forward, masq};
use crate::{CmdArgs, CniResult, Error, NetConf, Result, code};
use space::{Derived, SpaceFile};

/// MTU when neither the config, the subnet file nor the node's uplink gives one.
pub const FALLBACK_MTU: u32 = 1500;

/// The keys every twill data-plane plugin reads besides the CNI ones and the cluster view's
/// ([`PeersConf`]); flatten both into the plugin's own keys, side by side (a flattened struct
/// that itself flattens would leave its keys in the plugin's `rest` too).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommonKeys {
    /// `mtu` of the pod interfaces (0 = unset: derived, see [`Network::default_mtu`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `subnetFile` (default [`subnet_file::DEFAULT_PATH`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_file: Option<PathBuf>,
    /// `dataDir` of the host-local IPAM derived from the subnet file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `clusterNetworks`: CIDRs of the cluster's own space beyond the subnet file's network and
    /// the cluster view's podCIDRs (e.g. the service range); never masqueraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_networks: Option<Vec<IpNetwork>>,
    /// `forwardRules`: accept the network's traffic in the host's forward filter chains
    /// (default true, as flannel's `--iptables-forward-rules`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_rules: Option<bool>,
}

/// The names of the CNI keys and of [`CommonKeys`], as spelled in a config.
pub const COMMON_KEY_NAMES: &[&str] = &[
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "args",
    "ipMasq",
    "ipam",
    "dns",
    "runtimeConfig",
    "prevResult",
    "mtu",
    "subnetFile",
    "dataDir",
    "clusterNetworks",
    "forwardRules",
    "peers",
    "peersFile",
    "runDir",
];

/// A plugin's own keys: they flatten [`CommonKeys`] and [`PeersConf`] in and keep every
/// unknown key in `rest`.
pub trait PluginKeys: DeserializeOwned + Serialize {
    /// The keys every plugin shares.
    fn common(&self) -> &CommonKeys;
    /// `peers` / `peersFile` / `runDir`: the cluster view and where run state lives.
    fn peers(&self) -> &PeersConf;
    /// Every key the plugin does not know, as given.
    fn rest(&self) -> &Map<String, Value>;
    /// The plugin's own key names, as spelled in a config.
    fn own_key_names() -> &'static [&'static str];
}

/// The keys of any twill plugin as a reader that is not the plugin sees them (a node daemon, a
/// data plane's registry): the shared ones; the plugin's own stay in `rest`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SharedKeys {
    /// The keys every twill plugin shares.
    #[serde(flatten)]
    pub common: CommonKeys,
    /// The cluster view and the run dir.
    #[serde(flatten)]
    pub peers: PeersConf,
    /// The plugin's own keys and any other.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl PluginKeys for SharedKeys {
    fn common(&self) -> &CommonKeys {
        &self.common
    }
    fn peers(&self) -> &PeersConf {
        &self.peers
    }
    fn rest(&self) -> &Map<String, Value> {
        &self.rest
    }
    fn own_key_names() -> &'static [&'static str] {
        &[]
    }
}

/// How much a command needs the subnet file when the config has no `ipam`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// ADD, CHECK, STATUS: a missing file is an error naming it.
    Required,
    /// DEL, GC: a missing, unreadable or malformed file is tolerated (host-local then releases
    /// by owner alone), and keys they do not use are not validated.
    Release,
}

/// A network config with every shared default and derivation applied.
#[derive(Debug, Clone)]
pub struct Network<K> {
    /// The config; `ipam` is the configured one or the one derived from the subnet file.
    pub conf: NetConf<K>,
    /// Masquerade traffic leaving the cluster.
    pub ip_masq: bool,
    /// The subnet file, when it was needed and present.
    pub subnet: Option<SubnetFile>,
    /// `"ipam": {}`: a layer-2 only network, no addresses (as the reference bridge allows).
    pub l2_only: bool,
    /// Where the cluster view comes from (`peers` / `peersFile`); None when the config has
    /// neither (no peer objects are managed then). It is read by the reconcile, under its lock.
    pub view: Option<ViewSource>,
    /// The pod ranges this network owns on the node (host-local's configured ranges): a view
    /// entry with one of them is this node.
    pub own_ranges: Vec<IpNetwork>,
    /// The pod MAC asked for (ADD): `runtimeConfig.mac`, else `args.cni.mac`, else CNI_ARGS
    /// `MAC`.
    pub pod_mac: Option<MacAddr>,
    /// Whether loading read (or looked for) the subnet file: `subnet` is then final, and the
    /// file is not read again.
    subnet_read: bool,
}

impl<K: PluginKeys> Network<K> {
    /// Parses the config from stdin and applies the shared defaults. Without `ipam`, host-local
    /// IPAM is derived from the subnet file as flannel's CNI plugin does (ranges from
    /// FLANNEL_SUBNET / FLANNEL_IPV6_SUBNET, routes to the cluster networks, plus `dataDir`).
    ///
    /// For [`Need::Required`] everything shared that can be checked before touching the node
    /// is: `mtu`, keys in the wrong case, a host-local `ipam` section, the pod MAC and where the
    /// cluster view comes from, so bad input changes nothing. The view itself is not read
    /// here: a bad or unreadable view never fails ADD (see [`Network::reconcile_peers`]).
    pub fn load(args: &CmdArgs, need: Need) -> Result<Network<K>> {
        let mut conf: NetConf<K> = parse_netconf(&args.stdin)?;
        let k = conf.plugin.common();
        if need == Need::Required {
            if let Some(mtu) = k.mtu.filter(|&m| m != 0 && !(68..=65535).contains(&m)) {
                return Err(Error::invalid_config(format!(
                    "\"mtu\": {mtu} is out of range (68-65535)"
                )));
            }
            refuse_miscased::<K>(conf.plugin.rest())?;
            refuse_relative_paths(k, conf.plugin.peers())?;
        }
        let path = subnet_path(k);
        let wants_file = conf.ipam.is_none()
            || (need == Need::Required && (k.mtu.unwrap_or(0) == 0 || conf.ip_masq.is_none()));
        let subnet = match (wants_file, need) {
            (false, _) => None,
            (true, Need::Required) => SubnetFile::read_if_present(&path)?,
            // DEL and GC release by owner without it: a missing, unreadable or malformed file
            // must not keep them from it.
            (true, Need::Release) => SubnetFile::read_if_present(&path).ok().flatten(),
        };
        if conf.ipam.is_none() {
            match &subnet {
                Some(sf) => conf.ipam = Some(subnet_file::derive_ipam(sf, k.data_dir.as_deref())),
                None if need == Need::Required => {
                    // Reports the missing file by name.
                    SubnetFile::load(&path)?;
                }
                None => {}
            }
        }
        let l2_only = conf
            .ipam
            .as_ref()
            .is_some_and(|i| i.as_object().is_some_and(Map::is_empty));
        let ip_masq = conf
            .ip_masq
            .unwrap_or_else(|| subnet.as_ref().is_some_and(|s| !s.ip_masq));
        let (pod_mac, view) = match need {
            Need::Required => (pod_mac(&conf, args)?, conf.plugin.peers().source()?),
            Need::Release => (None, None),
        };
        let mut own_ranges = Vec::new();
        if need == Need::Required
            && !l2_only
            && crate::ipam::ipam_type(&conf)? == crate::ipam::HOST_LOCAL
        {
            let hl = HostLocal::from_netconf(&conf)?;
            for set in &hl.config().range_sets {
                own_ranges.extend(set.ranges.iter().map(|r| r.subnet));
            }
        }
        Ok(Network {
            ip_masq,
            subnet_read: wants_file && (subnet.is_some() || need == Need::Required),
            subnet,
            l2_only,
            view,
            own_ranges,
            pod_mac,
            conf,
        })
    }

    /// [`Network::load`] for a config given as bytes (a conf-dir file, or a conflist's plugin
    /// entry with the list's `name` and `cniVersion`), with no CNI_ARGS: how a node daemon
    /// loads the networks whose node state it keeps.
    pub fn from_bytes(config: &[u8], need: Need) -> Result<Network<K>> {
        let args = CmdArgs {
            command: crate::Command::Add,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: String::new(),
            path: Vec::new(),
            stdin: config.to_vec(),
            cni_version: String::new(),
        };
        Network::load(&args, need)
    }

    /// The plugin's keys.
    pub fn keys(&self) -> &K {
        &self.conf.plugin
    }

    fn common(&self) -> &CommonKeys {
        self.conf.plugin.common()
    }

    /// The network name.
    pub fn name(&self) -> &str {
        &self.conf.name
    }

    /// The configured `mtu`, if set (0 counts as unset).
    pub fn configured_mtu(&self) -> Option<u32> {
        self.common().mtu.filter(|&m| m != 0)
    }

    /// The pod MTU when the plugin has no better source: `mtu`, else the subnet file's
    /// FLANNEL_MTU, else the MTU of the link of the node's default route (IPv4, then IPv6),
    /// else [`FALLBACK_MTU`]. Only the last two ask the kernel ([`uplink_mtu`]).
    pub fn default_mtu(&self, node: &mut Netlink) -> Result<u32> {
        if let Some(m) = self.configured_mtu() {
            return Ok(m);
        }
        if let Some(sf) = &self.subnet {
            return Ok(sf.mtu);
        }
        Ok(uplink_mtu(node)?.unwrap_or(FALLBACK_MTU))
    }

    /// IPAM ADD (nothing for a layer-2 only network).
    pub fn allocate(&self, args: &CmdArgs) -> Result<CniResult> {
        if self.l2_only {
            return Ok(CniResult::default());
        }
        crate::ipam::add(args, &self.conf)
    }

    /// IPAM DEL. With neither `ipam` nor a subnet file, host-local is asked to release the
    /// attachment's reservations under `dataDir` (or its default) all the same.
    pub fn release(&self, args: &CmdArgs) -> Result<()> {
        if self.l2_only {
            return Ok(());
        }
        if self.conf.ipam.is_some() {
            return crate::ipam::del(args, &self.conf);
        }
        self.bare_host_local().del(&args.container_id, &args.ifname)
    }

    /// IPAM CHECK.
    pub fn ipam_check(&self, args: &CmdArgs) -> Result<()> {
        if self.l2_only {
            return Ok(());
        }
        crate::ipam::check(args, &self.conf)
    }

    /// IPAM STATUS.
    pub fn ipam_status(&self, args: &CmdArgs) -> Result<()> {
        if self.l2_only {
            return Ok(());
        }
        crate::ipam::status(args, &self.conf)
    }

    /// IPAM GC, with the same fallback as [`Network::release`].
    pub fn ipam_gc(&self, args: &CmdArgs) -> Result<()> {
        if self.l2_only {
            return Ok(());
        }
        if self.conf.ipam.is_some() {
            return crate::ipam::gc(args, &self.conf);
        }
        let valid: Vec<host_local::Attachment> = crate::cni::types::valid_attachments(&args.stdin)?
            .into_iter()
            .map(|a| host_local::Attachment {
                container_id: a.container_id,
                ifname: a.ifname,
            })
            .collect();
        self.bare_host_local().gc(&valid)
    }

    fn bare_host_local(&self) -> HostLocal {
        HostLocal::new(host_local::Config {
            network: self.conf.name.clone(),
            cni_version: self.conf.cni_version.clone(),
            data_dir: self
                .common()
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(host_local::DEFAULT_DATA_DIR)),
            resolv_conf: None,
            routes: Vec::new(),
            range_sets: Vec::new(),
        })
    }

    /// The cluster's own space, never masqueraded: the subnet file's networks
    /// (FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK; the file is read here when loading did not need
    /// it), every podCIDR of the cluster view and `clusterNetworks`.
    pub fn cluster_networks(&self) -> Result<Vec<IpNetwork>> {
        let mut out = self.subnet_networks()?;
        // An unreadable view adds nothing here; STATUS reports it (51).
        if let Some(view) = self.view.as_ref().and_then(|v| v.read().ok()) {
            out.extend(view.peers().iter().map(|p| p.pod_cidr));
        }
        out.extend(self.common().cluster_networks.iter().flatten().copied());
        Ok(out)
    }

    /// The subnet file's networks (FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK); the file is read
    /// here when loading did not need it.
    fn subnet_networks(&self) -> Result<Vec<IpNetwork>> {
        Ok(match &self.subnet {
            Some(sf) => sf.cluster_networks(),
            None if self.subnet_read => Vec::new(),
            None => SubnetFile::read_if_present(&subnet_path(self.common()))?
                .map(|sf| sf.cluster_networks())
                .unwrap_or_default(),
        })
    }

    /// The cluster's own space as the node rules use it: [`Network::cluster_networks`]
    /// reduced to the networks no other one of them holds. Taken from the network's space
    /// file when the view file and the other inputs are those it was recorded for (the view
    /// is then not read, see [`space`]); otherwise derived. Writes nothing.
    pub fn cluster_space(&self) -> Result<Vec<IpNetwork>> {
        Ok(self.space_lookup()?.0)
    }

    /// [`Network::cluster_space`], and when it had to be derived from a view file that had
    /// settled, the record that would spare the next call the view.
    fn space_lookup(&self) -> Result<(Vec<IpNetwork>, Option<Derived>)> {
        let mut base = self.subnet_networks()?;
        base.extend(self.common().cluster_networks.iter().flatten().copied());
        let Some(source) = &self.view else {
            return Ok((space::reduce(&base, []), None));
        };
        let inputs = space::inputs_hash(&base);
        let file = SpaceFile::new(self.conf.plugin.peers().run_dir(), &self.conf.name).ok();
        // Stamped, and the time taken, before the read (as the reconcile does).
        let stamp = source.stamp();
        if let (Some(f), Some(s)) = (&file, &stamp)
            && let Some(nets) = f.read(s, inputs)
        {
            return Ok((nets, None));
        }
        let read_at = reconcile::now_ns();
        // An unreadable view adds nothing here; STATUS reports it (51).
        let Ok(view) = source.read() else {
            return Ok((space::reduce(&base, []), None));
        };
        let nets = space::reduce(&base, view.peers().iter().map(|p| p.pod_cidr));
        let derived = stamp
            .filter(|s| file.is_some() && read_at.is_some_and(|t| s.settled(t)))
            .map(|stamp| Derived {
                stamp,
                inputs,
                nets: nets.clone(),
            });
        Ok((nets, derived))
    }

    /// Records the cluster space in the network's space file unless it is there already (a
    /// view file that has not settled is not recorded). Called where a reconcile applied a
    /// view, so an ADD writes it only when it changed the node anyway, and every unchanged
    /// ADD after it makes the same calls. Only a cache: a record that cannot be written
    /// costs later calls a parse of the view, nothing else, so a failure is not reported.
    pub fn remember_space(&self) {
        if let Ok((_, Some(d))) = self.space_lookup()
            && let Ok(f) = SpaceFile::new(self.conf.plugin.peers().run_dir(), &self.conf.name)
        {
            let _ = f.write(&d);
        }
    }

    /// The network's own pod ranges: every subnet of the host-local range sets (configured,
    /// or derived from the subnet file), or None for an IPAM whose ranges twill cannot read
    /// (exec'd plugins: the masquerade then grows with the pods' subnets, never narrows).
    pub fn pod_ranges(&self) -> Result<Option<Vec<IpNetwork>>> {
        if crate::ipam::ipam_type(&self.conf)? != crate::ipam::HOST_LOCAL {
            return Ok(None);
        }
        let hl = HostLocal::from_netconf(&self.conf)?;
        Ok(Some(
            hl.config()
                .range_sets
                .iter()
                .flat_map(|set| set.ranges.iter().map(|r| r.subnet))
                .collect(),
        ))
    }

    /// `forwardRules`, default true.
    pub fn forward_rules(&self) -> bool {
        self.common().forward_rules.unwrap_or(true)
    }

    /// Makes the node's objects for the other nodes (what `plane` declares: routes,
    /// neighbours, FDB entries, devices) match the cluster view, skipping all other kernel work
    /// when the view's fingerprint is unchanged and twill's objects are all still there.
    /// Skipped entries, an unreadable view and refused objects are reported on stderr and
    /// never fail the ADD (STATUS answers for them); only a state file or kernel listing that
    /// fails is an error. No view configured: nothing.
    pub fn reconcile_peers(
        &self,
        node: &mut Netlink,
        pod_subnets: &[IpNetwork],
        plane: &dyn DataPlane,
    ) -> Result<()> {
        let Some(source) = &self.view else {
            return Ok(());
        };
        let state = self.peer_state(node)?;
        let own = self.own_ranges_with(pod_subnets);
        let inputs = Inputs {
            source,
            own_ranges: &own,
            plane,
        };
        if let Reconciled::Applied(report) = reconcile::reconcile(node, &state, &inputs)? {
            self.warn(&report.warnings());
            // The view now trusted by its stamp: the node rules' space is taken by it too.
            if state.read_head().view.is_some() && (self.ip_masq || self.forward_rules()) {
                self.remember_space();
            }
        }
        Ok(())
    }

    /// CHECK of the peer objects: drift is node state that the next ADD repairs, not a broken
    /// attachment, so it is reported on stderr and CHECK goes on.
    pub fn check_peers(
        &self,
        node: &mut Netlink,
        pod_subnets: &[IpNetwork],
        plane: &dyn DataPlane,
    ) -> Result<()> {
        if let Some(report) = self.verify_peers(node, pod_subnets, plane)? {
            let p = &report.plan;
            let mut what: Vec<String> = Vec::new();
            what.extend(p.apply.iter().map(|o| format!("missing {o}")));
            what.extend(p.remove.iter().map(|o| format!("stale {o}")));
            what.extend(p.conflicts.iter().map(|o| format!("another owner's {o}")));
            if !what.is_empty() {
                self.warn(&[format!(
                    "peer state differs from the cluster view (the next ADD repairs it): {}",
                    what.join("; ")
                )]);
            }
        }
        Ok(())
    }

    /// STATUS of the cluster view: code 51 (limited connectivity) when the view cannot be read
    /// or some of its entries cannot be used on this node, naming them and why.
    pub fn view_status(&self, node: &mut Netlink, plane: &dyn DataPlane) -> Result<()> {
        let Some(report) = self.verify_peers(node, &[], plane)? else {
            return Ok(());
        };
        if let Some(u) = report.unreadable {
            return Err(Error::new(code::LIMITED_CONNECTIVITY, u));
        }
        if report.skipped.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = report.skipped.iter().map(ToString::to_string).collect();
        let count = if list.len() == 1 {
            "1 entry".to_string()
        } else {
            format!("{} entries", list.len())
        };
        Err(Error::new(
            code::LIMITED_CONNECTIVITY,
            format!(
                "{count} of the cluster view cannot be used on this node: {}",
                list.join("; ")
            ),
        ))
    }

    fn verify_peers(
        &self,
        node: &mut Netlink,
        pod_subnets: &[IpNetwork],
        plane: &dyn DataPlane,
    ) -> Result<Option<Report>> {
        let Some(source) = &self.view else {
            return Ok(None);
        };
        let state = self.peer_state(node)?;
        let own = self.own_ranges_with(pod_subnets);
        let inputs = Inputs {
            source,
            own_ranges: &own,
            plane,
        };
        reconcile::verify(node, &state, &inputs).map(Some)
    }

    /// The configured ranges plus the pod's own subnets (an IPAM that is not host-local only
    /// tells them through its result), sorted, without duplicates.
    pub fn own_ranges_with(&self, pod_subnets: &[IpNetwork]) -> Vec<IpNetwork> {
        let mut own: Vec<IpNetwork> = self.own_ranges.iter().chain(pod_subnets).copied().collect();
        own.sort();
        own.dedup();
        own
    }

    /// Says `lines` on stderr, each prefixed with the plugin and the network.
    pub fn warn(&self, lines: &[String]) {
        for l in lines {
            eprintln!(
                "{}: network \"{}\": {l}",
                self.conf.plugin_type, self.conf.name
            );
        }
    }

    fn peer_state(&self, node: &mut Netlink) -> Result<StateFile> {
        // The nsfs identity is asked by the reconcile only when it writes the state.
        StateFile::of_key(
            self.conf.plugin.peers().run_dir(),
            &self.conf.name,
            node.netns_key()?,
        )
    }

    /// The node rules this network owns, over one netfilter socket: the masquerade
    /// ([`Network::ensure_masq`]) and the forward rules ([`Network::ensure_forward`]), each
    /// read and, when wrong, written (a node daemon's pass; ADD uses
    /// [`Network::preflight_node_rules`] and [`Network::finish_node_rules`]).
    pub fn ensure_node_rules(&self, pod_subnets: &[IpNetwork]) -> Result<()> {
        let mut nf = Netfilter::new()?;
        self.ensure_masq(&mut nf, pod_subnets)?;
        self.ensure_forward(&mut nf, pod_subnets)
    }

    /// ipMasq, decided by the config and the cluster: on, the network's table masquerades its
    /// pod ranges to anything outside the cluster space (one netfilter request when it already
    /// does); off, the network's table is removed (one request when there is none).
    /// `pod_subnets` (this pod's) are only used for an IPAM that does not declare its ranges.
    pub fn ensure_masq(&self, nf: &mut Netfilter, pod_subnets: &[IpNetwork]) -> Result<()> {
        if !self.ip_masq {
            masq::remove(nf, &self.conf.name)?;
            return Ok(());
        }
        if self.l2_only {
            return Ok(());
        }
        let cluster = self.cluster_space()?;
        match self.pod_ranges()? {
            Some(ranges) => masq::ensure(nf, &self.conf.name, &ranges, &cluster)?,
            None if pod_subnets.is_empty() => return Ok(()),
            None => {
                let run_dir = self.conf.plugin.peers().run_dir();
                masq::ensure_growing(nf, &self.conf.name, pod_subnets, &cluster, run_dir)?
            }
        };
        Ok(())
    }

    /// `forwardRules`: on, the host's forward chains accept the network's traffic from and to
    /// its cluster space and pod ranges (nothing changes when they already do); off, the
    /// network's forward rules are removed.
    pub fn ensure_forward(&self, nf: &mut Netfilter, pod_subnets: &[IpNetwork]) -> Result<()> {
        if !self.forward_rules() {
            forward::remove(nf, &self.conf.name)?;
            return Ok(());
        }
        if self.l2_only {
            return Ok(());
        }
        let (space, grow) = self.forward_space(pod_subnets)?;
        let run_dir = self.conf.plugin.peers().run_dir();
        forward::ensure(nf, &self.conf.name, &space, grow, run_dir)?;
        Ok(())
    }

    fn forward_space(&self, pod_subnets: &[IpNetwork]) -> Result<(Vec<IpNetwork>, bool)> {
        let mut space = self.cluster_space()?;
        let ranges = self.pod_ranges()?;
        let grow = ranges.is_none();
        space.extend(ranges.unwrap_or_else(|| pod_subnets.to_vec()));
        Ok((space, grow))
    }

    /// CHECK of the node's masquerade and forward rules. They are node state shared by every
    /// pod of the network, not this attachment: drift is reported on stderr (the next ADD
    /// repairs it) and never fails the CHECK.
    pub fn check_node_rules(&self, pod_subnets: &[IpNetwork]) {
        let mut nf = match Netfilter::new() {
            Ok(nf) => nf,
            Err(e) => {
                self.warn(&[format!("CHECK cannot read netfilter: {e}")]);
                return;
            }
        };
        let mut drift = Vec::new();
        if self.ip_masq && !self.l2_only {
            let res = self
                .cluster_space()
                .and_then(|cluster| match self.pod_ranges()? {
                    Some(ranges) => masq::check(&mut nf, &self.conf.name, &ranges, &cluster),
                    None => {
                        let mut sources = masq::sources(&mut nf, &self.conf.name)?;
                        sources.extend_from_slice(pod_subnets);
                        masq::check(&mut nf, &self.conf.name, &sources, &cluster)
                    }
                });
            drift.extend(res.err());
        }
        if self.forward_rules() && !self.l2_only {
            let res = self
                .forward_space(pod_subnets)
                .and_then(|(space, grow)| forward::check(&mut nf, &self.conf.name, &space, grow));
            drift.extend(res.err());
        }
        let lines: Vec<String> = drift
            .into_iter()
            .map(|e| {
                let details = if e.details.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.details)
                };
                format!(
                    "CHECK: node state drift (the next ADD repairs it): {}{details}",
                    e.msg
                )
            })
            .collect();
        self.warn(&lines);
    }

    /// STATUS of what ADD needs for ipMasq and `forwardRules`, creating nothing: `nft` is found
    /// and nf_tables answers.
    pub fn netfilter_status(&self) -> Result<()> {
        if !self.ip_masq && !self.forward_rules() {
            return Ok(());
        }
        let mut nf = Netfilter::new()?;
        if self.ip_masq {
            masq::available(&mut nf, &self.conf.name)?;
        }
        if self.forward_rules() {
            forward::available(&mut nf)?;
        }
        Ok(())
    }
}

/// The pod's netns (ADD, CHECK): code 3 when the path does not exist, 7 when it is not a
/// network namespace, 5 when it cannot be opened; code 4 without `CNI_NETNS`.
pub fn pod_netns(args: &CmdArgs) -> Result<Netns> {
    let path = args
        .netns
        .as_deref()
        .ok_or_else(|| Error::invalid_env("CNI_NETNS is required"))?;
    Netns::open_present(path)?.ok_or_else(|| {
        Error::new(
            code::UNKNOWN_CONTAINER,
            format!("network namespace {} does not exist", path.display()),
        )
    })
}

/// The MTU of the link of the node's default route (IPv4, then IPv6), if there is one: a
/// main-table unicast default route. One route lookup per family answers when it finds such
/// a route or no route at all; when it finds anything else (a more specific route covering
/// the probe address, another table, another type) one main-table dump of both families
/// decides. Then one link lookup.
pub fn uplink_mtu(node: &mut Netlink) -> Result<Option<u32>> {
    for family in [Family::V4, Family::V6] {
        match node.route_to(crate::kernel::netlink::probe_address(family))? {
            None => continue,
            Some(r) if r.dst.prefix() == 0 && r.table == rt_table::MAIN && r.kind == 1 => {
                if let Some(oif) = r.oif
                    && let Some(link) = node.link_by_index(oif)?
                {
                    return Ok(Some(link.mtu));
                }
                return uplink_mtu_by_dump(node);
            }
            Some(_) => return uplink_mtu_by_dump(node),
        }
    }
    Ok(None)
}

/// [`uplink_mtu`] from one main-table dump of both families and one link lookup.
fn uplink_mtu_by_dump(node: &mut Netlink) -> Result<Option<u32>> {
    let filter = RouteFilter {
        table: Some(rt_table::MAIN),
        ..Default::default()
    };
    let routes = node.routes(&filter)?;
    for family in [Family::V4, Family::V6] {
        let uplink = routes
            .iter()
            .find(|r| r.family() == family && r.dst.prefix() == 0 && r.kind == 1)
            .and_then(|r| r.oif);
        if let Some(oif) = uplink
            && let Some(link) = node.link_by_index(oif)?
        {
            return Ok(Some(link.mtu));
        }
    }
    Ok(None)
}

fn subnet_path(k: &CommonKeys) -> PathBuf {
    k.subnet_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(subnet_file::DEFAULT_PATH))
}

/// Refuses a relative `subnetFile`, `dataDir`, `peersFile` or `runDir` (code 7): a plugin runs
/// in whatever directory its runtime happens to be in, so a relative path names a different
/// place from one runtime to the next.
pub fn refuse_relative_paths(k: &CommonKeys, peers: &PeersConf) -> Result<()> {
    let paths = [
        ("subnetFile", k.subnet_file.as_deref()),
        ("dataDir", k.data_dir.as_deref()),
        ("peersFile", peers.peers_file.as_deref()),
        ("runDir", peers.run_dir.as_deref()),
    ];
    for (key, path) in paths {
        if let Some(p) = path.filter(|p| p.is_relative()) {
            return Err(Error::invalid_config(format!(
                "\"{key}\": {} is a relative path; give an absolute one (a plugin runs in \
                 whatever directory its runtime is in)",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Code 7 for a key spelled like a known one (shared or the plugin's) but in another case
/// (`macSpoofChk`, `isgateway`): the reference plugins' JSON decoder matches keys ignoring
/// case, twill's does not, so such a key would otherwise be ignored without a word.
pub fn refuse_miscased<K: PluginKeys>(rest: &Map<String, Value>) -> Result<()> {
    let known = COMMON_KEY_NAMES.iter().chain(K::own_key_names());
    let known: Vec<&&str> = known.collect();
    for key in rest.keys() {
        if let Some(k) = known.iter().find(|k| k.eq_ignore_ascii_case(key)) {
            return Err(Error::invalid_config(format!(
                "\"{key}\": keys are case-sensitive here; write \"{k}\""
            )));
        }
    }
    Ok(())
}

/// The pod MAC asked for: `runtimeConfig.mac`, else `args.cni.mac`, else CNI_ARGS `MAC`.
/// Code 7 when it is not a MAC address.
fn pod_mac<K>(conf: &NetConf<K>, args: &CmdArgs) -> Result<Option<MacAddr>> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let runtime = text(conf.runtime_config.as_ref().and_then(|r| r.get("mac")));
    let cni = text(
        conf.args
            .as_ref()
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("mac")),
    );
    let env = CniArgs::parse(&args.args)?.get("MAC").map(str::to_owned);
    match runtime.or(cni).or(env).filter(|m| !m.is_empty()) {
        None => Ok(None),
        Some(m) => m
            .parse::<MacAddr>()
            .map(Some)
            .map_err(|e| Error::invalid_config(format!("pod MAC: {e}"))),
    }
}

/// The pod subnets of `ips` (each address reduced to its network), in order, without
/// duplicates.
pub fn subnets_of<'a>(ips: impl IntoIterator<Item = &'a IpNetwork>) -> Vec<IpNetwork> {
    let mut out: Vec<IpNetwork> = Vec::new();
    for a in ips {
        let n = IpNetwork::new(a.network(), a.prefix()).unwrap_or(*a);
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    struct TestKeys {
        #[serde(default)]
        own: Option<u32>,
        #[serde(flatten)]
        common: CommonKeys,
        #[serde(flatten)]
        peers: PeersConf,
        #[serde(flatten)]
        rest: Map<String, Value>,
    }

    impl PluginKeys for TestKeys {
        fn common(&self) -> &CommonKeys {
            &self.common
        }
        fn peers(&self) -> &PeersConf {
            &self.peers
        }
        fn rest(&self) -> &Map<String, Value> {
            &self.rest
        }
        fn own_key_names() -> &'static [&'static str] {
            &["own"]
        }
    }

    #[test]
    fn shared_keys_land_in_their_structs_and_only_unknown_ones_in_rest() {
        let conf: NetConf<TestKeys> = serde_json::from_value(json!({
            "cniVersion": "1.1.0", "name": "n", "type": "t", "own": 3, "mtu": 1400,
            "subnetFile": "/x", "clusterNetworks": ["10.96.0.0/12"], "peersFile": "/p",
            "runDir": "/r", "extra": true
        }))
        .unwrap();
        let k = &conf.plugin;
        assert_eq!((k.own, k.common.mtu), (Some(3), Some(1400)));
        assert_eq!(
            k.peers.peers_file.as_deref(),
            Some(std::path::Path::new("/p"))
        );
        assert_eq!(k.rest.keys().collect::<Vec<_>>(), vec!["extra"]);
        assert!(refuse_miscased::<TestKeys>(&k.rest).is_ok());
        let round = serde_json::to_value(&conf).unwrap();
        assert_eq!(round["subnetFile"], "/x");
        assert_eq!(round["extra"], true);
    }

    #[test]
    fn a_known_key_in_another_case_is_code_7_naming_the_spelling() {
        let mut rest = Map::new();
        rest.insert("PeersFile".into(), json!("/p"));
        let e = refuse_miscased::<TestKeys>(&rest).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("\"peersFile\""), "{e}");
        let mut rest = Map::new();
        rest.insert("OWN".into(), json!(1));
        assert!(refuse_miscased::<TestKeys>(&rest).is_err());
    }

    #[test]
    fn the_cluster_space_comes_from_the_space_file_while_the_view_file_is_unchanged() {
        let dir = std::env::temp_dir().join(format!("twill-net-space-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (sf, view) = (dir.join("subnet.env"), dir.join("peers.json"));
        std::fs::write(
            &sf,
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        std::fs::write(
            &view,
            json!([{"nodeIP": "10.0.0.2", "podCIDR": "10.244.2.0/24"},
                   {"nodeIP": "10.0.0.3", "podCIDR": "10.50.3.0/24"}])
            .to_string(),
        )
        .unwrap();
        let conf = json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "subnetFile": sf,
            "peersFile": view, "runDir": dir.join("run"), "clusterNetworks": ["10.96.0.0/12"]});
        let args = CmdArgs {
            command: crate::Command::Add,
            container_id: "c".into(),
            netns: None,
            ifname: "eth0".into(),
            args: String::new(),
            path: Vec::new(),
            stdin: conf.to_string().into_bytes(),
            cni_version: String::new(),
        };
        let n = Network::<TestKeys>::load(&args, Need::Required).unwrap();
        let want: Vec<IpNetwork> = ["10.50.3.0/24", "10.96.0.0/12", "10.244.0.0/16"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // Written just now: derived, and not remembered (the stamp is not trusted yet).
        assert_eq!(n.cluster_space().unwrap(), want);
        n.remember_space();
        assert!(!dir.join("run/n.space").exists());
        std::thread::sleep(std::time::Duration::from_millis(60));
        n.remember_space();
        let file = SpaceFile::new(&dir.join("run"), "n").unwrap();
        let stamp = ViewSource::File(view.clone()).stamp().unwrap();
        let base: Vec<IpNetwork> = ["10.244.0.0/16", "10.96.0.0/12"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let inputs = space::inputs_hash(&base);
        assert_eq!(file.read(&stamp, inputs), Some(want.clone()));
        // From the file now: a record with the same stamp and inputs is believed as is.
        let marker: Vec<IpNetwork> = vec!["192.0.2.0/24".parse().unwrap()];
        file.write(&Derived {
            stamp,
            inputs,
            nets: marker.clone(),
        })
        .unwrap();
        assert_eq!(n.cluster_space().unwrap(), marker);
        // Another clusterNetworks: other inputs, derived again.
        let mut c2 = conf.clone();
        c2["clusterNetworks"] = json!(["10.97.0.0/16"]);
        let n2 = Network::<TestKeys>::load(
            &CmdArgs {
                stdin: c2.to_string().into_bytes(),
                ..args.clone()
            },
            Need::Required,
        )
        .unwrap();
        assert_ne!(n2.cluster_space().unwrap(), marker);
        // The view written again in place (same bytes, same size): a new ctime, derived again.
        let bytes = std::fs::read(&view).unwrap();
        std::fs::write(&view, bytes).unwrap();
        assert_eq!(n.cluster_space().unwrap(), want);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn subnets_of_reduces_to_networks_in_order_without_duplicates() {
        let ips: Vec<IpNetwork> = ["10.1.0.5/24", "fd00::5/64", "10.1.0.9/24"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got: Vec<String> = subnets_of(&ips).iter().map(ToString::to_string).collect();
        assert_eq!(got, vec!["10.1.0.0/24", "fd00::/64"]);
    }
}
