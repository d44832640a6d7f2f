//! d11-hss: subscribers and authentication vectors for the MME.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// The HSS: reads `user_db_file` (srsEPC user_db.csv), answers AuthInfoRequest and
/// ResyncRequest (JSON over UDP 3868) with Milenage vectors; `d11 show NODE subscribers`.
#[derive(Parser)]
#[command(name = "d11-hss", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main_app("d11-hss", &cli.element, d11_hss::build)
}
