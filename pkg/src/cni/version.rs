//! CNI versions: the supported list, version comparison, and result conversion to and from each
//! wire format.
//!
//! The result model ([`CniResult`]) is the 1.1.0 shape. On the wire it has three families:
//! - 0.1.0, 0.2.0: `{cniVersion, ip4: {ip, gateway?, routes?}, ip6: {...}, dns}`: only the first
//!   IPv4 and the first IPv6 address, routes filed under the IP config of their family;
//! - 0.3.0, 0.3.1, 0.4.0: `{cniVersion, interfaces?, ips?: [{version, interface?, address,
//!   gateway?}], routes?: [{dst, gw?}], dns}`;
//! - 1.0.0: as 0.4.0 without the per-IP `version`; 1.1.0 adds interface `mtu`, `socketPath`,
//!   `pciID` and route `mtu`, `advmss`, `priority`, `table`, `scope`.
//!
//! Omission follows the reference Go types (containernetworking/cni `pkg/types/{020,040,100}`):
//! empty `interfaces`/`ips`/`routes` arrays are omitted, empty strings and zero `mtu`/`advmss`/
//! `priority` are omitted, and `dns` is always present (`{}` when empty) because Go's `omitempty`
//! has no effect on the struct-typed `DNS` field.

use crate::cni::types::{CniResult, Dns, Interface, IpConfig, Route};
use crate::error::{Error, Result};
use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Every CNI version twill speaks, oldest first.
pub const SUPPORTED: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The newest supported version: answered by VERSION when the runtime names none, and used in
/// error objects when the config's version is unknown.
pub const LATEST: &str = "1.1.0";

/// The version a config without `cniVersion` speaks (reference libcni behaviour).
pub const IMPLICIT: &str = "0.1.0";

/// A parsed `major.minor.patch` version; ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Patch number.
    pub patch: u32,
}

impl Version {
    /// A version from its three numbers.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses `x`, `x.y` or `x.y.z` (decimal digits only; missing parts are 0). The empty string
    /// is 0.1.0, as in libcni. Anything else is code 6 (decode).
    pub fn parse(s: &str) -> Result<Version> {
        if s.is_empty() {
            return Ok(Version::new(0, 1, 0));
        }
        let bad = |why: &str| Error::decode(format!("invalid CNI version {s:?}: {why}"));
        let mut nums = [0u32; 3];
        for (i, part) in s.split('.').enumerate() {
            let slot = nums
                .get_mut(i)
                .ok_or_else(|| bad("more than three dot-separated parts"))?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("each part must be a non-empty decimal number"));
            }
            *slot = part.parse().map_err(|_| bad("number too large"))?;
        }
        Ok(Version::new(nums[0], nums[1], nums[2]))
    }
}

