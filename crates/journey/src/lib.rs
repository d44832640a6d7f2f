//! The journey: bring a lab up with every segment captured, send real traffic through it,
//! read each hop back from the captures (tshark), and compare every field with what the lab's
//! own state says it must be: MACs from `d11 show` and the kernel, addresses from the topology,
//! TTLs from each sender's default minus the routers crossed. Nothing expected is a constant.
//!
//! The hops are data: a journey file under `labs/journeys/` (named by the topology's
//! `journey` key) lists them as rows, with templates the lab's state resolves ([`plan`]).
//! This crate sends the traffic the file names (`order`: the phone attaches and its app
//! places the order; `ping`: ICMP through a router), gathers the facts the rows use (the
//! phone's address, the NAT's mapping, the controller the balancer chose, ...), checks every
//! row against the captures and writes the report.

pub mod convergence;
pub mod page;
pub mod plan;

use anyhow::{bail, Context, Result};
use d11_lab::client::{wait_until, Client};
use d11_lab::topology::Topology;
use d11_lab::tshark::Tshark;
use d11_lab::UpOptions;
use plan::{Facts, Plan};
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
    /// The frame's number in its segment's pcapng (as Wireshark numbers it), and its capture
    /// time (seconds since the epoch).
    pub frame: Option<u64>,
    pub time: Option<f64>,
    /// (field, expected, captured, matches).
    pub fields: Vec<(String, String, String, bool)>,
    pub ok: bool,
}

pub struct Options {
    pub topology: PathBuf,
    /// The journey file, if not the one the topology names.
    pub journey: Option<PathBuf>,
    pub out: PathBuf,
    pub prefix: String,
    pub keep: bool,
    /// The phone's PDU session type ("ethernet" or "ipv4"), if not the lab's own.
    pub pdn_type: Option<String>,
    /// How the phone's app resolves ("dns" or "httpdns"), if not the lab's own.
    pub resolver: Option<String>,
    /// A segment to cut during a load of orders, then restore, reporting the convergence.
    pub cut: Option<String>,
}

/// Reads the first frame matching each hop's filter and compares its fields.
/// `ethernet_tpdu`: GTP-U T-PDUs are Ethernet frames (an Ethernet PDU session).
pub fn check_hops(pcap_dir: &Path, hops: &[Hop], ethernet_tpdu: bool) -> Result<Vec<HopResult>> {
    let mut out = Vec::new();
    for h in hops {
        let file = pcap_dir.join(format!("{}.pcapng", h.segment));
        let mut fields: Vec<&str> = h.expect.iter().map(|(f, _)| f.as_str()).collect();
        fields.extend(["frame.number", "frame.time_epoch"]);
        let rows = tshark(&file, pcap_dir, ethernet_tpdu).fields(&h.filter, &fields)?;
        let first = rows.into_iter().next();
        let found = first.is_some();
        let mut got: Vec<String> = first.unwrap_or_default();
        let n = h.expect.len();
        let (frame, time) = if got.len() >= n + 2 {
            let t = got.pop().and_then(|t| t.parse().ok());
            (got.pop().and_then(|f| f.parse().ok()), t)
        } else {
            (None, None)
        };
        let fields: Vec<_> = h
            .expect
            .iter()
            .enumerate()
            .map(|(i, (f, want))| {
                let g = got.get(i).cloned().unwrap_or_default();
                let ok = found && g.eq_ignore_ascii_case(want);
                (f.clone(), want.clone(), g, ok)
            })
            .collect();
        let ok = found && fields.iter().all(|f| f.3);
        out.push(HopResult {
            hop: h.clone(),
            found,
            frame,
            time,
            fields,
            ok,
        });
    }
    Ok(out)
}

/// Our Dubbo dissector (contrib/wireshark/dubbo.lua), built into the program.
const DUBBO_LUA: &str = include_str!("../../../contrib/wireshark/dubbo.lua");

