//! The CDN's programs on the userspace stack: HTTP/1.1 is hyper's (strict parsing; it answers
//! a malformed request with 400 and headers over the limit with 431 itself), TLS rustls's.
//!
//! - [`build_origin`]: object storage ([`crate::origin`]) on port 80 (and 443 with `tls`).
//! - [`build_cache`]: a cache ([`crate::cache`]) in front of its upstream, the edge's being
//!   the parent and the parent's the origin. GET and HEAD are served from the store when it
//!   may, else forwarded (one request upstream per key at a time: the others wait for it and
//!   are served from what it stored), revalidated with the stored validators, or served stale
//!   as RFC 5861 allows. `PURGE /path` from an address in `purge_from` removes a URL's
//!   variants. Every answer carries `Via` and this cache's `Cache-Status` member after its
//!   upstream's. The cache key is the host (lowercase, without port), the path and the query:
//!   no other header is keyed, and none is reflected, so `X-Forwarded-Host` and the like
//!   cannot poison what others get.

use crate::cache::{cache_status, Cache, Lookup, Stored};
use crate::origin::{self, Object, Store};
use bytes::Bytes;
use d11_element::{counters, App};
use d11_stack::{Stack, StackConfig, StackElement, TcpListener};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::spawn_local;

#[derive(Debug, Clone, Deserialize)]
pub struct TlsFiles {
    /// Certificate chain and key, PEM (the lab issues them for the node's `tls.names`).
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_port() -> u16 {
    80
}
fn default_tls_port() -> u16 {
    443
}
fn default_max_object() -> usize {
    16 << 20
}
fn default_max_header() -> usize {
    8192
}

/// What both programs share: where they listen and their limits.
#[derive(Debug, Clone, Deserialize)]
pub struct Listen {
    /// Plain HTTP.
    #[serde(default = "default_port")]
    pub port: u16,
    /// HTTPS, when `tls` is given.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    #[serde(default = "default_tls_port")]
    pub tls_port: u16,
    /// Request line and headers, octets (hyper answers 431 beyond it).
    #[serde(default = "default_max_header")]
    pub max_header: usize,
}

/// A picture the origin makes at start (a PNG of about `size` octets).
#[derive(Debug, Clone, Deserialize)]
pub struct Preload {
    pub path: String,
    pub size: usize,
    #[serde(default)]
    pub cache_control: Option<String>,
}

/// `d11-origin`'s config: its node's entry of the topology.
#[derive(Debug, Clone, Deserialize)]
pub struct OriginConfig {
    #[serde(flatten)]
    pub stack: StackConfig,
    #[serde(flatten)]
    pub listen: Listen,
    /// Where objects are kept (a relative path lives in the lab's run directory); none: in
    /// memory only.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The largest object a PUT may store.
    #[serde(default = "default_max_object")]
    pub max_object: usize,
    /// Pictures made at start (unless an object is already stored at the path).
    #[serde(default)]
    pub pictures: Vec<Preload>,
    /// Who may PUT and DELETE (CIDR blocks).
    #[serde(default)]
    pub writers: Vec<ipnet::Ipv4Net>,
    /// Who may read (CIDR blocks; none listed: anyone). The lab's origin lists its parent.
    #[serde(default)]
    pub readers: Vec<ipnet::Ipv4Net>,
}

fn default_max_bytes() -> usize {
    64 << 20
}
fn default_cache_max_object() -> usize {
    8 << 20
}

/// `d11-cdn`'s config.
#[derive(Debug, Clone, Deserialize)]
pub struct CacheConfig {
    #[serde(flatten)]
    pub stack: StackConfig,
    #[serde(flatten)]
    pub listen: Listen,
    /// "edge" or "parent" (what `d11 show` says; the behaviour is the same).
    pub kind: String,
    /// The upstream, ADDRESS:PORT (plain HTTP).
    pub upstream: SocketAddrV4,
    /// The store's bound, octets (bodies and headers).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// A response larger than this is passed on, not stored.
    #[serde(default = "default_cache_max_object")]
    pub max_object: usize,
    /// Who may PURGE (CIDR blocks).
    #[serde(default)]
    pub purge_from: Vec<ipnet::Ipv4Net>,
    /// Who may ask at all (CIDR blocks; none listed: anyone, as an edge serves the public).
    /// A parent lists its edges.
    #[serde(default)]
    pub clients: Vec<ipnet::Ipv4Net>,
    /// Milliseconds for an upstream exchange.
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_ms: u64,
}

fn default_upstream_timeout() -> u64 {
    5000
}

counters! {
    pub struct HttpCounters {
        connections,
        tls_handshakes,
        tls_failed,
        requests,
        http_errors,
        idle_timeouts,
        answered_2xx,
        answered_3xx,
        answered_4xx,
        answered_5xx,
        upstream_requests,
        upstream_failed,
        collapsed,
        served_stale_while_revalidate,
        served_stale_if_error,
        purge_refused,
        writes_refused,
        clients_refused,
        range_not_satisfiable,
        rejected_framing,
    }
}

/// A handler: request (and the client's address) to response.
type Handler = Rc<
    dyn Fn(
        Request<Incoming>,
        Ipv4Addr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Full<Bytes>>>>>,
>;

/// Serves HTTP (and HTTPS, with `tls`) on `stack` with `handler`; the listeners are bound
/// before this returns.
fn serve(
    stack: &Stack,
    listen: &Listen,
    c: Rc<RefCell<HttpCounters>>,
    handler: Handler,
) -> anyhow::Result<App> {
    // A deep accept pool: an edge meets bursts of clients.
    let plain = stack.listen(listen.port, 256)?;
    let tls = match &listen.tls {
        Some(t) => {
            let cfg = d11_tls::server_config(&t.cert, &t.key)?;
            Some((
                stack.listen(listen.tls_port, 256)?,
                tokio_rustls::TlsAcceptor::from(cfg),
            ))
        }
        None => None,
    };
    let max_header = listen.max_header.max(8192);
    Ok(Box::pin(async move {
        if let Some((l, acceptor)) = tls {
            let (c, h) = (c.clone(), handler.clone());
            spawn_local(async move {
                loop {
                    let Ok((conn, peer)) = l.accept().await else {
                        continue;
                    };
                    let (c, h, acceptor) = (c.clone(), h.clone(), acceptor.clone());
                    spawn_local(async move {
                        c.borrow_mut().connections += 1;
                        let hs =
                            tokio::time::timeout(Duration::from_secs(5), acceptor.accept(conn))
                                .await;
                        match hs {
                            Ok(Ok(t)) => {
                                c.borrow_mut().tls_handshakes += 1;
                                connection(t, *peer.ip(), c, h, max_header).await
                            }
                            _ => c.borrow_mut().tls_failed += 1,
                        }
                    });
                }
            });
        }
        accept_plain(plain, c, handler, max_header).await
    }))
}

async fn accept_plain(
    l: TcpListener,
    c: Rc<RefCell<HttpCounters>>,
    h: Handler,
    max_header: usize,
) -> anyhow::Result<()> {
    loop {
        let (conn, peer) = l.accept().await?;
        c.borrow_mut().connections += 1;
        spawn_local(connection(
            conn,
            *peer.ip(),
            c.clone(),
            h.clone(),
            max_header,
        ));
    }
}

async fn connection<S>(
    io: S,
    peer: Ipv4Addr,
    c: Rc<RefCell<HttpCounters>>,
    h: Handler,
    max_header: usize,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let c2 = c.clone();
    let svc = hyper::service::service_fn(move |req| {
        let (c, h) = (c2.clone(), h.clone());
        async move {
            c.borrow_mut().requests += 1;
            let r = h(req, peer).await;
            let mut cc = c.borrow_mut();
            match r.status().as_u16() {
                200..=299 => cc.answered_2xx += 1,
                300..=399 => cc.answered_3xx += 1,
                400..=499 => cc.answered_4xx += 1,
                _ => cc.answered_5xx += 1,
            }
            Ok::<_, Infallible>(r)
        }
    });
    let r = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(max_header)
        .serve_connection(TokioIo::new(io), svc)
        .await;
    match r {
        Ok(()) => {}
        // A keep-alive connection that stayed idle past the header timeout: closed, no error.
        Err(e) if e.is_timeout() => c.borrow_mut().idle_timeouts += 1,
        Err(_) => c.borrow_mut().http_errors += 1,
    }
}

fn answer(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

fn text(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    answer(status, h, Bytes::from(format!("{msg}\n")))
}

fn stack_table(stack: &Stack, name: &str, f: impl Fn() -> serde_json::Value + 'static) {
    stack.add_table(name, f);
}

/// `d11-origin`: the store, its pictures made, served.
pub fn build_origin(cfg: &OriginConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let (stack, element) = Stack::new(&cfg.stack, "origin")?;
    let mut store = Store::open(cfg.data_dir.as_deref())?;
    let now = SystemTime::now();
    for p in &cfg.pictures {
        if !p.path.starts_with('/') {
            anyhow::bail!("pictures: path {:?} must start with /", p.path);
        }
        if store.get(&p.path).is_none() {
            let o = Object::new(
                Bytes::from(crate::picture::png(&p.path, p.size)),
                "image/png",
                p.cache_control.as_deref(),
                now,
            );
            store
                .put(&p.path, o)
                .map_err(|e| anyhow::anyhow!("pictures: cannot store {}: {e}", p.path))?;
        }
    }
    let store = Rc::new(RefCell::new(store));
    let c = Rc::new(RefCell::new(HttpCounters::default()));
    let s2 = store.clone();
    stack_table(&stack, "objects", move || s2.borrow().list());
    let c2 = c.clone();
    stack_table(&stack, "http", move || counters_json(&c2.borrow()));
    let max_object = cfg.max_object;
    let writers = Rc::new(cfg.writers.clone());
    let readers = Rc::new(cfg.readers.clone());
    let c3 = c.clone();
    let handler: Handler = Rc::new(move |req, peer| {
        let (store, writers, readers, c) =
            (store.clone(), writers.clone(), readers.clone(), c3.clone());
        Box::pin(async move {
            let writes = matches!(*req.method(), Method::PUT | Method::DELETE);
            if !writes && !allowed(&readers, peer) {
                c.borrow_mut().clients_refused += 1;
                return text(StatusCode::FORBIDDEN, "not served here");
            }
            if writes && !writers.iter().any(|n| n.contains(&peer)) {
                c.borrow_mut().writes_refused += 1;
                return text(
                    StatusCode::FORBIDDEN,
                    "PUT and DELETE are not allowed from here",
                );
            }
            origin_handle(req, &store, max_object).await
        })
    });
    let app = serve(&stack, &cfg.listen, c, handler)?;
    Ok((element, Some(app)))
}

/// Whether `peer` is in `list`; an empty list lets anyone in.
fn allowed(list: &[ipnet::Ipv4Net], peer: Ipv4Addr) -> bool {
    list.is_empty() || list.iter().any(|n| n.contains(&peer))
}

fn counters_json(c: &HttpCounters) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    c.for_each(&mut |k, v| {
        m.insert(k.to_string(), json!(v));
    });
    serde_json::Value::Object(m)
}

async fn origin_handle(
    req: Request<Incoming>,
    store: &RefCell<Store>,
    max_object: usize,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match method {
        Method::GET | Method::HEAD => {
            let a = origin::read(store.borrow().get(&path), &method, req.headers());
            answer(a.status, a.headers, a.body)
        }
        Method::PUT => {
            let ct = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_string();
            let cc = req
                .headers()
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let vary = req
                .headers()
                .get(header::VARY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = match Limited::new(req.into_body(), max_object).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("an object is at most {max_object} octets"),
                    )
                }
            };
            let o =
                Object::new(body, &ct, cc.as_deref(), SystemTime::now()).with_vary(vary.as_deref());
            let etag = o.etag.clone();
            match store.borrow_mut().put(&path, o) {
                Ok(new) => {
                    let mut h = HeaderMap::new();
                    if let Ok(v) = HeaderValue::from_str(&etag) {
                        h.insert(header::ETAG, v);
                    }
                    let status = if new {
                        StatusCode::CREATED
                    } else {
                        StatusCode::NO_CONTENT
                    };
                    answer(status, h, Bytes::new())
                }
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot store: {e}"),
                ),
            }
        }
        Method::DELETE => match store.borrow_mut().delete(&path) {
            Ok(true) => answer(StatusCode::NO_CONTENT, HeaderMap::new(), Bytes::new()),
            Ok(false) => text(StatusCode::NOT_FOUND, "no such object"),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot delete: {e}"),
            ),
        },
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD, PUT or DELETE");
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, PUT, DELETE"),
            );
            r
        }
    }
}

