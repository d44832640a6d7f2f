//! d11-db.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// One shard of the order store: `com.shop.OrderStore` (`put(Order)`, idempotent by order id; `get(orderId)`; `count()`) over the SQLite file `database` (open it with sqlite3). `d11 show NODE orders`.
///
/// The config (--config) is the node's entry of a topology file, as JSON.
#[derive(Parser)]
#[command(name = "d11-db", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main_app("d11-db", &cli.element, d11_services::db::build_db)
}
