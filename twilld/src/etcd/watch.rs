//! A watch: its own connection carrying one gateway watch stream (an endless chunked body of
//! `{"result":{..}}` objects), opened with etcd's require-leader metadata so that a member cut
//! off from its quorum ends the stream instead of going silent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig as TlsConfig;
use serde_json::Value;

use super::chunked::Chunked;
use super::endpoint::Endpoint;
use super::http::{Conn, Fail, Framing};
use super::jsonstream::JsonStream;
use super::wire::{self, Verdict};
use crate::store::{StoreError, Watch, WatchEvent};

/// An open watch stream on one endpoint.
pub struct EtcdWatch {
    conn: Conn,
    chunks: Chunked,
    values: JsonStream,
    url: String,
    /// The error that ended the stream, answered again on every later call.
    ended: Option<StoreError>,
}

/// What one stream value means.
enum Message {
    /// Created, progress or other events-free notice.
    Quiet,
    Events(Vec<WatchEvent>),
}

impl EtcdWatch {
    /// Opens the watch `body` on `ep` and has the server confirm it, all within `timeout`; a failure says whether another endpoint may do better.
    pub fn open(
        ep: &Endpoint,
        tls: Option<&Arc<TlsConfig>>,
        timeout: Duration,
        body: &[u8],
    ) -> Result<EtcdWatch, Verdict> {
        let failed = |f: Fail| match f {
            Fail::NotSent(m) | Fail::Lost(m) => Verdict::NextEndpoint(m),
            Fail::Tls(m) => Verdict::Final(StoreError::Refused(m)),
        };
        let deadline = Instant::now() + timeout;
        let mut conn = Conn::connect(ep, tls, deadline).map_err(failed)?;
        conn.post(ep, "/v3/watch", body, true).map_err(failed)?;
        let head = conn.head(deadline).map_err(failed)?;
        if head.status != 200 || head.framing != Framing::Chunked {
            let answer = conn.body(&head, deadline).map_err(failed)?;
            let json: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            let e = wire::gateway_error(head.status, &json).unwrap_or(wire::GatewayError {
                status: head.status,
                code: None,
                message: String::from_utf8_lossy(&answer).trim().to_string(),
            });
            return Err(wire::classify(&e, false));
        }
        let mut w = EtcdWatch {
            conn,
            chunks: Chunked::default(),
            values: JsonStream::default(),
            url: ep.url.clone(),
            ended: None,
        };
        // The first message confirms the watch (or refuses it).
        match w.next_message(deadline) {
            Ok(Some(Message::Quiet)) => Ok(w),
            Ok(Some(Message::Events(_))) => Err(Verdict::NextEndpoint(
                "the watch sent events before confirming its creation".into(),
            )),
            Ok(None) => Err(Verdict::NextEndpoint(
                "the watch was not confirmed within the timeout".into(),
            )),
            Err(StoreError::Unavailable(m)) => Err(Verdict::NextEndpoint(m)),
            Err(e) => Err(Verdict::Final(e)),
        }
    }

    /// The next message of the stream, None when `deadline` passed first (nothing is lost:
    /// partial data stays buffered for the next call).
    fn next_message(&mut self, deadline: Instant) -> Result<Option<Message>, StoreError> {
        let url = self.url.as_str();
        loop {
            let value = self.values.next_value();
            let value = value.map_err(|e| unavailable(url, &format!("watch stream: {e}")))?;
            if let Some(v) = value {
                let json: Value = serde_json::from_slice(v)
                    .map_err(|e| unavailable(url, &format!("watch stream: bad JSON: {e}")))?;
                return message(url, &json).map(Some);
            }
            if self.chunks.done() {
                return Err(unavailable(url, "the server ended the watch stream"));
            }
            let data = match self.conn.stream_read(deadline) {
                Ok(None) => return Ok(None),
                Ok(Some([])) => return Err(unavailable(url, "the connection closed")),
                Ok(Some(d)) => d,
                Err(e) => return Err(unavailable(url, &format!("reading the watch: {e}"))),
            };
            let mut body = Vec::with_capacity(data.len());
            let used = self.chunks.feed(data, &mut body);
            used.map_err(|e| unavailable(url, &format!("watch stream: {e}")))?;
            self.values.push(&body);
        }
    }
}

/// Interprets one stream value.
fn message(url: &str, json: &Value) -> Result<Message, StoreError> {
    if let Some(e) = wire::gateway_error(200, json) {
        return Err(match wire::classify(&e, false) {
            Verdict::NextEndpoint(m) => unavailable(url, &m),
            Verdict::Final(e) => e,
        });
    }
    let Some(result) = json.get("result") else {
        return Err(unavailable(
            url,
            "a watch message holds neither result nor error",
        ));
    };
    if result.get("canceled").and_then(Value::as_bool) == Some(true) {
        let compacted = wire::int(result, "compact_revision").unwrap_or(0);
        if compacted > 0 {
            return Err(StoreError::Compacted(compacted));
        }
        let why = result
            .get("cancel_reason")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(unavailable(
            url,
            &format!("the server canceled the watch: {why}"),
        ));
    }
    let events = wire::events(result).map_err(|e| unavailable(url, &e))?;
    Ok(if events.is_empty() {
        Message::Quiet
    } else {
        Message::Events(events)
    })
}

fn unavailable(url: &str, m: &str) -> StoreError {
    StoreError::Unavailable(format!("{url} watch: {m}"))
}

impl Watch for EtcdWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<Vec<WatchEvent>>, StoreError> {
        if let Some(e) = &self.ended {
            return Err(e.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_message(deadline) {
                Ok(None) => return Ok(None),
                Ok(Some(Message::Quiet)) => continue,
                Ok(Some(Message::Events(ev))) => return Ok(Some(ev)),
                Err(e) => {
                    self.ended = Some(e.clone());
                    return Err(e);
                }
            }
        }
    }
}
