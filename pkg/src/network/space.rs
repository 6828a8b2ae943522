//! The cluster's own space of a network (never masqueraded, accepted by the forward rules):
//! the subnet file's networks, every podCIDR of the cluster view and `clusterNetworks`,
//! reduced to the networks no other one of them holds ([`masq::minimal`]).
//!
//! Deriving it parses the whole view, so it is remembered in `<runDir>/<network>.space`
//! with the view file's stamp ([`ViewStamp`], trusted once the file had settled before the
//! read, as the reconcile trusts it) and a hash of the other inputs: an ADD whose view file
//! and other inputs are those of the record reads that one small file instead, whose size
//! follows the reduced space (one network when the view's podCIDRs lie in the flannel
//! network), not the view. A record that does not match, or cannot be read, is derived
//! again; an inline view (no file, no stamp) is always derived. The record is written where
//! a reconcile applied the view and recorded its stamp
//! ([`crate::network::Network::remember_space`]), never by an ADD that changed nothing.
//!
//! Format (text, written as temp file + rename): `twill-space 1`, then `view <dev> <ino>
//! <size> <ctime ns> <mtime ns> <inputs hex>`, then `space <cidr> <cidr> ...`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

use crate::error::{Error, Result};
use crate::hash::Fnv1a64;
use crate::node::masq;
use crate::node::peers::ViewStamp;

const HEADER: &str = "twill-space 1";

/// The most a space file may hold to be read (a reduced space of thousands of networks fits).
const MAX_BYTES: usize = 1 << 20;

/// A space derived from a settled view file: what [`SpaceFile::write`] records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The view file's stamp, taken before it was read.
    pub stamp: ViewStamp,
    /// [`inputs_hash`] of the other inputs.
    pub inputs: u64,
    /// The reduced space.
    pub nets: Vec<IpNetwork>,
}

/// The space file of one network in one run dir.
#[derive(Debug, Clone)]
pub struct SpaceFile {
    path: PathBuf,
}

/// The hash of a space's inputs besides the view: the subnet file's networks and
/// `clusterNetworks`, in order.
pub fn inputs_hash(base: &[IpNetwork]) -> u64 {
    let mut h = Fnv1a64::default();
    h.write_field(HEADER.as_bytes());
    h.write(&(base.len() as u64).to_le_bytes());
    for n in base {
        h.write_net(n);
    }
    h.finish()
}

/// `base` and the view's podCIDRs, reduced.
pub fn reduce(
    base: &[IpNetwork],
    pod_cidrs: impl IntoIterator<Item = IpNetwork>,
) -> Vec<IpNetwork> {
    masq::minimal(base.iter().copied().chain(pod_cidrs))
}

