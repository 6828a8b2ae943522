//! host-local tests on real temporary directories (unique per pid and test, removed on drop).

use super::*;
use crate::error::code;
use serde_json::{Value, json};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A temporary data directory, removed when dropped (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("twill-hl-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn s(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// host-local on `dir/testnet`, its owner index in `dir/index`.
fn hl(dir: &TempDir, mut ipam: Value) -> HostLocal {
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(dir.s());
    HostLocal::new(Config::parse("testnet", "1.0.0", &ipam, None).unwrap())
        .with_index_dir(Some(index_dir(dir)))
}

fn index_dir(dir: &TempDir) -> PathBuf {
    dir.path().join("index")
}

/// Removes, when dropped, the index file that the free functions (`add`, `del`, ..., which
/// keep the index in the directory named by the environment) wrote for `dir/testnet`; declared
/// after the `TempDir`, it is dropped first, also when the test fails.
struct EnvIndexFile(PathBuf);

impl EnvIndexFile {
    fn of(dir: &TempDir) -> EnvIndexFile {
        EnvIndexFile(net(dir))
    }
}

impl Drop for EnvIndexFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let (Some(idx), Ok(m)) = (index::index_dir_from_env(), fs::metadata(&self.0)) {
            let _ = fs::remove_file(idx.join(format!("{}-{}", m.dev(), m.ino())));
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addrs(r: &CniResult) -> Vec<String> {
    r.ips.iter().map(|c| c.address.to_string()).collect()
}

fn net(dir: &TempDir) -> PathBuf {
    dir.path().join("testnet")
}

/// Sorted names of the files in the network directory.
/// The network directory's file names, sorted, without the boot file (see `reboot`), which
/// every ADD writes once per boot.
fn files(dir: &TempDir) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(net(dir)) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != super::reboot::BOOT_FILE)
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn read(dir: &TempDir, name: &str) -> String {
    fs::read_to_string(net(dir).join(name)).unwrap()
}

#[test]
fn allocation_order_and_bytes_on_disk() {
    let d = TempDir::new("order");
    let h = hl(
        &d,
        json!({"subnet": "10.9.0.0/29", "routes": [{"dst": "0.0.0.0/0"}]}),
    );
    let r = h.add("ctr1", "eth0", &[]).unwrap();
    assert_eq!(addrs(&r), ["10.9.0.2/29"]);
    assert_eq!(r.ips[0].gateway, Some(ip("10.9.0.1")));
    assert_eq!(r.ips[0].interface, None);
    assert_eq!(r.routes.len(), 1);
    assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
    assert!(r.dns.is_empty());
    // exactly what the reference writes: owner as "<id>\r\n<ifname>", cursor as plain text
    assert_eq!(fs::read(net(&d).join("10.9.0.2")).unwrap(), b"ctr1\r\neth0");
    assert_eq!(
        fs::read(net(&d).join("last_reserved_ip.0")).unwrap(),
        b"10.9.0.2"
    );
    assert_eq!(fs::read(net(&d).join("lock")).unwrap(), b"");
    let mode = fs::metadata(net(&d).join("10.9.0.2"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode & 0o733,
        0o600,
        "reservation mode {mode:o} (0644 before umask)"
    );
    assert_eq!(files(&d), ["10.9.0.2", "last_reserved_ip.0", "lock"]);

    for (i, want) in ["10.9.0.3/29", "10.9.0.4/29", "10.9.0.5/29", "10.9.0.6/29"]
        .iter()
        .enumerate()
    {
        let r = h.add(&format!("c{i}"), "eth0", &[]).unwrap();
        assert_eq!(addrs(&r), [*want]);
    }
    assert_eq!(read(&d, "10.9.0.6"), "c3\r\neth0");
    assert_eq!(read(&d, "last_reserved_ip.0"), "10.9.0.6");
    // exhausted: code 101 naming the range, nothing written
    let before = files(&d);
    let e = h.add("late", "eth0", &[]).unwrap_err();
    assert_eq!(e.code, code::IPAM_EXHAUSTED, "{e}");
    assert!(e.msg.contains("10.9.0.1-10.9.0.6"), "{e}");
    assert_eq!(files(&d), before);
}

#[test]
fn cursor_round_robin_and_wrap() {
    let d = TempDir::new("wrap");
    let h = hl(&d, json!({"subnet": "10.9.0.0/29"}));
    for i in 0..5 {
        h.add(&format!("c{i}"), "eth0", &[]).unwrap(); // .2 .. .6
    }
    h.del("c1", "eth0").unwrap(); // frees .3
    h.del("c3", "eth0").unwrap(); // frees .5
    // cursor is .6: wraps to .2 (taken), then .3
    assert_eq!(addrs(&h.add("n1", "eth0", &[]).unwrap()), ["10.9.0.3/29"]);
    assert_eq!(read(&d, "last_reserved_ip.0"), "10.9.0.3");
    // next after the cursor, not the lowest free: .5
    assert_eq!(addrs(&h.add("n2", "eth0", &[]).unwrap()), ["10.9.0.5/29"]);
    // a released address is not reused before the cursor comes round again
    h.del("n2", "eth0").unwrap();
    h.del("c4", "eth0").unwrap(); // .6
    assert_eq!(addrs(&h.add("n3", "eth0", &[]).unwrap()), ["10.9.0.6/29"]);
    assert_eq!(addrs(&h.add("n4", "eth0", &[]).unwrap()), ["10.9.0.5/29"]);
}

#[test]
fn garbage_cursor_starts_over() {
    let d = TempDir::new("badcursor");
    let h = hl(&d, json!({"subnet": "10.9.0.0/29"}));
    fs::create_dir_all(net(&d)).unwrap();
    fs::write(net(&d).join("last_reserved_ip.0"), "not an ip").unwrap();
    assert_eq!(addrs(&h.add("a", "eth0", &[]).unwrap()), ["10.9.0.2/29"]);
    fs::write(net(&d).join("last_reserved_ip.0"), "192.168.77.1").unwrap();
    assert_eq!(addrs(&h.add("b", "eth0", &[]).unwrap()), ["10.9.0.3/29"]);
}

#[test]
fn gateway_network_broadcast_skipped() {
    let d = TempDir::new("gw");
    let h = hl(
        &d,
        json!({"subnet": "10.9.0.0/29", "gateway": "10.9.0.3", "rangeStart": "10.9.0.0",
               "rangeEnd": "10.9.0.7"}),
    );
    let got: Vec<String> = (0..5)
        .map(|i| addrs(&h.add(&format!("c{i}"), "eth0", &[]).unwrap())[0].clone())
        .collect();
    assert_eq!(
        got,
        [
            "10.9.0.1/29",
            "10.9.0.2/29",
            "10.9.0.4/29",
            "10.9.0.5/29",
            "10.9.0.6/29"
        ]
    );
    let e = h.add("x", "eth0", &[]).unwrap_err();
    assert_eq!(e.code, code::IPAM_EXHAUSTED);
    assert!(!net(&d).join("10.9.0.3").exists());
    assert!(!net(&d).join("10.9.0.0").exists());
    assert!(!net(&d).join("10.9.0.7").exists());
    for (req, what) in [
        ("10.9.0.0", "network or broadcast"),
        ("10.9.0.7", "network or broadcast"),
        ("10.9.0.3", "gateway"),
    ] {
        let e = h.add("y", "eth0", &[ip(req)]).unwrap_err();
        assert_eq!(e.code, code::IPAM_UNAVAILABLE_ADDRESS);
        assert!(e.msg.contains(what), "{e}");
    }
}

#[test]
fn smallest_subnets() {
    let d = TempDir::new("small");
    // /31 and /32 (and /127, /128) are rejected like the reference does: no room beside the
    // gateway
    for s in ["10.9.0.0/31", "10.9.0.1/32", "fd00::/127", "fd00::1/128"] {
        let e = Config::parse("testnet", "1.0.0", &json!({"subnet": s}), None).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{s}");
        assert!(e.msg.contains("too small"), "{e}");
    }
    // /30: exactly one address (.1 gateway, .0 network, .3 broadcast)
    let h = hl(&d, json!({"subnet": "10.9.0.0/30"}));
    assert_eq!(addrs(&h.add("a", "eth0", &[]).unwrap()), ["10.9.0.2/30"]);
    assert_eq!(
        h.add("b", "eth0", &[]).unwrap_err().code,
        code::IPAM_EXHAUSTED
    );
}

#[test]
fn ipv6_and_dual_stack() {
    let d = TempDir::new("v6");
    let h = hl(
        &d,
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00:9::/126"}]]}),
    );
    let r = h.add("a", "eth0", &[]).unwrap();
    assert_eq!(addrs(&r), ["10.9.0.2/24", "fd00:9::2/126"]);
    assert_eq!(r.ips[1].gateway, Some(ip("fd00:9::1")));
    assert_eq!(read(&d, "fd00:9::2"), "a\r\neth0");
    assert_eq!(read(&d, "last_reserved_ip.1"), "fd00:9::2");
    // the last IPv6 address is allocatable (no broadcast)
    assert_eq!(
        addrs(&h.add("b", "eth0", &[]).unwrap()),
        ["10.9.0.3/24", "fd00:9::3/126"]
    );
    // v6 exhausted: the v4 address taken for "c" is given back
    let e = h.add("c", "eth0", &[]).unwrap_err();
    assert_eq!(e.code, code::IPAM_EXHAUSTED);
    assert!(
        e.msg.contains("range set 1") && e.msg.contains("fd00:9::1-fd00:9::3"),
        "{e}"
    );
    assert!(!net(&d).join("10.9.0.4").exists());
    assert_eq!(read(&d, "last_reserved_ip.0"), "10.9.0.3");
}

#[test]
fn requested_ips() {
    let d = TempDir::new("requested");
    let h = hl(
        &d,
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00::/64"}]]}),
    );
    let r = h.add("a", "eth0", &[ip("10.9.0.77")]).unwrap();
    assert_eq!(addrs(&r), ["10.9.0.77/24", "fd00::2/64"]);
    assert_eq!(read(&d, "10.9.0.77"), "a\r\neth0");
    assert_eq!(read(&d, "last_reserved_ip.0"), "10.9.0.77");
    // round-robin continues after a requested address
    assert_eq!(
        addrs(&h.add("b", "eth0", &[]).unwrap()),
        ["10.9.0.78/24", "fd00::3/64"]
    );
    // both families requested
    let r = h
        .add("c", "eth0", &[ip("fd00::50"), ip("10.9.0.5")])
        .unwrap();
    assert_eq!(addrs(&r), ["10.9.0.5/24", "fd00::50/64"]);

    let before = files(&d);
    let check = |requested: &[&str], needle: &str| {
        let req: Vec<IpAddr> = requested.iter().map(|s| ip(s)).collect();
        let e = h.add("z", "eth0", &req).unwrap_err();
        assert_eq!(e.code, code::IPAM_UNAVAILABLE_ADDRESS, "{e}");
        assert!(e.msg.contains(needle), "{e} lacks {needle}");
        assert_eq!(files(&d), before, "state changed by a failed ADD");
    };
    check(&["10.9.0.77"], "reserved by container a ifname eth0");
    check(&["10.8.0.1"], "not in any range");
    check(&["10.9.0.1"], "gateway");
    check(&["10.9.0.255"], "not in any range"); // default range ends before broadcast
    check(&["10.9.0.10", "10.9.0.11"], "both fall in range set 0");
    // v4 free but v6 taken: the v4 reservation is rolled back
    check(&["10.9.0.12", "fd00::50"], "fd00::50");
}

#[test]
fn same_owner_readd_returns_existing() {
    let d = TempDir::new("readd");
    let h = hl(
        &d,
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00::/64"}]]}),
    );
    let first = h.add("a", "eth0", &[]).unwrap();
    h.add("b", "eth0", &[]).unwrap();
    let again = h.add("a", "eth0", &[]).unwrap();
    assert_eq!(first, again);
    assert_eq!(
        read(&d, "last_reserved_ip.0"),
        "10.9.0.3",
        "re-ADD moved the cursor"
    );
    // with the same address requested: fine; with another one: 102
    let again = h.add("a", "eth0", &[ip("10.9.0.2")]).unwrap();
    assert_eq!(first, again);
    let e = h.add("a", "eth0", &[ip("10.9.0.9")]).unwrap_err();
    assert_eq!(e.code, code::IPAM_UNAVAILABLE_ADDRESS);
    assert!(e.msg.contains("already holds 10.9.0.2"), "{e}");
    // another ifname of the same container is another attachment
    assert_eq!(
        addrs(&h.add("a", "net1", &[]).unwrap()),
        ["10.9.0.4/24", "fd00::4/64"]
    );
    // a half-present owner (v6 lost) gets its v4 back and a new v6
    fs::remove_file(net(&d).join("fd00::2")).unwrap();
    assert_eq!(
        addrs(&h.add("a", "eth0", &[]).unwrap()),
        ["10.9.0.2/24", "fd00::5/64"]
    );
}

#[test]
fn del_is_idempotent_and_precise() {
    let d = TempDir::new("del");
    let h = hl(
        &d,
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00::/64"}]]}),
    );
    // no directory at all: fine, and not created
    h.del("a", "eth0").unwrap();
    assert!(!net(&d).exists());
    h.add("a", "eth0", &[]).unwrap();
    h.add("a", "net1", &[]).unwrap();
    h.add("b", "eth0", &[]).unwrap();
    h.del("a", "eth0").unwrap();
    h.del("a", "eth0").unwrap();
    assert_eq!(
        files(&d),
        [
            "10.9.0.3",
            "10.9.0.4",
            "fd00::3",
            "fd00::4",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock"
        ]
    );
    assert_eq!(read(&d, "10.9.0.3"), "a\r\nnet1");
    h.del("nobody", "eth0").unwrap();
    assert_eq!(files(&d).len(), 7);
}

#[test]
fn del_and_check_understand_legacy_files() {
    let d = TempDir::new("legacy");
    let h = hl(&d, json!({"subnet": "10.9.0.0/24"}));
    h.add("other", "eth0", &[]).unwrap(); // .2, creates the directory
    fs::write(net(&d).join("10.9.0.50"), "oldctr").unwrap();
    fs::write(net(&d).join("10.9.0.51"), "oldctr\n").unwrap();
    h.check("oldctr", "eth0", &[]).unwrap();
    // legacy files are taken addresses for allocation
    fs::write(net(&d).join("last_reserved_ip.0"), "10.9.0.49").unwrap();
    assert_eq!(addrs(&h.add("new", "eth0", &[]).unwrap()), ["10.9.0.52/24"]);
    h.del("oldctr", "eth0").unwrap();
    assert!(!net(&d).join("10.9.0.50").exists());
    assert!(!net(&d).join("10.9.0.51").exists());
    assert!(net(&d).join("10.9.0.2").exists());
    // when exact reservations exist, legacy files of the container are left alone
    fs::write(net(&d).join("10.9.0.60"), "new").unwrap();
    h.del("new", "eth0").unwrap();
    assert!(!net(&d).join("10.9.0.52").exists());
    assert!(net(&d).join("10.9.0.60").exists());
}

#[test]
fn check_reports_missing_reservations() {
    let d = TempDir::new("check");
    let h = hl(
        &d,
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00::/64"}]]}),
    );
    let e = h.check("a", "eth0", &[]).unwrap_err();
    assert_eq!(e.code, code::CHECK_FAILED);
    assert!(!net(&d).exists(), "CHECK created the directory");
    h.add("a", "eth0", &[]).unwrap();
    h.check("a", "eth0", &[]).unwrap();
    assert_eq!(
        h.check("a", "eth1", &[]).unwrap_err().code,
        code::CHECK_FAILED
    );
    assert_eq!(
        h.check("b", "eth0", &[]).unwrap_err().code,
        code::CHECK_FAILED
    );
    h.check("a", "eth0", &[ip("10.9.0.2"), ip("fd00::2")])
        .unwrap();
    h.add("b", "eth0", &[]).unwrap(); // .3, ::3
    for (expected, needle) in [
        ("10.9.0.3", "reserved by container b ifname eth0"),
        ("10.9.0.77", "not its reservation"),
        ("192.0.2.7", "outside every range"),
    ] {
        let e = h
            .check("a", "eth0", &[ip("10.9.0.2"), ip(expected)])
            .unwrap_err();
        assert_eq!(e.code, code::CHECK_FAILED);
        assert!(e.msg.contains(needle), "{e} lacks {needle}");
    }
    fs::remove_file(net(&d).join("fd00::2")).unwrap();
    let e = h.check("a", "eth0", &[]).unwrap_err();
    assert_eq!(e.code, code::CHECK_FAILED);
    assert!(e.msg.contains("range set 1"), "{e}");
    h.del("a", "eth0").unwrap();
    assert_eq!(
        h.check("a", "eth0", &[]).unwrap_err().code,
        code::CHECK_FAILED
    );
}

#[test]
fn gc_keeps_only_valid_attachments() {
    let d = TempDir::new("gc");
    let h = hl(&d, json!({"subnet": "10.9.0.0/24"}));
    h.gc(&[]).unwrap(); // no directory: fine
    assert!(!net(&d).exists());
    h.add("keep", "eth0", &[]).unwrap(); // .2
    h.add("twoif", "eth0", &[]).unwrap(); // .3
    h.add("twoif", "eth1", &[]).unwrap(); // .4
    h.add("gone", "eth0", &[]).unwrap(); // .5
    fs::write(net(&d).join("10.9.0.90"), "legacy-live").unwrap();
    fs::write(net(&d).join("10.9.0.91"), "legacy-dead").unwrap();
    fs::write(
        net(&d).join(format!("{}999999", store::TEMP_PREFIX)),
        "gone\r\neth0",
    )
    .unwrap();
    fs::write(net(&d).join("unrelated.txt"), "keep me").unwrap();
    let valid = [
        Attachment {
            container_id: "keep".into(),
            ifname: "eth0".into(),
        },
        Attachment {
            container_id: "twoif".into(),
            ifname: "eth0".into(),
        },
        Attachment {
            container_id: "legacy-live".into(),
            ifname: "eth0".into(),
        },
    ];
    h.gc(&valid).unwrap();
    assert_eq!(
        files(&d),
        [
            "10.9.0.2",
            "10.9.0.3",
            "10.9.0.90",
            "last_reserved_ip.0",
            "lock",
            "unrelated.txt"
        ]
    );
    // freed addresses are allocatable again
    fs::write(net(&d).join("last_reserved_ip.0"), "10.9.0.3").unwrap();
    assert_eq!(addrs(&h.add("new", "eth0", &[]).unwrap()), ["10.9.0.4/24"]);
    h.gc(&[]).unwrap();
    assert_eq!(files(&d), ["last_reserved_ip.0", "lock", "unrelated.txt"]);
}

#[test]
fn status_reports_exhaustion_and_unusable_dir() {
    let d = TempDir::new("status");
    let h = hl(
        &d,
        json!({"ranges": [[{"subnet": "10.9.0.0/30"}], [{"subnet": "fd00::/64"}]]}),
    );
    h.status().unwrap();
    h.add("a", "eth0", &[]).unwrap();
    let e = h.status().unwrap_err();
    assert_eq!(e.code, code::NOT_AVAILABLE);
    assert!(
        e.msg.contains("range set 0") && e.msg.contains("10.9.0.1-10.9.0.2"),
        "{e}"
    );
    h.del("a", "eth0").unwrap();
    h.status().unwrap();

    let file = d.path().join("plainfile");
    fs::write(&file, "").unwrap();
    let mut ipam = json!({"type": "host-local", "subnet": "10.9.0.0/24"});
    ipam["dataDir"] = json!(file.display().to_string());
    let bad = HostLocal::new(Config::parse("testnet", "1.0.0", &ipam, None).unwrap());
    let e = bad.status().unwrap_err();
    assert_eq!(e.code, code::NOT_AVAILABLE);
    assert!(e.msg.contains("not usable"), "{e}");
    // ADD on it is an I/O error, not a panic
    assert_eq!(bad.add("a", "eth0", &[]).unwrap_err().code, code::IO);
}

#[test]
fn dns_from_resolv_conf() {
    let d = TempDir::new("dns");
    let rc = d.path().join("resolv.conf");
    fs::write(
        &rc,
        "nameserver 10.96.0.10\nsearch svc.cluster.local\noptions ndots:5\n",
    )
    .unwrap();
    let h = hl(
        &d,
        json!({"subnet": "10.9.0.0/24", "resolvConf": rc.display().to_string()}),
    );
    let r = h.add("a", "eth0", &[]).unwrap();
    assert_eq!(r.dns.nameservers, ["10.96.0.10"]);
    assert_eq!(r.dns.search, ["svc.cluster.local"]);
    assert_eq!(r.dns.options, ["ndots:5"]);
    // unreadable resolvConf fails before anything is reserved
    let h = hl(
        &d,
        json!({"subnet": "10.9.0.0/24", "resolvConf": "/nonexistent/resolv.conf"}),
    );
    let e = h.add("b", "eth0", &[]).unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG);
    assert_eq!(files(&d), ["10.9.0.2", "last_reserved_ip.0", "lock"]);
}

#[test]
fn bad_owner_rejected() {
    let d = TempDir::new("owner");
    let h = hl(&d, json!({"subnet": "10.9.0.0/24"}));
    for (id, ifn) in [("", "eth0"), ("a", ""), ("a\r\nb", "eth0"), ("a", "eth0\n")] {
        assert_eq!(h.add(id, ifn, &[]).unwrap_err().code, code::INVALID_ENV);
    }
    assert!(!net(&d).exists());
}

#[test]
fn concurrent_adds_get_distinct_addresses() {
    let d = TempDir::new("concurrency");
    let h = hl(&d, json!({"subnet": "10.9.0.0/23"}));
    let results: Vec<Vec<IpAddr>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let h = &h;
                s.spawn(move || {
                    // 200 ADDs over 16 threads; each ADD opens and locks the lock file anew
                    let n = if t < 8 { 13 } else { 12 };
                    (0..n)
                        .map(|i| {
                            let r = h.add(&format!("t{t}-{i}"), "eth0", &[]).unwrap();
                            r.ips[0].address.ip()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<IpAddr> = results.into_iter().flatten().collect();
    assert_eq!(all.len(), 200);
    let distinct: HashSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 200);
    // 200 reservations + cursor + lock, no temporaries left
    assert_eq!(files(&d).len(), 202);
    for a in &distinct {
        let owner = read(&d, &a.to_string());
        assert!(
            owner.starts_with('t') && owner.ends_with("\r\neth0"),
            "{owner:?}"
        );
    }
}

fn cmd_args(container_id: &str, ifname: &str, cni_args: &str) -> CmdArgs {
    CmdArgs {
        command: crate::cni::skeleton::Command::Add,
        container_id: container_id.into(),
        netns: None,
        ifname: ifname.into(),
        args: cni_args.into(),
        path: Vec::new(),
        stdin: Vec::new(),
        cni_version: "1.0.0".into(),
    }
}

fn netconf(dir: &TempDir, extra: Value) -> NetConf {
    let mut v = json!({
        "cniVersion": "1.0.0", "name": "testnet", "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": dir.s(),
                 "ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00::/64"}]]}
    });
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
        obj.extend(extra);
    }
    serde_json::from_value(v).unwrap()
}

