//! Stage 2 in the report: the route that forwarded the order at each router, and, with
//! `--cut SEGMENT`, the network's convergence when that link fails during a load of orders.
//!
//! The path is walked in the routers' own tables: from the first router, the installed route
//! for the destination (`d11 show NODE routes`), and where BGP chose it, the best path with
//! its AS path, next hop, the neighbour it came from and why it won (`bgp routes`); the next
//! router is the node that owns the next hop.
//!
//! The cut is `d11 lab link SEGMENT down` while the phone's app places orders back to back.
//! What the report shows, each from where it can be known:
//! - when the failure was detected, per router: the BFD session's last Down (its diagnostic
//!   and time) and the BGP session's last error (`d11 show NODE bfd`, `bgp`);
//! - the UPDATEs each router sent, with prefixes withdrawn and announced, between the cut and
//!   the restore: read from every router link's capture;
//! - when the first router's route moved, and the first order frame on the new path (its
//!   capture);
//! - orders lost (failed after retries) or delayed (in flight at the cut, or slower than ten
//!   times the median of the orders before it), from the app's own record;
//! - the restore: when the route came back and the first order frame on the old path again.

use crate::plan::Facts;
use anyhow::{bail, Context, Result};
use d11_lab::client::{wait_until, Client};
use d11_lab::tshark::Tshark;
use ipnet::Ipv4Net;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One router on the path and the route it used.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteHop {
    pub router: String,
    pub prefix: String,
    pub next_hop: Option<String>,
    pub source: String,
    pub port: String,
    /// From BGP's best path, when BGP chose the route.
    pub as_path: Option<String>,
    pub from: Option<String>,
    pub why: Option<String>,
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

/// The node that has `addr` on one of its ports.
fn owner(lab: &Client, addr: Ipv4Addr) -> Option<String> {
    lab.state.nodes.iter().find_map(|n| {
        n.ports
            .iter()
            .flat_map(|p| &p.addresses)
            .any(|a| a.split('/').next() == Some(&addr.to_string()))
            .then(|| n.name.clone())
    })
}

/// The segment whose subnet holds `addr`.
fn segment_of(lab: &Client, addr: Ipv4Addr) -> Option<String> {
    lab.state.nodes.iter().find_map(|n| {
        n.ports.iter().find_map(|p| {
            p.addresses
                .iter()
                .filter_map(|a| a.parse::<Ipv4Net>().ok())
                .any(|net| net.contains(&addr))
                .then(|| p.segment.clone())
        })
    })
}

/// The installed route of `node` for `dst` (longest prefix).
fn fib_route(lab: &Client, node: &str, dst: Ipv4Addr) -> Result<Option<Value>> {
    let routes = lab.show(node, Some("routes"))?;
    Ok(routes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["prefix"]
                .as_str()
                .and_then(|p| p.parse::<Ipv4Net>().ok())
                .is_some_and(|p| p.contains(&dst))
        })
        .max_by_key(|r| {
            r["prefix"]
                .as_str()
                .and_then(|p| p.parse::<Ipv4Net>().ok())
                .map_or(0, |p| p.prefix_len())
        })
        .cloned())
}

/// The next hop `node` forwards `dst` to, if any.
fn next_hop(lab: &Client, node: &str, dst: Ipv4Addr) -> Option<String> {
    fib_route(lab, node, dst)
        .ok()
        .flatten()
        .and_then(|r| r["next_hop"].as_str().map(str::to_string))
}

/// The routers from `first` towards `dst` and the route each used; the walk ends at a node
/// that delivers on its link, that has no routing table, or after 16 routers.
pub fn path(lab: &Client, first: &str, dst: Ipv4Addr) -> Result<Vec<RouteHop>> {
    let mut out = Vec::new();
    let mut node = first.to_string();
    for _ in 0..16 {
        let is_router = lab
            .state
            .nodes
            .iter()
            .any(|n| n.name == node && n.role == "router");
        if !is_router {
            break;
        }
        let Some(r) = fib_route(lab, &node, dst)? else {
            bail!("{node} has no route to {dst}");
        };
        let prefix = r["prefix"].as_str().unwrap_or("?").to_string();
        let source = r["source"].as_str().unwrap_or("?").to_string();
        let nh = r["next_hop"].as_str().map(str::to_string);
        let mut hop = RouteHop {
            router: node.clone(),
            prefix: prefix.clone(),
            next_hop: nh.clone(),
            source: source.clone(),
            port: r["port"].as_str().unwrap_or("?").to_string(),
            as_path: None,
            from: None,
            why: None,
        };
        if source.ends_with("bgp") {
            let bgp = lab.show(&node, Some("bgp-routes"))?;
            if let Some(b) = bgp
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["prefix"] == prefix.as_str() && x["best"] == true)
            {
                hop.as_path = b["as_path"].as_str().map(str::to_string);
                hop.from = b["from"].as_str().map(|f| named(lab, f));
                hop.why = b["why"].as_str().map(str::to_string);
            }
        }
        out.push(hop);
        let Some(next) = nh
            .and_then(|n| n.parse::<Ipv4Addr>().ok())
            .and_then(|a| owner(lab, a))
        else {
            break;
        };
        node = next;
    }
    Ok(out)
}