/// tshark over a capture of the journey: GTP-U T-PDUs as Ethernet for an Ethernet PDU
/// session, TLS decrypted with the run's key log, and the Dubbo dissector (written next to the
/// captures, so a user can load the same file into Wireshark). The journey reads its captures
/// while the lab is up, so as live ones ([`Tshark::read_live`]): a `--cut` journey's phone
/// goes on placing orders, and a capture may end inside the frame being written.
fn tshark(file: &Path, pcap_dir: &Path, ethernet_tpdu: bool) -> Tshark {
    let t = Tshark::read_live(file)
        .ethernet_tpdu(ethernet_tpdu)
        .keylog(&pcap_dir.join("../keylog.txt"));
    let lua = pcap_dir.join("../dubbo.lua");
    if lua.exists() || std::fs::write(&lua, DUBBO_LUA).is_ok() {
        t.lua(&lua)
    } else {
        t
    }
}

/// Frames tshark marks malformed (or with an error-level note) in each capture of
/// `pcap_dir`, read as [`check_hops`] reads them.
pub fn malformed(pcap_dir: &Path, ethernet_tpdu: bool) -> Result<Vec<(String, usize)>> {
    d11_lab::client::malformed(pcap_dir, |f| tshark(f, pcap_dir, ethernet_tpdu))
}

