//! The node's bridge: made on first use (MTU, fixed MAC, no IPv6 DAD, up; promiscuous when
//! asked), its gateway addresses, and the flags of its ports (hairpin, isolation).
//!
//! Hot path (bridge and gateway already there): one send with the bridge's RTM_GETLINK and a
//! dump of the namespace's IPv4 addresses (served without the RTNL lock), which answers an
//! IPv4 gateway; an IPv6 gateway costs one address dump of the bridge. No change requests.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::cni::types::IpConfig;
use crate::error::{Error, Result, code};
use crate::kernel::netlink::{
    AddrOptions, Batch, BridgeSpec, Family, IFF_PROMISC, Link, MacAddr, Netlink, PortFlags,
    validate_ifname,
};
use crate::kernel::netns::Netns;
use crate::kernel::sysctl;

/// The bridge as [`ensure`] leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// ifindex in the node netns.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MAC address.
    pub mac: Option<MacAddr>,
    /// MTU.
    pub mtu: u32,
    /// True when this call created it (so it holds no address yet).
    pub created: bool,
    /// It had carrier (an active port) when looked up; see [`settle_carrier`].
    pub carrier: bool,
    /// Its IPv4 addresses when it was looked up ([`ensure_with`] lists them in the same send);
    /// None when not listed. [`ensure_gateway`] takes a gateway found here as present.
    pub ipv4: Option<Vec<IpNetwork>>,
    /// The node's IPv4 forwarding (`net.ipv4.ip_forward`) as the lookup's send found it
    /// ([`ensure_with`] asks it there); None when not known. For [`enable_forwarding_known`].
    pub ipv4_forwarding: Option<bool>,
}

/// Checks a configured bridge name (code 7 when it cannot be an interface name).
pub fn validate_name(name: &str) -> Result<()> {
    validate_ifname(name).map_err(|_| {
        Error::invalid_config(format!(
            "\"bridge\": invalid interface name {name:?}: 1-15 bytes, no '/', ':' or whitespace"
        ))
    })
}

/// The link named `name` when it is a bridge; None when there is no such link; code 104 when
/// a link of another kind holds the name (what STATUS reports as 50).
pub fn find(nl: &mut Netlink, name: &str) -> Result<Option<Link>> {
    validate_name(name)?;
    only_a_bridge(name, nl.link_by_name(name)?)
}

/// [`find`], and the bridge's IPv4 addresses, from a dump of the namespace's IPv4 addresses
/// in the same send (served without the RTNL lock).
fn find_listing_ipv4(
    nl: &mut Netlink,
    name: &str,
) -> Result<(Option<BridgeListing>, Option<bool>)> {
    validate_name(name)?;
    let mut b = Batch::new();
    b.get_link_by_name(name);
    b.list_addresses(None, Some(Family::V4));
    b.ask_forwarding(Family::V4);
    let replies = nl.send_batch_reading(b)?;
    let forwarding = replies.ipv4_forwarding;
    let Some(link) = only_a_bridge(name, replies.links.into_iter().next().flatten())? else {
        return Ok((None, forwarding));
    };
    let addrs = replies
        .addresses
        .iter()
        .filter(|a| a.index == link.index)
        .map(|a| a.network())
        .collect();
    Ok((Some((link, addrs)), forwarding))
}

/// A bridge found by [`find_listing_ipv4`] with its IPv4 addresses.
type BridgeListing = (Link, Vec<IpNetwork>);

/// `link`, the link named `name`, when it is a bridge; code 104 when it is another kind.
fn only_a_bridge(name: &str, link: Option<Link>) -> Result<Option<Link>> {
    match link {
        Some(l) if l.kind.as_deref() == Some("bridge") => Ok(Some(l)),
        Some(l) => Err(Error::new(
            code::CONFLICT,
            format!(
                "{name:?} exists but is a {}, not a bridge: rename it or configure another \
                 \"bridge\"",
                l.kind.as_deref().unwrap_or("device of no kind")
            ),
        )),
        None => Ok(None),
    }
}

