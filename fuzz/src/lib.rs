//! Shared helpers of the fuzz targets: the CNI call a config parser sees.

use std::path::PathBuf;
use twill::{CmdArgs, Command};

/// An ADD of container `fuzz` (ifname `eth0`, netns that does not exist) with `stdin` as the
/// config and `cni_args` as CNI_ARGS: what a plugin's config loading is given.
pub fn add_args(stdin: &[u8], cni_args: &str) -> CmdArgs {
    CmdArgs {
        command: Command::Add,
        container_id: "fuzz".to_string(),
        netns: Some(PathBuf::from("/nonexistent/twill-fuzz/netns")),
        ifname: "eth0".to_string(),
        args: cni_args.to_string(),
        path: vec![PathBuf::from("/nonexistent/twill-fuzz/bin")],
        stdin: stdin.to_vec(),
        cni_version: "1.1.0".to_string(),
    }
}

/// Splits fuzz input at the first NUL: (config bytes, CNI_ARGS text).
pub fn split(data: &[u8]) -> (&[u8], String) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (
            &data[..i],
            String::from_utf8_lossy(&data[i + 1..]).into_owned(),
        ),
        None => (data, String::new()),
    }
}
