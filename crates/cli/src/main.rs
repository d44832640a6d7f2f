//! d11: bring labs up and down, look inside them, capture their links.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use d11_lab::capture::{capture, CaptureOptions};
use d11_lab::client::Client;
use d11_lab::topology::Topology;
use d11_lab::{LabState, UpOptions};
use serde_json::Value;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// d11: the path of one online order, packet by packet, in a lab of network namespaces.
///
/// A lab is a topology file (labs/*.toml) brought to life: one network namespace per node,
/// one Linux bridge per segment, and a d11 program (or the kernel's own stack) on every node.
#[derive(Parser)]
#[command(name = "d11", version)]
struct Cli {
    /// Namespace prefix of the lab: namespaces are PREFIX-<node>, state in /run/d11/PREFIX.
    #[arg(long, global = true, env = "D11_PREFIX", default_value = "d11")]
    prefix: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the journey: bring the lab up with captures, send traffic, check every hop
    /// against the lab's own state, print the report, tear down. Exits 1 if a hop differs.
    Journey {
        /// The lab to run.
        /// labs/double11.toml: the order from the phone to a controller in the cloud
        /// (journey.md hops 1-14); labs/mobile.toml: to a controller just beyond the carrier
        /// (hops 1-5); labs/two-hosts-router.toml: ICMP through one router.
        #[arg(long, default_value = "labs/double11.toml")]
        lab: PathBuf,
        /// The hops to check, as rows of data (default: the file the topology's `journey`
        /// key names, under labs/journeys/).
        #[arg(long)]
        journey: Option<PathBuf>,
        /// The phone's PDU session: ethernet (the seed's picture, the lab's default) or ipv4.
        #[arg(long)]
        pdn_type: Option<String>,
        /// How the phone's app finds the shop: dns (the DNS server of its PDN session, the
        /// lab's default) or httpdns (the HTTPDNS service, DNS if that fails).
        #[arg(long)]
        resolver: Option<String>,
        /// After the hops, cut this segment during a load of orders (as `d11 lab link SEGMENT
        /// down`), restore it, and report the convergence: detection, UPDATEs per router,
        /// the new path and its first order, orders lost or delayed. labs/double11.toml:
        /// x-c1-c2 (the order then goes a2 -> c3 -> border).
        #[arg(long, value_name = "SEGMENT")]
        cut: Option<String>,
        /// Where to write out/journey-<time>/ (captures, report.md, report.json).
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Leave the lab up afterwards (remove it with `d11 lab down`).
        #[arg(long)]
        keep: bool,
    },
    /// Write the page of a journey's report.json (again): index.html beside it, or -o FILE.
    /// `d11 journey` writes it itself; this redraws an older report with this d11's page.
    Page {
        /// out/journey-<time>/report.json
        report: PathBuf,
        #[arg(short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Build, inspect and remove labs.
    #[command(subcommand)]
    Lab(LabCmd),
    /// Show a running node's state (tables: info, ports, counters, and the role's own).
    Show {
        node: String,
        /// The table; without it, the list of tables.
        table: Option<String>,
        /// A table's second word (`bgp routes` is the table `bgp-routes`).
        sub: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Bring a lab up from a topology file; returns when every node has reported ready.
    Up {
        /// The topology file (see labs/*.toml).
        file: PathBuf,
        /// Capture every segment to DIR/<segment>.pcapng from the start.
        #[arg(long, value_name = "DIR")]
        capture: Option<PathBuf>,
        /// Programs also write each port's frames, with decision notes, to DIR.
        #[arg(long, value_name = "DIR")]
        program_captures: Option<PathBuf>,
        /// Seed for link impairments.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Programs append their TLS secrets to FILE (SSLKEYLOGFILE), so Wireshark decrypts
        /// the captures: `-o tls.keylog_file:FILE`.
        #[arg(long, value_name = "FILE")]
        keylog: Option<PathBuf>,
        /// Where the d11-* programs are (default: beside this executable).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// Remove the lab: stop its processes, delete its namespaces and run directory.
    Down,
    /// Show each node's state (running, dead, kernel) and ports.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List the labs that are up.
    List,
    /// Restart a node's program (SIGTERM, then the same command line): what a crash and a
    /// reboot do; GTP peers see its Recovery counter grow.
    Restart { node: String },
    /// Take a segment down (nothing crosses it, as a cut cable; its capture goes on) or up.
    Link {
        segment: String,
        /// down or up.
        state: String,
    },
    /// Run a command in a node's network namespace.
    Exec {
        node: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Capture a segment or NODE:PORT to pcapng (stdout by default: `| wireshark -k -i -`).
    Capture {
        /// A segment name, or NODE:PORT.
        target: String,
        /// Write to FILE instead of stdout.
        #[arg(short = 'w', value_name = "FILE")]
        write: Option<PathBuf>,
        /// Stop after N frames.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
    },
    /// (internal) Capture interface IFNAME of the current namespace; used by `lab up --capture`.
    #[command(hide = true)]
    CaptureRaw {
        ifname: String,
        #[arg(long)]
        name: String,
        #[arg(short = 'w')]
        write: PathBuf,
        #[arg(long)]
        ready_fd: Option<i32>,
    },
    /// HTTP(S) from a userspace client attached to SEGMENT for one exchange (d11-fetch):
    /// `d11 lab fetch left -- --address 10.0.1.9/24 --gateway 10.0.1.1 https://...`.
    /// The lab's CA is trusted unless --cacert is given.
    Fetch {
        segment: String,
        /// d11-fetch's arguments: --address, --gateway, --resolve, -d, -H, --json, URL.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Call a Dubbo service from a userspace client (d11-rpc-call) on its own TAP on SEGMENT.
    Rpc {
        segment: String,
        /// d11-rpc-call's arguments: --address, --gateway, --count, --concurrency, TARGET
        /// SERVICE METHOD TYPES ARGS.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Serve the lab's page (the map; with --report, a journey's hops over it) on ADDR, each
    /// node's tables (`d11 show`) live: click a node. Loopback only unless told otherwise.
    Web {
        /// Where to listen.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8011")]
        listen: String,
        /// A journey's report.json (out/journey-<time>/report.json) to step through.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
    /// Print a node's log.
    Logs {
        node: String,
        /// Keep printing as the log grows.
        #[arg(short, long)]
        follow: bool,
    },
}

fn main() -> ExitCode {
    // Like other Unix tools: `d11 ... | head` ends quietly when the reader goes away. (Rust
    // ignores SIGPIPE by default; the d11-* programs we start set their own again.)
    // SAFETY: restoring a default signal disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("d11: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let prefix = cli.prefix;
    match cli.cmd {
        Cmd::Journey {
            lab,
            journey,
            out,
            keep,
            pdn_type,
            resolver,
            cut,
        } => {
            let ok = d11_journey::run(&d11_journey::Options {
                topology: lab,
                journey,
                out,
                prefix,
                keep,
                pdn_type,
                resolver,
                cut,
            })?;
            if !ok {
                bail!("some hops did not match what the lab's state says they must be");
            }
            Ok(())
        }
        Cmd::Lab(LabCmd::Up {
            file,
            capture,
            program_captures,
            seed,
            bin_dir,
            keylog,
        }) => {
            let topo = Topology::load(&file)?;
            let st = d11_lab::up(
                &topo,
                Some(&file),
                &UpOptions {
                    prefix: prefix.clone(),
                    bin_dir,
                    capture_dir: capture,
                    program_capture_dir: program_captures,
                    seed,
                    keylog,
                },
            )?;
            println!(
                "lab {} is up: {} nodes, {} segments (prefix {prefix})",
                st.name,
                st.nodes.len(),
                st.segments.len()
            );
            if let Some(pki) = &st.pki {
                println!(
                    "lab CA: {} (curl --cacert, openssl -CAfile)",
                    pki.join("root.pem").display()
                );
            }
            print_status(&st);
            Ok(())
        }
        Cmd::Lab(LabCmd::Down) => {
            let r = d11_lab::down(&prefix)?;
            if r.namespaces == 0 && r.processes == 0 {
                println!("no lab with prefix {prefix} is up");
            } else {
                println!(
                    "lab {prefix} removed: {} processes stopped ({} killed), {} namespaces deleted",
                    r.processes, r.killed, r.namespaces
                );
            }
            Ok(())
        }
        Cmd::Lab(LabCmd::Status { json }) => {
            let st = LabState::load(&prefix)?;
            if json {
                let v = serde_json::json!({
                    "prefix": st.prefix, "name": st.name, "topology": st.topology,
                    "nodes": d11_lab::status(&st),
                    "segments": st.segments,
                    "captures": st.captures,
                    "pki": st.pki,
                    "keylog": st.keylog,
                    "scheduling": st.scheduling,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "lab {} (prefix {}, topology {}, programs scheduled {})",
                    st.name,
                    st.prefix,
                    st.topology
                        .as_ref()
                        .map_or("-".into(), |p| p.display().to_string()),
                    match st.scheduling {
                        d11_lab::topology::Scheduling::Normal => "SCHED_OTHER",
                        d11_lab::topology::Scheduling::Batch => "SCHED_BATCH",
                    }
                );
                print_status(&st);
            }
            Ok(())
        }
        Cmd::Lab(LabCmd::List) => {
            for p in d11_lab::list() {
                println!("{p}");
            }
            Ok(())
        }
        Cmd::Lab(LabCmd::Restart { node }) => {
            let pid = d11_lab::restart(&prefix, &node)?;
            eprintln!("{node}: restarted, pid {pid}");
            Ok(())
        }
        Cmd::Lab(LabCmd::Link { segment, state }) => {
            let up = match state.as_str() {
                "up" => true,
                "down" => false,
                s => bail!("lab link {segment} {s:?}: down or up"),
            };
            d11_lab::link(&prefix, &segment, up)?;
            eprintln!("{segment}: {state}");
            Ok(())
        }
        Cmd::Page { report, out } => {
            let text = std::fs::read_to_string(&report)
                .with_context(|| format!("cannot read {}", report.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a journey's report.json", report.display()))?;
            if !v["hops"].is_array() {
                bail!(
                    "{}: no hops (not a journey's report.json)",
                    report.display()
                );
            }
            let out = out.unwrap_or_else(|| report.with_file_name("index.html"));
            std::fs::write(&out, d11_journey::page::render(&v, None))
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("{}", out.display());
            Ok(())
        }
        Cmd::Lab(LabCmd::Web { listen, report }) => {
            d11_journey::page::serve(&prefix, &listen, report.as_deref())
        }
        Cmd::Lab(LabCmd::Exec { node, cmd }) => {
            let err = Client::open(&prefix)?.command(&node, &cmd)?.exec();
            Err(err).context("cannot run ip netns exec")
        }
        Cmd::Lab(LabCmd::Capture {
            target,
            write,
            count,
            duration,
        }) => {
            d11_lab::sys::require_root()?;
            let st = LabState::load(&prefix)?;
            let (ifname, label) = st.capture_ifname(&target)?;
            let _ns = d11_netdev::netns::NetnsGuard::enter(
                &PathBuf::from("/run/netns").join(&st.fabric),
            )?;
            let opts = CaptureOptions {
                ifname: &ifname,
                label: &target,
                port: target.contains(':'),
                count,
                duration: duration.map(Duration::from_secs_f64),
            };
            let ready = || eprintln!("d11: capturing {label}; Ctrl-C to stop");
            let n = match write {
                Some(p) => {
                    let f = std::fs::File::create(&p)
                        .with_context(|| format!("cannot create {}", p.display()))?;
                    capture(&opts, std::io::BufWriter::new(f), ready)?
                }
                None => {
                    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                        bail!("pcapng is binary: give -w FILE, or pipe it (d11 lab capture {target} | wireshark -k -i -)");
                    }
                    capture(&opts, std::io::stdout().lock(), ready)?
                }
            };
            eprintln!("d11: {n} frames captured");
            Ok(())
        }
        Cmd::Lab(LabCmd::CaptureRaw {
            ifname,
            name,
            write,
            ready_fd,
        }) => {
            let f = std::fs::File::create(&write)
                .with_context(|| format!("cannot create {}", write.display()))?;
            let opts = CaptureOptions {
                ifname: &ifname,
                label: &name,
                port: name.contains(':'),
                count: None,
                duration: None,
            };
            capture(&opts, std::io::BufWriter::new(f), || {
                if let Some(fd) = ready_fd {
                    use std::os::fd::FromRawFd;
                    // SAFETY: the builder passed this descriptor for the readiness line.
                    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
                    let _ = f.write_all(b"READY\n");
                }
            })?;
            Ok(())
        }
        Cmd::Lab(LabCmd::Fetch { segment, args }) => {
            let st = LabState::load(&prefix)?;
            let err = lab_tool(&st, &segment, "d11-fetch", "fetch", |cmd| {
                if let (Some(pki), false) = (&st.pki, args.iter().any(|a| a == "--cacert")) {
                    cmd.arg("--cacert").arg(pki.join("root.pem"));
                }
                if let Some(k) = &st.keylog {
                    cmd.env("SSLKEYLOGFILE", k);
                }
                cmd.args(&args);
            })?;
            Err(err).context("cannot run d11-fetch")
        }
        Cmd::Lab(LabCmd::Rpc { segment, args }) => {
            let st = LabState::load(&prefix)?;
            let err = lab_tool(&st, &segment, "d11-rpc-call", "rpc", |cmd| {
                cmd.args(&args);
            })?;
            Err(err).context("cannot run d11-rpc-call")
        }
        Cmd::Lab(LabCmd::Logs { node, follow }) => {
            let st = LabState::load(&prefix)?;
            let n = st.node(&node)?;
            let log = n
                .log
                .as_ref()
                .with_context(|| format!("node {node} is a kernel host: it has no log of ours"))?;
            if follow {
                let err = std::process::Command::new("tail")
                    .arg("-n")
                    .arg("+1")
                    .arg("-f")
                    .arg(log)
                    .exec();
                return Err(err).context("cannot run tail");
            }
            let text = std::fs::read_to_string(log)
                .with_context(|| format!("cannot read {}", log.display()))?;
            print!("{text}");
            Ok(())
        }
        Cmd::Show {
            node,
            table,
            sub,
            json,
        } => {
            let table = match (table, sub) {
                (Some(t), Some(s)) => Some(format!("{t}-{s}")),
                (t, _) => t,
            };
            let v = Client::open(&prefix)?.show(&node, table.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                render(&v);
            }
            Ok(())
        }
    }
}

fn print_status(st: &LabState) {
    let rows: Vec<Vec<String>> = d11_lab::status(st)
        .into_iter()
        .map(|n| {
            vec![
                n.name,
                n.role,
                n.state.to_string(),
                n.pid.map_or("-".into(), |p| p.to_string()),
                n.ports.join("  "),
            ]
        })
        .collect();
    print_table(&["NODE", "ROLE", "STATE", "PID", "PORTS"], &rows);
}

fn print_table(head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<width$}", c, width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(head.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            a.iter().map(cell).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    }
}

/// Arrays of objects as tables, objects as `key: value` lines.
fn render(v: &Value) {
    match v {
        Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
            let mut cols: Vec<String> = Vec::new();
            for it in items {
                for k in it.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !cols.contains(k) {
                        cols.push(k.clone());
                    }
                }
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|it| cols.iter().map(|c| cell(&it[c])).collect())
                .collect();
            let head: Vec<String> = cols.iter().map(|c| c.to_uppercase()).collect();
            let head: Vec<&str> = head.iter().map(String::as_str).collect();
            print_table(&head, &rows);
        }
        Value::Array(items) if items.is_empty() => println!("(empty)"),
        Value::Object(m) => {
            let w = m.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in m {
                println!("{k:<w$}  {}", cell(v));
            }
        }
        other => println!("{}", cell(other)),
    }
}

/// Runs one of our client programs (`d11-fetch`, `d11-rpc-call`) on its own TAP on a lab
/// segment, in place of this process (exec): killing `d11 lab rpc` kills the client, whose TAP
/// goes with it. Returns only if the exec failed.
fn lab_tool(
    st: &LabState,
    segment: &str,
    program: &str,
    tap_prefix: &str,
    args: impl FnOnce(&mut std::process::Command),
) -> Result<std::io::Error> {
    use std::os::unix::process::CommandExt;
    d11_lab::sys::require_root()?;
    if !st.segments.iter().any(|s| s.name == segment) {
        bail!("lab {} has no segment {segment:?}", st.prefix);
    }
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("no bin dir")?.join(program);
    let tap = format!("{tap_prefix}{}", std::process::id() % 100_000);
    let mut cmd = std::process::Command::new(bin);
    cmd.args([
        "--node",
        &tap,
        "--port",
        &format!("eth0={tap}@{segment}"),
        "--fabric",
    ])
    .arg(PathBuf::from("/run/netns").join(&st.fabric));
    if std::env::var_os("D11_LOG").is_none() {
        cmd.env("D11_LOG", "warn");
    }
    args(&mut cmd);
    Ok(cmd.exec())
}
