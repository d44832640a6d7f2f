//! The journey as a page: one self-contained HTML file (`index.html` beside `report.json`)
//! that draws the lab as a map, steps through the order's path hop by hop, shows each hop's
//! headers beside the expected values with the frame's number in its capture, and a sequence
//! diagram of the exchanges with their times.
//!
//! The page is `page.html` with the report embedded as JSON; its script draws everything from
//! that data, fetches nothing, and opens from disk. `d11 lab web` serves the same page for a
//! running lab, and then the page also asks the server for each node's tables (`d11 show`).

use crate::HopResult;
use d11_lab::topology::{Node, Topology};
use d11_lab::tshark::Tshark;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const PAGE: &str = include_str!("page.html");

/// The groups of the map, in the order the seed tells the story: (key, title).
const GROUPS: &[(&str, &str)] = &[
    ("mobile", "The phone and the mobile core"),
    ("carrier", "The carrier"),
    ("transit", "Transit ASes"),
    ("cloud", "The cloud"),
    ("dns", "DNS"),
    ("cdn", "CDN"),
    ("other", "Other nodes"),
];

/// Segments each node has a port on.
fn segments_of(n: &Node) -> BTreeSet<&str> {
    n.ports.iter().map(|p| p.segment.as_str()).collect()
}

/// The map's group of `n` (a key of [`GROUPS`]), a subgroup (a transit router's AS), and for
/// a VM the host whose switch it hangs on.
fn group_of(n: &Node, topo: &Topology) -> (&'static str, Option<String>, Option<String>) {
    let shares = |role: &str| {
        let mine = segments_of(n);
        topo.nodes
            .iter()
            .filter(|o| o.role == role && o.name != n.name)
            .find(|o| segments_of(o).iter().any(|s| mine.contains(s)))
            .map(|o| o.name.clone())
    };
    match n.role.as_str() {
        "ue" | "enb" | "mme" | "hss" | "sgw" | "pgw" => ("mobile", None, None),
        "nat" => ("carrier", None, None),
        "router" => {
            if shares("nat").is_some() {
                ("carrier", None, None)
            } else if shares("vgw").is_some() {
                ("cloud", None, None)
            } else {
                let asn = n.extra.get("bgp").and_then(|b| b.get("asn"));
                let sub = asn.map(|a| format!("AS {a}"));
                ("transit", sub, None)
            }
        }
        "vgw" | "vswitch" => ("cloud", None, None),
        "dns" => ("dns", None, None),
        "cdn" | "origin" => ("cdn", None, None),
        _ => match shares("vswitch") {
            Some(host) => ("cloud", None, Some(host)),
            None => ("other", None, None),
        },
    }
}

