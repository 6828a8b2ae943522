//! podman 4 (Debian's 4.3, CNI backend) runs containers on every twill plugin: a container gets
//! its address from the plugin, two containers reach each other, a published port works
//! through `portmap` from another namespace, and after `podman rm` nothing is left.
//!
//! podman runs under `nsenter --net=<test node>` with private root, runroot and
//! `CONTAINERS_CONF` (see `conformance::podman`); the image is a local busybox-static import.

use conformance::Fabric;
use conformance::hostgw::{reservations, tw_links};
use conformance::podman::{IMAGE, Podman};
use conformance::runtimes::{
    NetSpec, PLUGINS, PluginUnderTest, parse_ip, portmap_chains, report, tcp_exchange,
};

const HOST_PORT: &str = "18080";

fn containers_on_plugin(plugin: &PluginUnderTest) {
    let fab = Fabric::single_l2(1);
    let node = fab.node(0);
    let outside = fab.attach_host("out", &["10.99.0.200/24"]);
    let net = NetSpec::new(node, "pm");
    let podman = Podman::new(&node.ns, plugin, &net);
    let ctx = format!("podman + {}", plugin.name);

    // A one-shot container sees the plugin's address on its eth0.
    let out = podman.ok(&[
        "run",
        "--rm",
        "--network",
        &net.name,
        IMAGE,
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    let cidr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("{ctx}: no IPv4 address on the container's eth0: {out}"));
    let ip = parse_ip(cidr.split('/').next().unwrap_or(""), "container address");
    assert!(net.holds(ip), "{ctx}: {ip} is not in {}", net.subnet());
    assert_eq!(
        tw_links(&node.ns),
        Vec::<String>::new(),
        "{ctx}: the --rm container's host veth must be gone"
    );
    report(&format!(
        "{ctx}: `podman run --rm ... ip addr` showed {cidr} from the plugin"
    ));

    // A web server with a published port, and a second container reaching it.
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        &net.name,
        "-p",
        &format!("{HOST_PORT}:8080"),
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    let format = format!(
        "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
        net.name
    );
    let web = parse_ip(
        &podman.ok(&["inspect", "-f", &format, "web"]),
        "web's address",
    );
    assert!(
        net.holds(web),
        "{ctx}: web's {web} is not in {}",
        net.subnet()
    );
    assert_eq!(
        reservations(node, &net.name).len(),
        1,
        "{ctx}: one reservation"
    );
    let url = format!("http://{web}:8080/");
    let page = podman.ok(&[
        "run",
        "--rm",
        "--network",
        &net.name,
        IMAGE,
        "wget",
        "-q",
        "-O",
        "-",
        &url,
    ]);
    assert_eq!(page, "twill pod\n", "{ctx}: container to container");
    report(&format!("{ctx}: a second container fetched {url}"));
    let got = tcp_exchange(
        outside.path(),
        node.ip.into(),
        HOST_PORT.parse().unwrap_or(0),
        "GET / HTTP/1.0\r\n\r\n",
    );
    assert!(
        got.as_deref().is_some_and(|g| g.starts_with("HTTP/1.")),
        "{ctx}: the published port {}:{HOST_PORT} must reach web from another namespace: \
         {got:?}",
        node.ip
    );
    report(&format!(
        "{ctx}: published port {}:{HOST_PORT} answered from another namespace (portmap)",
        node.ip
    ));

    // podman rm: nothing of either container is left on the node.
    podman.ok(&["rm", "-f", "-t", "0", "web"]);
    assert_eq!(
        podman.ok(&["ps", "-aq"]).trim(),
        "",
        "{ctx}: containers left"
    );
    assert_eq!(
        tw_links(&node.ns),
        Vec::<String>::new(),
        "{ctx}: host veths"
    );
    assert_eq!(
        reservations(node, &net.name).len(),
        0,
        "{ctx}: reservations"
    );
    assert_eq!(
        portmap_chains(&node.ns),
        Vec::<String>::new(),
        "{ctx}: portmap"
    );
    report(&format!(
        "{ctx}: after podman rm no container, host veth, reservation or portmap chain is left"
    ));
}

#[test]
fn podman_containers_get_addresses_reach_each_other_and_publish_ports_on_every_plugin() {
    for plugin in PLUGINS {
        containers_on_plugin(plugin);
    }
}
