//! Node state, shared by every pod of a network: the cluster view, its reconcile (routes,
//! neighbours, FDB entries, devices) and the masquerade. Plugins and twilld run the same code.

pub mod forward;
pub mod masq;
pub mod peers;
