//! d11-ctl: the shop's controller, HTTPS on the userspace stack.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// The shop's controller: `POST /purchaseOrder` (idempotent by `Idempotency-Key`) and
/// `GET /health` over HTTPS, on a userspace TCP/IP stack; `d11 show NODE orders`.
///
/// The config (--config) is the node's entry of a topology file, as JSON: its port and
/// address, gateway, `tls` (certificate chain and key: the lab issues them), `port` (443) and
/// `http` limits.
#[derive(Parser)]
#[command(name = "d11-ctl", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
    /// Serve the same API on the kernel's TCP at ADDR instead (for comparison benchmarks):
    /// no ports; prints READY once listening.
    #[arg(long, value_name = "ADDR")]
    kernel_listen: Option<std::net::SocketAddr>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(addr) = cli.kernel_listen {
        return d11_element::main_with("d11-ctl", || {
            let cfg: d11_ctl::CtlConfig = cli.element.load_config()?;
            d11_ctl::serve_kernel(&cfg, addr)
        });
    }
    program_main_app("d11-ctl", &cli.element, d11_ctl::build)
}