#[test]
fn netconf_api_with_requested_ips_and_gc() {
    let d = TempDir::new("netconf");
    let _index = EnvIndexFile::of(&d);
    let conf = netconf(&d, json!({"runtimeConfig": {"ips": ["fd00::99/64"]}}));
    let r = add(
        &cmd_args("a", "eth0", "IgnoreUnknown=1;IP=10.9.0.42;K8S_POD_NAME=x"),
        &conf,
    )
    .unwrap();
    assert_eq!(addrs(&r), ["10.9.0.42/24", "fd00::99/64"]);
    check(&cmd_args("a", "eth0", ""), &conf).unwrap();
    let e = add(&cmd_args("b", "eth0", "IP=bogus"), &conf).unwrap_err();
    assert_eq!(e.code, code::INVALID_ENV);

    // GC needs the list; an empty list releases everything
    let e = gc(&cmd_args("", "", ""), &conf).unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG);
    let keep = netconf(
        &d,
        json!({"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}),
    );
    gc(&cmd_args("", "", ""), &keep).unwrap();
    assert!(net(&d).join("10.9.0.42").exists());
    // the key only in the raw stdin (a typed config may drop it), older spelling
    let mut from_stdin = cmd_args("", "", "");
    from_stdin.stdin = serde_json::to_vec(&json!({"cniVersion": "1.1.0", "name": "testnet",
        "cni.dev/attachments": [{"containerID": "a", "ifname": "eth0"}]}))
    .unwrap();
    gc(&from_stdin, &conf).unwrap();
    assert!(net(&d).join("10.9.0.42").exists());
    let none = netconf(&d, json!({"cni.dev/valid-attachments": []}));
    gc(&cmd_args("", "", ""), &none).unwrap();
    assert!(!net(&d).join("10.9.0.42").exists());
    status(&cmd_args("", "", ""), &none).unwrap();
    del(&cmd_args("a", "eth0", ""), &conf).unwrap();

    let mut noipam = netconf(&d, json!({}));
    noipam.ipam = None;
    assert_eq!(
        add(&cmd_args("a", "eth0", ""), &noipam).unwrap_err().code,
        code::INVALID_CONFIG
    );
    let mut evil = netconf(&d, json!({}));
    evil.name = "../../etc".into();
    assert_eq!(
        add(&cmd_args("a", "eth0", ""), &evil).unwrap_err().code,
        code::INVALID_CONFIG
    );
    assert!(!d.path().join("etc").exists());
}

#[test]
fn runtime_ip_ranges_capability() {
    let d = TempDir::new("ipranges");
    let _index = EnvIndexFile::of(&d);
    let conf = netconf(
        &d,
        json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.50.0.0/24"}]]}}),
    );
    let r = add(&cmd_args("a", "eth0", ""), &conf).unwrap();
    assert_eq!(addrs(&r), ["10.50.0.2/24", "10.9.0.2/24", "fd00::2/64"]);
}

const REFERENCE: &str = "/usr/lib/cni/host-local";

/// Starts the reference host-local with `conf` written to its stdin (closed); output piped.
fn spawn_reference(command: &str, id: &str, conf: &Value) -> std::process::Child {
    use std::io::Write;
    let mut child = std::process::Command::new(REFERENCE)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    child
}

/// Runs the reference host-local with `conf` on stdin; fails the test when it is not
/// installed (the interoperation is part of what is tested).
fn reference(command: &str, id: &str, conf: &Value) -> std::process::Output {
    assert!(
        Path::new(REFERENCE).is_file(),
        "{REFERENCE} not found: install the Debian package containernetworking-plugins \
         (apt-get install containernetworking-plugins), which holds the reference plugins"
    );
    spawn_reference(command, id, conf)
        .wait_with_output()
        .unwrap()
}

#[test]
fn interop_with_reference_binary() {
    let d = TempDir::new("interop");
    let ipam = json!({"type": "host-local", "dataDir": d.s(),
                      "ranges": [[{"subnet": "10.9.0.0/29"}], [{"subnet": "fd00::/125"}]]});
    let conf = json!({"cniVersion": "1.0.0", "name": "testnet", "type": "x", "ipam": ipam});
    let h = HostLocal::new(Config::parse("testnet", "1.0.0", &ipam, None).unwrap())
        .with_index_dir(Some(index_dir(&d)));
    let out = reference("ADD", "ref1", &conf);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let ours = h.add("tw1", "eth0", &[]).unwrap();
    assert_eq!(
        addrs(&ours),
        ["10.9.0.3/29", "fd00::3/125"],
        "cursor not shared"
    );
    // byte-identical reservations from both binaries
    assert_eq!(fs::read(net(&d).join("10.9.0.2")).unwrap(), b"ref1\r\neth0");
    assert_eq!(fs::read(net(&d).join("10.9.0.3")).unwrap(), b"tw1\r\neth0");
    assert_eq!(
        fs::read(net(&d).join("last_reserved_ip.1")).unwrap(),
        b"fd00::3"
    );
    let out = reference("ADD", "ref2", &conf);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ips"][0]["address"], "10.9.0.4/29", "{v}");
    assert_eq!(v["ips"][1]["address"], "fd00::4/125", "{v}");
    // each releases the other's reservations
    h.del("ref1", "eth0").unwrap();
    assert!(!net(&d).join("10.9.0.2").exists());
    assert!(reference("DEL", "tw1", &conf).status.success());
    assert!(!net(&d).join("10.9.0.3").exists());
    assert!(!net(&d).join("fd00::3").exists());
    assert!(reference("CHECK", "ref2", &conf).status.success());
    h.check("ref2", "eth0", &[ip("10.9.0.4"), ip("fd00::4")])
        .unwrap();

    // both lock the same file: the reference blocks while twill holds the lock
    let store = Store::open(&net(&d), false, None, std::time::Duration::from_secs(5))
        .unwrap()
        .unwrap();
    let mut child = spawn_reference("ADD", "blocked", &conf);
    // the kernel lists a blocked flock waiter as "-> FLOCK ... <dev>:<inode> ..." in /proc/locks
    let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(net(&d).join("lock")).unwrap());
    let needle = format!(":{ino} ");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut blocked = false;
    while !blocked && std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        blocked = fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| l.contains("->") && l.contains("FLOCK") && l.contains(&needle));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        blocked,
        "reference did not block on {}/lock",
        net(&d).display()
    );
    assert!(
        !net(&d).join("10.9.0.5").exists(),
        "reference wrote while twill held the lock"
    );
    drop(store);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        fs::read(net(&d).join("10.9.0.5")).unwrap(),
        b"blocked\r\neth0"
    );
}