/// What [`ensure_with`] makes sure of besides the bridge's existence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeOptions {
    /// MTU imposed on the bridge, new or existing (a configured `mtu`). None: an existing
    /// bridge keeps its MTU, a new one gets the default MTU asked for at creation.
    pub mtu: Option<u32>,
    /// Promiscuous mode on (`promiscMode`). False leaves the bridge's mode as it is: another
    /// network on the same bridge may have asked for it.
    pub promisc: bool,
}

/// Makes sure bridge `name` exists, is up and has MTU `mtu` ([`ensure_with`] imposing `mtu`).
pub fn ensure(nl: &mut Netlink, name: &str, mtu: u32) -> Result<Bridge> {
    let opts = BridgeOptions {
        mtu: Some(mtu),
        promisc: false,
    };
    ensure_with(nl, name, &opts, |_| Ok(mtu))
}

/// Makes sure bridge `name` exists and is up, with `opts` applied.
///
/// Missing: created in one request with MTU `opts.mtu`, else `default_mtu`'s answer (asked
/// only then), and a random fixed MAC so the gateway's MAC never follows port churn; a
/// concurrent creator (EEXIST) is tolerated and its bridge used as an existing one.
/// Present: one lookup, plus a change only when it is down, has another MTU than `opts.mtu`,
/// or lacks promiscuous mode that `opts` asks for. A non-bridge link of that name is code 104.
///
/// A bridge brought up here first gets `accept_dad=0` (when the calling thread is in `nl`'s
/// netns): its IPv6 link-local address is then
/// usable at once. While it is tentative the kernel cannot send neighbour solicitations for
/// packets it forwards to pods, so IPv6 traffic from other nodes to the first pods would be
/// dropped for the second or two DAD takes.
pub fn ensure_with(
    nl: &mut Netlink,
    name: &str,
    opts: &BridgeOptions,
    default_mtu: impl FnOnce(&mut Netlink) -> Result<u32>,
) -> Result<Bridge> {
    let (found, ipv4_forwarding) = find_listing_ipv4(nl, name)?;
    if let Some((l, ipv4)) = found {
        let mut br = adopt(nl, l, opts, false)?;
        br.ipv4 = Some(ipv4);
        br.ipv4_forwarding = ipv4_forwarding;
        return Ok(br);
    }
    let mtu = match opts.mtu {
        Some(m) => m,
        None => default_mtu(nl)?,
    };
    let spec = BridgeSpec {
        name,
        mtu: Some(mtu),
        mac: Some(crate::pod::veth::random_mac()),
        up: false,
    };
    let created = match nl.create_bridge(&spec) {
        Ok(()) => true,
        Err(e) if e.is_exists() => false,
        Err(e) => return Err(e.into()),
    };
    let l = find(nl, name)?.ok_or_else(|| {
        Error::new(
            code::NETLINK,
            format!("bridge {name:?} disappeared right after it was created"),
        )
    })?;
    let mut br = adopt(nl, l, opts, created)?;
    br.ipv4_forwarding = ipv4_forwarding;
    Ok(br)
}

fn adopt(nl: &mut Netlink, mut l: Link, opts: &BridgeOptions, created: bool) -> Result<Bridge> {
    if !l.admin_up {
        // sysctl acts in the calling thread's netns: only when that is `nl`'s (as in a
        // plugin). The file is absent only when IPv6 is off in the kernel: nothing to do then.
        if nl.netns_cookie()? == Netns::current()?.cookie()? {
            let _ = sysctl::set(&format!("net/ipv6/conf/{}/accept_dad", l.name), "0");
        }
        nl.set_link_up(l.index, true)?;
    }
    if let Some(mtu) = opts.mtu
        && l.mtu != mtu
    {
        nl.set_mtu(l.index, mtu)?;
        l.mtu = mtu;
    }
    if opts.promisc && l.flags & IFF_PROMISC == 0 {
        nl.set_promisc(l.index, true)?;
    }
    Ok(Bridge {
        index: l.index,
        name: l.name,
        mac: l.mac,
        mtu: l.mtu,
        created,
        carrier: l.oper_up,
        ipv4: None,
        ipv4_forwarding: None,
    })
}

