//! twilld's log: one line on stderr per applied change and per problem. In the daemon a
//! problem that stands (a broken view, a skipped network) is said once, when it appears, not
//! again on every pass.

use std::collections::BTreeSet;

/// The log of a run.
#[derive(Debug, Default)]
pub struct Log {
    said: BTreeSet<String>,
    standing: BTreeSet<String>,
    once: bool,
    /// Errors logged in the current pass.
    pub errors: usize,
}

impl Log {
    /// A log saying everything (sync, check: one pass).
    pub fn every_line() -> Log {
        Log::default()
    }

    /// A log saying a standing problem once (the daemon).
    pub fn once() -> Log {
        Log {
            once: true,
            ..Log::default()
        }
    }

    /// Says a change applied to the node, or an event of the daemon.
    pub fn change(&mut self, line: &str) {
        eprintln!("twilld: {line}");
    }

    /// Says something a person should know that did not fail.
    pub fn warn(&mut self, line: &str) {
        self.standing(format!("warning: {line}"));
    }

    /// Says what failed.
    pub fn error(&mut self, line: &str) {
        self.errors += 1;
        self.standing(format!("error: {line}"));
    }

    fn standing(&mut self, line: String) {
        if !self.once || !self.said.contains(&line) {
            eprintln!("twilld: {line}");
        }
        self.standing.insert(line);
    }

    /// Ends a pass: problems that did not recur may be said again when they come back.
    pub fn end_pass(&mut self) {
        self.said = std::mem::take(&mut self.standing);
        self.errors = 0;
    }

    /// Says every standing problem again on the next pass (SIGHUP).
    pub fn repeat(&mut self) {
        self.said.clear();
    }
}
