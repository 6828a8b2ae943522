//! The CNI protocol: what a runtime sends (environment, stdin config) and what it gets back
//! (results in every spec version, error objects).

pub mod args;
pub mod error;
pub mod log;
pub mod skeleton;
pub mod types;
pub mod version;
