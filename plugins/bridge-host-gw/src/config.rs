//! The network config of bridge-host-gw: its keys, their defaults, and what is derived from
//! flannel's subnet file (IPAM, MTU, ipMasq) and from the node (uplink MTU).

use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use twill::cni::args::CniArgs;
use twill::cni::types::parse_netconf;
use twill::flannel::subnet_file::{self, SubnetFile};
use twill::ipam::host_local::{self, HostLocal};
use twill::kernel::netlink::PortFlags;
use twill::kernel::netlink::netfilter::{self, Netfilter};
use twill::kernel::netlink::{Family, MacAddr, Netlink, RouteFilter, rt_table};
use twill::node::host_gw::HostGw;
use twill::node::peers::{PeersConf, ViewSource};
use twill::node::reconcile::{self, Inputs, Reconciled, Report};
use twill::node::state::StateFile;
use twill::node::{forward, masq};
use twill::pod::bridge::{self, BridgeOptions};
use twill::pod::veth::PodOptions;
use twill::{CmdArgs, CniResult, Error, NetConf, Result, code};

/// Bridge name unless `bridge` says otherwise.
pub const DEFAULT_BRIDGE: &str = "cni0";
/// MTU when neither the config, the subnet file nor the node's uplink gives one.
pub const FALLBACK_MTU: u32 = 1500;

/// The plugin's own keys (everything else is kept in `rest`, so IPAM delegation and GC see the
/// config as given).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Keys {
    /// `bridge`: the bridge to attach pods to (default [`DEFAULT_BRIDGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// `mtu` of the bridge and both veth ends (0 = unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `isGateway`: put the gateway addresses on the bridge (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_gateway: Option<bool>,
    /// `isDefaultGateway`: default route via the bridge in the pod (default true; implies
    /// `isGateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_default_gateway: Option<bool>,
    /// `hairpinMode` on the host veth port (default true, false with `promiscMode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hairpin_mode: Option<bool>,
    /// `promiscMode`: the bridge in promiscuous mode (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc_mode: Option<bool>,
    /// `portIsolation`: the host veth port isolated from the other isolated ports (default
    /// false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_isolation: Option<bool>,
    /// `enabledad`: IPv6 duplicate address detection on the pod interface (default false).
    #[serde(default, rename = "enabledad", skip_serializing_if = "Option::is_none")]
    pub enable_dad: Option<bool>,
    /// `disableContainerInterface`: the pod interface stays down (layer-2 only networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_container_interface: Option<bool>,
    /// `vlan`: refused unless 0 (see [`refuse_unsupported`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<i64>,
    /// `vlanTrunk`: refused unless empty (see [`refuse_unsupported`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_trunk: Option<Vec<Value>>,
    /// `preserveDefaultVlan`: accepted; it only qualifies `vlan` / `vlanTrunk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_default_vlan: Option<bool>,
    /// `macspoofchk`: refused when true (see [`refuse_unsupported`]).
    #[serde(
        default,
        rename = "macspoofchk",
        skip_serializing_if = "Option::is_none"
    )]
    pub mac_spoof_check: Option<bool>,
    /// `forceAddress`: replace a conflicting bridge address (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_address: Option<bool>,
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
    /// `peers` / `peersFile` / `runDir`: the cluster view and where fingerprints live.
    #[serde(flatten)]
    pub peers: PeersConf,
    /// Every other key, kept as given.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The network config with every default and derivation applied.
#[derive(Debug, Clone)]
pub struct Network {
    /// The config; `ipam` is the configured one or the one derived from the subnet file.
    pub conf: NetConf<Keys>,
    /// Bridge name.
    pub bridge: String,
    /// Gateway addresses on the bridge.
    pub is_gateway: bool,
    /// Default route via the gateway in the pod.
    pub is_default_gateway: bool,
    /// Hairpin mode on the host veth.
    pub hairpin: bool,
    /// The bridge in promiscuous mode.
    pub promisc: bool,
    /// The host veth port isolated.
    pub port_isolation: bool,
    /// IPv6 DAD on the pod interface.
    pub enable_dad: bool,
    /// The pod interface stays down (only with a layer-2 only network).
    pub disable_container_interface: bool,
    /// Replace conflicting bridge addresses.
    pub force_address: bool,
    /// Masquerade traffic leaving the cluster.
    pub ip_masq: bool,
    /// The subnet file, when it was needed and present.
    pub subnet: Option<SubnetFile>,
    /// `"ipam": {}`: a layer-2 only network, no addresses (as the reference bridge allows).
    pub l2_only: bool,
    /// Where the cluster view comes from (`peers` / `peersFile`); None when the config has
    /// neither (no peer routes are managed then). It is read by the reconcile, under its lock.
    pub view: Option<ViewSource>,
    /// The pod ranges this network owns on the node (host-local's configured ranges): a view
    /// entry with one of them is this node.
    pub own_ranges: Vec<IpNetwork>,
    /// The pod MAC asked for (ADD): `runtimeConfig.mac`, else `args.cni.mac`, else CNI_ARGS
    /// `MAC`.
    pub pod_mac: Option<MacAddr>,
}

