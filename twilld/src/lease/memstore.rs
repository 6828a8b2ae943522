//! An in-memory [`Store`] for tests: keys, revisions and leases behind one lock, shared by every
//! handle (like clients of one etcd); leases expire when the test says so; a watch replays the
//! history; errors (compaction, a lost leader, an ambiguous write) are injected per request
//! kind.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::store::{Kv, Store, StoreError, Watch, WatchEvent};

/// Which request an injected error answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`Store::get`].
    Get,
    /// [`Store::list`].
    List,
    /// [`Store::create`].
    Create,
    /// [`Store::put`].
    Put,
    /// [`Store::grant`].
    Grant,
    /// [`Store::keepalive`].
    Keepalive,
    /// [`Store::watch`].
    Watch,
    /// [`Watch::next`].
    WatchNext,
}

/// An injected failure: the error, and whether the request is applied before it is returned
/// (an ambiguous write that did happen).
#[derive(Debug, Clone)]
struct Fault {
    op: Op,
    err: StoreError,
    applied: bool,
}

#[derive(Default)]
struct State {
    rev: i64,
    kvs: BTreeMap<String, Kv>,
    leases: BTreeMap<i64, Duration>,
    next_lease: i64,
    history: Vec<(i64, WatchEvent)>,
    faults: VecDeque<Fault>,
    requests: BTreeMap<String, usize>,
    race: Option<(String, Vec<u8>)>,
}

