//! host-local configuration: the `ipam` section (legacy single range and `ranges`), plus the
//! `ipRanges` capability, parsed and validated with the reference plugin's semantics.
//!
//! Every error is code 7 and names the offending field (`ipam.ranges[1][0].rangeEnd`).

use crate::cni::types::{Route, validate_network_name};
use crate::error::{Error, Result};
use ipnetwork::IpNetwork;
use serde_json::{Map, Value};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::lock::DEFAULT_LOCK_TIMEOUT;

/// Where reservations live when `ipam.dataDir` is not set (same as the reference plugin).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// One contiguous range of allocatable addresses inside a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet (network address and prefix); results carry this prefix.
    pub subnet: IpNetwork,
    /// First address handed out, inclusive (default: network + 1).
    pub range_start: IpAddr,
    /// Last address handed out, inclusive (default: last address, minus broadcast for IPv4).
    pub range_end: IpAddr,
    /// Gateway returned in results and never handed out (default: network + 1).
    pub gateway: IpAddr,
}

impl Range {
    /// True when `ip` is of this family, inside the subnet and within start..=end.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.subnet.is_ipv4()
            && self.subnet.contains(ip)
            && to_u128(ip) >= to_u128(self.range_start)
            && to_u128(ip) <= to_u128(self.range_end)
    }

    /// True when `ip` must never be handed out from this range: the gateway, and for IPv4 the
    /// subnet's network and broadcast addresses.
    pub fn is_excluded(&self, ip: IpAddr) -> bool {
        ip == self.gateway
            || (self.subnet.is_ipv4()
                && (ip == self.subnet.network() || ip == self.subnet.broadcast()))
    }

    /// True for IPv4 ranges.
    pub fn is_ipv4(&self) -> bool {
        self.subnet.is_ipv4()
    }

    /// How many addresses of this range may be handed out (start..=end minus the excluded ones),
    /// saturating at `u128::MAX`.
    pub fn capacity(&self) -> u128 {
        let (s, e) = (to_u128(self.range_start), to_u128(self.range_end));
        let total = (e - s).saturating_add(1);
        let mut excluded = vec![self.gateway];
        if self.is_ipv4() {
            excluded.push(self.subnet.network());
            excluded.push(self.subnet.broadcast());
        }
        excluded.sort();
        excluded.dedup();
        let n = excluded.iter().filter(|ip| self.contains(**ip)).count() as u128;
        total - n
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && to_u128(self.range_start) <= to_u128(other.range_end)
            && to_u128(other.range_start) <= to_u128(self.range_end)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.range_start, self.range_end)
    }
}

/// A set of ranges of one address family; an ADD takes exactly one address per set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    /// The ranges, in config order (also the allocation order).
    pub ranges: Vec<Range>,
}

impl RangeSet {
    /// The range containing `ip`, if any.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    /// True when some range of the set contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    /// True for an IPv4 set.
    pub fn is_ipv4(&self) -> bool {
        self.ranges.first().is_some_and(Range::is_ipv4)
    }

    fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges
            .iter()
            .any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// A validated host-local configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The network name (`name` of the network config): the directory under `data_dir`.
    pub network: String,
    /// The config's `cniVersion`.
    pub cni_version: String,
    /// `ipam.dataDir` (default [`DEFAULT_DATA_DIR`]).
    pub data_dir: PathBuf,
    /// `ipam.resolvConf`: a resolv.conf whose settings are returned as the result's DNS.
    pub resolv_conf: Option<PathBuf>,
    /// `ipam.routes`, returned as-is in results.
    pub routes: Vec<Route>,
    /// The range sets: `runtimeConfig.ipRanges`, then the legacy top-level range, then `ranges`.
    pub range_sets: Vec<RangeSet>,
}

impl Config {
    /// The directory holding this network's reservations: `<dataDir>/<network>`.
    pub fn network_dir(&self) -> PathBuf {
        self.data_dir.join(&self.network)
    }

    /// Parses and validates the `ipam` section of network `network` (config `cniVersion`
    /// `cni_version`); `runtime_config` is the network config's `runtimeConfig`, whose
    /// `ipRanges` capability, when present, is prepended to the configured range sets.
    pub fn parse(
        network: &str,
        cni_version: &str,
        ipam: &Value,
        runtime_config: Option<&Value>,
    ) -> Result<Config> {
        validate_network_name(network)?;
        let obj = ipam.as_object().ok_or_else(|| {
            Error::invalid_config(format!("ipam: expected an object, got {ipam}"))
        })?;

        let data_dir = match opt_str(obj, "dataDir", "ipam")? {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => PathBuf::from(DEFAULT_DATA_DIR),
        };
        let resolv_conf = opt_str(obj, "resolvConf", "ipam")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let routes = match obj.get("routes") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value::<Vec<Route>>(v.clone()).map_err(|e| {
                Error::invalid_config(format!(
                    "ipam.routes: expected a list of {{\"dst\": CIDR, \"gw\": IP}}: {e}"
                ))
            })?,
        };

