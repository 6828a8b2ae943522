//! Black-box conformance of twill `host-local`'s owner index: it is only ever a hint, so no
//! restore or hand edit of the data directory or of the index makes DEL leave a reservation,
//! ADD hand out an address another owner's file holds, or ADD return an address no file of
//! the owner records.
//!
//! Each test owns a temp root holding the IPAM `dataDir` (`<root>/data`) and the owner index
//! (`<root>/index`, given to the plugin as `TWILL_HOST_LOCAL_INDEX_DIR`), and a network
//! namespace used as `CNI_NETNS`; everything is removed on drop. Restores are made with the
//! tools an operator uses (`cp -a`), hand edits with plain file writes.

use conformance::{Invocation, Netns, Outcome, TempDir, result_ips, twill_bin, unique_name};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// One test's world: temp root (data dir and index dir), the netns passed as CNI_NETNS, and a
/// unique network name.
struct Env {
    tmp: TempDir,
    ns: Netns,
    name: String,
}

impl Env {
    fn new() -> Env {
        Env {
            tmp: TempDir::new("hlidx"),
            ns: Netns::new(),
            name: unique_name("net"),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.tmp.join("data")
    }

    /// `<dataDir>/<network name>`: where reservations live.
    fn net_dir(&self) -> PathBuf {
        self.data_dir().join(&self.name)
    }

    /// The owner index directory of this test.
    fn index_dir(&self) -> PathBuf {
        self.tmp.join("index")
    }

    /// A 1.0.0 host-local config over `ranges` (a list of range sets).
    fn conf(&self, ranges: Value) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "host-local",
            "ipam": {"type": "host-local", "dataDir": self.data_dir(), "ranges": ranges}
        })
    }

    /// An attachment call (ifname eth0) with this test's index directory.
    fn call(&self, cmd: &str, id: &str, conf: &Value) -> Outcome {
        Invocation::new(twill_bin("host-local"))
            .command(cmd)
            .container_id(id)
            .netns(self.ns.path())
            .ifname("eth0")
            .env(
                "TWILL_HOST_LOCAL_INDEX_DIR",
                &self.index_dir().display().to_string(),
            )
            .stdin_json(conf)
            .run()
    }

    /// ADD; the result's addresses, each checked to be recorded for `id` by its file.
    fn add(&self, id: &str, conf: &Value) -> Vec<IpAddr> {
        let ips = result_ips(&self.call("ADD", id, conf).assert_ok());
        let files = self.reservations();
        for ip in &ips {
            assert_eq!(
                files.get(&ip.to_string()),
                Some(&owner(id)),
                "ADD of {id} returned {ip}, which no file records for it: {files:?}"
            );
        }
        ips
    }

    fn del(&self, id: &str, conf: &Value) {
        self.call("DEL", id, conf).assert_ok_empty();
    }

    /// Reservation files of the network: file name (an IP) → content.
    fn reservations(&self) -> BTreeMap<String, String> {
        let Ok(entries) = fs::read_dir(self.net_dir()) else {
            return BTreeMap::new();
        };
        entries
            .map(|e| e.expect("read data dir").path())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_owned();
                name.parse::<IpAddr>().ok()?;
                Some((name, fs::read_to_string(&p).expect("read reservation")))
            })
            .collect()
    }

    /// Writes a reservation file by hand (in place when it exists: the directory is not
    /// changed then).
    fn write_by_hand(&self, ip: &str, owner_id: &str) {
        fs::write(self.net_dir().join(ip), owner(owner_id)).expect("write reservation");
    }

    fn dir_mtime(&self) -> SystemTime {
        fs::metadata(self.net_dir())
            .and_then(|m| m.modified())
            .expect("stat data dir")
    }

    /// Sets the network directory's mtime back, as a restore with kept mtimes does.
    fn set_dir_mtime(&self, t: SystemTime) {
        fs::File::open(self.net_dir())
            .and_then(|f| f.set_times(fs::FileTimes::new().set_modified(t)))
            .expect("set data dir mtime");
    }
}

/// The on-disk owner of a reservation (ifname eth0).
fn owner(id: &str) -> String {
    format!("{id}\r\neth0")
}

fn reservations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(ip, id)| (ip.to_string(), owner(id)))
        .collect()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter()
        .map(|s| s.parse().expect("test address"))
        .collect()
}

/// `cp -a from to`: copies a tree keeping modes and times (directories' mtimes included).
fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// Replaces the tree at `dir` with a `cp -a` of `copy`.
fn restore(copy: &Path, dir: &Path) {
    fs::remove_dir_all(dir).expect("remove before restore");
    cp_a(copy, dir);
}