/// The table of a path's routes.
pub fn path_table(md: &mut String, title: &str, hops: &[RouteHop]) -> Result<()> {
    writeln!(md, "\n{title}\n")?;
    writeln!(
        md,
        "| router | prefix | source | next hop (port) | AS path | from neighbour | best because |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for h in hops {
        writeln!(
            md,
            "| {} | {} | {} | {} ({}) | {} | {} | {} |",
            h.router,
            h.prefix,
            h.source,
            h.next_hop.as_deref().unwrap_or("on link"),
            h.port,
            h.as_path.as_deref().unwrap_or(""),
            h.from.as_deref().unwrap_or(""),
            h.why.as_deref().unwrap_or(""),
        )?;
    }
    Ok(())
}

/// The segments that join two routers (where BGP and BFD run).
fn router_links(lab: &Client) -> Vec<String> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for n in lab.state.nodes.iter().filter(|n| n.role == "router") {
        for p in &n.ports {
            *count.entry(p.segment.as_str()).or_default() += 1;
        }
    }
    count
        .into_iter()
        .filter(|(_, c)| *c >= 2)
        .map(|(s, _)| s.to_string())
        .collect()
}

/// Per router, the UPDATEs it sent in [from, to) (unix ms) on every router link, read from
/// the captures: (UPDATEs, prefixes withdrawn, prefixes announced, first one's time).
fn updates(
    lab: &Client,
    pcap: &Path,
    from: f64,
    to: f64,
) -> Result<BTreeMap<String, (u64, u64, u64, f64)>> {
    let mut out: BTreeMap<String, (u64, u64, u64, f64)> = BTreeMap::new();
    let filter = format!(
        "bgp.type == 2 && frame.time_epoch >= {:.3} && frame.time_epoch < {:.3}",
        from / 1e3,
        to / 1e3
    );
    for seg in router_links(lab) {
        let file = pcap.join(format!("{seg}.pcapng"));
        if !file.exists() {
            continue;
        }
        let rows = Tshark::read_live(&file).fields(
            &filter,
            &[
                "ip.src",
                "frame.time_epoch",
                "bgp.type",
                "bgp.withdrawn_prefix",
                "bgp.nlri_prefix",
            ],
        )?;
        for r in rows {
            let src = r[0].parse::<Ipv4Addr>().ok();
            let name = src
                .and_then(|a| owner(lab, a))
                .unwrap_or_else(|| r[0].clone());
            let t = r[1].parse::<f64>().unwrap_or(0.0) * 1e3;
            let n = |s: &str| s.split(',').filter(|x| !x.is_empty()).count() as u64;
            let e = out.entry(name).or_insert((0, 0, 0, f64::MAX));
            e.0 += r[2].split(',').filter(|x| *x == "2").count() as u64;
            e.1 += n(&r[3]);
            e.2 += n(&r[4]);
            e.3 = e.3.min(t);
        }
    }
    Ok(out)
}

/// The first frame of an order (TCP with data to `server`) on `segment` at or after `after`
/// (unix ms): its time.
fn first_order_frame(pcap: &Path, segment: &str, server: &str, after: f64) -> Result<Option<f64>> {
    let file = pcap.join(format!("{segment}.pcapng"));
    let rows = Tshark::read_live(&file).fields(
        &format!(
            "ip.dst == {server} && tcp.len > 0 && frame.time_epoch >= {:.3}",
            after / 1e3
        ),
        &["frame.time_epoch"],
    )?;
    Ok(rows
        .first()
        .and_then(|r| r[0].parse::<f64>().ok())
        .map(|t| t * 1e3))
}

fn ok_orders(lab: &Client) -> u64 {
    lab.show("ue", Some("app_summary"))
        .ok()
        .and_then(|v| v["ok"].as_u64())
        .unwrap_or(0)
}

