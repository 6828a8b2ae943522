//! The network config of bridge-host-gw: its own keys and their defaults. What every data
//! plane shares (IPAM, the subnet file, MTU, the cluster view, masquerade and forward rules)
//! is `twill::network`; this plugin's [`Network`] derefs to it.

use std::ops::Deref;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use twill::kernel::netlink::{Netlink, PortFlags};
use twill::network::{self, CommonKeys, Need, PluginKeys};
use twill::node::peers::PeersConf;
use twill::pod::bridge::{self, BridgeOptions};
use twill::pod::veth::PodOptions;
use twill::{CmdArgs, Error, Result};

/// Bridge name unless `bridge` says otherwise.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// The plugin's own keys (everything else is kept in `rest`, so IPAM delegation and GC see the
/// config as given).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Keys {
    /// `bridge`: the bridge to attach pods to (default [`DEFAULT_BRIDGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
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
    /// The keys every twill plugin shares (`mtu`, `subnetFile`, `dataDir`, `clusterNetworks`,
    /// `forwardRules`).
    #[serde(flatten)]
    pub common: CommonKeys,
    /// `peers` / `peersFile` / `runDir`: the cluster view and where run state lives.
    #[serde(flatten)]
    pub peers: PeersConf,
    /// Every other key, kept as given.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl PluginKeys for Keys {
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
        OWN_KEYS
    }
}

/// The keys this plugin reads besides the shared ones, as spelled in a config.
pub const OWN_KEYS: &[&str] = &[
    "bridge",
    "isGateway",
    "isDefaultGateway",
    "hairpinMode",
    "forceAddress",
    "promiscMode",
    "portIsolation",
    "enabledad",
    "disableContainerInterface",
    "vlan",
    "vlanTrunk",
    "preserveDefaultVlan",
    "macspoofchk",
];

/// The network config with every default applied: the shared part (deref) and the bridge's.
#[derive(Debug, Clone)]
pub struct Network {
    /// What every data plane shares.
    pub shared: network::Network<Keys>,
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
}

impl Deref for Network {
    type Target = network::Network<Keys>;

    fn deref(&self) -> &Self::Target {
        &self.shared
    }
}

impl Network {
    /// Parses the config ([`network::Network::load`]) and applies this plugin's defaults.
    /// For [`Need::Required`] the bridge's keys are checked before anything on the node
    /// changes: the bridge name, the reference bridge keys this plugin refuses
    /// ([`refuse_unsupported`]) and the combinations the reference refuses too (`promiscMode`
    /// with `hairpinMode`, `disableContainerInterface` with addresses). DEL and GC use none of
    /// them, so bad values there do not stop them.
    pub fn load(args: &CmdArgs, need: Need) -> Result<Network> {
        let shared = network::Network::<Keys>::load(args, need)?;
        let k = shared.keys();
        let bridge = k.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.into());
        let promisc = k.promisc_mode.unwrap_or(false);
        let disable_container_interface = k.disable_container_interface.unwrap_or(false);
        if need == Need::Required {
            bridge::validate_name(&bridge)?;
            refuse_unsupported(k)?;
            if promisc && k.hairpin_mode == Some(true) {
                return Err(Error::invalid_config(
                    "\"promiscMode\" and \"hairpinMode\" cannot both be true: a promiscuous \
                     bridge would hand a pod copies of its own hairpinned frames; drop one of them",
                ));
            }
            if disable_container_interface && !shared.l2_only {
                return Err(Error::invalid_config(
                    "\"disableContainerInterface\" leaves the pod interface down, so it cannot \
                     carry IPAM addresses: use it with \"ipam\": {} (a layer-2 only network) or \
                     drop it",
                ));
            }
        }
        // isDefaultGateway follows isGateway unless given; given true, it implies isGateway.
        let is_default_gateway = k.is_default_gateway.or(k.is_gateway).unwrap_or(true);
        let is_gateway = k.is_gateway.unwrap_or(true) || is_default_gateway;
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
            shared,
        })
    }

    /// The bridge as the config wants it: the configured `mtu` imposed (none: an existing
    /// bridge keeps its own, and pods get it), promiscuous mode per `promiscMode`.
    pub fn bridge_options(&self) -> BridgeOptions {
        BridgeOptions {
            mtu: self.configured_mtu(),
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

    /// The MTU of a bridge made by this ADD (see [`network::Network::default_mtu`]).
    pub fn bridge_mtu(&self, node: &mut Netlink) -> Result<u32> {
        self.shared.default_mtu(node)
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

#[cfg(test)]
mod tests {
    use super::*;
    use ipnetwork::IpNetwork;
    use serde_json::json;
    use std::path::PathBuf;
    use twill::cni::skeleton::Command;
    use twill::code;
    use twill::node::peers::ViewSource;

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
                .common
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