impl SpaceFile {
    /// The space file of `network` under `run_dir` (code 7 for a name that cannot be part of
    /// a file name, as for run-state files).
    pub fn new(run_dir: &Path, network: &str) -> Result<SpaceFile> {
        crate::node::state::check_network_name(network)?;
        Ok(SpaceFile {
            path: run_dir.join(format!("{network}.space")),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The space recorded for a view file with `stamp` and other inputs hashing to `inputs`;
    /// None when the record is for anything else, missing or unreadable.
    pub fn read(&self, stamp: &ViewStamp, inputs: u64) -> Option<Vec<IpNetwork>> {
        let mut text = String::new();
        File::open(&self.path)
            .ok()?
            .take(MAX_BYTES as u64)
            .read_to_string(&mut text)
            .ok()?;
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut view = [""; 6];
        let mut n = 0;
        for part in lines.next()?.strip_prefix("view ")?.split(' ') {
            *view.get_mut(n)? = part;
            n += 1;
        }
        let [fields @ .., hash] = &view[..n] else {
            return None;
        };
        if ViewStamp::from_fields(fields)? != *stamp
            || u64::from_str_radix(hash, 16).ok()? != inputs
        {
            return None;
        }
        let space = lines.next()?.strip_prefix("space")?;
        space
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok())
            .collect()
    }

    /// Records `d` (temp file in the run dir + rename), creating the run dir when needed.
    pub fn write(&self, d: &Derived) -> Result<()> {
        let mut text = format!(
            "{HEADER}\nview {} {:016x}\nspace",
            d.stamp.to_fields(),
            d.inputs
        );
        for n in &d.nets {
            text.push(' ');
            text.push_str(&n.to_string());
        }
        text.push('\n');
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let res = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| File::create(&tmp))
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        res.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("write {}", self.path.display()), e)
        })?;
        self.remove_dead_temps();
        Ok(())
    }

    /// Removes the temp files of writers that died between creating and renaming them: a
    /// `<network>.space.tmp<pid>` whose pid is no longer a live process. Returns them.
    pub fn remove_dead_temps(&self) -> Vec<PathBuf> {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Vec::new();
        };
        let mut prefix = name.to_os_string();
        prefix.push(".tmp");
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for e in rd.flatten() {
            let file = e.file_name();
            let Some(pid) = file
                .as_encoded_bytes()
                .strip_prefix(prefix.as_encoded_bytes())
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let alive = Path::new("/proc").join(pid.to_string()).exists();
            if !alive && std::fs::remove_file(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    /// A view file's stamp as a test needs one: any fixed values.
    fn stamp() -> ViewStamp {
        ViewStamp {
            dev: 1,
            ino: 2,
            size: 3,
            ctime_ns: 4,
            mtime_ns: 5,
        }
    }

    #[test]
    fn a_dead_writers_temp_file_is_removed_by_the_next_write_and_a_live_ones_kept() {
        let dir = std::env::temp_dir().join(format!("twill-space-tmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = SpaceFile::new(&dir, "n").unwrap();
        // pid_max is at most 2^22: this pid is never alive.
        let dead = dir.join("n.space.tmp4194305");
        let live = dir.join("n.space.tmp1"); // init: always alive
        let other = dir.join("n2.space.tmp4194305");
        for p in [&dead, &live, &other] {
            std::fs::write(p, "half").unwrap();
        }
        let stamp = stamp();
        let d = Derived {
            stamp,
            inputs: 7,
            nets: vec![net("10.244.0.0/16")],
        };
        f.write(&d).unwrap();
        assert!(!dead.exists(), "a dead writer's temp file is removed");
        assert!(live.exists(), "a live writer's temp file is kept");
        assert!(
            other.exists(),
            "another network's temp file is not this one's"
        );
        assert_eq!(f.read(&stamp, 7), Some(vec![net("10.244.0.0/16")]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_is_read_back_only_for_its_stamp_and_inputs() {
        let dir = std::env::temp_dir().join(format!("twill-space-{}", std::process::id()));
        let f = SpaceFile::new(&dir, "n").unwrap();
        let stamp = stamp();
        let base = [net("10.244.0.0/16"), net("10.96.0.0/12")];
        let nets = reduce(&base, [net("10.244.7.0/24"), net("10.50.0.0/24")]);
        assert_eq!(
            nets,
            [
                net("10.50.0.0/24"),
                net("10.96.0.0/12"),
                net("10.244.0.0/16")
            ]
        );
        let inputs = inputs_hash(&base);
        assert_eq!(f.read(&stamp, inputs), None);
        f.write(&Derived {
            stamp,
            inputs,
            nets: nets.clone(),
        })
        .unwrap();
        assert_eq!(f.read(&stamp, inputs), Some(nets));
        let later = ViewStamp {
            ctime_ns: 9,
            ..stamp
        };
        assert_eq!(f.read(&later, inputs), None);
        assert_eq!(f.read(&stamp, inputs_hash(&base[..1])), None);
        std::fs::write(f.path(), "twill-space 1\nview 1 2 3 4 5 0\nspace x\n").unwrap();
        assert_eq!(f.read(&stamp, 0), None, "a network that does not parse");
        assert!(SpaceFile::new(&dir, "../x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
