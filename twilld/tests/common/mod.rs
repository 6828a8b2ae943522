//! Throwaway etcd clusters for twilld's integration tests: each in its own network namespace
//! (`twill-etcdc-<pid>-<n>`, loopback only) with its data in a temporary directory; the guard
//! kills the members and removes the namespace and the directory on drop, also on panic.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace with its loopback up, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    /// A fresh namespace `twill-etcdc-<pid>-<n>`.
    pub fn new() -> Ns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("twill-etcdc-{}-{n}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let ns = Ns { name };
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread that entered the namespace (every socket it opens lives there).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                let file = File::open(&path).expect("open the test netns");
                setns(&file, CloneFlags::CLONE_NEWNET).expect("enter the test netns");
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs `cmd` in the namespace, asserting success; its stdout.
    pub fn exec(&self, cmd: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        sh(&full)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command, asserting success; its stdout.
pub fn sh(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("twill-etcdc-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// TLS files made with the openssl CLI: a CA, a server certificate for IP 127.0.0.1 and
/// client certificates (EC in PKCS#8 and SEC1 form, RSA in PKCS#1 form).
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// Path of `name` in the PKI directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes CA `name` and certificates signed by it in `dir`: `<name>.crt/.key`, `server.*`
/// (SAN IP:127.0.0.1), `client.*` (EC, PKCS#8), `client-ec.key` (the same key, SEC1),
/// `client-rsa.crt` and `client-rsa.key` (RSA, PKCS#1).
pub fn make_pki(dir: &Path, ca: &str) -> Pki {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_key = format!("{ca}.key");
    let ca_crt = format!("{ca}.crt");
    let mut args = vec!["req", "-x509"];
    args.extend_from_slice(&ec);
    args.extend_from_slice(&["-keyout", &ca_key, "-out", &ca_crt, "-days", "2"]);
    let subj = format!("/CN={ca}");
    args.extend_from_slice(&["-subj", &subj]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (who, kind, ext) in [
        ("server", "ec", "server.ext"),
        ("client", "ec", "client.ext"),
        ("client-rsa", "rsa", "client.ext"),
    ] {
        let (key, csr, crt) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.crt"),
        );
        let subj = format!("/CN={who}");
        let mut args = vec!["req"];
        if kind == "ec" {
            args.extend_from_slice(&ec);
        } else {
            args.extend_from_slice(&["-newkey", "rsa:2048", "-nodes"]);
        }
        args.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }
    openssl(dir, &["ec", "-in", "client.key", "-out", "client-ec.key"]);
    openssl(
        dir,
        &[
            "rsa",
            "-in",
            "client-rsa.key",
            "-traditional",
            "-out",
            "client-rsa.key",
        ],
    );
    Pki {
        dir: dir.to_path_buf(),
    }
}

/// An etcd cluster of one or more members in its own namespace, member `i` serving clients on
/// `127.0.0.1:(23790 + i)` (http, or https with `tls`).
pub struct Etcd {
    members: Vec<Option<Child>>,
    /// The client URL of each member.
    pub urls: Vec<String>,
    /// The PKI when the cluster serves TLS with client-certificate authentication.
    pub pki: Option<Pki>,
    pub dir: TempDir,
    pub ns: Ns,
}

impl Etcd {
    /// A healthy single-member cluster.
    pub fn single() -> Etcd {
        Etcd::start(1, false)
    }

    /// A healthy cluster of `n` members; with `tls`, clients must present a certificate
    /// signed by the cluster's CA (`pki`).
    pub fn start(n: usize, tls: bool) -> Etcd {
        let ns = Ns::new();
        let dir = TempDir::new();
        let pki = tls.then(|| make_pki(&dir.0, "ca"));
        let scheme = if tls { "https" } else { "http" };
        let urls: Vec<String> = (0..n)
            .map(|i| format!("{scheme}://127.0.0.1:{}", 23790 + i))
            .collect();
        let peers: Vec<String> = (0..n)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", 23800 + i))
            .collect();
        let mut etcd = Etcd {
            members: Vec::new(),
            urls,
            pki,
            dir,
            ns,
        };
        for i in 0..n {
            let log = File::create(etcd.dir.0.join(format!("m{i}.log"))).expect("etcd log");
            let data = etcd.dir.0.join(format!("m{i}"));
            let peer = format!("http://127.0.0.1:{}", 23800 + i);
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &etcd.ns.name, "etcd"])
                .arg(format!("--name=m{i}"))
                .arg(format!("--data-dir={}", data.display()))
                .arg(format!("--listen-client-urls={}", etcd.urls[i]))
                .arg(format!("--advertise-client-urls={}", etcd.urls[i]))
                .arg(format!("--listen-peer-urls={peer}"))
                .arg(format!("--initial-advertise-peer-urls={peer}"))
                .arg(format!("--initial-cluster={}", peers.join(",")))
                .arg("--initial-cluster-state=new")
                .arg("--heartbeat-interval=100")
                .arg("--election-timeout=1000");
            if let Some(pki) = &etcd.pki {
                cmd.arg("--client-cert-auth")
                    .arg(format!(
                        "--trusted-ca-file={}",
                        pki.file("ca.crt").display()
                    ))
                    .arg(format!("--cert-file={}", pki.file("server.crt").display()))
                    .arg(format!("--key-file={}", pki.file("server.key").display()));
            }
            let log2 = log.try_clone().expect("etcd log");
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .expect("start etcd");
            etcd.members.push(Some(child));
        }
        for i in 0..n {
            etcd.wait_healthy(i);
        }
        etcd
    }

    /// Waits (at most 10 s) until member `i` reports itself healthy (it has a leader).
    fn wait_healthy(&self, i: usize) {
        let port = 23790 + i as u16;
        let with_tls = self.pki.is_some();
        let ok = self.ns.run(move || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                let healthy = if with_tls {
                    // The TLS port accepting connections is enough; the tests' first request
                    // is bounded and asserted anyway.
                    TcpStream::connect(("127.0.0.1", port)).is_ok()
                } else {
                    health(port)
                };
                if healthy {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        if !ok {
            let log =
                std::fs::read_to_string(self.dir.0.join(format!("m{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "etcd member {i} not healthy within 10 s; log tail:\n{}",
                tail.join("\n")
            );
        }
    }

    /// Kills member `i` (SIGKILL) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs etcdctl against member 0 (plain http clusters only); its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let ep = format!("--endpoints={}", self.urls[0]);
        let mut cmd = vec!["env", "ETCDCTL_API=3", "etcdctl", &ep];
        cmd.extend_from_slice(args);
        self.ns.exec(&cmd)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// True when `GET /health` on 127.0.0.1:`port` says healthy.
fn health(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}
