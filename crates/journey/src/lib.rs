//! The journey: bring a lab up with every segment captured, send real traffic through it,
//! read each hop back from the captures (tshark), and compare every field with what the lab's
//! own state says it must be: MACs from `d11 show` and the kernel, addresses from the topology,
//! TTLs from each sender's default minus the routers crossed. Nothing expected is a constant.
//!
//! Today it runs the foundation lab (`labs/two-hosts-router.toml`); later stages add the
//! order's path and reuse [`Hop`], [`check_hops`] and the report.

use anyhow::{bail, Context, Result};
use d11_lab::topology::Topology;
use d11_lab::{LabState, UpOptions};
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One hop of the journey as a capture must show it.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    pub n: String,
    /// The segment (capture file) it is read from.
    pub segment: String,
    pub from: String,
    pub to: String,
    /// tshark display filter that picks the frame.
    pub filter: String,
    /// (tshark field, expected value).
    pub expect: Vec<(String, String)>,
}

/// A hop with what was captured.
#[derive(Debug, Clone, Serialize)]
pub struct HopResult {
    pub hop: Hop,
    pub found: bool,
    /// (field, expected, captured, matches).
    pub fields: Vec<(String, String, String, bool)>,
    pub ok: bool,
}

pub struct Options {
    pub topology: PathBuf,
    pub out: PathBuf,
    pub prefix: String,
    pub keep: bool,
}

fn run_in(ns: &str, cmd: &[&str]) -> Result<String> {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{} in {ns} failed: {}{}",
            cmd.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The MAC of a kernel host's interface.
fn kernel_mac(ns: &str, dev: &str) -> Result<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "link", "show", "dev", dev])
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout).context("ip -j link")?;
    v[0]["address"]
        .as_str()
        .map(str::to_string)
        .context("no MAC")
}

fn kernel_default_ttl(ns: &str) -> Result<u8> {
    Ok(run_in(ns, &["cat", "/proc/sys/net/ipv4/ip_default_ttl"])?
        .trim()
        .parse()?)
}

fn program_mac(st: &LabState, node: &str, port: &str) -> Result<String> {
    let sock = st.node(node)?.control.clone().context("not a program")?;
    let ifs = d11_element::control::query(&sock, Some("interfaces"))?;
    ifs.as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == port))
        .and_then(|i| i["mac"].as_str())
        .map(str::to_string)
        .with_context(|| format!("{node} has no interface {port}"))
}

fn program_ttl(st: &LabState, node: &str) -> Result<u8> {
    let sock = st.node(node)?.control.clone().context("not a program")?;
    let ifs = d11_element::control::query(&sock, Some("interfaces"))?;
    ifs[0]["default_ttl"]
        .as_u64()
        .map(|t| t as u8)
        .with_context(|| format!("{node} reports no default_ttl"))
}

fn addr(topo: &Topology, node: &str, port: &str) -> Result<String> {
    let n = topo
        .node(node)
        .with_context(|| format!("topology has no node {node}"))?;
    let p = n
        .ports
        .iter()
        .find(|p| p.name == port)
        .with_context(|| format!("{node} has no port {port}"))?;
    p.addresses
        .first()
        .map(|a| a.addr().to_string())
        .with_context(|| format!("{node}:{port} has no address"))
}