// ---- the owner index ----

/// The index file of the test network and its text (empty when absent).
fn index_text(dir: &TempDir) -> (PathBuf, String) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(net(dir)).unwrap();
    let p = index_dir(dir).join(format!("{}-{}", m.dev(), m.ino()));
    let text = fs::read_to_string(&p).unwrap_or_default();
    (p, text)
}

/// The network directory's mtime as (seconds, nanoseconds).
fn dir_mtime(dir: &TempDir) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(net(dir)).unwrap();
    (m.mtime(), m.mtime_nsec())
}

/// Sets the network directory's mtime (what a twill commit does; here to hide a change).
fn set_dir_mtime(dir: &TempDir, (sec, nsec): (i64, i64)) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(sec as u64, nsec as u32);
    fs::File::open(net(dir))
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(t))
        .unwrap();
}

/// The records of an index file (trimmed), up to its end record.
fn index_records(text: &str) -> Vec<String> {
    let records: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.trim_end().to_owned())
        .take_while(|l| l != "end")
        .collect();
    assert!(text.contains("\nend "), "no end record: {text}");
    records
}

/// The stamp recorded in an index file's first line.
fn index_stamp(text: &str) -> (i64, i64) {
    let f: Vec<&str> = text.lines().next().unwrap().split(' ').collect();
    (f[4].parse().unwrap(), f[5].parse().unwrap())
}

