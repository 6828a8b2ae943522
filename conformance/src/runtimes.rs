//! What the real-client suites (libcni, podman, containerd CRI) share: the table of twill
//! plugins they run, a private network per test, the clients built into the build tree, and
//! small probes (a TCP listener in a pod, a TCP client in another namespace, iptables dumps).
//!
//! Adding a plugin to all three suites is one entry in [`PLUGINS`].
//!
//! The clients live in `conformance/clients/` (sources) and are built into
//! [`clients_dir`] (`target/clients`, never the source tree): the Go libcni driver with Debian's
//! `golang-go` and `golang-github-appc-cni-dev`, offline in GOPATH mode; the CRI client and the
//! image builder are Python scripts run by Debian's `/usr/bin/python3` (which has
//! `python3-grpcio`).

use crate::fabric::Node;
use crate::netns::Netns;
use crate::process::{DEFAULT_TIMEOUT, run_bounded};
use crate::{bins, unique_name};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// A twill plugin as the real-client suites run it: the binaries a conflist execs and the
/// plugin's own entry in a conflist.
#[derive(Debug)]
pub struct PluginUnderTest {
    /// The plugin's `type` (its binary name).
    pub name: &'static str,
    /// Every twill binary the entry execs (the plugin, its IPAM).
    pub binaries: &'static [&'static str],
    /// The plugin's entry (first element of `plugins`) for a private network.
    pub entry: fn(&NetSpec) -> Value,
}

/// Every twill plugin the real-client suites cover; a new plugin is one more entry here.
pub const PLUGINS: &[PluginUnderTest] = &[
    PluginUnderTest {
        name: "bridge-host-gw",
        binaries: &["bridge-host-gw", "host-local"],
        entry: bridge_host_gw_entry,
    },
    PluginUnderTest {
        name: "vxlan",
        binaries: &["vxlan", "host-local"],
        entry: vxlan_entry,
    },
];

/// bridge-host-gw as flannel deploys it: the subnet (and so the host-local IPAM) comes from the
/// node's subnet file; bridge, dataDir and runDir are the test's own.
fn bridge_host_gw_entry(net: &NetSpec) -> Value {
    json!({
        "type": "bridge-host-gw",
        "bridge": net.bridge,
        "subnetFile": net.subnet_file,
        "dataDir": net.data_dir,
        "runDir": net.run_dir,
    })
}

/// vxlan as flannel deploys it (bridge pods), on the test's own bridge; each network gets its
/// own device and VNI, so that two tests on one node never share a device's address.
fn vxlan_entry(net: &NetSpec) -> Value {
    json!({
        "type": "vxlan",
        "bridge": net.bridge,
        "device": format!("twx.{}", net.k),
        "vni": 1000 + u32::from(net.k),
        "subnetFile": net.subnet_file,
        "dataDir": net.data_dir,
        "runDir": net.run_dir,
    })
}

static NEXT_SUBNET: AtomicU8 = AtomicU8::new(1);

/// One test's private network on a node: a unique network name, its own bridge name and pod
/// subnet (`10.250.<k>.0/24`, gateway `.1`), a flannel subnet file saying so, and the node's
/// data and run directories. Two networks on one bridge with different gateways is an error by
/// design, so no two tests share either.
#[derive(Debug, Clone)]
pub struct NetSpec {
    /// Network name (the conflist's `name`).
    pub name: String,
    /// Bridge name.
    pub bridge: String,
    /// Third octet `k` of the pod subnet.
    pub k: u8,
    /// The flannel subnet file (written).
    pub subnet_file: PathBuf,
    /// IPAM data directory (the node's).
    pub data_dir: PathBuf,
    /// twill's run directory (the node's).
    pub run_dir: PathBuf,
    /// Dual-stack: also the pod subnet `fd00:250:0:<k>::/64`.
    pub dual: bool,
}

impl NetSpec {
    /// A fresh IPv4 network on `node`; writes its subnet file next to the node's own.
    pub fn new(node: &Node, tag: &str) -> NetSpec {
        NetSpec::create(node, tag, false)
    }

    /// A fresh dual-stack network on `node` (IPv4 and `fd00:250:0:<k>::/64`).
    pub fn dual_stack(node: &Node, tag: &str) -> NetSpec {
        NetSpec::create(node, tag, true)
    }

