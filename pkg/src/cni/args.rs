//! `CNI_ARGS` (`K=V;K=V`), `runtimeConfig` capabilities and `args.cni` helpers.
//!
//! [`CniArgs`] is the parsed `CNI_ARGS` string; [`requested_ips`] gathers the addresses a runtime
//! asks for from every place the CNI conventions allow (`CNI_ARGS` `IP=`, the `ips` capability in
//! `runtimeConfig`, and `args.cni.ips` in the network config).

use crate::cni::types::NetConf;
use crate::error::{Error, Result};
use serde_json::Value;
use std::net::IpAddr;

/// The key that makes unknown `CNI_ARGS` keys acceptable (`IgnoreUnknown=1|true`).
pub const IGNORE_UNKNOWN: &str = "IgnoreUnknown";

/// Parsed `CNI_ARGS`: the `K=V` pairs in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
    ignore_unknown: bool,
}

impl CniArgs {
    /// Parses `K=V;K=V`. The empty string is no pairs; empty segments (`a=b;;c=d`, a trailing
    /// `;`) are skipped. A pair without `=` or with an empty key is code 4, naming the pair. The
    /// value is everything after the first `=` (so values may contain `=`).
    /// `IgnoreUnknown` must be `1`, `true`, `0` or `false` (case-insensitive), else code 4.
    pub fn parse(raw: &str) -> Result<CniArgs> {
        let mut args = CniArgs::default();
        for segment in raw.split(';') {
            if segment.is_empty() {
                continue;
            }
            let Some((key, value)) = segment.split_once('=') else {
                return Err(Error::invalid_env(format!(
                    "CNI_ARGS: invalid pair {segment:?}: expected KEY=VALUE"
                )));
            };
            if key.is_empty() {
                return Err(Error::invalid_env(format!(
                    "CNI_ARGS: invalid pair {segment:?}: empty key"
                )));
            }
            if key == IGNORE_UNKNOWN {
                args.ignore_unknown = parse_bool(value).ok_or_else(|| {
                    Error::invalid_env(format!(
                        "CNI_ARGS: IgnoreUnknown={value:?}: expected 1, true, 0 or false"
                    ))
                })?;
            }
            args.pairs.push((key.to_string(), value.to_string()));
        }
        Ok(args)
    }

    /// The value of `key` (the last one if given several times), `None` if absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when `IgnoreUnknown` was set to `1` or `true`.
    pub fn ignore_unknown(&self) -> bool {
        self.ignore_unknown
    }