#[test]
fn older_index_copy_restored_makes_neither_add_nor_del_leak() {
    let env = Env::new();
    let conf = env.conf(json!([[{"subnet": "10.64.1.0/24"}]]));
    let (a, b, c) = (unique_name("a"), unique_name("b"), unique_name("c"));
    assert_eq!(env.add(&a, &conf), ips(&["10.64.1.2"]));
    let old_index = env.tmp.join("index.old");
    cp_a(&env.index_dir(), &old_index);
    env.del(&a, &conf);
    assert_eq!(env.add(&b, &conf), ips(&["10.64.1.3"]));
    // the index as it was when only a held an address: DEL of b releases b's address
    restore(&old_index, &env.index_dir());
    env.del(&b, &conf);
    assert_eq!(env.reservations(), BTreeMap::new(), "DEL of b left it");

    // the index as it was before c's ADD: c's retried ADD gets its address back, not a
    // second one
    let older = env.tmp.join("index.older");
    cp_a(&env.index_dir(), &older);
    assert_eq!(env.add(&c, &conf), ips(&["10.64.1.4"]));
    restore(&older, &env.index_dir());
    assert_eq!(env.add(&c, &conf), ips(&["10.64.1.4"]));
    assert_eq!(env.reservations(), reservations(&[("10.64.1.4", &c)]));
    env.del(&c, &conf);
    assert_eq!(env.reservations(), BTreeMap::new());
}

#[test]
fn data_dir_restored_over_the_current_one_with_mtimes_kept_is_released_by_del() {
    let env = Env::new();
    let conf = env.conf(json!([[{"subnet": "10.64.2.0/24"}]]));
    let (a, b) = (unique_name("a"), unique_name("b"));
    env.add(&a, &conf);
    let old = env.tmp.join("net.old");
    cp_a(&env.net_dir(), &old);
    env.del(&a, &conf);
    env.add(&b, &conf);
    // cp -a of the earlier state over the current one: a's file is back, b's stays, and the
    // directory gets the earlier mtime; the index is untouched
    let mut from = old.clone().into_os_string();
    from.push("/.");
    cp_a(Path::new(&from), &env.net_dir());
    assert_eq!(
        env.dir_mtime(),
        fs::metadata(&old).and_then(|m| m.modified()).expect("stat"),
        "cp -a did not keep the directory's mtime"
    );
    assert_eq!(
        env.reservations(),
        reservations(&[("10.64.2.2", &a), ("10.64.2.3", &b)])
    );
    env.del(&a, &conf);
    assert_eq!(env.reservations(), reservations(&[("10.64.2.3", &b)]));
    env.del(&b, &conf);
    assert_eq!(env.reservations(), BTreeMap::new());
}

#[test]
fn data_dir_replaced_by_an_older_copy_with_mtimes_kept_is_released_by_del() {
    let env = Env::new();
    let conf = env.conf(json!([[{"subnet": "10.64.3.0/24"}]]));
    let (a, b) = (unique_name("a"), unique_name("b"));
    env.add(&a, &conf);
    let old = env.tmp.join("net.old");
    cp_a(&env.net_dir(), &old);
    env.del(&a, &conf);
    env.add(&b, &conf);
    // the directory is removed and the copy put in its place (it may get the old inode back)
    restore(&old, &env.net_dir());
    assert_eq!(env.reservations(), reservations(&[("10.64.3.2", &a)]));
    // b's reservation is gone with the restore: its retried ADD gets a recorded address
    let got = env.add(&b, &conf);
    assert_eq!(got.len(), 1);
    assert_ne!(got, ips(&["10.64.3.2"]), "b was handed a's address");
    env.del(&a, &conf);
    env.del(&b, &conf);
    assert_eq!(env.reservations(), BTreeMap::new());
}

