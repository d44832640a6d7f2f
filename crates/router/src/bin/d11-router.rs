//! d11-router: an IPv4 router on TAP ports. See the `d11_router` crate for what it does.

use clap::Parser;
use d11_element::{program_main, ElementArgs};
use d11_router::Router;

/// IPv4 router: longest-prefix forwarding, ARP, TTL, ICMP errors, fragmentation.
///
/// The config (--config) is the node's entry of a topology file, as JSON: its ports with
/// addresses and MTU, and its static routes. `d11 lab up` writes it; `d11 show NODE routes`
/// reads the result.
#[derive(Parser)]
#[command(name = "d11-router", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main("d11-router", &cli.element, Router::new)
}
