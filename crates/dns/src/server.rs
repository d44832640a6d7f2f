//! The `d11-dns` program on the userspace stack: UDP and TCP port 53 (RFC 1035 §4.2, TCP
//! messages with their two-octet length, RFC 7766), the logic of [`crate::Authority`].

use crate::zone::Zone;
use crate::{Authority, Transport};
use d11_element::App;
use d11_stack::{Stack, StackConfig, StackElement};
use serde::Deserialize;
use std::cell::RefCell;
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
    /// What the server is: `authoritative` (the resolver, GSLB and HTTPDNS come later).
    #[serde(default = "authoritative")]
    pub kind: String,
    /// The zone's origin (`.`, `example.`, `shop.example.`).
    pub zone: String,
    /// Its RFC 1035 master file (relative to the topology file).
    pub zone_file: PathBuf,
    /// TCP connections served at once.
    #[serde(default = "default_tcp_clients")]
    pub tcp_clients: usize,
}

fn authoritative() -> String {
    "authoritative".into()
}
fn default_tcp_clients() -> usize {
    64
}

/// Builds the server: its stack element and the app that serves UDP and TCP.
pub fn build(cfg: &DnsConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    if cfg.kind != "authoritative" {
        anyhow::bail!("kind {:?}: only \"authoritative\" for now", cfg.kind);
    }
    let zone = Zone::load(&cfg.zone_file, &cfg.zone)?;
    let auth = Rc::new(RefCell::new(Authority::new(vec![zone])));
    let (stack, element) = Stack::new(&cfg.stack, "dns")?;
    let a = auth.clone();
    stack.add_table("zones", move || a.borrow().show_zones());
    let a = auth.clone();
    stack.add_counters(move |out| a.borrow().c.for_each(out));
    let udp = stack.udp_bind(PORT)?;
    let listener = stack.listen(PORT, cfg.tcp_clients)?;
    let a = auth.clone();
    let app: App = Box::pin(async move {
        tokio::task::spawn_local(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
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
                        let Some(r) = a.borrow_mut().answer(&q, Transport::Tcp) else {
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
            let reply = auth.borrow_mut().answer(&buf[..n], Transport::Udp);
            if let Some(r) = reply {
                udp.send_to(&r, from).await?;
            }
        }
    });
    Ok((element, Some(app)))
}
