//! flannel's subnet file (/run/flannel/subnet.env) and the host-local IPAM derived from it.
//!
//! flanneld writes one `KEY=VALUE` line per setting:
//!
//! ```text
//! FLANNEL_NETWORK=10.244.0.0/16          # cluster network(s), comma-separated
//! FLANNEL_SUBNET=10.244.1.1/24           # this node's pod subnet (with the gateway address)
//! FLANNEL_IPV6_NETWORK=fd00:10::/56      # optional, comma-separated
//! FLANNEL_IPV6_SUBNET=fd00:10:0:1::1/64  # optional
//! FLANNEL_MTU=1450
//! FLANNEL_IPMASQ=true                    # true: flanneld masquerades itself
//! ```
//!
//! Like flannel's CNI plugin: the text before the first `=` is the key, unknown keys and
//! lines without `=` are ignored, network lists are de-duplicated, subnets are reduced to their
//! network address for IPAM, `FLANNEL_IPMASQ` is true only when it is exactly `true`. At least
//! one cluster network (v4 or v6), one node subnet (v4 or v6), the MTU and IPMASQ are required.

use crate::error::{Error, Result};
use ipnetwork::IpNetwork;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

/// Where flanneld writes the subnet file unless configured otherwise.
pub const DEFAULT_PATH: &str = "/run/flannel/subnet.env";

/// The parsed subnet file of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetFile {
    /// The file this was read from (for messages).
    pub path: PathBuf,
    /// `FLANNEL_NETWORK`: the IPv4 cluster network(s), network addresses, de-duplicated.
    pub networks: Vec<IpNetwork>,
    /// `FLANNEL_SUBNET` as written (flanneld writes the gateway address, e.g. `10.244.1.1/24`).
    pub subnet: Option<IpNetwork>,
    /// `FLANNEL_IPV6_NETWORK`: the IPv6 cluster network(s), network addresses, de-duplicated.
    pub ipv6_networks: Vec<IpNetwork>,
    /// `FLANNEL_IPV6_SUBNET` as written.
    pub ipv6_subnet: Option<IpNetwork>,
    /// `FLANNEL_MTU`: the MTU pods must use.
    pub mtu: u32,
    /// `FLANNEL_IPMASQ`: true when flanneld masquerades itself (then the plugin should not).
    pub ip_masq: bool,
}

/// `ip/prefix` reduced to its network address (`10.244.1.1/24` → `10.244.1.0/24`).
pub fn network_of(n: IpNetwork) -> IpNetwork {
    // The prefix came from a valid IpNetwork, so rebuilding with it cannot fail.
    IpNetwork::new(n.network(), n.prefix()).unwrap_or(n)
}

/// The largest subnet file read (flanneld writes a few hundred bytes).
pub const MAX_SUBNET_FILE_BYTES: usize = 1 << 20;

impl SubnetFile {
    /// Reads and parses the subnet file at `path`.
    ///
    /// A missing file is code 7 (the config relies on flanneld that has not written it); an
    /// unreadable one is code 5; a malformed or incomplete one is code 7.
    pub fn load(path: &Path) -> Result<SubnetFile> {
        match crate::input_file::read_capped_text(path, MAX_SUBNET_FILE_BYTES) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::invalid_config(format!(
                    "flannel subnet file {} does not exist: give an \"ipam\" section in the \
                     network config, or run flanneld so that it writes this file",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(Error::invalid_config(
                format!("flannel subnet file {} {e}", path.display()),
            )),
            Err(e) => Err(Error::io(
                format!("read flannel subnet file {}", path.display()),
                e,
            )),
        }
    }

    /// The subnet file at `path`, or None when it does not exist (code 7 when malformed, 5
    /// when unreadable).
    pub fn read_if_present(path: &Path) -> Result<Option<SubnetFile>> {
        match crate::input_file::read_capped_text(path, MAX_SUBNET_FILE_BYTES) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(Error::invalid_config(
                format!("flannel subnet file {} {e}", path.display()),
            )),
            Err(e) => Err(Error::io(
                format!("read flannel subnet file {}", path.display()),
                e,
            )),
        }
    }

