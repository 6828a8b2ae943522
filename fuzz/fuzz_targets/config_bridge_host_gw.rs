//! bridge-host-gw's config loading (shared keys, its own keys, IPAM, pod MAC, CNI_ARGS): never panics.
//! Input: the config, optionally followed by a NUL and CNI_ARGS.
#![no_main]
#![allow(dead_code)]

#[path = "../../plugins/bridge-host-gw/src/config.rs"]
mod config;

use libfuzzer_sys::fuzz_target;
use twill::network::Need;

fuzz_target!(|data: &[u8]| {
    let (conf, cni_args) = twill_fuzz::split(data);
    let args = twill_fuzz::add_args(conf, &cni_args);
    let _ = config::Network::load(&args, Need::Required);
    let _ = config::Network::load(&args, Need::Release);
});
