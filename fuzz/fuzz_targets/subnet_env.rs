//! flannel's subnet.env parsing and the IPAM derived from it: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use twill::flannel::subnet_file::{SubnetFile, derive_ipam};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sf) = SubnetFile::parse(text, Path::new("/run/flannel/subnet.env")) {
        let _ = sf.pod_subnets();
        let _ = sf.cluster_networks();
        let _ = derive_ipam(&sf, Some(Path::new("/var/lib/cni/networks")));
        let _ = derive_ipam(&sf, None);
    }
});