impl FromStr for Version {
    type Err = Error;
    fn from_str(s: &str) -> Result<Version> {
        Version::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Compares two version strings numerically (`"0.10.0" > "0.4.0"`); code 6 on garbage.
pub fn cmp(a: &str, b: &str) -> Result<Ordering> {
    Ok(Version::parse(a)?.cmp(&Version::parse(b)?))
}

/// True when `version >= min`; code 6 if either does not parse.
pub fn at_least(version: &str, min: &str) -> Result<bool> {
    Ok(cmp(version, min)? != Ordering::Less)
}

/// Ok when `version` is supported; code 1 otherwise (the message lists the supported versions).
pub fn check_supported(version: &str) -> Result<()> {
    if SUPPORTED.contains(&version) {
        Ok(())
    } else {
        Err(Error::incompatible_version(format!(
            "CNI version {version:?} is not supported; this plugin supports {}",
            SUPPORTED.join(", ")
        )))
    }
}

/// The wire family of a supported version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// 0.1.0, 0.2.0.
    Legacy,
    /// 0.3.0, 0.3.1, 0.4.0: per-IP `version`.
    V04,
    /// 1.0.0.
    V10,
    /// 1.1.0: interface and route extras.
    V11,
}

fn wire(version: &str) -> Result<Wire> {
    check_supported(version)?;
    Ok(match version {
        "0.1.0" | "0.2.0" => Wire::Legacy,
        "0.3.0" | "0.3.1" | "0.4.0" => Wire::V04,
        "1.0.0" => Wire::V10,
        _ => Wire::V11,
    })
}

/// Serializes `result` as the wire format of CNI `version` (including `cniVersion`).
///
/// Code 1 if `version` is unsupported, or if it is 0.1.0/0.2.0 and the result has no IP address
/// (those versions cannot express such a result; the reference converter refuses it too).
pub fn result_to_json(result: &CniResult, version: &str) -> Result<Value> {
    let wire = wire(version)?;
    let mut out = Map::new();
    out.insert("cniVersion".into(), Value::String(version.into()));
    if wire == Wire::Legacy {
        let ip4 = legacy_ip(result, true);
        let ip6 = legacy_ip(result, false);
        if ip4.is_none() && ip6.is_none() {
            return Err(Error::incompatible_version(format!(
                "cannot express the result in CNI {version}: it has no IP address"
            )));
        }
        if let Some(ip) = ip4 {
            out.insert("ip4".into(), ip);
        }
        if let Some(ip) = ip6 {
            out.insert("ip6".into(), ip);
        }
    } else {
        if !result.interfaces.is_empty() {
            let ifaces = result
                .interfaces
                .iter()
                .map(|i| interface_json(i, wire))
                .collect();
            out.insert("interfaces".into(), Value::Array(ifaces));
        }
        if !result.ips.is_empty() {
            let ips = result.ips.iter().map(|ip| ip_json(ip, wire)).collect();
            out.insert("ips".into(), Value::Array(ips));
        }
        if !result.routes.is_empty() {
            let routes = result.routes.iter().map(|r| route_json(r, wire)).collect();
            out.insert("routes".into(), Value::Array(routes));
        }
    }
    out.insert("dns".into(), dns_json(&result.dns));
    Ok(Value::Object(out))
}

/// The 0.2.0 `ip4`/`ip6` object: the first address of the family, and the routes whose
/// destination is of that family (`dst` and `gw` only).
fn legacy_ip(result: &CniResult, v4: bool) -> Option<Value> {
    let ip = result.ips.iter().find(|ip| ip.address.is_ipv4() == v4)?;
    let mut obj = Map::new();
    obj.insert("ip".into(), Value::String(ip.address.to_string()));
    if let Some(gw) = ip.gateway {
        obj.insert("gateway".into(), Value::String(gw.to_string()));
    }
    let routes: Vec<Value> = result
        .routes
        .iter()
        .filter(|r| r.dst.is_ipv4() == v4)
        .map(|r| route_json(r, Wire::Legacy))
        .collect();
    if !routes.is_empty() {
        obj.insert("routes".into(), Value::Array(routes));
    }
    Some(Value::Object(obj))
}

fn insert_str(obj: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
        obj.insert(key.into(), Value::String(v.into()));
    }
}

fn insert_nonzero(obj: &mut Map<String, Value>, key: &str, value: Option<u32>) {
    if let Some(v) = value.filter(|v| *v != 0) {
        obj.insert(key.into(), json!(v));
    }
}

fn interface_json(iface: &Interface, wire: Wire) -> Value {
    let mut obj = Map::new();
    obj.insert("name".into(), Value::String(iface.name.clone()));
    insert_str(&mut obj, "mac", &iface.mac);
    if wire == Wire::V11 {
        insert_nonzero(&mut obj, "mtu", iface.mtu);
    }
    insert_str(&mut obj, "sandbox", &iface.sandbox);
    if wire == Wire::V11 {
        insert_str(&mut obj, "socketPath", &iface.socket_path);
        insert_str(&mut obj, "pciID", &iface.pci_id);
    }
    Value::Object(obj)
}

fn ip_json(ip: &IpConfig, wire: Wire) -> Value {
    let mut obj = Map::new();
    if wire == Wire::V04 {
        let family = if ip.address.is_ipv4() { "4" } else { "6" };
        obj.insert("version".into(), Value::String(family.into()));
    }
    if let Some(index) = ip.interface {
        obj.insert("interface".into(), json!(index));
    }
    obj.insert("address".into(), Value::String(ip.address.to_string()));
    if let Some(gw) = ip.gateway {
        obj.insert("gateway".into(), Value::String(gw.to_string()));
    }
    Value::Object(obj)
}

