//! Pod wiring: the veth pair (with or without a master), the bridge it hangs on, the pod side.

pub mod bridge;
pub mod veth;
