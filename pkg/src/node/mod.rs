//! Node state, shared by every pod of a network: the cluster view (`peers`), the data planes
//! that turn it into node objects (`host_gw`, `routed`, `vxlan`, `ipip`; by plugin type in
//! `planes`), the one reconcile that applies any plane's objects (`reconcile`) with its run-state
//! files (`state`), the masquerade and the forward rules. Plugins and twilld run the same code.

pub mod forward;
pub mod host_gw;
pub mod ipip;
pub mod masq;
pub mod peers;
pub mod planes;
pub mod reconcile;
pub mod routed;
pub mod state;
pub mod vxlan;