    /// Parses the text of a subnet file; `path` only names it in messages.
    pub fn parse(text: &str, path: &Path) -> Result<SubnetFile> {
        let bad = |key: &str, value: &str, why: &str| {
            Error::invalid_config(format!(
                "flannel subnet file {}: invalid {key}={value:?}: {why}",
                path.display()
            ))
        };
        let mut networks: Option<Vec<IpNetwork>> = None;
        let mut ipv6_networks: Option<Vec<IpNetwork>> = None;
        let mut subnet = None;
        let mut ipv6_subnet = None;
        let mut mtu = None;
        let mut ip_masq = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key {
                "FLANNEL_NETWORK" => {
                    networks = Some(parse_list(value, false).map_err(|w| bad(key, value, &w))?)
                }
                "FLANNEL_IPV6_NETWORK" => {
                    ipv6_networks = Some(parse_list(value, true).map_err(|w| bad(key, value, &w))?)
                }
                "FLANNEL_SUBNET" => {
                    subnet = Some(parse_cidr(value, false).map_err(|w| bad(key, value, &w))?)
                }
                "FLANNEL_IPV6_SUBNET" => {
                    ipv6_subnet = Some(parse_cidr(value, true).map_err(|w| bad(key, value, &w))?)
                }
                "FLANNEL_MTU" => {
                    mtu = Some(
                        value
                            .parse::<u32>()
                            .map_err(|e| bad(key, value, &format!("not an MTU: {e}")))?,
                    )
                }
                "FLANNEL_IPMASQ" => ip_masq = Some(value == "true"),
                _ => {}
            }
        }
        let networks = networks.unwrap_or_default();
        let ipv6_networks = ipv6_networks.unwrap_or_default();
        let mut missing = Vec::new();
        if networks.is_empty() && ipv6_networks.is_empty() {
            missing.push("FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK");
        }
        if subnet.is_none() && ipv6_subnet.is_none() {
            missing.push("FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET");
        }
        if mtu.is_none() {
            missing.push("FLANNEL_MTU");
        }
        if ip_masq.is_none() {
            missing.push("FLANNEL_IPMASQ");
        }
        let (Some(mtu), Some(ip_masq), true) = (mtu, ip_masq, missing.is_empty()) else {
            return Err(Error::invalid_config(format!(
                "flannel subnet file {} is missing {}",
                path.display(),
                missing.join(", ")
            )));
        };
        Ok(SubnetFile {
            path: path.to_path_buf(),
            networks,
            subnet,
            ipv6_networks,
            ipv6_subnet,
            mtu,
            ip_masq,
        })
    }

    /// The node's pod subnet(s) as network addresses, IPv4 first.
    pub fn pod_subnets(&self) -> Vec<IpNetwork> {
        self.subnet
            .iter()
            .chain(self.ipv6_subnet.iter())
            .map(|n| network_of(*n))
            .collect()
    }

    /// The cluster network(s), IPv4 first.
    pub fn cluster_networks(&self) -> Vec<IpNetwork> {
        self.networks
            .iter()
            .chain(self.ipv6_networks.iter())
            .copied()
            .collect()
    }
}

/// One CIDR of the expected family (`ip/prefix` required, as Go's `net.ParseCIDR`).
fn parse_cidr(value: &str, v6: bool) -> Result<IpNetwork, String> {
    if !value.contains('/') {
        return Err("expected address/prefix".into());
    }
    let n: IpNetwork = value.parse().map_err(|e| format!("not a CIDR: {e}"))?;
    if n.is_ipv6() != v6 {
        return Err(format!("expected an IPv{} CIDR", if v6 { 6 } else { 4 }));
    }
    Ok(n)
}

