//! The files the leases are published in: flannel's `subnet.env` (this node's subnet, as
//! flanneld writes it, so that flannel-style configs and tools work) and twill's cluster view
//! (every lease as a `{"nodeIP", "podCIDR", "vtepMAC"}` entry, this node's included). Both are
//! replaced atomically (temp file in the same directory, rename) and only when their content
//! changes.

use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use twill::flannel::subnet_file::SubnetFile;
use twill::node::peers::Peer;

use super::claim::entries;
use super::config::NetConfig;
use super::subnet::Subnets;
use crate::store::Kv;

/// The first address of a subnet with its length (`10.244.3.0/24` → `10.244.3.1/24`), as
/// flanneld writes `FLANNEL_SUBNET`.
fn gateway(n: IpNetwork) -> String {
    let ip = match n.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(1)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(1)).into()),
    };
    format!("{ip}/{}", n.prefix())
}

/// flannel's subnet file for `subnets` of `cfg`: the public interface's MTU less the
/// backend's overhead, and `FLANNEL_IPMASQ` as asked.
pub fn subnet_env(cfg: &NetConfig, subnets: &Subnets, iface_mtu: u32, ip_masq: bool) -> String {
    let mut out = format!(
        "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}\n",
        cfg.v4.network,
        gateway(IpNetwork::V4(subnets.v4))
    );
    if let (Some(p), Some(v6)) = (&cfg.v6, subnets.v6) {
        out += &format!(
            "FLANNEL_IPV6_NETWORK={}\nFLANNEL_IPV6_SUBNET={}\n",
            p.network,
            gateway(IpNetwork::V6(v6))
        );
    }
    let mtu = iface_mtu.saturating_sub(cfg.backend.kind.overhead(false));
    out += &format!("FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ip_masq}\n");
    out
}

/// The subnets of the subnet file at `path`, if it exists and parses (flannel's choice 2).
pub fn previous(path: &Path) -> Option<Subnets> {
    let sf = SubnetFile::read_if_present(path).ok()??;
    let v4 = match sf.subnet.map(twill::flannel::subnet_file::network_of) {
        Some(IpNetwork::V4(n)) => n,
        _ => return None,
    };
    let v6 = match sf.ipv6_subnet.map(twill::flannel::subnet_file::network_of) {
        Some(IpNetwork::V6(n)) => Some(n),
        _ => None,
    };
    Some(Subnets { v4, v6 })
}

/// A lease key that is not in the view, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread {
    /// The key.
    pub key: String,
    /// Why it is skipped, for a person.
    pub reason: String,
}

/// The cluster view of `leases` (key order; an IPv6 entry after the IPv4 one on dual stack),
/// and the leases skipped because their value does not parse.
pub fn view(prefix: &str, leases: &BTreeMap<String, Kv>) -> (String, Vec<Unread>) {
    let mut lines = Vec::new();
    let mut unread = Vec::new();
    for e in entries(prefix, leases.values()) {
        let r = match e.record {
            Ok(r) => r,
            Err(reason) => {
                unread.push(Unread {
                    key: e.kv.key.clone(),
                    reason,
                });
                continue;
            }
        };
        let v4 = Peer {
            node_ip: IpAddr::V4(r.public_ip),
            pod_cidr: IpNetwork::V4(e.subnets.v4),
            vtep_mac: r.vtep_mac,
        };
        lines.push(v4.to_json().to_string());
        if let (Some(ip6), Some(n6)) = (r.public_ipv6, e.subnets.v6) {
            let v6 = Peer {
                node_ip: IpAddr::V6(ip6),
                pod_cidr: IpNetwork::V6(n6),
                vtep_mac: r.vtep_mac_v6,
            };
            lines.push(v6.to_json().to_string());
        }
    }
    let text = if lines.is_empty() {
        "[]\n".to_string()
    } else {
        format!("[\n  {}\n]\n", lines.join(",\n  "))
    };
    (text, unread)
}

