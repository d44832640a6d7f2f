//! d11-host: a userspace IPv4 host (smoltcp) on one TAP port.

use clap::Parser;
use d11_element::{main_with, open_ports, order_ports, run, ElementArgs};
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
    main_with("d11-host", || {
        cli.element.validate()?;
        cli.element.init_logging();
        let cfg: HostConfig = cli.element.load_config()?;
        let host = Host::new(&cfg, std::time::Instant::now())?;
        let names: Vec<&str> = cfg.ports.iter().map(|p| p.name.as_str()).collect();
        let ports = order_ports(open_ports(&cli.element)?, &names)?;
        run(&cli.element, host, ports)
    })
}
