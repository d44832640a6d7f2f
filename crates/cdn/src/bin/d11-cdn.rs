//! d11-cdn: an HTTP cache, the CDN's edge or parent, on the userspace stack.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// An HTTP cache (RFC 9111, with RFC 5861's stale-while-revalidate and stale-if-error) in
/// front of its upstream: the edge near the phone, or the parent in front of the origin.
/// Every answer carries `Via` and `Cache-Status` (RFC 9211); `PURGE /path` from `purge_from`
/// removes a URL; `d11 show NODE cache` and `cache-stats`.
///
/// The config (--config) is the node's entry of a topology file, as JSON: its port and
/// address, `kind` (edge or parent), `upstream` (ADDRESS:PORT), `port` (80), `tls` and
/// `tls_port` (443), `max_bytes`, `max_object`, `purge_from`, `upstream_timeout_ms`.
#[derive(Parser)]
#[command(name = "d11-cdn", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let node = cli.element.node.clone();
    program_main_app("d11-cdn", &cli.element, |cfg| {
        d11_cdn::server::build_cache(&node, cfg)
    })
}
