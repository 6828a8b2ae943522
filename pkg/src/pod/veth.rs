//! The veth pair of one attachment: a host end on the bridge and a pod end made directly in the
//! pod's netns under `CNI_IFNAME`.
//!
//! Ownership is a mark, not a name: the host end carries its owner, [`Owner::mark`] (network,
//! container ID and ifname), as its interface alias (IFLA_IFALIAS). DEL, CHECK and GC find and
//! judge links by that mark only, so another network's pods on the same bridge and hand-made
//! links that merely look like twill's are never touched. The host end's name is derived from
//! the owner ([`Owner::host_name`]): DEL needs neither the netns nor a prevResult (a lookup by
//! name, a comparison of the alias, one RTM_DELLINK). When a foreign link holds that name, ADD
//! takes the next of [`NAME_ATTEMPTS`] candidates, deterministically, and DEL and CHECK look
//! through the same candidates.

use std::collections::HashSet;

use ipnetwork::IpNetwork;

use crate::cni::types::{Attachment, CniResult, IpConfig, Route};
use crate::error::{Error, Result, code};
use crate::hash::Fnv1a64;
use crate::kernel::netlink::{
    AddrOptions, Batch, Link, LinkChange, MacAddr, Netlink, NetlinkError, PortFlags, RouteFilter,
    RouteSpec, VethSpec, inet_conf,
};
use crate::kernel::netns::Netns;
use crate::kernel::sysctl;

/// Prefix of the host-side veth names of bridged pairs ([`create`]); the rest is
/// [`HASH_HEX_DIGITS`] hex digits.
pub const HOST_PREFIX: &str = "tw";
/// Number of lowercase hex digits after [`HOST_PREFIX`] (2 + 13 = 15 = IFNAMSIZ - 1).
pub const HASH_HEX_DIGITS: usize = 13;
/// How many host names an attachment may take, in order, when foreign links hold the earlier
/// ones (each one a 52-bit hash: only a deliberate squatter makes a second one necessary).
pub const NAME_ATTEMPTS: u8 = 8;
/// Longest interface name the kernel takes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Longest host-side name prefix: at least 8 hex digits (32 bits of hash) must follow it.
pub const PREFIX_MAX: usize = 7;
/// First word of every owner mark (the alias of a host end twill made).
pub const MARK_PREFIX: &str = "twill";
/// `rtm_protocol` of the routes made in the pod (RTPROT_BOOT, what `ip route add` uses).
pub const POD_ROUTE_PROTO: u8 = 3;

/// Longest network name, or `container ID + " " + ifname`, kept as given in a mark; a longer
/// one is replaced by `#` and 32 hex digits of its hash (the kernel keeps at most 255 bytes of
/// an alias: "twill" + 2 separators + 2 * 120 = 247).
const MARK_PART_MAX: usize = 120;

/// The owner of a host end: one attachment of one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    /// The network's `name`.
    pub network: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
}

impl<'a> Owner<'a> {
    /// The owner of the attachment `args` names, in network `network`.
    pub fn of(network: &'a str, args: &'a crate::CmdArgs) -> Owner<'a> {
        Owner {
            network,
            container_id: &args.container_id,
            ifname: &args.ifname,
        }
    }
}

impl Owner<'_> {
    /// The alias a host end of this owner carries: `twill <network> <container ID> <ifname>`
    /// (space-separated: none of the three can hold a space); a part longer than 120 bytes is
    /// `#` + 32 hex digits of its hash. Stable across versions: it is how links are found.
    pub fn mark(&self) -> String {
        format!(
            "{} {}",
            network_mark(self.network),
            mark_part(&format!("{} {}", self.container_id, self.ifname))
        )
    }

    /// Candidate host-side name number `attempt` (0 first): `tw` + 13 hex digits of a hash of
    /// (network, container ID, ifname, attempt). Stable across versions and builds.
    pub fn host_name(&self, attempt: u8) -> String {
        self.host_name_with(HOST_PREFIX, attempt)
    }

    /// [`Owner::host_name`] with another prefix (a valid one, see [`validate_prefix`]): the
    /// same hash, as many hex digits as fit in 15 bytes after `prefix`.
    pub fn host_name_with(&self, prefix: &str, attempt: u8) -> String {
        let mut h = Fnv1a64::default();
        h.write_field(b"twill-veth 2");
        h.write_field(self.network.as_bytes());
        h.write_field(self.container_id.as_bytes());
        h.write_field(self.ifname.as_bytes());
        if attempt > 0 {
            h.write(&[attempt]);
        }
        let digits = IFNAME_MAX.saturating_sub(prefix.len()).clamp(1, 16);
        let bits = h.finish_mixed() >> (64 - 4 * digits);
        format!("{prefix}{bits:0digits$x}")
    }

    /// Whether `link` carries this owner's mark.
    pub fn owns(&self, link: &Link) -> bool {
        link.alias.as_deref() == Some(self.mark().as_str())
    }

    fn describe(&self) -> String {
        format!(
            "container {} ifname {} of network {}",
            self.container_id, self.ifname, self.network
        )
    }
}

/// `twill <network>`: the start of the mark of every host end of `network`, without the
/// separator that follows it.
fn network_mark(network: &str) -> String {
    format!("{MARK_PREFIX} {}", mark_part(network))
}

/// Code 7 unless `prefix` can start host-side names: 1 to [`PREFIX_MAX`] ASCII letters,
/// digits, `-` or `_`.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = (1..=PREFIX_MAX).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        return Ok(());
    }
    Err(Error::invalid_config(format!(
        "host veth name prefix \"{prefix}\" must be 1 to {PREFIX_MAX} letters, digits, '-' or \
         '_' (a hash of the attachment fills the rest of the 15-byte name)"
    )))
}

