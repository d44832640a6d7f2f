//! DNS for the lab (stage 4 of docs/journey.md). The wire format is hickory-proto's (messages,
//! names, EDNS); master files are read with its RFC 1035 parser. What this crate adds is the
//! servers' logic, sans-IO: bytes of a query in, bytes of the answer out.
//!
//! - [`zone`]: a zone and the lookup of RFC 1034 §4.3.2 (answers, CNAMEs, referrals with
//!   glue, NODATA and NXDOMAIN with the SOA).
//! - [`Authority`]: an authoritative server over its zones: the AA flag, EDNS(0) (RFC 6891),
//!   truncation for UDP (TC, the client retries over TCP), FORMERR, NOTIMP and REFUSED, a
//!   minimal answer to ANY (RFC 8482); malformed queries are counted and dropped or answered
//!   FORMERR, never a panic.

pub mod gslb;
pub mod httpdns;
pub mod resolver;
pub mod server;
pub mod stub;
pub mod zone;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;
use zone::{Lookup, Zone};

/// The UDP payload we accept and offer with EDNS (the DNS Flag Day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Without EDNS a UDP answer fits 512 octets (RFC 1035 §4.2.1).
pub const PLAIN_UDP: usize = 512;

// Counters of an authoritative server; `dns_dropped`: too short to answer, or a response
// sent to us.
d11_element::counters! {
    pub struct Counters {
        dns_queries,
        dns_answers,
        dns_referrals,
        dns_nodata,
        dns_nxdomain,
        dns_refused,
        dns_formerr,
        dns_notimp,
        dns_truncated,
        dns_dropped,
    }
}

/// How a query came: over UDP (answers are cut to fit) or TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// An authoritative server for its zones; a GSLB answers some names' A records by its policy.
#[derive(Debug, Default)]
pub struct Authority {
    zones: Vec<Zone>,
    /// The GSLB, and the names it answers.
    pub gslb: Option<(gslb::Gslb, Vec<Name>)>,
    pub c: Counters,
}

/// Who asked, and when.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub transport: Transport,
    pub peer: Ipv4Addr,
    pub now: Instant,
}

/// The EDNS Client Subnet of a query, IPv4 only: the address (cut to its source prefix) and
/// the source prefix. Malformed (a prefix over 32, bits set beyond it) is `Err`: FORMERR
/// (RFC 7871 §7.1.2).
pub(crate) fn client_subnet(msg: &Message) -> Result<Option<(Ipv4Addr, u8)>, ()> {
    let Some(EdnsOption::Subnet(s)) = msg.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet))
    else {
        return Ok(None);
    };
    let IpAddr::V4(a) = s.addr() else {
        return Ok(None);
    };
    let p = s.source_prefix();
    if p > 32 || s.scope_prefix() != 0 {
        return Err(());
    }
    let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    if u32::from(a) & !mask != 0 {
        return Err(());
    }
    Ok(Some((a, p)))
}

impl Authority {
    pub fn new(zones: Vec<Zone>) -> Self {
        Self {
            zones,
            gslb: None,
            c: Counters::default(),
        }
    }

    /// The zone that is most specific for `name`.
    fn zone_for(&self, name: &hickory_proto::rr::Name) -> Option<&Zone> {
        self.zones
            .iter()
            .filter(|z| z.contains(name))
            .max_by_key(|z| z.origin.num_labels())
    }

