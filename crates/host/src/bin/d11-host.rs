//! d11-host: a userspace IPv4 host (d11-stack on smoltcp) on one TAP port.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// Userspace IPv4 host: answers ARP and ping; echo (UDP/TCP 7), discard (TCP 9, with SHA-256
/// of what arrives) and source (TCP 19, a seeded stream) services.
///
/// The config (--config) is the node's entry of a topology file, as JSON: one port with its
/// address, the default gateway, `tcp` tuning and `services`.
#[derive(Parser)]
#[command(name = "d11-host", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main_app("d11-host", &cli.element, d11_host::build)
}
