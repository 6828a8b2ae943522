//! CNI data types: network configuration and the (version-independent) result model.
//!
//! The result model is the 1.1.0 shape; [`crate::cni::version`] converts it to and from every
//! supported CNI version on the wire.

use crate::error::{Error, Result};
use ipnetwork::IpNetwork;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// A network configuration as given on stdin, generic over the plugin's own keys `P`.
///
/// Well-known keys are typed; everything else lands in `plugin` (flattened).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf<P = Map<String, Value>> {
    /// `cniVersion`: the version the runtime speaks; results are answered in it.
    #[serde(default)]
    pub cni_version: String,
    /// `cniVersions`: list form used in conflists (informational for a plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_versions: Option<Vec<String>>,
    /// `name`: the network name (becomes a directory name: validated).
    #[serde(default)]
    pub name: String,
    /// `type`: the plugin binary name.
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// `args`: runtime-supplied arguments (e.g. `args.cni.ips`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// `ipMasq`: masquerade traffic leaving the pod network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_masq: Option<bool>,
    /// `ipam`: the IPAM section, passed as-is to the IPAM plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Value>,
    /// `dns`: DNS settings to return in the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// `runtimeConfig`: capability arguments (`ips`, `mac`, `portMappings`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Value>,
    /// `prevResult`: the previous plugin's result (raw; parse with `version::parse_result`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,
    /// Plugin-specific keys.
    #[serde(flatten)]
    pub plugin: P,
}

impl<P> NetConf<P> {
    /// The parsed `prevResult` (DEL, CHECK, chained ADD), read in its own `cniVersion` or else
    /// the config's; `None` when absent. Code 6 when it has the wrong shape, 1 when its version
    /// is unsupported (see [`crate::cni::version::parse_result`]).
    pub fn prev_result(&self) -> Result<Option<CniResult>> {
        match &self.prev_result {
            None | Some(Value::Null) => Ok(None),
            Some(v) => crate::cni::version::parse_result(v, &self.cni_version)
                .map(Some)
                .map_err(|e| e.context("prevResult")),
        }
    }
}

/// An interface in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address, lowercase colon-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU (1.1.0+ on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path if the interface is in the container; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Socket path (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// PCI ID (1.1.0+).
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An IP configuration in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length (e.g. `10.1.0.5/24`).
    pub address: IpNetwork,
    /// Default gateway of this subnet, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into the result's `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route in a result or IPAM config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination network.
    pub dst: IpNetwork,
    /// Next hop; absent means the IP config's gateway (or on-link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0+ on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0+).
    #[serde(rename = "advmss", default, skip_serializing_if = "Option::is_none")]
    pub adv_mss: Option<u32>,
    /// Route priority/metric (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Route scope (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    /// A plain route to `dst` via `gw`.
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            adv_mss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The version-independent result of ADD (and of an IPAM plugin).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces created or used.
    pub interfaces: Vec<Interface>,
    /// Assigned addresses.
    pub ips: Vec<IpConfig>,
    /// Routes the container should have.
    pub routes: Vec<Route>,
    /// DNS settings.
    pub dns: Dns,
}

/// Parses a network configuration from stdin bytes.
///
/// Code 6 (decode) when the bytes are not JSON (syntax error, truncated, empty); code 7 (invalid
/// config) when the JSON does not fit the config type (wrong type, missing required plugin key,
/// not an object). The message names the field: serde's own wording for missing/unknown fields
/// (``missing field `bridge` ``), else the top-level key the bad value is under
/// (`"mtu": invalid type: string "big", expected u32`).
///
/// Re-serializing the result (`serde_json::to_vec`) keeps every key `P` keeps: with the default
/// `P = Map<String, Value>` that is every key of the input (used for IPAM delegation).
pub fn parse_netconf<P: DeserializeOwned>(bytes: &[u8]) -> Result<NetConf<P>> {
    serde_json::from_slice(bytes).map_err(|e| {
        let blamed = (e.classify() == serde_json::error::Category::Data)
            .then(|| blame_field::<NetConf<P>>(bytes))
            .flatten();
        match blamed {
            Some(msg) => Error::invalid_config(format!("invalid network config: {msg}")),
            None => json_error("network config", &e),
        }
    })
}

