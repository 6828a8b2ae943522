//! This node's public address and the interface it is on (whose MTU bounds the pods'): the
//! `--public-ip` given, else the first global address of `--iface`, else of the interface
//! holding the default route, asked of the kernel over netlink.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use twill::kernel::netlink::{Address, Family, Netlink, RouteFilter, rt_table};

/// The node as the lease publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// The IPv4 address published (`PublicIP`).
    pub v4: Ipv4Addr,
    /// The first global IPv6 address of the interface, for a dual-stack network.
    pub v6: Option<Ipv6Addr>,
    /// The interface's name.
    pub iface: String,
    /// The interface's MTU.
    pub mtu: u32,
}

fn global(a: &Address) -> bool {
    a.scope == 0 && !a.is_tentative() && !a.is_dad_failed()
}

/// Finds the public address and interface (see the module doc); the error says what to give.
pub fn find(
    nl: &mut Netlink,
    public_ip: Option<IpAddr>,
    iface: Option<&str>,
) -> Result<Public, String> {
    let nlerr = |what: &str, e: twill::kernel::netlink::NetlinkError| format!("cannot {what}: {e}");
    let addrs = nl
        .addresses(None, None)
        .map_err(|e| nlerr("list the node's addresses", e))?;
    let index = match (iface, public_ip) {
        (Some(name), _) => {
            nl.link_by_name(name)
                .map_err(|e| nlerr(&format!("look up interface {name}"), e))?
                .ok_or_else(|| format!("--iface {name}: no such interface"))?
                .index
        }
        (None, Some(ip)) if addrs.iter().any(|a| a.addr == ip) => {
            addrs.iter().find(|a| a.addr == ip).map_or(0, |a| a.index)
        }
        (None, _) => default_route_link(nl)?,
    };
    let link = nl
        .link_by_index(index)
        .map_err(|e| nlerr(&format!("look up ifindex {index}"), e))?
        .ok_or_else(|| format!("the interface with index {index} went away"))?;
    let first_v4 = addrs
        .iter()
        .filter(|a| a.index == index && global(a))
        .find_map(|a| match a.addr {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        });
    let v6 = addrs
        .iter()
        .filter(|a| a.index == index && global(a))
        .find_map(|a| match a.addr {
            IpAddr::V6(v) => Some(v),
            IpAddr::V4(_) => None,
        });
    let v4 = match public_ip {
        Some(IpAddr::V4(v)) => v,
        Some(IpAddr::V6(v)) => {
            return Err(format!(
                "--public-ip {v}: flannel's leases carry an IPv4 PublicIP; give the node's IPv4 \
                 address (its IPv6 address is taken from the interface)"
            ));
        }
        None => first_v4.ok_or_else(|| {
            format!(
                "interface {} has no global IPv4 address to publish: give --public-ip",
                link.name
            )
        })?,
    };
    Ok(Public {
        v4,
        v6,
        iface: link.name,
        mtu: link.mtu,
    })
}

/// The interface of the IPv4 default route in the main table (IPv6 when there is none).
fn default_route_link(nl: &mut Netlink) -> Result<u32, String> {
    for family in [Family::V4, Family::V6] {
        let filter = RouteFilter {
            family: Some(family),
            table: Some(rt_table::MAIN),
            ..RouteFilter::default()
        };
        let routes = nl
            .routes(&filter)
            .map_err(|e| format!("cannot list the routes ({filter}): {e}"))?;
        if let Some(oif) = routes
            .iter()
            .filter(|r| r.dst.prefix() == 0)
            .min_by_key(|r| r.metric.unwrap_or(0))
            .and_then(|r| r.oif)
        {
            return Ok(oif);
        }
    }
    Err("no default route to find the public interface by: give --public-ip or --iface".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use twill::kernel::netlink::{AddrOptions, RouteSpec, VethSpec};

    /// Runs `f` on a thread moved into a new, empty network namespace (freed with the thread).
    fn in_new_netns<T: Send + 'static>(f: impl FnOnce(&mut Netlink) -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut nl = Netlink::new().unwrap();
            f(&mut nl)
        })
        .join()
        .unwrap()
    }

    fn link(nl: &mut Netlink, name: &str, peer: &str, mtu: u32, addrs: &[&str]) -> u32 {
        nl.create_veth(&VethSpec {
            name,
            mtu: Some(mtu),
            mac: None,
            master: None,
            up: true,
            peer_name: peer,
            peer_netns: None,
            peer_mtu: Some(mtu),
            peer_mac: None,
        })
        .unwrap();
        let index = nl.link_by_name(name).unwrap().unwrap().index;
        let p = nl.link_by_name(peer).unwrap().unwrap().index;
        nl.set_link_up(p, true).unwrap();
        for a in addrs {
            let opts = AddrOptions {
                nodad: true,
                ..AddrOptions::default()
            };
            nl.add_address(index, a.parse().unwrap(), &opts).unwrap();
        }
        index
    }

    #[test]
    fn the_public_address_is_the_default_route_interfaces_unless_told() {
        let got = in_new_netns(|nl| {
            let none = find(nl, None, None).unwrap_err();
            link(nl, "up0", "up0p", 1400, &["192.0.2.10/24", "fd00:2::10/64"]);
            link(nl, "side0", "side0p", 9000, &["198.51.100.7/24"]);
            nl.add_route(&RouteSpec::default_via("192.0.2.1".parse().unwrap()))
                .unwrap();
            (
                none,
                find(nl, None, None),
                find(nl, None, Some("side0")),
                find(nl, Some("198.51.100.7".parse().unwrap()), None),
                find(nl, Some("203.0.113.5".parse().unwrap()), None),
                find(nl, None, Some("nope0")).unwrap_err(),
                find(nl, None, Some("side0p")).unwrap_err(),
            )
        });
        assert!(got.0.contains("no default route"), "{}", got.0);
        let p = got.1.unwrap();
        assert_eq!(
            (
                p.v4.to_string(),
                p.v6.map(|a| a.to_string()),
                p.iface.as_str(),
                p.mtu
            ),
            ("192.0.2.10".into(), Some("fd00:2::10".into()), "up0", 1400)
        );
        let p = got.2.unwrap();
        assert_eq!(
            (p.v4.to_string(), p.mtu, p.v6),
            ("198.51.100.7".into(), 9000, None)
        );
        let p = got.3.unwrap();
        assert_eq!(
            (p.iface.as_str(), p.mtu),
            ("side0", 9000),
            "the interface holding it"
        );
        // An address behind NAT: published as given, MTU of the default route's interface.
        let p = got.4.unwrap();
        assert_eq!(
            (p.v4.to_string(), p.iface.as_str()),
            ("203.0.113.5".into(), "up0")
        );
        assert_eq!(got.5, "--iface nope0: no such interface");
        assert!(got.6.contains("has no global IPv4 address"), "{}", got.6);
    }
}
