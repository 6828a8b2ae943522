//! Undo steps of a half-done ADD, run newest first unless the ADD commits.

/// One undo step: what it undoes (for messages) and how.
type Step<'a> = (&'static str, Box<dyn FnOnce() -> twill::Result<()> + 'a>);

/// A stack of undo steps; dropping it without [`Undo::commit`] runs them (newest first) and
/// reports their own failures on stderr (the ADD's error is what the runtime gets).
#[derive(Default)]
pub struct Undo<'a> {
    steps: Vec<Step<'a>>,
}

impl<'a> Undo<'a> {
    /// Registers `step`, named `what` in messages, to run if the ADD fails.
    pub fn push(&mut self, what: &'static str, step: impl FnOnce() -> twill::Result<()> + 'a) {
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
                eprintln!("bridge-host-gw: rolling back the failed ADD: {what}: {e}");
            }
        }
    }
}
