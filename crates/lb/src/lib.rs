//! d11-lb: the L4 load balancer, as the seed describes HAProxy in `mode tcp`, on the userspace
//! stack.
//!
//! A client's TCP connection ends here; the balancer opens its own connection to a backend
//! and copies bytes both ways until both sides have closed. It never reads what it copies
//! (TLS stays end to end between the client and the controller).
//!
//! - Balancing (`balance`): `roundrobin`, `leastconn` (fewest active connections, round robin
//!   among equals), `source` (a hash of the client's address over the backends that are up, so
//!   a client keeps its backend while the set does not change).
//! - Health checks: a TCP connect to each backend every `check.interval_ms`, `check.fall`
//!   failures in a row take it out, `check.rise` successes put it back. A backend that refuses
//!   a client's connection is tried no more for that client: the next one is (redispatch).
//! - `drain = [NAME]`: no new connections to these backends; established ones go on.
//! - `proxy_protocol = true`: each backend connection starts with a PROXY protocol v2 header
//!   (the client's address and port, and the address it connected to).
//! - `max_connections`: past it, new clients are closed at once and counted.
//! - `tcp.idle_timeout_s` (30 s unless set): a connection idle that long is closed, as
//!   HAProxy's `timeout client` and `timeout server`.
//!
//! `d11 show NODE backends`, `conns`; counters in `counters`.

use d11_element::{counters, App};
use d11_stack::{Stack, StackConfig, StackElement, TcpStream};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    Roundrobin,
    Leastconn,
    Source,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BackendConfig {
    pub name: String,
    pub address: SocketAddrV4,
}

pub use d11_element::health::CheckConfig;
use d11_element::health::Health;

#[derive(Debug, Clone, Deserialize)]
pub struct LbConfig {
    #[serde(flatten)]
    pub stack: StackConfig,
    /// The port clients connect to.
    pub listen: u16,
    #[serde(default = "default_balance")]
    pub balance: Balance,
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub check: CheckConfig,
    #[serde(default)]
    pub drain: Vec<String>,
    #[serde(default)]
    pub proxy_protocol: bool,
    #[serde(default = "default_max")]
    pub max_connections: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Listening sockets kept ready (the accept backlog).
    #[serde(default = "default_backlog")]
    pub backlog: usize,
}

fn default_balance() -> Balance {
    Balance::Roundrobin
}
fn default_max() -> usize {
    2000
}
fn default_connect_timeout() -> u64 {
    3000
}
fn default_backlog() -> usize {
    64
}

counters! {
    pub struct LbCounters {
        accepted,
        refused_max_connections,
        no_backend,
        backend_connect_failed,
        redispatched,
        completed,
        bytes_to_backends,
        bytes_to_clients,
        checks_ok,
        checks_failed,
        backends_down,
        backends_up,
    }
}

#[derive(Debug, Clone, Serialize)]
struct Backend {
    name: String,
    address: SocketAddrV4,
    #[serde(flatten)]
    health: Health,
    draining: bool,
    active: usize,
    total: u64,
    failed_connects: u64,
    last_check: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Conn {
    client: SocketAddrV4,
    backend: String,
    #[serde(skip)]
    since: Instant,
}

/// Picks a backend among `candidates` (indexes into `backends`, all up and not draining).
fn pick(
    balance: Balance,
    backends: &[Backend],
    candidates: &[usize],
    rr: &mut usize,
    client: Ipv4Addr,
) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    Some(match balance {
        Balance::Roundrobin => {
            *rr = rr.wrapping_add(1);
            candidates[*rr % candidates.len()]
        }
        Balance::Leastconn => {
            let least = candidates.iter().map(|&i| backends[i].active).min()?;
            let tied: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| backends[i].active == least)
                .collect();
            *rr = rr.wrapping_add(1);
            tied[*rr % tied.len()]
        }
        Balance::Source => {
            let h = d11_wire::fnv::fnv1a32(client.octets());
            candidates[h as usize % candidates.len()]
        }
    })
}

/// The PROXY protocol v2 header for a TCP over IPv4 connection (haproxy's
/// doc/proxy-protocol.txt §2.2).
pub fn proxy_v2(client: SocketAddrV4, server: SocketAddrV4) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x11); // AF_INET, STREAM
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&client.ip().octets());
    h.extend_from_slice(&server.ip().octets());
    h.extend_from_slice(&client.port().to_be_bytes());
    h.extend_from_slice(&server.port().to_be_bytes());
    h
}

