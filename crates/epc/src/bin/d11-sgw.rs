//! d11-sgw.

use clap::Parser;
use d11_element::{program_main, ElementArgs};
use d11_epc::gw::recovery_for;
use d11_epc::sgw::{SgwConfig, SgwLogic};

/// The serving gateway: GTPv2-C on S11 (from the MME) and S5 (to the PGW), GTP-U tunnel switching between S1-U and S5 (a TEID map each way), End Marker on path switch; `d11 show NODE sessions`, `paths`.
///
/// The config (--config) is the node's entry of a topology file, as JSON. The GTP restart
/// counter (Recovery) is kept beside it and grows at each start.
#[derive(Parser)]
#[command(name = "d11-sgw", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let recovery = recovery_for(&cli.element);
    program_main("d11-sgw", &cli.element, |cfg: &SgwConfig| {
        SgwLogic::new(cfg, recovery)
    })
}
