//! twilld's etcd client against real etcd 3.4 members, each test with its own cluster in its
//! own network namespace: the requests, leases and their expiry, watches (compaction, a member
//! losing its quorum), TLS with client certificates, endpoint failover and ambiguous writes.

mod common;

#[path = "../src/store.rs"]
mod store;

#[path = "../src/etcd/mod.rs"]
mod etcd;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Etcd;
use etcd::{Client, ClientConfig};
use store::{Kv, Store, StoreError, Watch, WatchEvent};

fn config(endpoints: &[String]) -> ClientConfig {
    ClientConfig {
        endpoints: endpoints.to_vec(),
        timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

fn client(endpoints: &[String]) -> Client {
    Client::new(&config(endpoints)).expect("client config")
}

/// Waits (bounded) for the next batch of events.
fn next_events(w: &mut dyn Watch, within: Duration) -> Vec<WatchEvent> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(ev) = w.next(Duration::from_millis(500)).expect("watch") {
            return ev;
        }
    }
    panic!("no watch event within {within:?}");
}

#[test]
fn puts_gets_lists_and_a_second_create_of_a_key_answers_false() {
    let cluster = Etcd::single();
    let urls = cluster.urls.clone();
    cluster.ns.run(move || {
        let mut c = client(&urls);
        assert_eq!(c.get("/coreos.com/network/config").unwrap(), None);
        c.put(
            "/coreos.com/network/config",
            b"{\"Network\":\"10.244.0.0/16\"}",
            0,
        )
        .unwrap();
        let kv = c
            .get("/coreos.com/network/config")
            .unwrap()
            .expect("the key is there");
        assert_eq!(kv.value, b"{\"Network\":\"10.244.0.0/16\"}");
        assert_eq!((kv.lease, kv.create_revision), (0, kv.mod_revision));

        let lease = c.grant(Duration::from_secs(60)).unwrap();
        assert!(lease != 0);
        let subnets = "/coreos.com/network/subnets/";
        assert!(
            c.create(&format!("{subnets}10.244.3.0-24"), b"three", lease)
                .unwrap()
        );
        assert!(
            !c.create(&format!("{subnets}10.244.3.0-24"), b"other", 0)
                .unwrap(),
            "a second create of the same key answers false"
        );
        c.put(&format!("{subnets}10.244.1.0-24"), b"", 0).unwrap();
        c.put("/coreos.com/network/subnets0", b"outside the prefix", 0)
            .unwrap();

        let (kvs, revision) = c.list(subnets).unwrap();
        let keys: Vec<&str> = kvs.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "/coreos.com/network/subnets/10.244.1.0-24",
                "/coreos.com/network/subnets/10.244.3.0-24"
            ]
        );
        assert_eq!(kvs[0].value, b"", "an empty value reads back empty");
        assert_eq!(
            (kvs[1].value.as_slice(), kvs[1].lease),
            (&b"three"[..], lease),
            "the first create's value and lease stay"
        );
        assert!(revision >= kvs[0].mod_revision && revision >= kvs[1].mod_revision);
        let (none, _) = c.list("/nothing/here/").unwrap();
        assert_eq!(none, Vec::<Kv>::new());
    });
}

#[test]
fn unary_calls_reuse_one_kept_alive_connection() {
    let cluster = Etcd::single();
    let urls = cluster.urls.clone();
    let ns_name = cluster.ns.name.clone();
    cluster.ns.run(move || {
        let mut c = client(&urls);
        for i in 0..20 {
            c.put(&format!("/k/{i}"), b"v", 0).unwrap();
            assert!(c.get(&format!("/k/{i}")).unwrap().is_some());
        }
        // Every client-side socket to the member in any state (a connection closed by the
        // client lingers in TIME-WAIT), except etcd's gateway's own connection to its port.
        let ss = ["ss", "-Htanp", "dport", "=", ":23790"];
        let out = common::sh(&[&["ip", "netns", "exec", &ns_name][..], &ss].concat());
        let ours = out.lines().filter(|l| !l.contains("\"etcd\"")).count();
        assert_eq!(ours, 1, "40 calls over one connection: {out}");
    });
}

