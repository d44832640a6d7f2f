//! HTTPDNS (docs/journey.md section 6): `GET /d?host=NAME[&ip=CLIENT]` over HTTP and HTTPS,
//! answered as Alibaba Cloud's HTTPDNS answers:
//! `{"host": NAME, "ips": [...], "ttl": T, "origin_ttl": T0}` (empty `ips` for a name it does
//! not serve). The addresses come from a resolution of its own through the same servers as
//! ldns's, with the client's /24 as EDNS Client Subnet (the `ip` parameter, else the address
//! the request came from), so the GSLB's policy decides for the same client as over DNS.
//!
//! This module is the sans-IO part: the request's parameters, the DNS question it makes, the
//! JSON of the answer. The server (HTTP on the stack) is in [`crate::server`].

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};

/// A valid request's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub host: String,
    /// The `ip` parameter, if given.
    pub ip: Option<Ipv4Addr>,
}

/// The parameters of `GET /d?...`: `host` (a DNS name), `ip` (an IPv4 address), or why
/// they are bad (400).
pub fn parse_query(query: Option<&str>) -> Result<Ask, String> {
    let mut host = None;
    let mut ip = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "host" => host = Some(v.to_string()),
            "ip" => {
                ip = Some(
                    v.parse::<Ipv4Addr>()
                        .map_err(|_| format!("ip {v:?} is not an IPv4 address"))?,
                )
            }
            _ => {}
        }
    }
    let host = host.filter(|h| !h.is_empty()).ok_or("host is missing")?;
    let name = Name::from_ascii(&host).map_err(|e| format!("host {host:?}: {e}"))?;
    if name.len() > 255 || host.len() > 253 {
        return Err(format!("host {host:?}: longer than a name may be"));
    }
    Ok(Ask {
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        ip,
    })
}

/// The DNS question HTTPDNS hands its resolver: A of `host`, RD, with the client's /24 as
/// ECS.
pub fn question(id: u16, host: &str, client: Ipv4Addr) -> Option<Vec<u8>> {
    let name = Name::from_ascii(host)
        .ok()?
        .append_domain(&Name::root())
        .ok()?;
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name, RecordType::A));
    let net = Ipv4Addr::from(u32::from(client) & 0xffff_ff00);
    let mut e = Edns::new();
    e.set_max_payload(crate::EDNS_PAYLOAD);
    e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
        IpAddr::V4(net),
        24,
        0,
    )));
    m.set_edns(e);
    m.to_vec().ok()
}

/// The JSON answer from the resolver's DNS answer; `origin_ttl` gives the TTL the addresses
/// of a name came with from their server (`ttl` is what is left of it).
pub fn answer(host: &str, dns: &[u8], origin_ttl: impl Fn(&Name) -> Option<u32>) -> Value {
    let Ok(m) = Message::from_vec(dns) else {
        return empty(host);
    };
    if m.metadata.response_code != ResponseCode::NoError {
        return empty(host);
    }
    let Ok(name) = Name::from_ascii(host).and_then(|n| n.append_domain(&Name::root())) else {
        return empty(host);
    };
    let c = crate::stub::addresses(&m, &name);
    if c.addrs.is_empty() {
        return empty(host);
    }
    json!({
        "host": host,
        "ips": c.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "ttl": c.ttl,
        "origin_ttl": origin_ttl(&c.target).unwrap_or(c.ttl),
    })
}

/// The answer for a name it does not serve, or cannot resolve.
pub fn empty(host: &str) -> Value {
    json!({ "host": host, "ips": [], "ttl": 0, "origin_ttl": 0 })
}
