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
