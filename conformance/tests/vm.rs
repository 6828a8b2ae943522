//! The data planes on a stock distribution kernel, in a VM: this machine's kernel has no ipip
//! and cannot load modules, so the ipip side (and later every plane) is proven inside
//! Debian's `linux-image-cloud-amd64` booted with `qemu-system-x86_64 -accel tcg` (nested KVM
//! does not work here).
//!
//! The host side builds the test binaries the VM runs (`cargo test --no-run`), then
//! conformance/vm/build-initramfs.sh fetches and unpacks the kernel into target/vm (once;
//! `apt-get download` + `dpkg-deb -x`, never installed) and packs an initramfs with busybox,
//! iproute2, the plugins, those test binaries, the needed modules and conformance/vm/init.sh.
//! The VM runs every entry of conformance/vm/tests.tsv (one per data plane) and prints one
//! `TWILL-VM-TEST <name> pass|fail` line each and a `TWILL-VM-VERDICT` on its serial console;
//! this test asserts every entry passed. The VM is killed by PID after [`VM_LIMIT`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use conformance::bins::{twill_bin_dirs, workspace_dir};

/// The whole VM run, boot to power-off (each entry has its own, smaller limit).
const VM_LIMIT: Duration = Duration::from_secs(420);

/// Test binaries the table's entries run, as (cargo package, test target, a test it must
/// hold): the VM gets them as /twill/tests/<target>.
const TEST_BINARIES: &[(&str, &str, &str)] = &[
    ("conformance", "bridge_host_gw", "mesh_3x3_ipv4"),
    ("conformance", "vxlan", "mesh_3x3_ipv4"),
    ("conformance", "routed_veth", "mesh_3x3_ipv4"),
    (
        "conformance",
        "twilld",
        "routes_lost_to_a_flush_or_an_uplink_bounce_are_repaired_on_this_kernel",
    ),
    (
        "conformance",
        "ipip",
        "vm_mesh_3x3_through_the_tunnel_with_df_pings_at_the_tunnel_mtu",
    ),
    (
        "twill",
        "ipip_netns",
        "vm_tunl0_gets_its_mtu_and_address_and_peers_get_onlink_routes_repaired_after_drift",
    ),
];

/// Host tools the harness needs, and the Debian package providing each (`make deps`).
const TOOLS: &[(&str, &str)] = &[
    ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    ("/bin/busybox", "busybox-static"),
    ("/usr/bin/cpio", "cpio"),
    ("/sbin/depmod", "kmod"),
    ("/usr/bin/apt-get", "apt"),
    ("/usr/bin/dpkg-deb", "dpkg"),
];

fn vm_dir() -> PathBuf {
    workspace_dir().join("conformance/vm")
}

/// The names of the table's entries, in order.
fn entries() -> Vec<String> {
    let table = std::fs::read_to_string(vm_dir().join("tests.tsv")).expect("read tests.tsv");
    table
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .collect()
}

/// `cargo test --no-run` of one test target; the executable it built.
fn build_test_binary(package: &str, target: &str, must_hold: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(workspace_dir())
        .args(["test", "--no-run", "--message-format=json", "-p", package])
        .args(["--test", target])
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo test --no-run -p {package} --test {target} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == target)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo built no executable for {package} --test {target}"));
    let listed = Command::new(&exe)
        .arg("--list")
        .output()
        .expect("list tests");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&format!("{must_hold}: test")),
        "{} does not hold the test {must_hold}",
        exe.display()
    );
    exe
}

/// The binaries to ship: every plugin of the workspace (plugins/<name>) that is built, and
/// the node daemon twilld.
fn plugins() -> Vec<PathBuf> {
    let dirs = twill_bin_dirs();
    let mut out = Vec::new();
    let names = std::fs::read_dir(workspace_dir().join("plugins")).expect("read plugins/");
    let daemons = [std::ffi::OsString::from("twilld")];
    for name in names.flatten().map(|e| e.file_name()).chain(daemons) {
        if let Some(p) = dirs.iter().map(|d| d.join(&name)).find(|p| p.is_file()) {
            out.push(p);
        }
    }
    assert!(
        out.iter().any(|p| p.ends_with("bridge-host-gw")),
        "no built plugins in {dirs:?}: run `cargo build --workspace --bins` or `make build`"
    );
    out
}

/// Boots the kernel with the initramfs, the serial console into `log`; killed by PID after
/// [`VM_LIMIT`]. True when the VM powered off by itself in time.
fn boot(kernel: &Path, initrd: &Path, log: &Path) -> bool {
    let _ = std::fs::remove_file(log);
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "1024", "-smp", "1", "-no-reboot"])
        .args(["-display", "none", "-monitor", "none", "-nic", "none"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start qemu-system-x86_64");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let finished = rx.recv_timeout(VM_LIMIT).is_ok();
    if !finished {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = waiter.join();
    finished
}

#[test]
fn every_data_plane_entry_passes_in_a_vm_running_debians_cloud_kernel() {
    for (path, pkg) in TOOLS {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: install the Debian package {pkg} (`make deps` does)"
        );
    }
    let tests: Vec<PathBuf> = TEST_BINARIES
        .iter()
        .map(|(p, t, h)| build_test_binary(p, t, h))
        .collect();
    let plugins: Vec<String> = plugins().iter().map(|p| p.display().to_string()).collect();
    let out_dir = workspace_dir().join("target/vm");
    let built = Command::new("bash")
        .arg(vm_dir().join("build-initramfs.sh"))
        .arg(&out_dir)
        .arg(plugins.join(" "))
        .args(&tests)
        .output()
        .expect("run build-initramfs.sh");
    assert!(
        built.status.success(),
        "build-initramfs.sh failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let paths: Vec<PathBuf> = String::from_utf8_lossy(&built.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    let [kernel, initrd] = paths.as_slice() else {
        panic!("build-initramfs.sh printed {paths:?}, not the kernel and initramfs paths")
    };

    let log = out_dir.join("serial.log");
    let finished = boot(kernel, initrd, &log);
    let console = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    let results: BTreeMap<&str, &str> = console
        .lines()
        .filter_map(|l| l.strip_prefix("TWILL-VM-TEST "))
        .filter_map(|l| l.trim_end().split_once(' '))
        .collect();
    let want = entries();
    let failed: Vec<String> = want
        .iter()
        .filter(|e| results.get(e.as_str()) != Some(&"pass"))
        .map(|e| format!("{e}: {}", results.get(e.as_str()).unwrap_or(&"did not run")))
        .collect();
    let verdict = format!("TWILL-VM-VERDICT pass={} fail=0", want.len());
    assert!(
        !console.contains("TWILL-VM-MODULE-FAILED"),
        "every module of conformance/vm/modules.list loads:\n{console}"
    );
    assert!(
        finished && failed.is_empty() && console.contains(&verdict),
        "VM {}; entries not passed: {failed:?}\n--- serial console ({}) ---\n{console}",
        if finished {
            "powered off".to_string()
        } else {
            format!("killed after {VM_LIMIT:?}")
        },
        log.display()
    );
}
