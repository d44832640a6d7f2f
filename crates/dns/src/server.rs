//! The `d11-dns` program on the userspace stack: UDP and TCP port 53 (RFC 1035 §4.2, TCP
//! messages with their two-octet length, RFC 7766), the logic of [`crate::Authority`].

use crate::gslb::{Gslb, GslbConfig};
use crate::httpdns;
use crate::resolver::{Out, Resolver};
use crate::zone::Zone;
use crate::{Asked, Authority, Transport};
use d11_element::App;
use d11_stack::{Stack, StackConfig, StackElement};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::rc::Rc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// DNS's port.
pub const PORT: u16 = 53;

/// A DNS server's config: the stack, and what it serves.
#[derive(Debug, Clone, Deserialize)]
pub struct DnsConfig {
    #[serde(flatten)]
    pub stack: StackConfig,
    /// What the server is: `authoritative`, `gslb` (authoritative for its zone, the A records
    /// of `gslb.names` from its policy) or `resolver`.
    #[serde(default = "authoritative")]
    pub kind: String,
    /// authoritative: the zone's origin (`.`, `example.`, `shop.example.`).
    #[serde(default)]
    pub zone: Option<String>,
    /// authoritative: its RFC 1035 master file (relative to the topology file).
    #[serde(default)]
    pub zone_file: Option<PathBuf>,
    /// resolver: the root hints, a master file of the root's NS and their addresses.
    #[serde(default)]
    pub root_hints_file: Option<PathBuf>,
    /// resolver: who may ask (prefixes: the carrier's subscribers and hosts); anyone else is
    /// counted (`refused_clients`) and dropped, so it is no open resolver. Without it, anyone.
    #[serde(default)]
    pub clients: Option<Vec<ipnet::Ipv4Net>>,
    /// resolver: zones whose servers are sent EDNS Client Subnet (the GSLB's), RFC 7871.
    #[serde(default)]
    pub ecs_zones: Vec<String>,
    /// resolver, httpdns: QNAME minimisation (RFC 9156), off unless set.
    #[serde(default)]
    pub qname_minimisation: bool,
    /// httpdns: the names it answers (others get empty `ips`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// httpdns: the certificate for HTTPS on 443 (the lab fills it in from `tls.names`);
    /// without it, HTTP on 80 only.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// gslb: the policy (regions, VIPs, client subnets, checks).
    #[serde(default)]
    pub gslb: Option<GslbSection>,
    /// TCP connections served at once.
    #[serde(default = "default_tcp_clients")]
    pub tcp_clients: usize,
}

/// A certificate chain and its key (PEM).
#[derive(Debug, Clone, Deserialize)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub names: Vec<String>,
}

/// The `[gslb]` table of a GSLB node: the policy, and the names it answers (the zone's apex
/// if not given).
#[derive(Debug, Clone, Deserialize)]
pub struct GslbSection {
    #[serde(flatten)]
    pub policy: GslbConfig,
    #[serde(default)]
    pub names: Vec<String>,
}

fn authoritative() -> String {
    "authoritative".into()
}
fn default_tcp_clients() -> usize {
    64
}

/// Builds the server: its stack element and the app that serves UDP and TCP.
pub fn build(cfg: &DnsConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    match cfg.kind.as_str() {
        "authoritative" | "gslb" => build_authoritative(cfg),
        "resolver" => build_resolver(cfg),
        "httpdns" => build_httpdns(cfg),
        k => anyhow::bail!("kind {k:?}: authoritative, gslb, resolver or httpdns"),
    }
}

