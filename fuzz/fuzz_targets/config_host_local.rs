//! host-local's config parsing (ranges, routes, dataDir) and CNI_ARGS: never panics.
//! Input: the config, optionally followed by a NUL and CNI_ARGS.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twill::cni::args::{CniArgs, requested_ips};
use twill::cni::types::parse_netconf;
use twill::ipam::host_local::HostLocal;

fuzz_target!(|data: &[u8]| {
    let (conf, cni_args) = twill_fuzz::split(data);
    let Ok(nc) = parse_netconf::<serde_json::Value>(conf) else {
        return;
    };
    let _ = HostLocal::from_netconf(&nc);
    if let Ok(a) = CniArgs::parse(&cni_args) {
        let _ = requested_ips(&a, &nc);
    }
});