fn mark_part(text: &str) -> String {
    if text.len() <= MARK_PART_MAX {
        return text.to_string();
    }
    let half = |salt: &[u8]| {
        let mut h = Fnv1a64::default();
        h.write_field(salt);
        h.write(text.as_bytes());
        h.finish_mixed()
    };
    format!("#{:016x}{:016x}", half(b"mark-a"), half(b"mark-b"))
}

/// A random unicast, locally administered MAC address (getrandom(2)).
pub fn random_mac() -> MacAddr {
    let mut b = [0u8; 6];
    // The raw syscall, not libc's wrapper: the static musl build resolves that wrapper to null.
    // SAFETY: the kernel writes at most b.len() bytes into b.
    let n = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_getrandom,
            b.as_mut_ptr(),
            b.len(),
            0 as nix::libc::c_uint,
        )
    };
    if n != b.len() as nix::libc::c_long {
        // No entropy syscall: fall back to std's OS-seeded hasher keys.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        b.copy_from_slice(&h.finish().to_ne_bytes()[..6]);
    }
    b[0] = (b[0] & 0xfe) | 0x02;
    MacAddr(b)
}

/// What [`create`] makes.
#[derive(Debug, Clone)]
pub struct PairSpec<'a> {
    /// The attachment the pair belongs to (names and marks the host end; `ifname` is also the
    /// pod end's name in the pod netns).
    pub owner: Owner<'a>,
    /// The pod's netns, where the pod end is created.
    pub pod_ns: &'a Netns,
    /// MTU of both ends.
    pub mtu: u32,
    /// Bridge ifindex the host end is enslaved to.
    pub bridge: u32,
    /// MAC of the pod end (runtimeConfig `mac`); random when None.
    pub pod_mac: Option<MacAddr>,
}

/// The host end as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEnd {
    /// Its name (one of [`Owner::host_name`]'s candidates).
    pub name: String,
    /// Its MAC (chosen here, so it need not be read back).
    pub mac: MacAddr,
    /// Its ifindex in the node netns, as the kernel echoed the creation (None if it did not).
    pub index: Option<u32>,
    /// The pod end's ifindex in the pod netns, from the same echo (None if not echoed).
    pub pod_index: Option<u32>,
    /// The pod end's MAC (`spec.pod_mac`, else chosen here).
    pub pod_mac: MacAddr,
    /// The node's IPv4 forwarding as asked with the owner mark ([`HostSpec::ask_forwarding`]);
    /// None when not asked or not answered.
    pub ipv4_forwarding: Option<bool>,
}

/// Why [`create`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// A host end of this attachment exists: it is set up already (the runtime must DEL it
    /// first). Its IP reservation belongs to the live attachment and must not be released.
    #[error(
        "host veth {name} of container {container_id} ifname {ifname} already exists: the \
         attachment is set up already (DEL it first)"
    )]
    AttachmentExists {
        /// The host end's name.
        name: String,
        /// `CNI_CONTAINERID`.
        container_id: String,
        /// `CNI_IFNAME`.
        ifname: String,
    },
    /// The pod netns already has an interface called `ifname`.
    #[error("interface {ifname} already exists in netns {netns}")]
    IfnameTaken {
        /// `CNI_IFNAME`.
        ifname: String,
        /// The pod netns path.
        netns: String,
    },
    /// Links twill does not own hold every candidate host name of the attachment.
    #[error(
        "every candidate host veth name of container {container_id} ifname {ifname} is held \
         by a link twill does not own ({names}): remove those links"
    )]
    NamesTaken {
        /// `CNI_CONTAINERID`.
        container_id: String,
        /// `CNI_IFNAME`.
        ifname: String,
        /// The candidates, comma-separated.
        names: String,
    },
    /// Any other kernel refusal.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

impl From<CreateError> for Error {
    /// Name clashes are code 104 (CONFLICT), kernel refusals 100.
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Netlink(n) => n.into(),
            clash => Error::new(code::CONFLICT, clash.to_string()),
        }
    }
}

/// Creates the pair in one RTM_NEWLINK on the node socket `nl`: the host end up, with MTU,
/// MAC and bridge master; the pod end (down, MAC chosen here) directly in `spec.pod_ns` as
/// `spec.owner.ifname`. The request asks for an echo, which tells both ifindexes (no lookups
/// later). Then the host end gets its owner mark (the kernel ignores IFLA_IFALIAS in a create
/// request, so this is one more request).
///
/// A foreign link (not carrying this owner's mark) holding the host name: the next candidate
/// name is tried. A link carrying the mark: [`CreateError::AttachmentExists`]. Nothing is left
/// behind on failure. A name clash says which name (lookups on the error path only).
pub fn create(nl: &mut Netlink, spec: &PairSpec<'_>) -> Result<HostEnd, CreateError> {
    create_port(nl, spec, PortFlags::default())
}

/// [`create`] with the host end's bridge port flags `port` set in the same request as its
/// mark (none when `port` is the kernel's default, all off).
pub fn create_port(
    nl: &mut Netlink,
    spec: &PairSpec<'_>,
    port: PortFlags,
) -> Result<HostEnd, CreateError> {
    let host = HostSpec {
        prefix: HOST_PREFIX,
        master: Some(spec.bridge),
        mac: None,
        port: (port != PortFlags::default()).then_some(port),
        ask_forwarding: false,
    };
    create_with(nl, spec, &host)
}

