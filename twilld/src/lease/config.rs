//! flannel's network config (`<prefix>/config`) with flannel's defaults and refusals: the
//! subnet length (24 when the Network is a /22 or larger, else the Network's length + 2), the
//! first subnet skipped, SubnetMin/SubnetMax inside the Network and aligned, and a backend
//! twill has a data plane for.

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};
use std::net::IpAddr;

use super::subnet::{Pool, block_size, from_u128, to_u128};
use twill::flannel::subnet_file::network_of;

/// The backends twill has a data plane for, as flannel names them.
pub const SUPPORTED_BACKENDS: &[&str] = &["host-gw", "vxlan", "ipip"];

/// A backend flannel and twill share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Routes via the node IPs (`bridge-host-gw`).
    HostGw,
    /// VXLAN overlay (`vxlan`, bridge mode).
    Vxlan,
    /// IP-in-IP (`ipip`).
    Ipip,
}

impl BackendKind {
    /// flannel's name (`BackendType` of a lease).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::HostGw => "host-gw",
            BackendKind::Vxlan => "vxlan",
            BackendKind::Ipip => "ipip",
        }
    }

    /// The bytes the backend's encapsulation takes from the public interface's MTU.
    pub fn overhead(self, v6_underlay: bool) -> u32 {
        match (self, v6_underlay) {
            (BackendKind::HostGw, _) => 0,
            (BackendKind::Vxlan, false) => twill::node::vxlan::OVERHEAD_V4,
            (BackendKind::Vxlan, true) => twill::node::vxlan::OVERHEAD_V6,
            (BackendKind::Ipip, _) => 20,
        }
    }
}

/// `Backend` of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// `Type`.
    pub kind: BackendKind,
    /// vxlan `VNI` (default 1).
    pub vni: u32,
    /// vxlan `Port` (default 8472).
    pub port: u16,
    /// vxlan/ipip `DirectRouting` (default false).
    pub direct_routing: bool,
}

/// flannel's network config, defaults applied and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The IPv4 pool (`Network`, `SubnetLen`, `SubnetMin`, `SubnetMax`).
    pub v4: Pool,
    /// The IPv6 pool when `EnableIPv6` (`IPv6Network`, `IPv6SubnetLen`, ...).
    pub v6: Option<Pool>,
    /// The backend.
    pub backend: Backend,
}

/// The value of `key` in `obj`, matched as Go's JSON decoder does (exact, else ignoring case).
pub fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn text<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match field(obj, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(format!("\"{key}\" is {v}, not a string")),
    }
}

fn number(obj: &Map<String, Value>, key: &str, max: u64) -> Result<Option<u64>, String> {
    match field(obj, key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64().filter(|n| *n <= max) {
            Some(n) => Ok(Some(n)),
            None => Err(format!(
                "\"{key}\" is {v}, not a whole number from 0 to {max}"
            )),
        },
    }
}

fn flag(obj: &Map<String, Value>, key: &str, default: bool) -> Result<bool, String> {
    match field(obj, key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(format!("\"{key}\" is {v}, not true or false")),
    }
}

fn cidr(obj: &Map<String, Value>, key: &str, v6: bool) -> Result<Option<IpNetwork>, String> {
    let Some(s) = text(obj, key)? else {
        return Ok(None);
    };
    let n: IpNetwork = s
        .parse()
        .ok()
        .filter(|_| s.contains('/'))
        .ok_or_else(|| format!("\"{key}\" {s:?} is not a CIDR (address/prefix)"))?;
    if n.is_ipv6() != v6 {
        return Err(format!(
            "\"{key}\" {s:?} is not an IPv{} CIDR",
            if v6 { 6 } else { 4 }
        ));
    }
    Ok(Some(network_of(n)))
}

fn address(obj: &Map<String, Value>, key: &str, v6: bool) -> Result<Option<IpAddr>, String> {
    let Some(s) = text(obj, key)? else {
        return Ok(None);
    };
    match s.parse::<IpAddr>() {
        Ok(ip) if ip.is_ipv6() == v6 => Ok(Some(ip)),
        _ => Err(format!(
            "\"{key}\" {s:?} is not an IPv{} address",
            if v6 { 6 } else { 4 }
        )),
    }
}

