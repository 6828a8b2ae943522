//! The routed-veth cluster the conformance suites share: the bridge-host-gw [`Cluster`]'s
//! fabric, subnet files and peers files with a routed-veth config, and readers of what the
//! plugin leaves on a node (host routes, blackholes, peer routes, host veths).
#![allow(missing_docs)]

use crate::hostgw::{self, Cluster, TWILL_PROTO};
use crate::{Fabric, Netns, Node, Pod, twill_bin, unique_name};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

/// The host veth name prefix the tests configure (not the default, so the key is exercised).
pub const PREFIX: &str = "rvt";
/// Calico's host-side MAC, which every routed host veth carries.
pub const HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// The pods' IPv4 gateway.
pub const GW4: &str = "169.254.1.1";
/// The pods' IPv6 gateway: the host veth's EUI-64 link-local address.
pub const GW6: &str = "fe80::ecee:eeff:feee:eeee";

pub fn plugin() -> PathBuf {
    twill_bin("routed-veth")
}

/// A [`Cluster`] (node `i`: underlay `10.99.0.(i+1)`, block `10.244.(i+1).0/24`, dual-stack
/// `fd00:10:0:(i+1)::/64`) configured for routed-veth.
pub struct RoutedCluster {
    pub c: Cluster,
}

impl RoutedCluster {
    pub fn new(fab: Fabric) -> RoutedCluster {
        RoutedCluster {
            c: Cluster::new(fab),
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        self.c.node(i)
    }

    /// The 1.1.0 config of node `i`.
    pub fn conf(&self, i: usize) -> Value {
        self.conf_v(i, "1.1.0")
    }

    /// The config of node `i` at CNI version `version` (its subnet file, dataDir, peersFile,
    /// runDir; host veth prefix [`PREFIX`]).
    pub fn conf_v(&self, i: usize, version: &str) -> Value {
        let n = self.node(i);
        json!({
            "cniVersion": version,
            "name": self.c.net,
            "type": "routed-veth",
            "hostVethPrefix": PREFIX,
            "subnetFile": n.subnet_file,
            "dataDir": n.data_dir,
            "peersFile": n.peers_file,
            "runDir": n.run_dir,
        })
    }

    pub fn add_pod(&self, i: usize) -> Pod {
        self.add_pod_with(i, &self.conf(i))
    }

    pub fn add_pod_with(&self, i: usize, conf: &Value) -> Pod {
        self.node(i).add_pod(&plugin(), conf, &unique_name("c"))
    }

    /// Reservation files (IP → owner) of node `i` for this network.
    pub fn reservations(&self, i: usize) -> BTreeMap<String, String> {
        self.c.reservations(i)
    }

    /// Node `i`'s own blocks, as its blackholes must be.
    pub fn own_blocks(&self, i: usize) -> BTreeSet<String> {
        let mut b = BTreeSet::from([hostgw::pod_cidr4(i)]);
        if self.c.dual {
            b.insert(hostgw::pod_cidr6(i));
        }
        b
    }

    /// Asserts node `i` holds nothing of any pod after all DELs (no host veth, host route or
    /// reservation, nothing naming a pod address), while its node state stays: the blackholes
    /// of its blocks and the peer routes.
    pub fn assert_clean_after_dels(&self, i: usize, pod_ips: &[IpAddr]) {
        let n = self.node(i);
        let ctx = format!("node {i} after all DELs");
        assert_eq!(host_veths(&n.ns), Vec::<String>::new(), "{ctx}: host veths");
        assert_eq!(host_routes(&n.ns), BTreeMap::new(), "{ctx}: host routes");
        assert_eq!(self.reservations(i), BTreeMap::new(), "{ctx}: reservations");
        for r in n.ns.routes() {
            let dst = r.dst.split('/').next().unwrap_or("");
            assert!(
                !pod_ips.iter().any(|ip| ip.to_string() == dst),
                "{ctx}: per-pod route left: {}",
                r.raw
            );
        }
        assert_eq!(
            blackholes(&n.ns),
            self.own_blocks(i),
            "{ctx}: blackholes stay"
        );
        assert_eq!(
            peer_routes(&n.ns),
            self.c.expected_peer_routes(i),
            "{ctx}: peer routes stay"
        );
    }
}

/// Names of the routed host veths ([`PREFIX`]`*`) in a namespace.
pub fn host_veths(ns: &Netns) -> Vec<String> {
    ns.links()
        .into_iter()
        .filter(|l| l.name.starts_with(PREFIX))
        .map(|l| l.name)
        .collect()
}

/// twill's per-pod host routes in the main table: destination (an address) → device.
pub fn host_routes(ns: &Netns) -> BTreeMap<String, String> {
    ns.main_routes()
        .into_iter()
        .filter(|r| {
            r.protocol.as_deref() == Some(TWILL_PROTO) && r.kind == "unicast" && r.gateway.is_none()
        })
        .map(|r| (r.dst, r.dev.unwrap_or_default()))
        .collect()
}

/// twill's blackhole routes in the main table (destinations).
pub fn blackholes(ns: &Netns) -> BTreeSet<String> {
    ns.main_routes()
        .into_iter()
        .filter(|r| r.protocol.as_deref() == Some(TWILL_PROTO) && r.kind == "blackhole")
        .map(|r| r.dst)
        .collect()
}

/// twill's peer routes (with a gateway) in the main table: (destination, gateway).
pub fn peer_routes(ns: &Netns) -> BTreeSet<(String, String)> {
    ns.main_routes()
        .into_iter()
        .filter(|r| r.protocol.as_deref() == Some(TWILL_PROTO))
        .filter_map(|r| Some((r.dst, r.gateway?.to_string())))
        .collect()
}

/// The host veth named by a routed-veth ADD result (interfaces[0]).
pub fn host_veth(result: &Value) -> String {
    result["interfaces"][0]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no host veth in result {result}"))
        .to_string()
}

/// A GC or STATUS call of routed-veth on `node` (no attachment variables).
pub fn plain(node: &Node, cmd: &str, conf: &Value) -> crate::Outcome {
    crate::Invocation::new(plugin())
        .command(cmd)
        .stdin_json(conf)
        .on(node.ns.path())
        .run()
}