/// For a data error in `T` from a JSON object: `"key": <serde message>` naming the top-level key
/// the error is about (found by deserializing again without one key at a time; error path
/// only). `None` when no single key is to blame (e.g. a missing field, which serde names).
fn blame_field<T: DeserializeOwned>(bytes: &[u8]) -> Option<String> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) else {
        return None;
    };
    let baseline = T::deserialize(&Value::Object(map.clone()))
        .err()?
        .to_string();
    map.keys()
        .find(|key| {
            let mut rest = map.clone();
            rest.remove(key.as_str());
            T::deserialize(&Value::Object(rest))
                .map_err(|e| e.to_string())
                .err()
                .as_ref()
                != Some(&baseline)
        })
        .map(|key| format!("{key:?}: {baseline}"))
}

/// Maps a serde_json error to the CNI code it is reported with: syntax and EOF are 6, data
/// (shape) errors are 7, I/O is 5. `what` names the document ("network config").
pub fn json_error(what: &str, e: &serde_json::Error) -> Error {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => Error::decode(format!("{what} is not valid JSON: {e}")),
        Category::Data => Error::invalid_config(format!("invalid {what}: {e}")),
        Category::Io => Error::new(crate::error::code::IO, format!("reading {what}: {e}")),
    }
}

/// One entry of `cni.dev/valid-attachments` (GC, CNI 1.1.0): an attachment the runtime still
/// knows, identified like state is keyed (SPEC "GC").
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// `containerID`.
    #[serde(rename = "containerID", default)]
    pub container_id: String,
    /// `ifname`.
    #[serde(default)]
    pub ifname: String,
}

/// The key the GC command carries its attachment list under (SPEC 1.1.0).
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The earlier spelling libcni also sends (same value), accepted as a fallback.
pub const LEGACY_ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// The attachments a GC config says are still valid; everything else may be released.
///
/// Takes the raw config (`CmdArgs::stdin`) because a typed `NetConf<P>` may not keep the key.
/// Reads `cni.dev/valid-attachments`, else `cni.dev/attachments`. An empty list is valid (nothing
/// is in use). A missing or `null` key is code 7: treating it as "nothing is valid" would release
/// every allocation on a malformed request. A list of the wrong shape is code 7 (6 if not JSON).
pub fn valid_attachments(stdin: &[u8]) -> Result<Vec<Attachment>> {
    #[derive(Deserialize)]
    struct Gc {
        #[serde(rename = "cni.dev/valid-attachments", default)]
        valid: Option<Vec<Attachment>>,
        #[serde(rename = "cni.dev/attachments", default)]
        legacy: Option<Vec<Attachment>>,
    }
    let gc: Gc = serde_json::from_slice(stdin).map_err(|e| json_error("GC config", &e))?;
    gc.valid.or(gc.legacy).ok_or_else(|| {
        Error::invalid_config(format!(
            "GC config has no {VALID_ATTACHMENTS_KEY:?} list; refusing to treat every \
             attachment as stale"
        ))
    })
}

/// Longest network name accepted: it becomes a directory name (NAME_MAX).
pub const MAX_NETWORK_NAME: usize = 255;

/// Validates a network name, which becomes a directory name (e.g. host-local's state dir).
///
/// Same rule as libcni (`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`), so no `/`, no `.`/`..`, no whitespace;
/// at most [`MAX_NETWORK_NAME`] bytes. Code 7 (invalid network config), as the reference uses.
pub fn validate_network_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_config(
            "missing network name (\"name\" in the config)",
        ));
    }
    if name.len() > MAX_NETWORK_NAME {
        return Err(Error::invalid_config(format!(
            "network name is {} bytes long; at most {MAX_NETWORK_NAME} are allowed",
            name.len()
        )));
    }
    if !is_cni_identifier(name) {
        return Err(Error::invalid_config(format!(
            "invalid network name {name:?}: must start with a letter or digit and contain only \
             letters, digits, '_', '.' and '-'"
        )));
    }
    Ok(())
}