/// How much a command needs the subnet file when the config has no `ipam`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// ADD, CHECK, STATUS: a missing file is an error naming it.
    Required,
    /// DEL, GC: a missing, unreadable or malformed file is tolerated (host-local then releases
    /// by owner alone), and keys they do not use (`bridge`, `mtu`) are not validated.
    Release,
}

impl Network {
    /// Parses the config from stdin and applies the defaults. Without `ipam`, host-local IPAM
    /// is derived from the subnet file as flannel's CNI plugin does (ranges from
    /// FLANNEL_SUBNET / FLANNEL_IPV6_SUBNET, routes to the cluster networks, plus `dataDir`).
    ///
    /// For [`Need::Required`] everything that can be checked before touching the node is: a
    /// host-local `ipam` section, the pod MAC, where the cluster view comes from, the
    /// reference bridge keys this plugin refuses ([`refuse_unsupported`]) and the combinations
    /// the reference refuses too (`promiscMode` with `hairpinMode`, `disableContainerInterface`
    /// with addresses), so bad input changes nothing. The view itself is not read here: a bad
    /// or unreadable view never fails ADD (see [`Network::reconcile_peers`]).
    pub fn load(args: &CmdArgs, need: Need) -> Result<Network> {
        let mut conf: NetConf<Keys> = parse_netconf(&args.stdin)?;
        let k = &conf.plugin;
        let bridge = k.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.into());
        // DEL and GC use neither the bridge nor the MTU: bad values there do not stop them.
        if need == Need::Required {
            bridge::validate_name(&bridge)?;
        }
        if let Some(mtu) = k
            .mtu
            .filter(|&m| need == Need::Required && m != 0 && !(68..=65535).contains(&m))
        {
            return Err(Error::invalid_config(format!(
                "\"mtu\": {mtu} is out of range (68-65535)"
            )));
        }
        if need == Need::Required {
            refuse_unsupported(k)?;
            refuse_miscased(&k.rest)?;
        }
        let promisc = k.promisc_mode.unwrap_or(false);
        if need == Need::Required && promisc && k.hairpin_mode == Some(true) {
            return Err(Error::invalid_config(
                "\"promiscMode\" and \"hairpinMode\" cannot both be true: a promiscuous bridge \
                 would hand a pod copies of its own hairpinned frames; drop one of them",
            ));
        }
        // isDefaultGateway follows isGateway unless given; given true, it implies isGateway.
        let is_default_gateway = k.is_default_gateway.or(k.is_gateway).unwrap_or(true);
        let is_gateway = k.is_gateway.unwrap_or(true) || is_default_gateway;
        let path = k
            .subnet_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(subnet_file::DEFAULT_PATH));
        let wants_file = conf.ipam.is_none()
            || (need == Need::Required && (k.mtu.unwrap_or(0) == 0 || conf.ip_masq.is_none()));
        let subnet = match (wants_file, need) {
            (false, _) => None,
            (true, Need::Required) => read_subnet_file(&path)?,
            // DEL and GC release by owner without it: a missing, unreadable or malformed file
            // must not keep them from it.
            (true, Need::Release) => read_subnet_file(&path).ok().flatten(),
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
            Need::Required => (pod_mac(&conf, args)?, conf.plugin.peers.source()?),
            Need::Release => (None, None),
        };
        let mut own_ranges = Vec::new();
        if need == Need::Required
            && !l2_only
            && twill::ipam::ipam_type(&conf)? == twill::ipam::HOST_LOCAL
        {
            let hl = HostLocal::from_netconf(&conf)?;
            for set in &hl.config().range_sets {
                own_ranges.extend(set.ranges.iter().map(|r| r.subnet));
            }
        }
        let k = &conf.plugin;
        let disable_container_interface = k.disable_container_interface.unwrap_or(false);
        if need == Need::Required && disable_container_interface && !l2_only {
            return Err(Error::invalid_config(
                "\"disableContainerInterface\" leaves the pod interface down, so it cannot carry \
                 IPAM addresses: use it with \"ipam\": {} (a layer-2 only network) or drop it",
            ));
        }
        Ok(Network {
            bridge,
            is_gateway,
            is_default_gateway,
            hairpin: k.hairpin_mode.unwrap_or(!promisc),
            promisc,
            port_isolation: k.port_isolation.unwrap_or(false),
            enable_dad: k.enable_dad.unwrap_or(false),
            disable_container_interface,
            force_address: k.force_address.unwrap_or(false),
            ip_masq,
            subnet,
            l2_only,
            pod_mac,
            view,
            own_ranges,
            conf,
        })
    }

    /// The bridge as the config wants it: the configured `mtu` imposed (none: an existing
    /// bridge keeps its own, and pods get it), promiscuous mode per `promiscMode`.
    pub fn bridge_options(&self) -> BridgeOptions {
        BridgeOptions {
            mtu: self.conf.plugin.mtu.filter(|&m| m != 0),
            promisc: self.promisc,
        }
    }

    /// The flags of the pod's bridge port: `hairpinMode`, `portIsolation`.
    pub fn port_flags(&self) -> PortFlags {
        PortFlags {
            hairpin: self.hairpin,
            isolated: self.port_isolation,
        }
    }

    /// How the pod interface is left: `disableContainerInterface`, `enabledad`.
    pub fn pod_options(&self) -> PodOptions {
        PodOptions {
            up: !self.disable_container_interface,
            dad: self.enable_dad,
        }
    }

    /// The MTU of a bridge made by this ADD: `mtu`, else the subnet file's FLANNEL_MTU, else
    /// the MTU of the link of the node's default route (IPv4, then IPv6), else
    /// [`FALLBACK_MTU`]. Only the last two ask the kernel (a main-table dump and one lookup).
    pub fn default_mtu(&self, node: &mut Netlink) -> Result<u32> {
        if let Some(m) = self.conf.plugin.mtu.filter(|&m| m != 0) {
            return Ok(m);
        }
        if let Some(sf) = &self.subnet {
            return Ok(sf.mtu);
        }
        for family in [Family::V4, Family::V6] {
            let filter = RouteFilter {
                family: Some(family),
                table: Some(rt_table::MAIN),
                ..Default::default()
            };
            let uplink = node
                .routes(&filter)?
                .into_iter()
                .find(|r| r.dst.prefix() == 0 && r.kind == 1)
                .and_then(|r| r.oif);
            if let Some(oif) = uplink
                && let Some(link) = node.link_by_index(oif)?
            {
                return Ok(link.mtu);
            }
        }
        Ok(FALLBACK_MTU)
    }

    /// IPAM ADD (nothing for a layer-2 only network).
    pub fn allocate(&self, args: &CmdArgs) -> Result<CniResult> {
        if self.l2_only {
            return Ok(CniResult::default());
        }
        twill::ipam::add(args, &self.conf)
    }

    /// IPAM DEL. With neither `ipam` nor a subnet file, host-local is asked to release the
    /// attachment's reservations under `dataDir` (or its default) all the same.
    pub fn release(&self, args: &CmdArgs) -> Result<()> {
        if self.l2_only {
            return Ok(());
        }
        if self.conf.ipam.is_some() {
            return twill::ipam::del(args, &self.conf);
        }
        self.bare_host_local().del(&args.container_id, &args.ifname)
    }

    /// IPAM CHECK.
    pub fn ipam_check(&self, args: &CmdArgs) -> Result<()> {
        if self.l2_only {
            return Ok(());
        }
        twill::ipam::check(args, &self.conf)
    }

    /// IPAM STATUS.
    pub fn ipam_status(&self, args: &CmdArgs) -> Result<()> {
        if self.l2_only {
            return Ok(());
        }
        twill::ipam::status(args, &self.conf)
    }

    /// IPAM GC, with the same fallback as [`Network::release`].
    pub fn ipam_gc(&self, args: &CmdArgs) -> Result<()> {
        if self.l2_only {
            return Ok(());
        }
        if self.conf.ipam.is_some() {
            return twill::ipam::gc(args, &self.conf);
        }
        let valid: Vec<host_local::Attachment> = twill::cni::types::valid_attachments(&args.stdin)?
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
                .conf
                .plugin
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
        let mut out = match &self.subnet {
            Some(sf) => sf.cluster_networks(),
            None => read_subnet_file(&self.subnet_path())?
                .map(|sf| sf.cluster_networks())
                .unwrap_or_default(),
        };
        // An unreadable view adds nothing here; STATUS reports it (51).
        if let Some(view) = self.view.as_ref().and_then(|v| v.read().ok()) {
            out.extend(view.peers().iter().map(|p| p.pod_cidr));
        }
        out.extend(self.conf.plugin.cluster_networks.iter().flatten().copied());
        Ok(out)
    }

    fn subnet_path(&self) -> PathBuf {
        self.conf
            .plugin
            .subnet_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(subnet_file::DEFAULT_PATH))
    }

    /// The network's own pod ranges: every subnet of the host-local range sets (configured,
    /// or derived from the subnet file), or None for an IPAM whose ranges twill cannot read
    /// (exec'd plugins: the masquerade then grows with the pods' subnets, never narrows).
    pub fn pod_ranges(&self) -> Result<Option<Vec<IpNetwork>>> {
        if twill::ipam::ipam_type(&self.conf)? != twill::ipam::HOST_LOCAL {
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
        self.conf.plugin.forward_rules.unwrap_or(true)
    }

    /// Makes the node's routes to the other nodes' pod subnets match the cluster view
    /// (host-gw), skipping all other kernel work when the view's fingerprint is unchanged and
    /// twill's routes are all still there. Skipped entries, an unreadable view and refused
    /// routes are reported on stderr and never fail the ADD (STATUS answers for them); only
    /// a state file or kernel listing that fails is an error. No view configured: nothing.
    pub fn reconcile_peers(&self, node: &mut Netlink, pod_subnets: &[IpNetwork]) -> Result<()> {
        let Some(source) = &self.view else {
            return Ok(());
        };
        let state = self.peer_state(node)?;
        let own = self.own_ranges_with(pod_subnets);
        let inputs = Inputs {
            source,
            own_ranges: &own,
            plane: &HostGw,
        };
        if let Reconciled::Applied(report) = reconcile::reconcile(node, &state, &inputs)? {
            self.warn(&report.warnings());
        }
        Ok(())
    }

    /// CHECK of the peer routes: drift is node state that the next ADD repairs, not a broken
    /// attachment, so it is reported on stderr and CHECK goes on.
    pub fn check_peers(&self, node: &mut Netlink, pod_subnets: &[IpNetwork]) -> Result<()> {
        if let Some(report) = self.verify_peers(node, pod_subnets)? {
            let p = &report.plan;
            let mut what: Vec<String> = Vec::new();
            what.extend(p.apply.iter().map(|o| format!("missing {o}")));
            what.extend(p.remove.iter().map(|o| format!("stale {o}")));
            what.extend(p.conflicts.iter().map(|o| format!("another owner's {o}")));
            if !what.is_empty() {
                self.warn(&[format!(
                    "peer routes differ from the cluster view (the next ADD repairs them): {}",
                    what.join("; ")
                )]);
            }
        }
        Ok(())
    }

    /// STATUS of the cluster view: code 51 (limited connectivity) when the view cannot be read
    /// or some of its entries cannot be used on this node, naming them and why.
    pub fn view_status(&self, node: &mut Netlink) -> Result<()> {
        let Some(report) = self.verify_peers(node, &[])? else {
            return Ok(());
        };
        if let Some(u) = report.unreadable {
            return Err(Error::new(code::LIMITED_CONNECTIVITY, u));
        }
        if report.skipped.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = report.skipped.iter().map(ToString::to_string).collect();
        Err(Error::new(
            code::LIMITED_CONNECTIVITY,
            format!(
                "{} of the cluster view cannot be used on this node: {}",
                if list.len() == 1 {
                    "1 entry".to_string()
                } else {
                    format!("{} entries", list.len())
                },
                list.join("; ")
            ),
        ))
    }

    fn verify_peers(
        &self,
        node: &mut Netlink,
        pod_subnets: &[IpNetwork],
    ) -> Result<Option<Report>> {
        let Some(source) = &self.view else {
            return Ok(None);
        };
        let state = self.peer_state(node)?;
        let own = self.own_ranges_with(pod_subnets);
        let inputs = Inputs {
            source,
            own_ranges: &own,
            plane: &HostGw,
        };
        reconcile::verify(node, &state, &inputs).map(Some)
    }

    /// The configured ranges plus the pod's own subnets (an IPAM that is not host-local only
    /// tells them through its result), sorted, without duplicates.
    fn own_ranges_with(&self, pod_subnets: &[IpNetwork]) -> Vec<IpNetwork> {
        let mut own: Vec<IpNetwork> = self.own_ranges.iter().chain(pod_subnets).copied().collect();
        own.sort();
        own.dedup();
        own
    }

    fn warn(&self, lines: &[String]) {
        for l in lines {
            eprintln!("bridge-host-gw: network {:?}: {l}", self.conf.name);
        }
    }

    fn peer_state(&self, node: &mut Netlink) -> Result<StateFile> {
        StateFile::new(
            self.conf.plugin.peers.run_dir(),
            &self.conf.name,
            node.netns_key()?,
            node.netns_inode()?,
        )
    }

    /// The node rules this network owns, over one netfilter socket: the masquerade
    /// ([`Network::ensure_masq`]) and the forward rules ([`Network::ensure_forward`]).
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
        let cluster = self.cluster_networks()?;
        match self.pod_ranges()? {
            Some(ranges) => masq::ensure(nf, &self.conf.name, &ranges, &cluster)?,
            None if pod_subnets.is_empty() => return Ok(()),
            None => {
                let run_dir = self.conf.plugin.peers.run_dir();
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
        let run_dir = self.conf.plugin.peers.run_dir();
        forward::ensure(nf, &self.conf.name, &space, grow, run_dir)?;
        Ok(())
    }

    fn forward_space(&self, pod_subnets: &[IpNetwork]) -> Result<(Vec<IpNetwork>, bool)> {
        let mut space = self.cluster_networks()?;
        let ranges = self.pod_ranges()?;
        let grow = ranges.is_none();
        space.extend(ranges.unwrap_or_else(|| pod_subnets.to_vec()));
        Ok((space, grow))
    }

    /// CHECK of the node's masquerade and forward rules. They are node state shared by every
    /// pod of the network, not this attachment: drift is reported on stderr (the next ADD
    /// repairs it) and never fails the CHECK.
    pub fn check_node_rules(&self, pod_subnets: &[IpNetwork]) {
        let mut drift = Vec::new();
        let mut nf = match Netfilter::new() {
            Ok(nf) => nf,
            Err(e) => {
                eprintln!(
                    "twill bridge-host-gw: CHECK of network \"{}\": cannot read netfilter: {e}",
                    self.conf.name
                );
                return;
            }
        };
        if self.ip_masq && !self.l2_only {
            let res = self
                .cluster_networks()
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
        for e in drift {
            eprintln!(
                "twill bridge-host-gw: CHECK of network \"{}\": node state drift (the next ADD \
                 repairs it): {}{}",
                self.conf.name,
                e.msg,
                if e.details.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.details)
                }
            );
        }
    }

    /// Before ADD changes anything: with ipMasq or `forwardRules` on, `nft` must be there
    /// (code 106 naming the key to turn off), so a node without nftables fails up front.
    pub fn preflight_node_rules(&self) -> Result<()> {
        if netfilter::find_nft().is_some() {
            return Ok(());
        }
        if self.ip_masq {
            return Err(netfilter::nft_missing("ipMasq", "ipMasq"));
        }
        if self.forward_rules() {
            return Err(netfilter::nft_missing(
                "accepting pod traffic in the host's forward chains",
                "forwardRules",
            ));
        }
        Ok(())
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

/// Code 7 for the reference bridge's keys that bridge-host-gw does not implement, naming the
/// key and why, so that a config brought from the reference plugin never loses them silently:
/// `vlan` (other than 0), a non-empty `vlanTrunk`, `macspoofchk: true`.
pub fn refuse_unsupported(k: &Keys) -> Result<()> {
    if let Some(v) = k.vlan.filter(|&v| v != 0) {
        if !(1..=4094).contains(&v) {
            return Err(Error::invalid_config(format!(
                "\"vlan\": {v} is not a VLAN ID (0-4094)"
            )));
        }
        return Err(Error::invalid_config(format!(
            "\"vlan\": {v} is not supported by bridge-host-gw: host-gw routes pods through the \
             gateway on the bridge itself, which a pod in VLAN {v} could not reach; remove \
             \"vlan\" (or use the reference bridge plugin for VLAN networks)"
        )));
    }
    if k.vlan_trunk.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(Error::invalid_config(
            "\"vlanTrunk\" is not supported by bridge-host-gw: pods on tagged VLANs could not \
             reach the gateway on the bridge itself; remove \"vlanTrunk\" (or use the reference \
             bridge plugin for VLAN networks)",
        ));
    }
    if k.mac_spoof_check == Some(true) {
        return Err(Error::invalid_config(
            "\"macspoofchk\": true is not supported by bridge-host-gw: its per-pod nftables \
             rule would have to be removed by DEL and GC, which only delete the pod's veth; \
             remove \"macspoofchk\" or set it to false",
        ));
    }
    Ok(())
}

/// Every key this plugin reads, as spelled in the config.
pub const KNOWN_KEYS: &[&str] = &[
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
    "bridge",
    "mtu",
    "isGateway",
    "isDefaultGateway",
    "hairpinMode",
    "forceAddress",
    "subnetFile",
    "dataDir",
    "peers",
    "peersFile",
    "runDir",
    "promiscMode",
    "portIsolation",
    "enabledad",
    "disableContainerInterface",
    "vlan",
    "vlanTrunk",
    "preserveDefaultVlan",
    "macspoofchk",
];

/// Code 7 for a key spelled like one of [`KNOWN_KEYS`] but in another case (`macSpoofChk`,
/// `isgateway`): the reference plugin's JSON decoder matches keys ignoring case, this one does
/// not, so such a key would otherwise be ignored without a word.
pub fn refuse_miscased(rest: &Map<String, Value>) -> Result<()> {
    for key in rest.keys() {
        if let Some(known) = KNOWN_KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) {
            return Err(Error::invalid_config(format!(
                "\"{key}\": keys are case-sensitive here; write \"{known}\""
            )));
        }
    }
    Ok(())
}

