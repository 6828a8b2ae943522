//! End-to-end tests of the `host-local` binary: CNI environment in, result or error object out,
//! state checked on disk. Needs root (it makes a network namespace to pass as `CNI_NETNS`, so
//! the plugin does not refuse its own); the namespace and data directory are removed on drop.

use serde_json::{Value, json};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A network namespace, a data directory and an owner index directory for one test, removed
/// on drop.
struct Fixture {
    netns: String,
    dir: PathBuf,
    /// `TWILL_HOST_LOCAL_INDEX_DIR` given to the plugin (empty: index off).
    index: String,
}

impl Fixture {
    fn new(test: &str) -> Fixture {
        let netns = format!("tw-{}-hl-{test}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {netns} (run as root)");
        let dir = std::env::temp_dir().join(format!("twill-hlbin-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let index = format!("{}-index", dir.display());
        let _ = fs::remove_dir_all(&index);
        Fixture { netns, dir, index }
    }

    fn conf(&self, version: &str, ipam: Value) -> Value {
        let mut ipam = ipam;
        ipam["type"] = json!("host-local");
        ipam["dataDir"] = json!(self.dir.display().to_string());
        json!({"cniVersion": version, "name": "binnet", "type": "host-local", "ipam": ipam})
    }

    fn net(&self) -> PathBuf {
        self.dir.join("binnet")
    }

    /// Runs the plugin: (exit success, stdout parsed as JSON or Null when empty).
    fn run(&self, command: &str, id: &str, ifname: &str, conf: &Value) -> (bool, Value) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_host-local"));
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", "/nonexistent")
            .env("TWILL_HOST_LOCAL_INDEX_DIR", &self.index)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !id.is_empty() {
            cmd.env("CNI_CONTAINERID", id)
                .env("CNI_IFNAME", ifname)
                .env("CNI_NETNS", format!("/run/netns/{}", self.netns));
        }
        let out = run_with_stdin(&mut cmd, conf);
        let v = if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "stdout not JSON ({e}): {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })
        };
        (out.status.success(), v)
    }

    /// The network directory's files, sorted, without the boot file every first ADD of a
    /// boot writes (`twill::ipam::host_local::reboot`).
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = match fs::read_dir(self.net()) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n != ".twill-boot-id")
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        if !self.index.is_empty() {
            let _ = fs::remove_dir_all(&self.index);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Spawns `cmd` (stdin piped), writes `conf` to its stdin, closes it and waits for the output.
fn run_with_stdin(cmd: &mut Command, conf: &Value) -> Output {
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap()
}

#[test]
fn add_check_del_through_the_binary() {
    let f = Fixture::new("cycle");
    let conf = f.conf(
        "1.1.0",
        json!({"ranges": [[{"subnet": "10.77.0.0/29"}], [{"subnet": "fd77::/125"}]],
               "routes": [{"dst": "0.0.0.0/0"}]}),
    );
    let (ok, r) = f.run("ADD", "ctr-a", "eth0", &conf);
    assert!(ok, "{r}");
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["ips"][0]["address"], "10.77.0.2/29");
    assert_eq!(r["ips"][0]["gateway"], "10.77.0.1");
    assert_eq!(r["ips"][1]["address"], "fd77::2/125");
    assert!(r["ips"][0].get("interface").is_none(), "{r}");
    assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0"}]));
    assert_eq!(read(&f.net().join("10.77.0.2")), b"ctr-a\r\neth0");
    assert_eq!(read(&f.net().join("fd77::2")), b"ctr-a\r\neth0");
    assert_eq!(read(&f.net().join("last_reserved_ip.0")), b"10.77.0.2");

    // a retried ADD answers the same addresses
    let (ok, again) = f.run("ADD", "ctr-a", "eth0", &conf);
    assert!(ok);
    assert_eq!(again, r);

    // 0.3.1 results carry "version"
    let old = f.conf("0.3.1", conf["ipam"].clone());
    let (ok, r) = f.run("ADD", "ctr-b", "eth0", &old);
    assert!(ok, "{r}");
    assert_eq!(r["ips"][0]["version"], "4");
    assert_eq!(r["ips"][0]["address"], "10.77.0.3/29");

    assert_eq!(f.run("CHECK", "ctr-a", "eth0", &conf), (true, Value::Null));
    let (ok, e) = f.run("CHECK", "ctr-zz", "eth0", &conf);
    assert!(!ok);
    assert_eq!(e["code"], 105, "{e}");

    assert_eq!(f.run("DEL", "ctr-a", "eth0", &conf), (true, Value::Null));
    assert_eq!(f.run("DEL", "ctr-a", "eth0", &conf), (true, Value::Null));
    assert!(!f.net().join("10.77.0.2").exists());
    assert!(f.net().join("10.77.0.3").exists());
}

