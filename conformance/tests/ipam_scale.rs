//! host-local at scale, black-box with the `host-local` binary: a /22 filled by 16 parallel
//! processes, its exhaustion, and DEL and re-ADD lookups in a directory of a thousand
//! reservation files (answered from twill's owner index, on the reference's on-disk format).
//!
//! Assertions are on results (addresses, codes, files), never on timings.

use conformance::{DirSnapshot, Invocation, Netns, TempDir, result_ips, twill_bin, unique_name};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const IPAM_EXHAUSTED: u64 = 101;
const NOT_AVAILABLE: u64 = 50;

/// The /22 under test and the number of addresses it hands out: 1024 minus network,
/// broadcast and gateway.
const SUBNET: &str = "10.76.0.0/22";
const CAPACITY: usize = 1021;
const WORKERS: usize = 16;

/// One test's world: temp root (the data dir), a netns for `CNI_NETNS`, the network name and
/// the owner index directory.
struct Env {
    tmp: TempDir,
    ns: Netns,
    name: String,
    index: TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            tmp: TempDir::new("ipam-scale"),
            ns: Netns::new(),
            name: unique_name("scale"),
            index: TempDir::new("ipam-scale-index"),
        }
    }

    fn net_dir(&self) -> PathBuf {
        self.tmp.join("data").join(&self.name)
    }

    fn conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "host-local",
            "ipam": {
                "type": "host-local",
                "dataDir": self.tmp.join("data"),
                "ranges": [[{"subnet": SUBNET}]],
                "lockTimeout": 30
            }
        })
    }

    fn call(&self, cmd: &str, id: &str) -> Invocation {
        Invocation::new(twill_bin("host-local"))
            .env(
                "TWILL_HOST_LOCAL_INDEX_DIR",
                &self.index.path().display().to_string(),
            )
            .command(cmd)
            .container_id(id)
            .netns(self.ns.path())
            .ifname("eth0")
            .stdin_json(&self.conf())
    }

    /// Reservation files: address → owner contents.
    fn reservations(&self) -> BTreeMap<IpAddr, String> {
        DirSnapshot::take(self.net_dir())
            .files()
            .into_iter()
            .filter_map(|(p, b)| {
                let ip = p.display().to_string().parse::<IpAddr>().ok()?;
                Some((ip, String::from_utf8_lossy(&b).into_owned()))
            })
            .collect()
    }

    /// Runs `cmd` for every ID from `WORKERS` parallel workers, each call a process; returns
    /// the address of each successful ADD by ID, and every failure's description.
    fn parallel(&self, cmd: &str, ids: &[String]) -> (BTreeMap<String, IpAddr>, Vec<String>) {
        let next = AtomicUsize::new(0);
        let got = Mutex::new(BTreeMap::new());
        let failed = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..WORKERS {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(id) = ids.get(i) else {
                            break;
                        };
                        let out = self.call(cmd, id).run();
                        let ip = out
                            .stdout_json
                            .as_ref()
                            .filter(|_| out.success())
                            .map(result_ips);
                        match (cmd, ip) {
                            ("ADD", Some(ips)) if ips.len() == 1 => {
                                got.lock().expect("lock").insert(id.clone(), ips[0]);
                            }
                            ("DEL", _) if out.success() => {}
                            _ => failed.lock().expect("lock").push(out.to_string()),
                        }
                    }
                });
            }
        });
        (
            got.into_inner().expect("lock"),
            failed.into_inner().expect("lock"),
        )
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}-{i}-{}", std::process::id()))
        .collect()
}

#[test]
fn a_slash22_filled_by_16_processes_hands_out_every_address_once_then_answers_101() {
    let env = Env::new();
    let subnet: ipnetwork::IpNetwork = SUBNET.parse().expect("subnet");

    // 1000 ADDs from 16 processes at a time: 1000 distinct addresses, each file its owner's
    let first = ids("a", 1000);
    let (got, failed) = env.parallel("ADD", &first);
    assert!(
        failed.is_empty(),
        "{} ADDs failed: {}",
        failed.len(),
        failed[0]
    );
    let distinct: BTreeSet<IpAddr> = got.values().copied().collect();
    assert_eq!(distinct.len(), 1000, "an address was handed out twice");
    let on_disk = env.reservations();
    assert_eq!(on_disk.len(), 1000);
    for (id, ip) in &got {
        assert!(subnet.contains(*ip), "{ip} outside {SUBNET}");
        assert_eq!(on_disk.get(ip), Some(&format!("{id}\r\neth0")), "{ip}");
    }

    // the rest of the range, then exhaustion: 101 and nothing changed
    let rest = ids("b", CAPACITY - 1000);
    let (more, failed) = env.parallel("ADD", &rest);
    assert!(
        failed.is_empty(),
        "{} ADDs failed: {}",
        failed.len(),
        failed[0]
    );
    let all: BTreeSet<IpAddr> = distinct
        .union(&more.values().copied().collect())
        .copied()
        .collect();
    assert_eq!(all.len(), CAPACITY);
    let full = env.reservations();
    for extra in ["c-0", "c-1"] {
        let err = env.call("ADD", extra).run().assert_error(IPAM_EXHAUSTED);
        let msg = err["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("no IP addresses available") && msg.contains(&env.name),
            "{err}"
        );
    }
    assert_eq!(
        env.reservations(),
        full,
        "a failed ADD changed the reservations"
    );
    let mut status = env.conf();
    status["cniVersion"] = json!("1.1.0");
    env.call("STATUS", "")
        .stdin_json(&status)
        .unset("CNI_CONTAINERID")
        .unset("CNI_NETNS")
        .unset("CNI_IFNAME")
        .run()
        .assert_error(NOT_AVAILABLE);

    // in the full directory: a re-ADD returns the owner's address, a DEL releases exactly its
    // file, and the freed address is the one the next ADD gets
    let (id, ip) = got.iter().nth(500).expect("an attachment");
    let again = env.call("ADD", id).run().assert_ok();
    assert_eq!(result_ips(&again), vec![*ip]);
    env.call("DEL", id).run().assert_ok_empty();
    let after_del = env.reservations();
    assert_eq!(after_del.len(), CAPACITY - 1);
    assert!(!after_del.contains_key(ip));
    let refill = env.call("ADD", "d-0").run().assert_ok();
    assert_eq!(result_ips(&refill), vec![*ip]);

    // every DEL from 16 processes at a time: nothing reserved is left
    let mut owners: Vec<String> = first.iter().filter(|i| *i != id).cloned().collect();
    owners.extend(rest);
    owners.push("d-0".to_string());
    let (_, failed) = env.parallel("DEL", &owners);
    assert!(
        failed.is_empty(),
        "{} DELs failed: {}",
        failed.len(),
        failed[0]
    );
    assert_eq!(env.reservations(), BTreeMap::new());
}