/// Writes the per-hop table of `results` as markdown.
fn hop_table(md: &mut String, results: &[HopResult]) -> Result<()> {
    writeln!(
        md,
        "| hop | link | from -> to | field | expected | captured | |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for r in results {
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
    Ok(())
}

/// What the traffic saw: the facts the journey's rows use, and its part of the report.
#[derive(Default)]
struct Observed {
    facts: Facts,
    /// GTP-U T-PDUs are Ethernet frames (an Ethernet PDU session).
    ethernet_tpdu: bool,
    /// (stage, time) rows of the report's Stages table.
    stages: Vec<(String, String)>,
    /// Markdown after the Stages table.
    sections: String,
    /// The traffic's part of report.json.
    json: serde_json::Map<String, Value>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn flag(b: bool) -> String {
    b.to_string()
}

/// The `order` traffic: the phone attaches and its app sends POST /purchaseOrder over HTTPS
/// (it does so by itself once the lab is up); the facts are read from what the programs
/// report: the phone's address and session, the NAT's mapping, the controller the balancer
/// chose, the RPC calls and the shard that stored the order.
fn order(lab: &Client) -> Result<Observed> {
    let t = Instant::now();
    let mut last = Value::Null;
    // The app's first request, and its second if it makes one (whose resolution is then a
    // hit in ldns's cache).
    let planned = lab.show("ue", Some("app_summary"))?["planned"]
        .as_u64()
        .unwrap_or(1)
        .clamp(1, 2) as usize;
    let app = wait_until(Duration::from_secs(60), || {
        last = lab.show("ue", Some("app"))?;
        Ok(last
            .as_array()
            .is_some_and(|a| a.len() >= planned)
            .then(|| last.clone()))
    })
    .with_context(|| {
        let ue = lab.show("ue", Some("ue")).unwrap_or_default();
        format!("the phone placed no order within 60 s: {ue}")
    })?;
    let order_time = t.elapsed();
    let o = &app[0];
    if o["ok"] != true {
        bail!("the app's order failed: {}", o["error"]);
    }
    let ue = lab.show("ue", Some("ue"))?;
    let oc = &o["outcome"];
    // The NAT's mapping of the order's connection (the phone's DNS questions have their own).
    let nat = lab.show("nat", Some("mappings"))?;
    let local = oc["local"].as_str().unwrap_or("?");
    let ext = nat_external(&nat, local, "tcp").with_context(|| {
        format!("no NAT mapping for the order's connection from {local}: {nat}")
    })?;
    let (ext_ip, ext_port) = ext.split_once(':').context("external endpoint")?;
    let endpoint_part = |k: &str, addr: bool| -> Result<String> {
        oc[k]
            .as_str()
            .and_then(|r| r.rsplit_once(':'))
            .map(|(a, p)| if addr { a } else { p }.to_string())
            .with_context(|| format!("the app's order has no {k} endpoint"))
    };
    // The carrier's router: the other node on the NAT's carrier segment.
    let first_router = lab
        .state
        .nodes
        .iter()
        .find(|n| n.name != "nat" && n.ports.iter().any(|p| p.segment == "carrier"))
        .map(|n| n.name.clone())
        .context("no router on the carrier segment")?;
    let cloud = lab.node("vgw1").is_ok();
    let dns = dns_facts(lab, &app, ue["ip"].as_str().unwrap_or("?"), &nat)?;
    let eth_pdu = ue["pdn_type"] == "ethernet";
    let mut f = Facts::new();
    for (k, v) in [
        (
            "ue_ip",
            ue["ip"]
                .as_str()
                .context("the phone has no address")?
                .to_string(),
        ),
        ("imsi", ue["imsi"].as_str().unwrap_or("?").to_string()),
        ("server", endpoint_part("remote", true)?),
        ("ue_port", endpoint_part("local", false)?),
        ("ext_ip", ext_ip.to_string()),
        ("ext_port", ext_port.to_string()),
        ("first_router", first_router),
        ("eth_pdu", flag(eth_pdu)),
        ("cloud", flag(cloud)),
    ] {
        f.insert(k.into(), v);
    }
    f.extend(cdn_facts(lab, &nat)?);
    let has_dns = dns.contains_key("dns_ms");
    let via_http = dns.get("httpdns").is_some_and(|v| v == "true");
    f.extend(dns);
    let mut obs = Observed {
        ethernet_tpdu: eth_pdu,
        ..Default::default()
    };
    let mut cross_host = false;
    if cloud {
        // The controller the balancer chose (the backend that served a connection), and the
        // hosts of the balancer and of that controller (the vswitch with a port for each).
        // The backend that holds the order (health checks, the GSLB's among them, make
        // connections to every backend, so "served a connection" does not tell).
        let id = serde_json::from_str::<Value>(oc["body"].as_str().unwrap_or(""))
            .ok()
            .and_then(|b| b["orderId"].as_str().map(str::to_string))
            .context("the controller's answer has no orderId")?;
        let backends = lab.show("lb1", Some("backends"))?;
        let ctl = backends
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["name"].as_str())
            .find(|n| {
                lab.show(n, Some("orders")).ok().is_some_and(|v| {
                    v.as_array().is_some_and(|a| {
                        a.iter()
                            .any(|o| o["orderId"] == id.as_str() || o["id"] == id.as_str())
                    })
                })
            })
            .with_context(|| format!("no backend of the balancer holds order {id}: {backends}"))?
            .to_string();
        let host_of = |vm: &str| -> Result<String> {
            for h in lab.state.nodes.iter().filter(|n| n.role == "vswitch") {
                let vms = lab.show(&h.name, Some("vms"))?;
                if vms
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v["port"] == vm))
                {
                    return Ok(h.name.clone());
                }
            }
            bail!("no host has a port for {vm}")
        };
        let (lb_host, ctl_host) = (host_of("lb1")?, host_of(&ctl)?);
        cross_host = lb_host != ctl_host;
        f.insert("ctl".into(), ctl);
        f.insert("lb_host".into(), lb_host);
        f.insert("ctl_host".into(), ctl_host);
    }
    f.insert("cross_host".into(), flag(cross_host));
    // Stage 10: the controller's RPC calls to the order service, and the order service's to
    // inventory, coupon and its order-store shard.
    let rpc = cloud && lab.node("order").is_ok();
    let mut timings = Vec::new();
    let mut coupon = false;
    if rpc {
        let (db, t, c) = rpc_facts(lab, &oc["body"], &f["ctl"])?;
        f.insert("db".into(), db);
        timings = t;
        coupon = c;
    }
    f.insert("rpc".into(), flag(rpc));
    f.insert("coupon".into(), flag(coupon));

    obs.stages = vec![
        (
            "attach, DNS and the order(s), from ready to the app's answers".into(),
            format!("{:.1} ms", ms(order_time)),
        ),
        (
            "attach (Attach Request to Attach Accept: EPS-AKA, Create Session, bearers)".into(),
            format!("{:.1} ms", ue["attach_ms"].as_f64().unwrap_or(0.0)),
        ),
        (
            "the order: TCP handshake / TLS handshake / request to response".into(),
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                oc["tcp_ms"].as_f64().unwrap_or(0.0),
                oc["tls_ms"].as_f64().unwrap_or(0.0),
                oc["response_ms"][0].as_f64().unwrap_or(0.0)
            ),
        ),
    ];
    if has_dns {
        obs.stages.insert(
            2,
            (
                if via_http {
                    "HTTPDNS: the phone asks GET /d?host=www.shop.example over HTTPS (its resolver cold: root, TLD, the shop's server, the GSLB)"
                } else {
                    "DNS: the phone resolves www.shop.example (ldns cold: root, TLD, the shop's server, the GSLB)"
                }
                .into(),
                format!("{} ms", f["dns_ms"]),
            ),
        );
        if let Some(ms) = f.get("dns2_ms") {
            obs.stages.insert(
                3,
                (
                    "again, for the second order (a hit in the resolver's cache)".into(),
                    format!("{ms} ms"),
                ),
            );
        }
    }
    let pictures = lab.show("ue", Some("pictures")).unwrap_or(Value::Null);
    let md = &mut obs.sections;
    // Stage 5: the product page's pictures, from the CDN.
    if pictures.as_array().is_some_and(|a| !a.is_empty()) {
        pictures_section(md, lab, &pictures)?;
        obs.json.insert("pictures".into(), pictures.clone());
    }
    // Stage 2: the route each router used, both ways (where the lab has routers).
    if let Ok(dst) = f["server"].parse::<std::net::Ipv4Addr>() {
        let there = convergence::path(lab, &f["first_router"], dst)?;
        if there.iter().any(|h| h.source.ends_with("bgp")) {
            convergence::path_table(
                md,
                &format!("\n## Routes that forwarded the order\n\nTowards {dst}:"),
                &there,
            )?;
            let back = match (there.last(), f["ext_ip"].parse::<std::net::Ipv4Addr>()) {
                (Some(last), Ok(ext)) => convergence::path(lab, &last.router, ext)?,
                _ => Vec::new(),
            };
            convergence::path_table(md, &format!("The reply, towards {}:", f["ext_ip"]), &back)?;
            obs.json
                .insert("routes".into(), json!({"there": there, "back": back}));
        }
    }
    if !timings.is_empty() {
        writeln!(
            md,
            "\n## RPC hops (Dubbo 2 / Hessian 2 over our TCP, times as the callers measured them)\n"
        )?;
        writeln!(md, "| call | time |\n|---|---|")?;
        for (call, ms) in &timings {
            writeln!(md, "| {call} | {ms:.2} ms |")?;
        }
    }
    writeln!(
        md,
        "\nThe controller answered {}: `{}`",
        oc["status"],
        oc["body"].as_str().unwrap_or("")
    )?;
    obs.json.insert("order_ms".into(), json!(ms(order_time)));
    obs.json.insert("order".into(), o.clone());
    obs.json.insert(
        "rpc".into(),
        json!(timings
            .iter()
            .map(|(c, ms)| json!({"call": c, "ms": ms}))
            .collect::<Vec<_>>()),
    );
    obs.json.insert(
        "sessions".into(),
        json!({
            "pgw": lab.show("pgw", Some("sessions"))?,
            "sgw": lab.show("sgw", Some("sessions"))?,
            "enb": lab.show("enb", Some("bearers"))?,
        }),
    );
    obs.facts = f;
    Ok(obs)
}

