//! d11-host: a userspace IPv4 host (smoltcp) on one TAP port.

use clap::Parser;
use d11_element::{program_main, ElementArgs};
use d11_host::{Host, HostConfig};

/// Userspace IPv4 host on smoltcp: answers ARP and ping, echoes UDP and TCP on port 7.
///
/// The config (--config) is the node's entry of a topology file, as JSON: one port with its
/// address, the default gateway, and the echo services.
#[derive(Parser)]
#[command(name = "d11-host", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main("d11-host", &cli.element, |cfg: &HostConfig| {
        Host::new(cfg, std::time::Instant::now())
    })
}