/// HTTP/1.1 connections to the upstream, kept for reuse.
struct Upstream {
    stack: Stack,
    addr: SocketAddrV4,
    idle: RefCell<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
    timeout: Duration,
}

impl Upstream {
    async fn connect(
        &self,
    ) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let tcp = tokio::time::timeout(Duration::from_secs(3), self.stack.connect(self.addr))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {}: timed out", self.addr))??;
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        spawn_local(async move {
            let _ = conn.await;
        });
        Ok(s)
    }

    /// One exchange; a pooled connection that turns out closed is replaced once.
    async fn send(
        &self,
        parts: &hyper::http::request::Parts,
    ) -> anyhow::Result<(hyper::http::response::Parts, Bytes)> {
        for attempt in 0..2 {
            let pooled = self.idle.borrow_mut().pop();
            let mut s = match pooled {
                Some(s) if attempt == 0 => s,
                _ => self.connect().await?,
            };
            if s.ready().await.is_err() {
                continue;
            }
            let mut req = Request::new(Full::new(Bytes::new()));
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = parts.uri.clone();
            *req.headers_mut() = parts.headers.clone();
            let r = tokio::time::timeout(self.timeout, async {
                let resp = s.send_request(req).await?;
                let (p, body) = resp.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok::<_, hyper::Error>((p, body))
            })
            .await;
            match r {
                Ok(Ok(x)) => {
                    self.idle.borrow_mut().push(s);
                    return Ok(x);
                }
                Ok(Err(e)) if attempt == 0 => {
                    tracing::debug!(error = %e, "upstream connection closed; again on a new one");
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => anyhow::bail!(
                    "upstream {}: no answer within {:?}",
                    self.addr,
                    self.timeout
                ),
            }
        }
        anyhow::bail!("upstream {}: no connection", self.addr)
    }
}

