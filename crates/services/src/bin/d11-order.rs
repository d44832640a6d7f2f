//! d11-order.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// The order service: `com.shop.OrderService.createOrder(key, user, item, quantity, coupon, detail)`, idempotent by key; deducts stock and redeems the coupon through the registry's providers, stores the order in its shard (`shards`), and undoes what was done when a step fails. `d11 show NODE owed`, `d11 show NODE providers`.
///
/// The config (--config) is the node's entry of a topology file, as JSON.
#[derive(Parser)]
#[command(name = "d11-order", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main_app("d11-order", &cli.element, d11_services::order::build_order)
}
