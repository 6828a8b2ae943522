//! The network config of ipip: its own keys (`device`, `crossSubnet`) and their defaults; the
//! routed pod keys are `twill::pod::routed::PodKeys` (shared with routed-veth), and what every
//! data plane shares (`mtu`, IPAM, the subnet file, the cluster view, masquerade and forward
//! rules) is `twill::network`, which this plugin's [`Network`] derefs to.

use std::ops::Deref;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use twill::kernel::netlink::{Netlink, validate_ifname};
use twill::network::{self, CommonKeys, FALLBACK_MTU, Need, PluginKeys, uplink_mtu};
use twill::node::ipip::{self, DEFAULT_DEVICE, TunnelConf};
use twill::node::peers::PeersConf;
use twill::pod::routed::{self, PodKeys, PodSettings};
use twill::{CmdArgs, Error, Result};

/// Host veth name prefix unless `hostVethPrefix` says otherwise.
pub const DEFAULT_HOST_VETH_PREFIX: &str = "twi";

/// The plugin's own keys (everything else is kept in `rest`, so IPAM delegation and GC see the
/// config as given).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Keys {
    /// `device`: the ipip tunnel (default the kernel's `tunl0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `crossSubnet`: encapsulate only towards nodes behind a router (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_subnet: Option<bool>,
    /// The routed pod keys (`hostVethPrefix`, `containerSettings`, the refused Calico keys).
    #[serde(flatten)]
    pub pod: PodKeys,
    /// The keys every twill plugin shares (`mtu` is the tunnel's and the pods' MTU here).
    #[serde(flatten)]
    pub common: CommonKeys,
    /// `peers` / `peersFile` / `runDir`: the cluster view and where run state lives.
    #[serde(flatten)]
    pub peers: PeersConf,
    /// Every other key, kept as given (Calico's logging and datastore keys land here).
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

/// The keys this plugin reads besides the shared ones, as spelled in a config (its own and
/// [`routed::POD_KEY_NAMES`]).
pub const OWN_KEYS: &[&str] = &[
    "device",
    "crossSubnet",
    "hostVethPrefix",
    "containerSettings",
    "container_settings",
    "policy",
    "feature_control",
    "num_queues",
];

/// The network config with every default applied: the shared part (deref), the routed pod's
/// and the tunnel's.
#[derive(Debug, Clone)]
pub struct Network {
    /// What every data plane shares.
    pub shared: network::Network<Keys>,
    /// Prefix of the host veth names.
    pub host_veth_prefix: String,
    /// How the pod is left (`containerSettings`).
    pub pod_settings: PodSettings,
    /// The tunnel device's name.
    pub device: String,
    /// `crossSubnet`.
    pub cross_subnet: bool,
}

impl Deref for Network {
    type Target = network::Network<Keys>;

    fn deref(&self) -> &Self::Target {
        &self.shared
    }
}

impl Network {
    /// Parses the config ([`network::Network::load`]) and applies this plugin's defaults.
    /// For [`Need::Required`] everything is checked before anything on the node changes: the
    /// routed pod keys, `device`, and the pod ranges (code 7 for an IPv6 range, as ipip carries
    /// IPv4 only, and for a network whose IPv4 block is not known before allocation).
    pub fn load(args: &CmdArgs, need: Need) -> Result<Network> {
        let mut shared = network::Network::<Keys>::load(args, need)?;
        let k = shared.keys();
        let pod = k
            .pod
            .resolve("ipip", DEFAULT_HOST_VETH_PREFIX, need == Need::Required)?;
        let device = k.device.clone().unwrap_or_else(|| DEFAULT_DEVICE.into());
        let cross_subnet = k.cross_subnet.unwrap_or(false);
        if need == Need::Required {
            validate_ifname(&device)
                .map_err(|e| Error::invalid_config(format!("\"device\": {e}")))?;
            routed::settle_network(&mut shared)?;
            block_of(&shared.own_ranges)?;
        }
        Ok(Network {
            host_veth_prefix: pod.host_veth_prefix,
            pod_settings: pod.settings,
            device,
            cross_subnet,
            shared,
        })
    }