#[test]
fn index_lists_every_reservation_and_stamps_the_directory() {
    let d = TempDir::new("idx-basic");
    let h = hl(
        &d,
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00::/64"}]]}),
    );
    h.add("a", "eth0", &[]).unwrap();
    h.add("b", "net1", &[]).unwrap();
    let (_, text) = index_text(&d);
    let mut lines: Vec<&str> = text.lines().skip(1).map(str::trim_end).collect();
    assert!(
        text.lines()
            .all(|l| l.len() == 63 || l.starts_with("twill"))
    );
    assert_eq!(lines.pop(), Some("end"), "{text}");
    lines.sort();
    let mut want = vec![
        format!("{:016x} 10.9.0.2", index::exact_key("a", "eth0")),
        format!("{:016x} fd00::2", index::exact_key("a", "eth0")),
        format!("{:016x} 10.9.0.3", index::exact_key("b", "net1")),
        format!("{:016x} fd00::3", index::exact_key("b", "net1")),
    ];
    want.sort();
    assert_eq!(lines, want);
    // the directory carries the index's stamp, in the past
    let stamp = index_stamp(&text);
    assert_eq!(dir_mtime(&d), stamp);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(stamp.0 < now - 30, "stamp {stamp:?} not in the past");
    // DEL keeps it exact, and the stamp stays
    h.del("a", "eth0").unwrap();
    let (_, text) = index_text(&d);
    let mut lines = index_records(&text);
    lines.sort();
    let b = index::exact_key("b", "net1");
    assert_eq!(
        lines,
        [format!("{b:016x} 10.9.0.3"), format!("{b:016x} fd00::3")],
        "{text}"
    );
    assert_eq!(dir_mtime(&d), stamp);
    // the reservation files are exactly the reference's, nothing else in the directory
    assert_eq!(
        files(&d),
        [
            "10.9.0.3",
            "fd00::3",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock"
        ]
    );
}

