//! d11-fetch: one HTTP(S) exchange from a userspace stack on its own TAP.

use anyhow::Context;
use clap::Parser;
use d11_ctl::fetch::{fetch, print, Request};
use d11_element::{main_with, open_ports, order_ports, run_app, App, ElementArgs};
use d11_stack::{Stack, StackConfig};
use std::path::PathBuf;
use std::time::Duration;

/// HTTP(S) client on the userspace stack: connects from its own address on a lab segment,
/// verifies the server's chain against --cacert, and prints the response with the TCP and TLS
/// handshake and response timings. `d11 lab fetch SEGMENT URL` runs it inside a lab.
#[derive(Parser)]
#[command(name = "d11-fetch", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
    /// The URL (http:// or https://).
    url: String,
    /// This client's address and prefix, e.g. 10.0.1.9/24.
    #[arg(long)]
    address: ipnet::Ipv4Net,
    #[arg(long)]
    gateway: Option<std::net::Ipv4Addr>,
    /// HOST:PORT:ADDRESS, as curl's --resolve.
    #[arg(long)]
    resolve: Vec<String>,
    /// CA certificate(s) to trust (the lab's pki/root.pem).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// POST this body (JSON).
    #[arg(short = 'd', long)]
    data: Option<String>,
    /// Extra header, NAME: VALUE.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Send the request this many times on one connection.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Seconds to wait for each step.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    /// Exit 22 (as curl -f) on an HTTP status of 400 or more.
    #[arg(short = 'f', long)]
    fail: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let code = std::rc::Rc::new(std::cell::Cell::new(0u8));
    let r = main_with("d11-fetch", || {
        cli.element.validate()?;
        cli.element.init_logging();
        let ports = order_ports(open_ports(&cli.element)?, &["eth0"])
            .context("give --port eth0=TAP@SEGMENT")?;
        let cfg: StackConfig = serde_json::from_value(serde_json::json!({
            "name": cli.element.node,
            "ports": [{ "name": "eth0", "addresses": [cli.address] }],
            "gateway": cli.gateway,
            // A one-shot client: ACK at once, so its last ACK (of the server's FIN) leaves
            // before the program does.
            "tcp": { "ack_delay_ms": 0 },
        }))?;
        let req = Request {
            url: cli.url.clone(),
            resolve: cli.resolve.clone(),
            cacert: cli.cacert.clone(),
            data: cli.data.clone(),
            headers: cli.headers.clone(),
            count: cli.count,
            timeout: Duration::from_secs_f64(cli.timeout),
        };
        let (json, fail) = (cli.json, cli.fail);
        let code = code.clone();
        run_app(&cli.element, ports, move || {
            let (stack, element) = Stack::new(&cfg, "fetch")?;
            let app: App = Box::pin(async move {
                let o = fetch(&stack, &req).await?;
                // The FIN exchange reaches the wire before the program exits.
                stack.quiesce(Duration::from_secs(2)).await;
                if json {
                    println!("{}", serde_json::to_string(&o)?);
                } else {
                    print(&o);
                }
                if fail && o.status >= 400 {
                    code.set(22);
                }
                Ok(())
            });
            Ok((element, Some(app)))
        })
    });
    if r != std::process::ExitCode::SUCCESS {
        return r;
    }
    std::process::ExitCode::from(code.get())
}
