//! d11-inventory.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// The inventory service: `com.shop.InventoryService` over Dubbo 2 / Hessian 2 on port 20880
/// (`deduct(orderId, item, n)` by compare-and-set, idempotent per order; `restore(orderId)`;
/// `stock(item)`); initial `stock = { ITEM = N }`; `d11 show NODE stock`.
///
/// The config (--config) is the node's entry of a topology file, as JSON.
#[derive(Parser)]
#[command(name = "d11-inventory", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main_app("d11-inventory", &cli.element, d11_services::build_inventory)
}
