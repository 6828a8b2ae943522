//! The one error type of twill: every failure carries the CNI error code it is reported with.

use std::fmt;

/// CNI error codes (SPEC.md "Error") and twill's own plugin-specific codes (100+).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (CNI_COMMAND, CNI_CONTAINERID, ...).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (e.g. reading stdin, a state file).
    pub const IO: u32 = 5;
    /// Failed to decode content (bad JSON).
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (transient).
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available (cannot serve ADD).
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// twill: the kernel refused a netlink request.
    pub const NETLINK: u32 = 100;
    /// twill: no free address left in the IPAM ranges.
    pub const IPAM_EXHAUSTED: u32 = 101;
    /// twill: a requested address is outside the ranges or already owned by someone else.
    pub const IPAM_UNAVAILABLE_ADDRESS: u32 = 102;
    /// twill: a delegated IPAM plugin failed or could not be executed.
    pub const IPAM_DELEGATE: u32 = 103;
    /// twill: an existing device conflicts with the config (wrong address, wrong type).
    pub const CONFLICT: u32 = 104;
    /// twill: CHECK found the attachment not as ADD left it.
    pub const CHECK_FAILED: u32 = 105;
    /// twill: an external tool (nft) failed.
    pub const EXTERNAL_TOOL: u32 = 106;
    /// A plugin bug (panic); the value the reference libraries use for untyped errors
    /// (`ErrInternal`).
    pub const INTERNAL: u32 = 999;
}

/// A failure with its CNI error code, a message a human can act on, and optional details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// CNI error code (see [`code`]).
    pub code: u32,
    /// Short, actionable message.
    pub msg: String,
    /// Longer details (underlying OS or kernel error), may be empty.
    pub details: String,
}

impl std::error::Error for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}: {}", self.msg, self.details)
        }
    }
}

/// Result alias used throughout twill.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with a code and message, no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    /// The same error with `details` attached.
    pub fn with_details(mut self, details: impl fmt::Display) -> Self {
        self.details = details.to_string();
        self
    }
    /// Prefixes the message with context (keeps code and details).
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }
    /// Code 1.
    pub fn incompatible_version(msg: impl Into<String>) -> Self {
        Self::new(code::INCOMPATIBLE_VERSION, msg)
    }
    /// Code 4.
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg)
    }
    /// Code 6.
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(code::DECODE, msg)
    }
    /// Code 7.
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }
    /// Code 5 with the OS error as details; `what` says what was being done ("open /x").
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        Self::new(code::IO, what.to_string()).with_details(err)
    }
}

/// Extension to attach context to any `Result<_, Error>`.
pub trait ResultExt<T> {
    /// Prefixes the error's message with `ctx`.
    fn context(self, ctx: impl fmt::Display) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, ctx: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(ctx))
    }
}

/// STATUS: anything that keeps ADD from working is "not available" (50), unless the error
/// already says 50 or 51 (limited connectivity).
pub fn unavailable(e: Error) -> Error {
    if e.code == code::NOT_AVAILABLE || e.code == code::LIMITED_CONNECTIVITY {
        return e;
    }
    Error::new(code::NOT_AVAILABLE, format!("not available: {}", e.msg)).with_details(e.details)
}

/// The failures of a command that goes on past them (DEL, GC), reported together at its end.
#[derive(Debug, Default)]
pub struct Failures {
    items: Vec<(String, Error)>,
}

impl Failures {
    /// Records that `what` failed with `e`.
    pub fn push(&mut self, what: impl Into<String>, e: Error) {
        self.items.push((what.into(), e));
    }

    /// Records several failures, each as (what, why).
    pub fn extend(&mut self, items: impl IntoIterator<Item = (String, Error)>) {
        self.items.extend(items);
    }

    /// Runs `step`, recording its failure as `what`; the command goes on either way.
    pub fn attempt(&mut self, what: &str, step: impl FnOnce() -> Result<()>) {
        if let Err(e) = step() {
            self.push(what, e);
        }
    }

    /// Ok when nothing failed; one failure as it is, named; else one error listing every
    /// failure with its reason (message and details), with the first one's code.
    pub fn into_result(mut self, command: &str) -> Result<()> {
        let Some(code) = self.items.first().map(|(_, e)| e.code) else {
            return Ok(());
        };
        if self.items.len() == 1
            && let Some((what, e)) = self.items.pop()
        {
            return Err(e.context(format!("{command}: {what}")));
        }
        let list: Vec<String> = self
            .items
            .iter()
            .map(|(what, e)| format!("{what}: {e}"))
            .collect();
        Err(Error::new(
            code,
            format!(
                "{command}: {} items failed (everything else was done): {}",
                list.len(),
                list.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_failure_keeps_its_reason() {
        let mut f = Failures::default();
        f.push(
            "delete veth tw1",
            Error::new(code::NETLINK, "delete link").with_details("EBUSY"),
        );
        f.push(
            "release",
            Error::new(code::IO, "unlink").with_details("EIO"),
        );
        let e = f.into_result("GC").unwrap_err();
        assert!(e.msg.contains("delete veth tw1: delete link: EBUSY"), "{e}");
        assert!(e.msg.contains("release: unlink: EIO"), "{e}");
    }

    #[test]
    fn failures_report_one_as_is_and_many_as_a_list_with_the_first_code() {
        assert!(Failures::default().into_result("GC").is_ok());
        let mut f = Failures::default();
        f.push("delete veth tw1", Error::new(code::NETLINK, "busy"));
        let e = f.into_result("GC").unwrap_err();
        assert_eq!(e.code, code::NETLINK);
        assert!(e.msg.contains("GC: delete veth tw1"), "{e}");
        let mut f = Failures::default();
        f.attempt("a", || Err(Error::invalid_config("x")));
        f.attempt("b", || Ok(()));
        f.push("c", Error::new(code::NETLINK, "y"));
        let e = f.into_result("DEL").unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("2 items failed"), "{e}");
        assert!(e.msg.contains("a: x") && e.msg.contains("c: y"), "{e}");
    }

    #[test]
    fn unavailable_keeps_50_and_51_and_turns_the_rest_into_50() {
        let e = unavailable(Error::invalid_config("x").with_details("d"));
        assert_eq!((e.code, e.details.as_str()), (code::NOT_AVAILABLE, "d"));
        let e = unavailable(Error::new(code::LIMITED_CONNECTIVITY, "y"));
        assert_eq!(e.code, code::LIMITED_CONNECTIVITY);
    }
}
