//! A stub resolver, as a phone's operating system has: one question (A, RD set) to a
//! recursive server over UDP, a random ID, tries again on timeout; the answer must come from
//! that server with that ID and question. Used by the phone's app (`d11-ue`).

use anyhow::{bail, Context, Result};
use d11_stack::Stack;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// What a lookup found.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// `ldns` (a DNS server) or `httpdns`.
    pub via: String,
    pub server: String,
    pub name: String,
    /// The CNAME chain from `name`, as `owner -> target`.
    pub cnames: Vec<String>,
    pub addrs: Vec<Ipv4Addr>,
    /// The smallest TTL of the answer.
    pub ttl: u32,
    pub tries: usize,
    pub ms: f64,
    /// The local UDP port the question left from (to find it in a capture).
    pub port: Option<u16>,
    /// What went wrong with a source tried before this one (HTTPDNS before the fallback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<String>,
}

/// What an answer section says about a name: its CNAME chain, the name at its end, that
/// name's addresses, and the smallest TTL of them all.
pub struct Chain {
    pub cnames: Vec<String>,
    pub target: Name,
    pub addrs: Vec<Ipv4Addr>,
    pub ttl: u32,
}

/// The addresses `name` has, per the answer section of `m` (following its CNAMEs).
pub fn addresses(m: &Message, name: &Name) -> Chain {
    let mut current = name.clone();
    let mut chain = Vec::new();
    let mut ttl = u32::MAX;
    for _ in 0..16 {
        let cname = m.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(t) if r.name == current => Some((t.0.clone(), r.ttl)),
            _ => None,
        });
        let Some((t, l)) = cname else { break };
        chain.push(format!("{current} -> {t}"));
        ttl = ttl.min(l);
        current = t;
    }
    let addrs: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter(|r| r.name == current)
        .filter_map(|r| match &r.data {
            RData::A(a) => {
                ttl = ttl.min(r.ttl);
                Some(a.0)
            }
            _ => None,
        })
        .collect();
    Chain {
        cnames: chain,
        target: current,
        addrs,
        ttl: if ttl == u32::MAX { 0 } else { ttl },
    }
}

fn random_id() -> u16 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 48) as u16
}

/// Asks `server` for the A records of `name`: `tries` sends, `timeout` each.
pub async fn lookup(
    stack: &Stack,
    server: Ipv4Addr,
    name: &str,
    timeout: Duration,
    tries: usize,
) -> Result<Resolved> {
    let qname = Name::from_ascii(name)
        .with_context(|| format!("bad name {name:?}"))?
        .append_domain(&Name::root())
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let t0 = Instant::now();
    let sock = stack.udp_bind(0)?;
    let to = SocketAddrV4::new(server, crate::server::PORT);
    let mut buf = vec![0u8; 65535];
    for attempt in 1..=tries.max(1) {
        let id = random_id();
        let mut q = Message::new(id, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(qname.clone(), RecordType::A));
        let mut e = Edns::new();
        e.set_max_payload(crate::EDNS_PAYLOAD);
        q.set_edns(e);
        sock.send_to(&q.to_vec()?, to).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Ok(r) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await else {
                break; // timed out: the next try
            };
            let (n, from) = r?;
            let Ok(m) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let same = from == to
                && m.metadata.id == id
                && m.metadata.message_type == MessageType::Response
                && m.queries.len() == 1
                && m.queries[0].name() == &qname;
            if !same {
                continue; // not the answer: a stray or forged datagram
            }
            if m.metadata.truncation {
                bail!("{server} answered truncated");
            }
            if m.metadata.response_code != ResponseCode::NoError {
                bail!("{server} answered {} for {name}", m.metadata.response_code);
            }
            let Chain {
                cnames, addrs, ttl, ..
            } = addresses(&m, &qname);
            if addrs.is_empty() {
                bail!("{server} has no address for {name}");
            }
            return Ok(Resolved {
                via: "ldns".into(),
                server: server.to_string(),
                name: name.to_string(),
                cnames,
                addrs,
                ttl,
                tries: attempt,
                ms: t0.elapsed().as_secs_f64() * 1e3,
                port: sock.local_port(),
                fallback_from: None,
            });
        }
    }
    bail!(
        "no answer from {server} for {name} ({} tries)",
        tries.max(1)
    )
}
