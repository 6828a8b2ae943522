//! CNI versions: the supported list and result conversion to and from each wire format.

use crate::error::Result;
use crate::types::CniResult;
use serde_json::Value;

/// Every CNI version twill speaks, oldest first.
pub const SUPPORTED: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Ok when `version` is supported; code 1 otherwise.
pub fn check_supported(version: &str) -> Result<()> {
    let _ = version;
    todo!()
}

/// Serializes `result` as the wire format of CNI `version` (including `cniVersion`).
pub fn result_to_json(result: &CniResult, version: &str) -> Result<Value> {
    let _ = (result, version);
    todo!()
}

/// Parses a result (prevResult, an IPAM plugin's answer) of CNI `version` into the model.
pub fn parse_result(value: &Value, version: &str) -> Result<CniResult> {
    let _ = (value, version);
    todo!()
}
