//! Small system helpers: run a command with a clear error, identify processes safely, wait for
//! a process to exit without polling (pidfd), and check for root.

use anyhow::{bail, Context, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `prog args...`; on failure the error names the command and quotes its stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<()> {
    output(prog, args).map(|_| ())
}

/// Runs `prog args...` and returns its stdout.
pub fn output(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {prog} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{prog} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("this needs root (namespaces, bridges, TAP devices): run it with sudo");
    }
    Ok(())
}

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), which with
/// the pid identifies a process even after the pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past its last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True if the process `pid` that started at `start` is still alive (and not a zombie).
pub fn alive(pid: u32, start: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let state = stat[close + 2..].chars().next();
    if state == Some('Z') || state == Some('X') {
        return false;
    }
    start.is_none() || start_time(pid) == start
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until every process in `pids` has exited or `timeout` passes; returns those still
/// alive. Uses pidfds, which become readable when their process exits.
pub fn wait_exit(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    let mut fds: Vec<(u32, OwnedFd)> = pids
        .iter()
        .filter_map(|&p| pidfd_open(p).map(|f| (p, f)))
        .collect();
    while !fds.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut pfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|(_, f)| libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: pfds is a valid array of pollfd for the duration of the call.
        let n = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                left.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        let done: Vec<bool> = pfds.iter().map(|p| p.revents != 0).collect();
        let mut i = 0;
        fds.retain(|_| {
            let keep = !done[i];
            i += 1;
            keep
        });
    }
    fds.into_iter()
        .map(|(p, _)| p)
        .filter(|&p| alive(p, None))
        .collect()
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Pids of the processes in network namespace `ns` (as `ip netns pids` finds them).
pub fn netns_pids(ns: &str) -> Vec<u32> {
    output("ip", &["netns", "pids", ns])
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn netns_exists(ns: &str) -> bool {
    std::path::Path::new("/run/netns").join(ns).exists()
}

/// Writes a sysctl in the namespace at `ns_path` (a /proc/sys/net path is per namespace of the
/// thread that opens it).
pub fn sysctl_in(ns_path: &std::path::Path, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let v = value.to_string();
    // A fresh thread, so the namespace switch cannot leak into the caller's thread.
    let ns = ns_path.to_path_buf();
    std::thread::spawn(move || d11_netdev::netns::within(Some(&ns), || std::fs::write(&path, &v)))
        .join()
        .map_err(|_| anyhow::anyhow!("sysctl thread panicked"))?
        .with_context(|| format!("sysctl {key}={value} in {}", ns_path.display()))
}