/// How the host end of a pair is made, where [`PairSpec`]'s bridge does not apply: its name
/// prefix, its master, its MAC and its bridge port flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSpec<'a> {
    /// Name prefix of the host end (valid per [`validate_prefix`]).
    pub prefix: &'a str,
    /// Master ifindex (a bridge), or None for a host end on its own (routed planes).
    pub master: Option<u32>,
    /// The host end's MAC; random when None.
    pub mac: Option<MacAddr>,
    /// Bridge port flags, set with the owner mark (`master` must be a bridge); None leaves
    /// the kernel's defaults.
    pub port: Option<PortFlags>,
    /// Ask the node's IPv4 forwarding in the send that marks the host end
    /// ([`HostEnd::ipv4_forwarding`]), for a plane with no earlier node send to carry it.
    pub ask_forwarding: bool,
}

/// [`create`] with the host end made as `host` says (`spec.bridge` is not used): the same
/// single request, marks, name candidates and failure handling.
pub fn create_with(
    nl: &mut Netlink,
    spec: &PairSpec<'_>,
    host: &HostSpec<'_>,
) -> Result<HostEnd, CreateError> {
    let owner = &spec.owner;
    let mac = host.mac.unwrap_or_else(random_mac);
    let pod_mac = spec.pod_mac.unwrap_or_else(random_mac);
    let mut taken = Vec::new();
    for attempt in 0..NAME_ATTEMPTS {
        let name = owner.host_name_with(host.prefix, attempt);
        let veth = VethSpec {
            name: &name,
            mtu: Some(spec.mtu),
            mac: Some(mac),
            master: host.master,
            up: true,
            peer_name: owner.ifname,
            peer_netns: Some(spec.pod_ns.as_fd()),
            peer_mtu: Some(spec.mtu),
            peer_mac: Some(pod_mac),
        };
        match nl.create_veth_echo(&veth) {
            Ok(echo) => {
                let index = echo.as_ref().map(|l| l.index);
                let mark = owner.mark();
                let change = LinkChange {
                    alias: Some(&mark),
                    port: host.port,
                    ..Default::default()
                };
                let mut ipv4_forwarding = None;
                let marked = match index {
                    Some(i) if host.ask_forwarding => {
                        let mut b = Batch::new();
                        b.change_link(i, &change);
                        b.ask_forwarding(crate::kernel::netlink::Family::V4);
                        nl.send_batch_reading(b).map(|r| {
                            ipv4_forwarding = r.ipv4_forwarding;
                        })
                    }
                    Some(i) => nl.change_link(i, &change),
                    // A kernel that echoes nothing (before 6.1): the index by name first.
                    None => match nl.link_by_name(&name) {
                        Ok(Some(l)) => nl.change_link(l.index, &change),
                        Ok(None) => nl.set_alias_by_name(&name, &mark),
                        Err(e) => Err(e),
                    },
                };
                if let Err(e) = marked {
                    let _ = match index {
                        Some(i) => nl.delete_link(i),
                        None => nl.delete_link_by_name(&name),
                    };
                    return Err(e.into());
                }
                return Ok(HostEnd {
                    name,
                    mac,
                    index,
                    pod_index: echo.and_then(|l| l.link).filter(|&i| i != 0),
                    pod_mac,
                    ipv4_forwarding,
                });
            }
            Err(e) if e.is_exists() => match nl.link_by_name(&name)? {
                Some(l) if owner.owns(&l) => {
                    return Err(CreateError::AttachmentExists {
                        name,
                        container_id: owner.container_id.to_string(),
                        ifname: owner.ifname.to_string(),
                    });
                }
                Some(_) => taken.push(name),
                None => {
                    return Err(CreateError::IfnameTaken {
                        ifname: owner.ifname.to_string(),
                        netns: spec.pod_ns.path().display().to_string(),
                    });
                }
            },
            Err(e) => {
                remove_unanswered(nl, spec.pod_ns, &name, mac, owner.ifname, pod_mac);
                return Err(e.into());
            }
        }
    }
    Err(CreateError::NamesTaken {
        container_id: owner.container_id.to_string(),
        ifname: owner.ifname.to_string(),
        names: taken.join(", "),
    })
}

/// After a create request whose answer was lost (a failed receive: the kernel may have made
/// the pair all the same), removes the pair if it is this request's: a veth named `name`
/// with the host MAC chosen here and no alias, whose peer is `ifname` in `pod_ns` with the
/// pod MAC chosen here. Best effort: the create's error is what the caller reports.
fn remove_unanswered(
    nl: &mut Netlink,
    pod_ns: &Netns,
    name: &str,
    mac: MacAddr,
    ifname: &str,
    pod_mac: MacAddr,
) {
    let Ok(Some(host)) = nl.link_by_name(name) else {
        return;
    };
    if host.alias.is_some() || host.kind.as_deref() != Some("veth") || host.mac != Some(mac) {
        return;
    }
    let Ok(Ok(Some(pod))) = Netlink::new_in(pod_ns).map(|mut p| p.link_by_name(ifname)) else {
        return;
    };
    if pod.mac == Some(pod_mac) && pod.link == Some(host.index) && host.link == Some(pod.index) {
        let _ = nl.delete_link(host.index);
    }
}

/// The host end `owner` owns (carrying its mark), looked up among the candidate names in
/// order: one RTM_GETLINK when it holds the first name, [`NAME_ATTEMPTS`] when there is none.
pub fn find(nl: &mut Netlink, owner: &Owner<'_>) -> Result<Option<Link>> {
    find_with(nl, owner, HOST_PREFIX)
}

