//! d11-vgw.

use clap::Parser;
use d11_element::{program_main, ElementArgs};
use d11_vgw::{Logic, VgwConfig};

/// The cloud's gateway node: answers ARP for the VIPs on its `external` port and translates
/// packets to a VIP's open ports to one of its load-balancer VMs (`vips = [{ vip, ports, lbs
/// }]`), and back; it is the VPC router (`vpc = { vni, router, hosts }`), wrapping what it
/// sends into the VPC in VXLAN towards the VM's host; `d11 show NODE vips`, `conntrack`, `fdb`.
///
/// The config (--config) is the node's entry of a topology file, as JSON.
#[derive(Parser)]
#[command(name = "d11-vgw", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main("d11-vgw", &cli.element, |cfg: &VgwConfig| Logic::new(cfg))
}
