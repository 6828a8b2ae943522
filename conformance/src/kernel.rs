//! Typed readers of kernel state inside a [`Netns`], via iproute2's JSON output
//! (`ip -j -n NS ...`, `bridge -j -n NS fdb`) and `/proc/sys/net` read from inside the namespace.
//!
//! Every record keeps the full JSON object in `raw` for assertions on fields not modelled here.

use crate::netns::Netns;
use serde_json::Value;
use std::net::IpAddr;

/// A network device (`ip -j -d link show`).
#[derive(Debug, Clone)]
pub struct Link {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// `linkinfo.info_kind` (`veth`, `bridge`, `vxlan`, ...); `None` for plain devices like lo.
    pub kind: Option<String>,
    /// Name of the master device (bridge), if enslaved.
    pub master: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (`UP` flag).
    pub up: bool,
    /// `operstate` (`UP`, `DOWN`, `UNKNOWN`, `LOWERLAYERDOWN`).
    pub operstate: String,
    /// MAC address, lowercase colon-separated, if any.
    pub mac: Option<String>,
    /// The full JSON object.
    pub raw: Value,
}

/// An address on a link (`ip -j addr show`).
#[derive(Debug, Clone)]
pub struct Addr {
    /// Device name.
    pub dev: String,
    /// The address.
    pub ip: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Scope (`global`, `link`, `host`).
    pub scope: String,
    /// The full JSON object (an `addr_info` entry).
    pub raw: Value,
}

impl Addr {
    /// `ip/prefix` as text (e.g. `10.1.0.5/24`).
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix_len)
    }
}

/// A route (`ip -j -4|-6 route show table all`).
#[derive(Debug, Clone)]
pub struct RouteEntry {
    /// Destination as iproute2 prints it (`default`, `10.1.0.0/24`, `10.1.0.1`).
    pub dst: String,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Output device, if any.
    pub dev: Option<String>,
    /// Protocol (`kernel`, `boot`, `static`, a number...).
    pub protocol: Option<String>,
    /// Scope (`link`, `host`, `universe` when absent).
    pub scope: Option<String>,
    /// Route type (`unicast` when absent, `local`, `broadcast`, ...).
    pub kind: String,
    /// Table name or number (`main` when iproute2 omits it).
    pub table: String,
    /// Metric, if any.
    pub metric: Option<u32>,
    /// The full JSON object.
    pub raw: Value,
}

/// A neighbour entry (`ip -j neigh show`).
#[derive(Debug, Clone)]
pub struct Neighbour {
    /// The neighbour's address.
    pub dst: IpAddr,
    /// Device name.
    pub dev: String,
    /// Link-layer address, if resolved.
    pub lladdr: Option<String>,
    /// NUD states (`PERMANENT`, `REACHABLE`, ...).
    pub state: Vec<String>,
    /// The full JSON object.
    pub raw: Value,
}

/// A forwarding-database entry (`bridge -j fdb show`).
#[derive(Debug, Clone)]
pub struct FdbEntry {
    /// MAC address.
    pub mac: String,
    /// Device the entry is on.
    pub dev: String,
    /// Remote destination (VXLAN), if any.
    pub dst: Option<IpAddr>,
    /// Master device, if any.
    pub master: Option<String>,
    /// Flags (`self`, `master`, `extern_learn`, ...).
    pub flags: Vec<String>,
    /// State (`permanent`, `static`, empty for learned).
    pub state: String,
    /// The full JSON object.
    pub raw: Value,
}

fn parse_array(text: &str, what: &str) -> Vec<Value> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(a)) => a,
        Ok(other) => panic!("{what}: expected a JSON array, got {other}"),
        Err(e) => panic!("{what}: bad JSON from iproute2 ({e}): {text}"),
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn ip_field(v: &Value, key: &str) -> Option<IpAddr> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn link_from(v: Value) -> Link {
    let flags = strings(&v, "flags");
    Link {
        name: str_field(&v, "ifname").unwrap_or_default(),
        ifindex: v.get("ifindex").and_then(Value::as_u64).unwrap_or(0) as u32,
        kind: v
            .pointer("/linkinfo/info_kind")
            .and_then(Value::as_str)
            .map(str::to_string),
        master: str_field(&v, "master"),
        mtu: v.get("mtu").and_then(Value::as_u64).unwrap_or(0) as u32,
        up: flags.iter().any(|f| f == "UP"),
        operstate: str_field(&v, "operstate").unwrap_or_default(),
        mac: str_field(&v, "address"),
        raw: v,
    }
}

impl Netns {
    /// All links, with details (`ip -j -d link show`).
    pub fn links(&self) -> Vec<Link> {
        let out = self.ip(&["-j", "-d", "link", "show"]);
        parse_array(&out, "ip link")
            .into_iter()
            .map(link_from)
            .collect()
    }

    /// The link called `name`, if it exists.
    pub fn link(&self, name: &str) -> Option<Link> {
        self.links().into_iter().find(|l| l.name == name)
    }

    /// Names of all links.
    pub fn link_names(&self) -> Vec<String> {
        self.links().into_iter().map(|l| l.name).collect()
    }

    /// All addresses on all links (`ip -j addr show`).
    pub fn all_addrs(&self) -> Vec<Addr> {
        let out = self.ip(&["-j", "addr", "show"]);
        let mut res = Vec::new();
        for link in parse_array(&out, "ip addr") {
            let dev = str_field(&link, "ifname").unwrap_or_default();
            let infos = link
                .get("addr_info")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for info in infos {
                let Some(ip) = ip_field(&info, "local") else {
                    continue;
                };
                res.push(Addr {
                    dev: dev.clone(),
                    ip,
                    prefix_len: info.get("prefixlen").and_then(Value::as_u64).unwrap_or(0) as u8,
                    scope: str_field(&info, "scope").unwrap_or_default(),
                    raw: info,
                });
            }
        }
        res
    }