fn route_json(route: &Route, wire: Wire) -> Value {
    let mut obj = Map::new();
    obj.insert("dst".into(), Value::String(route.dst.to_string()));
    if let Some(gw) = route.gw {
        obj.insert("gw".into(), Value::String(gw.to_string()));
    }
    if wire == Wire::V11 {
        insert_nonzero(&mut obj, "mtu", route.mtu);
        insert_nonzero(&mut obj, "advmss", route.adv_mss);
        insert_nonzero(&mut obj, "priority", route.priority);
        if let Some(table) = route.table {
            obj.insert("table".into(), json!(table));
        }
        if let Some(scope) = route.scope {
            obj.insert("scope".into(), json!(scope));
        }
    }
    Value::Object(obj)
}

fn dns_json(dns: &Dns) -> Value {
    let mut obj = Map::new();
    let list = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    if !dns.nameservers.is_empty() {
        obj.insert("nameservers".into(), list(&dns.nameservers));
    }
    insert_str(&mut obj, "domain", &dns.domain);
    if !dns.search.is_empty() {
        obj.insert("search".into(), list(&dns.search));
    }
    if !dns.options.is_empty() {
        obj.insert("options".into(), list(&dns.options));
    }
    Value::Object(obj)
}

/// Parses a result (prevResult, an IPAM plugin's answer) into the model.
///
/// The shape is chosen by the result's own `cniVersion` when it has one (as libcni does for
/// plugin output), else by `version`. Code 1 if that version is unsupported, code 6 if the value
/// does not have the shape of that version (not an object, a field of the wrong type, an address
/// that is not `ip/prefix`, an `interface` index outside `interfaces`). Unknown keys are ignored.
pub fn parse_result(value: &Value, version: &str) -> Result<CniResult> {
    let obj = value.as_object().ok_or_else(|| {
        Error::decode(format!(
            "CNI result must be a JSON object, got {}",
            kind(value)
        ))
    })?;
    let version = match obj.get("cniVersion") {
        None | Some(Value::Null) => version,
        Some(Value::String(v)) if v.is_empty() => version,
        Some(Value::String(v)) => v.as_str(),
        Some(other) => {
            return Err(Error::decode(format!(
                "CNI result: cniVersion must be a string, got {}",
                kind(other)
            )));
        }
    };
    let wire = wire(version).map_err(|e| e.context("CNI result"))?;
    let decode = |e: serde_json::Error| Error::decode(format!("invalid CNI {version} result: {e}"));
    let result = match wire {
        Wire::Legacy => LegacyResult::deserialize(value)
            .map_err(decode)?
            .into_model(),
        _ => {
            let wire_result = CurrentResult::deserialize(value).map_err(decode)?;
            wire_result.check(version, wire)?;
            wire_result.into_model()
        }
    };
    Ok(result)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deserializes an `ip/prefix` string strictly (a prefix length is required, no netmask form).
fn cidr<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<IpNetwork, D::Error> {
    use serde::de::Error as _;
    let s = String::deserialize(d)?;
    let parsed = match s.split_once('/') {
        Some((addr, prefix))
            if !prefix.is_empty()
                && prefix.len() <= 3
                && prefix.bytes().all(|b| b.is_ascii_digit()) =>
        {
            addr.parse::<IpAddr>()
                .ok()
                .and_then(|a| prefix.parse::<u8>().ok().map(|p| (a, p)))
                .and_then(|(a, p)| IpNetwork::new(a, p).ok())
        }
        _ => None,
    };
    parsed.ok_or_else(|| D::Error::custom(format!("invalid CIDR {s:?} (want ip/prefix)")))
}

fn opt_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

fn opt_nonzero<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u32>, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.filter(|v| *v != 0))
}

#[derive(Deserialize)]
struct WireRoute {
    #[serde(deserialize_with = "cidr")]
    dst: IpNetwork,
    #[serde(default)]
    gw: Option<IpAddr>,
    #[serde(default, deserialize_with = "opt_nonzero")]
    mtu: Option<u32>,
    #[serde(default, deserialize_with = "opt_nonzero")]
    advmss: Option<u32>,
    #[serde(default, deserialize_with = "opt_nonzero")]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u8>,
}

impl WireRoute {
    fn into_model(self) -> Route {
        Route {
            dst: self.dst,
            gw: self.gw,
            mtu: self.mtu,
            adv_mss: self.advmss,
            priority: self.priority,
            table: self.table,
            scope: self.scope,
        }
    }
}