/// Waits until the app has `n` more successful orders than now.
fn more_orders(lab: &Client, n: u64, what: &str) -> Result<()> {
    let at = ok_orders(lab);
    wait_until(Duration::from_secs(60), || {
        Ok((ok_orders(lab) >= at + n).then_some(()))
    })
    .with_context(|| format!("fewer than {n} orders {what} within 60 s"))
}

/// Cuts `segment` during the app's load of orders, restores it, and reports (markdown and
/// JSON) what the network did.
pub fn cut(lab: &Client, pcap: &Path, segment: &str, facts: &Facts) -> Result<(String, Value)> {
    if !lab.state.segments.iter().any(|s| s.name == segment) {
        bail!("--cut {segment}: the lab has no such segment");
    }
    let first = facts
        .get("first_router")
        .context("no first router")?
        .clone();
    let server = facts.get("server").context("no server address")?.clone();
    let dst: Ipv4Addr = server.parse().context("the server's address")?;
    let before = next_hop(lab, &first, dst).context("the first router has no next hop")?;
    let old_seg = segment_of(lab, before.parse()?).unwrap_or_default();
    more_orders(lab, 10, "before the cut")?;

    let t_cut = unix_ms();
    d11_lab::link(&lab.state.prefix, segment, false)?;
    let r = (|| {
        let (after, t_moved) = wait_until(Duration::from_secs(30), || {
            Ok(next_hop(lab, &first, dst)
                .filter(|n| *n != before)
                .map(|n| (n, unix_ms())))
        })
        .with_context(|| {
            format!("{first}'s route to {server} did not move within 30 s of the cut")
        })?;
        let during = path(lab, &first, dst)?;
        more_orders(lab, 20, "on the new path")?;
        let detected = detection(lab, t_cut)?;
        let t_restore = unix_ms();
        d11_lab::link(&lab.state.prefix, segment, true)?;
        let t_back = wait_until(Duration::from_secs(60), || {
            Ok((next_hop(lab, &first, dst).as_deref() == Some(before.as_str())).then(unix_ms))
        })
        .with_context(|| format!("{first}'s route did not return within 60 s of the restore"))?;
        more_orders(lab, 20, "after the restore")?;
        // BFD comes back by itself, at a packet a second until Up: waited for, and reported
        // as far as it got if not within 10 s.
        let want = detected.len();
        let restored = wait_until(Duration::from_secs(10), || {
            let r = restored(lab, t_cut, t_restore)?;
            Ok((r.len() >= want).then_some(r))
        })
        .or_else(|_| restored(lab, t_cut, t_restore))?;
        let new_seg = segment_of(lab, after.parse()?).unwrap_or_default();
        Report {
            segment,
            first: &first,
            server: &server,
            before: &before,
            after: &after,
            old_seg: &old_seg,
            new_seg: &new_seg,
            t_cut,
            t_moved,
            t_restore,
            t_back,
            during,
            detected,
            restored,
        }
        .write(lab, pcap)
    })();
    if r.is_err() {
        // Whatever failed, the link is not left cut.
        let _ = d11_lab::link(&lab.state.prefix, segment, true);
    }
    r
}

/// A session seen down: (router, neighbour, BFD diagnostic, ms after the cut, BGP's last
/// error).
type Detected = (String, String, String, f64, String);

/// `addr` with the name of the node that owns it: "c2 (198.18.0.3)".
fn named(lab: &Client, addr: &str) -> String {
    addr.parse::<Ipv4Addr>()
        .ok()
        .and_then(|a| owner(lab, a))
        .map_or(addr.to_string(), |o| format!("{o} ({addr})"))
}

/// Every router's BFD sessions (`d11 show NODE bfd`), each with its router and when it was
/// read (unix ms).
fn bfd_sessions(lab: &Client) -> Vec<(String, Value, f64)> {
    let mut out = Vec::new();
    for n in lab.state.nodes.iter().filter(|n| n.role == "router") {
        let Ok(bfd) = lab.show(&n.name, Some("bfd")) else {
            continue;
        };
        let now = unix_ms();
        for s in bfd.as_array().into_iter().flatten() {
            out.push((n.name.clone(), s.clone(), now));
        }
    }
    out
}

