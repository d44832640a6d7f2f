//! d11-slice: runs a command under SCHED_OTHER with a scheduler slice of its own (EEVDF's
//! custom slice, `sched_attr.sched_runtime`, Linux 6.12 and later), for a load generator that
//! shares the cores of the lab it loads. A client that spins (wrk polls a connecting socket,
//! which is always writable, through each TLS handshake) then gives the CPU back within its
//! slice instead of the default 0.7-3 ms, so the lab's programs woken meanwhile do not wait a
//! whole default slice behind it.

use anyhow::{bail, Context};
use clap::Parser;
use std::os::unix::process::CommandExt;

/// Runs COMMAND with a scheduler slice of US microseconds (SCHED_OTHER).
#[derive(Parser)]
#[command(name = "d11-slice", version)]
struct Cli {
    /// The slice in microseconds (the kernel takes 100 to 100,000).
    #[arg(long, default_value_t = 100)]
    us: u64,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `struct sched_attr` (sched_setattr(2)), its first version.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    d11_element::main_with("d11-slice", || {
        if !(100..=100_000).contains(&cli.us) {
            bail!("--us {}: from 100 to 100000 microseconds", cli.us);
        }
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: libc::SCHED_OTHER as u32,
            flags: 0,
            nice: 0,
            priority: 0,
            runtime: cli.us * 1000,
            deadline: 0,
            period: 0,
        };
        // SAFETY: sched_setattr(0, attr, 0) on this process; `attr` lives across the call.
        let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            bail!("cannot set a slice of {} us: {e}", cli.us);
        }
        let e = std::process::Command::new(&cli.command[0])
            .args(&cli.command[1..])
            .exec();
        Err(e).with_context(|| format!("cannot run {}", cli.command[0]))
    })
}
