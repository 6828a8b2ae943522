//! The running lease: a thread that claims this node's subnet, keeps its lease alive, watches
//! everyone's leases and rewrites flannel's subnet file and twill's cluster view, and the
//! daemon's [`ViewFeed`] that wakes the poll loop after each write, so that a joining node is
//! applied at once.
//!
//! The thread never exits on a store problem: it says it once, backs off (200 ms doubling to
//! 5 s) and lists again; the files it wrote stay, so pods keep working. Shutdown keeps the
//! lease (a restart adopts it).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::claim::{Claimed, How, Me, claim, fits, our_record};
use super::config::NetConfig;
use super::files::{previous, subnet_env, view, write_if_changed};
use super::record::Record;
use super::say;
use super::subnet::{Subnets, config_key, subnets_prefix};
use crate::feed::{FileFeed, ViewFeed};
use crate::store::{Kv, Store, StoreError, WatchEvent};

/// Opens a client of the shared store (called again after a failure to open).
pub type StoreFactory = Box<dyn FnMut() -> Result<Box<dyn Store>, StoreError> + Send>;

/// The first wait after a failure.
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a fresh node's first pass waits for the first lease's files before it runs anyway
/// (etcd unreachable at start: the networks' own problems are reported then).
const FIRST_LEASE_WAIT: Duration = Duration::from_secs(10);
/// The longest the thread sleeps in a watch without looking at its stop signal (only tests
/// stop it; the daemon's process exit ends it).
const MAX_IDLE: Duration = if cfg!(test) {
    Duration::from_millis(100)
} else {
    Duration::from_secs(5)
};

/// What the lease thread needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// flannel's etcd prefix (`/coreos.com/network`).
    pub prefix: String,
    /// This node's public addresses.
    pub me: Me,
    /// The public interface's MTU.
    pub iface_mtu: u32,
    /// flannel's subnet file to write.
    pub subnet_file: PathBuf,
    /// twill's cluster view to write.
    pub view_file: PathBuf,
    /// The TTL of the lease; it is renewed every third of it.
    pub ttl: Duration,
    /// `FLANNEL_IPMASQ`.
    pub ip_masq: bool,
}

/// The daemon's view feed in etcd mode: the lease thread's wake-ups, and the same files as
/// [`FileFeed`] watched.
pub struct LeaseFeed {
    wake: UnixStream,
    /// flannel's subnet file this feed writes (absent until the first lease on a fresh node).
    subnet_file: PathBuf,
    /// Dropping it stops the thread at its next wake-up.
    #[cfg_attr(not(test), allow(dead_code))]
    stop: Option<Sender<()>>,
    #[cfg_attr(not(test), allow(dead_code))]
    thread: Option<JoinHandle<()>>,
}