/// Each router's BFD and BGP sessions that went down since `t_cut`: (router, neighbour, BFD
/// diagnostic, ms after the cut, BGP's last error).
fn detection(lab: &Client, t_cut: f64) -> Result<Vec<Detected>> {
    let mut out = Vec::new();
    for (router, s, now) in bfd_sessions(lab) {
        let Some(ago) = s["last_down"]["ago_ms"].as_f64() else {
            continue;
        };
        let at = now - ago - t_cut;
        if at < -1.0 {
            continue;
        }
        let nb = s["neighbour"].as_str().unwrap_or("?");
        let bgp = lab.show(&router, Some("bgp")).unwrap_or(Value::Null);
        let err = bgp
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["neighbour"] == nb)
            .and_then(|b| b["last_error"].as_str())
            .unwrap_or("")
            .to_string();
        let diag = s["last_down"]["diagnostic"]
            .as_str()
            .unwrap_or("")
            .to_string();
        out.push((router, named(lab, nb), diag, at, err));
    }
    Ok(out)
}

/// The rows of an UPDATE table, as JSON.
fn update_rows(ups: &BTreeMap<String, (u64, u64, u64, f64)>, t_cut: f64) -> Vec<Value> {
    ups.iter()
        .map(|(r, (n, w, a, t))| {
            json!({"router": r, "updates": n, "withdrawn": w, "announced": a, "first_ms": t - t_cut})
        })
        .collect()
}

/// Each router's BFD sessions that came Up after `t_restore`: (router, neighbour, ms after
/// `t_cut`).
fn restored(lab: &Client, t_cut: f64, t_restore: f64) -> Result<Vec<(String, String, f64)>> {
    let mut out = Vec::new();
    for (router, s, now) in bfd_sessions(lab) {
        let Some(up) = s["uptime_ms"].as_f64() else {
            continue;
        };
        let at = now - up;
        if at + 1.0 < t_restore {
            continue;
        }
        let nb = s["neighbour"].as_str().unwrap_or("?");
        out.push((router, named(lab, nb), at - t_cut));
    }
    Ok(out)
}

struct Report<'a> {
    segment: &'a str,
    first: &'a str,
    server: &'a str,
    before: &'a str,
    after: &'a str,
    old_seg: &'a str,
    new_seg: &'a str,
    t_cut: f64,
    t_moved: f64,
    t_restore: f64,
    t_back: f64,
    during: Vec<RouteHop>,
    detected: Vec<Detected>,
    /// BFD sessions Up again after the restore: (router, neighbour, ms after the cut).
    restored: Vec<(String, String, f64)>,
}

