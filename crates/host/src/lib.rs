//! A userspace IPv4 host: [`d11_stack`] plus the classic small services, as tokio tasks.
//!
//! - echo (RFC 862) on UDP and TCP port 7;
//! - discard (RFC 863) on TCP port 9, which also counts what arrives and hashes it (SHA-256),
//!   so a test can prove a bulk transfer arrived intact (`d11 show NODE transfers`);
//! - source on TCP port 19 (chargen's port): sends `source_bytes` of a seeded stream to each
//!   client and closes, reporting the SHA-256 of what it sent;
//! - `services.checked = false` makes both cost what `nc` does: zeros, no hashing.
//!
//! smoltcp answers ARP and ping.

use d11_element::App;
use d11_netdev::impair::SplitMix64;
use d11_stack::{Stack, StackConfig, StackElement, TcpStream};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::rc::Rc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::spawn_local;

pub use d11_stack::DEFAULT_TTL;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Services {
    /// UDP and TCP echo port; 0 turns it off.
    pub echo: u16,
    /// TCP discard port; 0 turns it off.
    pub discard: u16,
    /// TCP source port; 0 turns it off.
    pub source: u16,
    /// Octets the source sends to each client.
    pub source_bytes: u64,
    /// Seed of the source's stream.
    pub source_seed: u64,
    /// Listening sockets kept ready per TCP service.
    pub backlog: usize,
    /// Whether what discard and source move is checked: the source sends its seeded stream
    /// and both report the SHA-256 of what they moved (`d11 show NODE transfers`). False: the
    /// source sends zeros and nothing is hashed, so a service costs what `nc` with
    /// `/dev/zero` does (a benchmark of the stack, not of SHA-256).
    pub checked: bool,
}

impl Default for Services {
    fn default() -> Self {
        Self {
            echo: 7,
            discard: 9,
            source: 19,
            source_bytes: 1 << 20,
            source_seed: 11,
            backlog: 8,
            checked: true,
        }
    }
}

/// The host's configuration: its node's entry of the topology file.
#[derive(Debug, Clone, Deserialize)]
pub struct HostConfig {
    #[serde(flatten)]
    pub stack: StackConfig,
    #[serde(default)]
    pub services: Services,
}

/// One finished or running transfer of the discard or source service.
#[derive(Debug, Clone, Default)]
struct Transfer {
    service: &'static str,
    peer: String,
    bytes: u64,
    sha256: Option<String>,
    done: bool,
}

type Transfers = Rc<RefCell<Vec<Transfer>>>;

/// Builds the host: its stack element and the services, listening before it returns.
pub fn build(cfg: &HostConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let (stack, element) = Stack::new(&cfg.stack, "host")?;
    let s = cfg.services.clone();
    let transfers: Transfers = Rc::default();
    let t = transfers.clone();
    stack.add_table("transfers", move || {
        json!(t
            .borrow()
            .iter()
            .map(|x| json!({"service": x.service, "peer": x.peer, "bytes": x.bytes, "sha256": x.sha256, "done": x.done}))
            .collect::<Vec<_>>())
    });
    let mut tasks: Vec<App> = Vec::new();
    if s.echo != 0 {
        let udp = stack.udp_bind(s.echo)?;
        tasks.push(Box::pin(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let (n, from) = udp.recv_from(&mut buf).await?;
                udp.send_to(&buf[..n], from).await?;
            }
        }));
        let l = stack.listen(s.echo, s.backlog)?;
        tasks.push(Box::pin(async move {
            loop {
                let (conn, _) = l.accept().await?;
                spawn_local(echo(conn));
            }
        }));
    }
    if s.discard != 0 {
        let l = stack.listen(s.discard, s.backlog)?;
        let tr = transfers.clone();
        tasks.push(Box::pin(async move {
            loop {
                let (conn, peer) = l.accept().await?;
                spawn_local(discard(conn, peer.to_string(), s.checked, tr.clone()));
            }
        }));
    }
    if s.source != 0 {
        let l = stack.listen(s.source, s.backlog)?;
        let tr = transfers.clone();
        tasks.push(Box::pin(async move {
            loop {
                let (conn, peer) = l.accept().await?;
                spawn_local(source(
                    conn,
                    peer.to_string(),
                    (s.source_bytes, s.source_seed, s.checked),
                    tr.clone(),
                ));
            }
        }));
    }
    let app: App = Box::pin(async move {
        for t in tasks {
            spawn_local(async move {
                if let Err(e) = t.await {
                    tracing::warn!(error = %e, "service stopped");
                }
            });
        }
        std::future::pending().await
    });
    Ok((element, Some(app)))
}

async fn echo(mut c: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match c.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if c.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = c.shutdown().await;
}

fn record(tr: &Transfers, service: &'static str, peer: String) -> usize {
    let mut t = tr.borrow_mut();
    // Keep the table bounded: the last 100 transfers.
    if t.len() >= 100 {
        t.remove(0);
    }
    t.push(Transfer {
        service,
        peer,
        ..Default::default()
    });
    t.len() - 1
}

fn update(tr: &Transfers, service: &'static str, peer: &str, f: impl FnOnce(&mut Transfer)) {
    if let Some(x) = tr
        .borrow_mut()
        .iter_mut()
        .rev()
        .find(|x| x.service == service && x.peer == peer)
    {
        f(x);
    }
}

async fn discard(mut c: TcpStream, peer: String, checked: bool, tr: Transfers) {
    record(&tr, "discard", peer.clone());
    let mut h = checked.then(Sha256::new);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match c.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if let Some(h) = h.as_mut() {
                    h.update(&buf[..n]);
                }
                total += n as u64;
                update(&tr, "discard", &peer, |x| x.bytes = total);
            }
            Err(_) => {
                update(&tr, "discard", &peer, |x| x.done = true);
                return;
            }
        }
    }
    let digest = h.map(|h| hex(&h.finalize()));
    update(&tr, "discard", &peer, |x| {
        x.sha256 = digest;
        x.done = true;
    });
    let _ = c.shutdown().await;
}

/// The source's stream: SplitMix64 output, little-endian, so anyone can regenerate it.
pub struct SourceStream {
    rng: SplitMix64,
    left: u64,
}

impl SourceStream {
    pub fn new(seed: u64, len: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            left: len,
        }
    }

    /// Fills the start of `buf` with the next octets; returns how many (0 at the end).
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            let v = self.rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        self.left -= n as u64;
        n
    }
}

async fn source(
    mut c: TcpStream,
    peer: String,
    (len, seed, checked): (u64, u64, bool),
    tr: Transfers,
) {
    record(&tr, "source", peer.clone());
    let mut h = checked.then(Sha256::new);
    let mut stream = SourceStream::new(seed, len);
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let n = if checked {
            stream.fill(&mut buf)
        } else {
            // Zeros (the buffer's as allocated).
            (len - sent).min(buf.len() as u64) as usize
        };
        if n == 0 {
            break;
        }
        if c.write_all(&buf[..n]).await.is_err() {
            update(&tr, "source", &peer, |x| x.done = true);
            return;
        }
        if let Some(h) = h.as_mut() {
            h.update(&buf[..n]);
        }
        sent += n as u64;
        update(&tr, "source", &peer, |x| x.bytes = sent);
    }
    let digest = h.map(|h| hex(&h.finalize()));
    update(&tr, "source", &peer, |x| {
        x.sha256 = digest;
        x.done = true;
    });
    let _ = c.shutdown().await;
    c.drain().await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests;
