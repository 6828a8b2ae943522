//! The cluster view file: parsing, and selecting the peers of a node: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use twill::node::peers::{ClusterView, ViewSource};

fuzz_target!(|data: &[u8]| {
    let source = ViewSource::File(PathBuf::from("/run/twill/peers.json"));
    if let Ok(view) = ClusterView::parse(data, &source) {
        let own = [
            "10.244.1.0/24".parse().unwrap(),
            "fd00:10:0:1::/64".parse().unwrap(),
        ];
        let local = ["10.99.0.1/24".parse().unwrap()];
        let _ = view.select(&own, &local);
        let _ = view.peers();
        let _ = view.skipped();
    }
});