/// Replaces `path` with `content` atomically unless it holds exactly that already; true when
/// written. The directory is created when missing.
pub fn write_if_changed(path: &Path, content: &str) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == content.as_bytes()) {
        return Ok(false);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.twilld-{}", std::process::id()));
    let res = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::config::BackendKind;
    use crate::lease::record::Record;
    use std::path::PathBuf;

    const P: &str = "/coreos.com/network";

    fn kv(key: &str, value: &[u8]) -> (String, Kv) {
        let key = format!("{P}/subnets/{key}");
        (
            key.clone(),
            Kv {
                key,
                value: value.to_vec(),
                create_revision: 1,
                mod_revision: 1,
                lease: 7,
            },
        )
    }

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tempdir(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("twilld-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        TempDir(d)
    }

    #[test]
    fn subnet_env_is_what_flanneld_writes_and_twill_parses() {
        let cfg =
            NetConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        let s = Subnets {
            v4: "10.244.3.0/24".parse().unwrap(),
            v6: None,
        };
        let text = subnet_env(&cfg, &s, 1500, false);
        assert_eq!(
            text,
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\n\
             FLANNEL_IPMASQ=false\n"
        );
        let sf = SubnetFile::parse(&text, Path::new("subnet.env")).unwrap();
        assert_eq!(
            sf.pod_subnets(),
            vec!["10.244.3.0/24".parse::<IpNetwork>().unwrap()]
        );
        assert_eq!((sf.mtu, sf.ip_masq), (1450, false));
        let d = NetConfig::parse(
            br#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10::/56","Backend":{"Type":"host-gw"}}"#,
        )
        .unwrap();
        let ds = Subnets {
            v4: "10.244.3.0/24".parse().unwrap(),
            v6: Some("fd00:10:0:3::/64".parse().unwrap()),
        };
        let text = subnet_env(&d, &ds, 9000, true);
        assert_eq!(
            text,
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n\
             FLANNEL_IPV6_NETWORK=fd00:10::/56\nFLANNEL_IPV6_SUBNET=fd00:10:0:3::1/64\n\
             FLANNEL_MTU=9000\nFLANNEL_IPMASQ=true\n"
        );
        let sf = SubnetFile::parse(&text, Path::new("subnet.env")).unwrap();
        assert_eq!(sf.pod_subnets().len(), 2);
        assert!(sf.ip_masq);
        let ipip =
            NetConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"ipip"}}"#).unwrap();
        assert!(subnet_env(&ipip, &s, 1500, false).contains("FLANNEL_MTU=1480\n"));
        let dir = tempdir("prev");
        let f = dir.0.join("subnet.env");
        assert_eq!(previous(&f), None);
        write_if_changed(&f, &subnet_env(&d, &ds, 1500, false)).unwrap();
        assert_eq!(previous(&f), Some(ds));
    }

    #[test]
    fn the_view_lists_every_lease_with_its_vtep_mac_and_skips_a_garbage_one() {
        let mine = Record::ours("10.0.0.1".parse().unwrap(), None, BackendKind::Vxlan, 1);
        let leases: BTreeMap<String, Kv> = [
            kv("10.244.1.0-24", &mine.to_bytes()),
            kv(
                "10.244.2.0-24",
                br#"{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"d6:1f:5e:3c:aa:01"}}"#,
            ),
            kv("10.244.3.0-24", b"garbage"),
            kv("not-a-subnet", b"{}"),
            kv(
                "10.244.4.0-24&fd00:0:0:4::-64",
                br#"{"PublicIP":"10.0.0.4","PublicIPv6":"fd00::4","BackendType":"host-gw"}"#,
            ),
        ]
        .into_iter()
        .collect();
        let (text, unread) = view(P, &leases);
        let mac1 = mine.vtep_mac.unwrap();
        assert_eq!(
            text,
            format!(
                "[\n  {{\"nodeIP\":\"10.0.0.1\",\"podCIDR\":\"10.244.1.0/24\",\"vtepMAC\":\"{mac1}\"}},\n  \
                 {{\"nodeIP\":\"10.0.0.2\",\"podCIDR\":\"10.244.2.0/24\",\"vtepMAC\":\"d6:1f:5e:3c:aa:01\"}},\n  \
                 {{\"nodeIP\":\"10.0.0.4\",\"podCIDR\":\"10.244.4.0/24\"}},\n  \
                 {{\"nodeIP\":\"fd00::4\",\"podCIDR\":\"fd00:0:0:4::/64\"}}\n]\n"
            )
        );
        assert_eq!(unread.len(), 1);
        assert_eq!(unread[0].key, format!("{P}/subnets/10.244.3.0-24"));
        assert!(
            unread[0].reason.contains("not JSON"),
            "{}",
            unread[0].reason
        );
        // twill's own view parser reads it whole.
        let parsed = twill::node::peers::ClusterView::parse(
            text.as_bytes(),
            &twill::node::peers::ViewSource::File("view".into()),
        )
        .unwrap();
        assert_eq!(parsed.peers().len(), 4);
        assert!(parsed.skipped().is_empty());
        assert_eq!(view(P, &BTreeMap::new()).0, "[]\n");
    }

    #[test]
    fn a_file_is_replaced_only_when_its_content_changes() {
        let dir = tempdir("write");
        let f = dir.0.join("sub/cluster.json");
        assert!(write_if_changed(&f, "[]\n").unwrap());
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let first = ino(&f);
        assert!(!write_if_changed(&f, "[]\n").unwrap());
        assert_eq!(ino(&f), first, "not rewritten");
        assert!(write_if_changed(&f, "[1]\n").unwrap());
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "[1]\n");
        let names: Vec<_> = std::fs::read_dir(dir.0.join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left");
    }
}