        let mut range_sets = Vec::new();
        if let Some(rc) = runtime_config
            && let Some(ranges) = rc.get("ipRanges").filter(|v| !v.is_null())
        {
            range_sets.extend(parse_range_sets(ranges, "runtimeConfig.ipRanges")?);
        }
        if obj.get("subnet").is_some_and(|v| !v.is_null()) {
            range_sets.push(RangeSet {
                ranges: vec![parse_range(obj, "ipam")?],
            });
        }
        if let Some(ranges) = obj.get("ranges").filter(|v| !v.is_null()) {
            range_sets.extend(parse_range_sets(ranges, "ipam.ranges")?);
        }
        if range_sets.is_empty() {
            return Err(Error::invalid_config(
                "ipam: no IP ranges specified: set ipam.subnet or ipam.ranges",
            ));
        }

        for (i, a) in range_sets.iter().enumerate() {
            for (j, b) in range_sets.iter().enumerate().skip(i + 1) {
                if a.overlaps(b) {
                    return Err(Error::invalid_config(format!(
                        "ipam: range set {i} ({a}) overlaps with range set {j} ({b})"
                    )));
                }
            }
        }
        let v4 = range_sets.iter().filter(|s| s.is_ipv4()).count();
        let v6 = range_sets.len() - v4;
        if (v4 > 1 || v6 > 1) && version_below_0_3(cni_version) {
            return Err(Error::invalid_config(format!(
                "ipam: CNI version {cni_version} supports at most one address per family; \
                 use cniVersion 0.3.0 or later for {v4} IPv4 and {v6} IPv6 range sets"
            )));
        }

        Ok(Config {
            network: network.to_string(),
            cni_version: cni_version.to_string(),
            data_dir,
            resolv_conf,
            routes,
            range_sets,
        })
    }
}

/// How host-local guards its directory, beyond the reference's keys (which it ignores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `ipam.lockTimeout` (seconds, default 5): how long an operation waits for the lock
    /// before failing with code 11.
    pub lock_timeout: Duration,
    /// `ipam.releaseOnReboot` (default true): the first ADD after a reboot releases the
    /// reservations of earlier boots.
    pub release_on_reboot: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            release_on_reboot: true,
        }
    }
}

/// Longest `ipam.lockTimeout` accepted, in seconds.
const MAX_LOCK_TIMEOUT_SECS: f64 = 3600.0;

impl Policy {
    /// Reads `lockTimeout` and `releaseOnReboot` from the `ipam` section (code 7 when of the
    /// wrong type or out of range).
    pub fn parse(ipam: &Value) -> Result<Policy> {
        let mut policy = Policy::default();
        let Some(obj) = ipam.as_object() else {
            return Ok(policy);
        };
        match obj.get("lockTimeout") {
            None | Some(Value::Null) => {}
            Some(v) => {
                let secs = v
                    .as_f64()
                    .filter(|s| *s > 0.0 && *s <= MAX_LOCK_TIMEOUT_SECS)
                    .ok_or_else(|| {
                        Error::invalid_config(format!(
                            "ipam.lockTimeout: expected seconds, more than 0 and at most \
                             {MAX_LOCK_TIMEOUT_SECS}, got {v}"
                        ))
                    })?;
                policy.lock_timeout = Duration::from_secs_f64(secs);
            }
        }
        match obj.get("releaseOnReboot") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => policy.release_on_reboot = *b,
            Some(other) => {
                return Err(Error::invalid_config(format!(
                    "ipam.releaseOnReboot: expected true or false, got {other}"
                )));
            }
        }
        Ok(policy)
    }
}

/// True when `version` is a CNI version below 0.3.0 (one address per family at most).
fn version_below_0_3(version: &str) -> bool {
    !version.is_empty() && !crate::cni::version::at_least(version, "0.3.0").unwrap_or(true)
}

fn parse_range_sets(value: &Value, field: &str) -> Result<Vec<RangeSet>> {
    let sets = value.as_array().ok_or_else(|| {
        Error::invalid_config(format!(
            "{field}: expected a list of range sets, got {value}"
        ))
    })?;
    sets.iter()
        .enumerate()
        .map(|(i, set)| parse_range_set(set, &format!("{field}[{i}]")))
        .collect()
}