/// Once a port of a bridge that had no carrier is up: looks the bridge up again, which makes
/// the kernel process its carrier change now (RTM_GETLINK runs pending linkwatch work) instead
/// of up to a second later. Until then the bridge has no IPv6 link-local address and cannot
/// resolve pods for the IPv6 packets it forwards to them. No request when it had carrier.
pub fn settle_carrier(nl: &mut Netlink, br: &Bridge) -> Result<()> {
    if !br.carrier {
        nl.link_by_index(br.index)?;
    }
    Ok(())
}

/// Puts gateway address `gw` (gateway/prefix of the pod subnet) on the bridge.
///
/// On a bridge made by this call: one RTM_NEWADDR. On a bridge that existed before: an IPv4
/// gateway among the addresses [`ensure_with`] listed ([`Bridge::ipv4`]) is there, nothing is
/// sent. Otherwise its addresses of that family are listed (an address dump, which the kernel
/// serves without the RTNL lock): already there, nothing else is sent. Missing: any *other* address that
/// conflicts (IPv4: any; IPv6: one whose subnet overlaps `gw`'s) is an error, code 104, unless
/// `force`, which replaces them; then `gw` is added (a concurrent adder's EEXIST is fine).
/// IPv6 gateways skip DAD so pods can use them at once.
pub fn ensure_gateway(nl: &mut Netlink, br: &Bridge, gw: IpNetwork, force: bool) -> Result<()> {
    let opts = AddrOptions {
        nodad: true,
        ..Default::default()
    };
    let add = |nl: &mut Netlink| match nl.add_address(br.index, gw, &opts) {
        Err(e) if !e.is_exists() => Err(Error::from(e)),
        _ => Ok(()),
    };
    if br.created {
        return add(nl);
    }
    if br.ipv4.as_ref().is_some_and(|listed| listed.contains(&gw)) {
        return Ok(());
    }
    let have: Vec<IpNetwork> = nl
        .addresses(Some(br.index), Some(Family::of(&gw.ip())))?
        .iter()
        .map(|a| a.network())
        .collect();
    if have.contains(&gw) {
        return Ok(());
    }
    let conflicts: Vec<IpNetwork> = have
        .into_iter()
        .filter(|a| conflicts_with(a, &gw))
        .collect();
    if conflicts.is_empty() {
        return add(nl);
    }
    if !force {
        let list: Vec<String> = conflicts.iter().map(|c| c.to_string()).collect();
        return Err(Error::new(
            code::CONFLICT,
            format!(
                "bridge {:?} already has address {} instead of gateway {gw}: remove it or set \
                 \"forceAddress\": true",
                br.name,
                list.join(", ")
            ),
        ));
    }
    for c in &conflicts {
        match nl.delete_address(br.index, *c) {
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
    }
    nl.replace_address(br.index, gw, &opts)?;
    Ok(())
}

/// CHECK: bridge `name` (ifindex `index`) carries every gateway address of `gws` (one address
/// dump); code 105 naming the first one missing.
pub fn check_gateways(nl: &mut Netlink, index: u32, name: &str, gws: &[IpNetwork]) -> Result<()> {
    if gws.is_empty() {
        return Ok(());
    }
    let have: Vec<IpNetwork> = nl
        .addresses(Some(index), None)?
        .iter()
        .map(|a| a.network())
        .collect();
    match gws.iter().find(|g| !have.contains(g)) {
        Some(g) => Err(Error::new(
            code::CHECK_FAILED,
            format!("bridge {name:?} does not have gateway address {g}"),
        )),
        None => Ok(()),
    }
}

/// True when bridge address `have` stands in the way of gateway `want` (same family assumed):
/// any IPv4 address; an IPv6 address whose subnet overlaps (link-local ones never do).
pub fn conflicts_with(have: &IpNetwork, want: &IpNetwork) -> bool {
    match (have, want) {
        (IpNetwork::V4(_), IpNetwork::V4(_)) => true,
        (IpNetwork::V6(h), IpNetwork::V6(w)) => h.contains(w.ip()) || w.contains(h.ip()),
        _ => false,
    }
}

/// Sets hairpin mode on bridge port `port` (ifindex): frames may leave through the port they
/// came in on, so a pod reaches itself through a service IP. One request.
pub fn set_hairpin(nl: &mut Netlink, port: u32, on: bool) -> Result<()> {
    Ok(nl.set_hairpin(port, on)?)
}

/// Gives a pod's freshly enslaved host veth the port flags `flags` (`hairpinMode`,
/// `portIsolation`) in one request: the port is ifindex `index` when known (as the creation
/// echoed it), else looked up as `name`. Nothing is sent when both flags are off, as a new
/// port's already are.
pub fn configure_port(
    nl: &mut Netlink,
    index: Option<u32>,
    name: &str,
    flags: PortFlags,
) -> Result<()> {
    if flags == PortFlags::default() {
        return Ok(());
    }
    let index = match index {
        Some(i) => i,
        None => {
            nl.link_by_name(name)?
                .ok_or_else(|| Error::new(code::NETLINK, format!("host veth {name} vanished")))?
                .index
        }
    };
    Ok(nl.set_port_flags(index, flags)?)
}

/// The address the bridge carries for pod address `ip`: its gateway with the pod subnet's
/// prefix (e.g. `10.1.0.1/24` for `10.1.0.5/24` via `10.1.0.1`). None without a gateway.
pub fn gateway_address(ip: &IpConfig) -> Option<IpNetwork> {
    IpNetwork::new(ip.gateway?, ip.address.prefix()).ok()
}

/// The gateway of subnet `net` when IPAM names none: the subnet's first address.
pub fn default_gateway(net: &IpNetwork) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).wrapping_add(1).into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).wrapping_add(1).into()),
    }
}

