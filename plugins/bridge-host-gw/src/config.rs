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
use twill::kernel::netlink::{Family, MacAddr, Netlink, RouteFilter, rt_table};
use twill::node::host_gw::HostGw;
use twill::node::masq;
use twill::node::peers::{PeersConf, ViewSource};
use twill::node::reconcile::{self, Inputs, Reconciled, Report};
use twill::node::state::StateFile;
use twill::pod::bridge;
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
    /// `hairpinMode` on the host veth port (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hairpin_mode: Option<bool>,
    /// `forceAddress`: replace a conflicting bridge address (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_address: Option<bool>,
    /// `subnetFile` (default [`subnet_file::DEFAULT_PATH`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_file: Option<PathBuf>,
    /// `dataDir` of the host-local IPAM derived from the subnet file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
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
    /// DEL, GC: a missing file is tolerated (host-local then releases by owner alone).
    Release,
}

impl Network {
    /// Parses the config from stdin and applies the defaults. Without `ipam`, host-local IPAM
    /// is derived from the subnet file as flannel's CNI plugin does (ranges from
    /// FLANNEL_SUBNET / FLANNEL_IPV6_SUBNET, routes to the cluster networks, plus `dataDir`).
    ///
    /// For [`Need::Required`] everything that can be checked before touching the node is: a
    /// host-local `ipam` section, the pod MAC and where the cluster view comes from, so bad
    /// input changes nothing. The view itself is not read here: a bad or unreadable view never
    /// fails ADD (see [`Network::reconcile_peers`]).
    pub fn load(args: &CmdArgs, need: Need) -> Result<Network> {
        let mut conf: NetConf<Keys> = parse_netconf(&args.stdin)?;
        let k = &conf.plugin;
        let bridge = k.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.into());
        bridge::validate_name(&bridge)?;
        if let Some(mtu) = k.mtu.filter(|&m| m != 0 && !(68..=65535).contains(&m)) {
            return Err(Error::invalid_config(format!(
                "\"mtu\": {mtu} is out of range (68-65535)"
            )));
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
        let subnet = if wants_file {
            read_subnet_file(&path)?
        } else {
            None
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
        Ok(Network {
            bridge,
            is_gateway,
            is_default_gateway,
            hairpin: k.hairpin_mode.unwrap_or(true),
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

    /// The MTU: `mtu`, else the subnet file's FLANNEL_MTU, else the MTU of the link of the
    /// node's default route (IPv4, then IPv6), else [`FALLBACK_MTU`]. Only the last two ask the
    /// kernel (a main-table dump and one lookup).
    pub fn mtu(&self, node: &mut Netlink) -> Result<u32> {
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

    /// The cluster networks (subnet file), for the masquerade exemption.
    pub fn cluster_networks(&self) -> Vec<IpNetwork> {
        self.subnet
            .as_ref()
            .map(SubnetFile::cluster_networks)
            .unwrap_or_default()
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

    /// ipMasq: the network's masquerade rule set exists (one netfilter request when it does).
    pub fn ensure_masq(&self, pod_subnets: &[IpNetwork]) -> Result<()> {
        if !self.ip_masq || pod_subnets.is_empty() {
            return Ok(());
        }
        masq::ensure(&self.conf.name, pod_subnets, &self.cluster_networks())
    }

    /// CHECK of ipMasq (code 105 when the rule set is missing or altered).
    pub fn check_masq(&self, pod_subnets: &[IpNetwork]) -> Result<()> {
        if !self.ip_masq || pod_subnets.is_empty() {
            return Ok(());
        }
        masq::check(&self.conf.name, pod_subnets, &self.cluster_networks())
    }
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
            n.cluster_networks(),
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
