//! The data planes by plugin `type`: how a node daemon (twilld) knows what a network's
//! cross-node state is without running its plugin. Each plugin with a cluster view has one
//! match arm here building its [`DataPlane`] from its config.

use serde_json::Value;

use crate::Result;
use crate::kernel::netlink::Netlink;
use crate::network::{Need, Network, SharedKeys};
use crate::node::host_gw::HostGw;
use crate::node::reconcile::DataPlane;
use crate::node::routed::Routed;
use crate::node::vxlan::{Vxlan, VxlanKeys};

/// The data plane of a network whose plugin is `plugin_type`, built from its config (the
/// plugin's entry, as JSON) on the node `node`; `None` for a type that has no node state
/// twill knows of. A config the plane cannot use is an error saying why.
pub fn plane_for(
    plugin_type: &str,
    config: &Value,
    node: &mut Netlink,
) -> Result<Option<Box<dyn DataPlane>>> {
    // host-gw needs neither; tunnel planes read their keys and the node's uplink.
    Ok(match plugin_type {
        "bridge-host-gw" => Some(Box::new(HostGw)),
        "routed-veth" => Some(Box::new(Routed::new(&network(config)?.own_ranges))),
        "vxlan" => Some(Box::new(vxlan_plane(config, node)?)),
        _ => None,
    })
}

/// The network a config describes, with the shared keys only (the plugin's stay in `rest`).
fn network(config: &Value) -> Result<Network<SharedKeys>> {
    let bytes = serde_json::to_vec(config)
        .map_err(|e| crate::Error::invalid_config(format!("network config: {e}")))?;
    Network::<SharedKeys>::from_bytes(&bytes, Need::Required)
}

/// The vxlan plane of a config, planned as the vxlan plugin's ADD plans it (its devices are
/// ensured by [`DataPlane::prepare`] before each reconcile).
fn vxlan_plane(config: &Value, node: &mut Netlink) -> Result<Vxlan> {
    let net = network(config)?;
    let keys: VxlanKeys = serde_json::from_value(config.clone())
        .map_err(|e| crate::Error::invalid_config(format!("vxlan keys: {e}")))?;
    let pods = keys.pod_mode()?;
    let conf = keys.conf(
        pods,
        net.configured_mtu(),
        net.subnet.as_ref().map(|s| s.mtu),
    );
    conf.validate()?;
    let view = net.view.as_ref().and_then(|v| v.read().ok());
    Vxlan::plan_network(node, &conf, pods, &net.own_ranges, view.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_host_gw_is_host_gw_and_an_unknown_type_has_no_plane() {
        let mut nl = Netlink::new().unwrap();
        let conf = serde_json::json!({"type": "bridge-host-gw"});
        let plane = plane_for("bridge-host-gw", &conf, &mut nl)
            .unwrap()
            .unwrap();
        assert_eq!(plane.key(), HostGw.key());
        assert!(plane_for("portmap", &conf, &mut nl).unwrap().is_none());
    }

    #[test]
    fn routed_veth_blackholes_the_blocks_its_ipam_gives() {
        let mut nl = Netlink::new().unwrap();
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "r", "type": "routed-veth",
            "subnetFile": "/nonexistent/twill/subnet.env",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]]}});
        let plane = plane_for("routed-veth", &conf, &mut nl).unwrap().unwrap();
        let blocks = vec!["10.9.0.0/24".parse().unwrap()];
        assert_eq!(plane.key(), Routed::new(&blocks).key());
    }

    #[test]
    fn vxlan_plans_as_the_plugin_and_refuses_a_bad_vni() {
        let mut nl = Netlink::new().unwrap();
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "v", "type": "vxlan",
            "pods": "routed", "nodeIP": "127.0.0.1",
            "subnetFile": "/nonexistent/twill/subnet.env",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]]}});
        let plane = plane_for("vxlan", &conf, &mut nl).unwrap().unwrap();
        let key = plane.key();
        assert!(key.contains("vxlan.twill") && key.contains("4096"), "{key}");
        assert!(key.contains("blackhole 10.9.0.0/24"), "{key}");
        let mut bad = conf.clone();
        bad["vni"] = serde_json::json!(0);
        let e = plane_for("vxlan", &bad, &mut nl).err().unwrap();
        assert_eq!(e.code, crate::code::INVALID_CONFIG);
        assert!(e.msg.contains("\"vni\""), "{e}");
    }
}
