//! d11-enb.

use clap::Parser;
use d11_element::{program_main, ElementArgs};
use d11_epc::enb::{EnbConfig, EnbLogic};
use d11_epc::gw::recovery_for;

/// The eNodeB: relays attach signalling between UEs (radio port, EtherType 0x88b5) and the MME (UDP 36412), sets up per-UE bearers, and wraps the UEs' frames in GTP-U towards the SGW (and unwraps the downlink); `d11 show NODE bearers`, `paths`.
///
/// The config (--config) is the node's entry of a topology file, as JSON. The GTP restart
/// counter (Recovery) is kept beside it and grows at each start.
#[derive(Parser)]
#[command(name = "d11-enb", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let recovery = recovery_for(&cli.element);
    program_main("d11-enb", &cli.element, |cfg: &EnbConfig| {
        EnbLogic::new(cfg, recovery)
    })
}
