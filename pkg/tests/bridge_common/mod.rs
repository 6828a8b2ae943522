//! Shared helpers of the bridge/veth integration tests: throwaway namespaces (`tw-br-<pid>-<n>`,
//! removed on drop, also on panic) and `ip -j` / sysctl queries inside them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use twill::netlink::Netlink;
use twill::netns::Netns;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace made with `ip netns add tw-br-<pid>-<n>`, deleted on drop.
pub struct TestNs {
    pub name: String,
}

impl TestNs {
    pub fn new() -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("tw-br-{}-{n}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(st.success(), "ip netns add {name}");
        TestNs { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    pub fn open(&self) -> Netns {
        Netns::open(&self.path()).expect("open test netns")
    }

    pub fn netlink(&self) -> Netlink {
        Netlink::new_in(&self.open()).expect("netlink in test netns")
    }

    /// `ip -j -n NS ARGS...` parsed as JSON (an empty output is an empty array).
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let out = Command::new("ip")
            .args(["-j", "-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8_lossy(&out.stdout);
        if s.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("ip {args:?} json: {e}: {s}"))
    }

    /// `ip -n NS ARGS...`, asserting success.
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        self.open()
            .run(|| twill::sysctl::get(key))
            .unwrap()
            .unwrap()
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
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The first element of an `ip -j ...` answer.
pub fn first(v: &Value) -> &Value {
    v.as_array()
        .and_then(|a| a.first())
        .unwrap_or_else(|| panic!("empty ip answer: {v}"))
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
