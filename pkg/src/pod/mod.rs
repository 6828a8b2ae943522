//! Pod wiring: the veth pair (with or without a master), the bridge it hangs on, and the
//! routed pod side (no bridge: host addresses behind a fixed gateway), and DEL's teardown of
//! one attachment.

pub mod bridge;
pub mod routed;
pub mod teardown;
pub mod veth;