#[test]
fn index_absent_or_torn_falls_back_to_a_scan_and_is_rebuilt() {
    let d = TempDir::new("idx-absent");
    let h = hl(&d, json!({"subnet": "10.9.0.0/24"}));
    h.add("a", "eth0", &[]).unwrap();
    h.add("b", "eth0", &[]).unwrap();
    let (path, text) = index_text(&d);
    fs::remove_file(&path).unwrap();
    // re-ADD finds a's reservation by scanning; the index comes back, complete
    assert_eq!(addrs(&h.add("a", "eth0", &[]).unwrap()), ["10.9.0.2/24"]);
    let (_, rebuilt) = index_text(&d);
    assert_eq!(index_records(&rebuilt).len(), 2, "{rebuilt}");
    assert_eq!(index_records(&text).len(), 2, "{text}");
    // a torn index (no end record) is not used either: DEL still releases b
    fs::write(&path, &rebuilt[..rebuilt.len() - 64]).unwrap();
    h.del("b", "eth0").unwrap();
    assert!(!net(&d).join("10.9.0.3").exists());
    let (_, text) = index_text(&d);
    assert_eq!(
        index_records(&text),
        [format!("{:016x} 10.9.0.2", index::exact_key("a", "eth0"))]
    );
    // without an index at all, everything still works
    let plain = hl(&d, json!({"subnet": "10.9.0.0/24"})).with_index_dir(None);
    assert_eq!(
        addrs(&plain.add("a", "eth0", &[]).unwrap()),
        ["10.9.0.2/24"]
    );
    plain.del("a", "eth0").unwrap();
    assert_eq!(files(&d), ["last_reserved_ip.0", "lock"]);
}