#[derive(Deserialize, Default)]
struct WireDns {
    #[serde(default)]
    nameservers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "opt_string")]
    domain: Option<String>,
    #[serde(default)]
    search: Option<Vec<String>>,
    #[serde(default)]
    options: Option<Vec<String>>,
}

impl WireDns {
    fn into_model(self) -> Dns {
        Dns {
            nameservers: self.nameservers.unwrap_or_default(),
            domain: self.domain,
            search: self.search.unwrap_or_default(),
            options: self.options.unwrap_or_default(),
        }
    }
}

#[derive(Deserialize)]
struct LegacyIp {
    #[serde(deserialize_with = "cidr")]
    ip: IpNetwork,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Option<Vec<WireRoute>>,
}

#[derive(Deserialize)]
struct LegacyResult {
    #[serde(default)]
    ip4: Option<LegacyIp>,
    #[serde(default)]
    ip6: Option<LegacyIp>,
    #[serde(default)]
    dns: Option<WireDns>,
}

impl LegacyResult {
    fn into_model(self) -> CniResult {
        let mut result = CniResult {
            dns: self.dns.unwrap_or_default().into_model(),
            ..CniResult::default()
        };
        for ip in [self.ip4, self.ip6].into_iter().flatten() {
            result.ips.push(IpConfig {
                address: ip.ip,
                gateway: ip.gateway,
                interface: None,
            });
            let routes = ip.routes.unwrap_or_default().into_iter();
            result
                .routes
                .extend(routes.map(|r| Route::new(r.dst, r.gw)));
        }
        result
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireInterface {
    name: String,
    #[serde(default, deserialize_with = "opt_string")]
    mac: Option<String>,
    #[serde(default, deserialize_with = "opt_nonzero")]
    mtu: Option<u32>,
    #[serde(default, deserialize_with = "opt_string")]
    sandbox: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    socket_path: Option<String>,
    #[serde(rename = "pciID", default, deserialize_with = "opt_string")]
    pci_id: Option<String>,
}

#[derive(Deserialize)]
struct WireIp {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
    #[serde(deserialize_with = "cidr")]
    address: IpNetwork,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Deserialize)]
struct CurrentResult {
    #[serde(default)]
    interfaces: Option<Vec<WireInterface>>,
    #[serde(default)]
    ips: Option<Vec<WireIp>>,
    #[serde(default)]
    routes: Option<Vec<WireRoute>>,
    #[serde(default)]
    dns: Option<WireDns>,
}

impl CurrentResult {
    /// Checks what serde cannot: per-IP `version` values and interface indexes.
    fn check(&self, version: &str, wire: Wire) -> Result<()> {
        let n_ifaces = self.interfaces.as_ref().map_or(0, Vec::len);
        for (i, ip) in self.ips.iter().flatten().enumerate() {
            if let Some(v) = ip.version.as_deref()
                && wire == Wire::V04
                && v != "4"
                && v != "6"
            {
                return Err(Error::decode(format!(
                    "invalid CNI {version} result: ips[{i}].version must be \"4\" or \"6\", got {v:?}"
                )));
            }
            if let Some(index) = ip.interface
                && index >= n_ifaces
            {
                return Err(Error::decode(format!(
                    "invalid CNI {version} result: ips[{i}].interface is {index} but there are \
                     {n_ifaces} interfaces"
                )));
            }
        }
        Ok(())
    }