#[test]
fn errors_are_cni_error_objects_and_change_nothing() {
    let f = Fixture::new("errors");
    let cases = [
        (
            f.conf("1.0.0", json!({"subnet": "10.77.0.5/24"})),
            7,
            "host bits",
        ),
        (
            f.conf("1.0.0", json!({"subnet": "10.77.0.0/31"})),
            7,
            "too small",
        ),
        (
            f.conf(
                "1.0.0",
                json!({"subnet": "10.77.0.0/24", "rangeStart": "10.78.0.1"}),
            ),
            7,
            "rangeStart",
        ),
        (f.conf("1.0.0", json!({})), 7, "no IP ranges"),
    ];
    for (conf, code, needle) in cases {
        let (ok, e) = f.run("ADD", "ctr", "eth0", &conf);
        assert!(!ok);
        assert_eq!(e["code"], code, "{e}");
        assert!(
            e["msg"].as_str().unwrap().contains(needle),
            "{e} lacks {needle}"
        );
    }
    let mut evil = f.conf("1.0.0", json!({"subnet": "10.77.0.0/24"}));
    evil["name"] = json!("../escape");
    let (ok, e) = f.run("ADD", "ctr", "eth0", &evil);
    assert!(!ok);
    assert_eq!(e["code"], 7, "{e}");
    assert!(!f.dir.exists(), "a failed ADD created state");

    // requested address taken / exhaustion
    let conf = f.conf("1.0.0", json!({"subnet": "10.77.0.0/30"}));
    assert!(f.run("ADD", "first", "eth0", &conf).0);
    let mut req = conf.clone();
    req["args"] = json!({"cni": {"ips": ["10.77.0.2"]}});
    let (ok, e) = f.run("ADD", "second", "eth0", &req);
    assert!(!ok);
    assert_eq!(e["code"], 102, "{e}");
    let (ok, e) = f.run("ADD", "second", "eth0", &conf);
    assert!(!ok);
    assert_eq!(e["code"], 101, "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("10.77.0.1-10.77.0.2"),
        "{e}"
    );
    assert_eq!(f.files(), ["10.77.0.2", "last_reserved_ip.0", "lock"]);
}

#[test]
fn gc_and_status_through_the_binary() {
    let f = Fixture::new("gc");
    let conf = f.conf("1.1.0", json!({"subnet": "10.77.0.0/29"}));
    for id in ["keep", "drop1", "drop2"] {
        assert!(f.run("ADD", id, "eth0", &conf).0);
    }
    assert_eq!(f.run("STATUS", "", "", &conf), (true, Value::Null));
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    assert_eq!(f.run("GC", "", "", &gc), (true, Value::Null));
    assert_eq!(f.files(), ["10.77.0.2", "last_reserved_ip.0", "lock"]);
    // GC without the list is refused rather than releasing everything
    let (ok, e) = f.run("GC", "", "", &conf);
    assert!(!ok);
    assert_eq!(e["code"], 7, "{e}");
    assert_eq!(f.files().len(), 3);

    for id in ["b", "c", "d", "e"] {
        assert!(f.run("ADD", id, "eth0", &conf).0);
    }
    let (ok, e) = f.run("STATUS", "", "", &conf);
    assert!(!ok);
    assert_eq!(e["code"], 50, "{e}");
}

/// The reference host-local binary.
const REFERENCE: &str = "/usr/lib/cni/host-local";

/// Runs the reference host-local with the fixture's namespace and `conf`, asserting success;
/// fails the test when it is not installed (the comparison is part of what is tested).
fn reference(f: &Fixture, command: &str, id: &str, conf: &Value) -> Value {
    assert!(
        Path::new(REFERENCE).is_file(),
        "{REFERENCE} not found: install the Debian package containernetworking-plugins \
         (apt-get install containernetworking-plugins), which holds the reference plugins \
         this test compares against"
    );
    let out = run_with_stdin(
        Command::new(REFERENCE)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", format!("/run/netns/{}", f.netns))
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
        conf,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The owner index lives in `TWILL_HOST_LOCAL_INDEX_DIR`, never in the data directory; the
/// reference's changes in between are picked up; an empty variable turns the index off.
#[test]
fn owner_index_outside_the_data_dir_and_reference_changes() {
    let f = Fixture::new("index");
    let conf = f.conf("1.0.0", json!({"subnet": "10.77.1.0/24"}));
    assert!(f.run("ADD", "ctr-a", "eth0", &conf).0);
    assert!(f.run("ADD", "ctr-b", "eth0", &conf).0);
    let indexes: Vec<_> = fs::read_dir(&f.index).unwrap().collect();
    assert_eq!(indexes.len(), 1, "one index file per network directory");
    assert_eq!(
        f.files(),
        ["10.77.1.2", "10.77.1.3", "last_reserved_ip.0", "lock"]
    );
    let r = reference(&f, "ADD", "ctr-r", &conf);
    assert_eq!(r["ips"][0]["address"], "10.77.1.4/24", "{r}");
    // ours finds the reference's reservation for a re-ADD, and releases it on DEL
    let (ok, again) = f.run("ADD", "ctr-r", "eth0", &conf);
    assert!(ok, "{again}");
    assert_eq!(again["ips"][0]["address"], "10.77.1.4/24");
    assert_eq!(f.run("DEL", "ctr-r", "eth0", &conf), (true, Value::Null));
    assert!(!f.net().join("10.77.1.4").exists());
    // and the reference releases ours
    reference(&f, "DEL", "ctr-a", &conf);
    assert!(!f.net().join("10.77.1.2").exists());
    let (ok, r) = f.run("ADD", "ctr-c", "eth0", &conf);
    assert!(ok, "{r}");
    assert_eq!(r["ips"][0]["address"], "10.77.1.5/24");

    let mut off = Fixture::new("index-off");
    off.index = String::new();
    let conf = off.conf("1.0.0", json!({"subnet": "10.77.2.0/24"}));
    assert!(off.run("ADD", "ctr-a", "eth0", &conf).0);
    assert_eq!(off.run("DEL", "ctr-a", "eth0", &conf), (true, Value::Null));
    assert_eq!(off.files(), ["last_reserved_ip.0", "lock"]);
}

/// A runtime that stopped reading gets an exit code and a message, not a plugin killed by
/// SIGPIPE (the binary has its own `main`, which ignores the signal as the Rust runtime would).
#[test]
fn closed_stdout_is_an_error_exit_not_sigpipe() {
    // (close-on-exec: no other test's child may keep the read end open)
    let (read_end, write_end) = std::io::pipe().unwrap();
    drop(read_end);
    let out = Command::new(env!("CARGO_BIN_EXE_host-local"))
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write"), "{err}");
}