/// True for `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (container IDs and network names, SPEC "Parameters").
pub fn is_cni_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Interface {
    /// An interface of a result: its name, MAC and sandbox (the pod's netns path; None for a
    /// host interface).
    pub fn named(name: &str, mac: Option<String>, sandbox: Option<String>) -> Interface {
        Interface {
            name: name.to_string(),
            mac,
            sandbox,
            ..Default::default()
        }
    }
}

impl Dns {
    /// The result's DNS: the config's `dns` fields, each falling back to IPAM's.
    pub fn merged(conf: Option<Dns>, ipam: Dns) -> Dns {
        let Some(c) = conf else { return ipam };
        let pick = |a: Vec<String>, b: Vec<String>| if a.is_empty() { b } else { a };
        Dns {
            nameservers: pick(c.nameservers, ipam.nameservers),
            domain: c.domain.or(ipam.domain),
            search: pick(c.search, ipam.search),
            options: pick(c.options, ipam.options),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;
    use serde_json::json;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct BridgeKeys {
        bridge: String,
        #[serde(default)]
        mtu: Option<u32>,
    }

    #[test]
    fn parse_netconf_map_round_trips_every_key() {
        let input = json!({
            "cniVersion": "1.0.0",
            "cniVersions": ["1.0.0", "1.1.0"],
            "name": "pods",
            "type": "bridge-host-gw",
            "args": {"cni": {"ips": ["10.1.0.9"]}},
            "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]},
            "dns": {"nameservers": ["10.96.0.10"]},
            "runtimeConfig": {"mac": "0a:58:0a:01:00:09"},
            "prevResult": {"cniVersion": "1.0.0", "ips": []},
            "bridge": "cni0",
            "mtu": 1450,
            "capabilities": {"ips": true},
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]
        });
        let bytes = serde_json::to_vec(&input).unwrap();
        let conf: NetConf = parse_netconf(&bytes).unwrap();
        assert_eq!(conf.cni_version, "1.0.0");
        assert_eq!(conf.name, "pods");
        assert_eq!(conf.plugin_type, "bridge-host-gw");
        assert_eq!(conf.ip_masq, Some(true));
        assert_eq!(conf.plugin["bridge"], "cni0");
        assert!(
            !conf.plugin.contains_key("name"),
            "typed keys are not duplicated in plugin"
        );
        assert_eq!(serde_json::to_value(&conf).unwrap(), input);
    }

    #[test]
    fn parse_netconf_typed_plugin_keys() {
        let conf: NetConf<BridgeKeys> = parse_netconf(
            br#"{"cniVersion":"0.4.0","name":"n","type":"t","bridge":"br0","mtu":1400}"#,
        )
        .unwrap();
        assert_eq!(
            conf.plugin,
            BridgeKeys {
                bridge: "br0".into(),
                mtu: Some(1400)
            }
        );
    }

    #[test]
    fn parse_netconf_error_codes() {
        // Not JSON: 6.
        for bad in [&b""[..], b"{", b"{\"name\":", b"nope", b"{} trailing"] {
            let err = parse_netconf::<Map<String, Value>>(bad).unwrap_err();
            assert_eq!(
                err.code,
                code::DECODE,
                "{:?}: {err}",
                String::from_utf8_lossy(bad)
            );
        }
        // JSON of the wrong shape: 7, naming the field when serde does.
        let err = parse_netconf::<BridgeKeys>(br#"{"name":"n","type":"t"}"#).unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);
        assert!(err.msg.contains("bridge"), "{}", err.msg);
        let err = parse_netconf::<Map<String, Value>>(br#"{"name":5}"#).unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG, "{err}");
        let err = parse_netconf::<Map<String, Value>>(br#"{"ipMasq":"yes"}"#).unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG, "{err}");
        let err = parse_netconf::<Map<String, Value>>(b"[1,2]").unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG, "{err}");
        let err = parse_netconf::<BridgeKeys>(br#"{"bridge":"b","mtu":"big"}"#).unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG, "{err}");
    }

    #[test]
    fn parse_netconf_names_the_bad_field() {
        for (input, field) in [
            (&br#"{"name":5,"bridge":"b"}"#[..], "\"name\": "),
            (br#"{"bridge":"b","ipMasq":"yes"}"#, "\"ipMasq\": "),
            (br#"{"bridge":"b","mtu":"big"}"#, "\"mtu\": "),
            (br#"{"bridge":"b","mtu":-1}"#, "\"mtu\": "),
            (br#"{"bridge":"b","dns":{"nameservers":"x"}}"#, "\"dns\": "),
            (br#"{"bridge":7}"#, "\"bridge\": "),
            // Two bad keys: the one serde reports is named (typed keys before flattened ones).
            (
                br#"{"bridge":"b","mtu":"x","name":[]}"#,
                "\"name\": invalid type: sequence",
            ),
        ] {
            let err = parse_netconf::<BridgeKeys>(input).unwrap_err();
            assert_eq!(err.code, code::INVALID_CONFIG);
            assert!(
                err.msg.contains(field),
                "{}: {}",
                String::from_utf8_lossy(input),
                err.msg
            );
        }
        // Missing fields keep serde's wording.
        let err = parse_netconf::<BridgeKeys>(br#"{"name":"n"}"#).unwrap_err();
        assert!(err.msg.contains("missing field `bridge`"), "{}", err.msg);
    }

    #[test]
    fn valid_attachments_reads_both_spellings() {
        let conf = br#"{"name":"n","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"containerID":"c2","ifname":"net1"}]}"#;
        assert_eq!(
            valid_attachments(conf).unwrap(),
            vec![
                Attachment {
                    container_id: "c1".into(),
                    ifname: "eth0".into()
                },
                Attachment {
                    container_id: "c2".into(),
                    ifname: "net1".into()
                },
            ]
        );
        let legacy = br#"{"cni.dev/attachments":[{"containerID":"c1","ifname":"eth0"}]}"#;
        assert_eq!(valid_attachments(legacy).unwrap().len(), 1);
        // The 1.1.0 key wins when both are present.
        let both = br#"{"cni.dev/attachments":[],"cni.dev/valid-attachments":[{"containerID":"x","ifname":"e"}]}"#;
        assert_eq!(valid_attachments(both).unwrap()[0].container_id, "x");
        assert!(
            valid_attachments(br#"{"cni.dev/valid-attachments":[]}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn valid_attachments_errors() {
        for (conf, want) in [
            (&br#"{"name":"n"}"#[..], code::INVALID_CONFIG),
            (
                br#"{"cni.dev/valid-attachments":null}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cni.dev/valid-attachments":{"containerID":"a"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cni.dev/valid-attachments":[{"containerID":5,"ifname":"eth0"}]}"#,
                code::INVALID_CONFIG,
            ),
            (br#"{"cni.dev/valid-attachments":["#, code::DECODE),
        ] {
            let err = valid_attachments(conf).unwrap_err();
            assert_eq!(err.code, want, "{}: {err}", String::from_utf8_lossy(conf));
        }
    }

    #[test]
    fn network_name_rules() {
        for good in ["pods", "a", "0", "my-net_1.2", "A.b-C_d", &"n".repeat(255)] {
            assert!(validate_network_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "/abs",
            "-lead",
            "_lead",
            ".hidden",
            "sp ace",
            "tab\t",
            "new\nline",
            "uni\u{e9}",
            "colon:x",
            &"n".repeat(256),
        ] {
            let err = validate_network_name(bad).unwrap_err();
            assert_eq!(err.code, code::INVALID_CONFIG, "{bad:?}");
        }
    }

    #[test]
    fn prev_result_parsed_in_config_version() {
        let conf: NetConf = parse_netconf(
            br#"{"cniVersion":"0.4.0","name":"n","prevResult":{"ips":[{"version":"4","address":"10.1.0.5/24"}]}}"#,
        )
        .unwrap();
        let prev = conf.prev_result().unwrap().unwrap();
        assert_eq!(
            prev.ips[0].address,
            "10.1.0.5/24".parse::<IpNetwork>().unwrap()
        );
        let conf: NetConf = parse_netconf(br#"{"cniVersion":"1.0.0","name":"n"}"#).unwrap();
        assert_eq!(conf.prev_result().unwrap(), None);
        let conf: NetConf = parse_netconf(
            br#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"x"}]}}"#,
        )
        .unwrap();
        let err = conf.prev_result().unwrap_err();
        assert_eq!(err.code, code::DECODE);
        assert!(err.msg.starts_with("prevResult: "), "{}", err.msg);
    }
}
