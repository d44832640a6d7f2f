//! d11-inventory.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// The inventory service: `com.shop.InventoryService` over Dubbo 2 / Hessian 2 on port 20880
/// (`deduct(orderId, item, n)` by compare-and-set, idempotent per order; `restore(orderId)`;
/// `stock(item)`); initial `stock = { ITEM = N }`; the stock and deductions in the SQLite file
/// `database`; registers with `registry`. `d11 show NODE stock`, `d11 show NODE deductions`.
///
/// The config (--config) is the node's entry of a topology file, as JSON.
#[derive(Parser)]
#[command(name = "d11-inventory", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
    /// Serve over the kernel's TCP on ADDRESS:PORT instead of a lab port (for comparison
    /// benchmarks; prints READY once listening).
    #[arg(long, value_name = "ADDRESS:PORT")]
    kernel_listen: Option<std::net::SocketAddr>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(addr) = cli.kernel_listen {
        return d11_element::main_with("d11-inventory", || {
            let cfg: d11_services::InventoryConfig = cli.element.load_config()?;
            d11_services::inventory::serve_inventory_kernel(&cfg, addr)
        });
    }
    program_main_app("d11-inventory", &cli.element, d11_services::build_inventory)
}
