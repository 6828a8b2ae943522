//! Real etcd clusters for the suites of twilld's etcd mode, and readers of flannel's data model
//! in them.
//!
//! An [`EtcdCluster`] of `n` members runs Debian's `/usr/bin/etcd`, each member in its own
//! network namespace plugged into a single-segment [`Fabric`]'s switch (member `k` has
//! `10.99.0.(241+k)/24`, clients on port 2379, peers on 2380, metrics on 2381), with its own data
//! dir and log under the cluster's temp dir. The test nodes reach the members by IP, and a member
//! can be killed ([`EtcdCluster::kill`]) and started again ([`EtcdCluster::restart`]). Requests
//! made by the test itself go through `etcdctl` (API v3) run inside a live member's namespace.
//! The TLS variant ([`EtcdCluster::start_tls`]) generates a CA, one server certificate (SAN: every
//! member's IP) and a client certificate with the `openssl` CLI at test time, and starts the
//! members with `--client-cert-auth`.
//!
//! Dropping the cluster kills every member (also when a test panics), then removes their
//! namespaces and the temp dir. Every wait is bounded.
//!
//! flannel's data model: the config at `<prefix>/config`, one lease per node at
//! `<prefix>/subnets/<a.b.c.d>-<len>` whose value is `{"PublicIP", "BackendType",
//! "BackendData": {"VNI", "VtepMAC"}}` ([`SubnetLease`], [`subnet_leases`]).

use crate::fabric::{Fabric, Node};
use crate::netns::{Netns, TempDir};
use crate::process::{DEFAULT_TIMEOUT, run_bounded};
use crate::unique_name;
use ipnetwork::Ipv4Network;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// flannel's default etcd prefix (flanneld's `-etcd-prefix`).
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";
/// The client port of every member.
pub const CLIENT_PORT: u16 = 2379;
/// The peer port of every member.
pub const PEER_PORT: u16 = 2380;
/// The plain-HTTP metrics and health port of every member (also in the TLS variant).
pub const METRICS_PORT: u16 = 2381;
/// How long a cluster (or a restarted member) may take to answer health checks.
pub const HEALTH_WAIT: Duration = Duration::from_secs(15);
/// The most members a cluster can have (their addresses are `10.99.0.241` to `.249`).
pub const MAX_MEMBERS: usize = 9;

/// The etcd server binary.
pub const ETCD: &str = "/usr/bin/etcd";
/// The etcd v3 command-line client.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// The underlay address of member `k`.
pub fn member_ip(k: usize) -> Ipv4Addr {
    assert!(k < MAX_MEMBERS, "at most {MAX_MEMBERS} etcd members");
    Ipv4Addr::new(10, 99, 0, 241 + k as u8)
}

/// The certificates of a TLS cluster, generated with `openssl` at test time.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The CA certificate (PEM) that signed the others.
    pub ca: PathBuf,
    /// The members' server certificate (SAN: every member's IP and 127.0.0.1).
    pub server_cert: PathBuf,
    /// The server certificate's key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA (extended key usage clientAuth).
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
}

impl Tls {
    /// Generates a CA, a server certificate for `ips` and a client certificate in `dir`
    /// (P-256 keys, valid two days); panics with openssl's message when a step fails.
    pub fn generate(dir: &Path, ips: &[Ipv4Addr]) -> Tls {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let p = |name: &str| dir.join(name);
        let s = |path: PathBuf| path.display().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=twc-etcd-ca"];
        ca.extend(ec);
        let (ca_key, ca_crt) = (s(p("ca.key")), s(p("ca.crt")));
        ca.extend(["-keyout", &ca_key, "-out", &ca_crt]);
        openssl(&ca);
        let sans: Vec<String> = ips
            .iter()
            .map(|ip| format!("IP:{ip}"))
            .chain(["IP:127.0.0.1".to_string()])
            .collect();
        let leaf = |name: &str, cn: &str, ext: String| {
            let (key, csr, crt, extfile) = (
                s(p(&format!("{name}.key"))),
                s(p(&format!("{name}.csr"))),
                s(p(&format!("{name}.crt"))),
                p(&format!("{name}.ext")),
            );
            std::fs::write(&extfile, ext)
                .unwrap_or_else(|e| panic!("write {}: {e}", extfile.display()));
            let subj = format!("/CN={cn}");
            let mut req = vec!["req", "-new", "-subj", &subj];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr]);
            openssl(&req);
            let extfile = s(extfile);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &extfile,
            ]);
        };
        let common = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n";
        leaf(
            "server",
            "twc-etcd-server",
            format!(
                "{common}extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={}\n",
                sans.join(",")
            ),
        );
        leaf(
            "client",
            "twc-twilld",
            format!("{common}extendedKeyUsage=clientAuth\n"),
        );
        Tls {
            ca: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
        }
    }
}

