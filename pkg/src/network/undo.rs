//! Undo steps of a half-done ADD, run newest first unless the ADD commits: a plugin that fails
//! leaves nothing behind.

use crate::Result;

/// One undo step: what it undoes (for messages) and how.
type Step<'a> = (&'static str, Box<dyn FnOnce() -> Result<()> + 'a>);

/// A stack of undo steps; dropping it without [`Undo::commit`] runs them (newest first) and
/// reports their own failures on stderr (the ADD's error is what the runtime gets).
pub struct Undo<'a> {
    who: &'a str,
    steps: Vec<Step<'a>>,
}

impl<'a> Undo<'a> {
    /// An empty undo log; `who` (the plugin's name) prefixes its messages.
    pub fn new(who: &'a str) -> Undo<'a> {
        Undo {
            who,
            steps: Vec::new(),
        }
    }

    /// Registers `step`, named `what` in messages, to run if the ADD fails.
    pub fn push(&mut self, what: &'static str, step: impl FnOnce() -> Result<()> + 'a) {
        self.steps.push((what, Box::new(step)));
    }

    /// The ADD succeeded: forget every step.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        while let Some((what, step)) = self.steps.pop() {
            if let Err(e) = step() {
                eprintln!("{}: rolling back the failed ADD: {what}: {e}", self.who);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn steps_run_newest_first_unless_committed() {
        let log = RefCell::new(Vec::new());
        {
            let mut u = Undo::new("t");
            u.push("a", || {
                log.borrow_mut().push("a");
                Ok(())
            });
            u.push("b", || {
                log.borrow_mut().push("b");
                Err(crate::Error::invalid_config("b failed"))
            });
        }
        assert_eq!(
            *log.borrow(),
            vec!["b", "a"],
            "a failing step does not stop the rest"
        );
        let mut u = Undo::new("t");
        u.push("c", || {
            log.borrow_mut().push("c");
            Ok(())
        });
        u.commit();
        assert_eq!(*log.borrow(), vec!["b", "a"]);
    }
}