    fn create(node: &Node, tag: &str, dual: bool) -> NetSpec {
        let k = NEXT_SUBNET.fetch_add(1, Ordering::Relaxed);
        assert!(k < 250, "too many private networks in one test process");
        let name = unique_name(tag);
        let subnet_file = node
            .subnet_file
            .with_file_name(format!("subnet-{name}.env"));
        let mut text = format!(
            "FLANNEL_NETWORK=10.250.0.0/16\nFLANNEL_SUBNET=10.250.{k}.1/24\nFLANNEL_MTU=1500\n\
             FLANNEL_IPMASQ=true\n"
        );
        if dual {
            text.push_str(&format!(
                "FLANNEL_IPV6_NETWORK=fd00:250::/56\nFLANNEL_IPV6_SUBNET=fd00:250:0:{k:x}::1/64\n"
            ));
        }
        std::fs::write(&subnet_file, text)
            .unwrap_or_else(|e| panic!("write {}: {e}", subnet_file.display()));
        NetSpec {
            name,
            bridge: format!("tr{}x{k}", std::process::id() % 100_000),
            k,
            subnet_file,
            data_dir: node.data_dir.clone(),
            run_dir: node.run_dir.clone(),
            dual,
        }
    }

    /// The pod subnet as text.
    pub fn subnet(&self) -> String {
        format!("10.250.{}.0/24", self.k)
    }

    /// True when `ip` is a pod address of this network (in the subnet, not the gateway).
    pub fn holds(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                o[0] == 10 && o[1] == 250 && o[2] == self.k && o[3] > 1 && o[3] < 255
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                self.dual
                    && s[..4] == [0xfd00, 0x250, 0, u16::from(self.k)]
                    && v6 != self.gateway6()
            }
        }
    }

    /// The IPv6 gateway address on the bridge (dual-stack only).
    pub fn gateway6(&self) -> std::net::Ipv6Addr {
        std::net::Ipv6Addr::new(0xfd00, 0x250, 0, u16::from(self.k), 0, 0, 0, 1)
    }

    /// A conflist of `plugin` on this network followed by `meta` plugins, in `version`.
    pub fn conflist(&self, version: &str, plugin: &PluginUnderTest, meta: &[Value]) -> Value {
        let mut plugins = vec![(plugin.entry)(self)];
        plugins.extend_from_slice(meta);
        json!({"cniVersion": version, "name": self.name, "plugins": plugins})
    }

    /// Writes [`NetSpec::conflist`] as `<dir>/10-<name>.conflist`; returns the path.
    pub fn write_conflist(
        &self,
        dir: &Path,
        version: &str,
        plugin: &PluginUnderTest,
        meta: &[Value],
    ) -> PathBuf {
        let path = dir.join(format!("10-{}.conflist", self.name));
        let text = serde_json::to_string_pretty(&self.conflist(version, plugin, meta))
            .unwrap_or_else(|e| panic!("serialize conflist: {e}"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

/// A directory of symlinks to `plugin`'s twill binaries and the reference plugins `refs`
/// (containerd 1.6 takes one `bin_dir`); created as `<dir>/bin`.
pub fn bin_dir(dir: &Path, plugin: &PluginUnderTest, refs: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("create {}: {e}", bin.display()));
    let links = plugin
        .binaries
        .iter()
        .map(|b| (*b, bins::twill_bin(b)))
        .chain(refs.iter().map(|r| (*r, bins::ref_bin(r))));
    for (name, target) in links {
        let link = bin.join(name);
        std::os::unix::fs::symlink(&target, &link)
            .unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", link.display(), target.display()));
    }
    bin
}

/// Prints one line of what a suite checked, visible even when the test harness captures output
/// (written to stderr directly, not through `eprintln!`).
pub fn report(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "  {line}");
}

/// The build-tree directory of the clients: `$TWILL_CLIENTS_DIR`, else `<workspace>/target/clients`.
pub fn clients_dir() -> PathBuf {
    std::env::var_os("TWILL_CLIENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| bins::workspace_dir().join("target/clients"))
}

/// The client sources (`conformance/clients/<rel>`).
pub fn client_source(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(rel)
}

/// Debian's Python, the one with `python3-grpcio` (not whatever `python3` is first on PATH).
pub const PYTHON: &str = "/usr/bin/python3";

/// The libcni driver (`twill-libcni`), built on first use in this process into
/// [`clients_dir`] unless a build newer than its source is already there (`make clients`).
pub fn libcni_driver() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = clients_dir();
            let out = dir.join("twill-libcni");
            let src = client_source("libcni/main.go");
            let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            if let (Some(bin), Some(src)) = (mtime(&out), mtime(&src))
                && bin >= src
            {
                return out;
            }
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            // Built under a private name, then renamed: concurrent builders never see half a file.
            let tmp = dir.join(format!("twill-libcni.{}.tmp", std::process::id()));
            let mut cmd = Command::new("go");
            cmd.args(["build", "-o"])
                .arg(&tmp)
                .arg(".")
                .current_dir(client_source("libcni"))
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env("GOPROXY", "off")
                .env("GOFLAGS", "")
                .env("GOCACHE", dir.join("go-cache"));
            let res = run_bounded(&mut cmd, b"", Duration::from_secs(300));
            assert!(
                res.status.success(),
                "building the libcni driver failed (needs Debian's golang-go and \
                 golang-github-appc-cni-dev; `make deps` installs them): {}",
                String::from_utf8_lossy(&res.stderr).trim()
            );
            std::fs::rename(&tmp, &out)
                .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), out.display()));
            out
        })
        .clone()
}