fn openssl(args: &[&str]) {
    let out = run_bounded(Command::new("openssl").args(args), b"", DEFAULT_TIMEOUT);
    assert!(
        out.status.success(),
        "`openssl {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Which credentials an `etcdctl` call presents to a TLS cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creds {
    /// The CA and the client certificate (what twilld is given).
    ClientCert,
    /// The CA only: the server is trusted, but the client shows no certificate.
    NoClientCert,
}

/// One key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// The value, as text.
    pub value: String,
    /// The etcd lease the key is bound to; 0 for none (a permanent key).
    pub lease: i64,
    /// The revision that created the key.
    pub create_revision: i64,
    /// The revision of the key's last change.
    pub mod_revision: i64,
}

struct Member {
    name: String,
    ip: Ipv4Addr,
    ns: Netns,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster on a fabric's segment; every member killed and removed on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
    tls: Option<Tls>,
    token: String,
    dir: TempDir,
}

impl EtcdCluster {
    /// Starts `n` members (plain HTTP) on `fab`'s segment and waits (bounded by
    /// [`HEALTH_WAIT`]) until every member answers.
    pub fn start(fab: &Fabric, n: usize) -> EtcdCluster {
        EtcdCluster::launch(fab, n, false)
    }

    /// As [`EtcdCluster::start`], with TLS and `--client-cert-auth` on the client port:
    /// certificates generated now, a client must show one signed by the cluster's CA.
    pub fn start_tls(fab: &Fabric, n: usize) -> EtcdCluster {
        EtcdCluster::launch(fab, n, true)
    }

