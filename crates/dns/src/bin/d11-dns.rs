//! d11-dns: a DNS server of the lab on the userspace stack.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// A DNS server on UDP and TCP 53: `kind = "authoritative"` serves `zone` from `zone_file`
/// (an RFC 1035 master file); `d11 show NODE zones`, `d11 show NODE counters`.
#[derive(Parser)]
#[command(name = "d11-dns", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main_app("d11-dns", &cli.element, d11_dns::server::build)
}
