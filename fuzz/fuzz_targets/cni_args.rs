//! CNI_ARGS parsing and the lookups made on it: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twill::cni::args::{CniArgs, parse_ip_maybe_prefix};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_ip_maybe_prefix(text);
    if let Ok(a) = CniArgs::parse(text) {
        let _ = a.ignore_unknown();
        let _ = a.check_known(&["IP", "MAC", "K8S_POD_NAME"]);
        for (k, _) in a.iter() {
            let _ = a.get(k);
        }
    }
});
