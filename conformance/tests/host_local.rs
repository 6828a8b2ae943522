//! Black-box conformance of twill's `host-local` IPAM binary.
//!
//! Each test owns a temp root (the IPAM `dataDir` lives in `<root>/data`) and a network
//! namespace used as `CNI_NETNS`; nothing is shared between tests, so they run in parallel.
//!
//! Suites:
//! - version matrix: every command in every CNI version (result shapes, CHECK/GC/STATUS gating).
//! - GC, STATUS, exhaustion, requested addresses, idempotency.
//! - interchange with the reference host-local on one dataDir, both directions.
//! - concurrency: 200 ADDs from 16 parallel processes, then 200 DELs.
//! - malformed input: a table of bad env/config, each with its CNI error code and the data dir
//!   byte-identical before/after.

use conformance::{
    CNI_VERSIONS, DirSnapshot, Invocation, Netns, TempDir, ref_bin, result_ips, twill_bin,
    unique_name,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// CNI and twill error codes asserted here (SPEC "Error"; pkg/src/error.rs).
mod code {
    pub const INCOMPATIBLE_VERSION: u64 = 1;
    pub const INVALID_ENV: u64 = 4;
    pub const IO: u64 = 5;
    pub const DECODE: u64 = 6;
    pub const INVALID_CONFIG: u64 = 7;
    pub const NOT_AVAILABLE: u64 = 50;
    pub const IPAM_EXHAUSTED: u64 = 101;
    pub const IPAM_UNAVAILABLE_ADDRESS: u64 = 102;
}

fn ours() -> PathBuf {
    twill_bin("host-local")
}

fn reference() -> PathBuf {
    ref_bin("host-local")
}

/// One test's world: temp root, the netns passed as CNI_NETNS, a unique network name, and
/// twill's owner index directory (apart from the root, whose snapshots hold only what the
/// reference shares; removed with the test instead of left in `/run/twill`).
struct Env {
    tmp: TempDir,
    ns: Netns,
    name: String,
    index: TempDir,
}

/// The environment variable naming twill host-local's owner index directory.
const INDEX_DIR_ENV: &str = "TWILL_HOST_LOCAL_INDEX_DIR";

impl Env {
    fn new() -> Env {
        Env {
            tmp: TempDir::new("hl"),
            ns: Netns::new(),
            name: unique_name("net"),
            index: TempDir::new("hl-index"),
        }
    }

    /// `INDEX_DIR_ENV`'s value for this test.
    fn index_dir(&self) -> String {
        self.index.path().display().to_string()
    }

    fn data_dir(&self) -> PathBuf {
        self.tmp.join("data")
    }

    /// `<dataDir>/<network name>`: where reservations live.
    fn net_dir(&self) -> PathBuf {
        self.data_dir().join(&self.name)
    }

    /// A host-local config of CNI `version` over `ranges` (a list of range sets).
    fn conf(&self, version: &str, ranges: Value) -> Value {
        json!({
            "cniVersion": version,
            "name": self.name,
            "type": "host-local",
            "ipam": {
                "type": "host-local",
                "dataDir": self.data_dir(),
                "ranges": ranges,
                "routes": [{"dst": "0.0.0.0/0"}]
            }
        })
    }

    /// A 1.0.0 config over one IPv4 subnet.
    fn conf4(&self, subnet: &str) -> Value {
        self.conf("1.0.0", json!([[{ "subnet": subnet }]]))
    }

    /// An attachment call (ADD/DEL/CHECK) with ifname eth0.
    fn call(&self, bin: &Path, cmd: &str, id: &str, conf: &Value) -> Invocation {
        self.call_if(bin, cmd, id, "eth0", conf)
    }

    fn call_if(&self, bin: &Path, cmd: &str, id: &str, ifname: &str, conf: &Value) -> Invocation {
        Invocation::new(bin)
            .env(INDEX_DIR_ENV, &self.index_dir())
            .command(cmd)
            .container_id(id)
            .netns(self.ns.path())
            .ifname(ifname)
            .stdin_json(conf)
    }

    /// A call without attachment variables (GC, STATUS, VERSION).
    fn plain(&self, bin: &Path, cmd: &str, conf: &Value) -> Invocation {
        Invocation::new(bin)
            .env(INDEX_DIR_ENV, &self.index_dir())
            .command(cmd)
            .stdin_json(conf)
    }

    /// ADD with ours; returns the result's first IP.
    fn add(&self, id: &str, conf: &Value) -> IpAddr {
        let res = self.call(&ours(), "ADD", id, conf).run().assert_ok();
        *result_ips(&res)
            .first()
            .unwrap_or_else(|| panic!("no IP in {res}"))
    }

    /// Reservation files in the network dir: file name (an IP) → content. Skips `lock` and
    /// `last_reserved_ip.*`.
    fn reservations(&self) -> BTreeMap<String, String> {
        reservations_in(&self.net_dir())
    }

    /// The whole temp root, byte for byte.
    fn snapshot(&self) -> DirSnapshot {
        DirSnapshot::take(self.tmp.path())
    }
}

fn reservations_in(dir: &Path) -> BTreeMap<String, String> {
    DirSnapshot::take(dir)
        .files()
        .into_iter()
        .filter_map(|(p, b)| {
            let name = p.display().to_string();
            if name.parse::<IpAddr>().is_ok() {
                Some((name, String::from_utf8_lossy(&b).into_owned()))
            } else {
                assert!(
                    name == "lock"
                        || name.starts_with("last_reserved_ip.")
                        || name == ".twill-boot-id",
                    "unexpected file {name} in {}",
                    dir.display()
                );
                None
            }
        })
        .collect()
}

/// The on-disk reservation format shared with the reference: `<id>\r\n<ifname>`.
fn owner(id: &str, ifname: &str) -> String {
    format!("{id}\r\n{ifname}")
}

fn version_at_least(v: &str, min: &str) -> bool {
    let idx = |x: &str| {
        CNI_VERSIONS
            .iter()
            .position(|s| *s == x)
            .expect("known version")
    };
    idx(v) >= idx(min)
}

fn with_attachments(conf: &Value, valid: &[(&str, &str)]) -> Value {
    let mut c = conf.clone();
    let list: Vec<Value> = valid
        .iter()
        .map(|(id, ifn)| json!({"containerID": id, "ifname": ifn}))
        .collect();
    c["cni.dev/valid-attachments"] = Value::Array(list);
    c
}

// ---------------------------------------------------------------------------------------------
// Version matrix
// ---------------------------------------------------------------------------------------------

/// ADD, CHECK, GC, STATUS, VERSION, DEL, DEL again, CHECK after DEL in CNI version `v`, on a
/// dual-stack config; asserts the result shape of that version and the files on disk.
fn version_matrix(v: &str) {
    let env = Env::new();
    let mut conf = env.conf(
        v,
        json!([[{"subnet": "10.60.0.0/24"}], [{"subnet": "fd60::/64"}]]),
    );
    conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]);
    let id = unique_name("c");

    // ADD
    let res = env.call(&ours(), "ADD", &id, &conf).run().assert_ok();
    assert_eq!(res["cniVersion"], v, "result cniVersion: {res}");
    if !version_at_least(v, "0.3.0") {
        assert!(res.get("ips").is_none(), "{v} has no ips: {res}");
        assert_eq!(res["ip4"]["ip"], "10.60.0.2/24", "{res}");
        assert_eq!(res["ip4"]["gateway"], "10.60.0.1", "{res}");
        assert_eq!(res["ip4"]["routes"], json!([{"dst": "0.0.0.0/0"}]), "{res}");
        assert_eq!(res["ip6"]["ip"], "fd60::2/64", "{res}");
        assert_eq!(res["ip6"]["gateway"], "fd60::1", "{res}");
        assert_eq!(res["ip6"]["routes"], json!([{"dst": "::/0"}]), "{res}");
    } else {
        assert!(
            res.get("ip4").is_none() && res.get("ip6").is_none(),
            "{v}: {res}"
        );
        let ips = res["ips"]
            .as_array()
            .unwrap_or_else(|| panic!("no ips: {res}"));
        assert_eq!(ips.len(), 2, "{res}");
        let want = [
            ("10.60.0.2/24", "10.60.0.1", "4"),
            ("fd60::2/64", "fd60::1", "6"),
        ];
        for (ip, (addr, gw, fam)) in ips.iter().zip(want) {
            assert_eq!(ip["address"], addr, "{res}");
            assert_eq!(ip["gateway"], gw, "{res}");
            if version_at_least(v, "1.0.0") {
                assert!(
                    ip.get("version").is_none(),
                    "{v} has no per-IP version: {res}"
                );
            } else {
                assert_eq!(ip["version"], fam, "{v} needs per-IP version: {res}");
            }
            assert!(
                ip.get("interface").is_none(),
                "IPAM results have no interface: {res}"
            );
        }
        assert_eq!(
            res["routes"],
            json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]),
            "{res}"
        );
    }
    let no_ifaces = res
        .get("interfaces")
        .is_none_or(|i| i.as_array().is_some_and(Vec::is_empty));
    assert!(no_ifaces, "IPAM results list no interfaces: {res}");
    let mut want = BTreeMap::new();
    want.insert("10.60.0.2".to_string(), owner(&id, "eth0"));
    want.insert("fd60::2".to_string(), owner(&id, "eth0"));
    assert_eq!(env.reservations(), want);
    let after_add = env.snapshot();

    // CHECK: 0.4.0 and later only.
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = res.clone();
    let out = env.call(&ours(), "CHECK", &id, &check_conf).run();
    if version_at_least(v, "0.4.0") {
        out.assert_ok_empty();
    } else {
        out.assert_error(code::INCOMPATIBLE_VERSION);
    }
    after_add.assert_same(&env.snapshot(), format!("CHECK {v}"));

    // GC (keeping this attachment) and STATUS: 1.1.0 only.
    let gc_conf = with_attachments(&conf, &[(&id, "eth0")]);
    for (cmd, c) in [("GC", &gc_conf), ("STATUS", &conf)] {
        let out = env.plain(&ours(), cmd, c).run();
        if version_at_least(v, "1.1.0") {
            out.assert_ok_empty();
        } else {
            out.assert_error(code::INCOMPATIBLE_VERSION);
        }
        after_add.assert_same(&env.snapshot(), format!("{cmd} {v}"));
    }

    // VERSION lists all seven.
    let out = env
        .plain(&ours(), "VERSION", &json!({"cniVersion": v}))
        .run()
        .assert_ok();
    let listed: BTreeSet<&str> = out["supportedVersions"]
        .as_array()
        .unwrap_or_else(|| panic!("no supportedVersions: {out}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed, CNI_VERSIONS.iter().copied().collect(), "{out}");
    let answered = out["cniVersion"].as_str().unwrap_or("");
    assert!(
        CNI_VERSIONS.contains(&answered),
        "VERSION cniVersion: {out}"
    );

    // DEL releases both addresses; a second DEL succeeds and changes nothing.
    env.call(&ours(), "DEL", &id, &conf).run().assert_ok_empty();
    assert_eq!(env.reservations(), BTreeMap::new());
    let after_del = env.snapshot();
    env.call(&ours(), "DEL", &id, &conf).run().assert_ok_empty();
    after_del.assert_same(&env.snapshot(), "second DEL");

    // CHECK after DEL: the reservation is gone, CHECK must report it.
    if version_at_least(v, "0.4.0") {
        let out = env.call(&ours(), "CHECK", &id, &check_conf).run();
        if let Err(e) = out.check_error_shape() {
            panic!("CHECK after DEL must fail with a CNI error: {e}\n{out}");
        }
        after_del.assert_same(&env.snapshot(), "CHECK after DEL");
    }
}

conformance::per_cni_version!(version_matrix);

#[test]
fn version_without_stdin_lists_all_versions() {
    let out = Invocation::new(ours()).command("VERSION").run().assert_ok();
    let listed: BTreeSet<&str> = out["supportedVersions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed, CNI_VERSIONS.iter().copied().collect(), "{out}");
}

// ---------------------------------------------------------------------------------------------
// GC, STATUS, exhaustion, requested addresses, idempotency
// ---------------------------------------------------------------------------------------------

#[test]
fn gc_releases_exactly_the_attachments_not_listed() {
    let env = Env::new();
    let conf = env.conf("1.1.0", json!([[{"subnet": "10.63.0.0/24"}]]));
    let (a, b, c) = (unique_name("a"), unique_name("b"), unique_name("c"));
    let ip_a = env.add(&a, &conf);
    let ip_b = env.add(&b, &conf);
    let ip_c = env.add(&c, &conf);
    // Same container, second interface: GC keys on (containerID, ifname).
    let res = env
        .call_if(&ours(), "ADD", &a, "net1", &conf)
        .run()
        .assert_ok();
    let ip_a1 = result_ips(&res)[0];
    assert_eq!(env.reservations().len(), 4);

    let gc = with_attachments(&conf, &[(&a, "eth0"), (&c, "eth0")]);
    env.plain(&ours(), "GC", &gc).run().assert_ok_empty();
    let mut want = BTreeMap::new();
    want.insert(ip_a.to_string(), owner(&a, "eth0"));
    want.insert(ip_c.to_string(), owner(&c, "eth0"));
    assert_eq!(
        env.reservations(),
        want,
        "b ({ip_b}) and a/net1 ({ip_a1}) must be released"
    );

    // GC is idempotent; an empty list releases everything.
    let snap = env.snapshot();
    env.plain(&ours(), "GC", &gc).run().assert_ok_empty();
    snap.assert_same(&env.snapshot(), "second GC");
    env.plain(&ours(), "GC", &with_attachments(&conf, &[]))
        .run()
        .assert_ok_empty();
    assert_eq!(env.reservations(), BTreeMap::new());
}

#[test]
fn gc_on_a_network_without_state_succeeds() {
    let env = Env::new();
    let conf = env.conf("1.1.0", json!([[{"subnet": "10.63.1.0/24"}]]));
    let snap = env.snapshot();
    env.plain(&ours(), "GC", &with_attachments(&conf, &[("x", "eth0")]))
        .run()
        .assert_ok_empty();
    assert_eq!(env.reservations(), BTreeMap::new());
    let d = snap.diff(&env.snapshot());
    assert!(
        d.iter().all(|l| l.starts_with("added")),
        "GC must not change or remove: {d:?}"
    );
}

#[test]
fn exhausted_slash30_gives_101_and_status_50() {
    let env = Env::new();
    let conf = env.conf("1.1.0", json!([[{"subnet": "10.61.0.0/30"}]]));
    env.plain(&ours(), "STATUS", &conf).run().assert_ok_empty();
    // /30: .0 network, .1 gateway, .3 broadcast: .2 is the only address.
    let a = unique_name("a");
    assert_eq!(env.add(&a, &conf).to_string(), "10.61.0.2");
    let full = env.snapshot();
    let b = unique_name("b");
    env.call(&ours(), "ADD", &b, &conf)
        .run()
        .assert_error(code::IPAM_EXHAUSTED);
    full.assert_same(&env.snapshot(), "ADD into an exhausted range");
    env.plain(&ours(), "STATUS", &conf)
        .run()
        .assert_error(code::NOT_AVAILABLE);
    full.assert_same(&env.snapshot(), "STATUS");
    // Freeing the address makes the network available again.
    env.call(&ours(), "DEL", &a, &conf).run().assert_ok_empty();
    env.plain(&ours(), "STATUS", &conf).run().assert_ok_empty();
    assert_eq!(env.add(&b, &conf).to_string(), "10.61.0.2");
}

#[test]
fn exhausted_single_address_range_and_slash29() {
    let env = Env::new();
    let one = env.conf(
        "1.1.0",
        json!([[{"subnet": "10.61.1.0/24", "rangeStart": "10.61.1.10", "rangeEnd": "10.61.1.10"}]]),
    );
    assert_eq!(env.add(&unique_name("a"), &one).to_string(), "10.61.1.10");
    let snap = env.snapshot();
    env.call(&ours(), "ADD", &unique_name("b"), &one)
        .run()
        .assert_error(code::IPAM_EXHAUSTED);
    snap.assert_same(&env.snapshot(), "exhausted single-address range");
    env.plain(&ours(), "STATUS", &one)
        .run()
        .assert_error(code::NOT_AVAILABLE);

    let env = Env::new();
    let c29 = env.conf("1.1.0", json!([[{"subnet": "10.61.2.0/29"}]]));
    let got: BTreeSet<String> = (0..5)
        .map(|_| env.add(&unique_name("p"), &c29).to_string())
        .collect();
    let want: BTreeSet<String> = (2..=6).map(|i| format!("10.61.2.{i}")).collect();
    assert_eq!(got, want, "a /29 holds .2-.6 (gateway .1)");
    let snap = env.snapshot();
    env.call(&ours(), "ADD", &unique_name("q"), &c29)
        .run()
        .assert_error(code::IPAM_EXHAUSTED);
    snap.assert_same(&env.snapshot(), "exhausted /29");
    env.plain(&ours(), "STATUS", &c29)
        .run()
        .assert_error(code::NOT_AVAILABLE);
}

/// Range sets are allocated in order; when a later one is exhausted, what the earlier ones
/// reserved for this ADD must be released again.
#[test]
fn failed_dual_stack_add_leaves_no_reservation() {
    let env = Env::new();
    let conf = env.conf(
        "1.1.0",
        json!([[{"subnet": "fd61::/64"}], [{"subnet": "10.61.3.0/30"}]]),
    );
    let a = unique_name("a");
    env.call(&ours(), "ADD", &a, &conf).run().assert_ok();
    let before = env.reservations();
    assert_eq!(before.len(), 2);
    let names_before = env.snapshot().file_names();
    env.call(&ours(), "ADD", &unique_name("b"), &conf)
        .run()
        .assert_error(code::IPAM_EXHAUSTED);
    assert_eq!(
        env.reservations(),
        before,
        "the IPv6 address of the failed ADD must be released"
    );
    assert_eq!(
        env.snapshot().file_names(),
        names_before,
        "no new file after a failed ADD"
    );
    env.plain(&ours(), "STATUS", &conf)
        .run()
        .assert_error(code::NOT_AVAILABLE);
}

#[test]
fn status_reports_available_with_free_addresses() {
    let env = Env::new();
    let conf = env.conf(
        "1.1.0",
        json!([[{"subnet": "10.61.4.0/24"}], [{"subnet": "fd64::/64"}]]),
    );
    env.plain(&ours(), "STATUS", &conf).run().assert_ok_empty();
    env.add(&unique_name("a"), &conf);
    env.plain(&ours(), "STATUS", &conf).run().assert_ok_empty();
}

#[test]
fn requested_addresses_are_honoured() {
    let env = Env::new();
    let conf = env.conf4("10.62.0.0/24");
    // CNI_ARGS IP=
    let a = unique_name("a");
    let out = env
        .call(&ours(), "ADD", &a, &conf)
        .cni_args("IP=10.62.0.50")
        .run()
        .assert_ok();
    assert_eq!(out["ips"][0]["address"], "10.62.0.50/24", "{out}");
    // runtimeConfig.ips (capability "ips")
    let mut rc = conf.clone();
    rc["runtimeConfig"] = json!({"ips": ["10.62.0.51/24"]});
    let out = env
        .call(&ours(), "ADD", &unique_name("b"), &rc)
        .run()
        .assert_ok();
    assert_eq!(out["ips"][0]["address"], "10.62.0.51/24", "{out}");
    // args.cni.ips
    let mut ac = conf.clone();
    ac["args"] = json!({"cni": {"ips": ["10.62.0.52"]}});
    let out = env
        .call(&ours(), "ADD", &unique_name("c"), &ac)
        .run()
        .assert_ok();
    assert_eq!(out["ips"][0]["address"], "10.62.0.52/24", "{out}");
    // An address owned by someone else is refused, and nothing changes.
    let snap = env.snapshot();
    let out = env
        .call(&ours(), "ADD", &unique_name("d"), &conf)
        .cni_args("IP=10.62.0.50")
        .run();
    out.assert_error(code::IPAM_UNAVAILABLE_ADDRESS);
    snap.assert_same(&env.snapshot(), "requested address already taken");
    assert_eq!(env.reservations()["10.62.0.50"], owner(&a, "eth0"));
}

#[test]
fn rangestart_rangeend_and_gateway_are_respected() {
    let env = Env::new();
    let conf = env.conf(
        "1.0.0",
        json!([[{"subnet": "10.62.1.0/24", "rangeStart": "10.62.1.100",
                 "rangeEnd": "10.62.1.102", "gateway": "10.62.1.101"}]]),
    );
    let a = env.add(&unique_name("a"), &conf).to_string();
    let b = env.add(&unique_name("b"), &conf).to_string();
    assert_eq!(
        (a.as_str(), b.as_str()),
        ("10.62.1.100", "10.62.1.102"),
        "gateway is skipped"
    );
    let out = env.call(&ours(), "ADD", &unique_name("c"), &conf).run();
    out.assert_error(code::IPAM_EXHAUSTED);
}

#[test]
fn second_range_in_a_set_is_used_when_the_first_is_full() {
    let env = Env::new();
    let conf = env.conf(
        "1.0.0",
        json!([[{"subnet": "10.62.2.0/30"}, {"subnet": "10.62.3.0/30"}]]),
    );
    let a = env.add(&unique_name("a"), &conf).to_string();
    let b = env.add(&unique_name("b"), &conf).to_string();
    assert_eq!((a.as_str(), b.as_str()), ("10.62.2.2", "10.62.3.2"));
    let out = env
        .call(&ours(), "ADD", &unique_name("c"), &conf)
        .run()
        .assert_error(101);
    assert!(!out["msg"].as_str().unwrap_or("").is_empty());
}

#[test]
fn repeated_add_for_the_same_attachment_never_holds_two_addresses() {
    let env = Env::new();
    let conf = env.conf4("10.62.4.0/24");
    let a = unique_name("a");
    let first = env.add(&a, &conf);
    // twill answers a repeated ADD with the attachment's addresses (documented deviation from
    // the reference, which refuses it)
    let again = result_ips(&env.call(&ours(), "ADD", &a, &conf).run().assert_ok());
    assert_eq!(
        again,
        vec![first],
        "a repeated ADD must return the same address"
    );
    let r = env.reservations();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[&first.to_string()], owner(&a, "eth0"));
    // Another ifname of the same container is a different attachment.
    env.call_if(&ours(), "ADD", &a, "net1", &conf)
        .run()
        .assert_ok();
    assert_eq!(env.reservations().len(), 2);
    // DEL releases only the named attachment.
    env.call_if(&ours(), "DEL", &a, "net1", &conf)
        .run()
        .assert_ok_empty();
    assert_eq!(env.reservations().len(), 1);
}

#[test]
fn del_of_unknown_container_or_missing_netns_succeeds() {
    let env = Env::new();
    let conf = env.conf4("10.62.5.0/24");
    let keep = unique_name("k");
    env.add(&keep, &conf);
    let snap = env.snapshot();
    env.call(&ours(), "DEL", &unique_name("ghost"), &conf)
        .run()
        .assert_ok_empty();
    // DEL without CNI_NETNS (the netns is already gone) and with a dangling netns path.
    Invocation::new(ours())
        .env(INDEX_DIR_ENV, &env.index_dir())
        .command("DEL")
        .container_id(&unique_name("ghost"))
        .ifname("eth0")
        .stdin_json(&conf)
        .run()
        .assert_ok_empty();
    env.call(&ours(), "DEL", &unique_name("ghost"), &conf)
        .netns("/run/netns/does-not-exist")
        .run()
        .assert_ok_empty();
    snap.assert_same(&env.snapshot(), "DEL of unknown containers");
    // On a network that never had state.
    let mut other = conf.clone();
    other["name"] = json!(unique_name("empty"));
    env.call(&ours(), "DEL", &keep, &other)
        .run()
        .assert_ok_empty();
    assert_eq!(
        env.reservations()[&"10.62.5.2".to_string()],
        owner(&keep, "eth0")
    );
}

#[test]
fn legacy_reservation_without_ifname_is_released() {
    // Old host-local versions wrote only the container ID; the reference still releases those.
    let env = Env::new();
    let conf = env.conf4("10.62.6.0/24");
    env.add(&unique_name("a"), &conf);
    let legacy = unique_name("legacy");
    std::fs::write(env.net_dir().join("10.62.6.77"), legacy.as_bytes()).expect("write legacy");
    env.call(&ours(), "DEL", &legacy, &conf)
        .run()
        .assert_ok_empty();
    assert!(
        !env.reservations().contains_key("10.62.6.77"),
        "legacy reservation not released"
    );
    assert_eq!(env.reservations().len(), 1);
}

#[test]
fn gc_touches_only_reservations_of_its_own_network() {
    let env = Env::new();
    let conf = env.conf("1.1.0", json!([[{"subnet": "10.63.2.0/24"}]]));
    let gone = unique_name("gone");
    env.add(&gone, &conf);
    // Foreign files in the network dir and a sibling network's reservation.
    std::fs::write(env.net_dir().join("notes.txt"), b"operator notes").expect("write");
    let sibling = env.data_dir().join("other-net");
    std::fs::create_dir_all(&sibling).expect("mkdir");
    std::fs::write(sibling.join("10.63.2.9"), owner(&gone, "eth0")).expect("write");
    let before = env.snapshot();
    env.plain(&ours(), "GC", &with_attachments(&conf, &[]))
        .run()
        .assert_ok_empty();
    let d = before.diff(&env.snapshot());
    let want = format!("removed: data/{}/10.63.2.2", env.name);
    assert_eq!(
        d,
        vec![want],
        "GC may only remove this network's stale reservation"
    );
}

#[test]
fn del_releases_only_the_exact_owner() {
    let env = Env::new();
    let conf = env.conf4("10.62.7.0/24");
    let base = unique_name("id");
    let longer = format!("{base}0");
    env.add(&base, &conf);
    env.add(&longer, &conf);
    env.call_if(&ours(), "ADD", &base, "eth00", &conf)
        .run()
        .assert_ok();
    env.call_if(&ours(), "ADD", &longer, "eth0", &conf).run();
    let before = env.reservations();
    assert_eq!(before.len(), 3, "{before:?}");
    env.call(&ours(), "DEL", &base, &conf)
        .run()
        .assert_ok_empty();
    let after = env.reservations();
    let mut want = before.clone();
    want.retain(|_, o| *o != owner(&base, "eth0"));
    assert_eq!(after, want, "only {base}/eth0 may be released");
}

#[test]
fn resolv_conf_dns_matches_reference() {
    let env = Env::new();
    let resolv = env.tmp.join("resolv.conf");
    let text = "# comment\nnameserver 10.0.0.53\nnameserver fd00::53\n\
                domain corp.example\nsearch a.example b.example\noptions ndots:5 timeout:2\n";
    std::fs::write(&resolv, text).expect("write");
    let mut conf = env.conf4("10.62.8.0/24");
    conf["ipam"]["resolvConf"] = json!(resolv);
    let ours_res = env
        .call(&ours(), "ADD", &unique_name("a"), &conf)
        .run()
        .assert_ok();
    let ref_res = env
        .call(&reference(), "ADD", &unique_name("b"), &conf)
        .run()
        .assert_ok();
    assert_eq!(ours_res["dns"], ref_res["dns"], "dns from resolvConf");
    assert_eq!(
        ours_res["dns"]["nameservers"],
        json!(["10.0.0.53", "fd00::53"])
    );
}

#[test]
fn kubernetes_cni_args_with_ignore_unknown() {
    let env = Env::new();
    let conf = env.conf(
        "1.0.0",
        json!([[{"subnet": "10.62.9.0/24"}], [{"subnet": "fd62:9::/64"}]]),
    );
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
                K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;IP=10.62.9.40,fd62:9::40";
    let res = env
        .call(&ours(), "ADD", &unique_name("a"), &conf)
        .cni_args(args)
        .run()
        .assert_ok();
    let ips: Vec<String> = result_ips(&res).iter().map(IpAddr::to_string).collect();
    assert_eq!(ips, vec!["10.62.9.40", "fd62:9::40"], "{res}");
    // Only the IPv4 one requested: the IPv6 set allocates normally (after its cursor, ::40).
    let res = env
        .call(&ours(), "ADD", &unique_name("b"), &conf)
        .cni_args("IP=10.62.9.41")
        .run();
    let ips: Vec<String> = result_ips(&res.assert_ok())
        .iter()
        .map(IpAddr::to_string)
        .collect();
    assert_eq!(ips, vec!["10.62.9.41", "fd62:9::41"]);
}

#[test]
fn check_fails_when_the_address_belongs_to_someone_else() {
    let env = Env::new();
    let conf = env.conf("1.0.0", json!([[{"subnet": "10.62.10.0/24"}]]));
    let (a, b) = (unique_name("a"), unique_name("b"));
    let res_a = env.call(&ours(), "ADD", &a, &conf).run().assert_ok();
    env.add(&b, &conf);
    let mut check = conf.clone();
    check["prevResult"] = res_a.clone();
    env.call(&ours(), "CHECK", &a, &check)
        .run()
        .assert_ok_empty();
    // SPEC CHECK: the plugin must consult prevResult for the expected addresses; holding some
    // address is not enough.
    let snap = env.snapshot();
    // b claims a's result: its own reservation is a different address.
    let out = env.call(&ours(), "CHECK", &b, &check).run();
    if let Err(e) = out.check_error_shape() {
        panic!("CHECK of someone else's address must fail: {e}\n{out}");
    }
    // A prevResult address outside every range.
    let mut forged = check.clone();
    forged["prevResult"]["ips"][0]["address"] = json!("192.0.2.7/24");
    let out = env.call(&ours(), "CHECK", &a, &forged).run();
    if let Err(e) = out.check_error_shape() {
        panic!("CHECK of an address outside the ranges must fail: {e}\n{out}");
    }
    snap.assert_same(&env.snapshot(), "failed CHECKs");
}

#[test]
fn long_container_ids_and_longest_ifname_are_accepted() {
    let env = Env::new();
    let conf = env.conf4("10.62.11.0/24");
    // 64 hex characters, as containerd and CRI-O use; a 15-byte ifname (IFNAMSIZ - 1).
    let id = format!("{:0>64}", format!("{:x}", std::process::id()));
    let res = env
        .call_if(&ours(), "ADD", &id, "abcdefghijklmno", &conf)
        .run()
        .assert_ok();
    let ip = result_ips(&res)[0].to_string();
    assert_eq!(env.reservations()[&ip], owner(&id, "abcdefghijklmno"));
    env.call_if(&ours(), "DEL", &id, "abcdefghijklmno", &conf)
        .run()
        .assert_ok_empty();
    assert_eq!(env.reservations(), BTreeMap::new());
}

/// A /8 and a /64 are allocated from and reported on without walking the range.
#[test]
fn huge_ranges_are_served_quickly() {
    let env = Env::new();
    let conf = env.conf(
        "1.1.0",
        json!([[{"subnet": "10.0.0.0/8"}],
               [{"subnet": "fd00:8::/64", "rangeStart": "fd00:8::ffff:ffff:ffff:fff0"}]]),
    );
    let bound = std::time::Duration::from_secs(3);
    for i in 0..3 {
        let out = env
            .call(&ours(), "ADD", &format!("big-{i}"), &conf)
            .timeout(bound)
            .run();
        let ips: Vec<String> = result_ips(&out.assert_ok())
            .iter()
            .map(IpAddr::to_string)
            .collect();
        let v6 = format!("fd00:8::ffff:ffff:ffff:fff{}", i);
        assert_eq!(ips, vec![format!("10.0.0.{}", i + 2), v6]);
    }
    env.plain(&ours(), "STATUS", &conf)
        .timeout(bound)
        .run()
        .assert_ok_empty();
    env.plain(&ours(), "GC", &with_attachments(&conf, &[]))
        .timeout(bound)
        .run()
        .assert_ok_empty();
    assert_eq!(env.reservations(), BTreeMap::new());
}

// ---------------------------------------------------------------------------------------------
// Interchange with the reference host-local (same dataDir, CNI 1.0.0: the reference's newest)
// ---------------------------------------------------------------------------------------------

/// Ours allocates, the reference continues from ours' cursor and sees ours' reservations.
#[test]
fn interchange_reference_continues_after_ours() {
    let env = Env::new();
    let conf = env.conf4("10.70.0.0/24");
    let (a, b) = (unique_name("a"), unique_name("b"));
    assert_eq!(env.add(&a, &conf).to_string(), "10.70.0.2");
    assert_eq!(env.add(&b, &conf).to_string(), "10.70.0.3");
    env.call(&ours(), "DEL", &a, &conf).run().assert_ok_empty();
    // .2 is free again, .3 is ours: the reference must continue after ours' last reservation
    // (it reads last_reserved_ip.0 written by ours) and not hand out .3.
    let c = unique_name("c");
    let res = env.call(&reference(), "ADD", &c, &conf).run().assert_ok();
    assert_eq!(
        res["ips"][0]["address"], "10.70.0.4/24",
        "reference after ours: {res}"
    );
    // The reference sees ours' reservation file: requesting .3 is refused...
    let out = env
        .call(&reference(), "ADD", &unique_name("d"), &conf)
        .cni_args("IP=10.70.0.3")
        .run();
    assert!(
        !out.success(),
        "reference handed out an address ours reserved\n{out}"
    );
    // ...while the free .2 is granted.
    let e = unique_name("e");
    let out = env
        .call(&reference(), "ADD", &e, &conf)
        .cni_args("IP=10.70.0.2")
        .run()
        .assert_ok();
    assert_eq!(out["ips"][0]["address"], "10.70.0.2/24");
    let mut want = BTreeMap::new();
    want.insert("10.70.0.2".to_string(), owner(&e, "eth0"));
    want.insert("10.70.0.3".to_string(), owner(&b, "eth0"));
    want.insert("10.70.0.4".to_string(), owner(&c, "eth0"));
    assert_eq!(env.reservations(), want);
}

/// The reference allocates, ours continues from the reference's cursor and sees its files.
#[test]
fn interchange_ours_continues_after_reference() {
    let env = Env::new();
    let conf = env.conf4("10.70.1.0/24");
    let (a, b) = (unique_name("a"), unique_name("b"));
    for id in [&a, &b] {
        env.call(&reference(), "ADD", id, &conf).run().assert_ok();
    }
    env.call(&reference(), "DEL", &a, &conf)
        .run()
        .assert_ok_empty();
    let c = unique_name("c");
    assert_eq!(
        env.add(&c, &conf).to_string(),
        "10.70.1.4",
        "ours after the reference"
    );
    let snap = env.snapshot();
    let out = env
        .call(&ours(), "ADD", &unique_name("d"), &conf)
        .cni_args("IP=10.70.1.3")
        .run();
    out.assert_error(code::IPAM_UNAVAILABLE_ADDRESS);
    snap.assert_same(&env.snapshot(), "ours refusing the reference's address");
    let e = unique_name("e");
    let out = env
        .call(&ours(), "ADD", &e, &conf)
        .cni_args("IP=10.70.1.2")
        .run()
        .assert_ok();
    assert_eq!(out["ips"][0]["address"], "10.70.1.2/24");
    let mut want = BTreeMap::new();
    want.insert("10.70.1.2".to_string(), owner(&e, "eth0"));
    want.insert("10.70.1.3".to_string(), owner(&b, "eth0"));
    want.insert("10.70.1.4".to_string(), owner(&c, "eth0"));
    assert_eq!(env.reservations(), want);
}

/// Each side releases what the other reserved (DEL with the owner's container ID and ifname).
#[test]
fn interchange_each_side_releases_the_others_reservation() {
    let env = Env::new();
    let conf = env.conf(
        "1.0.0",
        json!([[{"subnet": "10.70.2.0/24"}], [{"subnet": "fd70:2::/64"}]]),
    );
    let mine = unique_name("mine");
    let theirs = unique_name("theirs");
    env.call_if(&ours(), "ADD", &mine, "net1", &conf)
        .run()
        .assert_ok();
    env.call_if(&reference(), "ADD", &theirs, "net2", &conf)
        .run()
        .assert_ok();
    assert_eq!(env.reservations().len(), 4);
    // The reference releases ours...
    env.call_if(&reference(), "DEL", &mine, "net1", &conf)
        .run()
        .assert_ok_empty();
    let left = env.reservations();
    assert_eq!(
        left.len(),
        2,
        "reference DEL must release both of ours: {left:?}"
    );
    assert!(
        left.values().all(|o| *o == owner(&theirs, "net2")),
        "{left:?}"
    );
    // ...and ours releases the reference's.
    env.call_if(&ours(), "DEL", &theirs, "net2", &conf)
        .run()
        .assert_ok_empty();
    assert_eq!(env.reservations(), BTreeMap::new());
}

/// One step of a scripted sequence run on both implementations.
enum Op {
    Add(usize, &'static str),
    Del(usize, &'static str),
    /// ADD with `CNI_ARGS` `IP=<addresses>`.
    AddIp(usize, &'static str, &'static str),
    /// Overwrite `last_reserved_ip.<set>` with these bytes (a corrupt or stale cursor).
    Cursor(usize, &'static str),
}

/// The same sequence on two dataDirs, one driven by ours and one by the reference, gives the
/// same address at every step and leaves byte-identical trees (file names, reservation
/// contents, cursors, lock file). The sequence fills two ranges of one set, frees addresses,
/// wraps the cursor around, and recovers from a garbage and an out-of-range cursor.
#[test]
fn interchange_on_disk_state_is_byte_identical() {
    use Op::*;
    let ours_env = Env::new();
    let ref_env = Env {
        tmp: TempDir::new("hl-ref"),
        ns: Netns::new(),
        name: ours_env.name.clone(),
        index: TempDir::new("hl-ref-index"),
    };
    let ranges = json!([
        [{"subnet": "10.70.3.0/29"}, {"subnet": "10.70.4.0/29"}],
        [{"subnet": "fd70:3::/64", "rangeStart": "fd70:3::10", "rangeEnd": "fd70:3::20"}]
    ]);
    let mut ops: Vec<Op> = (0..9)
        .map(|i| Add(i, if i % 2 == 0 { "eth0" } else { "net1" }))
        .collect();
    ops.extend([Del(1, "net1"), Del(3, "net1"), Del(6, "eth0")]);
    ops.extend([Add(9, "eth0"), Add(10, "eth0")]); // the second one wraps around
    ops.extend([Cursor(0, "garbage\n"), Add(11, "eth0")]);
    ops.extend([Cursor(1, "fd70:3::99"), Add(12, "eth0")]);
    ops.extend([Del(0, "eth0"), Add(0, "net1")]);
    ops.extend([
        Del(2, "eth0"),
        AddIp(13, "eth0", "10.70.3.4"),
        Del(4, "eth0"),
        Add(14, "eth0"),
    ]);
    let ids: Vec<String> = (0..15)
        .map(|i| format!("ctr-{i}-{}", std::process::id()))
        .collect();
    let run = |env: &Env, bin: &Path| -> Vec<String> {
        let conf = env.conf("1.0.0", ranges.clone());
        let mut trace = Vec::new();
        for op in &ops {
            match op {
                Add(i, ifn) => {
                    let res = env
                        .call_if(bin, "ADD", &ids[*i], ifn, &conf)
                        .run()
                        .assert_ok();
                    trace.push(format!(
                        "ADD {i}/{ifn}: ips={} routes={}",
                        res["ips"], res["routes"]
                    ));
                }
                AddIp(i, ifn, ips) => {
                    let call = env.call_if(bin, "ADD", &ids[*i], ifn, &conf);
                    let res = call.cni_args(&format!("IP={ips}")).run().assert_ok();
                    trace.push(format!("ADD {i}/{ifn} IP={ips}: ips={}", res["ips"]));
                }
                Del(i, ifn) => {
                    env.call_if(bin, "DEL", &ids[*i], ifn, &conf)
                        .run()
                        .assert_ok_empty();
                    trace.push(format!("DEL {i}/{ifn}"));
                }
                Cursor(set, bytes) => {
                    let f = env.net_dir().join(format!("last_reserved_ip.{set}"));
                    std::fs::write(&f, bytes).expect("write cursor");
                    trace.push(format!("cursor {set} := {bytes:?}"));
                }
            }
        }
        trace
    };
    let ours_trace = run(&ours_env, &ours());
    let ref_trace = run(&ref_env, &reference());
    for (o, r) in ours_trace.iter().zip(&ref_trace) {
        assert_eq!(
            o, r,
            "ours vs reference diverge\nours: {ours_trace:#?}\nref: {ref_trace:#?}"
        );
    }
    // twill's one extra file, the boot it last released earlier boots' reservations in, is a
    // name the reference never takes for a reservation; the rest must be identical
    let boot_file = ours_env.net_dir().join(".twill-boot-id");
    let boot = std::fs::read_to_string(&boot_file).expect("ours records the boot ID");
    assert!(boot.starts_with("boot_id "), "boot file holds {boot:?}");
    std::fs::remove_file(&boot_file).expect("remove the boot file");
    let a = DirSnapshot::take(ours_env.data_dir());
    let b = DirSnapshot::take(ref_env.data_dir());
    let d = b.diff(&a);
    assert!(
        d.is_empty(),
        "ours (after) vs reference (before):\n  {}",
        d.join("\n  ")
    );
}

/// Ours and the reference allocate concurrently from one dataDir: they must serialise on the
/// same lock file and never hand out one address twice.
#[test]
fn interchange_concurrent_mixed_allocation() {
    const N: usize = 64;
    let env = Env::new();
    let conf = env.conf4("10.70.7.0/24");
    let ids: Vec<String> = (0..N)
        .map(|i| format!("mix-{i}-{}", std::process::id()))
        .collect();
    let bins = [ours(), reference()];
    let got = parallel_adds(&env, &conf, &ids, 8, |i| &bins[i % 2]);
    let distinct: BTreeSet<&str> = got.iter().map(|(_, ip)| ip.as_str()).collect();
    assert_eq!(distinct.len(), N, "one address handed out twice");
    let files = env.reservations();
    assert_eq!(files.len(), N);
    for (id, ip) in &got {
        assert_eq!(files.get(ip), Some(&owner(id, "eth0")), "file for {ip}");
    }
    // Release crosswise: ours frees the reference's and vice versa.
    std::thread::scope(|s| {
        for chunk in ids.chunks(N / 8).map(|c| c.to_vec()).collect::<Vec<_>>() {
            let (env, conf, bins) = (&env, &conf, &bins);
            s.spawn(move || {
                for id in &chunk {
                    let i: usize = id[4..]
                        .split('-')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    env.call(&bins[(i + 1) % 2], "DEL", id, conf)
                        .run()
                        .assert_ok_empty();
                }
            });
        }
    });
    assert_eq!(env.reservations(), BTreeMap::new());
}

/// Ours' GC releases reservations the reference made and leaves the valid ones, which the
/// reference can still release. The reverse direction needs a reference that speaks 1.1.0.
#[test]
fn interchange_gc_by_ours_releases_reference_orphans() {
    let env = Env::new();
    let conf10 = env.conf4("10.70.5.0/24");
    let (keep, orphan) = (unique_name("keep"), unique_name("orphan"));
    env.call(&reference(), "ADD", &keep, &conf10)
        .run()
        .assert_ok();
    env.call(&reference(), "ADD", &orphan, &conf10)
        .run()
        .assert_ok();
    let mut conf11 = conf10.clone();
    conf11["cniVersion"] = json!("1.1.0");
    env.plain(
        &ours(),
        "GC",
        &with_attachments(&conf11, &[(&keep, "eth0")]),
    )
    .run()
    .assert_ok_empty();
    let left = env.reservations();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        left.values().next().map(String::as_str),
        Some(owner(&keep, "eth0").as_str())
    );
    env.call(&reference(), "DEL", &keep, &conf10)
        .run()
        .assert_ok_empty();
    assert_eq!(env.reservations(), BTreeMap::new());
}

#[test]
fn interchange_gc_by_reference_when_it_supports_it() {
    let env = Env::new();
    let version = Invocation::new(reference())
        .command("VERSION")
        .stdin_json(&json!({"cniVersion": "1.0.0"}))
        .run()
        .assert_ok();
    let supports_gc = version["supportedVersions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "1.1.0"));
    let mut conf = env.conf("1.1.0", json!([[{"subnet": "10.70.6.0/24"}]]));
    let (keep, orphan) = (unique_name("keep"), unique_name("orphan"));
    env.add(&keep, &conf);
    env.add(&orphan, &conf);
    let snap = env.snapshot();
    let out = env
        .plain(
            &reference(),
            "GC",
            &with_attachments(&conf, &[(&keep, "eth0")]),
        )
        .run();
    if supports_gc {
        out.assert_ok();
        assert_eq!(env.reservations().len(), 1, "reference GC of ours' orphans");
    } else {
        // Reference 1.1.1 speaks up to 1.0.0: it must refuse GC and leave ours' state alone.
        assert!(
            !out.success(),
            "a reference without 1.1.0 accepted GC\n{out}"
        );
        snap.assert_same(&env.snapshot(), "refused reference GC");
        // The same cleanup is still possible with the reference: DEL of the orphan.
        conf["cniVersion"] = json!("1.0.0");
        env.call(&reference(), "DEL", &orphan, &conf)
            .run()
            .assert_ok_empty();
        assert_eq!(env.reservations().len(), 1);
    }
}

/// Runs one ADD per container ID from `threads` workers sharing a counter (`bin_for(i)` picks
/// the binary for the i-th ID); asserts every ADD succeeded with one address and returns
/// (container ID, address) pairs.
fn parallel_adds<'a>(
    env: &Env,
    conf: &Value,
    ids: &[String],
    threads: usize,
    bin_for: impl Fn(usize) -> &'a PathBuf + Sync,
) -> Vec<(String, String)> {
    let next = AtomicUsize::new(0);
    let got: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ids.len() {
                        break;
                    }
                    let out = env.call(bin_for(i), "ADD", &ids[i], conf).run();
                    match out
                        .stdout_json
                        .as_ref()
                        .filter(|_| out.success())
                        .map(result_ips)
                    {
                        Some(ips) if ips.len() == 1 => got
                            .lock()
                            .expect("lock")
                            .push((ids[i].clone(), ips[0].to_string())),
                        _ => failures.lock().expect("lock").push(out.to_string()),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    assert!(
        failures.is_empty(),
        "{} ADDs failed, first:\n{}",
        failures.len(),
        failures[0]
    );
    got.into_inner().expect("lock")
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

#[test]
fn two_hundred_parallel_adds_then_dels() {
    const N: usize = 200;
    const THREADS: usize = 16;
    let env = Env::new();
    let conf = env.conf4("10.80.0.0/24");
    let ids: Vec<String> = (0..N)
        .map(|i| format!("par-{i}-{}", std::process::id()))
        .collect();
    let bin = ours();
    let got = parallel_adds(&env, &conf, &ids, THREADS, |_| &bin);
    let distinct: BTreeSet<&str> = got.iter().map(|(_, ip)| ip.as_str()).collect();
    assert_eq!(distinct.len(), N, "duplicate addresses handed out");
    let files = env.reservations();
    assert_eq!(files.len(), N, "exactly one reservation file per ADD");
    for (id, ip) in &got {
        assert_eq!(files.get(ip), Some(&owner(id, "eth0")), "file for {ip}");
    }

    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= N {
                        break;
                    }
                    let out = env.call(&ours(), "DEL", &ids[i], &conf).run();
                    if !out.success() {
                        failures.lock().expect("lock").push(out.to_string());
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    assert!(
        failures.is_empty(),
        "{} DELs failed, first:\n{}",
        failures.len(),
        failures[0]
    );
    assert_eq!(
        env.reservations(),
        BTreeMap::new(),
        "reservations left after 200 DELs"
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------------------------

/// One malformed call: what it is, the call, and the expected CNI error code.
struct Bad {
    what: String,
    call: Invocation,
    code: u64,
}

fn malformed_cases(env: &Env, owner_id: &str) -> Vec<Bad> {
    let conf = env.conf4("10.55.0.0/24");
    let id = "bad-case";
    let add = || env.call(&ours(), "ADD", id, &conf);
    let mut cases: Vec<Bad> = Vec::new();
    let mut push = |what: &str, call: Invocation, code: u64| {
        cases.push(Bad {
            what: what.to_string(),
            call,
            code,
        })
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = conf.clone();
        f(&mut c);
        env.call(&ours(), "ADD", id, &c)
    };
    let range = |r: Value| with(&move |c: &mut Value| c["ipam"]["ranges"] = json!([[r.clone()]]));

    // Environment.
    push(
        "unknown CNI_COMMAND",
        add().command("FOO"),
        code::INVALID_ENV,
    );
    push(
        "lower-case command",
        add().command("add"),
        code::INVALID_ENV,
    );
    push(
        "missing CNI_CONTAINERID",
        add().unset("CNI_CONTAINERID"),
        code::INVALID_ENV,
    );
    push(
        "empty CNI_CONTAINERID",
        add().container_id(""),
        code::INVALID_ENV,
    );
    push(
        "container ID with /",
        add().container_id("a/b"),
        code::INVALID_ENV,
    );
    push(
        "container ID ..",
        add().container_id(".."),
        code::INVALID_ENV,
    );
    push(
        "container ID ../../x",
        add().container_id("../../x"),
        code::INVALID_ENV,
    );
    push(
        "container ID with CR LF",
        add().container_id("a\r\nb"),
        code::INVALID_ENV,
    );
    push(
        "container ID with space",
        add().container_id("a b"),
        code::INVALID_ENV,
    );
    push(
        "container ID leading -",
        add().container_id("-abc"),
        code::INVALID_ENV,
    );
    push(
        "missing CNI_IFNAME",
        add().unset("CNI_IFNAME"),
        code::INVALID_ENV,
    );
    push(
        "ifname 16 bytes",
        add().ifname("abcdefghijklmnop"),
        code::INVALID_ENV,
    );
    push("ifname with /", add().ifname("et/h0"), code::INVALID_ENV);
    push("ifname with :", add().ifname("eth0:1"), code::INVALID_ENV);
    push(
        "ifname with space",
        add().ifname("eth 0"),
        code::INVALID_ENV,
    );
    push("ifname with tab", add().ifname("eth\t0"), code::INVALID_ENV);
    push("ifname .", add().ifname("."), code::INVALID_ENV);
    push("ifname ..", add().ifname(".."), code::INVALID_ENV);
    push(
        "missing CNI_NETNS for ADD",
        add().unset("CNI_NETNS"),
        code::INVALID_ENV,
    );
    push(
        "missing CNI_PATH",
        add().unset("CNI_PATH"),
        code::INVALID_ENV,
    );
    push(
        "CNI_NETNS is the plugin's own",
        add().netns("/proc/self/ns/net"),
        code::INVALID_ENV,
    );
    push(
        "CNI_ARGS without =",
        add().cni_args("garbage"),
        code::INVALID_ENV,
    );
    push(
        "CNI_ARGS IP=garbage",
        add().cni_args("IP=garbage"),
        code::INVALID_ENV,
    );
    push(
        "CNI_ARGS IP=10.55.0.300",
        add().cni_args("IP=10.55.0.300"),
        code::INVALID_ENV,
    );
    // Stdin.
    push("empty stdin", add().stdin_raw(""), code::DECODE);
    push(
        "truncated JSON",
        add().stdin_raw("{\"cniVersion\": \"1.0.0\""),
        code::DECODE,
    );
    push(
        "not JSON",
        add().stdin_raw("cniVersion=1.0.0"),
        code::DECODE,
    );
    push("JSON array", add().stdin_raw("[]"), code::INVALID_CONFIG);
    push("JSON number", add().stdin_raw("42"), code::INVALID_CONFIG);
    let mut big = conf.clone();
    big["pad"] = json!("x".repeat((1 << 20) + 16));
    push(
        "stdin over 1 MiB",
        add().stdin_json(&big),
        code::INVALID_CONFIG,
    );
    // Version.
    let set = |k: &'static str, v: Value| with(&move |c: &mut Value| c[k] = v.clone());
    push(
        "cniVersion 9.9.9",
        set("cniVersion", json!("9.9.9")),
        code::INCOMPATIBLE_VERSION,
    );
    push(
        "cniVersion 1.2.0",
        set("cniVersion", json!("1.2.0")),
        code::INCOMPATIBLE_VERSION,
    );
    push(
        "cniVersion garbage",
        set("cniVersion", json!("one")),
        code::INCOMPATIBLE_VERSION,
    );
    push(
        "cniVersion number",
        set("cniVersion", json!(1.0)),
        code::INVALID_CONFIG,
    );
    // Network name.
    push(
        "name ../x",
        set("name", json!("../x")),
        code::INVALID_CONFIG,
    );
    push("name a/b", set("name", json!("a/b")), code::INVALID_CONFIG);
    push("name ..", set("name", json!("..")), code::INVALID_CONFIG);
    push("name .", set("name", json!(".")), code::INVALID_CONFIG);
    push("name empty", set("name", json!("")), code::INVALID_CONFIG);
    push(
        "name missing",
        with(&|c: &mut Value| drop(c.as_object_mut().map(|o| o.remove("name")))),
        code::INVALID_CONFIG,
    );
    push("name a number", set("name", json!(5)), code::INVALID_CONFIG);
    // IPAM section.
    push(
        "ipam missing",
        with(&|c: &mut Value| drop(c.as_object_mut().map(|o| o.remove("ipam")))),
        code::INVALID_CONFIG,
    );
    push(
        "ipam a string",
        set("ipam", json!("host-local")),
        code::INVALID_CONFIG,
    );
    let ipam = |k: &'static str, v: Value| with(&move |c: &mut Value| c["ipam"][k] = v.clone());
    push(
        "ranges empty",
        ipam("ranges", json!([])),
        code::INVALID_CONFIG,
    );
    push(
        "range set empty",
        ipam("ranges", json!([[]])),
        code::INVALID_CONFIG,
    );
    push(
        "ranges a string",
        ipam("ranges", json!("10.55.0.0/24")),
        code::INVALID_CONFIG,
    );
    push(
        "ranges of objects",
        ipam("ranges", json!([{"subnet": "10.55.0.0/24"}])),
        code::INVALID_CONFIG,
    );
    push(
        "subnet missing",
        range(json!({"gateway": "10.55.0.1"})),
        code::INVALID_CONFIG,
    );
    push(
        "subnet garbage",
        range(json!({"subnet": "notacidr"})),
        code::INVALID_CONFIG,
    );
    push(
        "subnet /33",
        range(json!({"subnet": "10.55.0.0/33"})),
        code::INVALID_CONFIG,
    );
    push(
        "subnet without prefix",
        range(json!({"subnet": "10.55.0.0"})),
        code::INVALID_CONFIG,
    );
    push(
        "subnet a number",
        range(json!({"subnet": 42})),
        code::INVALID_CONFIG,
    );
    push(
        "subnet /32: nothing to allocate",
        range(json!({"subnet": "10.55.0.7/32"})),
        code::INVALID_CONFIG,
    );
    push(
        "rangeStart outside subnet",
        range(json!({"subnet": "10.55.0.0/24", "rangeStart": "10.56.0.10"})),
        code::INVALID_CONFIG,
    );
    push(
        "rangeEnd outside subnet",
        range(json!({"subnet": "10.55.0.0/24", "rangeEnd": "10.56.0.10"})),
        code::INVALID_CONFIG,
    );
    push(
        "rangeEnd < rangeStart",
        range(
            json!({"subnet": "10.55.0.0/24", "rangeStart": "10.55.0.50", "rangeEnd": "10.55.0.40"}),
        ),
        code::INVALID_CONFIG,
    );
    push(
        "rangeStart garbage",
        range(json!({"subnet": "10.55.0.0/24", "rangeStart": "x"})),
        code::INVALID_CONFIG,
    );
    push(
        "rangeStart IPv6 in IPv4 subnet",
        range(json!({"subnet": "10.55.0.0/24", "rangeStart": "fd00::5"})),
        code::INVALID_CONFIG,
    );
    push(
        "gateway garbage",
        range(json!({"subnet": "10.55.0.0/24", "gateway": "10.55.0.x"})),
        code::INVALID_CONFIG,
    );
    push(
        "gateway a number",
        range(json!({"subnet": "10.55.0.0/24", "gateway": 1})),
        code::INVALID_CONFIG,
    );
    push(
        "overlapping ranges in one set",
        ipam(
            "ranges",
            json!([[{"subnet": "10.55.0.0/24"}, {"subnet": "10.55.0.0/25"}]]),
        ),
        code::INVALID_CONFIG,
    );
    push(
        "overlapping range sets",
        ipam(
            "ranges",
            json!([[{"subnet": "10.55.0.0/24"}], [{"subnet": "10.55.0.128/25"}]]),
        ),
        code::INVALID_CONFIG,
    );
    push(
        "mixed families in one set",
        ipam(
            "ranges",
            json!([[{"subnet": "10.55.0.0/24"}, {"subnet": "fd55::/64"}]]),
        ),
        code::INVALID_CONFIG,
    );
    push(
        "routes garbage dst",
        ipam("routes", json!([{"dst": "nowhere"}])),
        code::INVALID_CONFIG,
    );
    push(
        "dataDir a number",
        ipam("dataDir", json!(7)),
        code::INVALID_CONFIG,
    );
    push(
        "runtimeConfig.ips garbage",
        with(&|c: &mut Value| c["runtimeConfig"] = json!({"ips": ["x"]})),
        code::INVALID_CONFIG,
    );
    push(
        "args.cni.ips not a list",
        with(&|c: &mut Value| c["args"] = json!({"cni": {"ips": "10.55.0.9"}})),
        code::INVALID_CONFIG,
    );
    // State that cannot be written: dataDir below a regular file (the sentinel).
    push(
        "dataDir below a regular file",
        ipam("dataDir", json!(env.tmp.join("sentinel").join("data"))),
        code::IO,
    );
    // Requested addresses that cannot be had.
    push(
        "IP= outside the range",
        add().cni_args("IP=10.99.99.99"),
        code::IPAM_UNAVAILABLE_ADDRESS,
    );
    push(
        "IP= the gateway",
        add().cni_args("IP=10.55.0.1"),
        code::IPAM_UNAVAILABLE_ADDRESS,
    );
    push(
        "IP= the network address",
        add().cni_args("IP=10.55.0.0"),
        code::IPAM_UNAVAILABLE_ADDRESS,
    );
    push(
        "IP= the broadcast address",
        add().cni_args("IP=10.55.0.255"),
        code::IPAM_UNAVAILABLE_ADDRESS,
    );
    push(
        "IP= owned by another container",
        add().cni_args("IP=10.55.0.2"),
        code::IPAM_UNAVAILABLE_ADDRESS,
    );
    push(
        "runtimeConfig.ips outside the range",
        with(&|c: &mut Value| c["runtimeConfig"] = json!({"ips": ["192.0.2.1/24"]})),
        code::IPAM_UNAVAILABLE_ADDRESS,
    );
    // Other commands with dangerous input: nothing may be removed.
    let del = |c: &Value| env.call(&ours(), "DEL", owner_id, c);
    let mut trav = conf.clone();
    trav["name"] = json!("..");
    push("DEL with network name ..", del(&trav), code::INVALID_CONFIG);
    push(
        "DEL with container ID ../x",
        del(&conf).container_id("../x"),
        code::INVALID_ENV,
    );
    push(
        "DEL with ifname ../eth0",
        del(&conf).ifname("../eth0"),
        code::INVALID_ENV,
    );
    let mut gc = with_attachments(&conf, &[]);
    gc["cniVersion"] = json!("1.1.0");
    gc["name"] = json!("../x");
    push(
        "GC with network name ../x",
        env.plain(&ours(), "GC", &gc),
        code::INVALID_CONFIG,
    );
    let mut gc_bad = conf.clone();
    gc_bad["cniVersion"] = json!("1.1.0");
    gc_bad["cni.dev/valid-attachments"] = json!("all");
    push(
        "GC with attachments not a list",
        env.plain(&ours(), "GC", &gc_bad),
        code::INVALID_CONFIG,
    );
    cases
}

#[test]
fn malformed_input_table() {
    let env = Env::new();
    // Pre-populate, so that the network dir, lock and cursor exist and an owner is on record.
    let owner_id = unique_name("owner");
    assert_eq!(
        env.add(&owner_id, &env.conf4("10.55.0.0/24")).to_string(),
        "10.55.0.2"
    );
    // A sibling of dataDir: traversal out of it would land here.
    std::fs::write(env.tmp.join("sentinel"), b"keep").expect("sentinel");
    let cases = malformed_cases(&env, &owner_id);
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let before = env.snapshot();
        let out = case.call.run();
        if let Err(e) = out.check_error(&[case.code]) {
            failures.push(format!("[{}] {e}\n{out}", case.what));
        }
        let d = before.diff(&env.snapshot());
        if !d.is_empty() {
            failures.push(format!("[{}] data dir changed: {d:?}\n{out}", case.what));
            // Isolate the following cases from this one's damage.
            before.restore(env.tmp.path());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn missing_command_prints_about_and_changes_nothing() {
    let env = Env::new();
    let conf = env.conf4("10.56.0.0/24");
    let snap = env.snapshot();
    let out = env
        .call(&ours(), "ADD", "x", &conf)
        .unset("CNI_COMMAND")
        .run();
    assert_eq!(
        out.exit_code, 0,
        "without CNI_COMMAND the plugin prints its banner\n{out}"
    );
    assert!(out.stdout_raw.trim().is_empty(), "nothing on stdout\n{out}");
    assert!(
        out.stderr.contains("1.1.0"),
        "banner names the supported versions\n{out}"
    );
    snap.assert_same(&env.snapshot(), "no CNI_COMMAND");
}

// ---------------------------------------------------------------------------------------------
// Reboot leaks: reservations of earlier boots are released by the first ADD of a boot
// ---------------------------------------------------------------------------------------------

/// The environment variable faking the boot ID (tests only).
const BOOT_ID_ENV: &str = "TWILL_HOST_LOCAL_BOOT_ID";

/// twill's boot file in the network directory.
const BOOT_FILE: &str = ".twill-boot-id";

/// A time long before this machine booted: what a reservation file made before the last
/// reboot shows as its modification time.
fn before_boot() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000)
}

impl Env {
    /// ADD with ours in boot `boot` (the boot ID faked).
    fn add_in_boot(&self, boot: &str, id: &str, conf: &Value) -> conformance::Outcome {
        self.call(&ours(), "ADD", id, conf)
            .env(BOOT_ID_ENV, boot)
            .run()
    }

    /// Sets the modification time of reservation `ip` to before this machine's boot.
    fn age(&self, ip: &IpAddr) {
        std::fs::File::options()
            .write(true)
            .open(self.net_dir().join(ip.to_string()))
            .and_then(|f| f.set_modified(before_boot()))
            .expect("age a reservation file");
    }

    /// The owners (container IDs) holding reservations.
    fn holders(&self) -> BTreeSet<String> {
        self.reservations()
            .into_values()
            .map(|o| o.split("\r\n").next().unwrap_or("").to_string())
            .collect()
    }
}

/// Fills a /29 (five addresses) with ADDs of `ids[0..5]` in boot `boot`; returns them in order.
fn fill_slash29(env: &Env, boot: &str, conf: &Value, ids: &[String]) -> Vec<IpAddr> {
    ids[..5]
        .iter()
        .map(|id| {
            let res = env.add_in_boot(boot, id, conf).assert_ok();
            result_ips(&res)[0]
        })
        .collect()
}

#[test]
fn first_add_after_a_reboot_releases_only_the_reservations_older_than_the_boot() {
    let env = Env::new();
    let conf = env.conf4("10.71.0.0/29");
    let ids: Vec<String> = (0..8).map(|i| unique_name(&format!("boot{i}"))).collect();
    let ips = fill_slash29(&env, "boot-a", &conf, &ids);
    // ids 0..3 were made before the reboot; 3 and 4 after it (say, by the reference plugin)
    for ip in &ips[..3] {
        env.age(ip);
    }
    // same boot: nothing is released, however old the files look
    env.add_in_boot("boot-a", &ids[5], &conf)
        .assert_error(code::IPAM_EXHAUSTED);
    let after_reboot = env.add_in_boot("boot-b", &ids[5], &conf).assert_ok();
    let got = result_ips(&after_reboot)[0];
    assert!(ips[..3].contains(&got), "{got} is not a released address");
    let holders = env.holders();
    let want: BTreeSet<String> = [&ids[3], &ids[4], &ids[5]].into_iter().cloned().collect();
    assert_eq!(holders, want, "only pre-boot reservations are released");
    let boot = std::fs::read_to_string(env.net_dir().join(BOOT_FILE)).expect("boot file");
    assert_eq!(boot, "boot_id boot-b\n");
    // once per boot: a reservation that looks old later in the same boot stays
    env.age(&ips[3]);
    env.add_in_boot("boot-b", &ids[6], &conf).assert_ok();
    env.add_in_boot("boot-b", &ids[7], &conf).assert_ok();
    assert!(
        env.holders().contains(&ids[3]),
        "released twice in one boot"
    );
}

#[test]
fn release_on_reboot_false_keeps_earlier_boots_reservations() {
    let env = Env::new();
    let mut conf = env.conf4("10.71.1.0/29");
    conf["ipam"]["releaseOnReboot"] = json!(false);
    let ids: Vec<String> = (0..6).map(|i| unique_name(&format!("keep{i}"))).collect();
    let ips = fill_slash29(&env, "boot-a", &conf, &ids);
    for ip in &ips {
        env.age(ip);
    }
    let before = env.reservations();
    env.add_in_boot("boot-b", &ids[5], &conf)
        .assert_error(code::IPAM_EXHAUSTED);
    assert_eq!(env.reservations(), before);
    assert!(!env.net_dir().join(BOOT_FILE).exists());
}

#[test]
fn release_on_reboot_of_the_wrong_type_is_refused_with_code_7() {
    let env = Env::new();
    let mut conf = env.conf4("10.71.2.0/29");
    conf["ipam"]["releaseOnReboot"] = json!("yes");
    let err = env
        .call(&ours(), "ADD", "c1", &conf)
        .run()
        .assert_error(code::INVALID_CONFIG);
    let msg = err["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("releaseOnReboot"), "{err}");
    assert!(!env.data_dir().exists());
}

// ---------------------------------------------------------------------------------------------
// Lock hygiene: a held lock is waited for, within a bound
// ---------------------------------------------------------------------------------------------

/// A process holding the network directory's lock (`flock(1)` running `sh`), killed on drop.
struct LockHolder {
    child: std::process::Child,
}

impl LockHolder {
    /// Takes the lock of `net_dir` in a child process; returns once it is held (the child
    /// prints a line after locking). The child releases it when its stdin is closed.
    fn take(net_dir: &Path) -> LockHolder {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        std::fs::create_dir_all(net_dir).expect("create the network directory");
        let mut child = Command::new("flock")
            .arg("--exclusive")
            .arg(net_dir.join("lock"))
            .args(["sh", "-c", "echo locked; exec cat >/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn flock");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("read from flock");
        assert_eq!(line, "locked\n");
        LockHolder { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the holder exit, releasing the lock.
    fn release(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_lock_held_past_lock_timeout_fails_with_code_11_naming_the_holder() {
    let env = Env::new();
    let mut conf = env.conf4("10.72.0.0/29");
    conf["ipam"]["lockTimeout"] = json!(0.3);
    let mut holder = LockHolder::take(&env.net_dir());
    let before = env.snapshot();
    for cmd in ["ADD", "DEL", "CHECK"] {
        let out = env
            .call(&ours(), cmd, "c1", &conf)
            .timeout(std::time::Duration::from_secs(10))
            .run();
        let err = out.assert_error(11);
        let msg = err["msg"].as_str().unwrap_or_default().to_string();
        assert!(
            msg.contains(&format!("pid {}", holder.pid())) && msg.contains("cat"),
            "{cmd}: the message does not name the holder: {msg}"
        );
        assert!(msg.contains("try again later"), "{cmd}: {msg}");
    }
    before.assert_same(&env.snapshot(), "calls that timed out on the lock");
    holder.release();
    env.add("c1", &conf);
    assert_eq!(env.holders(), BTreeSet::from(["c1".to_string()]));
}

#[test]
fn a_lock_released_within_lock_timeout_lets_the_waiting_add_through() {
    let env = Env::new();
    let mut conf = env.conf4("10.72.1.0/29");
    conf["ipam"]["lockTimeout"] = json!(15);
    let mut holder = LockHolder::take(&env.net_dir());
    let res = std::thread::scope(|s| {
        let waiting = s.spawn(|| env.call(&ours(), "ADD", "c1", &conf).run());
        // the holder lets go only once the ADD waits on the lock (a "->" line of /proc/locks
        // on the lock file's inode); bounded in time, each look a read of /proc/locks
        let waiter_seen = wait_for_lock_waiter(&env.net_dir().join("lock"));
        holder.release();
        (waiter_seen, waiting.join().expect("ADD thread"))
    });
    let (waiter_seen, out) = res;
    assert!(waiter_seen, "the ADD never waited on the lock");
    out.assert_ok();
    assert_eq!(env.holders(), BTreeSet::from(["c1".to_string()]));
}

/// True once a process waits for a lock on `lock` (within 10 s).
fn wait_for_lock_waiter(lock: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(lock).expect("lock file").ino();
    let suffix = format!(":{ino}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        let waiting = locks.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"->") && f.get(6).is_some_and(|id| id.ends_with(&suffix))
        });
        if waiting {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

#[test]
fn lock_timeout_out_of_range_is_refused_with_code_7() {
    let env = Env::new();
    for bad in [json!(0), json!(-1), json!("5s"), json!(100000)] {
        let mut conf = env.conf4("10.72.2.0/29");
        conf["ipam"]["lockTimeout"] = bad.clone();
        let err = env
            .call(&ours(), "ADD", "c1", &conf)
            .run()
            .assert_error(code::INVALID_CONFIG);
        let msg = err["msg"].as_str().unwrap_or_default();
        assert!(msg.contains("lockTimeout"), "{bad}: {err}");
    }
    assert!(!env.data_dir().exists());
}

// ---------------------------------------------------------------------------------------------
// Hostile data directories: symlinks are never followed, state is private
// ---------------------------------------------------------------------------------------------

#[test]
fn a_symlinked_reservation_is_never_followed() {
    let env = Env::new();
    let conf = env.conf4("10.73.0.0/29");
    let outside = env.tmp.join("outside-owner");
    std::fs::write(&outside, owner("c1", "eth0")).expect("write outside file");
    std::fs::create_dir_all(env.net_dir()).expect("mkdir");
    std::os::unix::fs::symlink(&outside, env.net_dir().join("10.73.0.2")).expect("symlink");
    // the symlink's target names c1, but it is not c1's reservation: c1 gets a file of its own
    let got = env.add("c1", &conf);
    assert_eq!(got.to_string(), "10.73.0.3");
    env.call(&ours(), "DEL", "c1", &conf)
        .run()
        .assert_ok_empty();
    let link = std::fs::symlink_metadata(env.net_dir().join("10.73.0.2")).expect("symlink kept");
    assert!(link.file_type().is_symlink());
    assert!(!env.net_dir().join("10.73.0.3").exists());
    assert_eq!(
        std::fs::read_to_string(&outside).expect("outside file"),
        owner("c1", "eth0")
    );
}

#[test]
fn a_symlinked_cursor_is_replaced_not_written_through() {
    let env = Env::new();
    let conf = env.conf4("10.73.1.0/29");
    let outside = env.tmp.join("precious");
    std::fs::write(&outside, "precious\n").expect("write outside file");
    std::fs::create_dir_all(env.net_dir()).expect("mkdir");
    let cursor = env.net_dir().join("last_reserved_ip.0");
    std::os::unix::fs::symlink(&outside, &cursor).expect("symlink");
    let got = env.add("c1", &conf);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious\n");
    let meta = std::fs::symlink_metadata(&cursor).expect("cursor");
    assert!(meta.file_type().is_file(), "the cursor is still a symlink");
    assert_eq!(std::fs::read_to_string(&cursor).unwrap(), got.to_string());
}

#[test]
fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
    let env = Env::new();
    let conf = env.conf4("10.73.2.0/29");
    let outside = env.tmp.join("not-a-lock");
    std::fs::write(&outside, "data\n").expect("write outside file");
    std::fs::create_dir_all(env.net_dir()).expect("mkdir");
    std::os::unix::fs::symlink(&outside, env.net_dir().join("lock")).expect("symlink");
    let before = env.snapshot();
    let err = env
        .call(&ours(), "ADD", "c1", &conf)
        .run()
        .assert_error(code::IO);
    assert!(
        err["msg"].as_str().unwrap_or_default().contains("lock"),
        "{err}"
    );
    before.assert_same(&env.snapshot(), "ADD over a symlinked lock");
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn state_twill_creates_is_private_to_root() {
    let env = Env::new();
    let conf = env.conf(
        "1.0.0",
        json!([[{"subnet": "10.74.0.0/29"}], [{"subnet": "fd74::/64"}]]),
    );
    env.add("c1", &conf);
    let net = env.net_dir();
    assert_eq!(mode_of(&env.data_dir()), 0o700, "dataDir");
    assert_eq!(mode_of(&net), 0o700, "network directory");
    for name in [
        "10.74.0.2",
        "fd74::2",
        "lock",
        "last_reserved_ip.0",
        "last_reserved_ip.1",
        BOOT_FILE,
    ] {
        assert_eq!(mode_of(&net.join(name)), 0o600, "{name}");
    }
}

#[test]
fn a_reference_made_directory_is_narrowed_to_0700_and_stays_shared() {
    let env = Env::new();
    let conf = env.conf4("10.74.1.0/29");
    env.call(&reference(), "ADD", "r1", &conf).run().assert_ok();
    assert_eq!(mode_of(&env.net_dir()), 0o755, "the reference's mode");
    env.add("c1", &conf);
    assert_eq!(mode_of(&env.net_dir()), 0o700);
    // the reference goes on allocating and releasing in it
    env.call(&reference(), "ADD", "r2", &conf).run().assert_ok();
    env.call(&reference(), "DEL", "c1", &conf)
        .run()
        .assert_ok_empty();
    assert_eq!(
        env.holders(),
        BTreeSet::from(["r1".to_string(), "r2".to_string()])
    );
}
