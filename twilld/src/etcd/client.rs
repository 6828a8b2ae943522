//! The etcd client: unary gateway calls over one kept-alive connection, tried on each endpoint
//! in turn, with failures sorted into the `StoreError` the lease logic acts on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig as TlsConfig;
use serde_json::Value;

use super::endpoint::Endpoint;
use super::http::{Conn, Fail};
use super::watch::EtcdWatch;
use super::wire::{self, Verdict};
use super::{ClientConfig, tls};
use crate::store::{Kv, Store, StoreError, Watch};

/// Whether a call may change the store (its lost answer is ambiguous) or only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// A client of one etcd cluster over its v3 JSON gateway (see [`ClientConfig`]).
pub struct Client {
    endpoints: Vec<Endpoint>,
    tls: Option<Arc<TlsConfig>>,
    timeout: Duration,
    /// The endpoint that answered last: asked first next time.
    current: usize,
    /// The kept-alive connection and the endpoint it goes to.
    conn: Option<(usize, Conn)>,
}

impl Client {
    /// Validates the endpoints and loads the TLS files; connects only on the first request.
    /// A bad URL or an unreadable or invalid PEM file is `Refused`, naming it and the problem.
    pub fn new(cfg: &ClientConfig) -> Result<Client, StoreError> {
        if cfg.endpoints.is_empty() {
            return Err(StoreError::Refused("no etcd endpoint is configured".into()));
        }
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::Refused)?;
        if cfg.timeout.is_zero() {
            return Err(StoreError::Refused(
                "the etcd request timeout must not be 0".into(),
            ));
        }
        let tls = if cfg.ca_file.is_some() || endpoints.iter().any(|e| e.https) {
            let config = tls::config(
                cfg.ca_file.as_deref(),
                cfg.cert_file.as_deref(),
                cfg.key_file.as_deref(),
            )
            .map_err(StoreError::Refused)?;
            Some(config)
        } else if let Some(f) = cfg.cert_file.as_ref().or(cfg.key_file.as_ref()) {
            return Err(StoreError::Refused(format!(
                "{} is given for plain http endpoints: set ca_file or use https:// URLs",
                f.display()
            )));
        } else {
            None
        };
        Ok(Client {
            endpoints,
            tls,
            timeout: cfg.timeout,
            current: 0,
            conn: None,
        })
    }

    /// One exchange with endpoint `i` (connecting included) within the timeout, reusing the
    /// kept-alive connection when it is sound.
    fn exchange(&mut self, i: usize, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), Fail> {
        let ep = &self.endpoints[i];
        let deadline = Instant::now() + self.timeout;
        let kept = self.conn.take().filter(|(j, c)| *j == i && c.idle_ok());
        let mut conn = match kept {
            Some((_, mut c)) => match c.post(ep, path, body, false) {
                Ok(()) => c,
                // The kept connection broke while idle; nothing reached the server.
                Err(Fail::NotSent(_)) => self.fresh(i, path, body, deadline)?,
                Err(e) => return Err(e),
            },
            None => self.fresh(i, path, body, deadline)?,
        };
        let head = conn.head(deadline)?;
        let body = conn.body(&head, deadline)?;
        if conn.reusable {
            self.conn = Some((i, conn));
        }
        Ok((head.status, body))
    }

    /// A new connection to endpoint `i` with `body` posted to `path` on it.
    fn fresh(&self, i: usize, path: &str, body: &[u8], deadline: Instant) -> Result<Conn, Fail> {
        let ep = &self.endpoints[i];
        let mut conn = Conn::connect(ep, self.tls.as_ref(), deadline)?;
        conn.post(ep, path, body, false)?;
        Ok(conn)
    }

    /// POSTs `body` to `path` on each endpoint in turn (the last one that answered first)
    /// until one answers; the answer's JSON, or the `StoreError` the failures amount to.
    fn call(&mut self, path: &str, body: &Value, kind: Kind) -> Result<Value, StoreError> {
        let body = body.to_string().into_bytes();
        let n = self.endpoints.len();
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (self.current + k) % n;
            let url = self.endpoints[i].url.clone();
            match self.exchange(i, path, &body) {
                Ok((status, answer)) => {
                    let json: Value = match serde_json::from_slice(&answer) {
                        Ok(v) => v,
                        Err(e) if status == 200 => {
                            return Err(lost(kind, &url, &format!("{path}: bad JSON answer: {e}")));
                        }
                        Err(_) => Value::Null,
                    };
                    let error = wire::gateway_error(status, &json).or_else(|| {
                        (status != 200).then(|| wire::GatewayError {
                            status,
                            code: None,
                            message: String::from_utf8_lossy(&answer).trim().to_string(),
                        })
                    });
                    match error.map(|e| wire::classify(&e, kind == Kind::Write)) {
                        None => {
                            self.current = i;
                            return Ok(json);
                        }
                        Some(Verdict::NextEndpoint(m)) => failures.push(format!("{url}: {m}")),
                        Some(Verdict::Final(e)) => return Err(prefixed(e, &url, path)),
                    }
                }
                Err(Fail::NotSent(m)) => failures.push(format!("{url}: {m}")),
                Err(Fail::Lost(m)) if kind == Kind::Read => failures.push(format!("{url}: {m}")),
                Err(Fail::Lost(m)) => return Err(lost(kind, &url, &format!("{path}: {m}"))),
                Err(Fail::Tls(m)) => return Err(StoreError::Refused(format!("{url}: {m}"))),
            }
        }
        Err(StoreError::Unavailable(format!(
            "no etcd endpoint answered {path}: {}",
            failures.join("; ")
        )))
    }

    /// Interprets an answer; a malformed one is lost (ambiguous for a write).
    fn parse<T>(&self, kind: Kind, r: Result<T, String>) -> Result<T, StoreError> {
        r.map_err(|m| {
            let url = &self.endpoints[self.current].url;
            lost(kind, url, &format!("unexpected answer: {m}"))
        })
    }
}