    /// `d11 show NODE zones`: every record of every zone.
    pub fn show_zones(&self) -> Value {
        json!(self
            .zones
            .iter()
            .map(|z| json!({
                "origin": z.origin.to_string(),
                "records": z.rows().into_iter().map(|(n, t, ttl, d)| json!({
                    "name": n, "type": t, "ttl": ttl, "data": d,
                })).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>())
    }

    /// The answer to the query in `req`, or `None` to drop it (not a query, too short to
    /// answer).
    pub fn answer(&mut self, req: &[u8], asked: Asked) -> Option<Vec<u8>> {
        let transport = asked.transport;
        if req.len() < 12 {
            self.c.dns_dropped += 1;
            return None;
        }
        // A response sent to us is never answered (QR set).
        if req[2] & 0x80 != 0 {
            self.c.dns_dropped += 1;
            return None;
        }
        self.c.dns_queries += 1;
        let id = u16::from_be_bytes([req[0], req[1]]);
        let msg = match Message::from_vec(req) {
            Ok(m) => m,
            Err(_) => {
                self.c.dns_formerr += 1;
                let op = OpCode::from_u8((req[2] >> 3) & 0x0f);
                return encode(&Message::error_msg(id, op, ResponseCode::FormErr));
            }
        };
        let op = msg.metadata.op_code;
        if op != OpCode::Query {
            self.c.dns_notimp += 1;
            return encode(&Message::error_msg(id, op, ResponseCode::NotImp));
        }
        let [q] = msg.queries.as_slice() else {
            self.c.dns_formerr += 1;
            return encode(&Message::error_msg(id, op, ResponseCode::FormErr));
        };
        let Ok(ecs) = client_subnet(&msg) else {
            self.c.dns_formerr += 1;
            return encode(&Message::error_msg(id, op, ResponseCode::FormErr));
        };
        let mut resp = Message::response(id, op);
        resp.metadata.recursion_desired = msg.metadata.recursion_desired;
        resp.add_query(q.clone());
        let scope = if self.is_gslb(q) {
            Some(self.fill_gslb(&mut resp, q, asked, ecs))
        } else {
            self.fill(&mut resp, q);
            None
        };
        if msg.edns.is_some() {
            let mut e = Edns::new();
            e.set_max_payload(EDNS_PAYLOAD);
            // ECS back as it came, with the scope the answer holds for (0: any client).
            if let Some((a, p)) = ecs {
                let sub = ClientSubnet::new(IpAddr::V4(a), p, scope.unwrap_or(0));
                e.options_mut().insert(EdnsOption::Subnet(sub));
            }
            resp.set_edns(e);
        }
        let limit = match (transport, &msg.edns) {
            (Transport::Tcp, _) => usize::from(u16::MAX),
            (Transport::Udp, Some(e)) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
            (Transport::Udp, None) => PLAIN_UDP,
        };
        let bytes = resp.to_vec().ok()?;
        if bytes.len() <= limit {
            return Some(bytes);
        }
        self.c.dns_truncated += 1;
        encode(&resp.truncate())
    }

    /// Whether the GSLB answers this question (A of one of its names).
    fn is_gslb(&self, q: &Query) -> bool {
        q.query_class() == DNSClass::IN
            && q.query_type() == RecordType::A
            && self
                .gslb
                .as_ref()
                .is_some_and(|(_, names)| names.iter().any(|n| n == q.name()))
    }

    /// The GSLB's answer: the VIPs its policy picks for the client (ECS, else the sender).
    /// Returns the ECS scope of the answer.
    fn fill_gslb(
        &mut self,
        resp: &mut Message,
        q: &Query,
        asked: Asked,
        ecs: Option<(Ipv4Addr, u8)>,
    ) -> u8 {
        let Some((g, _)) = self.gslb.as_mut() else {
            return 0;
        };
        let client = match ecs {
            Some((a, p)) if p > 0 => gslb::Source::Ecs(a, p),
            _ => gslb::Source::Peer(asked.peer),
        };
        let name = q.name().to_string();
        let d = g.decide(asked.now, &name, asked.peer, client);
        let ttl = g.cfg.ttl;
        self.c.dns_answers += 1;
        resp.metadata.authoritative = true;
        resp.answers = d
            .vips
            .iter()
            .map(|v| Record::from_rdata(q.name().clone(), ttl, RData::A(A(*v))))
            .collect();
        // The scope is at most what the client gave (RFC 7871 §7.2.1 allows longer, which
        // a resolver then caches for the source prefix only).
        match ecs {
            Some((_, p)) if p > 0 => d.scope,
            _ => 0,
        }
    }

    /// The question's answer into `resp`.
    fn fill(&mut self, resp: &mut Message, q: &Query) {
        let name = q.name();
        if q.query_class() != DNSClass::IN {
            self.c.dns_refused += 1;
            resp.metadata.response_code = ResponseCode::Refused;
            return;
        }
        let Some(zone) = self.zone_for(name) else {
            self.c.dns_refused += 1;
            resp.metadata.response_code = ResponseCode::Refused;
            return;
        };
        let found = zone.lookup(name, q.query_type());
        // An NS answer brings its servers' addresses (RFC 1035 §3.3.11).
        let additional = match &found {
            Lookup::Answer(records) => zone.glue(records),
            _ => Vec::new(),
        };
        match found {
            Lookup::Answer(records) => {
                self.c.dns_answers += 1;
                resp.metadata.authoritative = true;
                resp.additionals = additional;
                resp.answers = records;
            }
            Lookup::Referral { cnames, ns, glue } => {
                self.c.dns_referrals += 1;
                // Authoritative for the CNAMEs that led to the cut, if any (RFC 1035 §4.1.1:
                // the AA bit is about the first owner name in the answer).
                resp.metadata.authoritative = !cnames.is_empty();
                resp.answers = cnames;
                resp.authorities = ns;
                resp.additionals = glue;
            }
            Lookup::NoData { cnames, soa } => {
                self.c.dns_nodata += 1;
                resp.metadata.authoritative = true;
                resp.answers = cnames;
                resp.authorities = vec![soa];
            }
            Lookup::NxDomain { cnames, soa } => {
                self.c.dns_nxdomain += 1;
                resp.metadata.authoritative = true;
                // After a CNAME the rcode is about the last name of the chain (RFC 6604).
                resp.metadata.response_code = ResponseCode::NXDomain;
                resp.answers = cnames;
                resp.authorities = vec![soa];
            }
        }
    }
}

fn encode(m: &Message) -> Option<Vec<u8>> {
    let mut m = m.clone();
    m.metadata.message_type = MessageType::Response;
    m.to_vec().ok()
}

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;
