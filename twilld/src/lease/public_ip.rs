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
