//! Crash safety of every plugin's ADD, proven from outside by fault injection (strace): see
//! `conformance/faults/driver.rs` for the method and `conformance/faults/run.sh` to print the
//! table. Covered here, bounded to about two minutes on a 2-core machine: every `socket`,
//! netlink `sendto` and `recvfrom`, `openat`, `write`, `pwrite64`, `linkat`, `flock` and
//! `setns` of one ADD, each failed with an errno and each turned into a SIGKILL at its n-th
//! call, for every n. (The plugins send with `sendto` only; `sendmsg` and `renameat` do not
//! occur in an ADD, which strace's count confirms as zero steps.)

#[path = "../faults/driver.rs"]
mod driver;

use conformance::hostgw::Cluster;
use conformance::{Fabric, Node, TempDir};
use driver::{Fault, PluginUnderTest, run_plugin, table};
use serde_json::{Value, json};

fn bridge_conf(c: &Cluster, n: &Node) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": c.net, "type": "bridge-host-gw", "bridge": "cni0",
        "subnetFile": n.subnet_file, "dataDir": n.data_dir, "peersFile": n.peers_file,
        "runDir": n.run_dir, "ipMasq": true,
    })
}

fn routed_conf(c: &Cluster, n: &Node) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": c.net, "type": "routed-veth",
        "hostVethPrefix": conformance::routed::PREFIX,
        "subnetFile": n.subnet_file, "dataDir": n.data_dir, "peersFile": n.peers_file,
        "runDir": n.run_dir,
    })
}

fn host_local_conf(c: &Cluster, n: &Node) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": c.net, "type": "host-local",
        "ipam": {
            "type": "host-local", "dataDir": n.data_dir,
            "ranges": [[{"subnet": "10.250.0.0/24"}]],
        },
    })
}

/// Every plugin on main; node `i` of the cluster serves entry `i`.
const PLUGINS: &[PluginUnderTest] = &[
    PluginUnderTest {
        bin: "bridge-host-gw",
        conf: bridge_conf,
    },
    PluginUnderTest {
        bin: "routed-veth",
        conf: routed_conf,
    },
    PluginUnderTest {
        bin: "host-local",
        conf: host_local_conf,
    },
];

const SYSCALLS: &[(&str, &str)] = &[
    ("socket", "error=EMFILE"),
    ("sendto", "error=ENOBUFS"),
    ("recvfrom", "error=ENOBUFS"),
    ("openat", "error=EACCES"),
    ("write", "error=ENOSPC"),
    ("pwrite64", "error=ENOSPC"),
    ("linkat", "error=EEXIST"),
    ("flock", "error=EINTR"),
    ("setns", "error=EINVAL"),
    ("sendmsg", "error=ENOBUFS"),
    ("renameat2", "error=EIO"),
];

fn faults() -> Vec<Fault> {
    let mut out = Vec::new();
    for (syscall, errno) in SYSCALLS {
        out.push(Fault {
            syscall,
            action: errno,
        });
        out.push(Fault {
            syscall,
            action: "signal=KILL",
        });
    }
    out
}

/// For every injected failure or kill at every call of one ADD, each plugin either rolls back
/// on its own (error object, nothing of the pod left) or, killed, leaves nothing of the pod
/// after a DEL and a GC.
#[test]
fn every_injected_fault_in_add_leaves_nothing_of_the_pod() {
    let c = Cluster::new(Fabric::single_l2(PLUGINS.len()));
    let scratch = TempDir::new("faults");
    let faults = faults();
    let mut rows = Vec::new();
    for (i, p) in PLUGINS.iter().enumerate() {
        rows.extend(run_plugin(p, &c, i, &faults, scratch.path()));
    }
    let text = table(&rows);
    println!("{text}");
    let steps: usize = rows.iter().map(|r| r.calls).sum();
    assert!(steps > 100, "too few fault steps ({steps}):\n{text}");
    assert!(
        rows.iter().all(|r| r.leftovers.is_empty()),
        "leftovers after injected faults:\n{text}"
    );
}
