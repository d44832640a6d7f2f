//! d11-vswitch.

use clap::Parser;
use d11_element::{program_main, ElementArgs};
use d11_vswitch::{Logic, VswitchConfig};

/// A physical host's virtual switch: VM ports, each in a VNI (`vnis = { PORT = VNI }`), and a
/// VXLAN VTEP (RFC 7348, UDP 4789) on the `underlay` port, with per-VNI MAC learning and
/// ageing, and head-end replication of broadcast and unknown frames to the VNI's remote VTEPs
/// (`vteps = { "VNI" = [ADDRESS, ...] }`, the only addresses whose VXLAN is accepted for that
/// VNI); `d11 show NODE fdb`, `vteps`, `vms`.
///
/// The config (--config) is the node's entry of a topology file, as JSON.
#[derive(Parser)]
#[command(name = "d11-vswitch", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main("d11-vswitch", &cli.element, |cfg: &VswitchConfig| {
        Logic::new(cfg)
    })
}