/// The product page (stage 5): how the phone found the CDN's edge (the CNAME chain of section
/// 7), each picture's fetch with what every cache said of it (`Cache-Status`), and the
/// caches' and the origin's counters.
fn pictures_section(md: &mut String, lab: &Client, pictures: &Value) -> Result<()> {
    let list = pictures.as_array().map(Vec::as_slice).unwrap_or(&[]);
    writeln!(md, "\n## The product page: pictures from the CDN\n")?;
    if let Some(d) = list.first().map(|p| &p["result"]["dns"]) {
        let chain: Vec<String> = d["cnames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        writeln!(
            md,
            "The phone resolved the pictures' host through {}: {}; A {} (the edge the CDN's GSLB picked for it).\n",
            d["server"].as_str().unwrap_or("its resolver"),
            if chain.is_empty() { "no CNAME".to_string() } else { chain.join(", ") },
            d["addrs"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
        )?;
    }
    writeln!(
        md,
        "| order | picture | status | octets | Cache-Status (the parent's, then the edge's) | TCP / TLS / response ms |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for p in list {
        let r = &p["result"];
        let ms = |k: &str| r[k].as_f64().map_or("-".to_string(), |v| format!("{v:.1}"));
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} / {} / {} |",
            p["order"],
            p["url"]
                .as_str()
                .unwrap_or("?")
                .rsplit('/')
                .next()
                .unwrap_or("?"),
            r["status"],
            r["size"],
            r["cache_status"]
                .as_str()
                .or(r["error"].as_str())
                .unwrap_or(""),
            ms("tcp_ms"),
            ms("tls_ms"),
            ms("response_ms"),
        )?;
    }
    writeln!(
        md,
        "\n| cache | hits | misses | stored | objects | octets |\n|---|---|---|---|---|---|"
    )?;
    for n in lab.state.nodes.iter().filter(|n| n.role == "cdn") {
        let c = lab.show(&n.name, Some("cache-stats"))?;
        writeln!(
            md,
            "| {} ({}) | {} | {} | {} | {} | {} |",
            n.name,
            c["kind"].as_str().unwrap_or("?"),
            c["hits"],
            c["misses"],
            c["stored"],
            c["objects"],
            c["bytes"]
        )?;
    }
    for n in lab.state.nodes.iter().filter(|n| n.role == "origin") {
        let h = lab.show(&n.name, Some("http"))?;
        writeln!(
            md,
            "\nThe origin ({}) answered {} requests.",
            n.name, h["requests"]
        )?;
    }
    Ok(())
}

