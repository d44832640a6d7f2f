//! d11-ctl, the shop's controller: HTTPS on the userspace stack, and the order API.
//!
//! TCP is [`d11_stack`] (smoltcp), TLS is rustls over it (tokio-rustls), HTTP/1.1 is hyper 1
//! (maintained, keep-alive, strict parsing, answers oversized headers with 431 itself).
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | 200 `{"status":"ok"}` |
//! | `POST /purchaseOrder` + `Idempotency-Key` + the seed's JSON | 201 with `orderId`; the same key again: 201, the same order, `Idempotent-Replayed: true` |
//! | no `Idempotency-Key` | 400 |
//! | the same key with another order | 422 |
//! | bad JSON or fields | 400, with what is wrong |
//! | body over `max_body` | 413 |
//! | headers over `max_header` | 431 (hyper) |
//! | more than `max_connections` at once | 503, connection closed |
//! | other paths / methods | 404 / 405 |

pub mod fetch;
pub mod orders;
mod rpc_orders;

use bytes::Bytes;
use d11_element::{counters, App};
pub use d11_stack::TcpStream;
use d11_stack::{Stack, StackConfig, StackElement};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use orders::{Created, MemoryOrders, OrderBackend};
use serde::Deserialize;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio::task::spawn_local;

#[derive(Debug, Clone, Deserialize)]
pub struct TlsFiles {
    /// Certificate chain (leaf, then intermediate), PEM. The lab fills it in.
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpLimits {
    /// Request line + headers, octets (hyper's read buffer; at least 8192).
    pub max_header: usize,
    pub max_body: usize,
    pub max_connections: usize,
    /// Listening sockets kept ready (accept backlog).
    pub backlog: usize,
    /// A TLS handshake must finish within this.
    pub handshake_timeout_ms: u64,
    /// Headers of a request must arrive within this.
    pub header_timeout_ms: u64,
    pub max_orders: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_header: 8192,
            max_body: 16 * 1024,
            max_connections: 1024,
            backlog: 32,
            handshake_timeout_ms: 5000,
            header_timeout_ms: 10_000,
            max_orders: 1_000_000,
        }
    }
}

/// The controller's configuration: its node's entry of the topology file.
#[derive(Debug, Clone, Deserialize)]
pub struct CtlConfig {
    #[serde(flatten)]
    pub stack: StackConfig,
    pub tls: TlsFiles,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub http: HttpLimits,
    #[serde(default)]
    pub orders: OrdersConfig,
}

/// Where orders are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OrdersConfig {
    /// Order ids start with this.
    pub id_prefix: String,
    /// A journal (JSON lines) written before each order is acknowledged and read back at start.
    pub journal: Option<PathBuf>,
    /// With a registry (ADDRESS:PORT), orders go to the order service (`d11-order`) by RPC,
    /// balanced over its providers; without, they are kept here.
    pub registry: Option<std::net::SocketAddrV4>,
    pub balance: d11_rpc::cluster::Balance,
    /// Milliseconds for a createOrder call.
    pub timeout_ms: u64,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            id_prefix: "D11-".into(),
            journal: None,
            registry: None,
            balance: d11_rpc::cluster::Balance::default(),
            timeout_ms: 5000,
        }
    }
}

fn default_port() -> u16 {
    443
}

counters! {
    pub struct CtlCounters {
        connections,
        tls_handshakes,
        tls_failed,
        tls_timeouts,
        requests,
        orders_created,
        orders_replayed,
        rejected_400,
        rejected_404,
        rejected_405,
        rejected_413,
        rejected_422,
        rejected_503,
        http_errors,
    }
}

struct State {
    orders: Box<dyn OrderBackend>,
    limits: HttpLimits,
    active: Cell<usize>,
    c: RefCell<CtlCounters>,
}

/// The state, and with an order service the registry follower to run.
fn new_state(
    cfg: &CtlConfig,
    stack: Option<&Stack>,
) -> anyhow::Result<(
    Rc<State>,
    Option<impl std::future::Future<Output = ()> + 'static>,
)> {
    let (orders, follow): (Box<dyn OrderBackend>, _) = match cfg.orders.registry {
        Some(reg) => {
            let Some(stack) = stack else {
                anyhow::bail!("orders.registry: the kernel-TCP mode keeps orders in memory");
            };
            if cfg.orders.journal.is_some() {
                anyhow::bail!("orders: a journal or a registry, not both");
            }
            if !(10..=60_000).contains(&cfg.orders.timeout_ms) {
                anyhow::bail!("orders.timeout_ms: 10 to 60000");
            }
            let r = rpc_orders::RpcOrders::new(
                stack,
                reg,
                cfg.orders.balance,
                Duration::from_millis(cfg.orders.timeout_ms),
            );
            let follow = r.cluster.clone().follow(r.registry.clone());
            (Box::new(r), Some(follow))
        }
        None => {
            let mut orders =
                MemoryOrders::new(cfg.http.max_orders).with_prefix(&cfg.orders.id_prefix);
            if let Some(j) = &cfg.orders.journal {
                orders = orders
                    .with_journal(j)
                    .map_err(|e| anyhow::anyhow!("orders.journal {}: {e}", j.display()))?;
            }
            (Box::new(orders), None)
        }
    };
    let st = Rc::new(State {
        orders,
        limits: cfg.http.clone(),
        active: Cell::new(0),
        c: RefCell::default(),
    });
    Ok((st, follow))
}