/// The lab as the page draws it: groups, nodes with their ports and addresses, segments.
pub fn lab_map(topo: &Topology) -> Value {
    // The phone first in its group, then the core in the order the story meets it.
    let rank = |role: &str| {
        ["ue", "enb", "mme", "hss", "sgw", "pgw"]
            .iter()
            .position(|r| *r == role)
            .unwrap_or(6)
    };
    let mut ordered: Vec<&Node> = topo.nodes.iter().collect();
    ordered.sort_by_key(|n| rank(&n.role));
    let nodes: Vec<Value> = ordered
        .into_iter()
        .map(|n| {
            let (group, sub, host) = group_of(n, topo);
            // Addresses the node answers for besides its ports' (a gateway's VIPs).
            let vips: Vec<&str> = n
                .extra
                .get("vips")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v["vip"].as_str())
                .collect();
            json!({
                "name": n.name,
                "role": n.role,
                "group": group,
                "sub": sub,
                "host": host,
                "vips": vips,
                "ports": n.ports.iter().map(|p| json!({
                    "name": p.name,
                    "segment": p.segment,
                    "addresses": p.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "name": topo.name,
        "groups": GROUPS.iter().map(|(k, t)| json!({"key": k, "title": t})).collect::<Vec<_>>(),
        "segments": topo.segments.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "nodes": nodes,
    })
}

/// Exchanges the hop rows do not show, read from the captures for the sequence diagram: the
/// phone's attach (GTPv2-C Create Session on the MME's segments), and on the phone's segment
/// its DNS questions, TCP handshakes (the SYN), TLS ClientHellos and HTTP requests. Each:
/// segment, frame number, time, what, source and destination addresses. A capture tshark
/// cannot read gives no events (the page has the hops all the same).
pub fn events(
    pcap: &Path,
    topo: &Topology,
    hops: &[HopResult],
    tshark: impl Fn(&Path) -> Tshark,
) -> Vec<Value> {
    let mut wanted: BTreeMap<String, &str> = BTreeMap::new();
    for n in topo.nodes.iter().filter(|n| n.role == "mme") {
        for s in segments_of(n) {
            wanted.insert(
                s.to_string(),
                "gtpv2.message_type == 32 || gtpv2.message_type == 33",
            );
        }
    }
    let phone = topo.nodes.iter().find(|n| n.role == "ue");
    if let Some(seg) = phone
        .and_then(|n| n.ports.first())
        .map(|p| p.segment.clone())
    {
        wanted.insert(
            seg,
            "dns.flags.response == 0 || (tcp.flags.syn == 1 && tcp.flags.ack == 0) || tls.handshake.type == 1 || http.request || http.response",
        );
    }
    let fields = [
        "frame.number",
        "frame.time_epoch",
        "ip.src",
        "ip.dst",
        "_ws.col.Protocol",
        "_ws.col.Info",
    ];
    let mut out = Vec::new();
    for (seg, filter) in wanted {
        let file = pcap.join(format!("{seg}.pcapng"));
        if !file.exists() {
            continue;
        }
        let Ok(rows) = tshark(&file).fields(filter, &fields) else {
            continue;
        };
        for r in rows {
            let Some(time) = r.get(1).and_then(|t| t.parse::<f64>().ok()) else {
                continue;
            };
            // The inner addresses of a tunnelled frame are the last of each list.
            let last = |i: usize| {
                r.get(i)
                    .and_then(|v| v.split(',').next_back())
                    .unwrap_or("")
                    .to_string()
            };
            out.push(json!({
                "segment": seg,
                "frame": r.first().and_then(|f| f.parse::<u64>().ok()),
                "time": time,
                "src": last(2),
                "dst": last(3),
                "protocol": r.get(4).cloned().unwrap_or_default(),
                "info": r.get(5).cloned().unwrap_or_default(),
            }));
        }
    }
    // Only what falls within the hops' time (the app's later orders are many).
    let times: Vec<f64> = hops.iter().filter_map(|h| h.time).collect();
    if let (Some(lo), Some(hi)) = (
        times.iter().copied().reduce(f64::min),
        times.iter().copied().reduce(f64::max),
    ) {
        out.retain(|e| {
            let t = e["time"].as_f64().unwrap_or(0.0);
            (lo - 30.0..=hi).contains(&t)
        });
    }
    out.sort_by(|a, b| {
        let t = |v: &Value| v["time"].as_f64().unwrap_or(0.0);
        t(a).total_cmp(&t(b))
    });
    out.truncate(400);
    out
}

/// The page for `report` (a journey's report.json, or a running lab's map alone). `live`:
/// the page is served by `d11 lab web` and may ask it for nodes' tables.
pub fn render(report: &Value, live: Option<&str>) -> String {
    let mut data = report.clone();
    data["live"] = json!(live);
    // JSON inside a <script> element: "</" would end it, and U+2028/9 are line ends to old
    // parsers; escaping them keeps the JSON the same.
    let json = serde_json::to_string(&data)
        .unwrap_or_else(|_| "{}".into())
        .replace("</", "<\\/")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    let title = html_escape(report["lab"].as_str().unwrap_or("lab"));
    PAGE.replace("@TITLE@", &title).replace("@DATA@", &json)
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// `d11 lab web`: serves the page of the running lab `prefix` on `listen` until killed.
/// `report`: a journey's report.json whose hops the page shows over the live lab.
/// `GET /` is the page; `GET /api/show/NODE` every table of a node, as `d11 show` reads it;
/// `GET /report.json` the page's data. Anything else is refused.
pub fn serve(prefix: &str, listen: &str, report: Option<&Path>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let lab = d11_lab::client::Client::open(prefix)?;
    let topo_path = lab.state.topology.clone().with_context(|| {
        format!("lab {prefix} was brought up without a topology file: nothing to draw")
    })?;
    let topo = Topology::load(&topo_path)?;
    let mut data = match report {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_str::<Value>(&text)
                .with_context(|| format!("{}: not a journey's report.json", p.display()))?
        }
        None => json!({"lab": lab.state.name, "hops": []}),
    };
    data["map"] = lab_map(&topo);
    let page = render(&data, Some("/"));
    let data = serde_json::to_string(&data)?;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!(
        "serving lab {prefix} on http://{} (Ctrl-C stops)",
        listener.local_addr()?
    );
    let lab = std::sync::Arc::new(lab);
    let page = std::sync::Arc::new(page);
    let data = std::sync::Arc::new(data);
    // One thread per connection, at most this many at once (more are closed unanswered).
    const MAX_CONNECTIONS: usize = 32;
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            continue;
        }
        let (lab, page, data, busy) = (lab.clone(), page.clone(), data.clone(), busy.clone());
        std::thread::spawn(move || {
            let _ = answer(conn, &lab, &page, &data);
            busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
    Ok(())
}

/// One HTTP/1.1 exchange (the connection closes after it).
fn answer(
    mut conn: std::net::TcpStream,
    lab: &d11_lab::client::Client,
    page: &str,
    data: &str,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || head.len() + n > 16 * 1024 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, kind, body): (&str, &str, Vec<u8>) = if method.is_empty() || target.is_empty() {
        ("400 Bad Request", "text/plain", b"bad request\n".to_vec())
    } else if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n".to_vec(),
        )
    } else if path == "/" || path == "/index.html" {
        (
            "200 OK",
            "text/html; charset=utf-8",
            page.as_bytes().to_vec(),
        )
    } else if path == "/report.json" {
        ("200 OK", "application/json", data.as_bytes().to_vec())
    } else if let Some(node) = path.strip_prefix("/api/show/") {
        match node_tables(lab, &percent_decode(node)) {
            Ok(v) => ("200 OK", "application/json", v.to_string().into_bytes()),
            Err(e) => (
                "404 Not Found",
                "text/plain",
                format!("{e:#}\n").into_bytes(),
            ),
        }
    } else {
        ("404 Not Found", "text/plain", b"not found\n".to_vec())
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        conn.write_all(&body)?;
    }
    conn.flush()
}

/// Every table of a running node: {table: rows}.
fn node_tables(lab: &d11_lab::client::Client, node: &str) -> anyhow::Result<Value> {
    let list = lab.show(node, None)?;
    let mut out = serde_json::Map::new();
    for t in list["tables"].as_array().into_iter().flatten() {
        if let Some(t) = t.as_str() {
            out.insert(t.to_string(), lab.show(node, Some(t))?);
        }
    }
    Ok(Value::Object(out))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_embedded_whole_and_cannot_end_the_script() {
        let r = json!({"lab": "a<b", "hops": [], "facts": {"x": "</script><script>alert(1)"}});
        let page = render(&r, None);
        assert!(!page.contains("</script><script>alert"));
        assert!(page.contains("<title>d11 journey: a&lt;b</title>"));
        let start = page.find("id=\"data\">").unwrap() + "id=\"data\">".len();
        let end = start + page[start..].find("</script>").unwrap();
        let back: Value = serde_json::from_str(&page[start..end]).unwrap();
        assert_eq!(back["facts"], r["facts"]);
        assert_eq!(back["live"], Value::Null);
        // Nothing on the page is fetched from anywhere.
        for needle in ["src=\"http", "href=\"http", "@import", "url(http", "<link"] {
            assert!(!page.contains(needle), "{needle}");
        }
    }

    #[test]
    fn the_reference_lab_is_grouped_as_the_seed_tells_it() {
        let topo = Topology::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../labs/double11.toml"
        )))
        .unwrap();
        let map = lab_map(&topo);
        let group = |name: &str| {
            let n = map["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["name"] == name)
                .unwrap();
            (
                n["group"].as_str().unwrap().to_string(),
                n["sub"].as_str().map(str::to_string),
                n["host"].as_str().map(str::to_string),
            )
        };
        assert_eq!(group("ue").0, "mobile");
        assert_eq!(group("pgw").0, "mobile");
        assert_eq!(group("nat").0, "carrier");
        assert_eq!(group("a2").0, "carrier");
        assert_eq!(
            group("c1"),
            ("transit".into(), Some("AS 64501".into()), None)
        );
        assert_eq!(group("border").0, "cloud");
        assert_eq!(group("lb1"), ("cloud".into(), None, Some("hosta".into())));
        assert_eq!(group("root-dns").0, "dns");
        assert_eq!(group("cdn-edge").0, "cdn");
    }
}