/// The NAT's external endpoint for `internal` (ADDRESS:PORT) over `proto`, from its
/// `mappings` table.
fn nat_external<'a>(nat: &'a Value, internal: &str, proto: &str) -> Option<&'a str> {
    nat.as_array()?.iter().find(|m| {
        m["internal"] == internal
            && m["proto"]
                .as_str()
                .is_some_and(|p| p.eq_ignore_ascii_case(proto))
    })?["external"]
        .as_str()
}

/// The product page's first picture (stage 5), if the app has pictures: `cdn`, its path,
/// the edge it came from (`edge_ip`), its ETag and size, and the NAT's mapping of its
/// connection (`pic_ext_port`).
fn cdn_facts(lab: &Client, nat: &Value) -> Result<Facts> {
    let mut f = Facts::new();
    let pictures = lab.show("ue", Some("pictures")).unwrap_or(Value::Null);
    let first = pictures.as_array().and_then(|a| a.first()).cloned();
    let Some(p) = first.filter(|p| p["result"]["ok"] == true) else {
        f.insert("cdn".into(), flag(false));
        return Ok(f);
    };
    let r = &p["result"];
    let url = p["url"].as_str().unwrap_or("");
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
        .context("the picture's URL has no path")?;
    let local = r["local"].as_str().unwrap_or("?");
    let ext = nat_external(nat, local, "tcp")
        .with_context(|| format!("no NAT mapping for the picture's connection from {local}"))?;
    let edge = r["remote"]
        .as_str()
        .and_then(|e| e.split(':').next())
        .unwrap_or("?");
    for (k, v) in [
        ("cdn", "true".to_string()),
        ("pic_path", path),
        ("pic_etag", r["etag"].as_str().unwrap_or("").to_string()),
        ("pic_size", r["size"].to_string()),
        ("edge_ip", edge.to_string()),
        (
            "pic_ext_port",
            ext.rsplit(':').next().unwrap_or("?").to_string(),
        ),
    ] {
        f.insert(k.into(), v);
    }
    Ok(f)
}

