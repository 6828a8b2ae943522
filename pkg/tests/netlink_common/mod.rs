//! Shared helpers of the netlink integration tests: throwaway namespaces and `ip -j` queries.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use twill::netns::Netns;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace made with `ip netns add tw-nl-<pid>-<n>`, deleted on drop (also on panic).
pub struct TestNs {
    pub name: String,
}

impl TestNs {
    pub fn new() -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("tw-nl-{}-{n}", std::process::id());
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

    /// `ip -j -n NS ARGS...` parsed as JSON (an empty output is an empty array).
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
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
            return serde_json::Value::Array(vec![]);
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
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The first element of an `ip -j ... show dev X` answer.
pub fn first(v: &serde_json::Value) -> &serde_json::Value {
    v.as_array()
        .and_then(|a| a.first())
        .unwrap_or_else(|| panic!("empty ip answer: {v}"))
}