/// A comma-separated CIDR list, reduced to network addresses, first occurrence kept.
fn parse_list(value: &str, v6: bool) -> Result<Vec<IpNetwork>, String> {
    let mut out: Vec<IpNetwork> = Vec::new();
    for item in value.split(',') {
        let n = network_of(parse_cidr(item.trim(), v6)?);
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// The `ipam` section flannel's CNI plugin hands to its delegate, for a config without one:
/// `{"type": "host-local", "ranges": [[{"subnet": <v4 subnet>}], [{"subnet": <v6 subnet>}]],
/// "routes": [{"dst": <each cluster network>}...]}` (v4 before v6), plus `"dataDir"` when given.
pub fn derive_ipam(sf: &SubnetFile, data_dir: Option<&Path>) -> Value {
    let ranges: Vec<Value> = sf
        .pod_subnets()
        .iter()
        .map(|s| json!([{ "subnet": s.to_string() }]))
        .collect();
    let routes: Vec<Value> = sf
        .cluster_networks()
        .iter()
        .map(|n| json!({ "dst": n.to_string() }))
        .collect();
    let mut ipam = Map::new();
    ipam.insert("type".into(), Value::from("host-local"));
    ipam.insert("ranges".into(), Value::Array(ranges));
    ipam.insert("routes".into(), Value::Array(routes));
    if let Some(dir) = data_dir {
        ipam.insert(
            "dataDir".into(),
            Value::from(dir.to_string_lossy().into_owned()),
        );
    }
    Value::Object(ipam)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("twill-subnetfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        path
    }

    const FULL: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n\
        FLANNEL_IPV6_NETWORK=fd00:10::/56\nFLANNEL_IPV6_SUBNET=fd00:10:0:1::1/64\n\
        FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    #[test]
    fn loads_dual_stack_file() {
        let path = temp_file("full.env", FULL);
        let sf = SubnetFile::load(&path).unwrap();
        assert_eq!(sf.networks, vec!["10.244.0.0/16".parse().unwrap()]);
        assert_eq!(sf.subnet, Some("10.244.1.1/24".parse().unwrap()));
        assert_eq!(sf.ipv6_networks, vec!["fd00:10::/56".parse().unwrap()]);
        assert_eq!(sf.ipv6_subnet, Some("fd00:10:0:1::1/64".parse().unwrap()));
        assert_eq!(sf.mtu, 1450);
        assert!(sf.ip_masq);
        assert_eq!(
            sf.pod_subnets(),
            vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00:10:0:1::/64".parse().unwrap()
            ]
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn derives_host_local_ipam_like_flannel() {
        let sf = SubnetFile::parse(FULL, Path::new("x")).unwrap();
        let ipam = derive_ipam(&sf, None);
        assert_eq!(
            ipam,
            json!({
                "type": "host-local",
                "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:0:1::/64"}]],
                "routes": [{"dst": "10.244.0.0/16"}, {"dst": "fd00:10::/56"}],
            })
        );
        let ipam = derive_ipam(&sf, Some(Path::new("/var/lib/cni/networks")));
        assert_eq!(ipam["dataDir"], "/var/lib/cni/networks");
    }

    #[test]
    fn v4_only_with_network_list_and_noise() {
        let text = "# comment\nFLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16,10.244.0.0/16\n\
            garbage line\nFLANNEL_SUBNET=10.244.7.1/24\r\nFLANNEL_MTU=1500\n\
            FLANNEL_IPMASQ=yes\nOTHER=1\n";
        let sf = SubnetFile::parse(text, Path::new("x")).unwrap();
        assert_eq!(sf.networks.len(), 2, "duplicates dropped");
        assert!(!sf.ip_masq, "only exactly \"true\" is true");
        let ipam = derive_ipam(&sf, None);
        assert_eq!(ipam["ranges"], json!([[{"subnet": "10.244.7.0/24"}]]));
        assert_eq!(
            ipam["routes"],
            json!([{"dst": "10.244.0.0/16"}, {"dst": "10.245.0.0/16"}])
        );
    }

    #[test]
    fn v6_only() {
        let text = "FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=fd00:0:0:3::1/64\n\
            FLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n";
        let sf = SubnetFile::parse(text, Path::new("x")).unwrap();
        assert_eq!(
            derive_ipam(&sf, None)["ranges"],
            json!([[{"subnet": "fd00:0:0:3::/64"}]])
        );
        assert_eq!(
            sf.cluster_networks(),
            vec!["fd00::/48".parse::<IpNetwork>().unwrap()]
        );
    }

    #[test]
    fn missing_file_is_code_7_naming_file() {
        let path = Path::new("/nonexistent/twill/subnet.env");
        let e = SubnetFile::load(path).unwrap_err();
        assert_eq!(e.code, crate::code::INVALID_CONFIG);
        assert!(e.msg.contains("/nonexistent/twill/subnet.env"), "{e}");
        assert!(e.msg.contains("ipam") && e.msg.contains("flanneld"), "{e}");
    }

    #[test]
    fn missing_keys_are_listed() {
        let e = SubnetFile::parse("FLANNEL_NETWORK=10.0.0.0/8\n", Path::new("/f")).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("FLANNEL_SUBNET"), "{e}");
        assert!(
            e.msg.contains("FLANNEL_MTU") && e.msg.contains("FLANNEL_IPMASQ"),
            "{e}"
        );
        assert!(!e.msg.contains("FLANNEL_NETWORK"), "{e}");
    }

    #[test]
    fn malformed_values_are_code_7() {
        for bad in [
            "FLANNEL_SUBNET=10.244.1.1",
            "FLANNEL_SUBNET=fd00::1/64",
            "FLANNEL_IPV6_SUBNET=10.0.0.1/24",
            "FLANNEL_NETWORK=10.0.0.0/8,nope",
            "FLANNEL_MTU=-1",
            "FLANNEL_MTU=abc",
        ] {
            let text = format!(
                "FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.0.1.1/24\nFLANNEL_MTU=1450\n\
                 FLANNEL_IPMASQ=true\n{bad}\n"
            );
            let e = SubnetFile::parse(&text, Path::new("/f")).unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
            assert!(e.msg.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
    }
}