/// Reservations made behind twill's back (by the reference plugin, an older twill, a person)
/// change the directory's mtime: the index is not trusted, the scan finds them.
#[test]
fn foreign_changes_invalidate_the_index() {
    let d = TempDir::new("idx-foreign");
    let h = hl(&d, json!({"subnet": "10.9.0.0/24"}));
    h.add("a", "eth0", &[]).unwrap(); // .2
    // "the reference" reserves .3 for r and .4 for r2, exactly as it writes them
    fs::write(net(&d).join("10.9.0.3"), "r\r\neth0").unwrap();
    fs::write(net(&d).join("10.9.0.4"), "r2\r\neth0").unwrap();
    fs::write(net(&d).join("last_reserved_ip.0"), "10.9.0.4").unwrap();
    assert_ne!(dir_mtime(&d), index_stamp(&index_text(&d).1));
    // re-ADD of a reference-made attachment returns it
    assert_eq!(addrs(&h.add("r", "eth0", &[]).unwrap()), ["10.9.0.3/24"]);
    // ... and the rebuilt index knows both
    let (_, text) = index_text(&d);
    assert!(text.contains(&format!("{:016x} 10.9.0.4", index::exact_key("r2", "eth0"))));
    // DEL of a reference-made reservation, and of one removed behind twill's back
    h.del("r2", "eth0").unwrap();
    assert!(!net(&d).join("10.9.0.4").exists());
    fs::remove_file(net(&d).join("10.9.0.2")).unwrap();
    assert_eq!(addrs(&h.add("a", "eth0", &[]).unwrap()), ["10.9.0.5/24"]);
    assert_eq!(
        files(&d),
        ["10.9.0.3", "10.9.0.5", "last_reserved_ip.0", "lock"]
    );
}

