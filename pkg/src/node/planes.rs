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

/// The data plane of a network whose plugin is `plugin_type`, built from its config (the
/// plugin's entry, as JSON) on the node `node`; `None` for a type that has no node state
/// twill knows of. A config the plane cannot use is an error saying why.
pub fn plane_for(
    plugin_type: &str,
    config: &Value,
    node: &mut Netlink,
) -> Result<Option<Box<dyn DataPlane>>> {
    // host-gw needs neither; tunnel planes read their keys and the node's uplink.
    let _ = node;
    Ok(match plugin_type {
        "bridge-host-gw" => Some(Box::new(HostGw)),
        "routed-veth" => Some(Box::new(Routed::new(&own_ranges(config)?))),
        _ => None,
    })
}

/// The pod blocks a network owns on this node, as its plugin's ADD derives them (host-local's
/// ranges, or the subnet file's subnets).
fn own_ranges(config: &Value) -> Result<Vec<ipnetwork::IpNetwork>> {
    let bytes = serde_json::to_vec(config)
        .map_err(|e| crate::Error::invalid_config(format!("network config: {e}")))?;
    Ok(Network::<SharedKeys>::from_bytes(&bytes, Need::Required)?.own_ranges)
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
}