#[test]
fn reservation_edited_by_hand_to_another_owner_belongs_to_that_owner() {
    let env = Env::new();
    let conf = env.conf(json!([[{"subnet": "10.64.4.0/24"}]]));
    let (a, b, c, d) = (
        unique_name("a"),
        unique_name("b"),
        unique_name("c"),
        unique_name("d"),
    );
    // a's file now names b (edited in place: the directory itself does not change)
    assert_eq!(env.add(&a, &conf), ips(&["10.64.4.2"]));
    let before = env.dir_mtime();
    env.write_by_hand("10.64.4.2", &b);
    assert_eq!(env.dir_mtime(), before, "the edit changed the directory");
    // DEL of b, whom the index does not know, releases it
    env.del(&b, &conf);
    assert_eq!(
        env.reservations(),
        BTreeMap::new(),
        "DEL of b left its file"
    );
    // a's retried ADD does not return the address its file no longer records
    assert_eq!(env.add(&a, &conf), ips(&["10.64.4.3"]));

    // the other order: c's file now names d; DEL of c leaves it, DEL of d releases it
    assert_eq!(env.add(&c, &conf), ips(&["10.64.4.4"]));
    env.write_by_hand("10.64.4.4", &d);
    env.del(&c, &conf);
    assert_eq!(
        env.reservations(),
        reservations(&[("10.64.4.3", &a), ("10.64.4.4", &d)]),
        "DEL of c released d's address"
    );
    assert_eq!(env.add(&c, &conf), ips(&["10.64.4.5"]));
    env.del(&d, &conf);
    assert_eq!(
        env.reservations(),
        reservations(&[("10.64.4.3", &a), ("10.64.4.5", &c)])
    );
}

#[test]
fn reservation_removed_by_hand_is_never_returned() {
    let env = Env::new();
    let conf = env.conf(json!([[{"subnet": "10.64.5.0/24"}], [{"subnet": "fd64:5::/64"}]]));
    let a = unique_name("a");
    assert_eq!(env.add(&a, &conf), ips(&["10.64.5.2", "fd64:5::2"]));
    // removed with the directory's mtime put back (as a restore would leave it)
    let before = env.dir_mtime();
    fs::remove_file(env.net_dir().join("fd64:5::2")).expect("rm");
    env.set_dir_mtime(before);
    // (Env::add asserts every returned address is recorded for a)
    let got = env.add(&a, &conf);
    assert_eq!(got[0], "10.64.5.2".parse::<IpAddr>().expect("ip"));
    assert_ne!(got[1], "fd64:5::2".parse::<IpAddr>().expect("ip"));
    // removed plainly
    fs::remove_file(env.net_dir().join("10.64.5.2")).expect("rm");
    let again = env.add(&a, &conf);
    assert_ne!(again[0], "10.64.5.2".parse::<IpAddr>().expect("ip"));
    assert_eq!(again[1], got[1]);
    assert_eq!(env.reservations().len(), 2, "{:?}", env.reservations());
    env.del(&a, &conf);
    assert_eq!(env.reservations(), BTreeMap::new());
}

#[test]
fn reservation_added_by_hand_is_released_by_del_of_its_owner() {
    let env = Env::new();
    let conf = env.conf(json!([[{"subnet": "10.64.6.0/24"}]]));
    let (a, x, y, z) = (
        unique_name("a"),
        unique_name("x"),
        unique_name("y"),
        unique_name("z"),
    );
    env.add(&a, &conf);
    // added with the directory's mtime put back
    let before = env.dir_mtime();
    env.write_by_hand("10.64.6.9", &x);
    env.set_dir_mtime(before);
    env.del(&x, &conf);
    assert_eq!(env.reservations(), reservations(&[("10.64.6.2", &a)]));
    // added plainly
    env.write_by_hand("10.64.6.10", &y);
    env.del(&y, &conf);
    assert_eq!(env.reservations(), reservations(&[("10.64.6.2", &a)]));
    // a retried ADD of such an owner returns its address instead of reserving a second one
    let before = env.dir_mtime();
    env.write_by_hand("10.64.6.11", &z);
    env.set_dir_mtime(before);
    assert_eq!(env.add(&z, &conf), ips(&["10.64.6.11"]));
    assert_eq!(
        env.reservations(),
        reservations(&[("10.64.6.2", &a), ("10.64.6.11", &z)])
    );
}

#[test]
fn dual_stack_owner_indexed_in_one_range_set_gets_and_releases_both() {
    let env = Env::new();
    let (r4, r6) = (
        json!([{"subnet": "10.64.7.0/24"}]),
        json!([{"subnet": "fd64:7::/64"}]),
    );
    let conf4 = env.conf(json!([r4]));
    let conf6 = env.conf(json!([r6]));
    let dual = env.conf(json!([r4, r6]));
    let (a, c, e, f) = (
        unique_name("a"),
        unique_name("c"),
        unique_name("e"),
        unique_name("f"),
    );
    // a holds an IPv4 address (indexed); the IPv6 file of c now names a (edited in place)
    assert_eq!(env.add(&a, &conf4), ips(&["10.64.7.2"]));
    assert_eq!(env.add(&c, &conf6), ips(&["fd64:7::2"]));
    env.write_by_hand("fd64:7::2", &a);
    // a's dual-stack ADD returns both of its addresses, not a second IPv6 one
    assert_eq!(env.add(&a, &dual), ips(&["10.64.7.2", "fd64:7::2"]));
    assert_eq!(
        env.reservations(),
        reservations(&[("10.64.7.2", &a), ("fd64:7::2", &a)])
    );
    env.del(&a, &dual);
    assert_eq!(env.reservations(), BTreeMap::new());

    // the same for DEL: e's dual-stack DEL releases the IPv6 address the index lists for f
    env.add(&e, &conf4);
    let v6 = env.add(&f, &conf6);
    env.write_by_hand(&v6[0].to_string(), &e);
    assert_eq!(env.reservations().len(), 2);
    env.del(&e, &dual);
    assert_eq!(
        env.reservations(),
        BTreeMap::new(),
        "DEL of e left an address"
    );
}