impl Report<'_> {
    fn write(&self, lab: &Client, pcap: &Path) -> Result<(String, Value)> {
        let rel = |t: f64| t - self.t_cut;
        let mut md = String::new();
        writeln!(
            md,
            "\n## Convergence: {} cut during a load of orders, then restored\n",
            self.segment
        )?;
        writeln!(
            md,
            "Times are milliseconds after the cut (`d11 lab link {} down`), on the host's clock that the captures share.\n",
            self.segment
        )?;
        writeln!(md, "| event | ms |\n|---|---|")?;
        for (router, nb, diag, at, err) in &self.detected {
            writeln!(
                md,
                "| {router}: BFD with {nb} Down ({diag}); BGP: {err} | {at:.0} |"
            )?;
        }
        writeln!(
            md,
            "| {}'s route to {} moved from {} to {} (seen by polling `d11 show`, every 50 ms) | {:.0} |",
            self.first,
            self.server,
            self.before,
            self.after,
            rel(self.t_moved)
        )?;
        let first_new = first_order_frame(pcap, self.new_seg, self.server, self.t_cut)?;
        if let Some(t) = first_new {
            writeln!(
                md,
                "| first order frame on the new path ({}) | {:.0} |",
                self.new_seg,
                rel(t)
            )?;
        }
        writeln!(
            md,
            "| restore (`d11 lab link {} up`) | {:.0} |",
            self.segment,
            rel(self.t_restore)
        )?;
        for (router, nb, at) in &self.restored {
            writeln!(md, "| {router}: BFD with {nb} Up again | {at:.0} |")?;
        }
        writeln!(
            md,
            "| {}'s route back to {} (seen by polling) | {:.0} |",
            self.first,
            self.before,
            rel(self.t_back)
        )?;
        let first_back = first_order_frame(pcap, self.old_seg, self.server, self.t_restore)?;
        if let Some(t) = first_back {
            writeln!(
                md,
                "| first order frame on the old path again ({}) | {:.0} |",
                self.old_seg,
                rel(t)
            )?;
        }
        path_table(
            &mut md,
            &format!("During the cut, the order's way to {}:", self.server),
            &self.during,
        )?;
        let ups = updates(lab, pcap, self.t_cut, self.t_restore)?;
        writeln!(
            md,
            "\nBGP UPDATEs each router sent between the cut and the restore (from the captures of the router links):\n"
        )?;
        writeln!(
            md,
            "| router | UPDATEs | prefixes withdrawn | prefixes announced | first (ms) |\n|---|---|---|---|---|"
        )?;
        for (r, (n, w, a, t)) in &ups {
            writeln!(md, "| {r} | {n} | {w} | {a} | {:.0} |", rel(*t))?;
        }
        let ups_back = updates(lab, pcap, self.t_restore, unix_ms())?;
        writeln!(
            md,
            "\nAnd from the restore on:\n\n| router | UPDATEs | prefixes withdrawn | prefixes announced | first (ms) |\n|---|---|---|---|---|"
        )?;
        for (r, (n, w, a, t)) in &ups_back {
            writeln!(md, "| {r} | {n} | {w} | {a} | {:.0} |", rel(*t))?;
        }
        let orders = self.orders(lab)?;
        writeln!(
            md,
            "\nOrders: {} placed from the cut until the route came back; lost (failed after retries): {}; in flight at the cut: {} (slowest {:.0} ms); slower than ten times the median before the cut ({:.1} ms): {}; acknowledged twice: {}.",
            orders["during"], orders["lost"], orders["in_flight"], orders["in_flight_max_ms"].as_f64().unwrap_or(0.0),
            orders["median_before_ms"].as_f64().unwrap_or(0.0), orders["delayed"], orders["twice"]
        )?;
        let json = json!({
            "segment": self.segment,
            "router": self.first,
            "server": self.server,
            "next_hop_before": self.before,
            "next_hop_during": self.after,
            "detected": self.detected.iter().map(|(r, nb, d, at, e)| json!({
                "router": r, "neighbour": nb, "bfd_diagnostic": d, "ms": at, "bgp_error": e,
            })).collect::<Vec<_>>(),
            "route_moved_ms": rel(self.t_moved),
            "first_order_new_path_ms": first_new.map(rel),
            "restore_ms": rel(self.t_restore),
            "route_back_ms": rel(self.t_back),
            "first_order_old_path_ms": first_back.map(rel),
            "path_during": self.during,
            "updates": update_rows(&ups, self.t_cut),
            "updates_after_restore": update_rows(&ups_back, self.t_cut),
            "restored": self.restored.iter().map(|(r, nb, at)| json!({
                "router": r, "neighbour": nb, "bfd_up_ms": at,
            })).collect::<Vec<_>>(),
            "orders": orders,
        });
        Ok((md, json))
    }

    /// What the app's record says about the orders around the cut.
    fn orders(&self, lab: &Client) -> Result<Value> {
        let app = lab.show("ue", Some("app"))?;
        let all = app.as_array().cloned().unwrap_or_default();
        let start = |o: &Value| o["started_unix_ms"].as_f64().unwrap_or(0.0);
        let took = |o: &Value| o["ms"].as_f64().unwrap_or(0.0);
        let mut before: Vec<f64> = all
            .iter()
            .filter(|o| start(o) + took(o) < self.t_cut && o["ok"] == true)
            .map(took)
            .collect();
        before.sort_by(f64::total_cmp);
        let median = before.get(before.len() / 2).copied().unwrap_or(0.0);
        let in_flight: Vec<&Value> = all
            .iter()
            .filter(|o| start(o) <= self.t_cut && start(o) + took(o) > self.t_cut)
            .collect();
        let during = all
            .iter()
            .filter(|o| start(o) >= self.t_cut && start(o) < self.t_back)
            .count();
        let lost = all
            .iter()
            .filter(|o| start(o) + took(o) >= self.t_cut && o["ok"] != true)
            .count();
        let delayed = all
            .iter()
            .filter(|o| start(o) + took(o) >= self.t_cut && took(o) > 10.0 * median)
            .count();
        let mut ids = std::collections::HashSet::new();
        let mut twice = 0;
        for o in all
            .iter()
            .filter(|o| o["ok"] == true && o["outcome"]["status"] == 201)
        {
            let id = serde_json::from_str::<Value>(o["outcome"]["body"].as_str().unwrap_or(""))
                .ok()
                .and_then(|b| b["orderId"].as_str().map(str::to_string));
            if let Some(id) = id {
                if !ids.insert(id) {
                    twice += 1;
                }
            }
        }
        Ok(json!({
            "total": all.len(),
            "during": during,
            "lost": lost,
            "in_flight": in_flight.len(),
            "in_flight_max_ms": in_flight.iter().map(|o| took(o)).fold(0.0, f64::max),
            "median_before_ms": median,
            "delayed": delayed,
            "twice": twice,
        }))
    }
}
