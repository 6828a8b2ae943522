//! Bridge-side link attributes: promiscuous mode of a device, and the per-port flags of a
//! bridge port (hairpin, isolation) set together in one AF_BRIDGE request.

use netlink_packet_core::{DefaultNla, NLA_F_NESTED};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::Netlink;
use super::attr;
use super::error::NlResult;

const IFLA_PROTINFO: u16 = 12;
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_BRPORT_ISOLATED: u16 = 33;
/// IFF_PROMISC as reported in `ifi_flags` (the user-requested promiscuity, see
/// [`super::Link::flags`]).
pub const IFF_PROMISC: u32 = 0x100;

/// Flags of a bridge port, as [`Netlink::set_port_flags`] writes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortFlags {
    /// IFLA_BRPORT_MODE: frames may leave through the port they came in on.
    pub hairpin: bool,
    /// IFLA_BRPORT_ISOLATED: the port exchanges frames only with non-isolated ports.
    pub isolated: bool,
}

impl Netlink {
    /// Sets (`true`) or clears the user-requested promiscuous mode of a device (IFF_PROMISC
    /// with its change mask, as `ip link set DEV promisc on|off`). One request.
    pub fn set_promisc(&mut self, index: u32, on: bool) -> NlResult<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.change_mask = LinkFlags::Promisc;
        if on {
            m.header.flags = LinkFlags::Promisc;
        }
        self.sock
            .ack(RouteNetlinkMessage::SetLink(m), 0)
            .map_err(|e| e.with_op(|| format!("set promisc {} on ifindex {index}", on_off(on))))
    }

    /// Writes every flag of `flags` on bridge port `index` in one AF_BRIDGE setlink
    /// (IFLA_PROTINFO with IFLA_BRPORT_MODE and IFLA_BRPORT_ISOLATED). The link must be
    /// enslaved already.
    pub fn set_port_flags(&mut self, index: u32, flags: PortFlags) -> NlResult<()> {
        let mut nested = Vec::with_capacity(16);
        attr::push(&mut nested, IFLA_BRPORT_MODE, &[flags.hairpin as u8]);
        attr::push(&mut nested, IFLA_BRPORT_ISOLATED, &[flags.isolated as u8]);
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes
            .push(netlink_packet_route::link::LinkAttribute::ProtoInfoUnknown(
                DefaultNla::new(IFLA_PROTINFO | NLA_F_NESTED, nested),
            ));
        self.sock
            .ack(RouteNetlinkMessage::SetLink(m), 0)
            .map_err(|e| {
                e.with_op(|| {
                    format!(
                        "set hairpin {} isolated {} on bridge port ifindex {index}",
                        on_off(flags.hairpin),
                        on_off(flags.isolated)
                    )
                })
            })
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}
