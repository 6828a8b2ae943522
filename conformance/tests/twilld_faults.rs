//! twilld under fault: its view replaced by symlinks (to a file elsewhere, a loop, a directory,
//! a device, a FIFO, /proc/self/mem), a view of 100k entries, a conf dir of a thousand files
//! (mostly not twill's, broken or huge), a notification overflow (ENOBUFS) while it is
//! stopped, SIGKILL in the middle of applying a 2000-peer view, and a route the kernel refuses
//! among a view's routes. Each is tried against the daemon in a node namespace and judged on
//! the node's kernel state and on what the daemon logs. Every wait is bounded.

use conformance::hostgw::*;
use conformance::twilld::{self, Daemon, replace_file, wait_until, write_conf};
use conformance::{Fabric, Node};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How soon a change must be on the node.
const WITHIN: Duration = Duration::from_secs(1);
/// Bound for work that scales with a large input (debug binaries, a shared 2-core machine).
const LARGE: Duration = Duration::from_secs(20);

/// A 3-node cluster whose nodes each have the network in their conf dir.
fn cluster() -> Cluster {
    let c = Cluster::new(Fabric::single_l2(3));
    for i in 0..c.len() {
        write_conf(c.node(i), "10-pods.conf", &c.conf(i));
    }
    c
}

fn wait_routes(c: &Cluster, i: usize, want: &BTreeSet<(String, String)>, limit: Duration) {
    let ok = wait_until(limit, || peer_routes(&c.node(i).ns) == *want);
    assert!(
        ok,
        "node {i}: twill routes not as wanted within {limit:?}: want {} routes, have {:?}",
        want.len(),
        diff(want, &peer_routes(&c.node(i).ns))
    );
}

/// What is missing from and extra in `have` (at most a few of each), for failure messages.
fn diff(want: &BTreeSet<(String, String)>, have: &BTreeSet<(String, String)>) -> String {
    let missing: Vec<_> = want.difference(have).take(5).collect();
    let extra: Vec<_> = have.difference(want).take(5).collect();
    format!(
        "{} routes, missing {missing:?}.., extra {extra:?}..",
        have.len()
    )
}

/// A directory of the node's own (removed with the fabric), outside the view's directory.
fn elsewhere(node: &Node) -> PathBuf {
    let dir = node.run_dir.parent().expect("node dir").join("elsewhere");
    std::fs::create_dir_all(&dir).expect("create the directory elsewhere");
    dir
}

