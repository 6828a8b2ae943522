//! The operation log: `logFile` / `logLevel` in the config (and the `TWILL_LOG_FILE` /
//! `TWILL_LOG_LEVEL` environment override) make every plugin append one JSON line per operation
//! with network, container ID, ifname, command, result or error code, and duration; stdout keeps
//! carrying only the CNI answer.

use conformance::hostgw::{Cluster, plugin, tw_links};
use conformance::{Fabric, TempDir, unique_name};
use serde_json::{Value, json};
use std::path::Path;

fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .collect()
}

fn with(conf: &Value, extra: Value) -> Value {
    let mut conf = conf.clone();
    if let (Some(obj), Value::Object(add)) = (conf.as_object_mut(), extra) {
        obj.extend(add);
    }
    conf
}

#[test]
fn log_file_gets_one_line_per_operation_naming_the_attachment_result_and_duration() {
    let c = Cluster::new(Fabric::single_l2(1));
    let dir = TempDir::new("log");
    let log = dir.join("twill.log");
    let conf = with(&c.conf(0), json!({"logFile": log}));
    let pod = c.add_pod_with(0, &conf);
    // stdout is exactly the result, nothing else.
    assert_eq!(pod.result["cniVersion"], "1.1.0");
    pod.run("CHECK").assert_ok_empty();
    pod.run("DEL").assert_ok_empty();

    let got = lines(&log);
    assert_eq!(got.len(), 3, "one line per operation: {got:?}");
    for (line, command) in got.iter().zip(["ADD", "CHECK", "DEL"]) {
        assert_eq!(line["command"], command, "{line}");
        assert_eq!(line["network"], c.net.as_str(), "{line}");
        assert_eq!(line["plugin"], "bridge-host-gw", "{line}");
        assert_eq!(line["containerID"], pod.container_id.as_str(), "{line}");
        assert_eq!(line["ifname"], "eth0", "{line}");
        assert_eq!(line["result"], "ok", "{line}");
        assert_eq!(line["level"], "info", "{line}");
        assert!(line["durationUs"].as_u64().is_some_and(|d| d > 0), "{line}");
        assert!(
            line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
    }
    let ip = pod.ip().map(|ip| ip.to_string()).unwrap_or_default();
    assert_eq!(
        got[0]["ips"],
        json!([format!("{ip}/24")]),
        "ADD logs its address"
    );
}

#[test]
fn a_failed_operation_is_logged_with_its_code_and_error_level_skips_successes() {
    let c = Cluster::new(Fabric::single_l2(1));
    let dir = TempDir::new("log");
    let log = dir.join("twill.log");
    let conf = with(&c.conf(0), json!({"logFile": log, "logLevel": "error"}));
    let pod = c.add_pod_with(0, &conf);
    // A second ADD asking for the bridge name of an existing non-bridge link fails with 104.
    c.node(0).ns.ip(&[
        "link",
        "add",
        "notabridge",
        "type",
        "veth",
        "peer",
        "name",
        "nb1",
    ]);
    let bad = with(&conf, json!({"bridge": "notabridge"}));
    let (_failed, out) = c.node(0).try_add_pod(&plugin(), &bad, &unique_name("c"));
    let err = out.assert_error(104);
    pod.run("DEL").assert_ok_empty();

    let got = lines(&log);
    assert_eq!(got.len(), 1, "only the failure at level error: {got:?}");
    assert_eq!(got[0]["level"], "error");
    assert_eq!(got[0]["result"], "error");
    assert_eq!(got[0]["command"], "ADD");
    assert_eq!(got[0]["code"], 104);
    let msg = got[0]["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains(err["msg"].as_str().unwrap_or("?")),
        "the line carries the error message: {msg} / {err}"
    );
}

#[test]
fn environment_turns_the_log_on_and_off_over_the_config() {
    let c = Cluster::new(Fabric::single_l2(1));
    let dir = TempDir::new("log");
    let (from_env, from_conf) = (dir.join("env.log"), dir.join("conf.log"));
    let node = c.node(0);
    let id = unique_name("c");
    let pod_ns = conformance::Netns::with_tag("pod");

    // TWILL_LOG_FILE alone turns logging on for a config without log keys.
    let out = node
        .invoke(&plugin(), "ADD", &c.conf(0), &id, pod_ns.path(), "eth0")
        .env("TWILL_LOG_FILE", &from_env.display().to_string())
        .run();
    out.assert_ok();
    let got = lines(&from_env);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["command"], "ADD");

    // TWILL_LOG_LEVEL=off silences a config that names a log file.
    let conf = with(&c.conf(0), json!({"logFile": from_conf}));
    node.invoke(&plugin(), "DEL", &conf, &id, pod_ns.path(), "eth0")
        .env("TWILL_LOG_LEVEL", "off")
        .run()
        .assert_ok_empty();
    assert!(
        !from_conf.exists(),
        "TWILL_LOG_LEVEL=off must write nothing"
    );
    assert_eq!(tw_links(&node.ns), Vec::<String>::new());
}

#[test]
fn log_to_stderr_keeps_stdout_the_bare_result() {
    let c = Cluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let conf = with(
        &c.conf(0),
        json!({"logFile": "stderr", "logLevel": "debug"}),
    );
    let pod_ns = conformance::Netns::with_tag("pod");
    let id = unique_name("c");
    let out = node
        .invoke(&plugin(), "ADD", &conf, &id, pod_ns.path(), "eth0")
        .run();
    let result = out.assert_ok();
    // stdout parsed as exactly one JSON document: the result.
    assert_eq!(result["cniVersion"], "1.1.0");
    let line: Value = out
        .stderr
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no log line on stderr: {}", out.stderr));
    assert_eq!(line["command"], "ADD");
    assert_eq!(line["answer"], result, "debug logs the whole answer");
    node.invoke(&plugin(), "DEL", &conf, &id, pod_ns.path(), "eth0")
        .run()
        .assert_ok_empty();
}

#[test]
fn invalid_log_settings_fail_with_a_config_error_and_change_nothing() {
    let c = Cluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let pod_ns = conformance::Netns::with_tag("pod");
    for (extra, code) in [
        (json!({"logFile": "/tmp/x.log", "logLevel": "loud"}), 7),
        (json!({"logFile": "relative.log"}), 7),
    ] {
        let conf = with(&c.conf(0), extra.clone());
        let out = node
            .invoke(
                &plugin(),
                "ADD",
                &conf,
                &unique_name("c"),
                pod_ns.path(),
                "eth0",
            )
            .run();
        let err = out.assert_error(code);
        let msg = err["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("logLevel") || msg.contains("logFile"),
            "{extra}: the message names the key: {msg}"
        );
        assert_eq!(tw_links(&node.ns), Vec::<String>::new(), "{extra}");
        assert_eq!(c.reservations(0).len(), 0, "{extra}");
    }
    let out = node
        .invoke(
            &plugin(),
            "ADD",
            &c.conf(0),
            &unique_name("c"),
            pod_ns.path(),
            "eth0",
        )
        .env("TWILL_LOG_FILE", "/l")
        .env("TWILL_LOG_LEVEL", "verbose")
        .run();
    out.assert_error(4);
    assert_eq!(tw_links(&node.ns), Vec::<String>::new());
}
