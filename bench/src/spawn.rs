//! twill-spawn: runs one program and reports its own peak RSS, free of the caller's.
//!
//! A child's `ru_maxrss` (wait4) never drops below the peak RSS of the process image it was
//! forked or spawned from: exec folds the old address space's high-water mark into it. Timed
//! from the bench harness (several MiB), a ~1 MiB plugin would read as the harness's size. This
//! tiny program forks and execs `PROGRAM ARGS...` with its own stdin, stdout, stderr and
//! environment, reaps it with wait4 and appends one line to stderr:
//! `twill-spawn: maxrss_kb=<child's peak> self_kb=<this program's peak, the floor>`; it exits
//! with the child's status (128 + signal when killed).

use nix::libc;
use std::ffi::CString;

fn main() {
    let args: Vec<CString> = std::env::args_os()
        .skip(1)
        .filter_map(|a| CString::new(a.into_encoded_bytes()).ok())
        .collect();
    if args.is_empty() {
        eprintln!("usage: twill-spawn PROGRAM [ARGS...]");
        std::process::exit(2);
    }
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: single-threaded; the child only calls async-signal-safe execv and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!("twill-spawn: fork: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    if pid == 0 {
        // SAFETY: argv is a NULL-terminated array of valid C strings that outlive the call.
        unsafe {
            libc::execv(argv[0], argv.as_ptr());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: rusage is plain old data, filled by wait4 / getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut own: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r >= 0 {
            break;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            eprintln!("twill-spawn: wait4: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
    }
    // SAFETY: valid pointer to a local.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut own) };
    eprintln!(
        "\ntwill-spawn: maxrss_kb={} self_kb={}",
        ru.ru_maxrss, own.ru_maxrss
    );
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    std::process::exit(code);
}