/// The keys of one family's pool.
struct PoolKeys {
    network: &'static str,
    len: &'static str,
    min: &'static str,
    max: &'static str,
    /// The smallest useful network (4 subnets of 4 addresses), the default subnet length
    /// and the longest subnet allowed.
    smallest: u8,
    default_len: u8,
    longest: u8,
}

fn pool(obj: &Map<String, Value>, v6: bool) -> Result<Pool, String> {
    let k = if v6 {
        PoolKeys {
            network: "IPv6Network",
            len: "IPv6SubnetLen",
            min: "IPv6SubnetMin",
            max: "IPv6SubnetMax",
            smallest: 124,
            default_len: 64,
            longest: 126,
        }
    } else {
        PoolKeys {
            network: "Network",
            len: "SubnetLen",
            min: "SubnetMin",
            max: "SubnetMax",
            smallest: 28,
            default_len: 24,
            longest: 30,
        }
    };
    let network = cidr(obj, k.network, v6)?.ok_or_else(|| {
        format!(
            "\"{}\" is missing: give the cluster's pod network",
            k.network
        )
    })?;
    let net_len = network.prefix();
    let subnet_len = match number(obj, k.len, 128)?.filter(|n| *n > 0) {
        Some(len) => {
            let len = len as u8;
            if len > k.longest {
                return Err(format!(
                    "\"{}\" {len} is too long: at most {} (a node needs room for its \
                     gateway and pods)",
                    k.len, k.longest
                ));
            }
            if len < net_len.saturating_add(2) {
                return Err(format!(
                    "\"{}\" {len} leaves {network} room for fewer than four subnets: use /{} \
                     or longer",
                    k.len,
                    net_len + 2
                ));
            }
            len
        }
        None if net_len > k.smallest => {
            return Err(format!(
                "\"{}\" {network} is too small: the shortest useful prefix is /{}",
                k.network, k.smallest
            ));
        }
        None if net_len <= k.default_len - 2 => k.default_len,
        None => net_len + 2,
    };
    let bits = if v6 { 128 } else { 32 };
    let size = block_size(bits, subnet_len);
    let base = to_u128(network.ip());
    let end = base + (block_size(bits, net_len) - 1);
    let inside = |ip: IpAddr| network.contains(ip);
    let aligned = |ip: IpAddr| to_u128(ip).is_multiple_of(size);
    let min = match address(obj, k.min, v6)?.filter(|ip| to_u128(*ip) != 0) {
        None => from_u128(base + size, network.ip()),
        Some(ip) if !inside(ip) => {
            return Err(format!("\"{}\" {ip} is not inside {network}", k.min));
        }
        Some(ip) => ip,
    };
    let max = match address(obj, k.max, v6)?.filter(|ip| to_u128(*ip) != 0) {
        None => from_u128(end + 1 - size, network.ip()),
        Some(ip) if !inside(ip) => {
            return Err(format!("\"{}\" {ip} is not inside {network}", k.max));
        }
        Some(ip) => ip,
    };
    for (key, ip) in [(k.min, min), (k.max, max)] {
        if !aligned(ip) {
            return Err(format!(
                "\"{key}\" {ip} is not the start of a /{subnet_len} subnet (SubnetLen boundary)"
            ));
        }
    }
    if to_u128(min) > to_u128(max) {
        return Err(format!(
            "\"{}\" {min} is above \"{}\" {max}: no subnet to hand out",
            k.min, k.max
        ));
    }
    Ok(Pool {
        network,
        subnet_len,
        min,
        max,
    })
}