#[test]
fn dual_stack_del_after_an_older_index_copy_releases_both() {
    let env = Env::new();
    let conf4 = env.conf(json!([[{"subnet": "10.64.8.0/24"}]]));
    let dual = env.conf(json!([[{"subnet": "10.64.8.0/24"}], [{"subnet": "fd64:8::/64"}]]));
    let a = unique_name("a");
    assert_eq!(env.add(&a, &conf4), ips(&["10.64.8.2"]));
    let old_index = env.tmp.join("index.old");
    cp_a(&env.index_dir(), &old_index);
    assert_eq!(env.add(&a, &dual), ips(&["10.64.8.2", "fd64:8::2"]));
    // the index as it was when a held only its IPv4 address
    restore(&old_index, &env.index_dir());
    env.del(&a, &dual);
    assert_eq!(
        env.reservations(),
        BTreeMap::new(),
        "DEL of a left an address"
    );
}

/// Names of the reservation files (listed, not read).
fn names(env: &Env) -> Vec<String> {
    fs::read_dir(env.net_dir())
        .expect("read data dir")
        .filter_map(|e| e.expect("read data dir").file_name().into_string().ok())
        .filter(|n| n.parse::<IpAddr>().is_ok())
        .collect()
}

/// Access time of every reservation file.
fn atimes(env: &Env) -> BTreeMap<String, (i64, i64)> {
    names(env)
        .into_iter()
        .map(|name| {
            let m = fs::metadata(env.net_dir().join(&name)).expect("stat");
            (name, (m.atime(), m.atime_nsec()))
        })
        .collect()
}

/// Sets every reservation file's access time to the epoch: a later read of it sets it to now
/// (relatime updates an access time older than the modification time).
fn reset_atimes(env: &Env) {
    for name in names(env) {
        fs::File::open(env.net_dir().join(&name))
            .and_then(|f| f.set_times(fs::FileTimes::new().set_accessed(UNIX_EPOCH)))
            .expect("set atime");
    }
}

/// The common case stays O(1): ADD and DEL of a fresh attachment read no other attachment's
/// reservation file (their access times stay untouched), while a GC, which reads them all,
/// shows that the probe sees reads.
#[test]
fn add_and_del_of_a_fresh_attachment_read_no_other_reservation() {
    let env = Env::new();
    let conf = env.conf(json!([[{"subnet": "10.64.9.0/24"}], [{"subnet": "fd64:9::/64"}]]));
    let ids: Vec<String> = (0..20).map(|i| format!("{}-{i}", env.name)).collect();
    for id in &ids {
        env.add(id, &conf);
    }
    reset_atimes(&env);
    let untouched = atimes(&env);
    assert!(
        untouched.values().all(|t| *t == (0, 0)),
        "atime not settable"
    );
    // (through Env::call: Env::add reads every file to check the result)
    let fresh = unique_name("fresh");
    let got = result_ips(&env.call("ADD", &fresh, &conf).assert_ok());
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|ip| !untouched.contains_key(&ip.to_string()))
    );
    assert_eq!(names(&env).len(), untouched.len() + 2);
    env.del(&fresh, &conf);
    assert_eq!(
        atimes(&env),
        untouched,
        "a fresh ADD/DEL read other reservations"
    );

    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = ids
        .iter()
        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    Invocation::new(twill_bin("host-local"))
        .command("GC")
        .env(
            "TWILL_HOST_LOCAL_INDEX_DIR",
            &env.index_dir().display().to_string(),
        )
        .stdin_json(&gc)
        .run()
        .assert_ok_empty();
    assert_eq!(
        names(&env).len(),
        untouched.len(),
        "GC released a valid one"
    );
    assert!(
        atimes(&env).values().all(|t| *t != (0, 0)),
        "GC read every reservation, yet access times did not move: the probe is blind"
    );
}