    /// The tunnel this network wants on this node, and the underlay MTU (the link of the
    /// default route's, else 1500) its MTU derives from unless `mtu` is set. A named device
    /// takes the underlay address of that link as its local end.
    pub fn tunnel(&self, node: &mut Netlink) -> Result<(TunnelConf, u32)> {
        let local = if self.device == DEFAULT_DEVICE {
            None
        } else {
            ipip::uplink_address(node)?
        };
        let conf = TunnelConf {
            device: self.device.clone(),
            mtu: self.configured_mtu(),
            block: block_of(&self.own_ranges)?,
            local,
            cross_subnet: self.cross_subnet,
        };
        Ok((conf, uplink_mtu(node)?.unwrap_or(FALLBACK_MTU)))
    }
}

/// The node's block (its first address goes on the tunnel): the first IPv4 range. Code 7 for
/// any IPv6 range, or for no IPv4 range known before allocation.
fn block_of(ranges: &[IpNetwork]) -> Result<IpNetwork> {
    if let Some(v6) = ranges.iter().find(|r| r.is_ipv6()) {
        return Err(Error::invalid_config(format!(
            "the pod range {v6} is IPv6, but ipip carries IPv4 only: remove the IPv6 range \
             (ipam ranges or FLANNEL_IPV6_SUBNET), or use the vxlan data plane for IPv6"
        )));
    }
    ranges.iter().find(|r| r.is_ipv4()).copied().ok_or_else(|| {
        Error::invalid_config(
            "ipip needs the node's IPv4 block before allocating (its first address goes on the \
             tunnel): configure host-local IPAM with an IPv4 range, or drop \"ipam\" to derive \
             it from the subnet file",
        )
    })
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
            "cniVersion": "1.1.0", "name": "pods", "type": "ipip",
            "subnetFile": "/nonexistent/twill/subnet.env",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]}
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn load(extra: Value) -> Result<Network> {
        Network::load(&args(&base(extra)), Need::Required)
    }

    #[test]
    fn defaults_are_tunl0_without_cross_subnet_and_the_pod_keys_are_shared() {
        let n = load(json!({})).unwrap();
        assert_eq!(n.device, "tunl0");
        assert!(!n.cross_subnet);
        assert_eq!(n.host_veth_prefix, DEFAULT_HOST_VETH_PREFIX);
        let n = load(
            json!({"device": "twip0", "crossSubnet": true, "hostVethPrefix": "cali",
            "container_settings": {"allow_ip_forwarding": true}}),
        )
        .unwrap();
        assert_eq!((n.device.as_str(), n.cross_subnet), ("twip0", true));
        assert_eq!(n.host_veth_prefix, "cali");
        assert!(n.pod_settings.allow_ip_forwarding);
        for k in routed::POD_KEY_NAMES {
            assert!(OWN_KEYS.contains(k), "{k} is read, so it is an own key");
        }
    }

    #[test]
    fn ipv6_ranges_bad_devices_and_refused_keys_are_code_7_naming_them() {
        let dual = json!({"ipam": {"type": "host-local", "ranges": [
            [{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]]}});
        for (extra, needle) in [
            (dual, "IPv4 only"),
            (json!({"device": "a/b"}), "\"device\""),
            (json!({"device": "much-too-long-name"}), "\"device\""),
            (json!({"policy": {}}), "\"policy\""),
            (json!({"hostVethPrefix": "much-too-long"}), "hostVethPrefix"),
            (json!({"crosssubnet": true}), "crossSubnet"),
            (json!({"ipam": {}}), "\"ipam\""),
        ] {
            let e = load(extra.clone()).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{extra}: {e}");
            assert!(e.msg.contains(needle), "{extra}: {e}");
        }
        // DEL and GC still release what such a config may have left.
        let n = Network::load(&args(&base(json!({"policy": {}}))), Need::Release);
        assert!(n.is_ok());
    }
}