/// A lost answer: ambiguous for a write, the member unavailable for a read.
fn lost(kind: Kind, url: &str, m: &str) -> StoreError {
    match kind {
        Kind::Write => StoreError::Ambiguous(format!("{url}: {m}")),
        Kind::Read => StoreError::Unavailable(format!("{url}: {m}")),
    }
}

/// `e` with the endpoint and call it came from.
fn prefixed(e: StoreError, url: &str, path: &str) -> StoreError {
    match e {
        StoreError::Ambiguous(m) => StoreError::Ambiguous(format!("{url}{path}: {m}")),
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{url}{path}: {m}")),
        StoreError::Refused(m) => StoreError::Refused(format!("{url}{path}: {m}")),
        c @ StoreError::Compacted(_) => c,
    }
}

impl Store for Client {
    fn get(&mut self, key: &str) -> Result<Option<Kv>, StoreError> {
        let r = self.call("/v3/kv/range", &wire::range(key, false), Kind::Read)?;
        let kv = match r
            .get("kvs")
            .and_then(Value::as_array)
            .and_then(|l| l.first())
        {
            None => Ok(None),
            Some(v) => wire::kv(v).map(Some),
        };
        self.parse(Kind::Read, kv)
    }

    fn list(&mut self, prefix: &str) -> Result<(Vec<Kv>, i64), StoreError> {
        let r = self.call("/v3/kv/range", &wire::range(prefix, true), Kind::Read)?;
        let kvs = r
            .get("kvs")
            .and_then(Value::as_array)
            .map(|l| l.iter().map(wire::kv).collect::<Result<Vec<_>, _>>())
            .unwrap_or(Ok(Vec::new()));
        let revision = r.get("header").ok_or_else(|| "no header".to_string());
        let revision = revision.and_then(|h| wire::int(h, "revision"));
        self.parse(Kind::Read, kvs.and_then(|k| Ok((k, revision?))))
    }

    fn create(&mut self, key: &str, value: &[u8], lease: i64) -> Result<bool, StoreError> {
        let r = self.call("/v3/kv/txn", &wire::create(key, value, lease), Kind::Write)?;
        Ok(r.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    fn put(&mut self, key: &str, value: &[u8], lease: i64) -> Result<(), StoreError> {
        self.call("/v3/kv/put", &wire::put(key, value, lease), Kind::Write)?;
        Ok(())
    }

    fn grant(&mut self, ttl: Duration) -> Result<i64, StoreError> {
        let secs = ttl.as_secs().max(1);
        let r = self.call(
            "/v3/lease/grant",
            &serde_json::json!({ "TTL": secs.to_string() }),
            Kind::Write,
        )?;
        if let Some(e) = r
            .get("error")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
        {
            return Err(StoreError::Refused(format!("lease grant: {e}")));
        }
        let id = wire::int(&r, "ID").and_then(|id| {
            if id == 0 {
                Err("the grant answer holds no lease ID".into())
            } else {
                Ok(id)
            }
        });
        self.parse(Kind::Write, id)
    }

    fn keepalive(&mut self, lease: i64) -> Result<Option<Duration>, StoreError> {
        let r = self.call(
            "/v3/lease/keepalive",
            &serde_json::json!({ "ID": lease.to_string() }),
            Kind::Read,
        )?;
        let ttl = match r.get("result") {
            Some(result) => wire::int(result, "TTL"),
            None => Err("a keepalive answer without result".into()),
        };
        let ttl = self.parse(Kind::Read, ttl)?;
        Ok((ttl > 0).then(|| Duration::from_secs(ttl as u64)))
    }

    fn watch(&mut self, prefix: &str, from_revision: i64) -> Result<Box<dyn Watch>, StoreError> {
        let body = wire::watch(prefix, from_revision).to_string().into_bytes();
        let n = self.endpoints.len();
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (self.current + k) % n;
            let ep = &self.endpoints[i];
            match EtcdWatch::open(ep, self.tls.as_ref(), self.timeout, &body) {
                Ok(w) => {
                    self.current = i;
                    return Ok(Box::new(w));
                }
                Err(Verdict::NextEndpoint(m)) => failures.push(format!("{}: {m}", ep.url)),
                Err(Verdict::Final(e)) => return Err(prefixed(e, &ep.url, "/v3/watch")),
            }
        }
        Err(StoreError::Unavailable(format!(
            "no etcd endpoint opened a watch: {}",
            failures.join("; ")
        )))
    }
}