    /// All pairs in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// For plugins that want the strict libcni behaviour: code 4 naming the first key not in
    /// `known` (`IgnoreUnknown` is always known), unless `IgnoreUnknown` is set.
    pub fn check_known(&self, known: &[&str]) -> Result<()> {
        if self.ignore_unknown {
            return Ok(());
        }
        match self
            .pairs
            .iter()
            .find(|(k, _)| k != IGNORE_UNKNOWN && !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(Error::invalid_env(format!(
                "CNI_ARGS: unknown key {k:?} (known: {}); set IgnoreUnknown=1 to ignore it",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    if value == "1" || value.eq_ignore_ascii_case("true") {
        Some(true)
    } else if value == "0" || value.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Parses an address that may carry a prefix (`10.1.0.5` or `10.1.0.5/24`): returns the address.
/// IPv4-mapped IPv6 addresses are returned as IPv4.
pub fn parse_ip_maybe_prefix(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let addr = match s.split_once('/') {
        Some((addr, prefix)) => {
            let prefix: u8 = prefix.parse().ok()?;
            let ip: IpAddr = addr.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if prefix > max {
                return None;
            }
            ip
        }
        None => s.parse().ok()?,
    };
    Some(addr.to_canonical())
}

/// The addresses requested for this attachment, in order, without duplicates: `CNI_ARGS` `IP=`
/// (a comma-separated list is allowed), then `runtimeConfig.ips`, then `args.cni.ips` (strings,
/// each may carry a `/prefix`, of which only the address is taken).
/// A bad address is code 4 when it came from `CNI_ARGS`, code 7 when from the config.
pub fn requested_ips<P>(cni_args: &CniArgs, conf: &NetConf<P>) -> Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut push = |ip: IpAddr| {
        if !out.contains(&ip) {
            out.push(ip);
        }
    };
    if let Some(list) = cni_args.get("IP") {
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let ip = parse_ip_maybe_prefix(item).ok_or_else(|| {
                Error::invalid_env(format!("CNI_ARGS: IP={item:?} is not an IP address"))
            })?;
            push(ip);
        }
    }
    let runtime_ips = conf.runtime_config.as_ref().and_then(|rc| rc.get("ips"));
    for ip in config_ip_list(runtime_ips, "runtimeConfig.ips")? {
        push(ip);
    }
    let args_ips = conf
        .args
        .as_ref()
        .and_then(|a| a.get("cni"))
        .and_then(|c| c.get("ips"));
    for ip in config_ip_list(args_ips, "args.cni.ips")? {
        push(ip);
    }
    Ok(out)
}

/// Parses an optional JSON array of address strings found at `field` in the config (code 7).
fn config_ip_list(value: Option<&Value>, field: &str) -> Result<Vec<IpAddr>> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(Error::invalid_config(format!(
                "{field}: expected a list of IP addresses, got {other}"
            )));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let s = item.as_str().ok_or_else(|| {
                Error::invalid_config(format!("{field}[{i}]: expected a string, got {item}"))
            })?;
            parse_ip_maybe_prefix(s).ok_or_else(|| {
                Error::invalid_config(format!("{field}[{i}]: {s:?} is not an IP address"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;
    use serde_json::json;

    fn conf(v: Value) -> NetConf {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn parse_pairs_and_get() {
        let a = CniArgs::parse("K8S_POD_NAME=web;K8S_POD_NAMESPACE=default;IP=10.0.0.5").unwrap();
        assert_eq!(a.get("K8S_POD_NAME"), Some("web"));
        assert_eq!(a.get("IP"), Some("10.0.0.5"));
        assert_eq!(a.get("missing"), None);
        assert!(!a.ignore_unknown());
        assert_eq!(a.iter().count(), 3);
    }

    #[test]
    fn parse_empty_and_empty_segments() {
        assert_eq!(CniArgs::parse("").unwrap().iter().count(), 0);
        let a = CniArgs::parse("a=1;;b=2;").unwrap();
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "2")]);
    }

    #[test]
    fn value_may_contain_equals_and_be_empty() {
        let a = CniArgs::parse("tok=ab==;e=").unwrap();
        assert_eq!(a.get("tok"), Some("ab=="));
        assert_eq!(a.get("e"), Some(""));
    }

    #[test]
    fn last_value_wins() {
        assert_eq!(CniArgs::parse("x=1;x=2").unwrap().get("x"), Some("2"));
    }

    #[test]
    fn malformed_pair_is_code_4_naming_it() {
        let e = CniArgs::parse("a=1;garbage").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("garbage"), "{e}");
        let e = CniArgs::parse("=v").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
    }

    #[test]
    fn ignore_unknown_values() {
        for (raw, want) in [
            ("1", true),
            ("true", true),
            ("TRUE", true),
            ("0", false),
            ("false", false),
        ] {
            let a = CniArgs::parse(&format!("IgnoreUnknown={raw}")).unwrap();
            assert_eq!(a.ignore_unknown(), want, "{raw}");
        }
        let e = CniArgs::parse("IgnoreUnknown=yes").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
    }

    #[test]
    fn check_known_honours_ignore_unknown() {
        let a = CniArgs::parse("IP=10.0.0.1;FOO=bar").unwrap();
        let e = a.check_known(&["IP"]).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("FOO"));
        let a = CniArgs::parse("IgnoreUnknown=1;IP=10.0.0.1;FOO=bar").unwrap();
        a.check_known(&["IP"]).unwrap();
        let a = CniArgs::parse("IgnoreUnknown=0;IP=10.0.0.1").unwrap();
        a.check_known(&["IP"]).unwrap();
    }

    #[test]
    fn requested_ips_union_in_order_without_duplicates() {
        let a = CniArgs::parse("IgnoreUnknown=1;IP=10.0.0.5,fd00::5").unwrap();
        let c = conf(json!({
            "cniVersion": "1.0.0", "name": "n", "type": "t",
            "runtimeConfig": {"ips": ["10.0.0.5/24", "10.0.1.7/24"]},
            "args": {"cni": {"ips": ["fd00::9", "10.0.1.7"]}}
        }));
        let ips = requested_ips(&a, &c).unwrap();
        let want: Vec<IpAddr> = ["10.0.0.5", "fd00::5", "10.0.1.7", "fd00::9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ips, want);
    }

    #[test]
    fn requested_ips_none() {
        let a = CniArgs::parse("").unwrap();
        let c = conf(json!({"cniVersion": "1.0.0", "name": "n", "type": "t"}));
        assert!(requested_ips(&a, &c).unwrap().is_empty());
    }

    #[test]
    fn requested_ips_mapped_v4_is_v4() {
        let a = CniArgs::parse("IP=::ffff:10.0.0.9").unwrap();
        let c = conf(json!({"cniVersion": "1.0.0", "name": "n", "type": "t"}));
        assert_eq!(
            requested_ips(&a, &c).unwrap(),
            vec!["10.0.0.9".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn bad_ip_in_cni_args_is_code_4() {
        let a = CniArgs::parse("IP=10.0.0.300").unwrap();
        let c = conf(json!({"cniVersion": "1.0.0", "name": "n", "type": "t"}));
        let e = requested_ips(&a, &c).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("10.0.0.300"), "{e}");
    }

    #[test]
    fn bad_ip_in_config_is_code_7() {
        let a = CniArgs::parse("").unwrap();
        for (c, needle) in [
            (
                json!({"runtimeConfig": {"ips": ["nope"]}}),
                "runtimeConfig.ips[0]",
            ),
            (
                json!({"runtimeConfig": {"ips": ["10.0.0.1/99"]}}),
                "10.0.0.1/99",
            ),
            (
                json!({"runtimeConfig": {"ips": [5]}}),
                "runtimeConfig.ips[0]",
            ),
            (
                json!({"runtimeConfig": {"ips": "10.0.0.1"}}),
                "runtimeConfig.ips",
            ),
            (
                json!({"args": {"cni": {"ips": ["10.0.0.1", "x"]}}}),
                "args.cni.ips[1]",
            ),
        ] {
            let mut v = c;
            v["name"] = json!("n");
            v["type"] = json!("t");
            let e = requested_ips(&a, &conf(v)).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG);
            assert!(e.msg.contains(needle), "{e} lacks {needle}");
        }
    }
}
