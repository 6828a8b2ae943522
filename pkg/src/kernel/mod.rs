//! Kernel access: rtnetlink and netfilter over one netlink framing, network namespaces, sysctls,
//! gratuitous ARP.

pub mod arp;
pub mod netlink;
pub mod netns;
pub mod sysctl;