fn backend(obj: &Map<String, Value>) -> Result<Backend, String> {
    let supported = SUPPORTED_BACKENDS.join(", ");
    let be = match field(obj, "Backend") {
        None | Some(Value::Null) => {
            return Err(format!(
                "\"Backend\" is missing, which flannel reads as the udp backend; twill supports \
                 {supported}: give \"Backend\": {{\"Type\": \"vxlan\"}} for instance"
            ));
        }
        Some(Value::Object(b)) => b,
        Some(v) => return Err(format!("\"Backend\" is {v}, not an object")),
    };
    let kind = match text(be, "Type").map_err(|e| format!("Backend: {e}"))? {
        Some("host-gw") => BackendKind::HostGw,
        Some("vxlan") => BackendKind::Vxlan,
        Some("ipip") => BackendKind::Ipip,
        Some(other) => {
            return Err(format!(
                "backend type {other:?} is not supported by twill: use one of {supported}"
            ));
        }
        None => {
            return Err(format!(
                "\"Backend\" has no \"Type\": use one of {supported}"
            ));
        }
    };
    let at = |e: String| format!("Backend: {e}");
    let vni = number(be, "VNI", u64::from(twill::node::vxlan::MAX_VNI))
        .map_err(at)?
        .filter(|n| *n > 0)
        .map_or(twill::node::vxlan::BRIDGE_MODE_VNI, |n| n as u32);
    let port = number(be, "Port", u64::from(u16::MAX))
        .map_err(at)?
        .filter(|n| *n > 0)
        .map_or(twill::node::vxlan::BRIDGE_MODE_PORT, |n| n as u16);
    let direct_routing = flag(be, "DirectRouting", false).map_err(at)?;
    Ok(Backend {
        kind,
        vni,
        port,
        direct_routing,
    })
}

