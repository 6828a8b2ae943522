//! Kernel access: rtnetlink and netfilter over one netlink framing, network namespaces, sysctls.

pub mod netlink;
pub mod netns;
pub mod sysctl;