/// [`find`] among the candidate names with `prefix` ([`Owner::host_name_with`]).
pub fn find_with(nl: &mut Netlink, owner: &Owner<'_>, prefix: &str) -> Result<Option<Link>> {
    let mark = owner.mark();
    for attempt in 0..NAME_ATTEMPTS {
        if let Some(l) = nl.link_by_name(&owner.host_name_with(prefix, attempt))?
            && l.alias.as_deref() == Some(mark.as_str())
        {
            return Ok(Some(l));
        }
    }
    Ok(None)
}

/// DEL of a bridged pod's pair: the host end carrying `owner`'s mark ([`delete`]), else the
/// unmarked pair an ADD killed before marking it, found through the pod's netns at `pod_netns`
/// ([`delete_unmarked_in`]). Ok(false) when there is neither.
pub fn delete_attachment(
    nl: &mut Netlink,
    owner: &Owner<'_>,
    pod_netns: Option<&std::path::Path>,
) -> Result<bool> {
    Ok(delete(nl, owner)? || delete_unmarked_in(nl, owner, HOST_PREFIX, pod_netns)?)
}

/// DEL's fallback when no host end carries `owner`'s mark: the unmarked pair an ADD killed
/// before marking it, found through the pod's netns at `pod_netns` (see
/// [`delete_unmarked_with`]). Ok(false) when there is no such netns, `prefix` is not a valid
/// prefix, or no pair is joined exactly so.
pub fn delete_unmarked_in(
    nl: &mut Netlink,
    owner: &Owner<'_>,
    prefix: &str,
    pod_netns: Option<&std::path::Path>,
) -> Result<bool> {
    if validate_prefix(prefix).is_err() {
        return Ok(false);
    }
    match pod_netns.map(Netns::open_if_exists).transpose()? {
        Some(Some(pod_ns)) => delete_unmarked_with(nl, owner, prefix, &pod_ns),
        _ => Ok(false),
    }
}

/// Deletes the pair an ADD of `owner` made but could not mark (killed between the create
/// and the alias, [`create_with`]): a host end holding one of `owner`'s candidate names with
/// `prefix`, with no alias, whose veth peer is `owner.ifname` in `pod_ns`, itself without an
/// alias. Only a pair joined exactly so is twill's; any other link is left alone. Ok(false)
/// when there is none. Costs a socket in the pod netns: DEL calls it only when no marked
/// host end was found.
pub fn delete_unmarked_with(
    nl: &mut Netlink,
    owner: &Owner<'_>,
    prefix: &str,
    pod_ns: &Netns,
) -> Result<bool> {
    let mut pod_nl: Option<Netlink> = None;
    for attempt in 0..NAME_ATTEMPTS {
        let Some(host) = nl.link_by_name(&owner.host_name_with(prefix, attempt))? else {
            continue;
        };
        if host.alias.is_some() || host.kind.as_deref() != Some("veth") {
            continue;
        }
        let pod_nl = match &mut pod_nl {
            Some(p) => p,
            None => pod_nl.insert(Netlink::new_in(pod_ns)?),
        };
        let Some(pod) = pod_nl.link_by_name(owner.ifname)? else {
            return Ok(false);
        };
        let joined = pod.kind.as_deref() == Some("veth")
            && pod.alias.is_none()
            && host.link == Some(pod.index)
            && pod.link == Some(host.index);
        if joined {
            return match nl.delete_link(host.index) {
                Ok(()) => Ok(true),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(e.into()),
            };
        }
    }
    Ok(false)
}

/// Deletes the host end `owner` owns ([`find`]), which removes the pod end too: one
/// RTM_DELLINK. Links without the owner's mark are never touched. Ok(false) when there was
/// none (or it vanished meanwhile).
pub fn delete(nl: &mut Netlink, owner: &Owner<'_>) -> Result<bool> {
    delete_with(nl, owner, HOST_PREFIX)
}

