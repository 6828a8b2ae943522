//! Netns against the real kernel: run/is_current/cookie, sockets bound to a namespace.

mod common;

use common::TestNs;
use twill::kernel::netlink::Netlink;
use twill::kernel::netns::Netns;

#[test]
fn run_enters_and_returns() {
    let a = TestNs::new();
    let ns = a.open();
    let home = Netns::current().unwrap();
    assert!(!ns.is_current().unwrap());
    let (inside_is_current, inside_id) = ns
        .run(|| (ns.is_current().unwrap(), Netns::current().unwrap().id()))
        .unwrap();
    assert!(inside_is_current);
    assert_eq!(inside_id, ns.id());
    assert!(home.is_current().unwrap(), "back home after run");
    assert!(!ns.is_current().unwrap());

    // A socket opened inside stays there: it sees the ns's own links only.
    let mut nl = ns.run(|| Netlink::new().unwrap()).unwrap();
    let names: Vec<String> = nl.links().unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(names, vec!["lo".to_string()]);

    // Panicking inside run still returns the thread home.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ns.run(|| panic!("boom")).unwrap();
    }));
    assert!(r.is_err());
    assert!(
        home.is_current().unwrap(),
        "back home after a panic inside run"
    );
}

#[test]
fn cookie_distinct_per_namespace_and_matches_socket() {
    let a = TestNs::new();
    let b = TestNs::new();
    let (na, nb) = (a.open(), b.open());
    let (ca, cb) = (na.cookie().unwrap(), nb.cookie().unwrap());
    let home = Netns::current().unwrap().cookie().unwrap();
    assert_ne!(ca, cb);
    assert_ne!(ca, home);
    assert_ne!(cb, home);
    assert_eq!(na.cookie().unwrap(), ca, "stable");
    // Reopening by path gives the same namespace and cookie.
    let na2 = a.open();
    assert_eq!(na2.id(), na.id());
    assert_eq!(na2.cookie().unwrap(), ca);
    assert_ne!(na.id(), nb.id());
    assert_eq!(Netlink::new_in(&na).unwrap().netns_cookie().unwrap(), ca);
    assert_eq!(Netlink::new_in(&nb).unwrap().netns_cookie().unwrap(), cb);
}

#[test]
fn open_if_exists_after_delete() {
    let path;
    {
        let a = TestNs::new();
        path = a.path();
        assert!(Netns::open_if_exists(&path).unwrap().is_some());
    }
    assert!(Netns::open_if_exists(&path).unwrap().is_none());
}

#[test]
fn sysctl_set_get_inside_test_netns() {
    let a = TestNs::new();
    let ns = a.open();
    let home_fwd = twill::kernel::sysctl::get("net.ipv4.ip_forward").unwrap();
    ns.run(|| {
        assert_eq!(
            twill::kernel::sysctl::get("net.ipv4.ip_forward").unwrap(),
            "0"
        );
        twill::kernel::sysctl::set("net.ipv4.ip_forward", "1").unwrap();
        assert_eq!(
            twill::kernel::sysctl::get("net.ipv4.ip_forward").unwrap(),
            "1"
        );
        // Path form, as needed for interface names containing dots.
        twill::kernel::sysctl::set("net/ipv4/conf/lo/arp_notify", "1").unwrap();
        assert_eq!(
            twill::kernel::sysctl::get("net.ipv4.conf.lo.arp_notify").unwrap(),
            "1"
        );
        let e =
            twill::kernel::sysctl::set("net.ipv4.conf.nonexistent0.arp_notify", "1").unwrap_err();
        assert_eq!(e.code, twill::code::IO);
        assert!(
            e.msg.contains("net.ipv4.conf.nonexistent0.arp_notify"),
            "{e}"
        );
    })
    .unwrap();
    // The root namespace was not touched, and the change is visible from outside via ip netns.
    assert_eq!(
        twill::kernel::sysctl::get("net.ipv4.ip_forward").unwrap(),
        home_fwd
    );
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &a.name,
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}