/// Reads the first frame matching each hop's filter and compares its fields.
pub fn check_hops(pcap_dir: &Path, hops: &[Hop]) -> Result<Vec<HopResult>> {
    let mut out = Vec::new();
    for h in hops {
        let file = pcap_dir.join(format!("{}.pcapng", h.segment));
        let mut cmd = Command::new("tshark");
        cmd.args(["-n", "-r"]).arg(&file).args([
            "-Y",
            &h.filter,
            "-T",
            "fields",
            "-E",
            "separator=|",
        ]);
        for (f, _) in &h.expect {
            cmd.args(["-e", f]);
        }
        let o = cmd
            .output()
            .context("run tshark (apt-get install tshark)")?;
        if !o.status.success() {
            bail!(
                "tshark on {}: {}",
                file.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        let line = String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let found = !line.is_empty();
        let got: Vec<&str> = line.split('|').collect();
        let fields: Vec<_> = h
            .expect
            .iter()
            .enumerate()
            .map(|(i, (f, want))| {
                let g = got.get(i).copied().unwrap_or("").to_string();
                let ok = found && g.eq_ignore_ascii_case(want);
                (f.clone(), want.clone(), g, ok)
            })
            .collect();
        let ok = found && fields.iter().all(|f| f.3);
        out.push(HopResult {
            hop: h.clone(),
            found,
            fields,
            ok,
        });
    }
    Ok(out)
}

fn timestamp() -> String {
    let o = Command::new("date").arg("+%Y%m%d-%H%M%S").output();
    o.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "now".into())
}

/// Runs the journey; returns true when every hop matched.
pub fn run(opts: &Options) -> Result<bool> {
    let topo = Topology::load(&opts.topology)?;
    let out = opts.out.join(format!("journey-{}", timestamp()));
    let pcap = out.join("pcap");
    std::fs::create_dir_all(&pcap).with_context(|| format!("cannot create {}", out.display()))?;
    let t0 = Instant::now();
    let st = d11_lab::up(
        &topo,
        Some(&opts.topology),
        &UpOptions {
            prefix: opts.prefix.clone(),
            capture_dir: Some(pcap.clone()),
            seed: 1,
            ..Default::default()
        },
    )?;
    let up_time = t0.elapsed();
    let result = drive(&topo, &st, &out, &pcap, up_time);
    if !opts.keep {
        d11_lab::down(&opts.prefix)?;
    } else {
        println!(
            "lab kept up (prefix {}): `d11 lab down` removes it",
            opts.prefix
        );
    }
    result
}

fn drive(
    topo: &Topology,
    st: &LabState,
    out: &Path,
    pcap: &Path,
    up_time: std::time::Duration,
) -> Result<bool> {
    let ns = |n: &str| -> Result<String> { Ok(st.node(n)?.netns.clone()) };
    let (client, router, server) = ("k1", "r1", "h2");
    let dst = addr(topo, server, "eth0")?;
    let src = addr(topo, client, "eth0")?;

    // Traffic: ping, traceroute, TCP echo, all from the kernel host.
    let t = Instant::now();
    let ping = run_in(
        &ns(client)?,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", &dst],
    )?;
    let ping_time = t.elapsed();
    let rtt = ping
        .lines()
        .find(|l| l.starts_with("rtt"))
        .unwrap_or("")
        .to_string();
    let trace = run_in(
        &ns(client)?,
        &["traceroute", "-n", "-q", "1", "-w", "2", &dst],
    )?;
    let echo = run_in(
        &ns(client)?,
        &[
            "sh",
            "-c",
            &format!("printf 'order 11.11\\n' | nc -N -w 5 {dst} 7"),
        ],
    )?;
    if echo.trim() != "order 11.11" {
        bail!("TCP echo through the router returned {echo:?}");
    }

    let k_mac = kernel_mac(&ns(client)?, "eth0")?;
    let k_ttl = kernel_default_ttl(&ns(client)?)?;
    let r_in = program_mac(st, router, "eth0")?;
    let r_out = program_mac(st, router, "eth1")?;
    let h_mac = program_mac(st, server, "eth0")?;
    let h_ttl = program_ttl(st, server)?;
    let hop = |n: &str,
               seg: &str,
               from: &str,
               to: &str,
               filter: &str,
               es: &str,
               ed: &str,
               is: &str,
               id: &str,
               ttl: u8| Hop {
        n: n.into(),
        segment: seg.into(),
        from: from.into(),
        to: to.into(),
        filter: filter.into(),
        expect: vec![
            ("eth.src".into(), es.into()),
            ("eth.dst".into(), ed.into()),
            ("ip.src".into(), is.into()),
            ("ip.dst".into(), id.into()),
            ("ip.ttl".into(), ttl.to_string()),
        ],
    };
    let req = "icmp.type == 8 && icmp.seq == 1";
    let rep = "icmp.type == 0 && icmp.seq == 1";
    let hops = vec![
        hop(
            "1", "left", client, router, req, &k_mac, &r_in, &src, &dst, k_ttl,
        ),
        hop(
            "2",
            "right",
            router,
            server,
            req,
            &r_out,
            &h_mac,
            &src,
            &dst,
            k_ttl - 1,
        ),
        hop(
            "2'", "right", server, router, rep, &h_mac, &r_out, &dst, &src, h_ttl,
        ),
        hop(
            "1'",
            "left",
            router,
            client,
            rep,
            &r_in,
            &k_mac,
            &dst,
            &src,
            h_ttl - 1,
        ),
    ];
    let results = check_hops(pcap, &hops)?;
    let all_ok = results.iter().all(|r| r.ok);

    let mut md = String::new();
    writeln!(md, "# d11 journey: {}\n", st.name)?;
    writeln!(md, "ICMP echo from {client} ({src}) to {server} ({dst}) through {router}; every field read from the captures.\n")?;
    writeln!(
        md,
        "| hop | link | from -> to | field | expected | captured | |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for r in &results {
        for (i, (f, want, got, ok)) in r.fields.iter().enumerate() {
            let (h, l, ft) = if i == 0 {
                (
                    r.hop.n.as_str(),
                    r.hop.segment.as_str(),
                    format!("{} -> {}", r.hop.from, r.hop.to),
                )
            } else {
                ("", "", String::new())
            };
            let got = if r.found { got.as_str() } else { "(no frame)" };
            writeln!(
                md,
                "| {h} | {l} | {ft} | {f} | {want} | {got} | {} |",
                if *ok { "ok" } else { "MISMATCH" }
            )?;
        }
    }
    writeln!(md, "\n## Stages\n")?;
    writeln!(md, "| stage | time |\n|---|---|")?;
    writeln!(
        md,
        "| lab up (namespaces, bridges, programs ready) | {:.1} ms |",
        up_time.as_secs_f64() * 1e3
    )?;
    writeln!(
        md,
        "| 3 pings, 0.2 s apart | {:.1} ms ({rtt}) |",
        ping_time.as_secs_f64() * 1e3
    )?;
    writeln!(md, "\n## traceroute\n\n```\n{}```", trace)?;
    writeln!(
        md,
        "\n{}",
        if all_ok {
            "Every hop matches."
        } else {
            "SOME HOPS DO NOT MATCH."
        }
    )?;
    std::fs::write(out.join("report.md"), &md)?;
    let report = json!({
        "lab": st.name,
        "ok": all_ok,
        "hops": results,
        "stages": { "lab_up_ms": up_time.as_secs_f64() * 1e3, "ping_ms": ping_time.as_secs_f64() * 1e3, "rtt": rtt },
        "traceroute": trace,
        "captures": pcap,
    });
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    print!("{md}");
    println!("\nreport, captures: {}", out.display());
    Ok(all_ok)
}
