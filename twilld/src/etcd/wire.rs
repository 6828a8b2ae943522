//! The JSON shapes of etcd's v3 gateway as seen on etcd 3.4: base64 keys and values, int64s as
//! strings (numbers accepted too), omitted zero values, and its two error shapes (unary
//! `{"error":"..","code":N}`, streamed `{"error":{"grpc_code":N,"message":".."}}`).

use serde_json::{Value, json};

use super::base64;
use crate::store::{Kv, StoreError, WatchEvent};

/// The int64 `field` of `v`: a JSON string or number, 0 when absent (proto3 omits zeros).
pub fn int(v: &Value, field: &str) -> Result<i64, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("{field} {n} is not a 64-bit integer")),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("{field} {s:?} is not a 64-bit integer")),
        Some(other) => Err(format!("{field} is {other}, not an integer")),
    }
}

/// The bytes of the base64 `field` of `v`, empty when absent.
fn bytes(v: &Value, field: &str) -> Result<Vec<u8>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => base64::decode(s).map_err(|e| format!("{field}: {e}")),
        Some(other) => Err(format!("{field} is {other}, not a base64 string")),
    }
}

fn key(v: &Value) -> Result<String, String> {
    String::from_utf8(bytes(v, "key")?)
        .map_err(|e| format!("key {} is not UTF-8", base64::encode(e.as_bytes())))
}

/// A key-value from a range response or watch event.
pub fn kv(v: &Value) -> Result<Kv, String> {
    Ok(Kv {
        key: key(v)?,
        value: bytes(v, "value")?,
        create_revision: int(v, "create_revision")?,
        mod_revision: int(v, "mod_revision")?,
        lease: int(v, "lease")?,
    })
}

/// The end of the key range that holds every key starting with `prefix` (etcd's
/// `--prefix`): the prefix with its last byte below 0xff incremented, or `\0` (every key).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The body of a range request for one key or (with `prefix`) a key range.
pub fn range(key: &str, prefix: bool) -> Value {
    let mut r = json!({ "key": base64::encode(key.as_bytes()) });
    if prefix {
        r["range_end"] = base64::encode(&prefix_end(key.as_bytes())).into();
    }
    r
}

/// The body of a put of `key` = `value` under `lease` (0: none).
pub fn put(key: &str, value: &[u8], lease: i64) -> Value {
    let mut r = json!({ "key": base64::encode(key.as_bytes()), "value": base64::encode(value) });
    if lease != 0 {
        r["lease"] = lease.to_string().into();
    }
    r
}

/// The body of a transaction putting `key` only if it was never created.
pub fn create(key: &str, value: &[u8], lease: i64) -> Value {
    json!({
        "compare": [{
            "key": base64::encode(key.as_bytes()),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": "0",
        }],
        "success": [{ "request_put": put(key, value, lease) }],
    })
}

/// The body of a watch of every key under `prefix` from `revision` on.
pub fn watch(prefix: &str, revision: i64) -> Value {
    let r = range(prefix, true);
    json!({ "create_request": {
        "key": r["key"],
        "range_end": r["range_end"],
        "start_revision": revision.max(0).to_string(),
    }})
}

/// The events of a watch response.
pub fn events(result: &Value) -> Result<Vec<WatchEvent>, String> {
    let Some(list) = result.get("events").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|e| {
            let kv_json = e.get("kv").ok_or("a watch event has no kv")?;
            match e.get("type").and_then(Value::as_str) {
                None | Some("PUT") => Ok(WatchEvent::Put(kv(kv_json)?)),
                Some("DELETE") => Ok(WatchEvent::Delete {
                    key: key(kv_json)?,
                    mod_revision: int(kv_json, "mod_revision")?,
                }),
                Some(t) => Err(format!("unknown watch event type {t:?}")),
            }
        })
        .collect()
}

/// An error the gateway answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    /// The HTTP status (200 for an error inside a stream).
    pub status: u16,
    /// The gRPC status code, when given.
    pub code: Option<i64>,
    /// etcd's message (`etcdserver: no leader`).
    pub message: String,
}

/// The error in a gateway body, if it holds one (either shape); None for a normal answer.
pub fn gateway_error(status: u16, body: &Value) -> Option<GatewayError> {
    let e = body.get("error")?;
    let (code, message) = match e {
        Value::Object(_) => (
            e.get("grpc_code").and_then(Value::as_i64),
            e.get("message").and_then(Value::as_str),
        ),
        _ => (
            body.get("code").and_then(Value::as_i64),
            body.get("message").and_then(Value::as_str).or(e.as_str()),
        ),
    };
    Some(GatewayError {
        status,
        code,
        message: message.unwrap_or("no message").to_string(),
    })
}