/// Replaces `path` by a symlink to `target`, atomically (a new link renamed over it).
fn symlink_over(path: &Path, target: &Path) {
    let tmp = path.with_extension("lnk-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("make the symlink");
    std::fs::rename(&tmp, path).expect("rename the symlink into place");
}

/// Passes of the daemon that change nothing (a link event each), to see a problem is not
/// said again.
fn idle_passes(node: &Node) {
    for _ in 0..3 {
        node.ns.ip(&["link", "set", "lo", "mtu", "65000"]);
        node.ns.ip(&["link", "set", "lo", "mtu", "65536"]);
    }
    std::thread::sleep(Duration::from_millis(400));
}

fn alive(d: &mut Daemon) {
    assert!(
        d.wait_exit(Duration::ZERO).is_none(),
        "twilld died:\n{}",
        d.log()
    );
}

#[test]
fn a_view_symlinked_to_a_file_elsewhere_is_followed_and_a_change_of_that_file_is_applied() {
    let c = cluster();
    let node = c.node(0);
    let mut d = Daemon::start(node);
    wait_routes(&c, 0, &c.expected_peer_routes(0), WITHIN);
    let target = elsewhere(node).join("view.json");
    replace_file(&target, &c.peers(|i| i != 2).to_string());
    symlink_over(&node.peers_file, &target);
    let only1 = BTreeSet::from([(pod_cidr4(1), "10.99.0.2".to_string())]);
    wait_routes(&c, 0, &only1, WITHIN);
    // Let the passes its own route removal started go by, so only the watch can tell.
    std::thread::sleep(Duration::from_millis(500));
    // The file the link leads to is rewritten where it is: the daemon watches it there too.
    replace_file(&target, &c.peers(|_| true).to_string());
    wait_routes(&c, 0, &c.expected_peer_routes(0), WITHIN);
    alive(&mut d);
    assert!(!d.log().contains("error"), "{}", d.log());
}

#[test]
fn a_view_symlinked_to_a_loop_a_directory_a_device_a_fifo_or_proc_mem_is_refused_once_keeping_the_last_good_state()
 {
    let c = cluster();
    let node = c.node(0);
    let dir = elsewhere(node);
    let (loop_a, loop_b) = (dir.join("loop-a"), dir.join("loop-b"));
    std::os::unix::fs::symlink(&loop_b, &loop_a).expect("loop a");
    std::os::unix::fs::symlink(&loop_a, &loop_b).expect("loop b");
    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let subdir = dir.join("a-directory");
    std::fs::create_dir_all(&subdir).expect("mkdir");
    let good = dir.join("good.json");
    let mut d = Daemon::start(node);
    wait_routes(&c, 0, &c.expected_peer_routes(0), WITHIN);
    let kept = "keeping the node state last applied";
    let hostile: [(&str, PathBuf, &str); 5] = [
        (
            "a symlink loop",
            loop_a,
            // ELOOP; its text differs between libcs (glibc: "Too many levels of symbolic
            // links", musl: "Symbolic link loop").
            "(os error 40)",
        ),
        ("a directory", subdir, "is not a regular file"),
        (
            "a device",
            PathBuf::from("/dev/zero"),
            "is not a regular file",
        ),
        ("a FIFO", fifo, "is not a regular file"),
        (
            "/proc/self/mem",
            PathBuf::from("/proc/self/mem"),
            "cannot be read",
        ),
    ];
    for (k, (what, target, says)) in hostile.iter().enumerate() {
        // Each round starts from a good view of its own, so each refusal is a new problem.
        let keep = |i: usize| k % 2 == 0 || i != 2;
        replace_file(&good, &c.peers(keep).to_string());
        symlink_over(&node.peers_file, &good);
        let want: BTreeSet<_> = c
            .expected_peer_routes(0)
            .into_iter()
            .filter(|(dst, _)| k % 2 == 0 || *dst != pod_cidr4(2))
            .collect();
        wait_routes(&c, 0, &want, WITHIN);
        let before = d.log().matches(kept).count();
        symlink_over(&node.peers_file, target);
        let t0 = Instant::now();
        assert!(
            wait_until(Duration::from_secs(3), || d.log().matches(kept).count()
                > before),
            "{what}: the refusal is not logged; log:\n{}",
            d.log()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{what}: slow refusal"
        );
        let log = d.log();
        let line = log.lines().rfind(|l| l.contains(kept)).unwrap_or_default();
        assert!(line.contains(says), "{what}: {line}");
        idle_passes(node);
        assert_eq!(
            d.log().matches(kept).count(),
            before + 1,
            "{what}: said more than once:\n{}",
            d.log()
        );
        assert_eq!(peer_routes(&node.ns), want, "{what}: last good state kept");
        alive(&mut d);
    }
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(WITHIN).expect("SIGTERM answered");
    assert!(status.success(), "{status}");
}

/// A view of `n` entries; entry `k` routes `10.<100 + k / 250>.<k % 250>.0/24`-style subnets
/// (k past 38,000 go into 11.x) via `<net>.<k / 250 % 250>.<k % 250 + 2>`.
fn big_view(n: usize, first: usize, shift: usize, net: &str) -> Value {
    Value::Array(
        (first..first + n)
            .map(|k| {
                let h = k + shift;
                let cidr = if k < 38_000 {
                    format!("10.{}.{}.0/24", 100 + k / 250, k % 250)
                } else {
                    format!("11.{}.{}.0/24", (k - 38_000) / 250, k % 250)
                };
                json!({"nodeIP": format!("{net}.{}.{}", h / 250 % 250, h % 250 + 2), "podCIDR": cidr})
            })
            .collect(),
    )
}

/// The peak resident memory of process `pid` in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_view_of_100k_entries_is_refused_over_the_limit_in_bounded_time_and_memory_and_signals_are_answered()
 {
    let c = cluster();
    let node = c.node(0);
    let mut d = Daemon::start(node);
    let want = c.expected_peer_routes(0);
    wait_routes(&c, 0, &want, WITHIN);
    let view = big_view(100_000, 0, 0, "10.99");
    let t0 = Instant::now();
    replace_file(&node.peers_file, &view.to_string());
    let says = "more than 20000 entries";
    d.wait_log(says, LARGE);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
    assert_eq!(peer_routes(&node.ns), want, "last good state kept");
    let rss = peak_rss_kib(d.pid());
    assert!(rss < 128 * 1024, "peak RSS {rss} KiB reading a 100k view");
    // Signals are answered while the view stands: SIGHUP re-reads and says it again.
    d.signal(Signal::SIGHUP);
    d.wait_log("SIGHUP: re-reading", WITHIN);
    assert!(
        wait_until(Duration::from_secs(10), || d.log().matches(says).count()
            == 2),
        "{}",
        d.log()
    );
    d.signal(Signal::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(2))
        .expect("SIGTERM answered with a 100k view standing");
    assert!(status.success(), "{status}");
}

#[test]
fn a_conf_dir_of_a_thousand_files_is_read_in_a_bounded_pass_each_broken_file_named_once_and_the_twill_network_kept()
 {
    let c = cluster();
    let node = c.node(0);
    let dir = twilld::conf_dir(node);
    let mut broken: Vec<String> = Vec::new();
    for i in 0..600 {
        let foreign =
            json!({"cniVersion": "1.0.0", "name": format!("other-{i}"), "type": "bridge"});
        std::fs::write(dir.join(format!("50-other-{i}.conf")), foreign.to_string()).expect("write");
    }
    for i in 0..300 {
        let name = format!("60-broken-{i}.conflist");
        std::fs::write(dir.join(&name), "{\"name\": \"half").expect("write");
        broken.push(name);
    }
    let huge = vec![b' '; (1 << 20) + 1];
    for i in 0..20 {
        let name = format!("70-huge-{i}.json");
        std::fs::write(dir.join(&name), &huge).expect("write");
        broken.push(name);
    }
    for i in 0..55 {
        std::fs::write(dir.join(format!("readme-{i}.txt")), "not a config").expect("write");
    }
    for i in 0..20 {
        let n = json!({"cniVersion": "1.0.0", "name": format!("list-{i}"), "plugins": [{"type": "portmap"}]});
        std::fs::write(dir.join(format!("55-list-{i}.conflist")), n.to_string()).expect("write");
    }
    std::os::unix::fs::symlink("/dev/zero", dir.join("80-zero.conf")).expect("symlink");
    // The FIFO sorts first: a daemon that opens it blocking hangs there (and never reaches
    // /dev/zero, which it would read without end).
    let fifo = dir.join("05-fifo.conf");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    std::fs::create_dir(dir.join("82-dir.conf")).expect("mkdir");
    std::os::unix::fs::symlink(dir.join("83-loop.conf"), dir.join("83-loop.conf")).expect("loop");
    broken.extend(
        [
            "80-zero.conf",
            "05-fifo.conf",
            "82-dir.conf",
            "83-loop.conf",
        ]
        .map(String::from),
    );
    let files = std::fs::read_dir(&dir).expect("read conf dir").count();
    assert!(files >= 1000, "{files} files");

    let t0 = Instant::now();
    let mut d = Daemon::spawn(node);
    wait_routes(&c, 0, &c.expected_peer_routes(0), LARGE);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "first pass took {took:?}");
    idle_passes(node);
    let log = d.log();
    for name in &broken {
        let said = log
            .lines()
            .filter(|l| l.contains(&format!("/{name}:")))
            .count();
        assert_eq!(said, 1, "{name} named {said} times; log:\n{log}");
    }
    assert!(log.contains("larger than 1048576 bytes"), "{log}");
    assert!(log.contains("not a regular file"), "{log}");
    alive(&mut d);
    // The twill network stays kept: a route deleted by hand comes back.
    node.ns.ip(&["route", "del", &pod_cidr4(1)]);
    wait_routes(&c, 0, &c.expected_peer_routes(0), Duration::from_secs(5));
}

