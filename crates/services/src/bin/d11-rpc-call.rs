//! d11-rpc-call: Dubbo calls from a userspace stack on its own TAP.

use anyhow::Context;
use clap::Parser;
use d11_element::{main_with, open_ports, order_ports, run_app, App, ElementArgs};
use d11_rpc::d11_dubbo::Request;
use d11_rpc::Client;
use d11_services::{args_from_json, to_json};
use d11_stack::{Stack, StackConfig};
use serde_json::json;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// Calls a Dubbo 2 service (Hessian 2) from its own address on a lab segment, `count` times
/// with `concurrency` calls in flight on one connection, and prints the results and timings as
/// JSON. `d11 lab rpc SEGMENT -- ...` runs it inside a lab. In string arguments `{n}` becomes
/// the call's number.
#[derive(Parser, Clone)]
#[command(name = "d11-rpc-call", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
    /// The provider, ADDRESS:PORT.
    target: SocketAddrV4,
    /// The service, e.g. com.shop.InventoryService.
    service: String,
    method: String,
    /// JVM descriptor of the parameter types, e.g. 'Ljava/lang/String;J'.
    types: String,
    /// The arguments as a JSON array.
    args: String,
    /// This client's address on the segment (not with --kernel).
    #[arg(long, required_unless_present = "kernel")]
    address: Option<ipnet::Ipv4Net>,
    /// Use the kernel's TCP of the namespace it runs in, not a userspace stack on a lab port
    /// (the same RPC code, for comparison benchmarks).
    #[arg(long)]
    kernel: bool,
    /// Print only the summary, not every result.
    #[arg(long)]
    summary: bool,
    #[arg(long)]
    gateway: Option<std::net::Ipv4Addr>,
    /// The service's version.
    #[arg(long = "service-version", default_value = "1.0.0")]
    service_version: String,
    #[arg(long, default_value_t = 1)]
    count: usize,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds per call.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    main_with("d11-rpc-call", || {
        cli.element.validate()?;
        cli.element.init_logging();
        let args: Vec<serde_json::Value> =
            serde_json::from_str(&cli.args).context("args: a JSON array")?;
        args_from_json(&cli.types, &args, 0)?;
        if cli.kernel {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            return tokio::task::LocalSet::new().block_on(&rt, async {
                let conn = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::net::TcpStream::connect(cli.target),
                )
                .await
                .context("connect timed out")??;
                conn.set_nodelay(true)?;
                println!("{}", calls(&cli, &args, Client::new(conn)).await?);
                Ok(())
            });
        }
        let ports = order_ports(open_ports(&cli.element)?, &["eth0"])
            .context("give --port eth0=TAP@SEGMENT")?;
        let cfg: StackConfig = serde_json::from_value(json!({
            "name": cli.element.node,
            "ports": [{ "name": "eth0", "addresses": [cli.address] }],
            "gateway": cli.gateway,
            "tcp": { "ack_delay_ms": 0 },
        }))?;
        let (element_args, cli) = (&cli.element, std::rc::Rc::new(cli.clone()));
        run_app(element_args, ports, || {
            let (stack, element) = Stack::new(&cfg, "rpc-call")?;
            let app: App = Box::pin(async move {
                let conn = tokio::time::timeout(Duration::from_secs(5), stack.connect(cli.target))
                    .await
                    .context("connect timed out")??;
                let client = Client::new(conn);
                println!("{}", calls(&cli, &args, client).await?);
                stack.quiesce(Duration::from_secs(2)).await;
                Ok(())
            });
            Ok((element, Some(app)))
        })
    })
}

/// Makes the calls on `client`: `count` of them, `concurrency` in flight; the summary.
async fn calls(
    cli: &Cli,
    args: &[serde_json::Value],
    client: Client,
) -> anyhow::Result<serde_json::Value> {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(cli.concurrency.max(1)));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..cli.count {
        let permit = sem.clone().acquire_owned().await?;
        let request = Request {
            service: cli.service.clone(),
            version: cli.service_version.clone(),
            method: cli.method.clone(),
            types: cli.types.clone(),
            args: args_from_json(&cli.types, args, n)?,
            attachments: Vec::new(),
        };
        let client = client.clone();
        let timeout = Duration::from_secs_f64(cli.timeout);
        tasks.push(tokio::task::spawn_local(async move {
            let t = Instant::now();
            let r = client.call(request, timeout).await;
            drop(permit);
            (r, t.elapsed().as_secs_f64() * 1e3)
        }));
    }
    let mut results = Vec::new();
    let mut ms = Vec::new();
    let mut errors = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        let (r, m) = t.await?;
        ms.push(m);
        match r {
            Ok(v) => results.push(v.as_ref().map_or(json!(null), to_json)),
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| {
        ms.get(((ms.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
    };
    let mut out = json!({
        "calls": cli.count,
        "ok": results.len(),
        "errors": errors,
        "seconds": secs,
        "per_second": cli.count as f64 / secs,
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
    });
    if !cli.summary {
        out["results"] = json!(results);
    }
    Ok(out)
}
