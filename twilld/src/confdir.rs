//! The CNI conf dir as twilld reads it: every `.conf`, `.conflist` and `.json` file, in name
//! order (as libcni), each giving one network with its plugin entries. A conflist's entries get
//! the list's `name` and `cniVersion`, as a runtime hands them to each plugin.

use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One network of the conf dir.
#[derive(Debug, Clone)]
pub struct NetworkFile {
    /// The file it came from.
    pub file: PathBuf,
    /// The network name.
    pub name: String,
    /// Its plugin entries, in order, each a full plugin config (`name`, `cniVersion` set).
    pub plugins: Vec<Value>,
}

/// What a read of the conf dir found.
#[derive(Debug, Clone, Default)]
pub struct ConfDir {
    /// The networks, first file first; a name already taken by an earlier file is left out.
    pub networks: Vec<NetworkFile>,
    /// Files that could not be used, and why. While there are any, no network counts as gone
    /// (a broken file may be a network being edited).
    pub problems: Vec<String>,
    /// Networks left out because an earlier file has their name.
    pub duplicates: Vec<String>,
}

/// Reads every network config file of `dir`.
pub fn read(dir: &Path) -> ConfDir {
    let mut out = ConfDir::default();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            out.problems
                .push(format!("cannot read the conf dir {}: {e}", dir.display()));
            return out;
        }
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x, "conf" | "conflist" | "json"))
        })
        .collect();
    files.sort();
    let mut names = BTreeSet::new();
    for file in files {
        let parsed = read_file(&file).and_then(|b| parse(&b));
        match parsed {
            Ok(None) => {}
            Ok(Some((name, plugins))) => {
                if names.insert(name.clone()) {
                    out.networks.push(NetworkFile {
                        file,
                        name,
                        plugins,
                    });
                } else {
                    out.duplicates.push(format!(
                        "{}: network \"{name}\" is already defined by an earlier file: ignored",
                        file.display()
                    ));
                }
            }
            Err(why) => out.problems.push(format!("{}: {why}", file.display())),
        }
    }
    out
}

/// The largest config file read: what a plugin accepts on stdin (a larger one could not be
/// handed to it by any runtime).
pub const MAX_CONF_BYTES: usize = twill::cni::skeleton::MAX_STDIN_BYTES;

/// The bytes of one config file. A symlink is followed, but what it leads to is judged before
/// it is opened: only a regular file of at most [`MAX_CONF_BYTES`] is read (a FIFO, a device
/// or a directory under a config's name never blocks or feeds the daemon).
fn read_file(file: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file (a directory, device, FIFO or socket): ignored".into());
    }
    if meta.len() > MAX_CONF_BYTES as u64 {
        return Err(format!(
            "larger than {MAX_CONF_BYTES} bytes, more than a plugin accepts: ignored"
        ));
    }
    twill::input_file::read_capped(file, MAX_CONF_BYTES).map_err(|e| format!("cannot read it: {e}"))
}

/// The network name and plugin entries of one file; `None` for a disabled conflist.
fn parse(bytes: &[u8]) -> Result<Option<(String, Vec<Value>)>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("no \"name\"")?
        .to_string();
    let Some(list) = obj.get("plugins") else {
        return Ok(Some((name, vec![v.clone()])));
    };
    if obj.get("disabled") == Some(&Value::Bool(true)) {
        return Ok(None);
    }
    let list = list.as_array().ok_or("\"plugins\" is not a list")?;
    let mut plugins = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let mut p: Map<String, Value> = p
            .as_object()
            .ok_or_else(|| format!("\"plugins\"[{i}] is not an object"))?
            .clone();
        p.insert("name".into(), Value::String(name.clone()));
        if let Some(v) = obj.get("cniVersion") {
            p.insert("cniVersion".into(), v.clone());
        }
        plugins.push(Value::Object(p));
    }
    Ok(Some((name, plugins)))
}

/// The `type` of a plugin entry (empty when it has none).
pub fn plugin_type(plugin: &Value) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_conflist_gives_its_entries_the_list_name_and_version() {
        let list = json!({"cniVersion": "1.0.0", "name": "pods", "plugins": [
            {"type": "bridge-host-gw", "peersFile": "/p"}, {"type": "portmap"}
        ]});
        let (name, plugins) = parse(list.to_string().as_bytes()).unwrap().unwrap();
        assert_eq!(name, "pods");
        assert_eq!(plugins.len(), 2);
        assert_eq!(plugins[0]["name"], "pods");
        assert_eq!(plugins[0]["cniVersion"], "1.0.0");
        assert_eq!(plugin_type(&plugins[1]), "portmap");
    }

    #[test]
    fn a_disabled_conflist_is_skipped_and_a_nameless_file_is_a_problem() {
        let off = json!({"cniVersion": "1.0.0", "name": "x", "disabled": true, "plugins": []});
        assert!(parse(off.to_string().as_bytes()).unwrap().is_none());
        let e = parse(br#"{"type": "bridge-host-gw"}"#).unwrap_err();
        assert!(e.contains("\"name\""), "{e}");
        assert!(parse(b"{").unwrap_err().contains("JSON"));
    }

    #[test]
    fn the_shipped_example_config_is_a_bridge_host_gw_conflist() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../dist/10-pods.conflist.example"
        );
        let bytes = std::fs::read(path).unwrap();
        let (name, plugins) = parse(&bytes).unwrap().unwrap();
        assert_eq!(name, "pods");
        assert_eq!(plugin_type(&plugins[0]), "bridge-host-gw");
        assert_eq!(plugins[0]["peersFile"], "/run/twill/peers.json");
    }
}