/// An upstream exchange in flight for a key, which other requests for it wait on.
type Flight = watch::Receiver<bool>;

struct CacheState {
    name: String,
    via: String,
    cache: RefCell<Cache>,
    upstream: Upstream,
    inflight: RefCell<HashMap<String, Flight>>,
    purge_from: Vec<ipnet::Ipv4Net>,
    clients: Vec<ipnet::Ipv4Net>,
    c: Rc<RefCell<HttpCounters>>,
}

/// The hop-by-hop headers (RFC 9110 §7.6.1), never stored or passed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

/// `d11-cdn`: the cache in front of its upstream.
pub fn build_cache(node: &str, cfg: &CacheConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    if !matches!(cfg.kind.as_str(), "edge" | "parent") {
        anyhow::bail!("kind {:?}: edge or parent", cfg.kind);
    }
    if !(10..=60_000).contains(&cfg.upstream_timeout_ms) {
        anyhow::bail!("upstream_timeout_ms: 10 to 60000");
    }
    let (stack, element) = Stack::new(&cfg.stack, "cdn")?;
    let c = Rc::new(RefCell::new(HttpCounters::default()));
    let st = Rc::new(CacheState {
        name: node.to_string(),
        via: format!("1.1 {node} (d11-cdn)"),
        cache: RefCell::new(Cache::new(cfg.max_bytes, cfg.max_object)),
        upstream: Upstream {
            stack: stack.clone(),
            addr: cfg.upstream,
            idle: RefCell::new(Vec::new()),
            timeout: Duration::from_millis(cfg.upstream_timeout_ms),
        },
        inflight: RefCell::new(HashMap::new()),
        purge_from: cfg.purge_from.clone(),
        clients: cfg.clients.clone(),
        c: c.clone(),
    });
    let s2 = st.clone();
    stack_table(&stack, "cache", move || {
        s2.cache.borrow().list(SystemTime::now())
    });
    let s3 = st.clone();
    let kind = cfg.kind.clone();
    let (max_bytes, upstream) = (cfg.max_bytes, cfg.upstream);
    stack_table(&stack, "cache-stats", move || {
        let cache = s3.cache.borrow();
        let mut v = json!(cache.stats);
        v["kind"] = json!(kind);
        v["upstream"] = json!(upstream.to_string());
        v["objects"] = json!(cache.objects());
        v["bytes"] = json!(cache.bytes());
        v["max_bytes"] = json!(max_bytes);
        v
    });
    let c2 = c.clone();
    stack_table(&stack, "http", move || counters_json(&c2.borrow()));
    let handler: Handler = Rc::new(move |req, peer| {
        let st = st.clone();
        Box::pin(async move { cache_handle(req, peer, st).await })
    });
    let app = serve(&stack, &cfg.listen, c, handler)?;
    Ok((element, Some(app)))
}

