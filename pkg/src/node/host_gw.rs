//! flannel's host-gw data plane on the node: one route `podCIDR via nodeIP` per other node.
//! It needs every node IP on a subnet of this node (one L2 segment) and of the pod CIDR's
//! family; an entry that is not is skipped, with its reason.

use crate::node::peers::Peer;
use crate::node::reconcile::{DataPlane, Kind, Object, PeerRoute, Reject};
use ipnetwork::IpNetwork;

/// host-gw: routes only, via the peers' node IPs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostGw;

impl DataPlane for HostGw {
    fn key(&self) -> String {
        "host-gw".into()
    }

    fn owns(&self) -> &'static [Kind] {
        &[Kind::Route]
    }

    fn reject(&self, p: &Peer, local: &[IpNetwork]) -> Option<Reject> {
        if p.node_ip.is_ipv4() != p.pod_cidr.is_ipv4() {
            let reason = format!(
                "host-gw cannot route podCIDR {} via nodeIP {} (different IP families): list an \
                 IPv{} nodeIP for it",
                p.pod_cidr,
                p.node_ip,
                if p.pod_cidr.is_ipv4() { 4 } else { 6 }
            );
            return Some(Reject {
                reason,
                depends_on_node: false,
            });
        }
        let on_link = local.iter().any(|a| {
            let host_only = a.prefix() == if a.is_ipv4() { 32 } else { 128 };
            !host_only && a.contains(p.node_ip)
        });
        if !on_link {
            let reason = format!(
                "nodeIP {} is on no subnet of this node: host-gw needs the nodes on one L2 \
                 segment (use an overlay for nodes behind a router)",
                p.node_ip
            );
            return Some(Reject {
                reason,
                depends_on_node: true,
            });
        }
        None
    }

    fn desired(&self, peers: &[&Peer]) -> Vec<Object> {
        peers
            .iter()
            .map(|p| Object::Route(PeerRoute::via(p.pod_cidr, p.node_ip)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(node: &str, cidr: &str) -> Peer {
        Peer {
            node_ip: node.parse().unwrap(),
            pod_cidr: cidr.parse().unwrap(),
            vtep_mac: None,
        }
    }

    #[test]
    fn routes_via_node_ips_and_rejects_off_link_or_wrong_family() {
        let local: Vec<IpNetwork> = ["10.0.0.1/24", "10.9.9.9/32", "fd00::1/64"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let ok = [
            peer("10.0.0.2", "10.244.2.0/24"),
            peer("fd00::2", "fd10:2::/64"),
        ];
        assert!(ok.iter().all(|p| HostGw.reject(p, &local).is_none()));
        assert_eq!(
            HostGw.desired(&[&ok[0], &ok[1]]),
            vec![
                Object::Route(PeerRoute::via(ok[0].pod_cidr, ok[0].node_ip)),
                Object::Route(PeerRoute::via(ok[1].pod_cidr, ok[1].node_ip)),
            ]
        );
        let fam = HostGw
            .reject(&peer("10.0.0.2", "fd10:2::/64"), &local)
            .unwrap();
        assert!(
            fam.reason.contains("IPv6 nodeIP") && !fam.depends_on_node,
            "{fam:?}"
        );
        for off in ["10.0.1.2", "10.9.9.10"] {
            let why = HostGw.reject(&peer(off, "10.244.3.0/24"), &local).unwrap();
            assert!(
                why.reason.contains(off) && why.reason.contains("L2"),
                "{why:?}"
            );
            assert!(
                why.depends_on_node,
                "an address may bring the node onto that segment"
            );
        }
    }
}