impl NetConfig {
    /// Parses flannel's config JSON; the error says what is wrong, for a person.
    pub fn parse(bytes: &[u8]) -> Result<NetConfig, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| "not a JSON object".to_string())?;
        let enable_v4 = flag(obj, "EnableIPv4", true)?;
        let enable_v6 = flag(obj, "EnableIPv6", false)?;
        if !enable_v4 {
            return Err(
                "\"EnableIPv4\" is false: twilld needs an IPv4 network (IPv6-only flannel \
                 networks are not supported)"
                    .into(),
            );
        }
        let v4 = pool(obj, false)?;
        let v6 = if enable_v6 {
            Some(pool(obj, true)?)
        } else {
            None
        };
        Ok(NetConfig {
            v4,
            v6,
            backend: backend(obj)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConfig, String> {
        NetConfig::parse(s.as_bytes())
    }

    fn pool_of(s: &str) -> (String, u8, String, String) {
        let c = parse(s).unwrap();
        (
            c.v4.network.to_string(),
            c.v4.subnet_len,
            c.v4.min.to_string(),
            c.v4.max.to_string(),
        )
    }

    #[test]
    fn defaults_follow_flannel_subnet_len_24_from_a_22_and_the_first_subnet_skipped() {
        let be = r#""Backend":{"Type":"vxlan"}"#;
        assert_eq!(
            pool_of(&format!(r#"{{"Network":"10.244.0.0/16",{be}}}"#)),
            (
                "10.244.0.0/16".into(),
                24,
                "10.244.1.0".into(),
                "10.244.255.0".into()
            )
        );
        assert_eq!(
            pool_of(&format!(r#"{{"Network":"10.244.0.0/22",{be}}}"#)),
            (
                "10.244.0.0/22".into(),
                24,
                "10.244.1.0".into(),
                "10.244.3.0".into()
            )
        );
        assert_eq!(
            pool_of(&format!(r#"{{"Network":"10.244.0.0/23",{be}}}"#)),
            (
                "10.244.0.0/23".into(),
                25,
                "10.244.0.128".into(),
                "10.244.1.128".into()
            )
        );
        assert_eq!(
            pool_of(&format!(r#"{{"Network":"10.1.2.16/28",{be}}}"#)),
            (
                "10.1.2.16/28".into(),
                30,
                "10.1.2.20".into(),
                "10.1.2.28".into()
            )
        );
        // Go's decoder matches keys ignoring case; a host address is reduced to its network.
        assert_eq!(
            pool_of(&format!(
                r#"{{"network":"10.244.7.9/16","subnetlen":26,"SubnetMin":"10.244.8.0","SubnetMax":"10.244.9.192",{be}}}"#
            )),
            (
                "10.244.0.0/16".into(),
                26,
                "10.244.8.0".into(),
                "10.244.9.192".into()
            )
        );
        let c = parse(&format!(r#"{{"Network":"10.244.0.0/16",{be}}}"#)).unwrap();
        assert_eq!(
            c.backend,
            Backend {
                kind: BackendKind::Vxlan,
                vni: 1,
                port: 8472,
                direct_routing: false
            }
        );
        assert_eq!(c.v6, None);
        let c = parse(
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10::/56",
                "Backend":{"Type":"host-gw"}}"#,
        )
        .unwrap();
        let v6 = c.v6.unwrap();
        assert_eq!(v6.subnet_len, 64);
        assert_eq!(v6.min.to_string(), "fd00:10:0:1::");
        assert_eq!(v6.max.to_string(), "fd00:10:0:ff::");
        assert_eq!(c.backend.kind, BackendKind::HostGw);
        let c = parse(
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4,"Port":4789,"DirectRouting":true}}"#,
        )
        .unwrap();
        assert_eq!(
            (c.backend.vni, c.backend.port, c.backend.direct_routing),
            (4, 4789, true)
        );
    }

    #[test]
    fn every_refusal_names_the_key_and_what_to_do() {
        let be = r#""Backend":{"Type":"vxlan"}"#;
        for (conf, says) in [
            ("[]".to_string(), "not a JSON object"),
            ("{".to_string(), "not JSON"),
            (format!("{{{be}}}"), "\"Network\" is missing"),
            (
                format!(r#"{{"Network":"10.244.0.0",{be}}}"#),
                "is not a CIDR",
            ),
            (
                format!(r#"{{"Network":"fd00::/48",{be}}}"#),
                "not an IPv4 CIDR",
            ),
            (format!(r#"{{"Network":"10.0.0.0/29",{be}}}"#), "too small"),
            (
                format!(r#"{{"Network":"10.0.0.0/16","SubnetLen":31,{be}}}"#),
                "too long",
            ),
            (
                format!(r#"{{"Network":"10.0.0.0/16","SubnetLen":17,{be}}}"#),
                "fewer than four",
            ),
            (
                format!(r#"{{"Network":"10.0.0.0/16","SubnetLen":"24",{be}}}"#),
                "not a whole number",
            ),
            (
                format!(r#"{{"Network":"10.0.0.0/16","SubnetMin":"10.1.0.0",{be}}}"#),
                "\"SubnetMin\" 10.1.0.0 is not inside 10.0.0.0/16",
            ),
            (
                format!(r#"{{"Network":"10.0.0.0/16","SubnetMax":"10.9.0.0",{be}}}"#),
                "\"SubnetMax\" 10.9.0.0 is not inside",
            ),
            (
                format!(r#"{{"Network":"10.0.0.0/16","SubnetMin":"10.0.1.128",{be}}}"#),
                "not the start of a /24 subnet",
            ),
            (
                format!(
                    r#"{{"Network":"10.0.0.0/16","SubnetMin":"10.0.9.0","SubnetMax":"10.0.3.0",{be}}}"#
                ),
                "no subnet to hand out",
            ),
            (
                r#"{"Network":"10.0.0.0/16"}"#.into(),
                "flannel reads as the udp backend",
            ),
            (
                r#"{"Network":"10.0.0.0/16","Backend":{}}"#.into(),
                "has no \"Type\"",
            ),
            (
                r#"{"Network":"10.0.0.0/16","Backend":{"Type":"wireguard"}}"#.into(),
                "\"wireguard\" is not supported by twill: use one of host-gw, vxlan, ipip",
            ),
            (
                r#"{"Network":"10.0.0.0/16","Backend":{"Type":"udp"}}"#.into(),
                "\"udp\" is not supported",
            ),
            (
                r#"{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#.into(),
                "Backend: \"VNI\"",
            ),
            (
                format!(r#"{{"Network":"10.0.0.0/16","EnableIPv6":true,{be}}}"#),
                "\"IPv6Network\" is missing",
            ),
            (
                format!(
                    r#"{{"Network":"10.0.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/125",{be}}}"#
                ),
                "too small: the shortest useful prefix is /124",
            ),
            (
                format!(
                    r#"{{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48",{be}}}"#
                ),
                "IPv6-only",
            ),
            (
                format!(r#"{{"Network":"10.0.0.0/16","EnableIPv6":"yes",{be}}}"#),
                "not true or false",
            ),
        ] {
            match parse(&conf) {
                Err(e) => {
                    assert!(e.contains(says), "{conf}: {e}");
                    assert!(!e.contains("Some("), "{e}");
                }
                Ok(c) => panic!("{conf}: accepted as {c:?}"),
            }
        }
    }
}