fn build_authoritative(cfg: &DnsConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let (Some(origin), Some(file)) = (&cfg.zone, &cfg.zone_file) else {
        anyhow::bail!("an authoritative server needs zone and zone_file");
    };
    let zone = Zone::load(file, origin)?;
    let mut authority = Authority::new(vec![zone]);
    match (cfg.kind.as_str(), &cfg.gslb) {
        ("gslb", Some(g)) => {
            let names = if g.names.is_empty() {
                vec![Name::from_ascii(origin)?]
            } else {
                g.names
                    .iter()
                    .map(|n| {
                        Name::from_ascii(n).map_err(|e| anyhow::anyhow!("gslb name {n:?}: {e}"))
                    })
                    .collect::<anyhow::Result<_>>()?
            };
            authority.gslb = Some((Gslb::new(g.policy.clone())?, names));
        }
        ("gslb", None) => anyhow::bail!("a gslb needs a [gslb] table (regions)"),
        (_, Some(_)) => anyhow::bail!("[gslb] is for kind = \"gslb\""),
        _ => {}
    }
    let auth = Rc::new(RefCell::new(authority));
    let (stack, element) = Stack::new(&cfg.stack, "dns")?;
    let a = auth.clone();
    stack.add_table("zones", move || a.borrow().show_zones());
    let a = auth.clone();
    stack.add_counters(move |out| a.borrow().c.for_each(out));
    if auth.borrow().gslb.is_some() {
        let a = auth.clone();
        stack.add_table("decisions", move || {
            a.borrow()
                .gslb
                .as_ref()
                .map(|(g, _)| g.show_decisions(now()))
                .unwrap_or_default()
        });
        let a = auth.clone();
        stack.add_table("health", move || {
            a.borrow()
                .gslb
                .as_ref()
                .map(|(g, _)| g.show_health(now()))
                .unwrap_or_default()
        });
        let a = auth.clone();
        stack.add_counters(move |out| {
            if let Some((g, _)) = &a.borrow().gslb {
                g.c.for_each(out);
            }
        });
    }
    let checks: Vec<Ipv4Addr> = auth
        .borrow()
        .gslb
        .as_ref()
        .map(|(g, _)| g.check_targets())
        .unwrap_or_default();
    let udp = stack.udp_bind(PORT)?;
    let listener = stack.listen(PORT, cfg.tcp_clients)?;
    let a = auth.clone();
    let app: App = Box::pin(async move {
        for vip in checks {
            tokio::task::spawn_local(check(stack.clone(), auth.clone(), vip));
        }
        tokio::task::spawn_local(async move {
            loop {
                let Ok((mut conn, peer)) = listener.accept().await else {
                    continue;
                };
                let a = a.clone();
                tokio::task::spawn_local(async move {
                    // Queries one after another on the connection, each with its length.
                    let mut len = [0u8; 2];
                    while conn.read_exact(&mut len).await.is_ok() {
                        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if conn.read_exact(&mut q).await.is_err() {
                            break;
                        }
                        let asked = Asked {
                            transport: Transport::Tcp,
                            peer: *peer.ip(),
                            now: now(),
                        };
                        let Some(r) = a.borrow_mut().answer(&q, asked) else {
                            continue;
                        };
                        let n = (r.len() as u16).to_be_bytes();
                        if conn.write_all(&n).await.is_err() || conn.write_all(&r).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, from) = udp.recv_from(&mut buf).await?;
            let asked = Asked {
                transport: Transport::Udp,
                peer: *from.ip(),
                now: now(),
            };
            let reply = auth.borrow_mut().answer(&buf[..n], asked);
            if let Some(r) = reply {
                udp.send_to(&r, from).await?;
            }
        }
    });
    Ok((element, Some(app)))
}

/// The GSLB's health checks of `vip`: a TCP connect to its check port, every interval.
async fn check(stack: Stack, auth: Rc<RefCell<Authority>>, vip: Ipv4Addr) {
    let Some((port, cfg)) = auth
        .borrow()
        .gslb
        .as_ref()
        .map(|(g, _)| (g.cfg.check_port, g.cfg.check.clone()))
    else {
        return;
    };
    let to = SocketAddrV4::new(vip, port);
    loop {
        let ok = matches!(
            tokio::time::timeout(cfg.timeout(), stack.connect(to)).await,
            Ok(Ok(_))
        );
        if let Some((g, _)) = auth.borrow_mut().gslb.as_mut() {
            g.record_check(now(), vip, ok);
        }
        tokio::time::sleep(cfg.interval()).await;
    }
}

/// The root hints: the root's NS names and their IPv4 addresses, from a master file.
pub fn parse_hints(text: &str) -> anyhow::Result<Vec<(Name, Ipv4Addr)>> {
    let (_, map) = hickory_proto::serialize::txt::Parser::new(text, None, Some(Name::root()))
        .parse()
        .map_err(|e| anyhow::anyhow!("root hints: {e}"))?;
    let records: Vec<_> = map
        .values()
        .flat_map(|s| s.records_without_rrsigs().cloned().collect::<Vec<_>>())
        .collect();
    let mut out = Vec::new();
    for ns in records
        .iter()
        .filter(|r| r.record_type() == RecordType::NS && r.name.is_root())
    {
        let RData::NS(t) = &ns.data else { continue };
        for a in records.iter().filter(|r| r.name == t.0) {
            if let RData::A(a) = &a.data {
                out.push((t.0.clone(), a.0));
            }
        }
    }
    if out.is_empty() {
        anyhow::bail!("root hints: no root server with an address");
    }
    Ok(out)
}

/// A resolver on `stack` from the config's root hints and ECS zones, its cache and counters
/// in `d11 show`.
fn new_resolver(cfg: &DnsConfig, stack: &Stack) -> anyhow::Result<Rc<RefCell<Resolver>>> {
    let file = cfg
        .root_hints_file
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("a {} needs root_hints_file", cfg.kind))?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read root_hints_file {}: {e}", file.display()))?;
    let hints = parse_hints(&text)?;
    let seed = u64::from(u32::from(stack.address())) ^ std::process::id() as u64 ^ seed_from_time();
    let mut resolver = Resolver::new(hints, seed);
    resolver.ecs_zones = cfg
        .ecs_zones
        .iter()
        .map(|z| Name::from_ascii(z).map_err(|e| anyhow::anyhow!("ecs_zones {z:?}: {e}")))
        .collect::<anyhow::Result<_>>()?;
    resolver.qname_minimisation = cfg.qname_minimisation;
    let r = Rc::new(RefCell::new(resolver));
    let r2 = r.clone();
    stack.add_table("cache", move || r2.borrow().show_cache(now()));
    let r2 = r.clone();
    stack.add_counters(move |out| r2.borrow().c.for_each(out));
    Ok(r)
}

/// The resolver: clients on UDP 53; each upstream query from a socket of its own on a
/// random port (RFC 5452), waiting for the answer from the server asked.
fn build_resolver(cfg: &DnsConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let (stack, element) = Stack::new(&cfg.stack, "dns")?;
    let r = new_resolver(cfg, &stack)?;
    let refused = Rc::new(std::cell::Cell::new(0u64));
    let refused2 = refused.clone();
    stack.add_counters(move |out| out("refused_clients", refused2.get()));
    let allowed = Rc::new(cfg.clients.clone());
    let clients = Rc::new(stack.udp_bind(PORT)?);
    let listener = stack.listen(PORT, cfg.tcp_clients)?;
    // Answers to TCP clients go to their connection (by client and ID), the rest over UDP.
    type Waiting = RefCell<HashMap<(SocketAddrV4, u16), tokio::sync::oneshot::Sender<Vec<u8>>>>;
    let waiting: Rc<Waiting> = Rc::new(RefCell::new(HashMap::new()));
    let (c, w) = (clients.clone(), waiting.clone());
    let sink: Sink = Rc::new(move |to, bytes| {
        let id = bytes
            .get(..2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        if let Some(tx) = w.borrow_mut().remove(&(to, id)) {
            let _ = tx.send(bytes);
            return;
        }
        let c = c.clone();
        tokio::task::spawn_local(async move {
            let _ = c.send_to(&bytes, to).await;
        });
    });
    let may_ask = {
        let (allowed, refused) = (allowed.clone(), refused.clone());
        move |from: &SocketAddrV4| {
            let ok = allowed
                .as_ref()
                .as_ref()
                .is_none_or(|a| a.iter().any(|p| p.contains(from.ip())));
            if !ok {
                refused.set(refused.get() + 1);
            }
            ok
        }
    };
    let may_ask = Rc::new(may_ask);
    let (r2, stack2, sink2, may) = (r.clone(), stack.clone(), sink.clone(), may_ask.clone());
    let tcp = async move {
        loop {
            let Ok((mut conn, peer)) = listener.accept().await else {
                continue;
            };
            if !may(&peer) {
                continue;
            }
            let (r, stack, sink, waiting) =
                (r2.clone(), stack2.clone(), sink2.clone(), waiting.clone());
            tokio::task::spawn_local(async move {
                // Questions one after another on the connection, each with its length.
                let mut len = [0u8; 2];
                while conn.read_exact(&mut len).await.is_ok() {
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if conn.read_exact(&mut q).await.is_err() || q.len() < 12 {
                        break;
                    }
                    let id = u16::from_be_bytes([q[0], q[1]]);
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    waiting.borrow_mut().insert((peer, id), tx);
                    let outs = r.borrow_mut().on_query(now(), peer, &q, Transport::Tcp);
                    dispatch(&r, &stack, &sink, outs);
                    let a = tokio::time::timeout(std::time::Duration::from_secs(10), rx).await;
                    waiting.borrow_mut().remove(&(peer, id));
                    let Ok(Ok(a)) = a else { break };
                    let mut m = (a.len() as u16).to_be_bytes().to_vec();
                    m.extend_from_slice(&a);
                    if conn.write_all(&m).await.is_err() {
                        break;
                    }
                }
            });
        }
    };
    let app: App = Box::pin(async move {
        tokio::task::spawn_local(tcp);
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, from) = clients.recv_from(&mut buf).await?;
            if !may_ask(&from) {
                continue;
            }
            let outs = r
                .borrow_mut()
                .on_query(now(), from, &buf[..n], Transport::Udp);
            dispatch(&r, &stack, &sink, outs);
        }
    });
    Ok((element, Some(app)))
}

/// HTTPDNS's state: its resolver, the requests waiting for an answer, its counters.
struct HttpDns {
    r: Rc<RefCell<Resolver>>,
    stack: Stack,
    sink: Sink,
    hosts: Vec<String>,
    waiting: RefCell<HashMap<SocketAddrV4, tokio::sync::oneshot::Sender<Vec<u8>>>>,
    next: std::cell::Cell<u16>,
    c: RefCell<HttpDnsCounters>,
}

d11_element::counters! {
    pub struct HttpDnsCounters {
        httpdns_requests,
        httpdns_answers,
        httpdns_empty,
        httpdns_bad_requests,
        httpdns_tls_failed,
    }
}

/// HTTPDNS: `GET /d?host=&ip=` on HTTP port 80 and, with a certificate, HTTPS 443; each
/// answer from its own resolver, with the client's subnet as ECS.
fn build_httpdns(cfg: &DnsConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let (stack, element) = Stack::new(&cfg.stack, "dns")?;
    let r = new_resolver(cfg, &stack)?;
    let hosts = cfg
        .hosts
        .iter()
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let tls = match &cfg.tls {
        Some(TlsFiles {
            cert: Some(c),
            key: Some(k),
            ..
        }) => Some(tokio_rustls::TlsAcceptor::from(d11_tls::server_config(
            c, k,
        )?)),
        Some(_) => anyhow::bail!("httpdns: tls needs cert and key (the lab fills them in)"),
        None => None,
    };
    let http = stack.listen(80, cfg.tcp_clients)?;
    let https = match &tls {
        Some(_) => Some(stack.listen(443, cfg.tcp_clients)?),
        None => None,
    };
    let st = Rc::new_cyclic(|me: &std::rc::Weak<HttpDns>| {
        let me = me.clone();
        let sink: Sink = Rc::new(move |to, bytes| {
            if let Some(h) = me.upgrade() {
                if let Some(tx) = h.waiting.borrow_mut().remove(&to) {
                    let _ = tx.send(bytes);
                }
            }
        });
        HttpDns {
            r,
            stack: stack.clone(),
            sink,
            hosts,
            waiting: RefCell::new(HashMap::new()),
            next: std::cell::Cell::new(0),
            c: RefCell::new(HttpDnsCounters::default()),
        }
    });
    let s2 = st.clone();
    stack.add_counters(move |out| s2.c.borrow().for_each(out));
    let app: App = Box::pin(async move {
        if let (Some(l), Some(acceptor)) = (https, tls) {
            let st = st.clone();
            tokio::task::spawn_local(async move {
                loop {
                    let Ok((conn, peer)) = l.accept().await else {
                        continue;
                    };
                    let (st, acceptor) = (st.clone(), acceptor.clone());
                    tokio::task::spawn_local(async move {
                        let hs = tokio::time::timeout(
                            std::time::Duration::from_secs(5),
                            acceptor.accept(conn),
                        )
                        .await;
                        match hs {
                            Ok(Ok(t)) => serve_http(t, *peer.ip(), st).await,
                            _ => st.c.borrow_mut().httpdns_tls_failed += 1,
                        }
                    });
                }
            });
        }
        loop {
            let (conn, peer) = http.accept().await?;
            tokio::task::spawn_local(serve_http(conn, *peer.ip(), st.clone()));
        }
    });
    Ok((element, Some(app)))
}

/// One HTTP/1.1 connection to HTTPDNS (hyper: keep-alive, strict parsing).
async fn serve_http<S>(conn: S, peer: Ipv4Addr, st: Rc<HttpDns>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let st = st.clone();
        async move { Ok::<_, std::convert::Infallible>(handle_httpdns(req, peer, st).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
        .await;
}

fn json_reply(
    status: hyper::StatusCode,
    body: serde_json::Value,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(
        body.to_string(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle_httpdns(
    req: hyper::Request<hyper::body::Incoming>,
    peer: Ipv4Addr,
    st: Rc<HttpDns>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use hyper::StatusCode;
    st.c.borrow_mut().httpdns_requests += 1;
    if req.uri().path() != "/d" {
        st.c.borrow_mut().httpdns_bad_requests += 1;
        return json_reply(
            StatusCode::NOT_FOUND,
            serde_json::json!({"code": "InvalidPath"}),
        );
    }
    if req.method() != hyper::Method::GET {
        st.c.borrow_mut().httpdns_bad_requests += 1;
        return json_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"code": "MethodNotAllowed"}),
        );
    }
    let ask = match httpdns::parse_query(req.uri().query()) {
        Ok(a) => a,
        Err(e) => {
            st.c.borrow_mut().httpdns_bad_requests += 1;
            return json_reply(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"code": "InvalidHost", "message": e}),
            );
        }
    };
    if !st.hosts.contains(&ask.host) {
        st.c.borrow_mut().httpdns_empty += 1;
        return json_reply(StatusCode::OK, httpdns::empty(&ask.host));
    }
    let client = ask.ip.unwrap_or(peer);
    // A key of its own for this request's answer from the resolver.
    let key = loop {
        let n = st.next.get().wrapping_add(1);
        st.next.set(n);
        let k = SocketAddrV4::new(Ipv4Addr::LOCALHOST, n);
        if !st.waiting.borrow().contains_key(&k) {
            break k;
        }
    };
    let Some(q) = httpdns::question(key.port(), &ask.host, client) else {
        st.c.borrow_mut().httpdns_bad_requests += 1;
        return json_reply(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"code": "InvalidHost"}),
        );
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.waiting.borrow_mut().insert(key, tx);
    let outs = st.r.borrow_mut().on_query(now(), key, &q, Transport::Tcp);
    dispatch(&st.r, &st.stack, &st.sink, outs);
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), rx).await;
    st.waiting.borrow_mut().remove(&key);
    let body = match answer {
        Ok(Ok(dns)) => httpdns::answer(&ask.host, &dns, |n| {
            st.r.borrow().origin_ttl(now(), n, RecordType::A, client)
        }),
        _ => httpdns::empty(&ask.host),
    };
    let mut c = st.c.borrow_mut();
    if body["ips"].as_array().is_some_and(|a| a.is_empty()) {
        c.httpdns_empty += 1;
    } else {
        c.httpdns_answers += 1;
    }
    json_reply(StatusCode::OK, body)
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn seed_from_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One question to `server` over TCP, port 53 (RFC 7766: two octets of length, then the
/// message); its answer.
async fn tcp_exchange(stack: &Stack, server: Ipv4Addr, q: &[u8]) -> Option<Vec<u8>> {
    let mut conn = stack.connect(SocketAddrV4::new(server, PORT)).await.ok()?;
    let mut m = (q.len() as u16).to_be_bytes().to_vec();
    m.extend_from_slice(q);
    conn.write_all(&m).await.ok()?;
    let mut len = [0u8; 2];
    conn.read_exact(&mut len).await.ok()?;
    let mut a = vec![0u8; usize::from(u16::from_be_bytes(len))];
    conn.read_exact(&mut a).await.ok()?;
    Some(a)
}

/// Where the resolver's answers to its clients go: a UDP socket (ldns), or the HTTP requests
/// waiting for them (HTTPDNS).
type Sink = Rc<dyn Fn(SocketAddrV4, Vec<u8>)>;

/// Sends what the resolver wants sent.
fn dispatch(r: &Rc<RefCell<Resolver>>, stack: &Stack, sink: &Sink, outs: Vec<Out>) {
    for o in outs {
        match o {
            Out::Client { to, bytes } => sink(to, bytes),
            Out::Server {
                to,
                id,
                bytes,
                tcp: true,
            } => {
                let (r, stack, clients) = (r.clone(), stack.clone(), sink.clone());
                tokio::task::spawn_local(async move {
                    let wait = r.borrow().timeout * 2;
                    let deadline = tokio::time::Instant::now() + wait;
                    let answer =
                        tokio::time::timeout_at(deadline, tcp_exchange(&stack, to, &bytes)).await;
                    let outs = match answer {
                        Ok(Some(a)) => r.borrow_mut().on_response(now(), to, id, &a),
                        // No answer: the resolver's timeout moves on (to the next server).
                        _ => {
                            tokio::time::sleep_until(deadline).await;
                            r.borrow_mut().poll(now())
                        }
                    };
                    dispatch(&r, &stack, &clients, outs);
                });
            }
            Out::Server { to, id, bytes, .. } => {
                let (r, stack, clients) = (r.clone(), stack.clone(), sink.clone());
                tokio::task::spawn_local(async move {
                    let timeout = r.borrow().timeout;
                    // A random source port, another if that one is taken.
                    let sock = loop {
                        let port = 1024 + r.borrow_mut().random_port() % (65535 - 1024);
                        if let Ok(s) = stack.udp_bind(port) {
                            break s;
                        }
                    };
                    let server = SocketAddrV4::new(to, PORT);
                    if sock.send_to(&bytes, server).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; 65535];
                    let deadline = tokio::time::Instant::now() + timeout;
                    loop {
                        match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                            Ok(Ok((n, from))) if from == server => {
                                let outs = r.borrow_mut().on_response(now(), to, id, &buf[..n]);
                                dispatch(&r, &stack, &clients, outs);
                                return;
                            }
                            // From anyone else: not an answer (counted by the resolver).
                            Ok(Ok((n, from))) => {
                                let outs =
                                    r.borrow_mut().on_response(now(), *from.ip(), id, &buf[..n]);
                                dispatch(&r, &stack, &clients, outs);
                            }
                            Ok(Err(_)) => return,
                            Err(_) => {
                                let outs = r.borrow_mut().poll(now());
                                dispatch(&r, &stack, &clients, outs);
                                return;
                            }
                        }
                    }
                });
            }
        }
    }
}
