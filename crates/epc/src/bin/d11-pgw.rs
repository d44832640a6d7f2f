//! d11-pgw.

use clap::Parser;
use d11_element::{program_main, ElementArgs};
use d11_epc::gw::recovery_for;
use d11_epc::pgw::{PgwConfig, PgwLogic};

/// The PDN gateway: GTPv2-C on S5, the UE address pool (ue_pool, 10.45.0.0/16 by default), the S5 tunnel endpoint, and the SGi side; the gateway 10.45.0.1 of the UEs (Ethernet and IPv4 PDU sessions), MSS clamping and fragmentation-needed for the tunnel MTU; `d11 show NODE sessions`, `paths`.
///
/// The config (--config) is the node's entry of a topology file, as JSON. The GTP restart
/// counter (Recovery) is kept beside it and grows at each start.
#[derive(Parser)]
#[command(name = "d11-pgw", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let recovery = recovery_for(&cli.element);
    program_main("d11-pgw", &cli.element, |cfg: &PgwConfig| {
        PgwLogic::new(cfg, recovery)
    })
}
