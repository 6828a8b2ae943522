//! Reboot leaks: a reservation made before the node's last boot can never belong to a live pod
//! (its network namespace died with the boot), yet nothing would ever DEL it.
//!
//! twill records the boot ID (`/proc/sys/kernel/random/boot_id`) in the network directory, in
//! [`BOOT_FILE`]: a name that is neither an address, nor `last_reserved_ip.*`, nor `lock`, so
//! the reference plugin never takes it for a reservation (its DEL reads it, as it reads every
//! file, and finds no owner in it). The first ADD of a boot finds another ID there (or none)
//! and, under the lock, releases every reservation file last modified before the boot began
//! (`btime` of `/proc/stat`), then records the new ID: once per boot, one small read after
//! that. Reservations made in this boot before that ADD (by the reference, or by a twill DEL's
//! neighbour) are newer than the boot and stay.
//!
//! The boot ID can be faked for tests with the environment variable [`BOOT_ID_ENV`] (tests
//! only; the boot time stays the real one).

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Name of the boot ID file in the network directory.
pub const BOOT_FILE: &str = ".twill-boot-id";
/// Environment variable overriding the boot ID (for tests only).
pub const BOOT_ID_ENV: &str = "TWILL_HOST_LOCAL_BOOT_ID";

/// The current boot: its ID and when it began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// The boot ID (a UUID from the kernel, or the test override).
    pub id: String,
    /// When the boot began (wall clock).
    pub began: SystemTime,
}

impl Boot {
    /// The current boot, or `None` when the kernel does not tell (no /proc).
    pub fn current() -> Option<Boot> {
        let id = match std::env::var(BOOT_ID_ENV) {
            Ok(id) if !id.trim().is_empty() => id,
            _ => fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?,
        };
        let id = id.trim().to_string();
        if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            return None;
        }
        Some(Boot {
            id,
            began: boot_time()?,
        })
    }

    /// The boot file's contents for this boot.
    pub fn file_contents(&self) -> String {
        format!("boot_id {}\n", self.id)
    }
}

/// `btime` of `/proc/stat`: when the system booted, in seconds since the epoch.
fn boot_time() -> Option<SystemTime> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let secs = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<u64>()
        .ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}
