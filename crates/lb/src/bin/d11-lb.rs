//! d11-lb.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// The L4 load balancer (HAProxy `mode tcp`): terminates the client's TCP on `listen`, opens
/// its own connection to a backend (`backends = [{ name, address }]`, `balance` roundrobin,
/// leastconn or source) and copies bytes both ways; TCP health checks with rise and fall,
/// `drain`, `proxy_protocol` (v2), `max_connections`; `d11 show NODE backends`, `conns`.
///
/// The config (--config) is the node's entry of a topology file, as JSON.
#[derive(Parser)]
#[command(name = "d11-lb", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main_app("d11-lb", &cli.element, d11_lb::build)
}