/// The cache key: host (lowercase, no port), path and query.
fn key_of(req: &hyper::http::request::Parts) -> String {
    let host = req
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(req.uri.host())
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{host}{pq}")
}

async fn cache_handle(
    req: Request<Incoming>,
    peer: Ipv4Addr,
    st: Rc<CacheState>,
) -> Response<Full<Bytes>> {
    if !allowed(&st.clients, peer) {
        st.c.borrow_mut().clients_refused += 1;
        return text(StatusCode::FORBIDDEN, "not served here");
    }
    let (mut parts, _body) = req.into_parts();
    // Request smuggling: a request framed by both Content-Length and Transfer-Encoding (RFC
    // 9112 §6.1 lets a server reject it, and it must close the connection), or a GET or HEAD
    // with a body at all, which a cache of pictures never needs: 400, and the connection
    // closed, so nothing after it on the connection is read as a request.
    let te = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let cl = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim() != "0");
    if te || cl == Some(true) {
        st.c.borrow_mut().rejected_framing += 1;
        let mut r = text(
            StatusCode::BAD_REQUEST,
            "a request with a body (or two framings) is not served here",
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let key = key_of(&parts);
    if parts.method.as_str() == "PURGE" {
        if !st.purge_from.iter().any(|n| n.contains(&peer)) {
            st.c.borrow_mut().purge_refused += 1;
            return text(StatusCode::FORBIDDEN, "PURGE is not allowed from here");
        }
        let n = st.cache.borrow_mut().purge(&key);
        let status = if n > 0 {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        return text(status, &format!("purged {n} of {key}"));
    }
    let head = parts.method == Method::HEAD;
    if !(parts.method == Method::GET || head) {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD or PURGE");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PURGE"));
        return r;
    }
    // The cache works on GET of the whole object; HEAD and Range are answered from it.
    // The client's own conditions are answered here, from the whole response: upstream is
    // asked for the object (or revalidated with the cache's validators).
    parts.method = Method::GET;
    let range = parts.headers.remove(header::RANGE);
    parts.headers.remove(header::IF_RANGE);
    let cond = Conditions {
        none_match: parts.headers.remove(header::IF_NONE_MATCH),
        modified_since: parts.headers.remove(header::IF_MODIFIED_SINCE),
    };
    strip_hop_by_hop(&mut parts.headers);
    let (stored, member) = fetch(&st, &key, &parts).await;
    let mut r = match stored {
        Ok(s) if cond.not_modified(&s) => {
            let mut s = s;
            s.parts.status = StatusCode::NOT_MODIFIED;
            s.body = Bytes::new();
            for h in [header::CONTENT_TYPE, header::CONTENT_RANGE] {
                s.parts.headers.remove(h);
            }
            respond(&st, s, None, true)
        }
        Ok(s) => respond(&st, s, range.as_ref(), head),
        Err(e) => text(StatusCode::BAD_GATEWAY, &format!("upstream: {e}")),
    };
    let cs = cache_status(r.headers().get("cache-status"), &member);
    r.headers_mut().insert("cache-status", cs);
    r
}

