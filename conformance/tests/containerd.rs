//! containerd 1.6 CRI (what kubelet drives) runs pods on every twill plugin: RunPodSandbox
//! (with a port mapping), PodSandboxStatus (the IP twill gave), StopPodSandbox and
//! RemovePodSandbox for 3 pods; the pods reach each other, a hostPort reaches a pod from another
//! namespace, and after removal no reservation, link or portmap chain remains.
//!
//! containerd runs privately under `nsenter --net=<test node>` (see `conformance::containerd`);
//! the CRI client is `conformance/clients/cri.py`.

use conformance::Fabric;
use conformance::containerd::Containerd;
use conformance::hostgw::{reservations, tw_links};
use conformance::runtimes::{
    Listener, NetSpec, PLUGINS, PluginUnderTest, parse_ip, pid_netns, ping_from, portmap_chains,
    report, tcp_exchange,
};
use std::collections::BTreeSet;

const PODS: usize = 3;
const POD_PORT: u16 = 8080;
const FIRST_HOST_PORT: u16 = 18090;

fn pods_on_plugin(plugin: &PluginUnderTest) {
    let fab = Fabric::single_l2(1);
    let node = fab.node(0);
    let outside = fab.attach_host("out", &["10.99.0.200/24"]);
    let net = NetSpec::new(node, "cd");
    let cd = Containerd::start(&node.ns, plugin, &net);
    let ctx = format!("containerd CRI + {}", plugin.name);

    // RunPodSandbox with a hostPort each; PodSandboxStatus reports twill's address.
    let mut pods = Vec::new();
    for k in 0..PODS {
        let host_port = FIRST_HOST_PORT + k as u16;
        let mapping = format!("tcp:{POD_PORT}:{host_port}");
        let id = cd.run_pod(&format!("pod{k}"), &[&mapping]);
        let status = cd.status(&id);
        assert_eq!(status.state, "SANDBOX_READY", "{ctx}: pod{k}");
        let ip = parse_ip(&status.ip, "PodSandboxStatus ip");
        assert!(
            net.holds(ip),
            "{ctx}: pod{k}'s {ip} is not in {}",
            net.subnet()
        );
        let netns = pid_netns(status.pid);
        let inside = conformance::runtimes::exec_in(&netns, &["ip", "-o", "-4", "addr"]);
        assert!(
            String::from_utf8_lossy(&inside.stdout).contains(&format!(" {ip}/24 ")),
            "{ctx}: pod{k}'s netns must hold {ip}"
        );
        report(&format!(
            "{ctx}: RunPodSandbox pod{k} (hostPort {host_port}); PodSandboxStatus says {ip}, \
             which the pod holds"
        ));
        pods.push((id, ip, netns, host_port));
    }
    let distinct: BTreeSet<_> = pods.iter().map(|p| p.1).collect();
    assert_eq!(distinct.len(), PODS, "{ctx}: every pod its own address");
    assert_eq!(
        reservations(node, &net.name).len(),
        PODS,
        "{ctx}: reservations"
    );
    assert_eq!(tw_links(&node.ns).len(), PODS, "{ctx}: host veths");

    // The pods reach each other.
    for (a, (_, _, from, _)) in pods.iter().enumerate() {
        for (b, (_, to, _, _)) in pods.iter().enumerate().filter(|(b, _)| *b != a) {
            assert!(
                ping_from(from, *to),
                "{ctx}: pod{a} must reach pod{b} ({to})"
            );
        }
    }
    report(&format!("{ctx}: every pod pings every other pod"));

    // Each pod's hostPort reaches it from another namespace.
    for (k, (_, _, netns, host_port)) in pods.iter().enumerate() {
        let greeting = format!("pod{k}");
        let _listener = Listener::start(netns, POD_PORT, &greeting);
        let got = tcp_exchange(outside.path(), node.ip.into(), *host_port, "");
        assert_eq!(
            got.as_deref(),
            Some(greeting.as_str()),
            "{ctx}: {}:{host_port} must reach pod{k}'s port {POD_PORT}",
            node.ip
        );
    }
    report(&format!(
        "{ctx}: hostPorts {FIRST_HOST_PORT}.. reach their pods from another namespace"
    ));

    // StopPodSandbox tears the network down; RemovePodSandbox removes the pod.
    for (k, (id, _, _, _)) in pods.iter().enumerate() {
        cd.cri_ok(&["stopp", id]);
        assert_eq!(
            cd.status(id).state,
            "SANDBOX_NOTREADY",
            "{ctx}: pod{k} after StopPodSandbox"
        );
        cd.cri_ok(&["rmp", id]);
    }
    assert_eq!(
        reservations(node, &net.name).len(),
        0,
        "{ctx}: reservations left"
    );
    assert_eq!(
        tw_links(&node.ns),
        Vec::<String>::new(),
        "{ctx}: links left"
    );
    assert_eq!(
        portmap_chains(&node.ns),
        Vec::<String>::new(),
        "{ctx}: portmap chains left"
    );
    report(&format!(
        "{ctx}: after StopPodSandbox and RemovePodSandbox of {PODS} pods no reservation, host \
         veth or portmap chain is left"
    ));
}

#[test]
fn containerd_cri_runs_three_pods_that_reach_each_other_on_every_plugin() {
    for plugin in PLUGINS {
        pods_on_plugin(plugin);
    }
}
