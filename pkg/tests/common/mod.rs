//! Helpers shared by every kernel integration test in `pkg/tests`: throwaway network namespaces
//! (`tw-<test>-<pid>-<n>`, deleted on drop, also on panic), commands and `ip -j` / sysctl / nft
//! queries inside them. Included with `mod common;` from each test file.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use serde_json::Value;
use twill::kernel::netlink::Netlink;
use twill::kernel::netns::Netns;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace made with `ip netns add tw-<test>-<pid>-<n>` (`<test>` is the test file's
/// name, `<n>` counts within the process), deleted on drop.
pub struct TestNs {
    pub name: String,
}

impl TestNs {
    /// A fresh namespace, unique per test file, process and call.
    pub fn new() -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("tw-{}-{}-{n}", env!("CARGO_CRATE_NAME"), std::process::id());
        sh(&["ip", "netns", "add", &name]);
        TestNs { name }
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// A handle on the namespace.
    pub fn open(&self) -> Netns {
        Netns::open(&self.path()).expect("open test netns")
    }

    /// A netlink client bound to the namespace.
    pub fn netlink(&self) -> Netlink {
        Netlink::new_in(&self.open()).expect("netlink in test netns")
    }

    /// Runs `f` with this thread inside the namespace, then returns to where it was.
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        self.open().run(f).expect("enter test netns")
    }

    /// Runs a command inside the namespace (`nsenter --net=PATH CMD...`), asserting success;
    /// its stdout.
    pub fn run(&self, cmd: &[&str]) -> String {
        let net = format!("--net={}", self.path().display());
        let mut full = vec!["nsenter", net.as_str()];
        full.extend_from_slice(cmd);
        sh(&full)
    }

    /// `ip -j -n NS ARGS...` parsed as JSON (an empty output is an empty array).
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let s = self.ip(&[&["-j"], args].concat());
        if s.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("ip {args:?} json: {e}: {s}"))
    }

    /// `ip -n NS ARGS...`, asserting success; its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", self.name.as_str()];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// The `ip -j -d link show dev NAME` object.
    pub fn link(&self, name: &str) -> Value {
        first(&self.ip_json(&["-d", "link", "show", "dev", name])).clone()
    }

    /// Names of every link of the namespace.
    pub fn link_names(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// A sysctl read inside the namespace (path form, e.g. `net/ipv4/ip_forward`).
    pub fn sysctl(&self, key: &str) -> String {
        self.enter(|| twill::kernel::sysctl::get(key)).unwrap()
    }

    /// Pings `dst` from inside the namespace (2 packets, 1 s timeout each): true on a reply.
    pub fn ping(&self, dst: &str) -> bool {
        Command::new("ip")
            .args([
                "netns", "exec", &self.name, "ping", "-c", "2", "-i", "0.2", "-W", "1",
            ])
            .arg(dst)
            .output()
            .expect("run ping")
            .status
            .success()
    }

    /// Every object of `nft -j list ruleset` inside the namespace.
    pub fn ruleset_json(&self) -> Vec<Value> {
        let out = self.run(&["nft", "-j", "list", "ruleset"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["nftables"].as_array().unwrap().clone()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `cmd[0]` with the rest as arguments, asserting success; its stdout.
pub fn sh(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first element of an `ip -j ...` answer.
pub fn first(v: &Value) -> &Value {
    v.as_array()
        .and_then(|a| a.first())
        .unwrap_or_else(|| panic!("empty ip answer: {v}"))
}

/// A network from its text form.
pub fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// Polls `cond` every 10 ms for at most 2 s (kernel work that completes asynchronously, e.g.
/// a received frame processed in softirq); true as soon as it holds.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    for _ in 0..200 {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}
