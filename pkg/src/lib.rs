//! twill: the shared library of the twill CNI plugins.
//!
//! Plugins are thin `main`s; the mechanisms live here, one module per concern:
//! CNI types and versions, the skeleton that talks to the runtime, IPAM, netlink, netns, sysctl.

pub mod args;
pub mod bridge;
pub mod error;
pub mod ipam;
pub mod masq;
pub mod netlink;
pub mod netns;
pub mod peers;
pub mod skeleton;
pub mod subnet_file;
pub mod sysctl;
pub mod types;
pub mod version;
pub mod veth;

pub use error::{Error, Result, ResultExt, code};
pub use skeleton::{CmdArgs, Command, Plugin};
pub use types::{CniResult, Dns, Interface, IpConfig, NetConf, Route};
