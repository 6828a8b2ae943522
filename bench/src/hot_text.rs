//! twill-hot-text: finds the functions a plugin call runs, to lay them out side by side.
//!
//! A plugin's peak RSS is mostly its text, and the kernel maps 64 KiB of file pages around every
//! page fault (fault-around): a call whose few hundred KiB of code is spread over the whole
//! binary maps nearly all of it. `scripts/hot-functions.sh` traces the calls a runtime makes and
//! gives the linker their functions first (`--symbol-ordering-file`), so they share pages.
//!
//! ```text
//! twill-hot-text trace OUT PROGRAM [ARGS...]   single-step PROGRAM (ptrace), write every distinct
//!                                              instruction address, in first-run order, to OUT
//!                                              (hex, one a line); exit with PROGRAM's status
//! twill-hot-text order BINARY ADDRS [BINARY ADDRS]...
//!                                              print the functions of BINARY (its symbol table,
//!                                              read with `nm`) that hold the addresses in ADDRS,
//!                                              in first-run order, each name once over all pairs
//! ```

use nix::libc;
use std::collections::HashSet;
use std::ffi::CString;
use std::io::{BufRead, BufWriter, Write};
use std::process::{Command, exit};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("trace") if args.len() >= 3 => trace(&args[1], &args[2..]),
        Some("order") if args.len() >= 3 && args.len() % 2 == 1 => order(&args[1..]),
        _ => {
            eprintln!(
                "usage: twill-hot-text trace OUT PROGRAM [ARGS...]\n       \
                 twill-hot-text order BINARY ADDRS [BINARY ADDRS]..."
            );
            exit(2);
        }
    };
    match result {
        Ok(code) => exit(code),
        Err(e) => {
            eprintln!("twill-hot-text: {e}");
            exit(1);
        }
    }
}

/// Runs `program` one instruction at a time and writes its distinct instruction addresses, in the
/// order they first ran, to `out`; returns the program's exit code (128 + signal when killed).
fn trace(out: &str, program: &[String]) -> Result<i32, String> {
    let argv: Vec<CString> = program
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| format!("argument {a:?} holds a NUL")))
        .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let mut file = BufWriter::new(std::fs::File::create(out).map_err(|e| format!("{out}: {e}"))?);
    // SAFETY: single-threaded; the child only calls async-signal-safe ptrace, execv and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: ptrs is a NULL-terminated array of C strings that outlive the call.
        unsafe {
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            libc::execv(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    let mut status = wait(pid)?; // stopped at exec
    let mut seen: HashSet<u64> = HashSet::with_capacity(1 << 16);
    let mut steps: u64 = 0;
    loop {
        if libc::WIFEXITED(status) {
            break;
        }
        if libc::WIFSIGNALED(status) {
            break;
        }
        let mut signal = 0;
        if libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) != libc::SIGTRAP {
            signal = libc::WSTOPSIG(status); // the program's own (SIGCHLD of a child it ran)
        }
        if let Some(ip) = instruction_pointer(pid)
            && seen.insert(ip)
        {
            writeln!(file, "{ip:x}").map_err(|e| format!("{out}: {e}"))?;
        }
        steps += 1;
        // SAFETY: pid is our stopped tracee.
        if unsafe { libc::ptrace(libc::PTRACE_SINGLESTEP, pid, 0, signal) } < 0 {
            return Err(format!(
                "PTRACE_SINGLESTEP: {}",
                std::io::Error::last_os_error()
            ));
        }
        status = wait(pid)?;
    }
    file.flush().map_err(|e| format!("{out}: {e}"))?;
    eprintln!(
        "twill-hot-text: {steps} instructions, {} distinct",
        seen.len()
    );
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

/// Waits for the next stop or the end of `pid`; returns its wait status.
fn wait(pid: libc::pid_t) -> Result<i32, String> {
    let mut status = 0;
    loop {
        // SAFETY: valid pointer to a local.
        if unsafe { libc::waitpid(pid, &mut status, 0) } >= 0 {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitpid: {e}"));
        }
    }
}

/// The stopped tracee's instruction pointer, or None when the registers cannot be read.
#[cfg(target_arch = "x86_64")]
fn instruction_pointer(pid: libc::pid_t) -> Option<u64> {
    // SAFETY: user_regs_struct is plain old data, filled by PTRACE_GETREGS.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our stopped tracee; regs is a valid out pointer.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs) };
    (r == 0).then_some(regs.rip)
}

#[cfg(not(target_arch = "x86_64"))]
fn instruction_pointer(_pid: libc::pid_t) -> Option<u64> {
    None
}

/// One function of a binary's symbol table: start address, size, name.
struct Function {
    start: u64,
    size: u64,
    name: String,
}

/// Prints, for each (binary, address file) pair, the names of the binary's functions that hold
/// the addresses, in first-run order; a name printed for an earlier pair is not printed again.
fn order(pairs: &[String]) -> Result<i32, String> {
    let mut printed: HashSet<String> = HashSet::new();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for pair in pairs.chunks(2) {
        let (binary, addrs) = (&pair[0], &pair[1]);
        let functions = functions(binary)?;
        let (mut hot, mut bytes, mut unknown) = (0usize, 0u64, 0usize);
        let mut here: HashSet<usize> = HashSet::new();
        let file = std::fs::File::open(addrs).map_err(|e| format!("{addrs}: {e}"))?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|e| format!("{addrs}: {e}"))?;
            let ip = u64::from_str_radix(line.trim(), 16)
                .map_err(|_| format!("{addrs}: {line:?} is not a hex address"))?;
            let i = functions.partition_point(|f| f.start <= ip);
            let Some(f) = i.checked_sub(1).map(|i| (i, &functions[i])) else {
                unknown += 1;
                continue;
            };
            if ip >= f.1.start + f.1.size.max(1) {
                unknown += 1; // outside any sized symbol (padding, a stub)
                continue;
            }
            if here.insert(f.0) {
                hot += 1;
                bytes += f.1.size;
                if printed.insert(f.1.name.clone()) {
                    writeln!(out, "{}", f.1.name).map_err(|e| e.to_string())?;
                }
            }
        }
        let total: u64 = functions.iter().map(|f| f.size).sum();
        eprintln!(
            "twill-hot-text: {addrs}: {hot} of {} functions of {binary} ran ({} of {} KiB); \
             {unknown} addresses outside any function",
            functions.len(),
            bytes / 1024,
            total / 1024
        );
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(0)
}

/// The sized text symbols of `binary`, sorted by address (`nm -n -S --defined-only`).
fn functions(binary: &str) -> Result<Vec<Function>, String> {
    let nm = Command::new("nm")
        .args(["-n", "-S", "--defined-only", binary])
        .output()
        .map_err(|e| format!("nm: {e}"))?;
    if !nm.status.success() {
        return Err(format!(
            "nm {binary}: {}",
            String::from_utf8_lossy(&nm.stderr).trim()
        ));
    }
    let mut functions = Vec::new();
    for line in String::from_utf8_lossy(&nm.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [start, size, kind, name] = fields[..]
            && matches!(kind, "t" | "T" | "w" | "W")
            && let (Ok(start), Ok(size)) = (
                u64::from_str_radix(start, 16),
                u64::from_str_radix(size, 16),
            )
        {
            functions.push(Function {
                start,
                size,
                name: name.to_string(),
            });
        }
    }
    if functions.is_empty() {
        return Err(format!(
            "{binary} has no symbol table (build it unstripped)"
        ));
    }
    Ok(functions)
}
