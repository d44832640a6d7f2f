//! d11-nat: the carrier NAT, a router that translates.

use clap::Parser;
use d11_element::{program_main, ElementArgs};

/// Carrier NAT (NAPT) at the PGW's egress: endpoint-independent mapping, configurable
/// filtering, port preservation, a public address pool, RFC 5382 TCP timeouts, ICMP error
/// translation, hairpinning; `d11 show NODE mappings`.
///
/// The config (--config) is the node's entry of a topology file, as JSON: a router's ports and
/// routes, plus `nat = { inside = [...], outside = "...", pool = ["198.51.100.10-19"] }`.
#[derive(Parser)]
#[command(name = "d11-nat", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main("d11-nat", &cli.element, d11_nat::new)
}
