//! The shared key-value store that twilld leases the node's pod subnet in (etcd), as the lease
//! logic sees it: a few requests and a watch. `crate::etcd::Client` implements it over etcd's
//! JSON gateway; tests use an in-memory store.

use std::time::Duration;

/// One key and its value as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The full key (`/coreos.com/network/subnets/10.244.3.0-24`).
    pub key: String,
    /// The raw value (flannel's lease JSON for a subnet key).
    pub value: Vec<u8>,
    /// The store revision that created the key (0 never: a listed key exists).
    pub create_revision: i64,
    /// The store revision of the key's last change.
    pub mod_revision: i64,
    /// The lease the key is bound to; 0 for a key without a lease (a reservation).
    pub lease: i64,
}

/// Why a store request failed, as the caller must treat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The request was sent but its outcome is unknown (timed out, connection lost after
    /// sending): it may have been applied. List again before deciding.
    Ambiguous(String),
    /// No member could be reached or none has a leader; nothing was applied. Retry later.
    Unavailable(String),
    /// A watch asked for history that was compacted away (the oldest revision still kept):
    /// list again, then watch from the list's revision + 1.
    Compacted(i64),
    /// The store refused the request (bad request, permission); retrying will not help.
    Refused(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Ambiguous(m) => write!(f, "outcome unknown: {m}"),
            StoreError::Unavailable(m) => write!(f, "store unavailable: {m}"),
            StoreError::Compacted(r) => write!(f, "history compacted up to revision {r}"),
            StoreError::Refused(m) => write!(f, "refused by the store: {m}"),
        }
    }
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed (a lease written or renewed with a new value).
    Put(Kv),
    /// The key was deleted or its lease expired.
    Delete {
        /// The deleted key.
        key: String,
        /// The revision of the deletion.
        mod_revision: i64,
    },
}

/// The requests the lease logic makes. Every call is bounded in time by the implementation.
pub trait Store: Send {
    /// The value of `key`, or None when absent.
    fn get(&mut self, key: &str) -> Result<Option<Kv>, StoreError>;
    /// Every key under `prefix` (in key order) and the store's revision at that read.
    fn list(&mut self, prefix: &str) -> Result<(Vec<Kv>, i64), StoreError>;
    /// Creates `key` with `value` bound to `lease` (0: no lease) only if it does not exist
    /// (one transaction). True when created, false when the key already existed.
    fn create(&mut self, key: &str, value: &[u8], lease: i64) -> Result<bool, StoreError>;
    /// Writes `key` unconditionally, bound to `lease` (0: no lease).
    fn put(&mut self, key: &str, value: &[u8], lease: i64) -> Result<(), StoreError>;
    /// Grants a lease of `ttl` (whole seconds, at least 1) and returns its ID.
    fn grant(&mut self, ttl: Duration) -> Result<i64, StoreError>;
    /// Renews `lease`; its TTL left after the renewal, or None when the lease no longer exists.
    fn keepalive(&mut self, lease: i64) -> Result<Option<Duration>, StoreError>;
    /// Watches every key under `prefix` from `from_revision` on (the list's revision + 1),
    /// requiring a leader (a member cut off from the quorum ends the watch, it never hangs).
    fn watch(&mut self, prefix: &str, from_revision: i64) -> Result<Box<dyn Watch>, StoreError>;
}

/// An open watch stream.
pub trait Watch: Send {
    /// The next events, or Ok(None) when `timeout` passed with none. An error ends the watch:
    /// `Compacted` and `Unavailable` mean list again and watch anew.
    fn next(&mut self, timeout: Duration) -> Result<Option<Vec<WatchEvent>>, StoreError>;
}
