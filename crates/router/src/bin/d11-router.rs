//! d11-router: an IPv4 router on TAP ports. See the `d11_router` crate for what it does.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};
use d11_router::bgp::BgpLogic;
use d11_router::program::RouterElement;
use d11_router::{Router, RouterConfig};

/// IPv4 router: longest-prefix forwarding, ARP, TTL, ICMP errors, fragmentation.
///
/// The config (--config) is the node's entry of a topology file, as JSON: its ports with
/// addresses and MTU, its static routes, and its `bgp` table (AS, router id, networks,
/// neighbours). `d11 lab up` writes it; `d11 show NODE routes` and `d11 show NODE bgp` read
/// the result.
#[derive(Parser)]
#[command(name = "d11-router", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main_app("d11-router", &cli.element, |cfg: &RouterConfig| {
        let router = Router::new(cfg)?;
        let (logic, app) = BgpLogic::new(&cfg.name, &cfg.ports, cfg.bgp.as_ref())?;
        Ok((RouterElement::new(router, logic), app))
    })
}