/// What the phone's resolutions observed (none if the app's address was pinned): how (`dns`
/// through ldns, or `httpdns`), the server and the phone's port of each, the NAT's mapping of
/// the first, the client subnet the GSLB was given (the NAT's /24, as RFC 7871 advises) and
/// the VIPs it decided for it.
fn dns_facts(lab: &Client, app: &Value, ue_ip: &str, nat: &Value) -> Result<Facts> {
    let mut f = Facts::new();
    let d = &app[0]["dns"];
    let via = d["via"].as_str().unwrap_or("");
    let again = &app[1]["dns"];
    f.insert("dns".into(), flag(via == "ldns"));
    f.insert("httpdns".into(), flag(via == "httpdns"));
    f.insert(
        "dns_again".into(),
        flag(via == "ldns" && again["via"] == "ldns"),
    );
    f.insert(
        "httpdns_again".into(),
        flag(via == "httpdns" && again["via"] == "httpdns"),
    );
    if via.is_empty() {
        return Ok(f);
    }
    let port = d["port"]
        .as_u64()
        .context("the app's resolution has no port")?;
    let internal = format!("{ue_ip}:{port}");
    let proto = if via == "ldns" { "udp" } else { "tcp" };
    let ext = nat_external(nat, &internal, proto)
        .with_context(|| format!("no NAT mapping for the phone's resolution from {internal}"))?;
    let (ext_ip, ext_port) = ext.split_once(':').context("external endpoint")?;
    let ip: std::net::Ipv4Addr = ext_ip.parse().context("the NAT's external address")?;
    let ecs = std::net::Ipv4Addr::from(u32::from(ip) & 0xffff_ff00).to_string();
    let decisions = lab.show("gslb", Some("decisions"))?;
    let vips = decisions
        .as_array()
        .and_then(|a| a.iter().rev().find(|x| x["client"] == ecs.as_str()))
        .and_then(|x| x["vips"].as_array())
        .map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .with_context(|| format!("the GSLB has no decision for {ecs}: {decisions}"))?;
    let server = d["server"].as_str().unwrap_or("?");
    let server = server.split(':').next().unwrap_or(server);
    for (k, v) in [
        ("dns_server", server.to_string()),
        ("dns_port", port.to_string()),
        ("dns_ext_ip", ext_ip.to_string()),
        ("dns_ext_port", ext_port.to_string()),
        ("dns_ecs", ecs),
        (
            "gslb_vip1",
            vips.split(',').next().unwrap_or("").to_string(),
        ),
        ("gslb_vips", vips),
        ("dns_ms", format!("{:.1}", d["ms"].as_f64().unwrap_or(0.0))),
    ] {
        f.insert(k.into(), v);
    }
    if again["via"] == via {
        f.insert("dns2_port".into(), again["port"].to_string());
        f.insert(
            "dns2_ms".into(),
            format!("{:.1}", again["ms"].as_f64().unwrap_or(0.0)),
        );
        // Answered from the cache: the resolver asked no server for it.
        let node = if via == "ldns" { "ldns" } else { "httpdns" };
        let hits = lab.counter(node, "cache_hits")?;
        if hits == 0 {
            bail!("the second resolution was no hit in {node}'s cache");
        }
        f.insert("cache_hits".into(), hits.to_string());
    }
    Ok(f)
}

/// RPC calls and their times (ms).
type Timings = Vec<(String, f64)>;

/// From the controller's answer: the calls' times, whether the order had a coupon; from the
/// programs' tables: the db shard that stored the order (and that the controller `ctl` the
/// balancer chose is the one that placed it).
fn rpc_facts(lab: &Client, body: &Value, ctl: &str) -> Result<(String, Timings, bool)> {
    let body: Value = body
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .context("the controller's answer is not JSON")?;
    let id = body["orderId"].as_str().context("no orderId")?.to_string();
    let timings = body["rpc"]
        .as_array()
        .context("the controller's answer has no rpc timings (is it using the order service?)")?
        .iter()
        .map(|c| {
            (
                c["call"].as_str().unwrap_or("?").to_string(),
                c["ms"].as_f64().unwrap_or(0.0),
            )
        })
        .collect::<Vec<_>>();
    let holds = |node: &str| -> bool {
        lab.show(node, Some("orders"))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|a| {
                a.iter()
                    .any(|o| o["orderId"] == id.as_str() || o["id"] == id.as_str())
            })
    };
    if !holds(ctl) {
        bail!("the balancer chose {ctl}, but it does not list order {id}");
    }
    let db = lab
        .state
        .nodes
        .iter()
        .filter(|n| n.role == "db")
        .map(|n| n.name.clone())
        .find(|n| holds(n))
        .context("no db shard holds the order")?;
    Ok((db, timings, body["order"]["coupon"].is_string()))
}