impl LeaseFeed {
    /// Starts the lease thread.
    pub fn start(settings: Settings, factory: StoreFactory) -> std::io::Result<LeaseFeed> {
        let (wake, notify) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        notify.set_nonblocking(true)?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let subnet_file = settings.subnet_file.clone();
        let leaser = Leaser {
            s: settings,
            factory,
            store: None,
            cfg: None,
            own: None,
            leases: BTreeMap::new(),
            notify,
            stopped,
            problem: None,
            said_unread: BTreeSet::new(),
            next_renew: None,
            renew_failing: false,
        };
        let thread = std::thread::Builder::new()
            .name("twilld-lease".into())
            .spawn(move || leaser.run())?;
        Ok(LeaseFeed {
            wake,
            subnet_file,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the lease thread and waits for it (the lease is kept).
    #[cfg(test)]
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl ViewFeed for LeaseFeed {
    fn watched_files(&self, configs: &[&Value]) -> Vec<PathBuf> {
        FileFeed.watched_files(configs)
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.wake.as_fd())
    }

    fn first_files_within(&self) -> Option<Duration> {
        (!self.subnet_file.exists()).then_some(FIRST_LEASE_WAIT)
    }

    fn drain(&mut self) -> bool {
        let mut buf = [0u8; 64];
        let mut any = false;
        while let Ok(n) = self.wake.read(&mut buf) {
            if n == 0 {
                break;
            }
            any = true;
        }
        any
    }
}

/// How a round of the lease thread ended.
enum End {
    /// Told to stop.
    Stopped,
    /// Our key is gone or must be rewritten: list and claim again now.
    Again,
    /// A problem: say it, back off, list again.
    Failed(String),
}

struct Leaser {
    s: Settings,
    factory: StoreFactory,
    store: Option<Box<dyn Store>>,
    cfg: Option<NetConfig>,
    own: Option<Claimed>,
    leases: BTreeMap<String, Kv>,
    notify: UnixStream,
    stopped: Receiver<()>,
    /// The standing problem last said (said again only when it changes).
    problem: Option<String>,
    said_unread: BTreeSet<(String, String)>,
    next_renew: Option<Instant>,
    renew_failing: bool,
}

/// A random number from the kernel (/dev/urandom), for the random subnet choice.
fn random() -> u64 {
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_ne_bytes(b),
        // No urandom: the clock and pid still spread nodes apart.
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ (u64::from(std::process::id()) << 32)
        }
    }
}

impl Leaser {
    fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut again = 0;
        loop {
            match self.round(&mut backoff) {
                End::Stopped => return,
                End::Again if again < 3 => {
                    again += 1;
                    continue;
                }
                End::Again => {}
                End::Failed(p) => {
                    if self.problem.as_deref() != Some(p.as_str()) {
                        say(&format!("etcd: {p} (retrying)"));
                        self.problem = Some(p);
                    }
                }
            }
            again = 0;
            match self.stopped.recv_timeout(backoff) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn stop_asked(&self) -> bool {
        !matches!(self.stopped.try_recv(), Err(TryRecvError::Empty))
    }

    fn round(&mut self, backoff: &mut Duration) -> End {
        if self.stop_asked() {
            return End::Stopped;
        }
        let mut store = match self.store.take() {
            Some(s) => s,
            None => match (self.factory)() {
                Ok(s) => s,
                Err(e) => return End::Failed(format!("cannot open a client: {e}")),
            },
        };
        let end = self.with_store(&mut *store, backoff);
        self.store = Some(store);
        end
    }

    fn with_store(&mut self, store: &mut dyn Store, backoff: &mut Duration) -> End {
        let prefix = self.s.prefix.clone();
        let key = config_key(&prefix);
        let cfg = match store.get(&key) {
            Ok(Some(kv)) => match NetConfig::parse(&kv.value) {
                Ok(c) => c,
                Err(e) => return End::Failed(format!("flannel network config {key}: {e}")),
            },
            Ok(None) => {
                return End::Failed(format!(
                    "no flannel network config at {key}: write one, e.g. etcdctl put {key} \
                     '{{\"Network\":\"10.244.0.0/16\",\"Backend\":{{\"Type\":\"vxlan\"}}}}'"
                ));
            }
            Err(e) => return End::Failed(format!("cannot read {key}: {e}")),
        };
        if let Some(own) = &self.own
            && !fits(&cfg, &own.subnets)
        {
            say(&format!(
                "subnet {} no longer fits the network config: claiming another",
                own.subnets.describe()
            ));
            self.own = None;
        }
        self.cfg = Some(cfg.clone());
        let (kvs, rev) = match store.list(&subnets_prefix(&prefix)) {
            Ok(l) => l,
            Err(e) => return End::Failed(format!("cannot list the subnet leases: {e}")),
        };
        self.leases = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        let ours = our_record(&cfg, &self.s.me).to_bytes();
        let held = self
            .own
            .as_ref()
            .is_some_and(|o| self.leases.get(&o.key).is_some_and(|kv| kv.value == ours));
        if !held {
            let before = self.own.as_ref().map(|o| o.subnets);
            let prev = before.or_else(|| previous(&self.s.subnet_file));
            let c = match claim(
                store,
                &prefix,
                &cfg,
                &self.s.me,
                prev,
                self.s.ttl,
                &mut random,
            ) {
                Ok(c) => c,
                Err(e) => return End::Failed(e),
            };
            if c.how != How::Adopted || before != Some(c.subnets) {
                let how = match c.how {
                    How::Adopted => "adopted the live lease",
                    How::Reservation => "took the reservation",
                    How::Previous => "reclaimed the subnet file's subnet",
                    How::Random => "leased a free subnet",
                };
                say(&format!(
                    "lease: {how} {} ({}, public IP {})",
                    c.subnets.describe(),
                    c.key,
                    self.s.me.ip
                ));
            }
            self.next_renew = (c.lease != 0).then(|| Instant::now() + self.s.ttl / 3);
            self.own = Some(c);
            return End::Again;
        }
        self.publish();
        if let Some(end) = self.renew(store) {
            return end;
        }
        let mut watch = match store.watch(&subnets_prefix(&prefix), rev + 1) {
            Ok(w) => w,
            Err(e) => return End::Failed(format!("cannot watch the subnet leases: {e}")),
        };
        if self.problem.take().is_some() {
            say("etcd: working again");
        }
        *backoff = MIN_BACKOFF;
        loop {
            if self.stop_asked() {
                return End::Stopped;
            }
            let now = Instant::now();
            let wait = self
                .next_renew
                .map_or(MAX_IDLE, |t| t.saturating_duration_since(now))
                .min(MAX_IDLE);
            match watch.next(wait) {
                Ok(Some(events)) => {
                    if let Some(end) = self.apply(events, &ours) {
                        return end;
                    }
                    self.publish();
                }
                Ok(None) => {}
                Err(StoreError::Compacted(r)) => {
                    return End::Failed(format!(
                        "the watch lost history (compacted up to revision {r}): listing again"
                    ));
                }
                Err(e) => return End::Failed(format!("the watch ended: {e}")),
            }
            if let Some(end) = self.renew(store) {
                return end;
            }
        }
    }

    /// Keeps our lease alive when its renewal is due; an end when it is lost.
    fn renew(&mut self, store: &mut dyn Store) -> Option<End> {
        let own = self.own.as_ref()?;
        self.next_renew.filter(|t| Instant::now() >= *t)?;
        match store.keepalive(own.lease) {
            Ok(Some(_)) => {
                if std::mem::take(&mut self.renew_failing) {
                    say(&format!("lease: renewed {} again", own.subnets.describe()));
                }
                self.next_renew = Some(Instant::now() + self.s.ttl / 3);
                None
            }
            Ok(None) => {
                say(&format!(
                    "lease: the lease of {} expired: claiming again",
                    own.subnets.describe()
                ));
                Some(End::Again)
            }
            Err(e) => {
                if !self.renew_failing {
                    say(&format!(
                        "lease: renewing {} failed: {e} (retrying)",
                        own.subnets.describe()
                    ));
                    self.renew_failing = true;
                }
                self.next_renew =
                    Some(Instant::now() + (self.s.ttl / 3).min(Duration::from_secs(1)));
                None
            }
        }
    }

    /// Applies watched events to the leases; an end when our own key was lost.
    fn apply(&mut self, events: Vec<WatchEvent>, ours: &[u8]) -> Option<End> {
        let own_key = self.own.as_ref().map(|o| o.key.clone()).unwrap_or_default();
        let name = |key: &str| {
            key.strip_prefix(&subnets_prefix(&self.s.prefix))
                .and_then(Subnets::parse_key_name)
                .map_or_else(|| key.to_string(), |s| s.describe())
        };
        let mut lost = None;
        for e in events {
            match e {
                WatchEvent::Put(kv) => {
                    if kv.key == own_key {
                        if kv.value != ours {
                            lost = Some(format!(
                                "lease: our key {own_key} was overwritten: claiming again"
                            ));
                        }
                    } else {
                        let ip = Record::parse(&kv.value).map_or_else(
                            |_| "an unreadable value".to_string(),
                            |r| r.public_ip.to_string(),
                        );
                        match self.leases.get(&kv.key) {
                            None => say(&format!("lease: node {ip} joined with {}", name(&kv.key))),
                            Some(old) if old.value != kv.value => say(&format!(
                                "lease: node {ip} changed its lease of {}",
                                name(&kv.key)
                            )),
                            Some(_) => {}
                        }
                    }
                    self.leases.insert(kv.key.clone(), kv);
                }
                WatchEvent::Delete { key, .. } => {
                    let old = self.leases.remove(&key);
                    if key == own_key {
                        lost = Some(format!(
                            "lease: our key {own_key} was deleted (by a person, or the lease \
                             ran out): claiming again"
                        ));
                    } else if let Some(old) = old {
                        let ip = Record::parse(&old.value)
                            .map_or_else(|_| "?".to_string(), |r| r.public_ip.to_string());
                        say(&format!("lease: node {ip} left ({})", name(&key)));
                    }
                }
            }
        }
        lost.map(|m| {
            say(&m);
            End::Again
        })
    }

    /// Writes the subnet file and the view when they changed, and wakes the daemon.
    fn publish(&mut self) {
        let (Some(cfg), Some(own)) = (&self.cfg, &self.own) else {
            return;
        };
        let env = subnet_env(cfg, &own.subnets, self.s.iface_mtu, self.s.ip_masq);
        let (text, unread) = view(&self.s.prefix, &self.leases);
        let now: BTreeSet<(String, String)> =
            unread.into_iter().map(|u| (u.key, u.reason)).collect();
        for (key, reason) in now.difference(&self.said_unread) {
            say(&format!("lease: {key} skipped: {reason}"));
        }
        self.said_unread = now;
        let mut changed = false;
        for (path, content) in [(&self.s.subnet_file, env), (&self.s.view_file, text)] {
            match write_if_changed(path, &content) {
                Ok(c) => changed |= c,
                Err(e) => say(&format!("error: cannot write {}: {e}", path.display())),
            }
        }
        if changed {
            // A full socket buffer already means "wake up".
            let _ = (&self.notify).write(&[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::claim::claim;
    use crate::lease::memstore::{MemStore, Op};
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::net::Ipv4Addr;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const P: &str = "/coreos.com/network";
    const CONFIG: &[u8] = br#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
    const LIMIT: Duration = Duration::from_secs(10);

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("twilld-lease-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn me(last: u8) -> Me {
        Me {
            ip: Ipv4Addr::new(10, 0, 0, last),
            ipv6: None,
        }
    }

    fn settings(d: &Dir, last: u8, ttl: Duration) -> Settings {
        Settings {
            prefix: P.into(),
            me: me(last),
            iface_mtu: 1500,
            subnet_file: d.0.join("subnet.env"),
            view_file: d.0.join("cluster.json"),
            ttl,
            ip_masq: false,
        }
    }

    fn start(m: &MemStore, s: Settings) -> LeaseFeed {
        let m = m.clone();
        LeaseFeed::start(s, Box::new(move || Ok(m.client()))).unwrap()
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    /// Waits on the feed's descriptor (as the daemon does) until `cond` holds; true when it did.
    fn woken_until(feed: &mut LeaseFeed, cond: impl Fn() -> bool) -> bool {
        let end = Instant::now() + LIMIT;
        loop {
            if cond() {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = [PollFd::new(feed.fd().unwrap(), PollFlags::POLLIN)];
            let _ = poll(
                &mut fds,
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
            );
            feed.drain();
        }
    }

    fn own_key(m: &MemStore, last: u8) -> Option<Kv> {
        m.snapshot()
            .into_values()
            .find(|kv| Record::parse(&kv.value).is_ok_and(|r| r.public_ip == me(last).ip))
    }

    fn peer_value(last: u8) -> Vec<u8> {
        Record::ours(
            me(last).ip,
            None,
            crate::lease::config::BackendKind::Vxlan,
            1,
        )
        .to_bytes()
    }

    #[test]
    fn the_feed_leases_writes_both_files_and_wakes_the_daemon_when_nodes_join_and_leave() {
        let d = dir("join");
        let m = MemStore::new();
        m.put_raw(&config_key(P), CONFIG, 0);
        let s = settings(&d, 1, Duration::from_secs(30));
        let (env, view) = (s.subnet_file.clone(), s.view_file.clone());
        let mut feed = start(&m, s);
        assert!(woken_until(&mut feed, || read(&view).contains("\"10.0.0.1\"")));
        let own = own_key(&m, 1).unwrap();
        let subnets = Subnets::parse_key_name(own.key.rsplit('/').next().unwrap()).unwrap();
        assert_eq!(
            read(&env),
            format!(
                "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={}/24\nFLANNEL_MTU=1450\n\
                 FLANNEL_IPMASQ=false\n",
                Ipv4Addr::from(u32::from(subnets.v4.network()) + 1)
            )
        );
        // Another node joins: it is in the view at once, with its VTEP MAC.
        let cfg = NetConfig::parse(CONFIG).unwrap();
        let c2 = claim(
            &mut *m.client(),
            P,
            &cfg,
            &me(2),
            None,
            Duration::from_secs(30),
            &mut || 7,
        )
        .unwrap();
        let mac2 = twill::node::vxlan::vtep_mac(1, "10.0.0.2".parse().unwrap());
        assert!(woken_until(&mut feed, || read(&view).contains(&format!(
            "{{\"nodeIP\":\"10.0.0.2\",\"podCIDR\":\"{}\",\"vtepMAC\":\"{mac2}\"}}",
            c2.subnets.v4
        ))));
        // It leaves: gone from the view, our own entry stays.
        m.delete(&c2.key);
        assert!(woken_until(&mut feed, || !read(&view).contains("10.0.0.2")));
        assert!(read(&view).contains("\"10.0.0.1\""));
        feed.stop();
        assert!(own_key(&m, 1).is_some(), "stopping keeps the lease");
    }

    #[test]
    fn our_key_deleted_is_claimed_again_with_the_same_subnet() {
        let d = dir("deleted");
        let m = MemStore::new();
        m.put_raw(&config_key(P), CONFIG, 0);
        let mut feed = start(&m, settings(&d, 1, Duration::from_secs(30)));
        assert!(m.wait_for(LIMIT, |kvs| kvs.len() == 2));
        let first = own_key(&m, 1).unwrap();
        m.delete(&first.key);
        assert!(m.wait_for(LIMIT, |kvs| {
            kvs.get(&first.key)
                .is_some_and(|kv| kv.mod_revision > first.mod_revision)
        }));
        let again = own_key(&m, 1).unwrap();
        assert_eq!(again.key, first.key);
        assert_ne!(again.lease, 0);
        assert!(woken_until(&mut feed, || read(&d.0.join("cluster.json"))
            .contains("10.0.0.1")));
        feed.stop();
    }

    #[test]
    fn an_expired_lease_is_claimed_again_under_a_new_lease_with_the_same_subnet() {
        let d = dir("expired");
        let m = MemStore::new();
        m.put_raw(&config_key(P), CONFIG, 0);
        let feed = start(&m, settings(&d, 1, Duration::from_millis(600)));
        assert!(m.wait_for(LIMIT, |kvs| kvs.len() == 2));
        let first = own_key(&m, 1).unwrap();
        // Renewed every third of the TTL.
        assert!(m.wait_requests(Op::Keepalive, 3, LIMIT));
        m.expire(first.lease);
        assert!(m.wait_for(LIMIT, |kvs| {
            kvs.get(&first.key)
                .is_some_and(|kv| kv.lease != first.lease)
        }));
        assert_eq!(m.requests(Op::Grant), 2);
        feed.stop();
    }

    #[test]
    fn a_restart_adopts_the_live_lease_even_without_the_subnet_file() {
        let d = dir("restart");
        let m = MemStore::new();
        m.put_raw(&config_key(P), CONFIG, 0);
        let mut feed = start(&m, settings(&d, 1, Duration::from_secs(30)));
        assert!(woken_until(&mut feed, || d.0.join("subnet.env").exists()));
        feed.stop();
        let first = own_key(&m, 1).unwrap();
        std::fs::remove_file(d.0.join("subnet.env")).unwrap();
        let mut feed = start(&m, settings(&d, 1, Duration::from_secs(30)));
        assert!(woken_until(&mut feed, || d.0.join("subnet.env").exists()));
        assert_eq!(
            own_key(&m, 1).unwrap(),
            first,
            "same key, same lease, same value"
        );
        assert_eq!(m.requests(Op::Grant), 1);
        feed.stop();
    }

    #[test]
    fn a_broken_or_compacted_watch_is_survived_by_listing_again() {
        let d = dir("watch");
        let m = MemStore::new();
        m.put_raw(&config_key(P), CONFIG, 0);
        let view = d.0.join("cluster.json");
        let mut feed = start(&m, settings(&d, 1, Duration::from_secs(30)));
        assert!(woken_until(&mut feed, || read(&view).contains("10.0.0.1")));
        let lists = m.requests(Op::List);
        m.fail_next(
            Op::WatchNext,
            StoreError::Unavailable("no leader".into()),
            false,
        );
        m.put_raw(&format!("{P}/subnets/10.244.200.0-24"), &peer_value(2), 0);
        assert!(woken_until(&mut feed, || read(&view).contains("10.0.0.2")));
        assert!(m.wait_requests(Op::List, lists + 1, LIMIT), "listed again");
        assert!(m.wait_requests(Op::WatchNext, m.requests(Op::WatchNext) + 1, LIMIT));
        m.fail_next(Op::WatchNext, StoreError::Compacted(3), false);
        m.put_raw(&format!("{P}/subnets/10.244.201.0-24"), &peer_value(3), 0);
        assert!(woken_until(&mut feed, || read(&view).contains("10.0.0.3")));
        assert!(m.wait_requests(Op::List, lists + 2, LIMIT), "listed again");
        m.put_raw(&format!("{P}/subnets/10.244.202.0-24"), &peer_value(4), 0);
        assert!(woken_until(&mut feed, || read(&view).contains("10.0.0.4")));
        feed.stop();
    }

    #[test]
    fn a_garbage_lease_is_skipped_and_the_others_still_applied() {
        let d = dir("garbage");
        let m = MemStore::new();
        m.put_raw(&config_key(P), CONFIG, 0);
        m.put_raw(&format!("{P}/subnets/10.244.100.0-24"), b"{not json", 0);
        m.put_raw(&format!("{P}/subnets/10.244.101.0-24"), &peer_value(2), 0);
        let view = d.0.join("cluster.json");
        let mut feed = start(&m, settings(&d, 1, Duration::from_secs(30)));
        assert!(woken_until(&mut feed, || read(&view).contains("10.0.0.1")));
        let text = read(&view);
        assert!(text.contains("10.0.0.2"), "{text}");
        assert!(!text.contains("10.244.100.0"), "{text}");
        // Its subnet is still taken.
        assert!(!own_key(&m, 1).unwrap().key.ends_with("10.244.100.0-24"));
        m.put_raw(&format!("{P}/subnets/10.244.102.0-24"), b"[]", 0);
        m.put_raw(&format!("{P}/subnets/10.244.103.0-24"), &peer_value(3), 0);
        assert!(woken_until(&mut feed, || read(&view).contains("10.0.0.3")));
        feed.stop();
    }

    #[test]
    fn files_are_not_rewritten_when_nothing_changed() {
        let d = dir("unchanged");
        let m = MemStore::new();
        m.put_raw(&config_key(P), CONFIG, 0);
        m.put_raw(&format!("{P}/subnets/10.244.101.0-24"), &peer_value(2), 0);
        let (env, view) = (d.0.join("subnet.env"), d.0.join("cluster.json"));
        let mut feed = start(&m, settings(&d, 1, Duration::from_millis(600)));
        assert!(woken_until(&mut feed, || read(&view).contains("10.0.0.1")));
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = (ino(&env), ino(&view));
        // A peer rewrites its lease with the same value; our lease is renewed twice.
        m.put_raw(&format!("{P}/subnets/10.244.101.0-24"), &peer_value(2), 0);
        let k = m.requests(Op::Keepalive);
        assert!(m.wait_requests(Op::Keepalive, k + 2, LIMIT));
        assert_eq!((ino(&env), ino(&view)), before);
        feed.drain();
        assert!(!feed.drain(), "no wake-up without a change");
        feed.stop();
    }

    #[test]
    fn etcd_unreachable_at_start_leaves_the_files_and_is_retried() {
        let d = dir("unreachable");
        let m = MemStore::new();
        m.put_raw(&config_key(P), CONFIG, 0);
        let env = d.0.join("subnet.env");
        let old = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.4.1/24\nFLANNEL_MTU=1450\n\
                   FLANNEL_IPMASQ=false\n";
        std::fs::write(&env, old).unwrap();
        let tries = Arc::new(AtomicUsize::new(0));
        let (m2, t2) = (m.clone(), tries.clone());
        let feed = LeaseFeed::start(
            settings(&d, 1, Duration::from_secs(30)),
            Box::new(move || {
                if t2.fetch_add(1, Ordering::SeqCst) < 2 {
                    assert_eq!(std::fs::read_to_string(&env).unwrap(), old);
                    Err(StoreError::Unavailable("connection refused".into()))
                } else {
                    Ok(m2.client())
                }
            }),
        )
        .unwrap();
        assert!(m.wait_for(LIMIT, |kvs| kvs.len() == 2));
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert!(
            own_key(&m, 1).unwrap().key.ends_with("/10.244.4.0-24"),
            "the subnet file's"
        );
        feed.stop();
    }

    #[test]
    fn without_a_network_config_nothing_is_claimed_until_one_is_written() {
        let d = dir("noconfig");
        let m = MemStore::new();
        let feed = start(&m, settings(&d, 1, Duration::from_secs(30)));
        assert!(m.wait_requests(Op::Get, 2, LIMIT));
        assert!(m.snapshot().is_empty());
        assert!(!d.0.join("cluster.json").exists());
        m.put_raw(&config_key(P), CONFIG, 0);
        assert!(m.wait_for(LIMIT, |kvs| kvs.len() == 2));
        feed.stop();
    }
}