struct State {
    cfg: LbConfig,
    backends: Vec<Backend>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    rr: usize,
    c: LbCounters,
}

type Shared = Rc<RefCell<State>>;

/// Opens a connection to the backend, within the timeout.
async fn connect(stack: &Stack, to: SocketAddrV4, timeout: Duration) -> Option<TcpStream> {
    match tokio::time::timeout(timeout, stack.connect(to)).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    }
}

/// One client: a backend (trying the others if it refuses), then bytes both ways.
async fn serve(
    stack: Stack,
    st: Shared,
    mut client: TcpStream,
    peer: SocketAddrV4,
    local: SocketAddrV4,
) {
    let (timeout, proxy, tries) = {
        let s = st.borrow();
        (
            Duration::from_millis(s.cfg.connect_timeout_ms),
            s.cfg.proxy_protocol,
            s.backends.len(),
        )
    };
    let mut tried = Vec::new();
    let mut backend = None;
    for _ in 0..tries {
        let choice = {
            let mut s = st.borrow_mut();
            let candidates: Vec<usize> = (0..s.backends.len())
                .filter(|i| {
                    let b = &s.backends[*i];
                    b.health.up && !b.draining && !tried.contains(i)
                })
                .collect();
            let State {
                cfg, backends, rr, ..
            } = &mut *s;
            pick(cfg.balance, backends, &candidates, rr, *peer.ip())
        };
        let Some(i) = choice else { break };
        tried.push(i);
        if tried.len() > 1 {
            st.borrow_mut().c.redispatched += 1;
        }
        let to = st.borrow().backends[i].address;
        match connect(&stack, to, timeout).await {
            Some(s) => {
                backend = Some((i, s));
                break;
            }
            None => {
                let mut s = st.borrow_mut();
                s.c.backend_connect_failed += 1;
                s.backends[i].failed_connects += 1;
            }
        }
    }
    let Some((i, mut server)) = backend else {
        st.borrow_mut().c.no_backend += 1;
        let _ = client.shutdown().await;
        return;
    };
    if proxy && server.write_all(&proxy_v2(peer, local)).await.is_err() {
        return;
    }
    let id = {
        let mut s = st.borrow_mut();
        let id = s.next_conn;
        s.next_conn += 1;
        let b = &mut s.backends[i];
        b.active += 1;
        b.total += 1;
        let name = b.name.clone();
        s.conns.insert(
            id,
            Conn {
                client: peer,
                backend: name,
                since: Instant::now(),
            },
        );
        id
    };
    let r = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    let mut s = st.borrow_mut();
    s.conns.remove(&id);
    s.backends[i].active -= 1;
    s.c.completed += 1;
    if let Ok((up, down)) = r {
        s.c.bytes_to_backends += up;
        s.c.bytes_to_clients += down;
    }
}

/// Health checks of backend `i`, forever.
async fn check(stack: Stack, st: Shared, i: usize) {
    let (cfg, to, name) = {
        let s = st.borrow();
        (
            s.cfg.check.clone(),
            s.backends[i].address,
            s.backends[i].name.clone(),
        )
    };
    loop {
        let ok = connect(&stack, to, cfg.timeout()).await.is_some();
        {
            let mut s = st.borrow_mut();
            if ok {
                s.c.checks_ok += 1;
            } else {
                s.c.checks_failed += 1;
            }
            let b = &mut s.backends[i];
            b.last_check = Some(if ok { "L4OK" } else { "L4CON" }.into());
            if let Some(up) = b.health.record(ok, &cfg) {
                tracing::warn!(backend = %name, up, "backend state changed");
                if up {
                    s.c.backends_up += 1;
                } else {
                    s.c.backends_down += 1;
                }
            }
        }
        tokio::time::sleep(cfg.interval()).await;
    }
}