fn parse_range_set(value: &Value, field: &str) -> Result<RangeSet> {
    let items = value.as_array().ok_or_else(|| {
        Error::invalid_config(format!("{field}: expected a list of ranges, got {value}"))
    })?;
    if items.is_empty() {
        return Err(Error::invalid_config(format!(
            "{field}: empty range set: give at least one {{\"subnet\": CIDR}}"
        )));
    }
    let mut ranges = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let f = format!("{field}[{j}]");
        let obj = item
            .as_object()
            .ok_or_else(|| Error::invalid_config(format!("{f}: expected an object, got {item}")))?;
        ranges.push(parse_range(obj, &f)?);
    }
    let set = RangeSet { ranges };
    let v4 = set.ranges[0].is_ipv4();
    if let Some(j) = set.ranges.iter().position(|r| r.is_ipv4() != v4) {
        return Err(Error::invalid_config(format!(
            "{field}[{j}]: mixed address families in one range set; put IPv4 and IPv6 ranges \
             in separate range sets"
        )));
    }
    for (a, ra) in set.ranges.iter().enumerate() {
        for (b, rb) in set.ranges.iter().enumerate().skip(a + 1) {
            if ra.overlaps(rb) {
                return Err(Error::invalid_config(format!(
                    "{field}: ranges {a} ({ra}) and {b} ({rb}) overlap"
                )));
            }
        }
    }
    Ok(set)
}

/// Parses one range object (`subnet`, `rangeStart`, `rangeEnd`, `gateway`) found at `field`.
fn parse_range(obj: &Map<String, Value>, field: &str) -> Result<Range> {
    let subnet_str = opt_str(obj, "subnet", field)?
        .ok_or_else(|| Error::invalid_config(format!("{field}.subnet: missing")))?;
    let subnet = parse_cidr(subnet_str).ok_or_else(|| {
        bad(
            field,
            "subnet",
            subnet_str,
            "is not a CIDR like 10.1.0.0/24",
        )
    })?;
    let network = subnet.network();
    if subnet.ip() != network {
        return Err(bad(
            field,
            "subnet",
            subnet_str,
            &format!(
                "has host bits set; the network address is {network}/{}",
                subnet.prefix()
            ),
        ));
    }
    let bits = if subnet.is_ipv4() { 32 } else { 128 };
    if subnet.prefix() > bits - 2 {
        return Err(bad(
            field,
            "subnet",
            subnet_str,
            &format!(
                "is too small to allocate from (at most /{} for this family)",
                bits - 2
            ),
        ));
    }
    let first = from_u128(to_u128(network) + 1, subnet.is_ipv4());
    let last = if subnet.is_ipv4() {
        from_u128(to_u128(subnet.broadcast()) - 1, true)
    } else {
        subnet.broadcast()
    };

    let ip_field = |key: &str| -> Result<Option<IpAddr>> {
        let Some(s) = opt_str(obj, key, field)? else {
            return Ok(None);
        };
        let ip = s
            .parse::<IpAddr>()
            .map_err(|_| bad(field, key, s, "is not an IP address"))?
            .to_canonical();
        if ip.is_ipv4() != subnet.is_ipv4() {
            return Err(bad(
                field,
                key,
                s,
                &format!("is not of the family of subnet {subnet}"),
            ));
        }
        Ok(Some(ip))
    };
    let gateway = ip_field("gateway")?.unwrap_or(first);
    let range_start = ip_field("rangeStart")?.unwrap_or(first);
    let range_end = ip_field("rangeEnd")?.unwrap_or(last);
    for (key, ip) in [("rangeStart", range_start), ("rangeEnd", range_end)] {
        if !subnet.contains(ip) {
            return Err(bad(
                field,
                key,
                &ip.to_string(),
                &format!("is not in subnet {subnet}"),
            ));
        }
    }
    if to_u128(range_start) > to_u128(range_end) {
        return Err(Error::invalid_config(format!(
            "{field}.rangeStart: {range_start} is after {field}.rangeEnd {range_end}"
        )));
    }
    let subnet = IpNetwork::new(network, subnet.prefix())
        .map_err(|e| bad(field, "subnet", subnet_str, &e.to_string()))?;
    Ok(Range {
        subnet,
        range_start,
        range_end,
        gateway,
    })
}

fn parse_cidr(s: &str) -> Option<IpNetwork> {
    let (addr, prefix) = s.trim().split_once('/')?;
    let ip = addr.parse::<IpAddr>().ok()?;
    let prefix = prefix.parse::<u8>().ok()?;
    IpNetwork::new(ip, prefix).ok()
}

