//! CNI results: parsing a prevResult at any version and converting it to every version:
//! never panics. Input: a version index byte, then the result JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twill::cni::version::{SUPPORTED, parse_result, result_to_json};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let from = SUPPORTED[pick as usize % SUPPORTED.len()];
    if let Ok(result) = parse_result(&value, from) {
        for to in SUPPORTED {
            let _ = result_to_json(&result, to);
        }
    }
});