#[test]
fn a_key_whose_short_lease_is_not_renewed_vanishes_and_the_watch_reports_its_delete() {
    let cluster = Etcd::single();
    let urls = cluster.urls.clone();
    cluster.ns.run(move || {
        let mut c = client(&urls);
        let lease = c.grant(Duration::from_secs(2)).unwrap();
        let ttl = c.keepalive(lease).unwrap().expect("a fresh lease is alive");
        assert!(
            ttl <= Duration::from_secs(2) && ttl > Duration::ZERO,
            "{ttl:?}"
        );
        assert!(c.create("/s/leased", b"mine", lease).unwrap());
        let (_, revision) = c.list("/s/").unwrap();
        let mut w = c.watch("/s/", revision + 1).unwrap();
        assert_eq!(
            w.next(Duration::from_millis(300)).unwrap(),
            None,
            "nothing happened yet: the wait times out"
        );
        c.put("/s/other", b"x", 0).unwrap();
        match next_events(w.as_mut(), Duration::from_secs(5)).as_slice() {
            [WatchEvent::Put(kv)] => {
                assert_eq!((kv.key.as_str(), &kv.value[..]), ("/s/other", &b"x"[..]))
            }
            other => panic!("expected the put of /s/other, got {other:?}"),
        }
        // No renewal: the lease expires within its TTL plus etcd's expiry check.
        let start = Instant::now();
        let ev = next_events(w.as_mut(), Duration::from_secs(10));
        assert!(
            matches!(ev.as_slice(), [WatchEvent::Delete { key, mod_revision }]
                if key == "/s/leased" && *mod_revision > revision),
            "{ev:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(c.get("/s/leased").unwrap(), None);
        assert_eq!(
            c.keepalive(lease).unwrap(),
            None,
            "an expired lease is gone"
        );
    });
}

#[test]
fn a_watch_from_a_compacted_revision_answers_compacted() {
    let cluster = Etcd::single();
    let urls = cluster.urls.clone();
    let compacted_to = cluster.ns.run(|| {
        let mut c = client(&urls);
        for i in 0..5 {
            c.put("/c/key", format!("v{i}").as_bytes(), 0).unwrap();
        }
        c.list("/c/").unwrap().1
    });
    cluster.etcdctl(&["compact", &compacted_to.to_string()]);
    cluster.ns.run(move || {
        let mut c = client(&urls);
        let got = match c.watch("/c/", 2) {
            Err(e) => Err(e),
            Ok(mut w) => w.next(Duration::from_secs(5)),
        };
        assert_eq!(got, Err(StoreError::Compacted(compacted_to)));
        // From the revision after the compaction the watch works.
        let mut w = c.watch("/c/", compacted_to + 1).unwrap();
        c.put("/c/key", b"after", 0).unwrap();
        let ev = next_events(w.as_mut(), Duration::from_secs(5));
        assert!(
            matches!(ev.as_slice(), [WatchEvent::Put(kv)] if kv.value == b"after"),
            "{ev:?}"
        );
    });
}

#[test]
fn tls_with_a_client_certificate_works_and_a_client_without_one_is_refused() {
    let cluster = Etcd::start(1, true);
    let pki = cluster.pki.as_ref().expect("tls cluster");
    let url = cluster.urls.clone();
    let with = |cert: &str, key: &str| ClientConfig {
        ca_file: Some(pki.file("ca.crt")),
        cert_file: Some(pki.file(cert)),
        key_file: Some(pki.file(key)),
        ..config(&url)
    };
    let keys = [
        with("client.crt", "client.key"),
        with("client.crt", "client-ec.key"),
        with("client-rsa.crt", "client-rsa.key"),
    ];
    let without = ClientConfig {
        ca_file: Some(pki.file("ca.crt")),
        ..config(&url)
    };
    std::fs::create_dir_all(cluster.dir.0.join("other")).unwrap();
    let other_ca = common::make_pki(&cluster.dir.0.join("other"), "other-ca");
    let untrusting = ClientConfig {
        ca_file: Some(other_ca.file("other-ca.crt")),
        ..with("client.crt", "client.key")
    };
    cluster.ns.run(move || {
        for (n, cfg) in keys.iter().enumerate() {
            let mut c = Client::new(cfg).expect("client certificate and key load");
            let key = format!("/tls/{n}");
            c.put(&key, b"secret", 0).unwrap();
            assert_eq!(
                c.get(&key).unwrap().expect("written").value,
                b"secret",
                "{cfg:?}"
            );
        }
        let mut c = Client::new(&without).unwrap();
        match c.get("/tls/0") {
            Err(StoreError::Refused(m)) => assert!(m.contains("cert_file"), "{m}"),
            other => panic!("a client without a certificate must be refused: {other:?}"),
        }
        let mut c = Client::new(&untrusting).unwrap();
        match c.get("/tls/0") {
            Err(StoreError::Refused(m)) => assert!(m.contains("not trusted"), "{m}"),
            other => panic!("a server certificate of another CA must be refused: {other:?}"),
        }
    });
}

#[test]
fn unusable_endpoints_and_pem_files_are_refused_naming_them() {
    let missing = PathBuf::from("/nonexistent/etcd-ca.pem");
    for (cfg, says) in [
        (
            config(&["10.0.0.5:2379".into()]),
            "\"10.0.0.5:2379\": must start with http",
        ),
        (config(&[]), "no etcd endpoint"),
        (
            ClientConfig {
                ca_file: Some(missing.clone()),
                ..config(&["https://10.0.0.5:2379".into()])
            },
            "CA file /nonexistent/etcd-ca.pem: cannot read it",
        ),
        (
            ClientConfig {
                cert_file: Some(missing.clone()),
                ..config(&["http://10.0.0.5:2379".into()])
            },
            "set ca_file or use https://",
        ),
    ] {
        match Client::new(&cfg) {
            Err(StoreError::Refused(m)) => assert!(m.contains(says), "{m}"),
            Err(e) => panic!("{cfg:?}: {e}"),
            Ok(_) => panic!("{cfg:?} was accepted"),
        }
    }
}

#[test]
fn a_watch_on_a_member_that_lost_its_quorum_ends_unavailable() {
    let mut cluster = Etcd::start(3, false);
    let survivor = vec![cluster.urls[0].clone()];
    let (mut c, mut w) = cluster.ns.run(|| {
        let mut c = client(&survivor);
        let (_, revision) = c.list("/q/").unwrap();
        let w = c.watch("/q/", revision + 1).unwrap();
        (c, w)
    });
    cluster.kill(1);
    cluster.kill(2);
    let start = Instant::now();
    let ended = loop {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the watch hangs without a leader"
        );
        match w.next(Duration::from_millis(500)) {
            Ok(None) => continue,
            Ok(Some(ev)) => panic!("no writes happen, yet {ev:?}"),
            Err(e) => break e,
        }
    };
    let took = start.elapsed();
    match &ended {
        StoreError::Unavailable(m) => assert!(m.contains("no leader"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(
        w.next(Duration::from_millis(10)),
        Err(ended),
        "an ended watch stays ended"
    );
    // A new watch on the leaderless member is refused at once, not left silent.
    let again = cluster.ns.run(move || c.watch("/q/", 1).map(|_| ()));
    assert!(
        matches!(again, Err(StoreError::Unavailable(_))),
        "{again:?}"
    );
}

#[test]
fn a_dead_first_endpoint_fails_over_to_the_second() {
    let cluster = Etcd::single();
    let endpoints = vec!["http://127.0.0.1:1".to_string(), cluster.urls[0].clone()];
    cluster.ns.run(move || {
        let mut c = client(&endpoints);
        c.put("/f/key", b"v", 0).unwrap();
        assert_eq!(
            c.get("/f/key").unwrap().map(|kv| kv.value),
            Some(b"v".to_vec())
        );
        let (_, rev) = c.list("/f/").unwrap();
        let mut w = c.watch("/f/", rev + 1).unwrap();
        c.put("/f/key", b"w", 0).unwrap();
        assert_eq!(next_events(w.as_mut(), Duration::from_secs(5)).len(), 1);

        let mut dead = client(&["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()]);
        let start = Instant::now();
        match dead.put("/f/key", b"x", 0) {
            Err(StoreError::Unavailable(m)) => {
                assert!(
                    m.contains("127.0.0.1:1") && m.contains("127.0.0.1:2"),
                    "{m}"
                )
            }
            other => panic!("no endpoint answers: {other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "refused connects fail fast"
        );
    });
}

#[test]
fn a_write_whose_answer_never_comes_is_ambiguous_and_a_read_moves_on() {
    let cluster = Etcd::single();
    let live = cluster.urls[0].clone();
    cluster.ns.run(move || {
        // Connections to this listener complete in the kernel and are never answered.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_url = format!("http://{}", silent.local_addr().unwrap());
        let mut c = Client::new(&ClientConfig {
            timeout: Duration::from_millis(400),
            ..config(&[silent_url.clone(), live])
        })
        .unwrap();
        assert_eq!(
            c.get("/a/key").unwrap(),
            None,
            "a read moves on to the live member"
        );
        let mut c = Client::new(&ClientConfig {
            timeout: Duration::from_millis(400),
            ..config(&[silent_url])
        })
        .unwrap();
        let start = Instant::now();
        match c.put("/a/key", b"v", 0) {
            Err(StoreError::Ambiguous(m)) => assert!(m.contains("within the timeout"), "{m}"),
            other => panic!("a sent write without answer is ambiguous: {other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    });
}

#[test]
fn a_watch_message_split_across_read_timeouts_arrives_whole() {
    use std::io::{Read, Write};
    use std::sync::mpsc;
    let ns = common::Ns::new();
    ns.run(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let event = r#"{"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"L3cvYQ==","create_revision":"7","mod_revision":"7","value":"eA=="}}]}}"#;
        let created = r#"{"result":{"header":{"revision":"6"},"created":true}}"#;
        let wire = format!("{:x}\r\n{event}\n\r\n", event.len() + 1);
        // Pauses inside the chunk size, inside the JSON, and before its last brace.
        let cuts = [1, 40, wire.len() - 4];
        let (go, wait) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let server = s.spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut req = [0u8; 4096];
                let n = conn.read(&mut req).unwrap();
                let req = String::from_utf8_lossy(&req[..n]).to_string();
                conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{created}\n\r\n",
                        created.len() + 1
                    )
                    .as_bytes(),
                )
                .unwrap();
                let mut from = 0;
                for cut in cuts {
                    conn.write_all(&wire.as_bytes()[from..cut]).unwrap();
                    from = cut;
                    if wait.recv_timeout(Duration::from_secs(10)).is_err() {
                        return req;
                    }
                }
                conn.write_all(&wire.as_bytes()[from..]).unwrap();
                let _ = wait.recv_timeout(Duration::from_secs(10));
                req
            });
            let mut c = client(&[url]);
            let mut w = c.watch("/w/", 7).unwrap();
            for _ in cuts {
                assert_eq!(w.next(Duration::from_millis(100)), Ok(None), "a part is no message");
                go.send(()).unwrap();
            }
            let ev = next_events(w.as_mut(), Duration::from_secs(5));
            match ev.as_slice() {
                [WatchEvent::Put(kv)] => {
                    assert_eq!((kv.key.as_str(), &kv.value[..], kv.mod_revision), ("/w/a", &b"x"[..], 7))
                }
                other => panic!("{other:?}"),
            }
            go.send(()).unwrap();
            let req = server.join().unwrap();
            assert!(req.starts_with("POST /v3/watch HTTP/1.1\r\n"), "{req}");
            assert!(req.contains("\r\nGrpc-Metadata-Hasleader: true\r\n"), "{req}");
            assert!(req.contains(r#""start_revision":"7""#), "{req}");
        });
    });
}

#[test]
fn requests_sent_counts_each_http_request_of_the_process() {
    // The count is process-wide and the other tests run in parallel: run alone in a child.
    if std::env::var_os("TWILL_ETCDC_ALONE").is_none() {
        let exe = std::env::current_exe().unwrap();
        let name = "requests_sent_counts_each_http_request_of_the_process";
        let out = std::process::Command::new(exe)
            .args(["--exact", name, "--test-threads=1"])
            .env("TWILL_ETCDC_ALONE", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let cluster = Etcd::single();
    let endpoints = vec!["http://127.0.0.1:1".to_string(), cluster.urls[0].clone()];
    cluster.ns.run(move || {
        let start = etcd::requests_sent();
        let mut c = client(&endpoints);
        c.put("/n/a", b"1", 0).unwrap(); // 1: the dead endpoint refused the connect
        c.get("/n/a").unwrap(); // 2
        c.list("/n/").unwrap(); // 3
        let lease = c.grant(Duration::from_secs(30)).unwrap(); // 4
        c.keepalive(lease).unwrap(); // 5
        c.create("/n/a", b"2", lease).unwrap(); // 6
        let _w = c.watch("/n/", 1).unwrap(); // 7
        assert_eq!(etcd::requests_sent() - start, 7);
    });
}