/// What the client does with a gateway error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing was applied or the request only read: ask the next endpoint.
    NextEndpoint(String),
    /// The answer for the caller.
    Final(StoreError),
}

/// Classifies a gateway error for a request that writes (`write`) or only reads.
pub fn classify(e: &GatewayError, write: bool) -> Verdict {
    let m = &e.message;
    let text = match e.code {
        Some(c) => format!("{m} (HTTP {}, gRPC code {c})", e.status),
        None => format!("{m} (HTTP {})", e.status),
    };
    // Rejected before being proposed: nothing was applied anywhere.
    let not_applied = m.contains("no leader")
        || m.contains("not capable")
        || m.contains("too many requests")
        || m.contains("not leader")
        || e.code == Some(8);
    // The request is wrong or not allowed: another member answers the same.
    let refused = matches!(e.code, Some(3 | 5 | 6 | 7 | 9 | 11 | 12 | 16))
        || matches!(e.status, 400 | 401 | 403 | 404);
    if not_applied {
        Verdict::NextEndpoint(text)
    } else if refused {
        Verdict::Final(StoreError::Refused(text))
    } else if write {
        // "request timed out", "leader changed", deadline exceeded, 5xx: the proposal may
        // have been committed.
        Verdict::Final(StoreError::Ambiguous(text))
    } else {
        Verdict::NextEndpoint(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, code: i64, message: &str) -> GatewayError {
        GatewayError {
            status,
            code: Some(code),
            message: message.into(),
        }
    }

    #[test]
    fn both_error_shapes_are_read() {
        let unary: Value = serde_json::from_str(
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        )
        .unwrap();
        assert_eq!(
            gateway_error(404, &unary),
            Some(err(404, 5, "etcdserver: requested lease not found"))
        );
        let streamed: Value = serde_json::from_str(
            r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#,
        )
        .unwrap();
        assert_eq!(
            gateway_error(200, &streamed),
            Some(err(200, 14, "etcdserver: no leader"))
        );
        assert_eq!(gateway_error(200, &json!({"result": {}})), None);
    }

    #[test]
    fn errors_are_classified_by_whether_the_request_may_have_been_applied() {
        let no_leader = err(503, 14, "etcdserver: no leader");
        for write in [false, true] {
            assert!(matches!(
                classify(&no_leader, write),
                Verdict::NextEndpoint(_)
            ));
        }
        for e in [
            err(503, 14, "etcdserver: request timed out"),
            err(503, 14, "etcdserver: leader changed"),
            err(500, 2, "context deadline exceeded"),
            GatewayError {
                status: 502,
                code: None,
                message: "bad gateway".into(),
            },
        ] {
            assert!(
                matches!(classify(&e, true), Verdict::Final(StoreError::Ambiguous(_))),
                "{e:?}"
            );
            assert!(
                matches!(classify(&e, false), Verdict::NextEndpoint(_)),
                "{e:?}"
            );
        }
        for e in [
            err(404, 5, "etcdserver: requested lease not found"),
            err(400, 3, "json: cannot unmarshal number"),
            err(403, 7, "etcdserver: permission denied"),
        ] {
            for write in [false, true] {
                match classify(&e, write) {
                    Verdict::Final(StoreError::Refused(m)) => assert!(m.contains(&e.message)),
                    other => panic!("{e:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn int64s_are_read_from_strings_numbers_or_absence() {
        let v = json!({"a": "7668682599974244362", "b": 12, "d": "x"});
        assert_eq!(int(&v, "a"), Ok(7668682599974244362));
        assert_eq!(int(&v, "b"), Ok(12));
        assert_eq!(int(&v, "c"), Ok(0));
        assert!(int(&v, "d").unwrap_err().contains("\"x\""));
    }

    #[test]
    fn prefix_ends_cover_exactly_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn watch_events_of_both_kinds_are_decoded() {
        let r: Value = serde_json::from_str(
            r#"{"header":{"revision":"5"},"events":[
              {"kv":{"key":"L2EvYg==","create_revision":"2","mod_revision":"4","version":"2","value":"dmFs","lease":"9"}},
              {"type":"DELETE","kv":{"key":"L2EvYg==","mod_revision":"5"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            events(&r).unwrap(),
            vec![
                WatchEvent::Put(Kv {
                    key: "/a/b".into(),
                    value: b"val".to_vec(),
                    create_revision: 2,
                    mod_revision: 4,
                    lease: 9,
                }),
                WatchEvent::Delete {
                    key: "/a/b".into(),
                    mod_revision: 5
                },
            ]
        );
    }
}
