//! Node state, shared by every pod of a network: the cluster view (`peers`), the data planes
//! that turn it into node objects (`host_gw`, `vxlan`), the one reconcile that applies any plane's
//! objects (`reconcile`) with its run-state files (`state`), and the masquerade. Plugins and
//! twilld run the same code.

pub mod forward;
pub mod host_gw;
pub mod masq;
pub mod peers;
pub mod reconcile;
pub mod state;
pub mod vxlan;