/// Makes the index file claim the directory's current state (device, inode, mtime, ctime), as
/// if twill had just written it: an index that lies although it looks valid.
fn forge_index_header(dir: &TempDir) {
    use std::os::unix::fs::MetadataExt;
    let (path, text) = index_text(dir);
    let m = fs::metadata(net(dir)).unwrap();
    let (line, rest) = text.split_once('\n').unwrap();
    let f: Vec<&str> = line.splitn(9, ' ').collect();
    let forged = format!(
        "{} {} {} {} {:020} {:09} {:020} {:09} {}\n{rest}",
        f[0],
        f[1],
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        f[8]
    );
    fs::write(&path, forged).unwrap();
}

/// A change hidden by resetting the directory's mtime to the stamp (what a restore with kept
/// mtimes does) still changed its ctime, which no one can set back: the index is not used.
#[test]
fn a_change_hidden_by_resetting_the_mtime_invalidates_the_index() {
    let d = TempDir::new("idx-hidden");
    let h = hl(&d, json!({"subnet": "10.9.0.0/24"}));
    h.add("a", "eth0", &[]).unwrap(); // .2
    let stamp = dir_mtime(&d);
    assert_eq!(index_stamp(&index_text(&d).1), stamp);
    fs::write(net(&d).join("10.9.0.7"), "hidden\r\neth0").unwrap();
    set_dir_mtime(&d, stamp);
    // DEL of the hidden owner releases its reservation
    h.del("hidden", "eth0").unwrap();
    assert_eq!(files(&d), ["10.9.0.2", "last_reserved_ip.0", "lock"]);
    // the rebuilt index is trusted again: a re-ADD of a needs no scan to answer
    assert_eq!(addrs(&h.add("a", "eth0", &[]).unwrap()), ["10.9.0.2/24"]);
    let (_, text) = index_text(&d);
    assert_eq!(index_stamp(&text), dir_mtime(&d));
    assert_eq!(
        index_records(&text),
        [format!("{:016x} 10.9.0.2", index::exact_key("a", "eth0"))]
    );
}

/// The directory's ctime, as (seconds, nanoseconds).
fn dir_ctime(dir: &TempDir) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(net(dir)).unwrap();
    (m.ctime(), m.ctime_nsec())
}

