//! The journey: bring a lab up with every segment captured, send real traffic through it,
//! read each hop back from the captures (tshark), and compare every field with what the lab's
//! own state says it must be: MACs from `d11 show` and the kernel, addresses from the topology,
//! TTLs from each sender's default minus the routers crossed. Nothing expected is a constant.
//!
//! It runs the mobile lab (`labs/mobile.toml`: the phone's order through the tunnels and the
//! NAT, journey.md hops 1 to 5) by default, or the foundation lab
//! (`labs/two-hosts-router.toml`: ICMP through one router); later stages grow the order's
//! path and reuse [`Hop`], [`check_hops`] and the report.

use anyhow::{bail, Context, Result};
use d11_lab::topology::Topology;
use d11_lab::tshark::Tshark;
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
    /// The phone's PDU session type ("ethernet" or "ipv4"), if not the lab's own.
    pub pdn_type: Option<String>,
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
/// `ethernet_tpdu`: GTP-U T-PDUs are Ethernet frames (an Ethernet PDU session).
pub fn check_hops(pcap_dir: &Path, hops: &[Hop], ethernet_tpdu: bool) -> Result<Vec<HopResult>> {
    let mut out = Vec::new();
    for h in hops {
        let file = pcap_dir.join(format!("{}.pcapng", h.segment));
        let fields: Vec<&str> = h.expect.iter().map(|(f, _)| f.as_str()).collect();
        let rows = tshark(&file, pcap_dir, ethernet_tpdu).fields(&h.filter, &fields)?;
        let first = rows.into_iter().next();
        let found = first.is_some();
        let got: Vec<String> = first.unwrap_or_default();
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
/// captures, so a user can load the same file into Wireshark).
fn tshark(file: &Path, pcap_dir: &Path, ethernet_tpdu: bool) -> Tshark {
    let t = Tshark::read(file)
        .ethernet_tpdu(ethernet_tpdu)
        .keylog(&pcap_dir.join("../keylog.txt"));
    let lua = pcap_dir.join("../dubbo.lua");
    if lua.exists() || std::fs::write(&lua, DUBBO_LUA).is_ok() {
        t.lua(&lua)
    } else {
        t
    }
}

/// Frames tshark marks malformed or with an error-level expert note, per capture file.
fn malformed(pcap_dir: &Path, ethernet_tpdu: bool) -> Result<Vec<(String, usize)>> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(pcap_dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcapng"))
        .collect();
    files.sort();
    for f in files {
        let n = tshark(&f, pcap_dir, ethernet_tpdu).malformed()?.len();
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, n));
    }
    Ok(out)
}