/// The pod MAC asked for: `runtimeConfig.mac`, else `args.cni.mac`, else CNI_ARGS `MAC`.
/// Code 7 when it is not a MAC address.
fn pod_mac(conf: &NetConf<Keys>, args: &CmdArgs) -> Result<Option<MacAddr>> {
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

/// The subnet file at `path`, or None when it does not exist (code 7 when malformed, 5 when
/// unreadable).
fn read_subnet_file(path: &Path) -> Result<Option<SubnetFile>> {
    match std::fs::read_to_string(path) {
        Ok(text) => SubnetFile::parse(&text, path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(
            format!("read flannel subnet file {}", path.display()),
            e,
        )),
    }
}

/// The pod subnets of `ips` (each address reduced to its network).
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
    use twill::cni::skeleton::Command;

    fn args(conf: &Value, cni_args: &str) -> CmdArgs {
        CmdArgs {
            command: Command::Add,
            container_id: "c1".into(),
            netns: Some("/run/netns/x".into()),
            ifname: "eth0".into(),
            args: cni_args.into(),
            path: vec!["/opt/cni/bin".into()],
            stdin: serde_json::to_vec(conf).unwrap(),
            cni_version: "1.1.0".into(),
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tw-bhg-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn base(extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0", "name": "pods", "type": "bridge-host-gw",
            "subnetFile": "/nonexistent/twill/subnet.env",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]}
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn defaults() {
        let n = Network::load(&args(&base(json!({})), ""), Need::Required).unwrap();
        assert_eq!(n.bridge, "cni0");
        assert!(n.is_gateway && n.is_default_gateway && n.hairpin);
        assert!(!n.force_address && !n.ip_masq && !n.l2_only);
        assert!(n.subnet.is_none() && n.view.is_none() && n.pod_mac.is_none());
    }

    #[test]
    fn gateway_flags() {
        let load = |extra| Network::load(&args(&base(extra), ""), Need::Required).unwrap();
        let n = load(json!({"isGateway": false}));
        assert!(!n.is_gateway && !n.is_default_gateway);
        let n = load(json!({"isGateway": false, "isDefaultGateway": true}));
        assert!(n.is_gateway && n.is_default_gateway);
        let n = load(json!({"isDefaultGateway": false}));
        assert!(n.is_gateway && !n.is_default_gateway);
    }

    #[test]
    fn derived_ipam_mtu_and_masq_from_the_subnet_file() {
        let d = temp_dir("sf");
        let sf = d.join("subnet.env");
        std::fs::write(
            &sf,
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1410\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        let conf = json!({"cniVersion": "1.1.0", "name": "pods", "type": "bridge-host-gw",
            "subnetFile": sf, "dataDir": d.join("ipam")});
        let n = Network::load(&args(&conf, ""), Need::Required).unwrap();
        let ipam = n.conf.ipam.as_ref().unwrap();
        assert_eq!(ipam["type"], "host-local");
        assert_eq!(ipam["ranges"], json!([[{"subnet": "10.244.1.0/24"}]]));
        assert_eq!(ipam["routes"], json!([{"dst": "10.244.0.0/16"}]));
        assert_eq!(ipam["dataDir"], json!(d.join("ipam")));
        assert_eq!(n.subnet.as_ref().unwrap().mtu, 1410);
        assert!(
            n.ip_masq,
            "flanneld does not masquerade (FLANNEL_IPMASQ=false): the plugin does"
        );
        assert_eq!(
            n.cluster_networks().unwrap(),
            vec!["10.244.0.0/16".parse::<IpNetwork>().unwrap()]
        );
        // The config's own keys win.
        let mut c2 = conf.clone();
        c2["ipMasq"] = json!(false);
        c2["mtu"] = json!(1300);
        let n = Network::load(&args(&c2, ""), Need::Required).unwrap();
        assert!(!n.ip_masq);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn cluster_space_is_subnet_file_peers_and_cluster_networks() {
        let d = temp_dir("space");
        let sf = d.join("subnet.env");
        std::fs::write(
            &sf,
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        // Explicit ipam, mtu and ipMasq: loading does not need the file; the space reads it.
        let conf = base(json!({
            "subnetFile": sf, "mtu": 1400, "ipMasq": true,
            "peers": [{"nodeIP": "10.0.0.2", "podCIDR": "10.50.2.0/24"}],
            "clusterNetworks": ["10.96.0.0/12", "fd00:96::/108"],
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}
        }));
        let n = Network::load(&args(&conf, ""), Need::Required).unwrap();
        let space: Vec<String> = n
            .cluster_networks()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            space,
            [
                "10.244.0.0/16",
                "10.50.2.0/24",
                "10.96.0.0/12",
                "fd00:96::/108"
            ]
        );
        let ranges: Vec<String> = n
            .pod_ranges()
            .unwrap()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(ranges, ["10.1.0.0/24", "10.2.0.0/24"], "every range set");
        assert!(n.forward_rules(), "forward rules default on");
        // An exec'd IPAM declares no ranges.
        let mut c2 = conf.clone();
        c2["ipam"] = json!({"type": "dhcp"});
        let n = Network::load(&args(&c2, ""), Need::Required).unwrap();
        assert_eq!(n.pod_ranges().unwrap(), None);
        std::fs::remove_dir_all(&d).unwrap();
        for bad in [
            json!({"clusterNetworks": ["10.96.0.0/33"]}),
            json!({"clusterNetworks": "10.96.0.0/12"}),
            json!({"clusterNetworks": ["ten"]}),
            json!({"forwardRules": "yes"}),
        ] {
            let e = Network::load(&args(&base(bad.clone()), ""), Need::Required).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{bad}: {e}");
            let key = bad.as_object().unwrap().keys().next().unwrap().clone();
            assert!(e.msg.contains(&key), "{bad}: {e}");
        }
    }

    #[test]
    fn missing_subnet_file_without_ipam() {
        let conf = json!({"cniVersion": "1.1.0", "name": "pods", "type": "bridge-host-gw",
            "subnetFile": "/nonexistent/twill/subnet.env"});
        let e = Network::load(&args(&conf, ""), Need::Required).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("/nonexistent/twill/subnet.env"), "{e}");
        // DEL and GC go on: host-local releases by owner.
        let n = Network::load(&args(&conf, ""), Need::Release).unwrap();
        assert!(n.conf.ipam.is_none());
    }

    #[test]
    fn release_ignores_what_it_does_not_use() {
        let d = temp_dir("bad-sf");
        let sf = d.join("subnet.env");
        std::fs::write(&sf, "FLANNEL_SUBNET=not-a-subnet\n").unwrap();
        let conf = json!({"cniVersion": "1.1.0", "name": "pods", "type": "bridge-host-gw",
            "subnetFile": sf, "bridge": "no/slash", "mtu": 20});
        let e = Network::load(&args(&conf, ""), Need::Required).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{e}");
        let n = Network::load(&args(&conf, ""), Need::Release).unwrap();
        assert!(n.subnet.is_none() && n.conf.ipam.is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_input_is_code_7() {
        for extra in [
            json!({"bridge": "no/slash"}),
            json!({"bridge": "much-too-long-name"}),
            json!({"mtu": 20}),
            json!({"mtu": "big"}),
            json!({"runtimeConfig": {"mac": "nope"}}),
            json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/33"}]]}}),
            json!({"peers": [{"nodeIP": "10.0.0.1", "podCIDR": "10.2.0.0/24"}], "peersFile": "/x"}),
        ] {
            let e = Network::load(&args(&base(extra.clone()), ""), Need::Required).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{extra}: {e}");
        }
        assert_eq!(
            Network::load(&args(&base(json!({"mtu": 0})), ""), Need::Required)
                .unwrap()
                .conf
                .plugin
                .mtu,
            Some(0),
            "0 means unset"
        );
    }

    #[test]
    fn reference_bridge_keys_defaults_and_values() {
        let load = |extra| Network::load(&args(&base(extra), ""), Need::Required).unwrap();
        let n = load(json!({}));
        assert!(!n.promisc && !n.port_isolation && !n.enable_dad);
        assert!(!n.disable_container_interface);
        assert_eq!(n.bridge_options(), BridgeOptions::default());
        assert_eq!(n.pod_options(), PodOptions::default());
        let n = load(
            json!({"promiscMode": true, "portIsolation": true, "enabledad": true,
            "mtu": 1400, "vlan": 0, "vlanTrunk": [], "preserveDefaultVlan": false,
            "macspoofchk": false}),
        );
        assert!(
            n.promisc && !n.hairpin,
            "promiscMode turns hairpin's default off"
        );
        assert_eq!(
            n.port_flags(),
            PortFlags {
                hairpin: false,
                isolated: true
            }
        );
        assert_eq!(n.bridge_options().mtu, Some(1400));
        assert!(n.pod_options().dad && n.pod_options().up);
        let n = load(json!({"disableContainerInterface": true, "ipam": {}}));
        assert!(!n.pod_options().up);
    }

    #[test]
    fn unsupported_or_contradictory_keys_are_code_7_naming_the_key() {
        for (extra, key) in [
            (json!({"vlan": 100}), "\"vlan\""),
            (json!({"vlan": 4095}), "\"vlan\""),
            (json!({"vlan": -1}), "\"vlan\""),
            (json!({"vlanTrunk": [{"id": 5}]}), "\"vlanTrunk\""),
            (json!({"macspoofchk": true}), "\"macspoofchk\""),
            (
                json!({"promiscMode": true, "hairpinMode": true}),
                "\"hairpinMode\"",
            ),
            (
                json!({"disableContainerInterface": true}),
                "\"disableContainerInterface\"",
            ),
            (json!({"macSpoofChk": true}), "\"macspoofchk\""),
            (json!({"isgateway": false}), "\"isGateway\""),
        ] {
            let e = Network::load(&args(&base(extra.clone()), ""), Need::Required).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{extra}: {e}");
            assert!(e.msg.contains(key), "{extra}: {e}");
        }
        // DEL and GC still release what such a config may have left.
        let n = Network::load(
            &args(
                &base(
                    json!({"vlan": 100, "macspoofchk": true, "promiscMode": true,
                    "hairpinMode": true, "disableContainerInterface": true}),
                ),
                "",
            ),
            Need::Release,
        );
        assert!(n.is_ok());
    }

    #[test]
    fn view_source_is_kept_not_read_and_own_ranges_come_from_host_local() {
        let conf = base(json!({
            "peersFile": "/nonexistent/twill/peers.json",
            "ipam": {"type": "host-local", "ranges": [
                [{"subnet": "10.1.0.0/25"}, {"subnet": "10.1.0.128/25"}],
                [{"subnet": "fd00:1::/64"}]
            ]}
        }));
        let n = Network::load(&args(&conf, ""), Need::Required).unwrap();
        assert_eq!(
            n.view,
            Some(ViewSource::File("/nonexistent/twill/peers.json".into()))
        );
        let r = |s: &str| s.parse::<IpNetwork>().unwrap();
        assert_eq!(
            n.own_ranges,
            vec![r("10.1.0.0/25"), r("10.1.0.128/25"), r("fd00:1::/64")]
        );
        assert_eq!(
            n.own_ranges_with(&[r("10.1.0.0/25"), r("10.9.0.0/24")]),
            vec![
                r("10.1.0.0/25"),
                r("10.1.0.128/25"),
                r("10.9.0.0/24"),
                r("fd00:1::/64")
            ]
        );
        // An inline view that is not a list is not a config error either.
        let n = Network::load(
            &args(&base(json!({"peers": {"nodeIP": "10.0.0.2"}})), ""),
            Need::Required,
        )
        .unwrap();
        assert!(matches!(n.view, Some(ViewSource::Inline(_))));
    }

    #[test]
    fn pod_mac_precedence() {
        let mac = |extra, env: &str| {
            Network::load(&args(&base(extra), env), Need::Required)
                .unwrap()
                .pod_mac
                .map(|m| m.to_string())
        };
        assert_eq!(
            mac(json!({}), "MAC=02:00:00:00:00:01"),
            Some("02:00:00:00:00:01".into())
        );
        assert_eq!(
            mac(
                json!({"args": {"cni": {"mac": "02:00:00:00:00:02"}}}),
                "MAC=02:00:00:00:00:01"
            ),
            Some("02:00:00:00:00:02".into())
        );
        assert_eq!(
            mac(
                json!({"args": {"cni": {"mac": "02:00:00:00:00:02"}},
                       "runtimeConfig": {"mac": "02:00:00:00:00:03"}}),
                "MAC=02:00:00:00:00:01"
            ),
            Some("02:00:00:00:00:03".into())
        );
    }

    #[test]
    fn l2_only_and_unknown_keys_kept() {
        let n = Network::load(
            &args(
                &base(json!({"ipam": {}, "cni.dev/valid-attachments": [], "x": 1})),
                "",
            ),
            Need::Required,
        )
        .unwrap();
        assert!(n.l2_only);
        let round = serde_json::to_value(&n.conf).unwrap();
        assert_eq!(round["x"], 1);
        assert_eq!(round["cni.dev/valid-attachments"], json!([]));
        assert_eq!(round["subnetFile"], "/nonexistent/twill/subnet.env");
    }
}
