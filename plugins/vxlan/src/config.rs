//! The network config of the vxlan plugin: its own keys and their defaults. What every data
//! plane shares (IPAM, the subnet file, MTU, the cluster view, masquerade and forward rules)
//! is `twill::network`; this plugin's [`Network`] derefs to it.

use std::ops::Deref;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use twill::kernel::netlink::{Netlink, PortFlags};
use twill::network::{self, CommonKeys, Need, PluginKeys};
use twill::node::peers::{PeersConf, ViewSource};
use twill::node::vxlan::{PodMode, Vxlan, VxlanConf, VxlanKeys};
use twill::pod::bridge;
use twill::pod::veth::{self, PodOptions};
use twill::{CmdArgs, Error, Result};

/// Bridge name unless `bridge` says otherwise.
pub const DEFAULT_BRIDGE: &str = "cni0";
/// Host veth name prefix of routed pods unless `hostVethPrefix` says otherwise.
pub const DEFAULT_HOST_VETH_PREFIX: &str = "twv";

/// The plugin's own keys (everything else is kept in `rest`, so IPAM delegation and GC see the
/// config as given).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Keys {
    /// `bridge`: the bridge the pods hang on (default [`DEFAULT_BRIDGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// `hairpinMode` on the host veth port (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hairpin_mode: Option<bool>,
    /// `hostVethPrefix`: the start of every routed pod's host veth name (default
    /// [`DEFAULT_HOST_VETH_PREFIX`]; 1 to 7 characters, a hash fills the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_veth_prefix: Option<String>,
    /// The overlay's keys (`pods`, `vni`, `port`, `device`, `deviceV6`, `nodeIP`,
    /// `nodeIPv6`, `directRouting`, `txChecksumOffload`), shared with twilld.
    #[serde(flatten)]
    pub vxlan: VxlanKeys,
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

/// The keys this plugin reads besides the shared ones, as spelled in a config (the overlay's
/// are [`twill::node::vxlan::KEY_NAMES`]).
pub const OWN_KEYS: &[&str] = &[
    "bridge",
    "hairpinMode",
    "hostVethPrefix",
    "pods",
    "vni",
    "port",
    "device",
    "deviceV6",
    "nodeIP",
    "nodeIPv6",
    "directRouting",
    "txChecksumOffload",
];

/// The network config with every default applied: the shared part (deref) and vxlan's.
#[derive(Debug, Clone)]
pub struct Network {
    /// What every data plane shares.
    pub shared: network::Network<Keys>,
    /// How pods are wired.
    pub pods: PodMode,
    /// Bridge name (bridge mode).
    pub bridge: String,
    /// Hairpin mode on the host veth.
    pub hairpin: bool,
    /// Prefix of the routed pods' host veth names.
    pub host_veth_prefix: String,
    /// The overlay: VNI, port, devices, underlay addresses, MTU, direct routing, offload.
    pub vxlan: VxlanConf,
}

impl Deref for Network {
    type Target = network::Network<Keys>;

    fn deref(&self) -> &Self::Target {
        &self.shared
    }
}