    fn launch(fab: &Fabric, n: usize, tls: bool) -> EtcdCluster {
        assert!((1..=MAX_MEMBERS).contains(&n), "1..={MAX_MEMBERS} members");
        let dir = TempDir::new("etcd");
        let ips: Vec<Ipv4Addr> = (0..n).map(member_ip).collect();
        let tls = tls.then(|| Tls::generate(&dir.join("tls"), &ips));
        let members = ips
            .iter()
            .enumerate()
            .map(|(k, ip)| {
                let name = format!("m{k}");
                let ns = fab.attach_host(&format!("etcd{k}"), &[&format!("{ip}/24")]);
                Member {
                    data_dir: dir.join(&name),
                    log: dir.join(format!("{name}.log")),
                    name,
                    ip: *ip,
                    ns,
                    child: None,
                }
            })
            .collect();
        let mut c = EtcdCluster {
            members,
            tls,
            token: unique_name("etcd"),
            dir,
        };
        for k in 0..n {
            c.spawn(k);
        }
        c.wait_healthy();
        c
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn spawn(&mut self, k: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}:{PEER_PORT}", m.name, m.ip))
            .collect();
        let scheme = self.scheme();
        let m = &self.members[k];
        let client = format!("{scheme}://{}:{CLIENT_PORT}", m.ip);
        let mut args: Vec<String> = vec![
            "--name".into(),
            m.name.clone(),
            "--data-dir".into(),
            m.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            format!("http://{}:{PEER_PORT}", m.ip),
            "--initial-advertise-peer-urls".into(),
            format!("http://{}:{PEER_PORT}", m.ip),
            "--listen-metrics-urls".into(),
            format!("http://{}:{METRICS_PORT}", m.ip),
            "--initial-cluster".into(),
            initial.join(","),
            "--initial-cluster-token".into(),
            self.token.clone(),
            "--initial-cluster-state".into(),
            "new".into(),
            "--logger".into(),
            "zap".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        if let Some(t) = &self.tls {
            for (flag, path) in [
                ("--cert-file", &t.server_cert),
                ("--key-file", &t.server_key),
                ("--trusted-ca-file", &t.ca),
            ] {
                args.push(flag.into());
                args.push(path.display().to_string());
            }
            args.push("--client-cert-auth".into());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap_or_else(|e| panic!("create {}: {e}", m.log.display()));
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", m.ns.path().display()))
            .arg(ETCD)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // A member dies with the thread that started it, should the test process be killed
        // before its guards run (they kill it first otherwise).
        // SAFETY: prctl is async-signal-safe and changes only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {ETCD} (apt-get install etcd-server): {e}"));
        self.members[k].child = Some(child);
    }

    /// How many members the cluster was started with.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether member `k` runs (was not killed).
    pub fn is_up(&self, k: usize) -> bool {
        self.members[k].child.is_some()
    }

    /// The client URL of member `k` (`http(s)://10.99.0.(241+k):2379`).
    pub fn endpoint(&self, k: usize) -> String {
        format!("{}://{}:{CLIENT_PORT}", self.scheme(), self.members[k].ip)
    }

    /// Every member's client URL, comma-separated (twilld's `--etcd-endpoints`), killed
    /// members included: a client must survive a dead endpoint.
    pub fn endpoints(&self) -> String {
        (0..self.len())
            .map(|k| self.endpoint(k))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn live_endpoints(&self) -> String {
        (0..self.len())
            .filter(|k| self.is_up(*k))
            .map(|k| self.endpoint(k))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The certificates of a TLS cluster.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The arguments that point twilld at this cluster: `--etcd-endpoints`, plus
    /// `--etcd-cafile/--etcd-certfile/--etcd-keyfile` for a TLS cluster.
    pub fn client_args(&self) -> Vec<String> {
        let mut a = vec!["--etcd-endpoints".to_string(), self.endpoints()];
        if let Some(t) = &self.tls {
            for (flag, path) in [
                ("--etcd-cafile", &t.ca),
                ("--etcd-certfile", &t.client_cert),
                ("--etcd-keyfile", &t.client_key),
            ] {
                a.push(flag.into());
                a.push(path.display().to_string());
            }
        }
        a
    }

    /// Member `k`'s namespace.
    pub fn member_ns(&self, k: usize) -> &Netns {
        &self.members[k].ns
    }

    /// What member `k` logged so far (warnings and errors).
    pub fn log(&self, k: usize) -> String {
        std::fs::read_to_string(&self.members[k].log).unwrap_or_default()
    }

    fn logs(&self) -> String {
        (0..self.len())
            .map(|k| {
                let log = self.log(k);
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- member m{k} log (last lines):\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Kills member `k` with SIGKILL (as a crash or a power loss) and reaps it.
    pub fn kill(&mut self, k: usize) {
        if let Some(mut child) = self.members[k].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `k` again on its data dir and waits until every live member answers.
    pub fn restart(&mut self, k: usize) {
        assert!(!self.is_up(k), "member m{k} still runs: kill it first");
        self.spawn(k);
        self.wait_healthy();
    }

    /// Waits, bounded by [`HEALTH_WAIT`], until every live member answers a health check
    /// (`etcdctl endpoint health`, which needs a leader); panics with the members' logs.
    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + HEALTH_WAIT;
        loop {
            for k in 0..self.len() {
                let exited = self.members[k]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    self.members[k].child = None;
                    panic!("etcd member m{k} exited: {status}\n{}", self.logs());
                }
            }
            let out = self.etcdctl_on(
                &self.live_endpoints(),
                Creds::ClientCert,
                &["endpoint", "health"],
            );
            if out.status.success() {
                return;
            }
            let last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if Instant::now() >= deadline {
                panic!(
                    "etcd cluster not healthy within {HEALTH_WAIT:?}: {}\n{}",
                    last.trim(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `etcdctl args...` (API v3, 1 s dial and 5 s command timeouts) against every live
    /// member, from inside the first live member's namespace, with `creds` on a TLS cluster.
    pub fn etcdctl(&self, creds: Creds, args: &[&str]) -> Output {
        self.etcdctl_on(&self.live_endpoints(), creds, args)
    }

    /// [`EtcdCluster::etcdctl`] against the given endpoints (comma-separated URLs).
    pub fn etcdctl_on(&self, endpoints: &str, creds: Creds, args: &[&str]) -> Output {
        let from = (0..self.len()).find(|k| self.is_up(*k)).unwrap_or(0);
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.members[from].ns.path().display()))
            .arg(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(["--dial-timeout=1s", "--command-timeout=5s"]);
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cacert={}", t.ca.display()));
            if creds == Creds::ClientCert {
                cmd.arg(format!("--cert={}", t.client_cert.display()));
                cmd.arg(format!("--key={}", t.client_key.display()));
            }
        }
        cmd.args(args);
        run_bounded(&mut cmd, b"", DEFAULT_TIMEOUT)
    }

    fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(Creds::ClientCert, args);
        assert!(
            out.status.success(),
            "`etcdctl {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `key` = `value` without a lease (a permanent key).
    pub fn put(&self, key: &str, value: &str) {
        self.ctl_ok(&["put", "--", key, value]);
    }

    /// Grants an etcd lease of `ttl` seconds and writes `key` = `value` bound to it (as
    /// flanneld writes its subnet lease); returns the lease ID.
    pub fn put_with_lease(&self, key: &str, value: &str, ttl: u64) -> i64 {
        let out = self.ctl_ok(&["lease", "grant", &ttl.to_string()]);
        // "lease 694d77aa9e2a4b0c granted with TTL(10s)"
        let hex = out
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("etcdctl lease grant said {out:?}"));
        let id = u64::from_str_radix(hex, 16)
            .unwrap_or_else(|_| panic!("etcdctl lease grant said {out:?}"));
        self.ctl_ok(&["put", &format!("--lease={hex}"), "--", key, value]);
        id as i64
    }

    /// The key `key`, or None when absent.
    pub fn get(&self, key: &str) -> Option<Kv> {
        self.range(&["get", "-w", "json", "--", key])
            .into_iter()
            .next()
    }

    /// Every key under `prefix`, in key order.
    pub fn list(&self, prefix: &str) -> Vec<Kv> {
        self.range(&["get", "-w", "json", "--prefix", "--", prefix])
    }

    fn range(&self, args: &[&str]) -> Vec<Kv> {
        let out = self.ctl_ok(args);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("etcdctl {}: bad JSON ({e}): {out}", args.join(" ")));
        let text = |x: &Value, f: &str| -> String {
            let b = b64decode(x.get(f).and_then(Value::as_str).unwrap_or(""));
            String::from_utf8_lossy(&b).into_owned()
        };
        let int = |x: &Value, f: &str| x.get(f).and_then(Value::as_i64).unwrap_or(0);
        v.get("kvs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|x| Kv {
                        key: text(x, "key"),
                        value: text(x, "value"),
                        lease: int(x, "lease"),
                        create_revision: int(x, "create_revision"),
                        mod_revision: int(x, "mod_revision"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(&self, key: &str) -> bool {
        self.ctl_ok(&["del", "--", key]).trim() == "1"
    }

    /// The seconds left on etcd lease `id`, or None when it does not exist (expired, revoked).
    pub fn lease_ttl(&self, id: i64) -> Option<i64> {
        let out = self.ctl_ok(&[
            "lease",
            "timetolive",
            &format!("{:x}", id as u64),
            "-w",
            "json",
        ]);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("etcdctl lease timetolive: bad JSON ({e}): {out}"));
        v.get("ttl").and_then(Value::as_i64).filter(|t| *t >= 0)
    }

    /// The index of the member that is the leader now.
    pub fn leader(&self) -> usize {
        let out = self.ctl_ok(&["endpoint", "status", "-w", "json"]);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("etcdctl endpoint status: bad JSON ({e}): {out}"));
        let list = v.as_array().cloned().unwrap_or_default();
        for s in &list {
            let me = s
                .pointer("/Status/header/member_id")
                .and_then(Value::as_u64);
            let leader = s.pointer("/Status/leader").and_then(Value::as_u64);
            if me.is_some() && me == leader {
                let ep = s.get("Endpoint").and_then(Value::as_str).unwrap_or("");
                if let Some(k) = (0..self.len()).find(|k| self.endpoint(*k) == ep) {
                    return k;
                }
            }
        }
        panic!("no member says it leads: {out}");
    }

    /// The temp dir holding the members' data dirs, logs and certificates.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for k in 0..self.members.len() {
            self.kill(k);
        }
        // Then the fields drop: the members' namespaces, then the temp dir.
    }
}

/// Standard base64 (with or without padding) decoded; invalid characters are skipped.
pub fn b64decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Standard base64 with padding (the encoding of keys and values in etcd's JSON gateway).
pub fn b64encode(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// flannel's network config as flanneld reads it from `<prefix>/config`: `{"Network": network,
/// "Backend": {"Type": backend}}` (SubnetLen left to its default, 24).
pub fn flannel_config(network: &str, backend: &str) -> String {
    json!({"Network": network, "Backend": {"Type": backend}}).to_string()
}

/// A subnet lease value exactly as flanneld writes it for its vxlan backend.
pub fn flannel_vxlan_lease(public_ip: Ipv4Addr, vni: u32, vtep_mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":{vni},"VtepMAC":"{vtep_mac}"}}}}"#
    )
}

/// The key of the lease of `subnet` under `prefix`: `<prefix>/subnets/10.244.3.0-24`.
pub fn lease_key(prefix: &str, subnet: Ipv4Network) -> String {
    format!("{prefix}/subnets/{}-{}", subnet.network(), subnet.prefix())
}

/// One subnet lease, parsed from its key and flannel's JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetLease {
    /// The full key.
    pub key: String,
    /// The subnet the key names.
    pub subnet: Ipv4Network,
    /// `PublicIP`: the node's underlay address.
    pub public_ip: IpAddr,
    /// `BackendType` (`vxlan`, `host-gw`).
    pub backend_type: String,
    /// `BackendData.VNI` (vxlan).
    pub vni: Option<u64>,
    /// `BackendData.VtepMAC` (vxlan), lowercase.
    pub vtep_mac: Option<String>,
    /// The etcd lease the key is bound to (0: a permanent reservation).
    pub lease: i64,
    /// The raw value.
    pub value: Value,
}

/// Parses one key under `<prefix>/subnets/`; panics naming the key when it is not flannel's
/// format (a lease twilld writes must be readable by flanneld).
pub fn parse_lease(kv: &Kv) -> SubnetLease {
    let name = kv.key.rsplit('/').next().unwrap_or("");
    let (net, len) = name
        .split_once('-')
        .unwrap_or_else(|| panic!("lease key {:?} is not <a.b.c.d>-<len>", kv.key));
    let subnet = format!("{net}/{len}")
        .parse::<Ipv4Network>()
        .unwrap_or_else(|e| panic!("lease key {:?}: {e}", kv.key));
    let value: Value = serde_json::from_str(&kv.value)
        .unwrap_or_else(|e| panic!("lease {:?}: value is not JSON ({e}): {}", kv.key, kv.value));
    let public_ip = value
        .get("PublicIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("lease {:?}: no PublicIP in {}", kv.key, kv.value));
    SubnetLease {
        key: kv.key.clone(),
        subnet,
        public_ip,
        backend_type: value
            .get("BackendType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        vni: value.pointer("/BackendData/VNI").and_then(Value::as_u64),
        vtep_mac: value
            .pointer("/BackendData/VtepMAC")
            .and_then(Value::as_str)
            .map(str::to_lowercase),
        lease: kv.lease,
        value,
    }
}

/// Every subnet lease under `prefix`, in key order.
pub fn subnet_leases(etcd: &EtcdCluster, prefix: &str) -> Vec<SubnetLease> {
    etcd.list(&format!("{prefix}/subnets/"))
        .iter()
        .map(parse_lease)
        .collect()
}

/// The lease whose `PublicIP` is `ip`, if any (panics when two claim it).
pub fn lease_of(leases: &[SubnetLease], ip: Ipv4Addr) -> Option<SubnetLease> {
    let mine: Vec<&SubnetLease> = leases
        .iter()
        .filter(|l| l.public_ip == IpAddr::V4(ip))
        .collect();
    assert!(
        mine.len() <= 1,
        "{ip} holds {} leases: {mine:#?}",
        mine.len()
    );
    mine.first().map(|l| (*l).clone())
}

/// A node's `KEY=value` subnet file as a map, or None when it does not exist.
pub fn read_env(path: &Path) -> Option<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
    )
}

/// The twilld arguments of `node` in etcd mode (besides its conf and run dirs): the cluster's
/// endpoints (and certificates), `--public-ip`, and the node's private subnet and view files.
pub fn twilld_args(etcd: &EtcdCluster, node: &Node, extra: &[&str]) -> Vec<String> {
    let mut a = etcd.client_args();
    a.extend([
        "--public-ip".to_string(),
        node.ip.to_string(),
        "--subnet-file".into(),
        node.subnet_file.display().to_string(),
        "--view-file".into(),
        node.peers_file.display().to_string(),
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The network config of a twill plugin of `plugin_type` on `node` in etcd mode: name `net`,
/// the node's subnet file (IPAM derived from it), view file, run dir and IPAM data dir; no
/// addresses of its own (they come from the lease).
pub fn node_conf(net: &str, plugin_type: &str, node: &Node) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": net,
        "type": plugin_type,
        "subnetFile": node.subnet_file,
        "peersFile": node.peers_file,
        "runDir": node.run_dir,
        "dataDir": node.data_dir,
    })
}