    fn into_model(self) -> CniResult {
        CniResult {
            interfaces: (self.interfaces.unwrap_or_default().into_iter())
                .map(|i| Interface {
                    name: i.name,
                    mac: i.mac,
                    mtu: i.mtu,
                    sandbox: i.sandbox,
                    socket_path: i.socket_path,
                    pci_id: i.pci_id,
                })
                .collect(),
            ips: (self.ips.unwrap_or_default().into_iter())
                .map(|ip| IpConfig {
                    address: ip.address,
                    gateway: ip.gateway,
                    interface: ip.interface,
                })
                .collect(),
            routes: (self.routes.unwrap_or_default().into_iter())
                .map(WireRoute::into_model)
                .collect(),
            dns: self.dns.unwrap_or_default().into_model(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A result using every field, 1.1.0-only extras included.
    fn full() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: Some("0a:58:0a:01:00:01".into()),
                    mtu: Some(1450),
                    sandbox: None,
                    socket_path: Some("/run/vhost.sock".into()),
                    pci_id: Some("0000:00:1f.6".into()),
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:01:00:05".into()),
                    mtu: None,
                    sandbox: Some("/run/netns/pod".into()),
                    socket_path: None,
                    pci_id: None,
                },
            ],
            ips: vec![
                IpConfig {
                    address: net("10.1.0.5/24"),
                    gateway: Some(ip("10.1.0.1")),
                    interface: Some(1),
                },
                IpConfig {
                    address: net("10.1.0.6/24"),
                    gateway: None,
                    interface: Some(1),
                },
                IpConfig {
                    address: net("fd00::5/64"),
                    gateway: Some(ip("fd00::1")),
                    interface: Some(1),
                },
            ],
            routes: vec![
                Route::new(net("0.0.0.0/0"), None),
                Route {
                    dst: net("10.2.0.0/16"),
                    gw: Some(ip("10.1.0.254")),
                    mtu: Some(1400),
                    adv_mss: Some(1360),
                    priority: Some(10),
                    table: Some(100),
                    scope: Some(0),
                },
                Route::new(net("::/0"), Some(ip("fd00::1"))),
            ],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                domain: Some("cluster.local".into()),
                search: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            },
        }
    }

    /// What survives a trip through `version` (fields the version cannot carry are dropped).
    fn expected_after(version: &str) -> CniResult {
        let mut r = full();
        match version {
            "1.1.0" => {}
            "0.1.0" | "0.2.0" => {
                r.interfaces.clear();
                r.ips = vec![
                    IpConfig {
                        address: net("10.1.0.5/24"),
                        gateway: Some(ip("10.1.0.1")),
                        interface: None,
                    },
                    IpConfig {
                        address: net("fd00::5/64"),
                        gateway: Some(ip("fd00::1")),
                        interface: None,
                    },
                ];
                r.routes = vec![
                    Route::new(net("0.0.0.0/0"), None),
                    Route::new(net("10.2.0.0/16"), Some(ip("10.1.0.254"))),
                    Route::new(net("::/0"), Some(ip("fd00::1"))),
                ];
            }
            _ => {
                for i in &mut r.interfaces {
                    i.mtu = None;
                    i.socket_path = None;
                    i.pci_id = None;
                }
                for route in &mut r.routes {
                    *route = Route::new(route.dst, route.gw);
                }
            }
        }
        r
    }

    #[test]
    fn round_trip_every_version() {
        for v in SUPPORTED {
            let json = result_to_json(&full(), v).unwrap();
            assert_eq!(json["cniVersion"], *v);
            let back = parse_result(&json, v).unwrap();
            assert_eq!(back, expected_after(v), "version {v}: {json:#}");
            // A second trip is lossless.
            assert_eq!(result_to_json(&back, v).unwrap(), json, "version {v}");
        }
    }

    #[test]
    fn v110_exact_shape() {
        let json = result_to_json(&full(), "1.1.0").unwrap();
        let want = json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "cni0", "mac": "0a:58:0a:01:00:01", "mtu": 1450,
                 "socketPath": "/run/vhost.sock", "pciID": "0000:00:1f.6"},
                {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/run/netns/pod"}
            ],
            "ips": [
                {"interface": 1, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
                {"interface": 1, "address": "10.1.0.6/24"},
                {"interface": 1, "address": "fd00::5/64", "gateway": "fd00::1"}
            ],
            "routes": [
                {"dst": "0.0.0.0/0"},
                {"dst": "10.2.0.0/16", "gw": "10.1.0.254", "mtu": 1400, "advmss": 1360,
                 "priority": 10, "table": 100, "scope": 0},
                {"dst": "::/0", "gw": "fd00::1"}
            ],
            "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local",
                    "search": ["default.svc.cluster.local"], "options": ["ndots:5"]}
        });
        assert_eq!(json, want);
    }

    #[test]
    fn v040_has_ip_version_and_no_extras() {
        for v in ["0.3.0", "0.3.1", "0.4.0"] {
            let json = result_to_json(&full(), v).unwrap();
            assert_eq!(json["ips"][0]["version"], "4");
            assert_eq!(json["ips"][2]["version"], "6");
            assert_eq!(
                json["interfaces"][0],
                json!({"name": "cni0", "mac": "0a:58:0a:01:00:01"})
            );
            assert_eq!(
                json["routes"][1],
                json!({"dst": "10.2.0.0/16", "gw": "10.1.0.254"})
            );
        }
    }

    #[test]
    fn v100_has_no_ip_version_and_no_extras() {
        let json = result_to_json(&full(), "1.0.0").unwrap();
        for ip in json["ips"].as_array().unwrap() {
            assert!(ip.get("version").is_none(), "{ip}");
        }
        assert!(json["interfaces"][0].get("mtu").is_none());
        assert!(json["interfaces"][0].get("socketPath").is_none());
        assert!(json["interfaces"][0].get("pciID").is_none());
        assert_eq!(
            json["routes"][1],
            json!({"dst": "10.2.0.0/16", "gw": "10.1.0.254"})
        );
    }

    #[test]
    fn v020_splits_by_family_first_address_only() {
        let json = result_to_json(&full(), "0.2.0").unwrap();
        let want = json!({
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.0.5/24", "gateway": "10.1.0.1",
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.2.0.0/16", "gw": "10.1.0.254"}]},
            "ip6": {"ip": "fd00::5/64", "gateway": "fd00::1",
                    "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
            "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local",
                    "search": ["default.svc.cluster.local"], "options": ["ndots:5"]}
        });
        assert_eq!(json, want);
    }

    #[test]
    fn v020_drops_routes_of_a_family_without_address() {
        let r = CniResult {
            ips: vec![IpConfig {
                address: net("10.1.0.5/24"),
                gateway: None,
                interface: None,
            }],
            routes: vec![
                Route::new(net("::/0"), None),
                Route::new(net("0.0.0.0/0"), None),
            ],
            ..CniResult::default()
        };
        let json = result_to_json(&r, "0.1.0").unwrap();
        assert_eq!(
            json,
            json!({"cniVersion": "0.1.0", "ip4": {"ip": "10.1.0.5/24", "routes": [{"dst": "0.0.0.0/0"}]},
                   "dns": {}})
        );
    }

    #[test]
    fn v020_without_ips_is_refused() {
        let r = CniResult {
            interfaces: full().interfaces,
            ..CniResult::default()
        };
        let err = result_to_json(&r, "0.2.0").unwrap_err();
        assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
        assert!(result_to_json(&r, "0.3.1").is_ok());
    }

    #[test]
    fn empty_arrays_omitted_dns_always_present() {
        let r = CniResult {
            ips: vec![IpConfig {
                address: net("10.1.0.5/24"),
                gateway: None,
                interface: None,
            }],
            ..CniResult::default()
        };
        for v in ["0.3.0", "0.4.0", "1.0.0", "1.1.0"] {
            let json = result_to_json(&r, v).unwrap();
            let obj = json.as_object().unwrap();
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["cniVersion", "dns", "ips"], "{v}");
            assert_eq!(json["dns"], json!({}));
        }
    }

    #[test]
    fn empty_strings_and_zero_numbers_omitted() {
        let r = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some(String::new()),
                mtu: Some(0),
                sandbox: Some(String::new()),
                socket_path: None,
                pci_id: None,
            }],
            routes: vec![Route {
                mtu: Some(0),
                priority: Some(0),
                table: Some(0),
                ..Route::new(net("0.0.0.0/0"), None)
            }],
            dns: Dns {
                domain: Some(String::new()),
                ..Dns::default()
            },
            ..CniResult::default()
        };
        let json = result_to_json(&r, "1.1.0").unwrap();
        assert_eq!(json["interfaces"][0], json!({"name": "eth0"}));
        assert_eq!(json["routes"][0], json!({"dst": "0.0.0.0/0", "table": 0}));
        assert_eq!(json["dns"], json!({}));
    }

    #[test]
    fn unsupported_version_is_code_1() {
        for v in ["", "0.5.0", "1.2.0", "1.0", "garbage"] {
            let err = result_to_json(&full(), v).unwrap_err();
            assert_eq!(err.code, code::INCOMPATIBLE_VERSION, "{v}");
            assert!(
                err.msg
                    .contains("0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
                "{}",
                err.msg
            );
        }
        assert!(check_supported("1.1.0").is_ok());
        assert_eq!(check_supported("0.9.9").unwrap_err().code, 1);
    }

    #[test]
    fn parse_uses_embedded_version() {
        // A 0.4.0-shaped answer parsed while the caller speaks 1.0.0.
        let v = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/8"}});
        let r = parse_result(&v, "1.0.0").unwrap();
        assert_eq!(r.ips[0].address, net("10.0.0.2/8"));
        // No embedded version: the caller's is used.
        let v = json!({"ips": [{"address": "10.0.0.2/8"}]});
        assert_eq!(parse_result(&v, "1.0.0").unwrap().ips.len(), 1);
        // Unsupported embedded version.
        let v = json!({"cniVersion": "9.0.0", "ips": []});
        assert_eq!(
            parse_result(&v, "1.0.0").unwrap_err().code,
            code::INCOMPATIBLE_VERSION
        );
    }

    #[test]
    fn parse_accepts_minimal_and_nulls() {
        let v = json!({"cniVersion": "1.0.0"});
        assert_eq!(parse_result(&v, "1.0.0").unwrap(), CniResult::default());
        let v = json!({"cniVersion": "1.0.0", "interfaces": null, "ips": null, "routes": null,
                       "dns": null, "unknownKey": [1, 2]});
        assert_eq!(parse_result(&v, "1.0.0").unwrap(), CniResult::default());
        let v = json!({"cniVersion": "0.2.0", "dns": {}});
        assert_eq!(parse_result(&v, "0.2.0").unwrap(), CniResult::default());
    }

    #[test]
    fn parse_rejects_garbage_with_code_6() {
        let cases = [
            json!("not an object"),
            json!([1, 2]),
            json!({"cniVersion": 100}),
            json!({"cniVersion": "1.0.0", "ips": {"address": "10.0.0.1/8"}}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/255.0.0.0"}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/33"}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "banana/8"}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"gateway": "10.0.0.1"}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/8", "gateway": "nope"}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/8", "interface": 0}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/8", "interface": -1}]}),
            json!({"cniVersion": "0.4.0", "ips": [{"version": "5", "address": "10.0.0.2/8"}]}),
            json!({"cniVersion": "1.0.0", "interfaces": [{"mac": "aa:bb:cc:dd:ee:ff"}]}),
            json!({"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]}),
            json!({"cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "mtu": "big"}]}),
            json!({"cniVersion": "1.0.0", "dns": {"nameservers": "10.0.0.1"}}),
            json!({"cniVersion": "0.2.0", "ip4": {"ip": 5}}),
            json!({"cniVersion": "0.2.0", "ip4": "10.0.0.1/8"}),
        ];
        for v in cases {
            let err = parse_result(&v, "1.0.0").unwrap_err();
            assert_eq!(err.code, code::DECODE, "{v} -> {err}");
        }
    }

    #[test]
    fn version_parse_and_compare() {
        assert_eq!(Version::parse("1.1.0").unwrap(), Version::new(1, 1, 0));
        assert_eq!(Version::parse("0.4").unwrap(), Version::new(0, 4, 0));
        assert_eq!(Version::parse("2").unwrap(), Version::new(2, 0, 0));
        assert_eq!(Version::parse("").unwrap(), Version::new(0, 1, 0));
        assert_eq!(Version::parse("0.10.0").unwrap().to_string(), "0.10.0");
        for bad in [
            "a.b.c",
            "1.2.3.4",
            "1..0",
            ".1",
            "1.2.",
            "-1.0.0",
            "+1.0.0",
            "1.0.0-rc1",
            " 1.0.0",
            "99999999999",
        ] {
            let err = Version::parse(bad).unwrap_err();
            assert_eq!(err.code, code::DECODE, "{bad}");
            assert!(err.msg.contains(bad), "{}", err.msg);
        }
        assert_eq!(cmp("0.10.0", "0.4.0").unwrap(), Ordering::Greater);
        assert_eq!(cmp("0.3.1", "0.4.0").unwrap(), Ordering::Less);
        assert_eq!(cmp("1.0", "1.0.0").unwrap(), Ordering::Equal);
        assert!(at_least("0.4.0", "0.4.0").unwrap());
        assert!(!at_least("0.3.1", "0.4.0").unwrap());
        assert!(at_least("1.1.0", "1.0.0").unwrap());
        assert!(cmp("x", "1.0.0").is_err());
        // SUPPORTED is sorted and LATEST is its last element.
        let parsed: Vec<Version> = SUPPORTED
            .iter()
            .map(|v| Version::parse(v).unwrap())
            .collect();
        assert!(parsed.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(SUPPORTED.last(), Some(&LATEST));
    }
}