/// DEL of an owner the index does not list reads every file (the index cannot prove that a
/// hand edit did not name it); when that only confirms the index, nothing is written: the
/// index file and the directory stay as they were, and the next operation trusts them.
#[test]
fn a_scan_that_confirms_the_index_writes_nothing() {
    let d = TempDir::new("idx-confirm");
    let h = hl(
        &d,
        json!({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00::/64"}]]}),
    );
    h.add("a", "eth0", &[]).unwrap();
    h.add("b", "eth0", &[]).unwrap();
    let (_, before) = index_text(&d);
    let ctime = dir_ctime(&d);
    h.del("ghost", "eth0").unwrap();
    assert_eq!(index_text(&d).1, before);
    assert_eq!(dir_ctime(&d), ctime);
    // the index still answers; a DEL that changes something moves the ctime, and the header
    // follows it
    h.del("a", "eth0").unwrap();
    let (_, after) = index_text(&d);
    assert_ne!(dir_ctime(&d), ctime);
    assert_eq!(index_records(&after).len(), 2, "{after}");
    let header: Vec<&str> = after.lines().next().unwrap().split(' ').collect();
    let (c, n) = dir_ctime(&d);
    assert_eq!((header[6].parse(), header[7].parse()), (Ok(c), Ok(n)));
}

/// An index that lies although it matches the directory (forged here) is caught by
/// verification before anything is returned or removed.
#[test]
fn stale_index_entries_are_verified_before_use() {
    let d = TempDir::new("idx-stale");
    let h = hl(&d, json!({"subnet": "10.9.0.0/24"}));
    h.add("a", "eth0", &[]).unwrap(); // .2
    h.add("b", "eth0", &[]).unwrap(); // .3
    // a's file vanished, b's now belongs to z: the index still says a→.2, b→.3
    fs::remove_file(net(&d).join("10.9.0.2")).unwrap();
    fs::remove_file(net(&d).join("10.9.0.3")).unwrap();
    fs::write(net(&d).join("10.9.0.3"), "z\r\neth0").unwrap();
    forge_index_header(&d);
    // re-ADD of a does not return the vanished address
    assert_eq!(addrs(&h.add("a", "eth0", &[]).unwrap()), ["10.9.0.4/24"]);
    // (that fell back to a scan, whose index is correct again)
    assert!(
        index_text(&d)
            .1
            .contains(&format!("{:016x} 10.9.0.3", index::exact_key("z", "eth0")))
    );
    // hide the same kind of change again: DEL of z must not release b's address
    let stamp = dir_mtime(&d);
    fs::write(net(&d).join("10.9.0.3"), "b\r\neth0").unwrap(); // in place: index says z
    h.del("z", "eth0").unwrap();
    assert_eq!(
        read(&d, "10.9.0.3"),
        "b\r\neth0",
        "DEL z removed b's address"
    );
    // the failed verification made it scan and rebuild (new stamp, b's entry)
    let (_, text) = index_text(&d);
    assert_ne!(index_stamp(&text), stamp);
    assert_eq!(index_stamp(&text), dir_mtime(&d));
    assert!(text.contains(&format!("{:016x} 10.9.0.3", index::exact_key("b", "eth0"))));
}

/// A reservation the index does not list (the index forged to match the directory) is found
/// when ADD bumps into it; the index is then dropped and rebuilt by the next operation.
#[test]
fn unlisted_reservation_drops_the_index() {
    let d = TempDir::new("idx-unlisted");
    let h = hl(&d, json!({"subnet": "10.9.0.0/24"}));
    h.add("a", "eth0", &[]).unwrap(); // .2
    fs::write(net(&d).join("10.9.0.3"), "hidden\r\neth0").unwrap();
    forge_index_header(&d);
    assert_eq!(addrs(&h.add("b", "eth0", &[]).unwrap()), ["10.9.0.4/24"]);
    let (path, _) = index_text(&d);
    assert!(!path.exists(), "index kept after it proved incomplete");
    // the next operation scans: hidden's re-ADD gets its address back
    assert_eq!(
        addrs(&h.add("hidden", "eth0", &[]).unwrap()),
        ["10.9.0.3/24"]
    );
    assert!(path.exists());
}

/// Index files of network directories that are gone (or recreated) are removed when another
/// index is created; others are kept.
#[test]
fn stale_index_files_are_pruned() {
    let d = TempDir::new("idx-prune");
    let h = hl(&d, json!({"subnet": "10.9.0.0/24"}));
    let other = d.path().join("othernet");
    fs::create_dir_all(&other).unwrap();
    let m = fs::metadata(&other).unwrap();
    use std::os::unix::fs::MetadataExt;
    let idx = index_dir(&d);
    fs::create_dir_all(&idx).unwrap();
    let live = idx.join(format!("{}-{}", m.dev(), m.ino()));
    let header = |dev: u64, ino: u64, p: &Path| {
        format!(
            "twill-host-local-index 3 {dev} {ino} 1 0 1 0 0 {}\nend\n",
            p.display()
        )
    };
    fs::write(&live, header(m.dev(), m.ino(), &other)).unwrap();
    let gone = idx.join("1-2");
    fs::write(&gone, header(1, 2, &d.path().join("gone"))).unwrap();
    let moved = idx.join(format!("{}-{}", m.dev(), m.ino() + 1_000_000));
    fs::write(&moved, header(m.dev(), m.ino() + 1_000_000, &other)).unwrap();
    // an index of format 1 (older twill) whose directory is gone
    let old_format = idx.join("1-3");
    fs::write(
        &old_format,
        format!(
            "twill-host-local-index 1 1 3 1 0 {}\nend\n",
            d.path().join("gone1").display()
        ),
    )
    .unwrap();
    let junk = idx.join("notes");
    fs::write(&junk, "not an index").unwrap();
    h.add("a", "eth0", &[]).unwrap();
    assert!(live.exists());
    assert!(junk.exists());
    assert!(!gone.exists());
    assert!(!moved.exists());
    assert!(!old_format.exists());
    assert!(index_text(&d).0.exists());
}

/// After every operation of a long mixed sequence (dual-stack ADDs, re-ADDs, DELs, with the
/// index mostly valid), the index lists exactly the reservation files with their owners' keys
/// and the directory carries its stamp.
#[test]
fn index_matches_the_directory_after_every_operation() {
    let d = TempDir::new("idx-walk");
    let h = hl(
        &d,
        json!({"ranges": [[{"subnet": "10.9.0.0/27"}], [{"subnet": "fd00::/123"}]]}),
    );
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut most = 0;
    for step in 0..120 {
        let owner = format!("c{}", next() % 12);
        let ifname = if next() % 3 == 0 { "net1" } else { "eth0" };
        match next() % 3 {
            0 => {
                h.del(&owner, ifname).unwrap();
            }
            _ => {
                let r = h.add(&owner, ifname, &[]);
                if let Err(e) = r {
                    assert_eq!(e.code, code::IPAM_EXHAUSTED, "step {step}: {e}");
                }
            }
        }
        let (_, text) = index_text(&d);
        let mut listed = index_records(&text);
        listed.sort();
        let mut want: Vec<String> = files(&d)
            .into_iter()
            .filter(|n| n.parse::<IpAddr>().is_ok())
            .map(|n| {
                let o = store::StoredOwner::parse(&read(&d, &n));
                format!("{:016x} {n}", o.key())
            })
            .collect();
        want.sort();
        most = most.max(want.len());
        assert_eq!(listed, want, "step {step}");
        assert_eq!(index_stamp(&text), dir_mtime(&d), "step {step}");
    }
    assert!(
        most >= 16,
        "the sequence never held more than {most} reservations"
    );
}