/// Turns on IP forwarding in the calling thread's netns for the families asked for (IPv4:
/// `net.ipv4.ip_forward`, IPv6: `net.ipv6.conf.all.forwarding`), reading first and writing
/// only when it is off.
pub fn enable_forwarding(v4: bool, v6: bool) -> Result<()> {
    enable_forwarding_known(v4, v6, None, None)
}

/// [`enable_forwarding`] with what the kernel already answered for IPv4 and IPv6 (netconf
/// asked in a send made anyway, [`Bridge::ipv4_forwarding`]): a known 1 is left alone with no
/// /proc read, a known 0 is written; an unknown one is read from /proc/sys first, as
/// [`enable_forwarding`] does.
pub fn enable_forwarding_known(
    v4: bool,
    v6: bool,
    known_v4: Option<bool>,
    known_v6: Option<bool>,
) -> Result<()> {
    let keys = [
        (v4, known_v4, "net.ipv4.ip_forward"),
        (v6, known_v6, "net.ipv6.conf.all.forwarding"),
    ];
    for (_, known, key) in keys.iter().filter(|(on, _, _)| *on) {
        let on = match known {
            Some(on) => *on,
            None => sysctl::get(key)? == "1",
        };
        if !on {
            sysctl::set(key, "1")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn conflict_rules() {
        assert!(conflicts_with(&n("10.9.0.1/24"), &n("10.1.0.1/24")));
        assert!(conflicts_with(&n("10.1.0.1/16"), &n("10.1.0.1/24")));
        assert!(!conflicts_with(&n("fe80::1/64"), &n("fd00::1/64")));
        assert!(conflicts_with(&n("fd00::9/64"), &n("fd00::1/64")));
        assert!(conflicts_with(&n("fd00::9/48"), &n("fd00:0:0:1::1/64")));
        assert!(!conflicts_with(&n("fd01::1/64"), &n("fd00::1/64")));
        assert!(!conflicts_with(&n("10.1.0.1/24"), &n("fd00::1/64")));
    }

    #[test]
    fn gateways() {
        let ip = IpConfig {
            address: n("10.1.0.5/24"),
            gateway: Some("10.1.0.1".parse().unwrap()),
            interface: None,
        };
        assert_eq!(gateway_address(&ip), Some(n("10.1.0.1/24")));
        assert_eq!(
            gateway_address(&IpConfig {
                gateway: None,
                ..ip
            }),
            None
        );
        assert_eq!(
            default_gateway(&n("10.1.2.77/24")),
            "10.1.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            default_gateway(&n("fd00:1::99/64")),
            "fd00:1::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn bridge_names() {
        assert!(validate_name("cni0").is_ok());
        for bad in ["", "a/b", "sixteen-chars-xx", "..", "a b"] {
            assert_eq!(validate_name(bad).unwrap_err().code, code::INVALID_CONFIG);
        }
    }
}
