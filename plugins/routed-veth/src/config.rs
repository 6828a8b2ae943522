//! The network config of routed-veth: its own keys and their defaults. What every data plane
//! shares (IPAM, the subnet file, MTU, the cluster view, masquerade and forward rules) is
//! `twill::network`; this plugin's [`Network`] derefs to it.

use std::ops::Deref;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use twill::network::{self, CommonKeys, Need, PluginKeys};
use twill::node::peers::PeersConf;
use twill::node::routed::Routed;
use twill::pod::routed::{self, POD_KEY_NAMES, PodKeys, PodSettings};
use twill::{CmdArgs, Result};

/// Host veth name prefix unless `hostVethPrefix` says otherwise.
pub const DEFAULT_HOST_VETH_PREFIX: &str = "twr";

/// The plugin's own keys (everything else is kept in `rest`, so IPAM delegation and GC see the
/// config as given).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Keys {
    /// The routed pod keys (`hostVethPrefix`, `containerSettings`, and the Calico keys
    /// refused rather than ignored), shared with the other routed plugins.
    #[serde(flatten)]
    pub pod: PodKeys,
    /// The keys every twill plugin shares (`mtu`, `subnetFile`, `dataDir`, `clusterNetworks`,
    /// `forwardRules`).
    #[serde(flatten)]
    pub common: CommonKeys,
    /// `peers` / `peersFile` / `runDir`: the cluster view and where run state lives.
    #[serde(flatten)]
    pub peers: PeersConf,
    /// Every other key, kept as given (Calico's logging and datastore keys land here: they
    /// change nothing in the data plane).
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
pub const OWN_KEYS: &[&str] = POD_KEY_NAMES;

/// The network config with every default applied: the shared part (deref) and the routed
/// plane's.
#[derive(Debug, Clone)]
pub struct Network {
    /// What every data plane shares.
    pub shared: network::Network<Keys>,
    /// Prefix of the host veth names.
    pub host_veth_prefix: String,
    /// How the pod is left (`containerSettings`).
    pub pod_settings: PodSettings,
}

impl Deref for Network {
    type Target = network::Network<Keys>;

    fn deref(&self) -> &Self::Target {
        &self.shared
    }
}

impl Network {
    /// Parses the config ([`network::Network::load`]) and applies this plugin's defaults.
    /// For [`Need::Required`] its keys are checked before anything on the node changes
    /// (`hostVethPrefix`, the Calico keys it refuses, a layer-2 only `"ipam": {}`). Without
    /// `peers` or `peersFile` the cluster view is empty rather than absent: the node's own
    /// blocks are still blackholed by the one reconcile.
    pub fn load(args: &CmdArgs, need: Need) -> Result<Network> {
        let mut shared = network::Network::<Keys>::load(args, need)?;
        let pod = shared.keys().pod.resolve(
            "routed-veth",
            DEFAULT_HOST_VETH_PREFIX,
            need == Need::Required,
        )?;
        if need == Need::Required {
            routed::settle_network(&mut shared)?;
        }
        Ok(Network {
            host_veth_prefix: pod.host_veth_prefix,
            pod_settings: pod.settings,
            shared,
        })
    }

    /// The routed plane of this network on this node: its own blocks (the configured ranges
    /// and `pod_subnets`) blackholed, the peers' blocks routed via their node IPs.
    pub fn plane(&self, pod_subnets: &[IpNetwork]) -> Routed {
        Routed::new(&self.own_ranges_with(pod_subnets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use twill::cni::skeleton::Command;
    use twill::code;
    use twill::node::peers::ViewSource;

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
            "cniVersion": "1.1.0", "name": "pods", "type": "routed-veth",
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
    fn defaults_and_an_empty_view_for_the_blackhole() {
        let n = load(json!({})).unwrap();
        assert_eq!(n.host_veth_prefix, DEFAULT_HOST_VETH_PREFIX);
        assert!(!n.pod_settings.allow_ip_forwarding);
        assert_eq!(n.view, Some(ViewSource::Inline(json!([]))));
        let r = |s: &str| s.parse::<IpNetwork>().unwrap();
        assert_eq!(n.plane(&[]).blocks(), &[r("10.1.0.0/24")]);
        let with_file = load(json!({"peersFile": "/p"})).unwrap();
        assert_eq!(with_file.view, Some(ViewSource::File("/p".into())));
    }

    #[test]
    fn own_keys_in_both_spellings() {
        let n = load(json!({"hostVethPrefix": "cali",
            "containerSettings": {"allowIpForwarding": true}}))
        .unwrap();
        assert_eq!(n.host_veth_prefix, "cali");
        assert!(n.pod_settings.allow_ip_forwarding);
        let n = load(json!({"container_settings": {"allow_ip_forwarding": true},
            "log_level": "info", "datastore_type": "kubernetes", "nodename": "n1"}))
        .unwrap();
        assert!(n.pod_settings.allow_ip_forwarding);
        let round = serde_json::to_value(&n.conf).unwrap();
        assert_eq!(round["log_level"], "info", "Calico's inert keys are kept");
    }

    #[test]
    fn unsupported_or_bad_keys_are_code_7_naming_the_key() {
        for (extra, key) in [
            (json!({"hostVethPrefix": "much-too-long"}), "hostVethPrefix"),
            (json!({"hostVethPrefix": ""}), "hostVethPrefix"),
            (json!({"hostVethPrefix": "a/b"}), "hostVethPrefix"),
            (json!({"policy": {"type": "k8s"}}), "\"policy\""),
            (
                json!({"feature_control": {"floating_ips": true}}),
                "floating_ips",
            ),
            (json!({"num_queues": 4}), "\"num_queues\""),
            (
                json!({"containerSettings": {"allowIPForwarding": true}}),
                "allowIPForwarding",
            ),
            (json!({"hostvethprefix": "x"}), "\"hostVethPrefix\""),
            (json!({"ipam": {}}), "\"ipam\""),
        ] {
            let e = load(extra.clone()).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{extra}: {e}");
            assert!(e.msg.contains(key), "{extra}: {e}");
        }
        let n = load(json!({"feature_control": {"floating_ips": false}, "num_queues": 1}));
        assert!(n.is_ok());
        // DEL and GC still release what such a config may have left.
        let n = Network::load(
            &args(&base(
                json!({"policy": {}, "hostVethPrefix": "much-too-long"}),
            )),
            Need::Release,
        );
        assert!(n.is_ok());
    }
}
