//! twill: the shared library of the twill CNI plugins.
//!
//! Plugins are thin `main`s; the mechanisms live here, grouped by layer:
//! - [`cni`]: the protocol (skeleton, types, versions, args, errors);
//! - [`kernel`]: netlink, network namespaces, sysctls;
//! - [`pod`]: wiring one pod (veth, bridge);
//! - [`node`]: the node's shared state (cluster view, reconcile, masquerade, forward rules);
//! - [`flannel`]: flannel's subnet file;
//! - [`ipam`]: host-local in-process, any other IPAM exec'd;
//! - [`network`]: a network as every data-plane plugin loads it (shared keys, IPAM, MTU, the
//!   node state it owns) and the undo log of an ADD;
//! - [`hash`]: the one stable hash behind every derived name and fingerprint;
//! - [`input_file`]: bounded reads of the node files a config points at.

pub mod alloc;
pub mod cni;
pub mod file;
pub mod flannel;
pub mod hash;
pub mod input_file;
pub mod ipam;
pub mod kernel;
pub mod network;
pub mod node;
pub mod pod;

pub use cni::error::{self, Error, Result, ResultExt, code};
pub use cni::skeleton::{CmdArgs, Command, Plugin};
pub use cni::types::{CniResult, Dns, Interface, IpConfig, NetConf, Route};