/// A client's conditional request headers.
struct Conditions {
    none_match: Option<HeaderValue>,
    modified_since: Option<HeaderValue>,
}

impl Conditions {
    /// RFC 9110 §13.2.2: If-None-Match first; If-Modified-Since only without it.
    fn not_modified(&self, s: &Stored) -> bool {
        if s.parts.status != StatusCode::OK {
            return false;
        }
        let h = &s.parts.headers;
        if let Some(inm) = self.none_match.as_ref().and_then(|v| v.to_str().ok()) {
            return h
                .get(header::ETAG)
                .and_then(|e| e.to_str().ok())
                .is_some_and(|e| origin::etag_matches(inm, e));
        }
        let since = self
            .modified_since
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let last = h
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        matches!((since, last), (Some(s), Some(l)) if l <= s)
    }
}

/// The stored (or fetched) response to the client: Via added, the Range applied, HEAD
/// without its body.
fn respond(
    st: &CacheState,
    s: Stored,
    range: Option<&HeaderValue>,
    head: bool,
) -> Response<Full<Bytes>> {
    let mut h = s.parts.headers;
    strip_hop_by_hop(&mut h);
    let via = match h.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(v) => format!("{v}, {}", st.via),
        None => st.via.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&via) {
        h.insert(header::VIA, v);
    }
    let mut status = s.parts.status;
    let mut body = s.body;
    if status == StatusCode::OK && range.is_some() {
        let len = body.len() as u64;
        match origin::range(range, len) {
            origin::Range::Whole => {}
            origin::Range::Part(a, b) => {
                status = StatusCode::PARTIAL_CONTENT;
                body = body.slice(a as usize..=b as usize);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
            }
            origin::Range::Unsatisfiable => {
                st.c.borrow_mut().range_not_satisfiable += 1;
                status = StatusCode::RANGE_NOT_SATISFIABLE;
                body = Bytes::new();
                h.remove(header::CONTENT_TYPE);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
            }
        }
    }
    h.remove(header::CONTENT_LENGTH);
    if head && status != StatusCode::NOT_MODIFIED {
        if let Ok(v) = HeaderValue::from_str(&body.len().to_string()) {
            h.insert(header::CONTENT_LENGTH, v);
        }
        body = Bytes::new();
    }
    answer(status, h, body)
}

