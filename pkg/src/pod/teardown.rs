//! DEL of one attachment: its link removed, then its addresses released; both always run.
//!
//! Why not at once, though the halves are independent and the kernel's veth deletion (about
//! 20 ms here) is almost all waiting with the CPU idle: a veth deletion ends with
//! `rcu_barrier()` (in `netdev_run_todo`), which waits for every RCU callback queued on the
//! machine before it, and a thread that exits before or during the deletion queues one (its
//! task). Measured on the development machine (kernel 6.18, HZ 250, quiet; 50 deletions per
//! side, alternating): a plain RTM_DELLINK took 15.9 ms at the median; with a thread started
//! just before it, doing an unlink and exiting during it, 19.5-23.3 ms; the same thread
//! joined before the deletion, 19.4 ms; the unlink done on the deleting thread itself (no
//! thread), 15.7 ms; a thread kept alive until the deletion returned, 15.5-15.7 ms at the
//! median but slower in the upper quartile. One grace period (4 ms steps) is far more than
//! the release costs (0.2-0.4 ms), so the release runs after the deletion on the same
//! thread, where the callbacks it queues (an unlinked reservation's inode) come after the
//! deletion's barrier. End to end, `twill-bench` could not tell a worker thread from none on
//! this shared machine (15 alternating runs each, medians within the runs' noise).
//!
//! Each failure is reported by name ([`Failures`]) with its reason; one failing does not
//! stop the other.

use crate::cni::error::Failures;
use crate::kernel::netlink::Netlink;
use crate::{Error, Result};

/// How a failure of the link half is named in DEL's error.
pub const REMOVE: &str = "remove the host veth";
/// How a failure of the release half is named in DEL's error.
pub const RELEASE: &str = "release the addresses";

/// DEL of one attachment: `remove` (find the host end by its owner and delete it, over a
/// netlink socket of its own; Ok(false) when there was none), then `release`, whatever
/// `remove` did. Ok when both succeeded, else the failures named [`REMOVE`] and [`RELEASE`]
/// (the link's first, each with its reason), as [`Failures::into_result`] of `"DEL"` words
/// them.
pub fn run(
    remove: impl FnOnce(&mut Netlink) -> Result<bool>,
    release: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let removed = Netlink::new()
        .map_err(Error::from)
        .and_then(|mut nl| remove(&mut nl))
        .map(drop);
    let released = release();
    let mut failures = Failures::default();
    if let Err(e) = removed {
        failures.push(REMOVE, e);
    }
    if let Err(e) = released {
        failures.push(RELEASE, e);
    }
    failures.into_result("DEL")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code;
    use std::sync::Mutex;

    #[test]
    fn both_halves_run_and_both_failures_are_named_with_their_reasons_the_links_code_first() {
        let order = Mutex::new(Vec::new());
        let err = run(
            |_| {
                order.lock().unwrap().push("link");
                Err(Error::new(code::IO, "link refused"))
            },
            || {
                order.lock().unwrap().push("release");
                Err(Error::new(code::INTERNAL, "index unreadable").with_details("EIO"))
            },
        )
        .unwrap_err();
        assert_eq!(*order.lock().unwrap(), ["link", "release"]);
        assert_eq!(err.code, code::IO);
        assert!(
            err.msg.contains("remove the host veth: link refused"),
            "{}",
            err.msg
        );
        assert!(
            err.msg
                .contains("release the addresses: index unreadable: EIO"),
            "{}",
            err.msg
        );
    }

    #[test]
    fn a_failing_release_alone_is_reported_alone_with_its_details() {
        let err = run(
            |_| Ok(true),
            || Err(Error::new(code::IO, "disk full").with_details("ENOSPC")),
        )
        .unwrap_err();
        assert_eq!(err.code, code::IO);
        assert_eq!(err.msg, "DEL: release the addresses: disk full");
        assert_eq!(err.details, "ENOSPC");
    }

    #[test]
    fn the_link_half_gets_a_socket_in_this_netns() {
        let cookie = Netlink::new().unwrap().netns_cookie().unwrap();
        run(
            |nl| {
                assert_eq!(nl.netns_cookie().unwrap(), cookie);
                Ok(false)
            },
            || Ok(()),
        )
        .unwrap();
    }
}
