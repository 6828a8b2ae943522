//! The vxlan plugin's test cluster: a [`Cluster`] (subnet files, peers file, network name)
//! whose configs name the `vxlan` binary, a dual-stack variant of the routed fabric, and
//! readers of the overlay a node holds (device, neighbours, FDB entries, routes) and of pod
//! traffic (a TCP transfer, the transmit checksum offload of a device).
#![allow(missing_docs)]

use crate::hostgw::Cluster;
use crate::process::run_bounded;
use crate::{Fabric, Link, Netns, Pod, twill_bin, unique_name};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The default device over IPv4 with VNI 1.
pub const DEV4: &str = "twill.1";
/// The default device over IPv6 with VNI 1.
pub const DEV6: &str = "twill6.1";

pub fn plugin() -> PathBuf {
    twill_bin("vxlan")
}

/// [`Fabric::routed`] with IPv6 too: the router gets `fd99:1::fe/64` and `fd99:2::fe/64`,
/// node `i` `fd99:<segment>::<j+1>/64` (no DAD) with a default route via its router address,
/// and IPv6 forwarding is on everywhere.
pub fn routed_dual(n: usize) -> Fabric {
    let mut fab = Fabric::routed(n);
    let half = n.div_ceil(2);
    if let Some(r) = &fab.router {
        r.set_sysctl("net.ipv6.conf.all.forwarding", "1");
        r.ip(&["addr", "add", "fd99:1::fe/64", "dev", "eth-a", "nodad"]);
        r.ip(&["addr", "add", "fd99:2::fe/64", "dev", "eth-b", "nodad"]);
    }
    for (i, node) in fab.nodes.iter_mut().enumerate() {
        let (seg, j) = if i < half { (1, i) } else { (2, i - half) };
        let ip6 = Ipv6Addr::new(0xfd99, seg, 0, 0, 0, 0, 0, (j + 1) as u16);
        node.ns.set_sysctl("net.ipv6.conf.all.forwarding", "1");
        node.ns
            .ip(&["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"]);
        node.ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd99:{seg}::fe"),
        ]);
        node.ip6 = Some(ip6);
    }
    fab
}

/// Node `i`'s 1.1.0 vxlan config: the cluster's config with `"type": "vxlan"` and `extra`.
pub fn conf(c: &Cluster, i: usize, extra: Value) -> Value {
    conf_v(c, i, "1.1.0", extra)
}

/// [`conf`] at CNI version `version`.
pub fn conf_v(c: &Cluster, i: usize, version: &str, extra: Value) -> Value {
    let mut conf = c.conf_v(i, version);
    conf["type"] = json!("vxlan");
    conf.as_object_mut().expect("object").remove("bridge");
    if let Some(o) = extra.as_object() {
        for (k, v) in o {
            conf[k] = v.clone();
        }
    }
    conf
}

/// A pod on node `i` with `conf`.
pub fn add(c: &Cluster, i: usize, conf: &Value) -> Pod {
    c.node(i).add_pod(&plugin(), conf, &unique_name("c"))
}

/// The vxlan device `name` of a node, with its `linkinfo.info_data`.
pub fn device(ns: &Netns, name: &str) -> Option<(Link, Value)> {
    let l = ns.link(name)?;
    let data = l
        .raw
        .pointer("/linkinfo/info_data")
        .cloned()
        .unwrap_or(Value::Null);
    Some((l, data))
}

/// The FDB entries of device `dev` with a remote: (MAC, remote, flags+state).
pub fn fdb_of(ns: &Netns, dev: &str) -> Vec<(String, IpAddr, String)> {
    let mut v: Vec<(String, IpAddr, String)> = ns
        .fdb()
        .into_iter()
        .filter(|e| e.dev == dev)
        .filter_map(|e| {
            let dst = e.dst?;
            Some((e.mac, dst, format!("{} {}", e.flags.join(","), e.state)))
        })
        .collect();
    v.sort();
    v
}

/// ethtool's `tx-checksumming` of `dev` in `ns` (ETHTOOL_GTXCSUM through Python's ioctl).
pub fn tx_checksum_on(ns: &Netns, dev: &str) -> bool {
    let script = format!(
        "import array,fcntl,socket,struct\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         v=array.array('I',[0x16,0])\n\
         req=struct.pack('16sP',b'{dev}',v.buffer_info()[0])+bytes(16)\n\
         fcntl.ioctl(s.fileno(),0x8946,req)\n\
         print(v[1])\n"
    );
    let out = ns.exec(&["/usr/bin/python3", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "ethtool ioctl on {dev}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text != "0"
}

/// Sends `bytes` bytes over TCP from pod namespace `from` to `to_ip:port` in pod namespace
/// `to`; returns how many bytes the receiver counted (both ends bounded to 20 s).
pub fn tcp_transfer(from: &Netns, to: &Netns, to_ip: IpAddr, bytes: usize) -> usize {
    let port = 5201;
    let family = if to_ip.is_ipv6() {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let server = [
        "import socket".to_string(),
        format!("s=socket.socket(socket.{family})"),
        "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)".into(),
        format!("s.bind(('{to_ip}',{port}))"),
        "s.listen(1)".into(),
        "s.settimeout(15)".into(),
        "c,_=s.accept()".into(),
        "c.settimeout(15)".into(),
        "n=0".into(),
        "while True:".into(),
        "    d=c.recv(1<<16)".into(),
        "    if not d: break".into(),
        "    n+=len(d)".into(),
        "print(n)".into(),
    ]
    .join("\n");
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", to.path().display()))
        .args(["/usr/bin/python3", "-c", &server])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the TCP receiver");
    let client = [
        "import socket,time".to_string(),
        "c=None".into(),
        "for i in range(100):".into(),
        "    try:".into(),
        format!("        c=socket.create_connection(('{to_ip}',{port}),timeout=5)"),
        "        break".into(),
        "    except OSError:".into(),
        "        time.sleep(0.05)".into(),
        format!("c.sendall(bytes({bytes}))"),
        "c.close()".into(),
    ]
    .join("\n");
    let out = run_bounded(
        Command::new("nsenter")
            .arg(format!("--net={}", from.path().display()))
            .args(["/usr/bin/python3", "-c", &client]),
        b"",
        Duration::from_secs(20),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(_status) = child.try_wait().expect("wait for the receiver") {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the TCP receiver did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = child.wait_with_output().expect("receiver output");
    assert!(
        out.status.success(),
        "TCP sender failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&got.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "receiver said {:?} / {:?}",
                String::from_utf8_lossy(&got.stdout),
                String::from_utf8_lossy(&got.stderr)
            )
        })
}

/// `ping -M do -s <size> -c1 -W1` from `from` to `ip`: (success, combined output).
pub fn df_ping(from: &Netns, ip: IpAddr, size: u32) -> (bool, String) {
    let s = size.to_string();
    let t = ip.to_string();
    let out = from.exec(&["ping", "-n", "-M", "do", "-s", &s, "-c1", "-W1", &t]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