/// The drop counter of the daemon's rtnetlink notification socket (`/proc/net/netlink` in the
/// node: the socket bound first by a process gets its pid as port id).
fn notification_drops(node: &Node, pid: u32) -> u64 {
    let table = node.ns.exec_ok(&["cat", "/proc/net/netlink"]);
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
            (f.get(1) == Some(&"0") && f.get(2) == Some(&pid.to_string().as_str()))
                .then(|| f.get(8)?.parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// `ip -batch` lines adding `n` blackhole routes to `table` (notifications twilld ignores).
fn flood(node: &Node, table: u32, n: usize) {
    let lines: String = (0..n)
        .map(|k| {
            format!(
                "route add blackhole 10.{}.{}.{}/32 table {table}\n",
                200 + table % 50,
                k / 250,
                k % 250
            )
        })
        .collect();
    let file = elsewhere(node).join(format!("flood-{table}"));
    std::fs::write(&file, lines).expect("write the batch");
    node.ns.ip(&["-batch", &file.display().to_string()]);
}

#[test]
fn a_notification_overflow_while_stopped_resyncs_and_restores_a_route_deleted_meanwhile() {
    let c = cluster();
    let node = c.node(0);
    let mut d = Daemon::start(node);
    let want = c.expected_peer_routes(0);
    wait_routes(&c, 0, &want, WITHIN);
    d.signal(Signal::SIGSTOP);
    let resumed = scopeguard(&d);
    flood(node, 100, 4000);
    node.ns.ip(&["route", "del", &pod_cidr4(1)]);
    flood(node, 101, 4000);
    let drops = notification_drops(node, d.pid());
    assert!(
        drops > 0,
        "the flood did not overflow the daemon's notification socket"
    );
    drop(resumed); // SIGCONT
    wait_routes(&c, 0, &want, Duration::from_secs(3));
    alive(&mut d);
}

/// Sends SIGCONT to the daemon when dropped (also when the test fails while it is stopped).
struct Cont(u32);
impl Drop for Cont {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}
fn scopeguard(d: &Daemon) -> Cont {
    Cont(d.pid())
}

/// Expected twill routes of a view.
fn routes_of(view: &Value) -> BTreeSet<(String, String)> {
    view.as_array()
        .expect("list")
        .iter()
        .map(|e| {
            (
                e["podCIDR"].as_str().expect("podCIDR").to_string(),
                e["nodeIP"].as_str().expect("nodeIP").to_string(),
            )
        })
        .collect()
}

/// The node's state files of the network (run state, not temp files), and every other file
/// name of the run dir.
fn run_state(node: &Node, net: &str) -> (Vec<String>, Vec<String>) {
    let mut states = Vec::new();
    let mut others = Vec::new();
    for e in std::fs::read_dir(&node.run_dir)
        .expect("read run dir")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{net}.peers.")) && !name.contains(".tmp") {
            states.push(std::fs::read_to_string(e.path()).expect("read state"));
        } else {
            others.push(name);
        }
    }
    (states, others)
}