/// The response for `req` and this cache's Cache-Status member: from the store, or from
/// upstream (one request per key at a time).
async fn fetch(
    st: &Rc<CacheState>,
    key: &str,
    req: &hyper::http::request::Parts,
) -> (anyhow::Result<Stored>, String) {
    let name = &st.name;
    let mut waited = false;
    loop {
        let now = SystemTime::now();
        let look = st.cache.borrow_mut().lookup(key, req, now);
        match look {
            Lookup::Fresh { stored, ttl } => {
                let mut m = format!("{name}; hit; ttl={}", ttl.as_secs());
                if waited {
                    m = format!("{name}; fwd=uri-miss; collapsed; ttl={}", ttl.as_secs());
                }
                return (Ok(*stored), m);
            }
            Lookup::Stale(r) => {
                if let Some(s) = r.serve_stale {
                    // Served at once; one revalidation in the background.
                    st.c.borrow_mut().served_stale_while_revalidate += 1;
                    if !st.inflight.borrow().contains_key(key) {
                        let (st2, key2, rq) = (st.clone(), key.to_string(), r.request);
                        let id = r.id;
                        spawn_local(async move {
                            let _ = revalidate(&st2, &key2, id, &rq).await;
                        });
                    }
                    return (Ok(s), format!("{name}; hit; detail=stale-while-revalidate"));
                }
                // (The map's borrow ends here, before any await.)
                let flight = st.inflight.borrow().get(key).cloned();
                if let Some(wait) = flight {
                    await_flight(st, wait).await;
                    waited = true;
                    continue;
                }
                return revalidate(st, key, r.id, &r.request).await;
            }
            Lookup::Miss => {
                if waited {
                    // What the other request brought was not stored: our own request.
                    return miss(st, key, req, false).await;
                }
                // (The map's borrow ends here, before any await.)
                let flight = st.inflight.borrow().get(key).cloned();
                if let Some(wait) = flight {
                    await_flight(st, wait).await;
                    waited = true;
                    continue;
                }
                return miss(st, key, req, true).await;
            }
        }
    }
}

async fn await_flight(st: &CacheState, mut wait: Flight) {
    st.c.borrow_mut().collapsed += 1;
    let _ = wait.wait_for(|done| *done).await;
}

/// Marks `key` in flight until dropped.
struct InFlight<'a> {
    st: &'a CacheState,
    key: String,
    done: watch::Sender<bool>,
}

