//! d11-coupon.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// The coupon service: `com.shop.CouponService` (`redeem(coupon, orderId)` at most once, by one order; `release(coupon, orderId)`); `coupons = [...]`; registers with `registry`. `d11 show NODE coupons`.
///
/// The config (--config) is the node's entry of a topology file, as JSON.
#[derive(Parser)]
#[command(name = "d11-coupon", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main_app(
        "d11-coupon",
        &cli.element,
        d11_services::coupon::build_coupon,
    )
}
