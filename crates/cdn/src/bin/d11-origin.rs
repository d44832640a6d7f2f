//! d11-origin: object storage, the CDN's origin, on the userspace stack.

use clap::Parser;
use d11_element::{program_main_app, ElementArgs};

/// Object storage over HTTP(S): PUT, GET, HEAD and DELETE of objects by path, each with an
/// ETag (from its content), Last-Modified, Content-Type and Cache-Control; conditional GET
/// (304) and Range (206); `d11 show NODE objects`.
///
/// The config (--config) is the node's entry of a topology file, as JSON: its port and
/// address, `port` (80), `tls` and `tls_port` (443), `data_dir` (objects on disk, kept across
/// restarts), `max_object`, and `pictures` ([{path, size, cache_control}]: PNGs made at start).
#[derive(Parser)]
#[command(name = "d11-origin", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main_app("d11-origin", &cli.element, d11_cdn::server::build_origin)
}