/// A handle on the shared in-memory store.
#[derive(Clone, Default)]
pub struct MemStore {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().unwrap();
        let out = f(&mut s);
        cv.notify_all();
        out
    }

    /// Makes the next request of kind `op` fail with `err`; `applied`: the request is carried
    /// out before the error is returned.
    pub fn fail_next(&self, op: Op, err: StoreError, applied: bool) {
        self.with(|s| s.faults.push_back(Fault { op, err, applied }));
    }

    /// Has another node write `key` just before the next create is carried out (a lost race).
    pub fn race_next_create(&self, key: &str, value: &[u8]) {
        self.with(|s| s.race = Some((key.into(), value.to_vec())));
    }

    /// Writes `key` as a person or another client would (`lease` 0: a reservation).
    pub fn put_raw(&self, key: &str, value: &[u8], lease: i64) {
        self.with(|s| s.put(key, value, lease));
    }

    /// Deletes `key` as a person would.
    pub fn delete(&self, key: &str) {
        self.with(|s| s.delete(key));
    }

    /// Ends `lease` as its TTL running out would: its keys are deleted.
    pub fn expire(&self, lease: i64) {
        self.with(|s| {
            s.leases.remove(&lease);
            let keys: Vec<String> = s
                .kvs
                .values()
                .filter(|kv| kv.lease == lease)
                .map(|kv| kv.key.clone())
                .collect();
            for k in keys {
                s.delete(&k);
            }
        });
    }

    /// Every key and value now.
    pub fn snapshot(&self) -> BTreeMap<String, Kv> {
        self.with(|s| s.kvs.clone())
    }

    /// How many requests of kind `op` were made.
    pub fn requests(&self, op: Op) -> usize {
        self.with(|s| s.requests.get(&format!("{op:?}")).copied().unwrap_or(0))
    }

    /// Waits (bounded) until `pred` holds on the keys; true when it did.
    pub fn wait_for(&self, limit: Duration, pred: impl Fn(&BTreeMap<String, Kv>) -> bool) -> bool {
        let (lock, cv) = &*self.inner;
        let end = Instant::now() + limit;
        let mut s = lock.lock().unwrap();
        loop {
            if pred(&s.kvs) {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = cv.wait_timeout(s, left).unwrap().0;
        }
    }

    /// Waits (bounded) until `op` was requested at least `n` times; true when it was.
    pub fn wait_requests(&self, op: Op, n: usize, limit: Duration) -> bool {
        let (lock, cv) = &*self.inner;
        let end = Instant::now() + limit;
        let mut s = lock.lock().unwrap();
        let key = format!("{op:?}");
        loop {
            if s.requests.get(&key).copied().unwrap_or(0) >= n {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = cv.wait_timeout(s, left).unwrap().0;
        }
    }

    /// A boxed client handle, as the lease feed's factory returns.
    pub fn client(&self) -> Box<dyn Store> {
        Box::new(self.clone())
    }
}

impl State {
    fn put(&mut self, key: &str, value: &[u8], lease: i64) {
        self.rev += 1;
        let create_revision = self.kvs.get(key).map_or(self.rev, |kv| kv.create_revision);
        let kv = Kv {
            key: key.into(),
            value: value.to_vec(),
            create_revision,
            mod_revision: self.rev,
            lease,
        };
        self.kvs.insert(key.into(), kv.clone());
        self.history.push((self.rev, WatchEvent::Put(kv)));
    }

    fn delete(&mut self, key: &str) {
        if self.kvs.remove(key).is_some() {
            self.rev += 1;
            self.history.push((
                self.rev,
                WatchEvent::Delete {
                    key: key.into(),
                    mod_revision: self.rev,
                },
            ));
        }
    }

    /// Counts the request; the injected fault for it, if any.
    fn fault(&mut self, op: Op) -> Option<Fault> {
        *self.requests.entry(format!("{op:?}")).or_default() += 1;
        let at = self.faults.iter().position(|f| f.op == op)?;
        self.faults.remove(at)
    }
}

/// Runs `apply` unless a fault says otherwise; returns the fault's error if any.
fn guarded<T>(
    s: &mut State,
    op: Op,
    apply: impl FnOnce(&mut State) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match s.fault(op) {
        None => apply(s),
        Some(f) => {
            if f.applied {
                let _ = apply(s);
            }
            Err(f.err)
        }
    }
}

impl Store for MemStore {
    fn get(&mut self, key: &str) -> Result<Option<Kv>, StoreError> {
        self.with(|s| guarded(s, Op::Get, |s| Ok(s.kvs.get(key).cloned())))
    }

    fn list(&mut self, prefix: &str) -> Result<(Vec<Kv>, i64), StoreError> {
        self.with(|s| {
            guarded(s, Op::List, |s| {
                let kvs = s
                    .kvs
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(_, v)| v.clone())
                    .collect();
                Ok((kvs, s.rev))
            })
        })
    }

    fn create(&mut self, key: &str, value: &[u8], lease: i64) -> Result<bool, StoreError> {
        self.with(|s| {
            if let Some((k, v)) = s.race.take() {
                s.put(&k, &v, 0);
            }
            guarded(s, Op::Create, |s| {
                if s.kvs.contains_key(key) {
                    return Ok(false);
                }
                if lease != 0 && !s.leases.contains_key(&lease) {
                    return Err(StoreError::Refused(format!("lease {lease} not found")));
                }
                s.put(key, value, lease);
                Ok(true)
            })
        })
    }

    fn put(&mut self, key: &str, value: &[u8], lease: i64) -> Result<(), StoreError> {
        self.with(|s| {
            guarded(s, Op::Put, |s| {
                if lease != 0 && !s.leases.contains_key(&lease) {
                    return Err(StoreError::Refused(format!("lease {lease} not found")));
                }
                s.put(key, value, lease);
                Ok(())
            })
        })
    }

    fn grant(&mut self, ttl: Duration) -> Result<i64, StoreError> {
        self.with(|s| {
            guarded(s, Op::Grant, |s| {
                s.next_lease += 1;
                let id = 0x1000 + s.next_lease;
                s.leases.insert(id, ttl);
                Ok(id)
            })
        })
    }

    fn keepalive(&mut self, lease: i64) -> Result<Option<Duration>, StoreError> {
        self.with(|s| guarded(s, Op::Keepalive, |s| Ok(s.leases.get(&lease).copied())))
    }

    fn watch(&mut self, prefix: &str, from_revision: i64) -> Result<Box<dyn Watch>, StoreError> {
        let store = self.clone();
        self.with(|s| {
            guarded(s, Op::Watch, |_| {
                Ok(Box::new(MemWatch {
                    store,
                    prefix: prefix.into(),
                    next: from_revision,
                }) as Box<dyn Watch>)
            })
        })
    }
}

struct MemWatch {
    store: MemStore,
    prefix: String,
    next: i64,
}

impl Watch for MemWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<Vec<WatchEvent>>, StoreError> {
        let (lock, cv) = &*self.store.inner;
        let end = Instant::now() + timeout;
        let mut s = lock.lock().unwrap();
        let fault = s.fault(Op::WatchNext);
        cv.notify_all();
        if let Some(f) = fault {
            return Err(f.err);
        }
        loop {
            let events: Vec<WatchEvent> = s
                .history
                .iter()
                .filter(|(rev, _)| *rev >= self.next)
                .map(|(_, e)| e.clone())
                .filter(|e| match e {
                    WatchEvent::Put(kv) => kv.key.starts_with(&self.prefix),
                    WatchEvent::Delete { key, .. } => key.starts_with(&self.prefix),
                })
                .collect();
            self.next = s.rev + 1;
            if !events.is_empty() {
                return Ok(Some(events));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            s = cv.wait_timeout(s, left).unwrap().0;
        }
    }
}
