//! The netlink module's error: what was being done, and what the kernel said.

use std::fmt;

use crate::error::{Error, code};

/// Why a netlink operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkErrorKind {
    /// The kernel refused the request (negative errno in NLMSG_ERROR or NLMSG_DONE).
    #[error("{}{}", errno_text(*.errno), extack_text(.extack))]
    Kernel {
        /// The positive errno value (e.g. `libc::EEXIST`).
        errno: i32,
        /// The extended-ACK message (NLMSGERR_ATTR_MSG), when the kernel sent one.
        extack: Option<String>,
    },
    /// The socket itself failed (socket, bind, send, recv).
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel's reply could not be decoded.
    #[error("malformed netlink reply: {0}")]
    Decode(String),
    /// A dump was interrupted (NLM_F_DUMP_INTR) on every bounded retry.
    #[error("dump interrupted by concurrent changes {0} times in a row")]
    DumpInterrupted(u32),
    /// The caller passed something the request cannot carry (e.g. mixed address families).
    #[error("invalid request: {0}")]
    Invalid(String),
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

fn extack_text(extack: &Option<String>) -> String {
    match extack {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

/// A failed netlink operation: the operation ("add address 10.1.0.2/24 on ifindex 7") and the cause.
#[derive(Debug)]
pub struct NetlinkError {
    /// What was being done, on which object; empty until a public method names it.
    pub op: String,
    /// Why it failed.
    pub kind: NetlinkErrorKind,
}

impl std::error::Error for NetlinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op.is_empty() {
            write!(f, "netlink: {}", self.kind)
        } else {
            write!(f, "netlink: {}: {}", self.op, self.kind)
        }
    }
}

impl From<NetlinkErrorKind> for NetlinkError {
    fn from(kind: NetlinkErrorKind) -> Self {
        NetlinkError {
            op: String::new(),
            kind,
        }
    }
}

impl From<std::io::Error> for NetlinkError {
    fn from(e: std::io::Error) -> Self {
        NetlinkErrorKind::Io(e).into()
    }
}

impl NetlinkError {
    /// A kernel refusal with `errno` (positive) and an optional extack message.
    pub fn kernel(errno: i32, extack: Option<String>) -> Self {
        NetlinkErrorKind::Kernel { errno, extack }.into()
    }

    /// A reply that could not be decoded.
    pub(crate) fn decode(msg: impl Into<String>) -> Self {
        NetlinkErrorKind::Decode(msg.into()).into()
    }

    /// A request the caller built wrongly.
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        NetlinkErrorKind::Invalid(msg.into()).into()
    }

    /// Names the operation (keeps an already named one).
    pub fn with_op(mut self, op: impl FnOnce() -> String) -> Self {
        if self.op.is_empty() {
            self.op = op();
        }
        self
    }

    /// The kernel's errno (positive), or the OS error of a socket failure; None otherwise.
    pub fn errno(&self) -> Option<i32> {
        match &self.kind {
            NetlinkErrorKind::Kernel { errno, .. } => Some(*errno),
            NetlinkErrorKind::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// The kernel's extended-ACK message, if any.
    pub fn extack(&self) -> Option<&str> {
        match &self.kind {
            NetlinkErrorKind::Kernel { extack, .. } => extack.as_deref(),
            _ => None,
        }
    }

    /// True when the object already exists (EEXIST): e.g. a concurrent creator won the race.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// True when the object is missing: ENODEV (link), ENOENT (neighbour, FDB, route),
    /// ESRCH (route), EADDRNOTAVAIL (address).
    pub fn is_not_found(&self) -> bool {
        matches!(
            (&self.kind, self.errno()),
            (
                NetlinkErrorKind::Kernel { .. },
                Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
            )
        )
    }
}

use nix::libc;

impl From<NetlinkError> for Error {
    /// Code 100 (NETLINK); msg names the operation, details carry the kernel's text.
    fn from(e: NetlinkError) -> Self {
        let msg = if e.op.is_empty() {
            "netlink request failed".to_string()
        } else {
            format!("netlink: {} failed", e.op)
        };
        Error::new(code::NETLINK, msg).with_details(&e.kind)
    }
}

/// Result of the netlink module.
pub type NlResult<T> = std::result::Result<T, NetlinkError>;
