//! One pass over the node: read the conf dir, load every twill network, then either make the
//! node match (sync) or say how it differs (check). A network that left the conf dir since a
//! previous pass (twilld's record of the networks it keeps, per namespace) has its node state
//! removed (also one whose plugin type changed to one twilld does not keep), but only when every
//! file of the conf dir could be read.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use twill::kernel::netlink::Netlink;
use twill::kernel::netlink::netfilter::Netfilter;
use twill::node::masq;

use crate::confdir::{self, ConfDir};
use crate::feed::ViewFeed;
use crate::log::Log;
use crate::network::{self, Loaded, Managed, Outcome};

/// What twilld is told on its command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// The CNI conf dir.
    pub conf_dir: PathBuf,
    /// Where twilld keeps its record of the networks it keeps.
    pub run_dir: PathBuf,
    /// How long the daemon gathers changes before it reconciles.
    pub debounce: std::time::Duration,
}

/// The conf dir, loaded, with the kernel sockets of the pass.
pub struct Round {
    conf: ConfDir,
    node: Netlink,
    nf: Netfilter,
    managed: Vec<Managed>,
    /// The twill plugin entries of every twill network, loaded or not (what to watch).
    entries: Vec<Value>,
    /// Names of twill networks present but not loaded (kept in the record as they were).
    failed: BTreeSet<String>,
    record: Record,
}

impl Round {
    /// Reads the conf dir and loads every network; says which are skipped and why.
    pub fn load(opts: &Options, log: &mut Log) -> twill::Result<Round> {
        let conf = confdir::read(&opts.conf_dir);
        for p in &conf.problems {
            log.error(p);
        }
        for d in &conf.duplicates {
            log.warn(d);
        }
        let mut node = Netlink::new()?;
        let nf = Netfilter::new()?;
        let record = Record::open(&opts.run_dir, &mut node)?;
        let mut managed = Vec::new();
        let mut entries = Vec::new();
        let mut failed = BTreeSet::new();
        for file in &conf.networks {
            if let Some(e) = network::twill_entry(file, &mut node) {
                entries.push(e.clone());
            }
            let at = format!("network \"{}\" ({})", file.name, file.file.display());
            match network::load(file, &mut node) {
                Loaded::Managed(m) => managed.push(*m),
                Loaded::Unknown(types) => log.warn(&format!(
                    "{at}: skipped: no node state twilld keeps for plugin type(s) {}",
                    types.join(", ")
                )),
                Loaded::Failed(e) => {
                    failed.insert(file.name.clone());
                    log.error(&format!("{at}: {e}"));
                }
            }
        }
        Ok(Round {
            conf,
            node,
            nf,
            managed,
            entries,
            failed,
            record,
        })
    }

    /// The files whose change means this pass must run again.
    pub fn watched_files(&self, feed: &dyn ViewFeed) -> Vec<PathBuf> {
        let configs: Vec<&Value> = self.entries.iter().collect();
        feed.watched_files(&configs)
    }

    /// Makes the node match every network, removes the node state of networks gone from the
    /// conf dir, and records the networks kept. Logs one line per change and per problem.
    pub fn sync(mut self, log: &mut Log) {
        for m in &mut self.managed {
            let res = m.sync(&mut self.node, &mut self.nf);
            say(log, m.name(), res);
        }
        let mut keep: BTreeMap<String, PathBuf> = self
            .managed
            .iter()
            .map(|m| (m.name().to_string(), m.run_dir().to_path_buf()))
            .collect();
        for (name, run_dir) in self.record.networks.clone() {
            if keep.contains_key(&name) {
                continue;
            }
            if self.failed.contains(&name) || !self.conf.problems.is_empty() {
                keep.insert(name, run_dir);
                continue;
            }
            let res = network::forget(&name, &run_dir, &mut self.node, &mut self.nf);
            let ok = matches!(&res, Ok(o) if o.errors.is_empty());
            let res = res.map(|mut o| {
                o.changes.insert(
                    0,
                    "no longer a twill network of the conf dir: removing its node state".into(),
                );
                o
            });
            say(log, &name, res);
            if !ok {
                keep.insert(name, run_dir);
            }
        }
        if let Err(e) = self.record.write(&keep) {
            log.error(&e);
        }
    }

    /// Says every network's drift (stdout) and returns how many differ.
    pub fn check(mut self, log: &mut Log) -> usize {
        let mut differ = 0;
        for m in &self.managed {
            match m.check(&mut self.node, &mut self.nf) {
                Ok(o) => {
                    for w in &o.warnings {
                        log.warn(&format!("network \"{}\": {w}", m.name()));
                    }
                    if o.changes.is_empty() {
                        println!("network \"{}\": in sync", m.name());
                    } else {
                        differ += 1;
                        for d in &o.changes {
                            println!("network \"{}\": drift: {d}", m.name());
                        }
                    }
                }
                Err(e) => log.error(&format!("network \"{}\": {e}", m.name())),
            }
        }
        let managed: BTreeSet<&str> = self.managed.iter().map(Managed::name).collect();
        for name in self.record.networks.keys() {
            if managed.contains(name.as_str()) || self.failed.contains(name) {
                continue;
            }
            let table = masq::exists(&mut self.nf, name).unwrap_or(false);
            differ += 1;
            println!(
                "network \"{name}\": drift: no longer a twill network of the conf dir, its node \
                 state is still installed{} (sync removes it)",
                if table {
                    ", with its masquerade table"
                } else {
                    ""
                }
            );
        }
        differ
    }
}

fn say(log: &mut Log, name: &str, res: twill::Result<Outcome>) {
    match res {
        Ok(o) => {
            for c in &o.changes {
                log.change(&format!("network \"{name}\": {c}"));
            }
            for w in &o.warnings {
                log.warn(&format!("network \"{name}\": {w}"));
            }
            for e in &o.errors {
                log.error(&format!("network \"{name}\": {e}"));
            }
        }
        Err(e) => log.error(&format!("network \"{name}\": {e}")),
    }
}

/// twilld's record of the networks it keeps in one namespace, with their run dirs:
/// `<run dir>/twilld.<netns key>.networks`, one `name<TAB>runDir` per line.
struct Record {
    path: PathBuf,
    networks: BTreeMap<String, PathBuf>,
}

impl Record {
    fn open(run_dir: &Path, node: &mut Netlink) -> twill::Result<Record> {
        let path = run_dir.join(format!("twilld.{}.networks", node.netns_key()?));
        let networks = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (n, d) = l.split_once('\t')?;
                Some((n.to_string(), PathBuf::from(d)))
            })
            .collect();
        Ok(Record { path, networks })
    }

    fn write(&self, networks: &BTreeMap<String, PathBuf>) -> Result<(), String> {
        if *networks == self.networks {
            return Ok(());
        }
        let text: String = networks
            .iter()
            .map(|(n, d)| format!("{n}\t{}\n", d.display()))
            .collect();
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("cannot write {}: {e}", self.path.display())
            })
    }
}