    /// Addresses on link `dev`.
    pub fn addrs(&self, dev: &str) -> Vec<Addr> {
        self.all_addrs()
            .into_iter()
            .filter(|a| a.dev == dev)
            .collect()
    }

    /// Global-scope addresses on `dev` as `ip/prefix` strings, sorted.
    pub fn global_cidrs(&self, dev: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .addrs(dev)
            .into_iter()
            .filter(|a| a.scope == "global")
            .map(|a| a.cidr())
            .collect();
        v.sort();
        v
    }

    /// IPv4 and IPv6 routes of every table (`ip -j -4/-6 route show table all`).
    pub fn routes(&self) -> Vec<RouteEntry> {
        let mut res = Vec::new();
        for fam in ["-4", "-6"] {
            let out = self.ip(&["-j", fam, "route", "show", "table", "all"]);
            for v in parse_array(&out, "ip route") {
                res.push(RouteEntry {
                    dst: str_field(&v, "dst").unwrap_or_default(),
                    gateway: ip_field(&v, "gateway"),
                    dev: str_field(&v, "dev"),
                    protocol: str_field(&v, "protocol"),
                    scope: str_field(&v, "scope"),
                    kind: str_field(&v, "type").unwrap_or_else(|| "unicast".to_string()),
                    table: v
                        .get("table")
                        .map(|t| match t {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .unwrap_or_else(|| "main".to_string()),
                    metric: v.get("metric").and_then(Value::as_u64).map(|m| m as u32),
                    raw: v,
                });
            }
        }
        res
    }

    /// Routes of the main table only (unicast and otherwise).
    pub fn main_routes(&self) -> Vec<RouteEntry> {
        self.routes()
            .into_iter()
            .filter(|r| r.table == "main")
            .collect()
    }

    /// Neighbour entries (IPv4 and IPv6) on every device.
    pub fn neighbours(&self) -> Vec<Neighbour> {
        let out = self.ip(&["-j", "neigh", "show"]);
        parse_array(&out, "ip neigh")
            .into_iter()
            .filter_map(|v| {
                Some(Neighbour {
                    dst: ip_field(&v, "dst")?,
                    dev: str_field(&v, "dev").unwrap_or_default(),
                    lladdr: str_field(&v, "lladdr"),
                    state: strings(&v, "state"),
                    raw: v,
                })
            })
            .collect()
    }

    /// Bridge/VXLAN forwarding-database entries (`bridge -j -n NS fdb show`).
    pub fn fdb(&self) -> Vec<FdbEntry> {
        let out = crate::process::run_ok("bridge", &["-j", "-n", self.name(), "fdb", "show"]);
        parse_array(&out, "bridge fdb")
            .into_iter()
            .map(|v| FdbEntry {
                mac: str_field(&v, "mac").unwrap_or_default(),
                dev: str_field(&v, "ifname").unwrap_or_default(),
                dst: ip_field(&v, "dst"),
                master: str_field(&v, "master"),
                flags: strings(&v, "flags"),
                state: str_field(&v, "state").unwrap_or_default(),
                raw: v,
            })
            .collect()
    }

    /// Policy-routing rules of both families (`ip -j -4|-6 rule show`), as raw JSON objects.
    pub fn rules(&self) -> Vec<Value> {
        let mut res = Vec::new();
        for fam in ["-4", "-6"] {
            let out = self.ip(&["-j", fam, "rule", "show"]);
            res.extend(parse_array(&out, "ip rule"));
        }
        res
    }

    /// The namespace's whole nftables rule set as text (`nft list ruleset`).
    pub fn nft_ruleset(&self) -> String {
        self.exec_ok(&["nft", "list", "ruleset"])
    }

    /// The packet count of the named counter object `counter` in `table` (family `family`):
    /// `nft -j list counter FAMILY TABLE NAME`.
    pub fn nft_counter(&self, family: &str, table: &str, counter: &str) -> u64 {
        let out = self.exec_ok(&["nft", "-j", "list", "counter", family, table, counter]);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("nft -j list counter: bad JSON ({e}): {out}"));
        v.get("nftables")
            .and_then(Value::as_array)
            .and_then(|items| {
                items
                    .iter()
                    .find_map(|i| i.pointer("/counter/packets").and_then(Value::as_u64))
            })
            .unwrap_or_else(|| panic!("no counter {family} {table} {counter} in: {out}"))
    }

    /// Reads a sysctl inside the namespace. `key` is dotted (`net.ipv4.ip_forward`) or a path
    /// under `/proc/sys` (`net/ipv4/conf/eth0.5/forwarding`, for names containing dots).
    pub fn sysctl(&self, key: &str) -> String {
        let path = sysctl_path(key);
        self.exec_ok(&["cat", &path]).trim().to_string()
    }

    /// Writes a sysctl inside the namespace (same key forms as [`Netns::sysctl`]).
    pub fn set_sysctl(&self, key: &str, value: &str) {
        let path = sysctl_path(key);
        // Value and path are passed as positional parameters: no shell interpolation.
        self.exec_ok(&[
            "sh",
            "-c",
            "printf '%s' \"$1\" > \"$2\"",
            "sh",
            value,
            &path,
        ]);
    }
}

fn sysctl_path(key: &str) -> String {
    if key.contains('/') {
        format!(
            "/proc/sys/{}",
            key.trim_start_matches('/').trim_start_matches("proc/sys/")
        )
    } else {
        format!("/proc/sys/{}", key.replace('.', "/"))
    }
}
