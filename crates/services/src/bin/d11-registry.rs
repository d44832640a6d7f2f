//! d11-registry.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// The registry centre: `com.d11.Registry` over Dubbo 2 / Hessian 2 on port 20880. Providers register (service, version, address, weight) and send heartbeats; instances silent for `unhealthy_after_s` (15) are left out, after `remove_after_s` (30) removed; consumers subscribe by long poll and are told of every change. `d11 show NODE services`.
///
/// The config (--config) is the node's entry of a topology file, as JSON.
#[derive(Parser)]
#[command(name = "d11-registry", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main_app(
        "d11-registry",
        &cli.element,
        d11_services::registry::build_registry,
    )
}