fn bad(field: &str, key: &str, value: &str, why: &str) -> Error {
    Error::invalid_config(format!("{field}.{key}: {value:?} {why}"))
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str, field: &str) -> Result<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::invalid_config(format!(
            "{field}.{key}: expected a string, got {other}"
        ))),
    }
}

/// The address as a number (IPv4 in the low 32 bits).
pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`to_u128`] for the given family (IPv4 keeps the low 32 bits).
pub(crate) fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;
    use serde_json::json;

    fn parse(ipam: Value) -> Result<Config> {
        Config::parse("net1", "1.0.0", &ipam, None)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn err(ipam: Value) -> Error {
        let e = parse(ipam).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{e}");
        e
    }

    #[test]
    fn legacy_subnet_defaults() {
        let c = parse(json!({"type": "host-local", "subnet": "10.1.2.0/24"})).unwrap();
        assert_eq!(c.range_sets.len(), 1);
        let r = &c.range_sets[0].ranges[0];
        assert_eq!(r.range_start, ip("10.1.2.1"));
        assert_eq!(r.range_end, ip("10.1.2.254"));
        assert_eq!(r.gateway, ip("10.1.2.1"));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.network_dir(), PathBuf::from("/var/lib/cni/networks/net1"));
        assert_eq!(r.to_string(), "10.1.2.1-10.1.2.254");
        assert_eq!(r.capacity(), 253);
    }

    #[test]
    fn ipv6_defaults_keep_last_address() {
        let c = parse(json!({"ranges": [[{"subnet": "fd00:1::/120"}]]})).unwrap();
        let r = &c.range_sets[0].ranges[0];
        assert_eq!(r.range_start, ip("fd00:1::1"));
        assert_eq!(r.range_end, ip("fd00:1::ff"));
        assert_eq!(r.gateway, ip("fd00:1::1"));
        assert_eq!(r.capacity(), 254);
    }

    #[test]
    fn legacy_range_is_prepended_and_runtime_ranges_first() {
        let ipam = json!({
            "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20",
            "gateway": "10.1.0.254", "dataDir": "/tmp/x", "resolvConf": "/etc/r",
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.1"}],
            "ranges": [[{"subnet": "fd00::/64"}]]
        });
        let rc = json!({"ipRanges": [[{"subnet": "10.2.0.0/16"}]]});
        let c = Config::parse("n", "0.4.0", &ipam, Some(&rc)).unwrap();
        assert_eq!(c.range_sets.len(), 3);
        assert_eq!(c.range_sets[0].to_string(), "10.2.0.1-10.2.255.254");
        assert_eq!(c.range_sets[1].to_string(), "10.1.0.10-10.1.0.20");
        assert_eq!(c.range_sets[1].ranges[0].gateway, ip("10.1.0.254"));
        assert_eq!(
            c.range_sets[2].to_string(),
            "fd00::1-fd00::ffff:ffff:ffff:ffff"
        );
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.resolv_conf, Some(PathBuf::from("/etc/r")));
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].gw, Some(ip("10.1.0.1")));
    }

    #[test]
    fn no_ranges() {
        assert!(
            err(json!({"type": "host-local"}))
                .msg
                .contains("no IP ranges")
        );
        assert!(
            err(json!({"ranges": [[]]}))
                .msg
                .contains("ipam.ranges[0]: empty range set")
        );
        assert!(err(json!({"ranges": "x"})).msg.contains("ipam.ranges"));
    }

    #[test]
    fn bad_subnets() {
        assert!(
            err(json!({"subnet": "10.1.0.5/24"}))
                .msg
                .contains("host bits")
        );
        assert!(
            err(json!({"subnet": "10.1.0.0/31"}))
                .msg
                .contains("too small")
        );
        assert!(
            err(json!({"subnet": "10.1.0.0/32"}))
                .msg
                .contains("too small")
        );
        assert!(
            err(json!({"subnet": "fd00::/127"}))
                .msg
                .contains("too small")
        );
        assert!(
            err(json!({"subnet": "fd00::/128"}))
                .msg
                .contains("too small")
        );
        assert!(
            err(json!({"subnet": "10.1.0.0"}))
                .msg
                .contains("ipam.subnet")
        );
        assert!(
            err(json!({"subnet": 5}))
                .msg
                .contains("ipam.subnet: expected a string")
        );
        assert!(
            err(json!({"ranges": [[{"gateway": "10.0.0.1"}]]}))
                .msg
                .contains("ipam.ranges[0][0].subnet: missing")
        );
        // /30 and /126 are the smallest allocatable subnets
        parse(json!({"subnet": "10.1.0.0/30"})).unwrap();
        parse(json!({"subnet": "fd00::/126"})).unwrap();
    }

    #[test]
    fn range_bounds() {
        let e = err(json!({"subnet": "10.1.0.0/24", "rangeStart": "10.1.1.1"}));
        assert!(
            e.msg.contains("ipam.rangeStart") && e.msg.contains("not in subnet"),
            "{e}"
        );
        let e = err(json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeEnd": "10.2.0.0"}]]}));
        assert!(e.msg.contains("ipam.ranges[0][0].rangeEnd"), "{e}");
        let e = err(json!({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.9",
                            "rangeEnd": "10.1.0.5"}));
        assert!(e.msg.contains("is after"), "{e}");
        let e = err(json!({"subnet": "10.1.0.0/24", "rangeStart": "fd00::1"}));
        assert!(e.msg.contains("family"), "{e}");
        let e = err(json!({"subnet": "10.1.0.0/24", "gateway": "nope"}));
        assert!(e.msg.contains("ipam.gateway"), "{e}");
    }

    #[test]
    fn overlaps_rejected() {
        let e = err(json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/25"}]]}));
        assert!(
            e.msg.contains("range set 0") && e.msg.contains("range set 1"),
            "{e}"
        );
        let e = err(json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.0/25"}]]}));
        assert!(e.msg.contains("overlap"), "{e}");
        let e = err(json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}]]}));
        assert!(e.msg.contains("mixed address families"), "{e}");
        // disjoint ranges of one subnet are fine
        parse(json!({"ranges": [
            [{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.1", "rangeEnd": "10.1.0.9"}],
            [{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20"}]
        ]}))
        .unwrap();
    }

    #[test]
    fn multiple_sets_per_family_need_0_3_0() {
        let ipam = json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]});
        let e = Config::parse("n", "0.2.0", &ipam, None).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        Config::parse("n", "0.3.1", &ipam, None).unwrap();
        let dual = json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]});
        Config::parse("n", "0.2.0", &dual, None).unwrap();
    }

    #[test]
    fn network_names() {
        for good in ["a", "cbr0", "my-net_1.2", "0net"] {
            validate_network_name(good).unwrap();
        }
        for badname in [
            "", ".", "..", "../etc", "a/b", "-x", ".hidden", "a\0b", "a b",
        ] {
            let e = validate_network_name(badname).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{badname:?}");
        }
        validate_network_name(&"a".repeat(256)).unwrap_err();
        validate_network_name(&"a".repeat(255)).unwrap();
        let e = Config::parse("../x", "1.0.0", &json!({"subnet": "10.0.0.0/24"}), None);
        assert!(e.unwrap_err().msg.contains("network name"));
    }

    #[test]
    fn excluded_addresses() {
        let c = parse(json!({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.0",
                             "rangeEnd": "10.1.0.255", "gateway": "10.1.0.7"}))
        .unwrap();
        let r = &c.range_sets[0].ranges[0];
        assert!(r.is_excluded(ip("10.1.0.0")));
        assert!(r.is_excluded(ip("10.1.0.255")));
        assert!(r.is_excluded(ip("10.1.0.7")));
        assert!(!r.is_excluded(ip("10.1.0.1")));
        assert_eq!(r.capacity(), 253);
        let r6 = parse(json!({"subnet": "fd00::/126", "rangeStart": "fd00::"})).unwrap();
        let r6 = &r6.range_sets[0].ranges[0];
        assert!(!r6.is_excluded(ip("fd00::")));
        assert!(!r6.is_excluded(ip("fd00::3")));
        assert_eq!(r6.capacity(), 3);
    }

    #[test]
    fn policy_keys_default_parse_and_refuse_bad_values() {
        let p = Policy::parse(&json!({"subnet": "10.0.0.0/24"})).unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.lock_timeout, Duration::from_secs(5));
        assert!(p.release_on_reboot);
        let p = Policy::parse(&json!({"lockTimeout": 0.25, "releaseOnReboot": false})).unwrap();
        assert_eq!(p.lock_timeout, Duration::from_millis(250));
        assert!(!p.release_on_reboot);
        for bad in [
            json!({"lockTimeout": 0}),
            json!({"lockTimeout": -3}),
            json!({"lockTimeout": 3601}),
            json!({"lockTimeout": "5"}),
            json!({"releaseOnReboot": "false"}),
            json!({"releaseOnReboot": 1}),
        ] {
            let e = Policy::parse(&bad).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{bad}");
            assert!(!e.msg.contains("Some("), "{}", e.msg);
        }
    }
}