#[test]
fn sigkill_while_applying_a_2000_peer_view_is_followed_by_a_start_that_converges_exactly() {
    let c = cluster();
    let node = c.node(0);
    // An underlay big enough for 2000 next hops.
    node.ns
        .ip(&["addr", "add", "10.98.0.1/16", "dev", &node.uplink]);
    // Two views that differ in every way: 500 subnets only in each, 1500 with new next hops.
    let views = [
        big_view(2000, 0, 0, "10.98"),
        big_view(2000, 500, 1, "10.98"),
    ];
    for (round, delay_ms) in [5u64, 20, 45, 90, 180, 360].into_iter().enumerate() {
        let view = &views[round % 2];
        replace_file(&node.peers_file, &view.to_string());
        let mut d = Daemon::spawn(node);
        std::thread::sleep(Duration::from_millis(delay_ms));
        d.signal(Signal::SIGKILL);
        d.wait_exit(Duration::from_secs(5))
            .expect("twilld dies of SIGKILL");
        let mut d = Daemon::start(node);
        let want = routes_of(view);
        wait_routes(&c, 0, &want, LARGE);
        d.signal(Signal::SIGTERM);
        d.wait_exit(Duration::from_secs(5)).expect("SIGTERM");
        let (states, others) = run_state(node, &c.net);
        assert_eq!(states.len(), 1, "round {round}: {others:?}");
        let state = &states[0];
        assert!(
            state
                .lines()
                .any(|l| l.starts_with("fingerprint ") && l != "fingerprint pending"),
            "round {round}: the state records no complete apply:\n{}",
            state.lines().take(3).collect::<Vec<_>>().join("\n")
        );
        let recorded: BTreeSet<(String, String)> = state
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.first() == Some(&"route")).then(|| (f[1].to_string(), f[2].to_string()))
            })
            .collect();
        assert_eq!(recorded, want, "round {round}: state file is the view");
        assert!(
            !others.iter().any(|n| n.contains(".tmp")),
            "round {round}: temp files left: {others:?}"
        );
        let out = twilld::once(node, "check");
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn a_route_the_kernel_refuses_fails_alone_and_every_other_peer_of_the_view_is_routed() {
    let c = cluster();
    let node = c.node(0);
    // A subnet of the node whose link is down: the plane accepts the next hop (a node
    // address covers it), the kernel refuses the route (no route to the gateway).
    node.ns.ip(&[
        "link", "add", "twfx0", "type", "veth", "peer", "name", "twfx1",
    ]);
    node.ns.ip(&["addr", "add", "10.97.0.1/24", "dev", "twfx0"]);
    let mut view = c.peers(|_| true);
    view.as_array_mut()
        .expect("list")
        .push(json!({"nodeIP": "10.97.0.5", "podCIDR": "10.245.9.0/24"}));
    view.as_array_mut().expect("list").extend(
        big_view(200, 0, 0, "10.99")
            .as_array()
            .expect("list")
            .iter()
            .filter(|e| {
                // next hops 10.99.0.2..=10.99.0.201 are on the uplink's /24
                e["nodeIP"]
                    .as_str()
                    .is_some_and(|ip| ip.starts_with("10.99.0."))
            })
            .cloned(),
    );
    replace_file(&node.peers_file, &view.to_string());
    let out = twilld::once(node, "sync");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("could not install route 10.245.9.0/24 via 10.97.0.5"),
        "{err}"
    );
    let mut want = routes_of(&view);
    want.remove(&("10.245.9.0/24".to_string(), "10.97.0.5".to_string()));
    want.remove(&(pod_cidr4(0), node.ip.to_string()));
    assert_eq!(
        peer_routes(&node.ns),
        want,
        "{}",
        diff(&want, &peer_routes(&node.ns))
    );
    // Once the link is up, the next sync installs the one left.
    node.ns.ip(&["link", "set", "twfx1", "up"]);
    node.ns.ip(&["link", "set", "twfx0", "up"]);
    let out = twilld::once(node, "sync");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    want.insert(("10.245.9.0/24".to_string(), "10.97.0.5".to_string()));
    assert_eq!(peer_routes(&node.ns), want);
}