/// A program's table, through its control socket.
fn show(st: &LabState, node: &str, table: &str) -> Result<Value> {
    let sock = st.node(node)?.control.clone().context("not a program")?;
    d11_element::control::query(&sock, Some(table))
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

/// The mobile lab (labs/mobile.toml): the phone attaches and its app places the order over
/// HTTPS; hops 1 to 5 of journey.md (and the lab's last hop to the controller) are read from
/// the captures and compared with what the programs report: MACs, the TEIDs of `d11 show`,
/// the NAT's mapping, TTL one less per router.
fn drive_mobile(
    st: &LabState,
    out: &Path,
    pcap: &Path,
    up_time: std::time::Duration,
) -> Result<bool> {
    let t = Instant::now();
    let deadline = t + std::time::Duration::from_secs(60);
    let app = loop {
        let a = show(st, "ue", "app")?;
        if a.as_array().is_some_and(|a| !a.is_empty()) {
            break a;
        }
        if Instant::now() > deadline {
            bail!(
                "the phone placed no order within 60 s: {}",
                show(st, "ue", "ue")?
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let order_time = t.elapsed();
    let o = &app[0];
    if o["ok"] != true {
        bail!("the app's order failed: {}", o["error"]);
    }
    let ue = show(st, "ue", "ue")?;
    let (pgw, sgw, enb) = (
        show(st, "pgw", "sessions")?,
        show(st, "sgw", "sessions")?,
        show(st, "enb", "bearers")?,
    );
    let nat = show(st, "nat", "mappings")?;
    let teid = |v: &Value, k: &str| -> Result<String> {
        v[0][k]
            .as_u64()
            .map(|t| format!("0x{t:08x}"))
            .with_context(|| format!("no {k} in {v}"))
    };
    let (s1u_up, s5u_up, s1u_down) = (
        teid(&sgw, "s1u_sgw_teid")?,
        teid(&pgw, "s5u_pgw_teid")?,
        teid(&enb, "enb_teid")?,
    );
    let ext = nat[0]["external"].as_str().context("no NAT mapping")?;
    let (ext_ip, ext_port) = ext.split_once(':').context("external endpoint")?;
    let ue_ip = ue["ip"]
        .as_str()
        .context("the phone has no address")?
        .to_string();
    let server = o["outcome"]["remote"]
        .as_str()
        .and_then(|r| r.split_once(':'))
        .map(|(a, _)| a.to_string())
        .context("no server address")?;
    let m = |n: &str, p: &str| program_mac(st, n, p);
    // An Ethernet PDU session carries the phone's frame (to its gateway's MAC) in the tunnels;
    // an IPv4 one the IP packet (the radio frame goes to the eNodeB's MAC).
    let eth_pdu = ue["pdn_type"] == "ethernet";
    let ue_mac = m("ue", "radio")?;
    let gw_mac = if eth_pdu {
        m("pgw", "ues")?
    } else {
        m("enb", "radio")?
    };
    let (enb_epc, sgw_epc, sgw_s5, pgw_s5) = (
        m("enb", "epc")?,
        m("sgw", "epc")?,
        m("sgw", "s5")?,
        m("pgw", "s5")?,
    );
    // The reference lab has the carrier's border router a2 where the mobile lab has r1.
    let cloud = st.node("vgw1").is_ok();
    let first_router = if cloud { "a2" } else { "r1" };
    let (pgw_sgi, nat_sgi, nat_car, r1_car) = (
        m("pgw", "sgi")?,
        m("nat", "sgi")?,
        m("nat", "carrier")?,
        m(first_router, "carrier")?,
    );
    let ttl = program_ttl(st, "ue").unwrap_or(64);
    let both = |a: &str, b: &str| format!("{a},{b}");
    let outer_inner = |a: &str, b: &str| {
        if eth_pdu {
            both(a, b)
        } else {
            a.to_string()
        }
    };
    let post = "http.request.method == \"POST\"";
    let reply = "http.response.code == 201";
    let hops = vec![
        hop(
            "1",
            "radio",
            "ue",
            "enb",
            post,
            vec![
                ("eth.src", ue_mac.clone()),
                ("eth.dst", gw_mac.clone()),
                ("ip.src", ue_ip.clone()),
                ("ip.dst", server.clone()),
                ("tcp.dstport", "443".into()),
            ],
        ),
        hop(
            "2",
            "epc",
            "enb",
            "sgw",
            post,
            vec![
                ("eth.src", outer_inner(&enb_epc, &ue_mac)),
                ("eth.dst", outer_inner(&sgw_epc, &gw_mac)),
                ("ip.src", both("172.16.1.2", &ue_ip)),
                ("ip.dst", both("172.16.1.3", &server)),
                ("udp.dstport", "2152".into()),
                ("gtp.teid", s1u_up),
            ],
        ),
        hop(
            "3",
            "s5",
            "sgw",
            "pgw",
            post,
            vec![
                ("eth.src", outer_inner(&sgw_s5, &ue_mac)),
                ("eth.dst", outer_inner(&pgw_s5, &gw_mac)),
                ("ip.src", both("172.16.5.3", &ue_ip)),
                ("ip.dst", both("172.16.5.4", &server)),
                ("udp.dstport", "2152".into()),
                ("gtp.teid", s5u_up),
            ],
        ),
        hop(
            "4",
            "sgi",
            "pgw",
            "nat",
            post,
            vec![
                ("eth.src", pgw_sgi),
                ("eth.dst", nat_sgi.clone()),
                ("ip.src", ue_ip.clone()),
                ("ip.dst", server.clone()),
                ("ip.ttl", (ttl - 1).to_string()),
            ],
        ),
        hop(
            "5",
            "carrier",
            "nat",
            first_router,
            post,
            vec![
                ("eth.src", nat_car),
                ("eth.dst", r1_car),
                ("ip.src", ext_ip.to_string()),
                ("ip.dst", server.clone()),
                ("tcp.srcport", ext_port.to_string()),
                ("ip.ttl", (ttl - 2).to_string()),
            ],
        ),
        hop(
            "2'",
            "epc",
            "sgw",
            "enb",
            reply,
            vec![
                ("eth.src", outer_inner(&sgw_epc, &gw_mac)),
                ("eth.dst", outer_inner(&enb_epc, &ue_mac)),
                ("ip.src", both("172.16.1.3", &server)),
                ("ip.dst", both("172.16.1.2", &ue_ip)),
                ("gtp.teid", s1u_down),
            ],
        ),
    ];
    let mut hops = hops;
    // The reply's hops go last.
    let replies: Vec<Hop> = hops
        .iter()
        .filter(|h| h.n.ends_with('\''))
        .cloned()
        .collect();
    hops.retain(|h| !h.n.ends_with('\''));
    let mut back = Vec::new();
    if cloud {
        let (fwd, rep) = cloud_hops(st, ext_ip, &server, ttl)?;
        hops.extend(fwd);
        back.extend(rep);
    } else {
        let (r1_dc, ctl_mac) = (m("r1", "dc")?, m("ctl1", "eth0")?);
        hops.push(hop(
            "(lab)",
            "dc",
            "r1",
            "ctl1",
            post,
            vec![
                ("eth.src", r1_dc),
                ("eth.dst", ctl_mac),
                ("ip.src", ext_ip.to_string()),
                ("ip.dst", server.clone()),
                ("ip.ttl", (ttl - 3).to_string()),
            ],
        ));
    }
    // The response from the carrier's side back to the phone: the NAT translates the
    // destination back, the PGW tunnels with the SGW's S5 TEID, the eNodeB hands the radio
    // frame to the phone.
    let ue_port = o["outcome"]["local"]
        .as_str()
        .and_then(|l| l.rsplit_once(':'))
        .map(|(_, p)| p.to_string())
        .context("no local port")?;
    let s5u_down = teid(&pgw, "s5u_sgw_teid")?;
    back.extend([
        hop(
            "5'",
            "carrier",
            first_router,
            "nat",
            reply,
            vec![
                ("eth.src", m(first_router, "carrier")?),
                ("eth.dst", m("nat", "carrier")?),
                ("ip.src", server.clone()),
                ("ip.dst", ext_ip.to_string()),
                ("tcp.dstport", ext_port.to_string()),
            ],
        ),
        hop(
            "4'",
            "sgi",
            "nat",
            "pgw",
            reply,
            vec![
                ("eth.src", nat_sgi.clone()),
                ("eth.dst", m("pgw", "sgi")?),
                ("ip.src", server.clone()),
                ("ip.dst", ue_ip.clone()),
                ("tcp.dstport", ue_port),
            ],
        ),
        hop(
            "3'",
            "s5",
            "pgw",
            "sgw",
            reply,
            vec![
                ("eth.src", outer_inner(&pgw_s5, &gw_mac)),
                ("eth.dst", outer_inner(&sgw_s5, &ue_mac)),
                ("ip.src", both("172.16.5.4", &server)),
                ("ip.dst", both("172.16.5.3", &ue_ip)),
                ("gtp.teid", s5u_down),
            ],
        ),
    ]);
    back.extend(replies);
    back.push(hop(
        "1'",
        "radio",
        "enb",
        "ue",
        reply,
        vec![
            ("eth.src", gw_mac.clone()),
            ("eth.dst", ue_mac.clone()),
            ("ip.src", server.clone()),
            ("ip.dst", ue_ip.clone()),
        ],
    ));
    // Stage 10: the controller's RPC calls to the order service, and the order service's to
    // inventory, coupon and its order-store shard.
    let rpc = if cloud && st.node("order").is_ok() {
        let (h, timings) = rpc_hops(st, &o["outcome"]["body"])?;
        hops.extend(h);
        timings
    } else {
        Vec::new()
    };
    hops.extend(back);
    let results = check_hops(pcap, &hops, eth_pdu)?;
    let bad = malformed(pcap, eth_pdu)?;
    let all_ok = results.iter().all(|r| r.ok) && bad.iter().all(|(_, n)| *n == 0);
    let mut md = String::new();
    writeln!(md, "# d11 journey: {}\n", st.name)?;
    let path = if cloud {
        "the transit routers, the cloud's gateway node (the VIP translated to the balancer, VXLAN into the VPC), the L4 balancer and its own connection to a controller"
    } else {
        "a router"
    };
    writeln!(md, "The phone (IMSI {}) attaches, gets {ue_ip}, and its app sends POST /purchaseOrder over HTTPS to {server}: through the eNodeB, the GTP tunnels (SGW, PGW), the carrier NAT ({ext}) and {path}. Every field is read from the captures (TLS decrypted with the lab's key log) and compared with what the programs report.\n", ue["imsi"].as_str().unwrap_or("?"))?;
    hop_table(&mut md, &results)?;
    writeln!(md, "\n## Stages\n")?;
    writeln!(md, "| stage | time |\n|---|---|")?;
    writeln!(
        md,
        "| lab up (namespaces, bridges, programs ready) | {:.1} ms |",
        up_time.as_secs_f64() * 1e3
    )?;
    writeln!(
        md,
        "| attach and the order, from ready to the app's answer | {:.1} ms |",
        order_time.as_secs_f64() * 1e3
    )?;
    writeln!(
        md,
        "| attach (Attach Request to Attach Accept: EPS-AKA, Create Session, bearers) | {:.1} ms |",
        ue["attach_ms"].as_f64().unwrap_or(0.0)
    )?;
    let oc = &o["outcome"];
    writeln!(md, "| the order: TCP handshake / TLS handshake / request to response | {:.1} / {:.1} / {:.1} ms |",
        oc["tcp_ms"].as_f64().unwrap_or(0.0), oc["tls_ms"].as_f64().unwrap_or(0.0),
        oc["response_ms"][0].as_f64().unwrap_or(0.0))?;
    if !rpc.is_empty() {
        writeln!(
            md,
            "\n## RPC hops (Dubbo 2 / Hessian 2 over our TCP, times as the callers measured them)\n"
        )?;
        writeln!(md, "| call | time |\n|---|---|")?;
        for (call, ms) in &rpc {
            writeln!(md, "| {call} | {ms:.2} ms |")?;
        }
    }
    writeln!(
        md,
        "\nThe controller answered {}: `{}`",
        oc["status"],
        oc["body"].as_str().unwrap_or("")
    )?;
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
    let report = json!({
        "lab": st.name,
        "ok": all_ok,
        "hops": results,
        "stages": { "lab_up_ms": up_time.as_secs_f64() * 1e3, "order_ms": order_time.as_secs_f64() * 1e3 },
        "order": o,
        "rpc": rpc.iter().map(|(c, ms)| json!({"call": c, "ms": ms})).collect::<Vec<_>>(),
        "malformed": bad.iter().map(|(s, n)| json!({"segment": s, "frames": n})).collect::<Vec<_>>(),
        "sessions": { "pgw": pgw, "sgw": sgw, "enb": enb },
        "captures": pcap,
    });
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    print!("{md}");
    println!("\nreport, captures: {}", out.display());
    Ok(all_ok)
}

/// The RPC hops of stage 10, read from the VM ports' captures with the Dubbo dissector:
/// controller -> order (createOrder), order -> inventory (deduct), order -> coupon (redeem,
/// if the order had a coupon), order -> the db shard that holds the order (put). Also the
/// calls' times from the controller's answer.
/// RPC calls and their times (ms).
type Timings = Vec<(String, f64)>;

fn rpc_hops(st: &LabState, body: &Value) -> Result<(Vec<Hop>, Timings)> {
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
    // The controller that placed it, and the shard that stored it.
    let holds = |node: &str| -> bool {
        show(st, node, "orders")
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|a| {
                a.iter()
                    .any(|o| o["orderId"] == id.as_str() || o["id"] == id.as_str())
            })
    };
    let ctl = ["ctl1", "ctl2"]
        .into_iter()
        .find(|c| st.node(c).is_ok() && holds(c))
        .context("no controller lists the order")?;
    let db = st
        .nodes
        .iter()
        .filter(|n| n.role == "db")
        .map(|n| n.name.clone())
        .find(|n| holds(n))
        .context("no db shard holds the order")?;
    let port = |n: &str| -> Result<(String, String)> {
        let p = st
            .node(n)?
            .ports
            .first()
            .with_context(|| format!("{n} has no port"))?;
        let a = p
            .addresses
            .first()
            .and_then(|a| a.split('/').next())
            .with_context(|| format!("{n} has no address"))?;
        Ok((p.segment.clone(), a.to_string()))
    };
    let m = |n: &str| program_mac(st, n, "eth0");
    let (ctl_seg, order_seg) = (port(ctl)?.0, port("order")?.0);
    let call =
        |n: &str, seg: &str, from: &str, to: &str, method: &str, service: &str| -> Result<Hop> {
            let (from_ip, to_ip) = (port(from)?.1, port(to)?.1);
            Ok(hop(
                n,
                seg,
                from,
                to,
                &format!("dubbo.method == \"{method}\""),
                vec![
                    ("eth.src", m(from)?),
                    ("eth.dst", m(to)?),
                    ("ip.src", from_ip),
                    ("ip.dst", to_ip),
                    ("tcp.dstport", "20880".into()),
                    ("dubbo.service", service.into()),
                ],
            ))
        };
    let mut hops = vec![call(
        "rpc1",
        &ctl_seg,
        ctl,
        "order",
        "createOrder",
        "com.shop.OrderService",
    )?];
    hops.push(call(
        "rpc2",
        &order_seg,
        "order",
        "inventory",
        "deduct",
        "com.shop.InventoryService",
    )?);
    if body["order"]["coupon"].is_string() {
        hops.push(call(
            "rpc3",
            &order_seg,
            "order",
            "coupon",
            "redeem",
            "com.shop.CouponService",
        )?);
    }
    hops.push(call(
        "rpc4",
        &order_seg,
        "order",
        &db,
        "put",
        "com.shop.OrderStore",
    )?);
    Ok((hops, timings))
}

/// A hop to check: its number, segment, ends, the frame's filter, and (field, value) pairs.
fn hop(n: &str, seg: &str, from: &str, to: &str, filter: &str, expect: Vec<(&str, String)>) -> Hop {
    Hop {
        n: n.into(),
        segment: seg.into(),
        from: from.into(),
        to: to.into(),
        filter: filter.into(),
        expect: expect
            .into_iter()
            .map(|(f, v)| (f.to_string(), v))
            .collect(),
    }
}

/// Hops 6 to 14 of journey.md: the transit routers, the cloud's border, the gateway node's
/// VXLAN to the balancer, and the balancer's own connection to the controller it chose.
fn cloud_hops(st: &LabState, ext_ip: &str, vip: &str, ttl: u8) -> Result<(Vec<Hop>, Vec<Hop>)> {
    let m = |n: &str, p: &str| program_mac(st, n, p);
    let post = "http.request.method == \"POST\"";
    let both = |a: &str, b: &str| format!("{a},{b}");
    let (lb_ip, lb_mac) = ("192.168.1.10", m("lb1", "eth0")?);
    // The controller the balancer chose: the backend that served a connection.
    let b = show(st, "lb1", "backends")?;
    let ctl = b
        .as_array()
        .and_then(|a| a.iter().find(|x| x["total"].as_u64().unwrap_or(0) > 0))
        .and_then(|x| x["name"].as_str())
        .context("the balancer served no connection")?
        .to_string();
    let ctl_ip = show(st, "lb1", "backends")?
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == ctl.as_str()).cloned())
        .and_then(|x| {
            x["address"]
                .as_str()
                .map(|a| a.split(':').next().unwrap_or("").to_string())
        })
        .context("backend address")?;
    let ctl_mac = m(&ctl, "eth0")?;
    // Which host the controller is on: the vswitch with a port named after it.
    let host_of = |vm: &str| -> Result<String> {
        for h in ["hosta", "hostb"] {
            let vms = show(st, h, "vms")?;
            if vms
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v["port"] == vm))
            {
                return Ok(h.to_string());
            }
        }
        bail!("no host has a port for {vm}")
    };
    let (lb_host, ctl_host) = (host_of("lb1")?, host_of(&ctl)?);
    let vtep = |h: &str| -> Result<String> {
        let ifs = show(st, h, "interfaces")?;
        ifs.as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == "underlay"))
            .and_then(|i| i["addresses"][0].as_str())
            .map(|a| a.split('/').next().unwrap_or("").to_string())
            .with_context(|| format!("{h} has no underlay address"))
    };
    let (vgw_vtep, lb_vtep, ctl_vtep) = (vtep("vgw1")?, vtep(&lb_host)?, vtep(&ctl_host)?);
    let vpc_mac = m("vgw1", "vpc")?;
    let r = |n: &str, p: &str| m(n, p);
    let mut hops = vec![
        hop(
            "6",
            "x-a2-c1",
            "a2",
            "c1",
            post,
            vec![
                ("eth.src", r("a2", "c1")?),
                ("eth.dst", r("c1", "a2")?),
                ("ip.src", ext_ip.into()),
                ("ip.dst", vip.into()),
                ("ip.ttl", (ttl - 3).to_string()),
            ],
        ),
        hop(
            "7",
            "x-c1-c2",
            "c1",
            "c2",
            post,
            vec![
                ("eth.src", r("c1", "c2")?),
                ("eth.dst", r("c2", "c1")?),
                ("ip.src", ext_ip.into()),
                ("ip.dst", vip.into()),
                ("ip.ttl", (ttl - 4).to_string()),
            ],
        ),
        hop(
            "8",
            "x-c2-br",
            "c2",
            "border",
            post,
            vec![
                ("eth.src", r("c2", "border")?),
                ("eth.dst", r("border", "c2")?),
                ("ip.src", ext_ip.into()),
                ("ip.dst", vip.into()),
                ("ip.ttl", (ttl - 5).to_string()),
            ],
        ),
        hop(
            "9",
            "dc-core",
            "border",
            "vgw1",
            post,
            vec![
                ("eth.src", r("border", "dc")?),
                ("eth.dst", r("vgw1", "external")?),
                ("ip.src", ext_ip.into()),
                ("ip.dst", vip.into()),
                ("ip.ttl", (ttl - 6).to_string()),
            ],
        ),
        hop(
            "10",
            "az1-underlay",
            "vgw1",
            &lb_host,
            &format!("{post} && ip.dst == {lb_ip}"),
            vec![
                ("eth.src", both(&r("vgw1", "underlay")?, &vpc_mac)),
                ("eth.dst", both(&r(&lb_host, "underlay")?, &lb_mac)),
                ("ip.src", both(&vgw_vtep, ext_ip)),
                ("ip.dst", both(&lb_vtep, lb_ip)),
                ("vxlan.vni", "1001".into()),
                ("tcp.dstport", "443".into()),
                ("ip.ttl", format!("64,{}", ttl - 7)),
            ],
        ),
        hop(
            "11",
            "vm-lb1",
            &lb_host,
            "lb1",
            &format!("{post} && ip.dst == {lb_ip}"),
            vec![
                ("eth.src", vpc_mac.clone()),
                ("eth.dst", lb_mac.clone()),
                ("ip.src", ext_ip.into()),
                ("ip.dst", lb_ip.into()),
                ("ip.ttl", (ttl - 7).to_string()),
            ],
        ),
        hop(
            "12",
            "vm-lb1",
            "lb1",
            &lb_host,
            &format!("{post} && ip.src == {lb_ip}"),
            vec![
                ("eth.src", lb_mac.clone()),
                ("eth.dst", ctl_mac.clone()),
                ("ip.src", lb_ip.into()),
                ("ip.dst", ctl_ip.clone()),
                ("tcp.dstport", "443".into()),
            ],
        ),
    ];
    if lb_host != ctl_host {
        hops.push(hop(
            "13",
            "az1-underlay",
            &lb_host,
            &ctl_host,
            &format!("{post} && ip.src == {lb_ip}"),
            vec![
                ("eth.src", both(&r(&lb_host, "underlay")?, &lb_mac)),
                ("eth.dst", both(&r(&ctl_host, "underlay")?, &ctl_mac)),
                ("ip.src", both(&lb_vtep, lb_ip)),
                ("ip.dst", both(&ctl_vtep, &ctl_ip)),
                ("vxlan.vni", "1001".into()),
            ],
        ));
    }
    hops.push(hop(
        "14",
        &format!("vm-{ctl}"),
        &ctl_host,
        &ctl,
        &format!("{post} && ip.src == {lb_ip}"),
        vec![
            ("eth.src", lb_mac.clone()),
            ("eth.dst", ctl_mac),
            ("ip.src", lb_ip.into()),
            ("ip.dst", ctl_ip.clone()),
            ("tcp.dstport", "443".into()),
        ],
    ));
    // The response's way back, as far as the gateway node translates it.
    let reply = "http.response.code == 201";
    let replies = vec![
        hop(
            "14'",
            &format!("vm-{ctl}"),
            &ctl,
            &ctl_host,
            &format!("{reply} && ip.src == {ctl_ip}"),
            vec![
                ("eth.src", m(&ctl, "eth0")?),
                ("eth.dst", lb_mac.clone()),
                ("ip.src", ctl_ip.clone()),
                ("ip.dst", lb_ip.into()),
            ],
        ),
        hop(
            "10'",
            "az1-underlay",
            &lb_host,
            "vgw1",
            &format!("{reply} && ip.src == {lb_ip}"),
            vec![
                ("eth.src", both(&r(&lb_host, "underlay")?, &lb_mac)),
                ("eth.dst", both(&r("vgw1", "underlay")?, &vpc_mac)),
                ("ip.src", both(&lb_vtep, lb_ip)),
                ("ip.dst", both(&vgw_vtep, ext_ip)),
                ("vxlan.vni", "1001".into()),
            ],
        ),
        hop(
            "9'",
            "dc-core",
            "vgw1",
            "border",
            reply,
            vec![
                ("eth.src", r("vgw1", "external")?),
                ("eth.dst", r("border", "dc")?),
                ("ip.src", vip.into()),
                ("ip.dst", ext_ip.into()),
            ],
        ),
    ];
    Ok((hops, replies))
}

fn timestamp() -> String {
    let o = Command::new("date").arg("+%Y%m%d-%H%M%S").output();
    o.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "now".into())
}

/// Runs the journey; returns true when every hop matched.
pub fn run(opts: &Options) -> Result<bool> {
    let mut topo = Topology::load(&opts.topology)?;
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
    let result = match topo.name.as_str() {
        "mobile" | "double11" => drive_mobile(&st, &out, &pcap, up_time),
        _ => drive(&topo, &st, &out, &pcap, up_time),
    };
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
    let results = check_hops(pcap, &hops, false)?;
    let all_ok = results.iter().all(|r| r.ok);

    let mut md = String::new();
    writeln!(md, "# d11 journey: {}\n", st.name)?;
    writeln!(md, "ICMP echo from {client} ({src}) to {server} ({dst}) through {router}; every field read from the captures.\n")?;
    hop_table(&mut md, &results)?;
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
