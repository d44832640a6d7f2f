//! d11-mme: attach and session set-up.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};
use d11_epc::gw::recovery_for;

/// The MME: runs attach for UEs (our S1 signalling, JSON over UDP 36412 from the eNodeB),
/// EPS-AKA with vectors from the HSS (`hss`, UDP 3868), and GTPv2-C session set-up with the
/// SGW (`sgw`, S11 on UDP 2123; the PGW to use is `pgw`); `d11 show NODE contexts`.
///
/// The config (--config) is the node's entry of a topology file, as JSON.
#[derive(Parser)]
#[command(name = "d11-mme", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let recovery = recovery_for(&cli.element);
    program_main_app("d11-mme", &cli.element, |cfg| d11_mme::build(cfg, recovery))
}