/// The `ping` traffic: ping, traceroute and a TCP echo from the kernel host `client` to
/// `server` (the journey file's `[let]` names).
fn ping(lab: &Client, plan: &Plan) -> Result<Observed> {
    let name = |k: &str| -> Result<String> {
        plan.lets
            .get(k)
            .cloned()
            .with_context(|| format!("ping traffic: the journey file has no [let] {k}"))
    };
    let (client, server) = (name("client")?, name("server")?);
    let dst = lab.addr(&server, "eth0")?;
    let t = Instant::now();
    let ping = lab.run(&client, &["ping", "-c", "3", "-i", "0.2", "-W", "2", &dst])?;
    let ping_time = t.elapsed();
    let rtt = ping
        .lines()
        .find(|l| l.starts_with("rtt"))
        .unwrap_or("")
        .to_string();
    let trace = lab.run(&client, &["traceroute", "-n", "-q", "1", "-w", "2", &dst])?;
    let echo = lab.run(
        &client,
        &[
            "sh",
            "-c",
            &format!("printf 'order 11.11\\n' | nc -N -w 5 {dst} 7"),
        ],
    )?;
    if echo.trim() != "order 11.11" {
        bail!("TCP echo through the router returned {echo:?}");
    }
    let mut obs = Observed {
        stages: vec![(
            "3 pings, 0.2 s apart".into(),
            format!("{:.1} ms ({rtt})", ms(ping_time)),
        )],
        sections: format!("\n## traceroute\n\n```\n{trace}```\n"),
        ..Default::default()
    };
    obs.json.insert("ping_ms".into(), json!(ms(ping_time)));
    obs.json.insert("rtt".into(), json!(rtt));
    obs.json.insert("traceroute".into(), json!(trace));
    Ok(obs)
}

fn timestamp() -> String {
    let o = Command::new("date").arg("+%Y%m%d-%H%M%S").output();
    o.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "now".into())
}

/// The journey file: `--journey`, else the topology's `journey` key (relative to the
/// topology file).
fn plan_path(opts: &Options, topo: &Topology) -> Result<PathBuf> {
    if let Some(p) = &opts.journey {
        return Ok(p.clone());
    }
    let rel = topo.journey.as_ref().with_context(|| {
        format!(
            "{}: the topology names no journey file (journey = \"journeys/NAME.toml\"), and no --journey was given",
            opts.topology.display()
        )
    })?;
    Ok(opts.topology.parent().unwrap_or(Path::new(".")).join(rel))
}

/// The phone's `app` table in the topology, for an option (`flag`) that changes it.
fn phone_app<'a>(
    topo: &'a mut Topology,
    flag: &str,
) -> Result<&'a mut serde_json::Map<String, Value>> {
    topo.nodes
        .iter_mut()
        .find(|n| n.role == "ue")
        .and_then(|n| n.extra.get_mut("app"))
        .and_then(|a| a.as_object_mut())
        .with_context(|| format!("{flag}: the lab has no phone (role ue) with an app"))
}