/// Builds the balancer: listens, checks the backends, serves.
pub fn build(cfg: &LbConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    if cfg.backends.is_empty() {
        anyhow::bail!("a load balancer needs backends");
    }
    for d in &cfg.drain {
        if !cfg.backends.iter().any(|b| &b.name == d) {
            anyhow::bail!("drain names {d:?}, which is not a backend");
        }
    }
    // As HAProxy's `timeout client` / `timeout server`: a connection idle this long (a peer
    // that died, a client that went away) is closed, so it cannot hold its other half forever.
    let mut stack_cfg = cfg.stack.clone();
    if stack_cfg.tcp.idle_timeout_s == 0 {
        stack_cfg.tcp.idle_timeout_s = 30;
    }
    let (stack, element) = Stack::new(&stack_cfg, "lb")?;
    let listener = stack.listen(cfg.listen, cfg.backlog)?;
    let st: Shared = Rc::new(RefCell::new(State {
        cfg: cfg.clone(),
        // Up until checks say otherwise (HAProxy starts servers up too).
        backends: cfg
            .backends
            .iter()
            .map(|b| Backend {
                name: b.name.clone(),
                address: b.address,
                health: Health::new(true),
                draining: cfg.drain.contains(&b.name),
                active: 0,
                total: 0,
                failed_connects: 0,
                last_check: None,
            })
            .collect(),
        conns: BTreeMap::new(),
        next_conn: 0,
        rr: usize::MAX,
        c: LbCounters::default(),
    }));
    let s2 = st.clone();
    stack.add_table("backends", move || {
        let s = s2.borrow();
        json!(s
            .backends
            .iter()
            .map(|b| {
                let mut v = serde_json::to_value(b).unwrap_or(Value::Null);
                v["state"] = json!(match (b.health.up, b.draining) {
                    (true, false) => "up",
                    (true, true) => "draining",
                    (false, _) => "down",
                });
                v
            })
            .collect::<Vec<_>>())
    });
    let s3 = st.clone();
    stack.add_table("conns", move || {
        let s = s3.borrow();
        json!(s
            .conns
            .iter()
            .map(|(id, c)| json!({
                "id": id,
                "client": c.client.to_string(),
                "backend": c.backend,
                "age_s": c.since.elapsed().as_secs(),
            }))
            .collect::<Vec<_>>())
    });
    let s4 = st.clone();
    stack.add_counters(move |out| s4.borrow().c.for_each(out));
    let app: App = Box::pin(async move {
        for i in 0..st.borrow().backends.len() {
            tokio::task::spawn_local(check(stack.clone(), st.clone(), i));
        }
        loop {
            let (conn, peer) = listener.accept().await?;
            let full = {
                let mut s = st.borrow_mut();
                if s.conns.len() >= s.cfg.max_connections {
                    s.c.refused_max_connections += 1;
                    true
                } else {
                    s.c.accepted += 1;
                    false
                }
            };
            if full {
                drop(conn);
                continue;
            }
            let local = conn
                .local_addr()
                .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
            tokio::task::spawn_local(serve(stack.clone(), st.clone(), conn, peer, local));
        }
    });
    Ok((element, Some(app)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(active: &[usize]) -> Vec<Backend> {
        active
            .iter()
            .enumerate()
            .map(|(i, a)| Backend {
                name: format!("b{i}"),
                address: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i as u8), 443),
                health: Health::new(true),
                draining: false,
                active: *a,
                total: 0,
                failed_connects: 0,
                last_check: None,
            })
            .collect()
    }

    #[test]
    fn balancing_picks() {
        let b = backends(&[3, 0, 1]);
        let all = [0, 1, 2];
        let c = Ipv4Addr::new(10, 45, 0, 2);
        let mut rr = usize::MAX;
        let seq: Vec<usize> = (0..6)
            .map(|_| pick(Balance::Roundrobin, &b, &all, &mut rr, c).unwrap())
            .collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
        assert_eq!(pick(Balance::Leastconn, &b, &all, &mut rr, c), Some(1));
        // Source: the same client, the same backend; only the candidates count.
        let s1 = pick(Balance::Source, &b, &all, &mut rr, c);
        assert_eq!(pick(Balance::Source, &b, &all, &mut rr, c), s1);
        assert_eq!(pick(Balance::Source, &b, &[2], &mut rr, c), Some(2));
        assert_eq!(pick(Balance::Roundrobin, &b, &[], &mut rr, c), None);
    }

    #[test]
    fn proxy_v2_header() {
        let h = proxy_v2(
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), 51776),
            SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 443),
        );
        assert_eq!(
            &h[..12],
            b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
        );
        assert_eq!(h.len(), 16 + 12);
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..20], &[198, 51, 100, 10]);
        assert_eq!(&h[24..26], &51776u16.to_be_bytes());
    }
}

#[cfg(test)]
mod sim_tests;