/// Writes `text` into `path` in place (same inode), as an editor without rename does.
fn write_in_place(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open the view in place");
    f.write_all(text.as_bytes())
        .expect("write the view in place");
}

#[test]
fn a_view_trusted_by_its_stamp_is_read_again_once_rewritten_in_place_with_the_same_size() {
    let c = cluster();
    let node = c.node(0);
    let sync = || {
        let out = twilld::once(node, "sync");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let stamped = || {
        let (states, _) = run_state(node, &c.net);
        assert!(
            states[0].lines().any(|l| l.starts_with("view ")),
            "no stamp recorded:\n{}",
            states[0].lines().take(4).collect::<Vec<_>>().join("\n")
        );
    };
    // A view that settled before it was read is recorded by its stamp: later passes trust
    // the stamp instead of reading the view.
    std::thread::sleep(Duration::from_millis(100));
    sync();
    assert_eq!(peer_routes(&node.ns), c.expected_peer_routes(0));
    stamped();
    sync();
    // Same inode, same size, one next hop changed.
    let text = c.peers(|_| true).to_string();
    let changed = text.replace("\"10.99.0.3\"", "\"10.99.0.4\"");
    assert_eq!(text.len(), changed.len());
    write_in_place(&node.peers_file, &changed);
    sync();
    let want: BTreeSet<_> = c
        .expected_peer_routes(0)
        .into_iter()
        .map(|(dst, gw)| {
            let gw = if gw == "10.99.0.3" {
                "10.99.0.4".into()
            } else {
                gw
            };
            (dst, gw)
        })
        .collect();
    assert_eq!(peer_routes(&node.ns), want);
    // And a route the kernel lost under a trusted stamp is still repaired.
    std::thread::sleep(Duration::from_millis(100));
    node.ns.ip(&["route", "del", &pod_cidr4(1)]);
    sync();
    stamped();
    node.ns.ip(&["route", "del", &pod_cidr4(1)]);
    sync();
    assert_eq!(peer_routes(&node.ns), want);
}
