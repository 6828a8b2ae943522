//! The routed data plane on the node (Calico's BGP mode without BGP): the node's own pod blocks
//! are blackholed, so a packet to an unallocated address of a block is dropped here instead of
//! following the default route; every other node's block is routed via its node IP, exactly as
//! host-gw does (the nodes share an L2 segment). Each pod's own `/32` (`/128`) host route is pod
//! state, made by [`crate::pod::routed`], and is longer than the blackhole.

use crate::node::host_gw::HostGw;
use crate::node::peers::Peer;
use crate::node::reconcile::{DataPlane, Kind, Object, Reject};
use ipnetwork::IpNetwork;

/// The routed plane of one network: its own blocks (taken at construction) and host-gw routes
/// to the peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    blocks: Vec<IpNetwork>,
}

impl Routed {
    /// The plane for a network whose pods on this node take their addresses from `blocks`
    /// (host-local's ranges, or the pods' subnets): each reduced to its network, sorted,
    /// without duplicates.
    pub fn new(blocks: &[IpNetwork]) -> Routed {
        let mut blocks: Vec<IpNetwork> = blocks
            .iter()
            .map(|b| IpNetwork::new(b.network(), b.prefix()).unwrap_or(*b))
            .collect();
        blocks.sort();
        blocks.dedup();
        Routed { blocks }
    }

    /// The node's own blocks, as blackholed.
    pub fn blocks(&self) -> &[IpNetwork] {
        &self.blocks
    }
}

impl DataPlane for Routed {
    fn key(&self) -> String {
        let blocks: Vec<String> = self.blocks.iter().map(ToString::to_string).collect();
        format!("routed {}", blocks.join(","))
    }

    fn owns(&self) -> &'static [Kind] {
        &[Kind::Route, Kind::Blackhole]
    }

    fn reject(&self, p: &Peer, local: &[IpNetwork]) -> Option<Reject> {
        HostGw.reject(p, local)
    }

    fn desired(&self, peers: &[&Peer]) -> Vec<Object> {
        let mut out = HostGw.desired(peers);
        out.extend(self.blocks.iter().map(|b| Object::blackhole(*b)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::reconcile::PeerRoute;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn wants_peer_routes_and_a_blackhole_per_own_block() {
        let plane = Routed::new(&[
            net("10.244.1.7/24"),
            net("fd00:1::/64"),
            net("10.244.1.0/24"),
        ]);
        assert_eq!(plane.blocks(), &[net("10.244.1.0/24"), net("fd00:1::/64")]);
        let peer = Peer {
            node_ip: "10.0.0.2".parse().unwrap(),
            pod_cidr: net("10.244.2.0/24"),
            vtep_mac: None,
        };
        assert_eq!(
            plane.desired(&[&peer]),
            vec![
                Object::Route(PeerRoute::via(peer.pod_cidr, peer.node_ip)),
                Object::blackhole(net("10.244.1.0/24")),
                Object::blackhole(net("fd00:1::/64")),
            ]
        );
        assert_eq!(plane.key(), "routed 10.244.1.0/24,fd00:1::/64");
        assert_ne!(plane.key(), Routed::new(&[net("10.244.9.0/24")]).key());
        let local = [net("10.0.0.1/24")];
        assert!(plane.reject(&peer, &local).is_none());
        let far = Peer {
            node_ip: "10.0.9.2".parse().unwrap(),
            ..peer
        };
        assert!(plane.reject(&far, &local).is_some(), "host-gw's rules");
    }
}
