//! d11-router: an IPv4 router on TAP ports. See the `d11_router` crate for what it does.

use clap::Parser;
use d11_element::{main_with, open_ports, order_ports, run, ElementArgs};
use d11_router::{Router, RouterConfig};

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
    main_with("d11-router", || {
        cli.element.validate()?;
        cli.element.init_logging();
        let cfg: RouterConfig = cli.element.load_config()?;
        let router = Router::new(&cfg)?;
        let names: Vec<&str> = cfg.ports.iter().map(|p| p.name.as_str()).collect();
        let ports = order_ports(open_ports(&cli.element)?, &names)?;
        run(&cli.element, router, ports)
    })
}