/// Runs `conformance/clients/images.py` with `args` (see the script); panics on failure.
pub fn build_image(args: &[&str]) {
    let script = client_source("images.py");
    let mut cmd = Command::new(PYTHON);
    cmd.arg(&script).args(args);
    let out = run_bounded(&mut cmd, b"", DEFAULT_TIMEOUT);
    assert!(
        out.status.success(),
        "images.py {} failed (needs busybox-static): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `/proc/PID/ns/net`: the network namespace of process `pid` (e.g. a pod sandbox's first
/// process), for [`exec_in`], [`Listener::start`] and the like.
pub fn pid_netns(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Runs `cmd` inside the network namespace at `netns` (`nsenter --net`), bounded.
pub fn exec_in(netns: &Path, cmd: &[&str]) -> std::process::Output {
    run_bounded(
        Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(cmd),
        b"",
        DEFAULT_TIMEOUT,
    )
}

/// Connects from the namespace at `from` to `ip:port`, sends `request` and returns the first
/// bytes the server answers (bash's `/dev/tcp`, each attempt bounded to 3 s; up to 3 attempts);
/// `None` when no attempt got an answer.
pub fn tcp_exchange(from: &Path, ip: IpAddr, port: u16, request: &str) -> Option<String> {
    let (ip, port) = (ip.to_string(), port.to_string());
    (0..3).find_map(|_| {
        let out = exec_in(
            from,
            &[
                "timeout",
                "3",
                "bash",
                "-c",
                "exec 3<>\"/dev/tcp/$1/$2\" && printf '%s' \"$3\" >&3 && head -c 200 <&3",
                "probe",
                &ip,
                &port,
                request,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    })
}

/// True when one of up to 3 `ping -c1 -W1` from the namespace at `from` to `ip` is answered.
pub fn ping_from(from: &Path, ip: IpAddr) -> bool {
    let target = ip.to_string();
    (0..3).any(|_| {
        exec_in(from, &["ping", "-n", "-q", "-c1", "-W1", &target])
            .status
            .success()
    })
}

/// A TCP server in a namespace answering every connection on `port` with a fixed greeting;
/// killed (by PID) on drop, and it exits by itself after 60 s without a connection.
#[derive(Debug)]
pub struct Listener {
    child: Child,
}

impl Listener {
    /// Starts the server in the namespace at `netns` and returns once it listens.
    pub fn start(netns: &Path, port: u16, greeting: &str) -> Listener {
        const SERVER: &str = "import socket, sys\n\
            s = socket.socket()\n\
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
            s.bind(('0.0.0.0', int(sys.argv[1])))\n\
            s.listen(16)\n\
            s.settimeout(60)\n\
            print('listening', flush=True)\n\
            while True:\n    c, _ = s.accept()\n    c.sendall(sys.argv[2].encode())\n    c.close()\n";
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args([PYTHON, "-c", SERVER, &port.to_string(), greeting])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start a listener in {}: {e}", netns.display()));
        let mut line = String::new();
        // The server prints once it listens, or exits (EOF) if it cannot bind.
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        assert_eq!(
            line.trim(),
            "listening",
            "the TCP listener in {} did not start",
            netns.display()
        );
        Listener { child }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `iptables -t TABLE -S` inside `ns`.
pub fn iptables_rules(ns: &Netns, table: &str) -> String {
    ns.exec_ok(&["iptables", "-w", "5", "-t", table, "-S"])
}

/// The portmap DNAT chains (`CNI-DN-*`) defined in `ns`.
pub fn portmap_chains(ns: &Netns) -> Vec<String> {
    iptables_rules(ns, "nat")
        .lines()
        .filter_map(|l| l.strip_prefix("-N CNI-DN-"))
        .map(|c| format!("CNI-DN-{c}"))
        .collect()
}

/// Unmounts (lazily) every mount point at or below `dir`, deepest first: what a runtime's
/// storage (overlay layers, netns bind mounts) may leave behind if it was stopped early.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        if let Err(e) = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("warning: umount {p}: {e}");
        }
    }
}

/// Parses an IP address out of a client's output; panics with the output otherwise.
pub fn parse_ip(text: &str, what: &str) -> IpAddr {
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{what}: {e}: {text:?}"))
}