impl<'a> InFlight<'a> {
    fn start(st: &'a CacheState, key: &str) -> Self {
        let (tx, rx) = watch::channel(false);
        st.inflight.borrow_mut().insert(key.to_string(), rx);
        Self {
            st,
            key: key.to_string(),
            done: tx,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.st.inflight.borrow_mut().remove(&self.key);
        let _ = self.done.send(true);
    }
}

/// The request as it goes upstream: Via added.
fn upstream_request(
    st: &CacheState,
    req: &hyper::http::request::Parts,
) -> hyper::http::request::Parts {
    let mut p = req.clone();
    let via = match p.headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(v) => format!("{v}, {}", st.via),
        None => st.via.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&via) {
        p.headers.insert(header::VIA, v);
    }
    // Origin-form: the path and query only.
    if let Some(pq) = p.uri.path_and_query() {
        if let Ok(u) = pq.as_str().parse() {
            p.uri = u;
        }
    }
    p
}

async fn miss(
    st: &CacheState,
    key: &str,
    req: &hyper::http::request::Parts,
    lead: bool,
) -> (anyhow::Result<Stored>, String) {
    let name = &st.name;
    let _flight = lead.then(|| InFlight::start(st, key));
    st.c.borrow_mut().upstream_requests += 1;
    match st.upstream.send(&upstream_request(st, req)).await {
        Ok((parts, body)) => {
            let status = parts.status.as_u16();
            let s = Stored { parts, body };
            let stored = st
                .cache
                .borrow_mut()
                .store(key, req, s.clone(), SystemTime::now());
            let m = format!(
                "{name}; fwd=uri-miss; fwd-status={status}{}",
                if stored { "; stored" } else { "" }
            );
            (Ok(s), m)
        }
        Err(e) => {
            st.c.borrow_mut().upstream_failed += 1;
            (
                Err(e),
                format!("{name}; fwd=uri-miss; detail=upstream-failed"),
            )
        }
    }
}

async fn revalidate(
    st: &CacheState,
    key: &str,
    id: u64,
    rq: &hyper::http::request::Parts,
) -> (anyhow::Result<Stored>, String) {
    let name = &st.name;
    let _flight = InFlight::start(st, key);
    st.c.borrow_mut().upstream_requests += 1;
    let r = st.upstream.send(&upstream_request(st, rq)).await;
    let now = SystemTime::now();
    match r {
        Ok((parts, body)) if parts.status == StatusCode::NOT_MODIFIED => {
            let refreshed = st.cache.borrow_mut().revalidated(key, id, rq, &parts, now);
            match refreshed {
                Some(s) => (Ok(s), format!("{name}; fwd=stale; fwd-status=304")),
                None => (
                    Ok(Stored { parts, body }),
                    format!("{name}; fwd=stale; fwd-status=304; detail=not-refreshed"),
                ),
            }
        }
        Ok((parts, body)) if parts.status.is_server_error() => {
            let code = parts.status.as_u16();
            match st.cache.borrow_mut().stale_if_error(key, id, now) {
                Some(s) => {
                    st.c.borrow_mut().served_stale_if_error += 1;
                    (
                        Ok(s),
                        format!("{name}; fwd=stale; fwd-status={code}; detail=stale-if-error"),
                    )
                }
                None => (
                    Ok(Stored { parts, body }),
                    format!("{name}; fwd=stale; fwd-status={code}"),
                ),
            }
        }
        Ok((parts, body)) => {
            let code = parts.status.as_u16();
            let s = Stored { parts, body };
            // A new response: the request without our validators decides the variant.
            let mut plain = rq.clone();
            plain.headers.remove(header::IF_NONE_MATCH);
            plain.headers.remove(header::IF_MODIFIED_SINCE);
            let stored = st.cache.borrow_mut().store(key, &plain, s.clone(), now);
            (
                Ok(s),
                format!(
                    "{name}; fwd=stale; fwd-status={code}{}",
                    if stored { "; stored" } else { "" }
                ),
            )
        }
        Err(e) => {
            st.c.borrow_mut().upstream_failed += 1;
            match st.cache.borrow_mut().stale_if_error(key, id, now) {
                Some(s) => {
                    st.c.borrow_mut().served_stale_if_error += 1;
                    (
                        Ok(s),
                        format!("{name}; fwd=stale; fwd-status=502; detail=stale-if-error"),
                    )
                }
                None => (Err(e), format!("{name}; fwd=stale; detail=upstream-failed")),
            }
        }
    }
}
