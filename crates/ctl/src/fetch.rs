//! d11-fetch: one HTTP(S) exchange from the userspace stack, with its timings.

use crate::TcpStream;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use d11_stack::Stack;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to fetch.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: String,
    /// `host:port:address`, as curl's --resolve.
    pub resolve: Vec<String>,
    pub cacert: Option<PathBuf>,
    pub data: Option<String>,
    pub headers: Vec<String>,
    /// Requests on the same connection (keep-alive).
    pub count: usize,
    pub timeout: Duration,
}

/// What happened, with timings in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as text, up to 64 KiB (a picture's is not kept; `body_len` has its size).
    pub body: String,
    pub body_len: usize,
    pub local: String,
    pub remote: String,
    pub tcp_ms: f64,
    pub tls_ms: Option<f64>,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    pub alpn: Option<String>,
    /// Certificates the server sent (leaf first).
    pub server_chain_len: Option<usize>,
    /// Per request: from writing the request to the end of the response body.
    pub response_ms: Vec<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn resolve(host: &str, port: u16, rules: &[String]) -> Result<Ipv4Addr> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ip);
    }
    for r in rules {
        let mut it = r.splitn(3, ':');
        if let (Some(h), Some(p), Some(a)) = (it.next(), it.next(), it.next()) {
            if h == host && p.parse::<u16>().ok() == Some(port) {
                return a
                    .parse()
                    .with_context(|| format!("--resolve {r}: bad address"));
            }
        }
    }
    bail!("no address for {host}:{port}: give --resolve {host}:{port}:ADDRESS (DNS comes with the journey's stage 4)")
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Io for T {}

/// Runs the exchange over `stack`.
pub async fn fetch(stack: &Stack, req: &Request) -> Result<Outcome> {
    let uri: Uri = req
        .url
        .parse()
        .with_context(|| format!("bad URL {:?}", req.url))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("URL {:?}: http:// or https:// only", req.url),
    };
    let host = uri.host().context("URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addr = SocketAddrV4::new(resolve(&host, port, &req.resolve)?, port);
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());

    let t0 = Instant::now();
    let tcp: TcpStream = tokio::time::timeout(req.timeout, stack.connect(addr))
        .await
        .with_context(|| format!("TCP connect to {addr} timed out"))?
        .with_context(|| format!("TCP connect to {addr}"))?;
    let tcp_ms = ms(t0.elapsed());
    let local = tcp.local_addr().map_or("?".into(), |a| a.to_string());

    let mut out = Outcome {
        status: 0,
        headers: Vec::new(),
        body: String::new(),
        body_len: 0,
        local,
        remote: addr.to_string(),
        tcp_ms,
        tls_ms: None,
        tls_version: None,
        tls_cipher: None,
        alpn: None,
        server_chain_len: None,
        response_ms: Vec::new(),
    };
    let io: Box<dyn Io> = if tls {
        let ca = req
            .cacert
            .as_ref()
            .context("https needs --cacert (the lab's root.pem)")?;
        let cfg = d11_tls::client_config(ca)?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .with_context(|| format!("bad server name {host}"))?;
        let t1 = Instant::now();
        let s = tokio::time::timeout(
            req.timeout,
            tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
        )
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake")?;
        out.tls_ms = Some(ms(t1.elapsed()));
        let (_, c) = s.get_ref();
        out.tls_version = c.protocol_version().map(|v| format!("{v:?}"));
        out.tls_cipher = c
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()));
        out.alpn = c
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned());
        out.server_chain_len = c.peer_certificates().map(<[_]>::len);
        Box::new(s)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(io)).await?;
    let conn = tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    for _ in 0..req.count.max(1) {
        let mut b = hyper::Request::builder()
            .method(if req.data.is_some() { "POST" } else { "GET" })
            .uri(&path)
            .header("host", &host)
            .header("user-agent", "d11-fetch");
        if req.data.is_some() {
            b = b.header("content-type", "application/json");
        }
        for h in &req.headers {
            let (k, v) = h
                .split_once(':')
                .with_context(|| format!("header {h:?}: expected NAME: VALUE"))?;
            b = b.header(k.trim(), v.trim());
        }
        let body = Full::new(Bytes::from(req.data.clone().unwrap_or_default()));
        let t2 = Instant::now();
        let resp = tokio::time::timeout(req.timeout, sender.send_request(b.body(body)?))
            .await
            .context("response timed out")??;
        out.status = resp.status().as_u16();
        out.headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let bytes = tokio::time::timeout(req.timeout, resp.into_body().collect())
            .await
            .context("body timed out")??
            .to_bytes();
        out.response_ms.push(ms(t2.elapsed()));
        out.body_len = bytes.len();
        out.body = String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]).into_owned();
    }
    // Close as a polite client does: hyper shuts the stream down (TLS close_notify, then FIN)
    // once the last sender is gone. (A program about to exit then waits for the FIN exchange
    // with `Stack::quiesce`; a long-lived client such as a phone's app does not.)
    drop(sender);
    let _ = conn.await;
    Ok(out)
}

/// The human form: what curl -v would say, then the timings.
pub fn print(o: &Outcome) {
    eprintln!(
        "* TCP {} -> {} connected in {:.2} ms",
        o.local, o.remote, o.tcp_ms
    );
    if let Some(t) = o.tls_ms {
        eprintln!(
            "* TLS {} {} ALPN {} in {:.2} ms; server sent {} certificates, chain verified to the lab root",
            o.tls_version.as_deref().unwrap_or("?"),
            o.tls_cipher.as_deref().unwrap_or("?"),
            o.alpn.as_deref().unwrap_or("-"),
            t,
            o.server_chain_len.unwrap_or(0)
        );
    }
    eprintln!("< HTTP/1.1 {}", o.status);
    for (k, v) in &o.headers {
        eprintln!("< {k}: {v}");
    }
    println!("{}", o.body);
    let total: f64 = o.tcp_ms + o.tls_ms.unwrap_or(0.0) + o.response_ms.iter().sum::<f64>();
    eprintln!(
        "* timings: tcp {:.2} ms, tls {}, responses {:?} ms, total {:.2} ms",
        o.tcp_ms,
        o.tls_ms.map_or("-".into(), |t| format!("{t:.2} ms")),
        o.response_ms
            .iter()
            .map(|x| (x * 100.0).round() / 100.0)
            .collect::<Vec<_>>(),
        total
    );
}