/// Builds the controller: the stack, the listener (bound before it returns) and the server.
pub fn build(cfg: &CtlConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let (stack, element) = Stack::new(&cfg.stack, "ctl")?;
    let tls = d11_tls::server_config(&cfg.tls.cert, &cfg.tls.key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = stack.listen(cfg.port, cfg.http.backlog)?;
    let (st, follow) = new_state(cfg, Some(&stack))?;
    let s2 = st.clone();
    stack.add_table("orders", move || json!(s2.orders.list()));
    let s3 = st.clone();
    stack.add_table("http", move || {
        let mut m = serde_json::Map::new();
        s3.c.borrow().for_each(&mut |k, v| {
            m.insert(k.to_string(), json!(v));
        });
        m.insert("active_connections".into(), json!(s3.active.get()));
        serde_json::Value::Object(m)
    });
    let app: App = Box::pin(async move {
        if let Some(f) = follow {
            spawn_local(f);
        }
        loop {
            let (conn, _peer) = listener.accept().await?;
            spawn_local(serve(conn, acceptor.clone(), st.clone()));
        }
    });
    Ok((element, Some(app)))
}

struct Active(Rc<State>);
impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
    }
}

/// The same API on the kernel's TCP (for comparison benchmarks): binds `addr`, prints
/// `READY` on stdout, and serves until killed.
pub fn serve_kernel(cfg: &CtlConfig, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let tls = d11_tls::server_config(&cfg.tls.cert, &cfg.tls.key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (st, _) = new_state(cfg, None)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&rt, async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("READY");
        loop {
            let (conn, _) = listener.accept().await?;
            let _ = conn.set_nodelay(true);
            spawn_local(serve(conn, acceptor.clone(), st.clone()));
        }
    })
}

async fn serve<S>(conn: S, acceptor: tokio_rustls::TlsAcceptor, st: Rc<State>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    st.active.set(st.active.get() + 1);
    let _active = Active(st.clone());
    st.c.borrow_mut().connections += 1;
    let over = st.active.get() > st.limits.max_connections;
    let hs = tokio::time::timeout(
        Duration::from_millis(st.limits.handshake_timeout_ms),
        acceptor.accept(conn),
    )
    .await;
    let tls = match hs {
        Ok(Ok(t)) => t,
        Ok(Err(_)) => {
            // rustls has sent its alert (e.g. decode_error for garbage instead of a ClientHello).
            st.c.borrow_mut().tls_failed += 1;
            return;
        }
        Err(_) => {
            st.c.borrow_mut().tls_timeouts += 1;
            return;
        }
    };
    st.c.borrow_mut().tls_handshakes += 1;
    let s2 = st.clone();
    let svc = hyper::service::service_fn(move |req| handle(req, s2.clone(), over));
    let r = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(st.limits.header_timeout_ms))
        .max_buf_size(st.limits.max_header.max(8192))
        .keep_alive(!over)
        .serve_connection(TokioIo::new(tls), svc)
        .await;
    if r.is_err() {
        st.c.borrow_mut().http_errors += 1;
    }
}

/// The answer to a created (or replayed) order.
fn order_body(o: &orders::Order) -> serde_json::Value {
    let mut b = json!({ "orderId": o.id, "status": "created", "order": o.order });
    if let Some(r) = &o.rpc {
        b["rpc"] = r.clone();
    }
    b
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(st: &State, status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut c = st.c.borrow_mut();
    match status.as_u16() {
        400 => c.rejected_400 += 1,
        404 => c.rejected_404 += 1,
        405 => c.rejected_405 += 1,
        413 => c.rejected_413 += 1,
        422 => c.rejected_422 += 1,
        503 => c.rejected_503 += 1,
        _ => {}
    }
    reply(status, json!({ "error": msg }))
}

async fn handle(
    req: Request<Incoming>,
    st: Rc<State>,
    over: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    st.c.borrow_mut().requests += 1;
    if over {
        let mut r = error(&st, StatusCode::SERVICE_UNAVAILABLE, "too many connections");
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return Ok(r);
    }
    let path = req.uri().path().to_string();
    Ok(match (req.method(), path.as_str()) {
        (&Method::GET, "/health") => reply(StatusCode::OK, json!({ "status": "ok" })),
        (&Method::POST, "/purchaseOrder") => purchase(req, &st).await,
        (_, "/health" | "/purchaseOrder") => {
            error(&st, StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(&st, StatusCode::NOT_FOUND, "no such resource"),
    })
}

async fn purchase(req: Request<Incoming>, st: &State) -> Response<Full<Bytes>> {
    let max = st.limits.max_body;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return error(
            st,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body over {max} octets"),
        );
    }
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return error(
                st,
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body over {max} octets"),
            );
        }
        Err(e) => {
            return error(
                st,
                StatusCode::BAD_REQUEST,
                &format!("cannot read body: {e}"),
            )
        }
    };
    let Some(key) = key.filter(|k| !k.is_empty() && k.len() <= 255) else {
        return error(
            st,
            StatusCode::BAD_REQUEST,
            "Idempotency-Key header required (1-255 characters)",
        );
    };
    let order = match orders::validate(&body) {
        Ok(o) => o,
        Err(e) => return error(st, StatusCode::BAD_REQUEST, &e),
    };
    match st.orders.create(&key, order).await {
        Created::New(o) => {
            st.c.borrow_mut().orders_created += 1;
            let mut r = reply(StatusCode::CREATED, order_body(&o));
            if let Ok(v) = HeaderValue::from_str(&format!("/purchaseOrder/{}", o.id)) {
                r.headers_mut().insert(LOCATION, v);
            }
            r
        }
        Created::Replayed(o) => {
            st.c.borrow_mut().orders_replayed += 1;
            let mut r = reply(StatusCode::CREATED, order_body(&o));
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            r
        }
        Created::KeyReused => error(
            st,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Idempotency-Key already used for another order",
        ),
        Created::Full => error(st, StatusCode::SERVICE_UNAVAILABLE, "order store full"),
        Created::Failed(code, why) => error(
            st,
            StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            &why,
        ),
    }
}