impl Network {
    /// Parses the config ([`network::Network::load`]) and applies this plugin's defaults
    /// (bridge mode: VNI 1, port 8472; routed mode: VNI 4096, port 4789; see
    /// [`VxlanKeys::conf`]). For
    /// [`Need::Required`] the keys are checked before anything on the node changes: `pods`,
    /// the bridge name, `hostVethPrefix`, the overlay ([`VxlanConf::validate`]) and, for
    /// routed pods, an IPAM that gives addresses. Routed pods without `peers` or `peersFile`
    /// get an empty view rather than none: the own blocks are still blackholed.
    pub fn load(args: &CmdArgs, need: Need) -> Result<Network> {
        let mut shared = network::Network::<Keys>::load(args, need)?;
        let k = shared.keys();
        let pods = k.vxlan.pod_mode()?;
        let conf = k.vxlan.conf(
            pods,
            shared.configured_mtu(),
            shared.subnet.as_ref().map(|s| s.mtu),
        );
        let bridge = k.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.into());
        let hairpin = k.hairpin_mode.unwrap_or(true);
        let host_veth_prefix = k
            .host_veth_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_HOST_VETH_PREFIX.into());
        if need == Need::Required {
            conf.validate()?;
            match pods {
                PodMode::Bridge => bridge::validate_name(&bridge)?,
                PodMode::Routed => {
                    veth::validate_prefix(&host_veth_prefix)
                        .map_err(|e| e.context("\"hostVethPrefix\""))?;
                    if shared.l2_only {
                        return Err(Error::invalid_config(
                            "\"ipam\": {} gives the pod no address, and a routed pod (\"pods\": \
                             \"routed\") is nothing but its addresses: configure an IPAM (or \
                             drop \"ipam\" to derive host-local from the subnet file)",
                        ));
                    }
                    if shared.view.is_none() {
                        shared.view = Some(ViewSource::Inline(json!([])));
                    }
                }
            }
        }
        Ok(Network {
            pods,
            bridge,
            hairpin,
            host_veth_prefix,
            vxlan: conf,
            shared,
        })
    }

    /// The overlay of this node ([`Vxlan::plan`]): a device for each family the network has
    /// pods of (both when its IPAM does not say), with the cluster view read for this node's
    /// address and VTEP MAC when it can be (an unreadable view is reported by the reconcile).
    /// Routed pods: the configured ranges are blackholed too ([`Vxlan::blackhole`]).
    pub fn overlay(&self, node: &mut Netlink) -> Result<Vxlan> {
        let view = self.view.as_ref().and_then(|v| v.read().ok());
        Vxlan::plan_network(
            node,
            &self.vxlan,
            self.pods,
            &self.own_ranges,
            view.as_ref(),
        )
    }

    /// The pods' MTU (imposed on the bridge): the overlay's device MTU; without a device (no
    /// underlay address), the shared default ([`network::Network::default_mtu`]).
    pub fn pod_mtu(&self, overlay: &Vxlan, node: &mut Netlink) -> Result<u32> {
        match overlay.mtu() {
            Some(m) => Ok(m),
            None => self.shared.default_mtu(node),
        }
    }

    /// The flags of the pod's bridge port: `hairpinMode`.
    pub fn port_flags(&self) -> PortFlags {
        PortFlags {
            hairpin: self.hairpin,
            isolated: false,
        }
    }

    /// How the pod interface is left: up, no DAD.
    pub fn pod_options(&self) -> PodOptions {
        PodOptions {
            up: true,
            dad: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use twill::cni::skeleton::Command;
    use twill::code;

    fn args(conf: &Value) -> CmdArgs {
        CmdArgs {
            command: Command::Add,
            container_id: "c1".into(),
            netns: Some("/run/netns/x".into()),
            ifname: "eth0".into(),
            args: String::new(),
            path: vec!["/opt/cni/bin".into()],
            stdin: serde_json::to_vec(conf).unwrap(),
            cni_version: "1.1.0".into(),
        }
    }

    fn base(extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0", "name": "pods", "type": "vxlan",
            "subnetFile": "/nonexistent/twill/subnet.env",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]}
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn bridge_mode_defaults_are_flannels() {
        let n = Network::load(&args(&base(json!({}))), Need::Required).unwrap();
        assert_eq!(n.pods, PodMode::Bridge);
        assert_eq!((n.vxlan.vni, n.vxlan.port), (1, 8472));
        assert!(
            twill::node::vxlan::KEY_NAMES
                .iter()
                .all(|k| OWN_KEYS.contains(k))
        );
        assert_eq!(n.bridge, "cni0");
        assert!(!n.vxlan.direct_routing && !n.vxlan.tx_checksum_offload && n.hairpin);
    }

    #[test]
    fn routed_mode_defaults_are_calicos_with_an_empty_view_for_the_blackhole() {
        let n = Network::load(&args(&base(json!({"pods": "routed"}))), Need::Required).unwrap();
        assert_eq!(
            (n.pods, n.vxlan.vni, n.vxlan.port),
            (PodMode::Routed, 4096, 4789)
        );
        assert_eq!(n.vxlan.device.as_deref(), Some("vxlan.twill"));
        assert_eq!(n.host_veth_prefix, DEFAULT_HOST_VETH_PREFIX);
        assert_eq!(n.view, Some(ViewSource::Inline(json!([]))));
        for (bad, key) in [
            (
                json!({"pods": "routed", "hostVethPrefix": "much-too-long"}),
                "hostVethPrefix",
            ),
            (json!({"pods": "routed", "ipam": {}}), "\"ipam\""),
        ] {
            let e = Network::load(&args(&base(bad.clone())), Need::Required).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{bad}: {e}");
            assert!(e.msg.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_keys_are_code_7_naming_the_key() {
        for (bad, key) in [
            (json!({"pods": "ipvlan"}), "pods"),
            (json!({"vni": 0}), "vni"),
            (json!({"vni": 16777216}), "vni"),
            (json!({"port": 0}), "port"),
            (json!({"device": "much-too-long-name"}), "device"),
            (json!({"nodeIP": "fd00::1"}), "nodeIP"),
            (json!({"nodeIP": "not-an-ip"}), "nodeIP"),
            (json!({"directRouting": "yes"}), "directRouting"),
            (json!({"directrouting": true}), "directrouting"),
        ] {
            let e = Network::load(&args(&base(bad.clone())), Need::Required).unwrap_err();
            assert!(
                e.code == code::INVALID_CONFIG || e.code == code::DECODE,
                "{bad}: {e}"
            );
            assert!(e.msg.contains(key), "{bad}: {e}");
        }
    }
}