/// Runs the journey; returns true when every hop matched.
pub fn run(opts: &Options) -> Result<bool> {
    let mut topo = Topology::load(&opts.topology)?;
    let plan = Plan::load(&plan_path(opts, &topo)?)?;
    if let Some(t) = &opts.pdn_type {
        if !matches!(t.as_str(), "ethernet" | "ipv4") {
            bail!("--pdn-type {t:?}: ethernet or ipv4");
        }
        let ue = topo
            .nodes
            .iter_mut()
            .find(|n| n.role == "ue")
            .context("--pdn-type: the lab has no phone (role ue)")?;
        ue.extra.insert("pdn_type".into(), json!(t));
    }
    if let Some(r) = &opts.resolver {
        if !matches!(r.as_str(), "dns" | "httpdns") {
            bail!("--resolver {r:?}: dns or httpdns");
        }
        phone_app(&mut topo, "--resolver")?.insert("resolver".into(), json!(r));
    }
    if opts.cut.is_some() {
        if plan.traffic != "order" {
            bail!("--cut needs a journey of orders (traffic = \"order\")");
        }
        // The app goes on placing orders (each with its own Idempotency-Key) through the cut.
        let app = phone_app(&mut topo, "--cut")?;
        app.insert("count".into(), json!(1_000_000));
        // Orders only: the product page's pictures (2 MB a round) would fill the captures.
        app.insert("pictures".into(), json!([]));
    }
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
            keylog: Some(out.join("keylog.txt")),
            ..Default::default()
        },
    )?;
    let up_time = t0.elapsed();
    let lab = Client::new(st);
    let result = (|| {
        let mut obs = match plan.traffic.as_str() {
            "order" => order(&lab)?,
            _ => ping(&lab, &plan)?,
        };
        if let Some(seg) = &opts.cut {
            let (md, json) = convergence::cut(&lab, &pcap, seg, &obs.facts)?;
            obs.sections.push_str(&md);
            obs.json.insert("convergence".into(), json);
        }
        report(&lab, &topo, &plan, obs, &out, &pcap, up_time)
    })();
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

/// Resolves the plan's rows with what the traffic observed, checks them against the
/// captures, and writes report.md and report.json.
fn report(
    lab: &Client,
    topo: &Topology,
    plan: &Plan,
    obs: Observed,
    out: &Path,
    pcap: &Path,
    up_time: Duration,
) -> Result<bool> {
    let hops = plan.hops(lab, &obs.facts)?;
    let results = check_hops(pcap, &hops, obs.ethernet_tpdu)?;
    let bad = malformed(pcap, obs.ethernet_tpdu)?;
    let all_ok = results.iter().all(|r| r.ok) && bad.iter().all(|(_, n)| *n == 0);
    let mut md = String::new();
    writeln!(md, "# d11 journey: {}\n", lab.state.name)?;
    writeln!(md, "{}\n", plan.summary(lab, &obs.facts)?)?;
    hop_table(&mut md, &results)?;
    writeln!(md, "\n## Stages\n")?;
    writeln!(md, "| stage | time |\n|---|---|")?;
    writeln!(
        md,
        "| lab up (namespaces, bridges, programs ready) | {:.1} ms |",
        ms(up_time)
    )?;
    for (stage, time) in &obs.stages {
        writeln!(md, "| {stage} | {time} |")?;
    }
    md.push_str(&obs.sections);
    writeln!(
        md,
        "\n## Captures\n\n| segment | malformed frames |\n|---|---|"
    )?;
    for (seg, n) in &bad {
        writeln!(md, "| {seg} | {n} |")?;
    }
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
    let mut stages = serde_json::Map::new();
    stages.insert("lab_up_ms".into(), json!(ms(up_time)));
    let mut report = json!({
        "lab": lab.state.name,
        "ok": all_ok,
        "hops": results,
        "facts": obs.facts,
        "malformed": bad.iter().map(|(s, n)| json!({"segment": s, "frames": n})).collect::<Vec<_>>(),
        "captures": pcap,
    });
    for (k, v) in obs.json {
        if k.ends_with("_ms") || k == "rtt" {
            stages.insert(k, v);
        } else {
            report[k] = v;
        }
    }
    report["stages"] = Value::Object(stages);
    report["summary"] = json!(plan.summary(lab, &obs.facts)?);
    report["map"] = page::lab_map(topo);
    report["events"] = json!(page::events(pcap, topo, &results, |f| tshark(
        f,
        pcap,
        obs.ethernet_tpdu
    )));
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(out.join("index.html"), page::render(&report, None))?;
    print!("{md}");
    println!("\nreport, captures: {}", out.display());
    println!(
        "the journey as a page: {}",
        out.join("index.html").display()
    );
    Ok(all_ok)
}