/// [`delete`] of a host end named with `prefix` ([`find_with`]).
pub fn delete_with(nl: &mut Netlink, owner: &Owner<'_>, prefix: &str) -> Result<bool> {
    let Some(link) = find_with(nl, owner, prefix)? else {
        return Ok(false);
    };
    match nl.delete_link(link.index) {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the host end [`create`] made (by ifindex when the kernel echoed it, else by name):
/// the undo of a failed ADD. Ok(false) when it was already gone.
pub fn delete_created(nl: &mut Netlink, host: &HostEnd) -> Result<bool> {
    let res = match host.index {
        Some(i) => nl.delete_link(i),
        None => nl.delete_link_by_name(&host.name),
    };
    match res {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The pod end after [`configure_pod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEnd {
    /// Its ifindex in the pod netns.
    pub index: u32,
    /// Its MAC.
    pub mac: Option<MacAddr>,
    /// Its peer's (the host end's) ifindex in the node netns, as the kernel reports it.
    pub peer_index: Option<u32>,
}

/// How [`configure_created_pod`] leaves the pod end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodOptions {
    /// Bring the interface up (false: `disableContainerInterface`, for a pod without
    /// addresses; it is left down, and neither routes nor announcements are made).
    pub up: bool,
    /// IPv6 duplicate address detection on the interface (`enabledad`): `accept_dad=1`,
    /// `enhanced_dad=1` and addresses added tentative. Off: every address usable at once,
    /// and for a pod with IPv6 addresses `accept_dad=0` (the link-local one too).
    pub dad: bool,
}

impl Default for PodOptions {
    /// Up, without DAD.
    fn default() -> Self {
        PodOptions {
            up: true,
            dad: false,
        }
    }
}

/// Configures the pod end inside `pod_ns` over one socket made there: DAD off (see
/// [`PodOptions`]), addresses, up, an announcement of its IPv4 addresses (gratuitous ARP),
/// then `routes` (their `oif` is set to the interface; protocol [`POD_ROUTE_PROTO`] unless
/// set). One setns bracket, two batches in the pod (addresses and up; MAC and routes).
///
/// The announcement corrects stale neighbour entries of a reused IP on the node and the other
/// pods. A gratuitous ARP sent as the interface comes up (arp_notify) is not reliable through a
/// bridge: the host end's carrier reaches the bridge asynchronously (linkwatch), and until then
/// its port may drop frames. So: up, and only then `arp_notify=1` (in the same request: the
/// kernel applies IPv4 settings after the flags); look the host end up on `node` (RTM_GETLINK
/// runs the device's pending linkwatch work, so the port forwards from then on); set the pod
/// end's MAC to itself, which makes the kernel announce every IPv4 address
/// (NETDEV_CHANGEADDR). One ARP flood per ADD, one extra round trip, no waiting.
pub fn configure_pod(
    node: &mut Netlink,
    pod_ns: &Netns,
    ifname: &str,
    addrs: &[IpNetwork],
    routes: &[RouteSpec],
) -> Result<PodEnd> {
    let opts = PodOptions::default();
    configure_pod_of(node, pod_ns, ifname, None, addrs, routes, opts)
}

/// [`configure_pod`] for the pair `host` [`create`]d, with `opts`: when the kernel echoed
/// both ifindexes, the pod end is not looked up (one round trip less). Code 7 when `opts`
/// leaves the interface down but `addrs` or `routes` are given.
pub fn configure_created_pod(
    node: &mut Netlink,
    pod_ns: &Netns,
    ifname: &str,
    host: &HostEnd,
    addrs: &[IpNetwork],
    routes: &[RouteSpec],
    opts: PodOptions,
) -> Result<PodEnd> {
    let known = match (host.pod_index, host.index) {
        (Some(pod), Some(peer)) => Some(PodEnd {
            index: pod,
            mac: Some(host.pod_mac),
            peer_index: Some(peer),
        }),
        _ => None,
    };
    configure_pod_of(node, pod_ns, ifname, known, addrs, routes, opts)
}

fn configure_pod_of(
    node: &mut Netlink,
    pod_ns: &Netns,
    ifname: &str,
    known: Option<PodEnd>,
    addrs: &[IpNetwork],
    routes: &[RouteSpec],
    opts: PodOptions,
) -> Result<PodEnd> {
    if !opts.up && (!addrs.is_empty() || !routes.is_empty()) {
        return Err(Error::invalid_config(format!(
            "interface {ifname:?} is to stay down (\"disableContainerInterface\"), so it cannot \
             take addresses or routes: use \"ipam\": {{}}"
        )));
    }
    pod_ns.run(|| -> Result<PodEnd> {
        let mut nl = Netlink::new()?;
        let link = match known {
            Some(k) => k,
            None => nl
                .link_by_name(ifname)?
                .map(|l| PodEnd {
                    index: l.index,
                    mac: l.mac,
                    peer_index: l.link,
                })
                .ok_or_else(|| {
                    Error::new(
                        code::NETLINK,
                        format!(
                            "interface {ifname} vanished from netns {} right after it was \
                             created",
                            pod_ns.path().display()
                        ),
                    )
                })?,
        };
        let v4 = addrs.iter().any(IpNetwork::is_ipv4);
        let v6 = addrs.iter().any(IpNetwork::is_ipv6);
        if v6 {
            // Harmless when already 0; the file is missing only when IPv6 is off in the kernel,
            // and then the address below fails with a clear error.
            let _ = sysctl::set(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0");
        }
        set_dad(ifname, opts.dad, v6)?;
        // Subscribed before the addresses exist, so the end of their DAD cannot be missed.
        let mut dad_events = if opts.dad && opts.up && v6 {
            Some(crate::kernel::netlink::Ipv6AddrEvents::open()?)
        } else {
            None
        };
        let addr_opts = AddrOptions {
            nodad: !opts.dad,
            ..Default::default()
        };
        // The addresses and the interface coming up, in one batch; with `arp_notify` set in
        // the same request, after the interface is up (the kernel applies the IPv4 settings
        // after the flags), so the unreliable announcement at up is never sent.
        let mut first = Batch::new();
        for a in addrs {
            first.add_address(link.index, *a, &addr_opts);
        }
        if !opts.up {
            nl.send_batch(first)?;
            return Ok(link);
        }
        let announce = match (v4, link.peer_index, link.mac) {
            (true, Some(peer), Some(mac)) => Some((peer, mac)),
            _ => None,
        };
        let notify = [(inet_conf::ARP_NOTIFY, 1)];
        first.change_link(
            link.index,
            &LinkChange {
                up: true,
                inet_conf: if announce.is_some() { &notify } else { &[] },
                ..Default::default()
            },
        );
        nl.send_batch(first)?;
        let mut then = Batch::new();
        if let Some((peer, mac)) = announce {
            node.link_by_index(peer)?;
            then.change_link(
                link.index,
                &LinkChange {
                    mac: Some(mac),
                    ..Default::default()
                },
            );
        }
        for r in routes {
            let mut r = r.clone();
            r.oif = Some(link.index);
            then.append_route(&r);
        }
        nl.send_batch(then)?;
        if let Some(events) = &mut dad_events {
            let v6: Vec<std::net::Ipv6Addr> = addrs
                .iter()
                .filter_map(|a| match a.ip() {
                    std::net::IpAddr::V6(ip) => Some(ip),
                    std::net::IpAddr::V4(_) => None,
                })
                .collect();
            dad_settled(
                events.wait_dad(&mut nl, link.index, &v6, DAD_TIMEOUT)?,
                ifname,
            )?;
        }
        Ok(link)
    })?
}

/// The longest ADD waits for IPv6 duplicate address detection (`enabledad`), as the reference.
pub const DAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// DAD's end as an ADD result: an address in use elsewhere is code 104, DAD still running
/// after [`DAD_TIMEOUT`] code 11 (try again).
fn dad_settled(outcome: crate::kernel::netlink::DadOutcome, ifname: &str) -> Result<()> {
    use crate::kernel::netlink::DadOutcome;
    match outcome {
        DadOutcome::Settled => Ok(()),
        DadOutcome::Failed(ip) => Err(Error::new(
            code::CONFLICT,
            format!(
                "IPv6 address {ip} of interface {ifname:?} is already in use on the pod network \
                 (duplicate address detection failed)"
            ),
        )),
        DadOutcome::TimedOut(ips) => {
            let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
            Err(Error::new(
                code::TRY_AGAIN,
                format!(
                    "duplicate address detection of {} on interface {ifname:?} did not finish \
                     within {} s",
                    list.join(", "),
                    DAD_TIMEOUT.as_secs()
                ),
            ))
        }
    }
}

/// IPv6 DAD of interface `ifname` in the calling thread's netns, set before it comes up so
/// that its link-local address follows too: on, `accept_dad=1` and `enhanced_dad=1`; off,
/// `accept_dad=0`, written only when IPv6 addresses are to be added (`needed`). Without IPv6
/// in the kernel (no such file) there is nothing to set; with `needed` a failed write is an
/// error, otherwise it is ignored.
fn set_dad(ifname: &str, on: bool, needed: bool) -> Result<()> {
    if !on && !needed {
        // No IPv6 address to add: DAD has nothing of the pod's to hold back (the link-local
        // address serves no pod traffic), so no write.
        return Ok(());
    }
    let keys: &[(&str, &str)] = if on {
        &[("accept_dad", "1"), ("enhanced_dad", "1")]
    } else {
        &[("accept_dad", "0")]
    };
    for (key, value) in keys {
        match sysctl::set(&format!("net/ipv6/conf/{ifname}/{key}"), value) {
            Err(e) if needed => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// A host end of a network whose attachment is no longer valid (GC): its link and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// The link.
    pub link: Link,
    /// `<container ID> <ifname>` as the mark records it (a hash when it was too long).
    pub attachment: String,
}

/// The links of the namespace carrying a mark of `network` whose attachment is not in `valid`
/// (GC). Only the mark counts: neither the name, the kind nor the master, so another network's
/// pods on the same bridge and links that merely look like twill's are never listed. One link
/// dump.
pub fn stale_host_ends(
    nl: &mut Netlink,
    network: &str,
    valid: &[Attachment],
) -> Result<Vec<Stale>> {
    let prefix = format!("{} ", network_mark(network));
    let keep: HashSet<String> = valid
        .iter()
        .map(|a| mark_part(&format!("{} {}", a.container_id, a.ifname)))
        .collect();
    Ok(nl
        .links()?
        .into_iter()
        .filter_map(|link| {
            let attachment = link.alias.as_deref()?.strip_prefix(prefix.as_str())?;
            if attachment.is_empty() || keep.contains(attachment) {
                return None;
            }
            let attachment = attachment.to_string();
            Some(Stale { link, attachment })
        })
        .collect())
}

/// GC of `network`'s host ends: removes every [`stale_host_ends`] link (its pod end goes with
/// it), going on past failures. Returns what failed, each as (what, why); empty when all went.
pub fn remove_stale(nl: &mut Netlink, network: &str, valid: &[Attachment]) -> Vec<(String, Error)> {
    let stale = match stale_host_ends(nl, network, valid) {
        Ok(s) => s,
        Err(e) => return vec![(format!("list the host veths of network {network}"), e)],
    };
    let mut failed = Vec::new();
    for s in stale {
        match nl.delete_link(s.link.index) {
            Err(e) if !e.is_not_found() => failed.push((
                format!("remove host veth {} of {}", s.link.name, s.attachment),
                e.into(),
            )),
            _ => {}
        }
    }
    failed
}

/// CHECK of one attachment against its `prev` result: the host end carrying `owner`'s mark
/// exists, is a veth and a port of bridge `bridge` (ifindex); the pod end `owner.ifname`
/// exists in `pod_ns`, is the host end's peer, has the MAC `prev` reports, every address
/// `prev` assigns to it and every route of `prev`, and is up unless `opts` left it down.
/// Code 105 naming the first thing that differs.
pub fn check(
    nl: &mut Netlink,
    pod_ns: &Netns,
    bridge: u32,
    owner: &Owner<'_>,
    prev: &CniResult,
    opts: PodOptions,
) -> Result<()> {
    let failed = |msg: String| Error::new(code::CHECK_FAILED, msg);
    let ifname = owner.ifname;
    let host = find(nl, owner)?.ok_or_else(|| {
        // Name it as the ADD result did, when that is one of the candidates.
        let candidates: Vec<String> = (0..NAME_ATTEMPTS).map(|i| owner.host_name(i)).collect();
        let name = prev
            .interfaces
            .iter()
            .find(|i| i.sandbox.is_none() && candidates.contains(&i.name))
            .map_or(candidates[0].as_str(), |i| i.name.as_str());
        failed(format!(
            "host veth {name} of {} does not exist (no link carries its mark \"{}\")",
            owner.describe(),
            owner.mark()
        ))
    })?;
    let host_name = host.name.clone();
    if host.kind.as_deref() != Some("veth") {
        return Err(failed(format!(
            "host interface {host_name} is a {}, not a veth",
            host.kind.as_deref().unwrap_or("device of no kind")
        )));
    }
    if host.master != Some(bridge) {
        let master = host.master.map_or_else(
            || "it has none".to_string(),
            |m| format!("its master is ifindex {m}"),
        );
        return Err(failed(format!(
            "host veth {host_name} is not a port of the bridge (ifindex {bridge}; {master})"
        )));
    }
    if let Some(i) = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_none() && i.name == host_name)
        && let (Some(want), Some(have)) = (&i.mac, host.mac)
        && !mac_eq(want, &have)
    {
        return Err(failed(format!(
            "host veth {host_name} has MAC {have}, prevResult says {want}"
        )));
    }

    let (pod, addrs, routes) = pod_ns.run(|| -> Result<_> {
        let mut pnl = Netlink::new()?;
        let Some(pod) = pnl.link_by_name(ifname)? else {
            return Ok((None, vec![], vec![]));
        };
        let addrs = pnl.addresses(Some(pod.index), None)?;
        let routes = pnl.routes(&RouteFilter::default())?;
        Ok((Some(pod), addrs, routes))
    })??;
    let pod = pod.ok_or_else(|| {
        failed(format!(
            "interface {ifname} does not exist in netns {}",
            pod_ns.path().display()
        ))
    })?;
    if pod.link != Some(host.index) {
        return Err(failed(format!(
            "interface {ifname} in the pod is not the peer of host veth {host_name}"
        )));
    }
    if pod.admin_up != opts.up {
        let state = if opts.up { "down" } else { "up" };
        return Err(failed(format!("interface {ifname} in the pod is {state}")));
    }
    let pod_pos = prev
        .interfaces
        .iter()
        .position(|i| i.sandbox.is_some() && i.name == ifname);
    if let Some(p) = pod_pos
        && let (Some(want), Some(have)) = (&prev.interfaces[p].mac, pod.mac)
        && !mac_eq(want, &have)
    {
        return Err(failed(format!(
            "interface {ifname} has MAC {have}, prevResult says {want}"
        )));
    }
    for ip in &prev.ips {
        if ip.interface.is_some() && ip.interface != pod_pos {
            continue;
        }
        let there = addrs
            .iter()
            .any(|a| a.addr == ip.address.ip() && a.prefix_len == ip.address.prefix());
        if !there {
            return Err(failed(format!(
                "interface {ifname} does not have address {}",
                ip.address
            )));
        }
    }
    for r in &prev.routes {
        let dst = canonical(r.dst);
        let there = routes.iter().any(|k| {
            canonical(k.dst) == dst
                && r.gw.is_none_or(|gw| k.gateway == Some(gw))
                && r.table.is_none_or(|t| k.table == t)
        });
        if !there {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(failed(format!(
                "route {}{via} is missing in netns {}",
                r.dst,
                pod_ns.path().display()
            )));
        }
    }
    Ok(())
}

/// The routes of the pod: for each family with a gateway in `ips`, the default route via it
/// when `default_route` and `ipam_routes` has no default route of that family; then every
/// route of `ipam_routes` (without `gw`: via its family's gateway, or on-link when there is
/// none). Routes of a family the pod has no address in cannot work and are left out.
///
/// Returns the kernel requests (oif is set by [`configure_pod`]) and the result's routes
/// (IPAM's as given, plus the default routes added here).
pub fn pod_routes(
    ips: &[IpConfig],
    ipam_routes: &[Route],
    default_route: bool,
) -> (Vec<RouteSpec>, Vec<Route>) {
    let gateway = |v4: bool| {
        ips.iter()
            .filter(|c| c.address.is_ipv4() == v4)
            .find_map(|c| c.gateway)
    };
    let has_family = |v4: bool| ips.iter().any(|c| c.address.is_ipv4() == v4);
    let mut specs = Vec::new();
    let mut result = Vec::new();
    for v4 in [true, false] {
        let has_default = ipam_routes
            .iter()
            .any(|r| r.dst.is_ipv4() == v4 && r.dst.prefix() == 0);
        if let Some(gw) = gateway(v4).filter(|_| default_route && !has_default) {
            let spec = RouteSpec {
                protocol: POD_ROUTE_PROTO,
                ..RouteSpec::default_via(gw)
            };
            result.push(Route::new(spec.dst, Some(gw)));
            specs.push(spec);
        }
    }
    for r in ipam_routes.iter().filter(|r| has_family(r.dst.is_ipv4())) {
        let mut spec = RouteSpec::new(canonical(r.dst));
        spec.gateway = r.gw.or_else(|| gateway(r.dst.is_ipv4()));
        spec.protocol = POD_ROUTE_PROTO;
        spec.metric = r.priority;
        spec.mtu = r.mtu;
        spec.scope = r.scope;
        if let Some(t) = r.table {
            spec.table = t;
        }
        specs.push(spec);
        result.push(r.clone());
    }
    (specs, result)
}

/// `dst` reduced to its network address (`10.1.0.5/24` → `10.1.0.0/24`).
fn canonical(dst: IpNetwork) -> IpNetwork {
    IpNetwork::new(dst.network(), dst.prefix()).unwrap_or(dst)
}

fn mac_eq(text: &str, mac: &MacAddr) -> bool {
    text.parse::<MacAddr>().is_ok_and(|m| m == *mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner<'a>(network: &'a str, container_id: &'a str, ifname: &'a str) -> Owner<'a> {
        Owner {
            network,
            container_id,
            ifname,
        }
    }

    #[test]
    fn host_names_are_stable_shaped_and_cover_the_network() {
        let a = owner("pods", "abc123", "eth0");
        let name = a.host_name(0);
        assert_eq!(name.len(), 15);
        assert!(name.starts_with(HOST_PREFIX), "{name}");
        assert!(
            name[2..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(name, a.host_name(0));
        assert_ne!(name, owner("pods", "abc123", "eth1").host_name(0));
        assert_ne!(name, owner("pods", "abc12", "3eth0").host_name(0));
        assert_ne!(name, owner("other", "abc123", "eth0").host_name(0));
        let candidates: HashSet<String> = (0..NAME_ATTEMPTS).map(|i| a.host_name(i)).collect();
        assert_eq!(candidates.len(), usize::from(NAME_ATTEMPTS));
        // Pinned: a changed hash would orphan every existing attachment.
        assert_eq!(owner("pods", "c1", "eth0").host_name(0), "tw41ed112b25b4e");
        assert_eq!(owner("pods", "c1", "eth0").host_name(1), "tw3bec2206509de");
        let names: HashSet<String> = (0..2000)
            .map(|i| owner("pods", &format!("container-{i}"), "eth0").host_name(0))
            .collect();
        assert_eq!(names.len(), 2000);
    }

    #[test]
    fn prefixed_names_fill_15_bytes_with_the_same_hash() {
        let a = owner("pods", "c1", "eth0");
        assert_eq!(a.host_name_with(HOST_PREFIX, 0), a.host_name(0));
        let cali = a.host_name_with("cali", 0);
        assert_eq!(cali.len(), IFNAME_MAX, "{cali}");
        assert!(cali.starts_with("cali"), "{cali}");
        assert_eq!(
            &cali[4..],
            &a.host_name(0)[2..13],
            "the hash's leading digits"
        );
        assert_eq!(a.host_name_with("r", 3).len(), IFNAME_MAX);
        assert_eq!(a.host_name_with("routed7", 0).len(), IFNAME_MAX);
        for ok in ["cali", "r", "tw-r_1", "routed7"] {
            assert!(validate_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["", "toolong8", "ca/li", "ca li", "é"] {
            let e = validate_prefix(bad).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{bad}");
        }
    }

    #[test]
    fn marks_name_the_owner_and_fit_an_alias() {
        assert_eq!(owner("pods", "c1", "eth0").mark(), "twill pods c1 eth0");
        let long_net = "n".repeat(255);
        let long_id = "c".repeat(1000);
        let m = owner(&long_net, &long_id, "eth0").mark();
        assert!(m.len() <= 255, "{} bytes", m.len());
        assert!(m.starts_with("twill #"), "{m}");
        assert_ne!(m, owner(&long_net, &long_id, "eth1").mark());
        assert_ne!(m, owner(&long_net[1..], &long_id, "eth0").mark());
        // A network's marks share its prefix, and no other network's do.
        let p = format!("{} ", network_mark("pods"));
        assert!(owner("pods", "c1", "eth0").mark().starts_with(&p));
        assert!(!owner("pods2", "c1", "eth0").mark().starts_with(&p));
    }

    fn ipc(addr: &str, gw: Option<&str>) -> IpConfig {
        IpConfig {
            address: addr.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: Some(2),
        }
    }

    #[test]
    fn pod_routes_default_and_ipam() {
        let ips = [
            ipc("10.1.0.5/24", Some("10.1.0.1")),
            ipc("fd00::5/64", Some("fd00::1")),
        ];
        let ipam = [
            Route::new("10.0.0.0/8".parse().unwrap(), None),
            Route::new(
                "172.16.0.0/12".parse().unwrap(),
                Some("10.1.0.254".parse().unwrap()),
            ),
        ];
        let (specs, result) = pod_routes(&ips, &ipam, true);
        let got: Vec<(String, Option<String>)> = specs
            .iter()
            .map(|s| (s.dst.to_string(), s.gateway.map(|g| g.to_string())))
            .collect();
        let want = [
            ("0.0.0.0/0", Some("10.1.0.1")),
            ("::/0", Some("fd00::1")),
            ("10.0.0.0/8", Some("10.1.0.1")),
            ("172.16.0.0/12", Some("10.1.0.254")),
        ];
        let want: Vec<(String, Option<String>)> = want
            .iter()
            .map(|(d, g)| (d.to_string(), g.map(str::to_string)))
            .collect();
        assert_eq!(got, want);
        assert!(specs.iter().all(|s| s.protocol == POD_ROUTE_PROTO));
        assert_eq!(result.len(), 4);
        assert_eq!(result[2], ipam[0], "IPAM routes are reported as given");
    }

    #[test]
    fn pod_routes_no_duplicate_default_and_no_foreign_family() {
        let ips = [ipc("10.1.0.5/24", Some("10.1.0.1"))];
        let ipam = [
            Route::new("0.0.0.0/0".parse().unwrap(), None),
            Route::new("fd00::/8".parse().unwrap(), None),
        ];
        let (specs, result) = pod_routes(&ips, &ipam, true);
        assert_eq!(specs.len(), 1, "{specs:?}");
        assert_eq!(specs[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(result, vec![ipam[0].clone()]);
        let (specs, _) = pod_routes(&ips, &[], false);
        assert!(specs.is_empty());
        let (specs, _) = pod_routes(&[ipc("10.1.0.5/24", None)], &ipam[..1], true);
        assert_eq!(specs[0].gateway, None, "on-link without a gateway");
    }

    #[test]
    fn random_mac_is_local_unicast() {
        let a = random_mac();
        let b = random_mac();
        assert_ne!(a, b);
        for m in [a, b] {
            assert_eq!(m.0[0] & 0x03, 0x02, "{m}");
        }
    }
}
