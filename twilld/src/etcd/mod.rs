//! twilld's etcd client: the `Store` the lease logic uses, over etcd's v3 JSON gateway
//! (`/v3/kv/range`, `/v3/kv/put`, `/v3/kv/txn`, `/v3/lease/grant`, `/v3/lease/keepalive`,
//! `/v3/watch`) with a small synchronous HTTP/1.1 client, plain or TLS (rustls, ring), with
//! client-certificate authentication.
//!
//! Unary calls share one kept-alive connection; each watch has its own. Endpoints are tried in
//! turn: a failure before the request was sent, or any failure of a read, moves on to the next;
//! a write whose answer was lost is `Ambiguous` at once.

mod base64;
mod chunked;
mod client;
mod endpoint;
mod http;
mod jsonstream;
mod tls;
mod watch;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

pub use client::Client;

/// How to reach the etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Client URLs (`http://10.0.0.5:2379`, `https://...`), tried in turn.
    pub endpoints: Vec<String>,
    /// PEM CA bundle that signs the members' certificates; when set (or any endpoint is
    /// https) TLS is used.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for client-certificate authentication.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, RSA or EC).
    pub key_file: Option<PathBuf>,
    /// Bound on each request (and on connecting).
    pub timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            ca_file: None,
            cert_file: None,
            key_file: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// HTTP requests sent to etcd by this process so far (every client, every endpoint).
pub fn requests_sent() -> u64 {
    http::requests_sent()
}
