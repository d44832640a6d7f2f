//! The carrier's resolver (ldns), sans-IO: iterative resolution from root hints, following
//! referrals and CNAME chains, with bailiwick checks and a cache (positive and negative, RFC
//! 2308). Time is passed in; the I/O layer sends what [`Out`] says and hands back answers.
//!
//! EDNS Client Subnet (RFC 7871): towards the servers of `ecs_zones` only (a GSLB that uses
//! it; nobody else learns where clients are), the client's /24 (or the subnet the client
//! sent, at most /24); answers that come back with a scope are cached for that subnet and
//! given only to clients inside it.
//!
//! A truncated answer is asked again over TCP (RFC 7766); the resolver's own answers are cut
//! to the client's UDP size (EDNS, else 512) with TC, and whole over TCP.
//!
//! QNAME minimisation (RFC 9156) as an option: a zone's servers are asked for the name one
//! label below it with QTYPE A; NODATA or an answer there means one label more from the same
//! servers, a referral moves down, NXDOMAIN ends it (RFC 8020); the full question goes only
//! to the servers of the zone it is in.
//!
//! A glueless delegation (a referral whose servers' addresses it does not carry, counted
//! `glueless`) is followed by resolving the first server's address from the root (nested at
//! most three deep), then asking it.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::Ipv4Net;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// What the resolver wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// The answer to a client.
    Client { to: SocketAddrV4, bytes: Vec<u8> },
    /// A query to a server, port 53, over UDP or (after a truncated answer) TCP; its answer
    /// comes back through [`Resolver::on_response`] with this `id`.
    Server {
        to: Ipv4Addr,
        id: u16,
        bytes: Vec<u8>,
        tcp: bool,
    },
}

// Counters of the resolver (`d11 show ldns counters`). `unexpected_answers`: answers that
// match no question in flight (wrong ID, server or question), dropped; `out_of_bailiwick`:
// records outside the zone the answering server was asked about, never cached; `cache_full`:
// entries not cached because the cache was full of live ones; `busy`: client questions
// refused (SERVFAIL) because `max_tasks` were being resolved; `tcp_retries`: truncated answers
// asked again over TCP; `truncated`: answers to clients cut to their UDP size (TC).
d11_element::counters! {
    pub struct Counters {
        client_queries,
        cache_hits,
        cache_misses,
        upstream_queries,
        timeouts,
        servfail,
        formerr,
        unexpected_answers,
        out_of_bailiwick,
        glueless,
        cache_full,
        busy,
        tcp_retries,
        truncated,
    }
}

/// A cached record set, or a negative answer.
#[derive(Debug, Clone)]
enum Entry {
    Records(Vec<Record>),
    /// NXDOMAIN (true) or NODATA, with the SOA.
    Negative {
        nxdomain: bool,
        soa: Box<Record>,
    },
}

#[derive(Debug, Clone)]
struct Cached {
    entry: Entry,
    until: Instant,
    /// The TTL it came with.
    ttl: u32,
    /// Learned as glue or from a referral (RFC 2181 §5.4.1: below an authoritative answer):
    /// used to reach servers, never given to a client.
    glue: bool,
}

/// One client's question being resolved.
#[derive(Debug, Clone)]
struct Task {
    client: SocketAddrV4,
    id: u16,
    query: Query,
    edns: bool,
    /// The subnet the client is in, for ECS: what it sent (at most /24), else its /24.
    subnet: Ipv4Net,
    /// Whether the client sent ECS (then the answer carries it back, with `scope`).
    client_ecs: bool,
    /// The scope of the answer: 0 unless it came from an ECS-scoped entry.
    scope: u8,
    /// The largest answer the client takes (its EDNS UDP size, 512 without EDNS, 65535 over
    /// TCP).
    limit: usize,
    /// The CNAMEs followed so far.
    chain: Vec<Record>,
    /// The name being resolved now (the last CNAME's target).
    current: Name,
    /// The zone whose servers are asked, and those servers.
    zone: Name,
    servers: Vec<Ipv4Addr>,
    /// Sends so far to the current servers (each timeout moves to the next).
    tries: usize,
    /// Referrals and CNAMEs followed: a bound against loops.
    steps: usize,
    /// QNAME minimisation: labels asked beyond the zone's, less one (0: one label more).
    extra: usize,
    /// A resolution of a name server's address for task `parent` (a glueless delegation),
    /// not a client's: its answer goes to the parent.
    parent: Option<u64>,
    /// How deep in such resolutions (bounded by [`MAX_DEPTH`]).
    depth: u8,
}

#[derive(Debug, Clone)]
struct Inflight {
    task: u64,
    server: Ipv4Addr,
    sent: Instant,
    /// The client subnet sent with it (ECS).
    ecs: Option<Ipv4Net>,
    tcp: bool,
    /// The question as sent (minimised, or the task's).
    question: Query,
}

/// How many referrals and CNAMEs one resolution may follow.
const MAX_STEPS: usize = 24;
/// How deep resolutions of name servers' addresses may nest (a glueless delegation whose
/// server's zone is itself glueless, ...).
const MAX_DEPTH: u8 = 3;

/// The iterative resolver.
pub struct Resolver {
    roots: Vec<(Name, Ipv4Addr)>,
    cache: HashMap<(Name, RecordType), Cached>,
    /// Answers given for a client subnet (ECS scope), each valid only inside its subnet.
    ecs_cache: HashMap<(Name, RecordType), Vec<(Ipv4Net, Cached)>>,
    tasks: HashMap<u64, Task>,
    next_task: u64,
    inflight: HashMap<u16, Inflight>,
    rng: u64,
    /// The latest time given (an answer of a child resolution resumes its parent then).
    clock: Instant,
    /// How long to wait for a server before the next.
    pub timeout: Duration,
    /// Sends per resolution step before SERVFAIL.
    pub attempts: usize,
    /// Cache entries at most (a client asking for random names cannot grow it without end).
    pub max_cache: usize,
    /// Resolutions in flight at most.
    pub max_tasks: usize,
    /// Zones whose servers are sent EDNS Client Subnet.
    pub ecs_zones: Vec<Name>,
    /// QNAME minimisation (RFC 9156): servers are asked for one label more than their zone
    /// (QTYPE A), the full question only where it ends.
    pub qname_minimisation: bool,
    pub c: Counters,
}

impl Resolver {
    /// A resolver with root hints (name server names and addresses) and a seed for its IDs.
    pub fn new(roots: Vec<(Name, Ipv4Addr)>, seed: u64) -> Self {
        Self {
            roots,
            cache: HashMap::new(),
            ecs_cache: HashMap::new(),
            tasks: HashMap::new(),
            next_task: 0,
            inflight: HashMap::new(),
            rng: seed | 1,
            clock: Instant::now(),
            timeout: Duration::from_millis(800),
            attempts: 3,
            max_cache: 100_000,
            max_tasks: 1_000,
            ecs_zones: Vec::new(),
            qname_minimisation: false,
            c: Counters::default(),
        }
    }

    /// A random source port for an upstream query (the I/O layer binds it).
    pub fn random_port(&mut self) -> u16 {
        self.random_u16()
    }

    fn random_u16(&mut self) -> u16 {
        // xorshift64*: IDs an off-path attacker cannot guess from earlier ones.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 48) as u16
    }

    /// `d11 show ldns cache`: name, type, TTL left, what, whether it is glue, and the client
    /// subnet an ECS-scoped answer holds for.
    pub fn show_cache(&self, now: Instant) -> Value {
        let plain = self.cache.iter().map(|(k, c)| (k, None, c));
        let scoped = self
            .ecs_cache
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |(net, c)| (k, Some(*net), c)));
        let mut rows: Vec<_> = plain
            .chain(scoped)
            .filter(|(_, _, c)| c.until > now)
            .map(|((n, t), net, c)| {
                let left = c.until.saturating_duration_since(now).as_secs();
                let what = match &c.entry {
                    Entry::Records(rs) => {
                        json!(rs.iter().map(|r| r.data.to_string()).collect::<Vec<_>>())
                    }
                    Entry::Negative { nxdomain: true, .. } => json!("NXDOMAIN"),
                    Entry::Negative { .. } => json!("NODATA"),
                };
                let row = json!({
                    "name": n.to_string(), "type": t.to_string(), "ttl_left": left,
                    "ttl": c.ttl, "data": what, "glue": c.glue,
                    "ecs_scope": net.map(|n: Ipv4Net| n.to_string()),
                });
                ((n.to_string(), t.to_string(), net), row)
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        json!(rows.into_iter().map(|(_, r)| r).collect::<Vec<_>>())
    }

    /// The TTL an answer for `name` came with (HTTPDNS's `origin_ttl`).
    pub fn origin_ttl(
        &self,
        now: Instant,
        name: &Name,
        t: RecordType,
        client: Ipv4Addr,
    ) -> Option<u32> {
        self.lookup(now, name, t, client, false).map(|(_, c)| c.ttl)
    }

    /// The entry for `name` and `t` a client at `client` may be given: an ECS-scoped one
    /// holding for it (the longest), else the plain one.
    fn lookup(
        &self,
        now: Instant,
        name: &Name,
        t: RecordType,
        client: Ipv4Addr,
        glue_ok: bool,
    ) -> Option<(u8, &Cached)> {
        let key = (name.to_lowercase(), t);
        let scoped = self.ecs_cache.get(&key).and_then(|v| {
            v.iter()
                .filter(|(net, c)| c.until > now && net.contains(&client))
                .max_by_key(|(net, _)| net.prefix_len())
                .map(|(net, c)| (net.prefix_len(), c))
        });
        scoped.or_else(|| {
            let c = self.cache.get(&key)?;
            (c.until > now && (glue_ok || !c.glue)).then_some((0, c))
        })
    }

    /// An answer for a client from the cache: the entry, the TTL left and the ECS scope.
    fn cached_for(
        &self,
        now: Instant,
        name: &Name,
        t: RecordType,
        client: Ipv4Addr,
    ) -> Option<(Entry, u32, u8)> {
        self.lookup(now, name, t, client, false).map(|(scope, c)| {
            let left = c.until.saturating_duration_since(now).as_secs() as u32;
            (c.entry.clone(), left, scope)
        })
    }

    /// An entry good enough to answer a client with (not glue).
    fn cached(&self, now: Instant, name: &Name, t: RecordType) -> Option<(Entry, u32)> {
        self.cached_any(now, name, t, false)
    }

    fn cached_any(
        &self,
        now: Instant,
        name: &Name,
        t: RecordType,
        glue_ok: bool,
    ) -> Option<(Entry, u32)> {
        let c = self.cache.get(&(name.to_lowercase(), t))?;
        (c.until > now && (glue_ok || !c.glue)).then(|| {
            let left = c.until.saturating_duration_since(now).as_secs() as u32;
            (c.entry.clone(), left)
        })
    }

    fn store(&mut self, now: Instant, name: &Name, t: RecordType, entry: Entry, ttl: u32) {
        self.put(now, name, t, entry, ttl, false);
    }

    /// Glue and referral NS sets: kept unless an authoritative entry is there.
    fn store_glue(&mut self, now: Instant, name: &Name, t: RecordType, entry: Entry, ttl: u32) {
        if self.cached(now, name, t).is_none() {
            self.put(now, name, t, entry, ttl, true);
        }
    }

    fn put(
        &mut self,
        now: Instant,
        name: &Name,
        t: RecordType,
        entry: Entry,
        ttl: u32,
        glue: bool,
    ) {
        let key = (name.to_lowercase(), t);
        if self.cache.len() >= self.max_cache && !self.cache.contains_key(&key) {
            self.cache.retain(|_, c| c.until > now);
            if self.cache.len() >= self.max_cache {
                self.c.cache_full += 1;
                return;
            }
        }
        self.cache.insert(
            key,
            Cached {
                entry,
                until: now + Duration::from_secs(u64::from(ttl)),
                ttl,
                glue,
            },
        );
    }

    /// An answer that holds for the clients of `net` only (its ECS scope).
    fn put_scoped(
        &mut self,
        now: Instant,
        name: &Name,
        t: RecordType,
        net: Ipv4Net,
        entry: Entry,
        ttl: u32,
    ) {
        let total: usize = self.ecs_cache.values().map(Vec::len).sum();
        if self.cache.len() + total >= self.max_cache {
            for v in self.ecs_cache.values_mut() {
                v.retain(|(_, c)| c.until > now);
            }
            self.ecs_cache.retain(|_, v| !v.is_empty());
            let total: usize = self.ecs_cache.values().map(Vec::len).sum();
            if self.cache.len() + total >= self.max_cache {
                self.c.cache_full += 1;
                return;
            }
        }
        let v = self.ecs_cache.entry((name.to_lowercase(), t)).or_default();
        v.retain(|(n, c)| *n != net && c.until > now);
        v.push((
            net,
            Cached {
                entry,
                until: now + Duration::from_secs(u64::from(ttl)),
                ttl,
                glue: false,
            },
        ));
    }

    /// A client's query, over UDP or TCP.
    pub fn on_query(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        bytes: &[u8],
        transport: crate::Transport,
    ) -> Vec<Out> {
        self.clock = now;
        if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
            return Vec::new();
        }
        self.c.client_queries += 1;
        let id = u16::from_be_bytes([bytes[0], bytes[1]]);
        let msg = Message::from_vec(bytes)
            .ok()
            .filter(|m| m.metadata.op_code == OpCode::Query && m.queries.len() == 1);
        let ecs = msg.as_ref().map(crate::client_subnet);
        let (Some(msg), Some(Ok(ecs))) = (msg, ecs) else {
            self.c.formerr += 1;
            let mut e = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            e.metadata.message_type = MessageType::Response;
            return e
                .to_vec()
                .map(|b| vec![Out::Client { to: from, bytes: b }])
                .unwrap_or_default();
        };
        let q = msg.queries[0].clone();
        let subnet = match ecs {
            Some((a, p)) => Ipv4Net::new(a, p.min(24)),
            None => Ipv4Net::new(*from.ip(), 24),
        }
        .unwrap_or_default();
        let mut task = Task {
            client: from,
            id,
            current: q.name().clone(),
            query: q,
            edns: msg.edns.is_some(),
            subnet,
            client_ecs: ecs.is_some(),
            scope: 0,
            limit: match (transport, &msg.edns) {
                (crate::Transport::Tcp, _) => usize::from(u16::MAX),
                (crate::Transport::Udp, Some(e)) => {
                    usize::from(e.max_payload().clamp(512, crate::EDNS_PAYLOAD))
                }
                (crate::Transport::Udp, None) => crate::PLAIN_UDP,
            },
            chain: Vec::new(),
            zone: Name::root(),
            servers: Vec::new(),
            tries: 0,
            steps: 0,
            extra: 0,
            parent: None,
            depth: 0,
        };
        // The cache first: follow cached CNAMEs, answer what is there.
        loop {
            let t = task.query.query_type();
            let client = task.subnet.addr();
            if let Some((e, left, scope)) = self.cached_for(now, &task.current, t, client) {
                self.c.cache_hits += 1;
                task.scope = scope;
                return self.reply_cached(&task, e, left);
            }
            match self.cached_for(now, &task.current, RecordType::CNAME, client) {
                Some((Entry::Records(rs), left, _)) if task.chain.len() < MAX_STEPS => {
                    let Some(RData::CNAME(target)) = rs.first().map(|r| r.data.clone()) else {
                        break;
                    };
                    let mut r = rs[0].clone();
                    r.ttl = left;
                    task.chain.push(r);
                    task.current = target.0;
                }
                _ => break,
            }
        }
        self.c.cache_misses += 1;
        self.start(now, task)
    }

    /// The cached addresses (glue included) of the servers `names`.
    fn known_addrs(&self, now: Instant, names: &[Name]) -> Vec<Ipv4Addr> {
        names
            .iter()
            .filter_map(|t| match self.cached_any(now, t, RecordType::A, true) {
                Some((Entry::Records(a), _)) => Some(a),
                _ => None,
            })
            .flatten()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    /// The closest zone we know servers for: from the cache's NS sets and their addresses,
    /// else the root hints.
    fn closest(&self, now: Instant, name: &Name) -> (Name, Vec<Ipv4Addr>) {
        let mut n = name.clone();
        loop {
            if let Some((Entry::Records(ns), _)) = self.cached_any(now, &n, RecordType::NS, true) {
                let addrs = self.known_addrs(now, &ns_names(&ns));
                if !addrs.is_empty() {
                    return (n, addrs);
                }
            }
            if n.is_root() {
                break;
            }
            n = n.base_name();
        }
        (Name::root(), self.roots.iter().map(|(_, a)| *a).collect())
    }

    fn start(&mut self, now: Instant, mut task: Task) -> Vec<Out> {
        if self.tasks.len() >= self.max_tasks {
            self.c.busy += 1;
            return self.reply(&task, ResponseCode::ServFail, Vec::new(), Vec::new());
        }
        let (zone, servers) = self.closest(now, &task.current);
        task.zone = zone;
        task.servers = servers;
        task.tries = 0;
        task.extra = 0;
        let id = self.next_task;
        self.next_task += 1;
        self.tasks.insert(id, task);
        self.send(now, id)
    }

    /// The next query of task `tid` to its servers.
    fn send(&mut self, now: Instant, tid: u64) -> Vec<Out> {
        let Some(task) = self.tasks.get(&tid) else {
            return Vec::new();
        };
        if task.servers.is_empty() || task.tries >= self.attempts.max(task.servers.len()) {
            return self.fail(tid);
        }
        let server = task.servers[task.tries % task.servers.len()];
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.tries += 1;
        }
        self.query(now, tid, server, false)
    }

    /// The task's next question to the server that just answered.
    fn query_again(&mut self, now: Instant, tid: u64) -> Vec<Out> {
        let Some(task) = self.tasks.get(&tid) else {
            return Vec::new();
        };
        let server = task.servers[(task.tries.max(1) - 1) % task.servers.len()];
        self.query(now, tid, server, false)
    }

    /// The question for the task's servers: the current name and type, or with QNAME
    /// minimisation, the name one label (and `extra` more) below their zone, type A, while
    /// that is not the whole name.
    fn question(&self, task: &Task) -> Query {
        let full = Query::query(task.current.clone(), task.query.query_type());
        if !self.qname_minimisation {
            return full;
        }
        let want = task.zone.num_labels() as usize + 1 + task.extra;
        let have = task.current.num_labels() as usize;
        if want >= have {
            return full;
        }
        let mut n = task.current.clone();
        for _ in 0..have - want {
            n = n.base_name();
        }
        Query::query(n, RecordType::A)
    }

    /// Task `tid`'s current question to `server`, over UDP or TCP.
    fn query(&mut self, now: Instant, tid: u64, server: Ipv4Addr, tcp: bool) -> Vec<Out> {
        let Some(task) = self.tasks.get(&tid) else {
            return Vec::new();
        };
        let question = self.question(task);
        let ecs = self
            .ecs_zones
            .iter()
            .any(|z| z.zone_of(&task.zone))
            .then(|| task.subnet.trunc());
        let mut qid = self.random_u16();
        while self.inflight.contains_key(&qid) {
            qid = self.random_u16();
        }
        let mut m = Message::new(qid, MessageType::Query, OpCode::Query);
        m.add_query(question.clone());
        let mut e = Edns::new();
        e.set_max_payload(crate::EDNS_PAYLOAD);
        if let Some(net) = ecs {
            let sub = ClientSubnet::new(IpAddr::V4(net.network()), net.prefix_len(), 0);
            e.options_mut().insert(EdnsOption::Subnet(sub));
        }
        m.set_edns(e);
        let Ok(bytes) = m.to_vec() else {
            return self.fail(tid);
        };
        self.inflight.insert(
            qid,
            Inflight {
                task: tid,
                server,
                sent: now,
                ecs,
                tcp,
                question,
            },
        );
        self.c.upstream_queries += 1;
        vec![Out::Server {
            to: server,
            id: qid,
            bytes,
            tcp,
        }]
    }

    fn fail(&mut self, tid: u64) -> Vec<Out> {
        let Some(task) = self.tasks.remove(&tid) else {
            return Vec::new();
        };
        self.inflight.retain(|_, f| f.task != tid);
        self.c.servfail += 1;
        self.reply(&task, ResponseCode::ServFail, Vec::new(), Vec::new())
    }

    fn reply(
        &mut self,
        task: &Task,
        rcode: ResponseCode,
        answers: Vec<Record>,
        auth: Vec<Record>,
    ) -> Vec<Out> {
        let mut m = Message::response(task.id, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.metadata.response_code = rcode;
        m.add_query(task.query.clone());
        m.answers = answers;
        m.authorities = auth;
        if task.edns {
            let mut e = Edns::new();
            e.set_max_payload(crate::EDNS_PAYLOAD);
            // The client's ECS back, with the scope of the answer (RFC 7871 §7.2.2).
            if task.client_ecs {
                let net = task.subnet.trunc();
                let sub =
                    ClientSubnet::new(IpAddr::V4(net.network()), net.prefix_len(), task.scope);
                e.options_mut().insert(EdnsOption::Subnet(sub));
            }
            m.set_edns(e);
        }
        let mut bytes = m.to_vec().unwrap_or_default();
        if bytes.len() > task.limit {
            // Too big for the client's UDP: the header and question with TC; it asks again
            // over TCP.
            self.c.truncated += 1;
            bytes = m.truncate().to_vec().unwrap_or_default();
        }
        if let Some(parent) = task.parent {
            return self.resume(parent, &m);
        }
        vec![Out::Client {
            to: task.client,
            bytes,
        }]
    }

    /// A child resolution's answer for its parent: the name server's addresses to ask, or
    /// none (SERVFAIL for the parent).
    fn resume(&mut self, parent: u64, answer: &Message) -> Vec<Out> {
        let addrs: Vec<Ipv4Addr> = answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        let now = self.clock;
        match self.tasks.get_mut(&parent) {
            Some(p) if !addrs.is_empty() => {
                p.servers = addrs;
                p.tries = 0;
                self.send(now, parent)
            }
            Some(_) => self.fail(parent),
            None => Vec::new(),
        }
    }

    fn reply_cached(&mut self, task: &Task, e: Entry, left: u32) -> Vec<Out> {
        let mut answers = task.chain.clone();
        match e {
            Entry::Records(mut rs) => {
                for r in &mut rs {
                    r.ttl = left;
                }
                answers.extend(rs);
                self.reply(task, ResponseCode::NoError, answers, Vec::new())
            }
            Entry::Negative { nxdomain, soa } => {
                let mut soa = *soa;
                soa.ttl = left;
                let rcode = if nxdomain {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                self.reply(task, rcode, answers, vec![soa])
            }
        }
    }

    /// The timeouts that are due: the next server, or SERVFAIL.
    pub fn poll(&mut self, now: Instant) -> Vec<Out> {
        self.clock = now;
        let due: Vec<(u16, u64)> = self
            .inflight
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.sent) >= self.wait(f))
            .map(|(id, f)| (*id, f.task))
            .collect();
        let mut out = Vec::new();
        for (id, tid) in due {
            self.inflight.remove(&id);
            self.c.timeouts += 1;
            out.extend(self.send(now, tid));
        }
        out
    }

    /// How long an answer may take: twice as long over TCP (a handshake first).
    fn wait(&self, f: &Inflight) -> Duration {
        if f.tcp {
            self.timeout * 2
        } else {
            self.timeout
        }
    }

    /// When [`Resolver::poll`] wants to run next.
    pub fn poll_at(&self) -> Option<Instant> {
        self.inflight.values().map(|f| f.sent + self.wait(f)).min()
    }

    /// A server's answer to query `id`, from `from`.
    pub fn on_response(&mut self, now: Instant, from: Ipv4Addr, id: u16, bytes: &[u8]) -> Vec<Out> {
        self.clock = now;
        let Ok(msg) = Message::from_vec(bytes) else {
            self.c.unexpected_answers += 1;
            return Vec::new();
        };
        let Some(f) = self.inflight.get(&id).cloned() else {
            self.c.unexpected_answers += 1;
            return Vec::new();
        };
        let Some(task) = self.tasks.get(&f.task).cloned() else {
            self.inflight.remove(&id);
            return Vec::new();
        };
        // The answer must come from the server asked, about the question asked.
        let asked = f.question.clone();
        let minimised =
            asked.name() != &task.current || asked.query_type() != task.query.query_type();
        let same_q = msg.queries.len() == 1 && msg.queries[0].name() == asked.name();
        if from != f.server
            || msg.metadata.id != id
            || msg.metadata.message_type != MessageType::Response
            || !same_q
            || msg.queries[0].query_type() != asked.query_type()
        {
            self.c.unexpected_answers += 1;
            return Vec::new();
        }
        self.inflight.remove(&id);
        let tid = f.task;
        // Cut short to fit UDP: the same question over TCP to the same server (RFC 7766).
        if msg.metadata.truncation && !f.tcp {
            self.c.tcp_retries += 1;
            return self.query(now, tid, f.server, true);
        }
        // An answer to ECS holds for the subnet of its scope (cut to what was sent, RFC 7871
        // §7.3.1); without ECS back, or scope 0, for everyone.
        let scoped = f.ecs.and_then(|sent| {
            let Some(EdnsOption::Subnet(back)) =
                msg.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet))
            else {
                return None;
            };
            let same = back.addr() == IpAddr::V4(sent.network())
                && back.source_prefix() == sent.prefix_len();
            let scope = back.scope_prefix().min(sent.prefix_len());
            (same && scope > 0)
                .then(|| Ipv4Net::new(sent.network(), scope).map(|n| n.trunc()))?
                .ok()
        });
        self.step(now, tid, msg, scoped, minimised)
    }

    /// What an answer from the servers of `task.zone` means for task `tid`.
    fn step(
        &mut self,
        now: Instant,
        tid: u64,
        mut msg: Message,
        scoped: Option<Ipv4Net>,
        minimised: bool,
    ) -> Vec<Out> {
        let Some(mut task) = self.tasks.get(&tid).cloned() else {
            return Vec::new();
        };
        let zone = task.zone.clone();
        if minimised {
            // The answers are about a name above the one resolved: only a referral or
            // NXDOMAIN (nothing below it exists either, RFC 8020) tells something; else one
            // label more, from the same servers.
            msg.answers.clear();
            let cut = msg.authorities.iter().any(|r| {
                r.record_type() == RecordType::NS
                    && zone.zone_of(&r.name)
                    && r.name.num_labels() > zone.num_labels()
                    && r.name.zone_of(&task.current)
            });
            if msg.metadata.response_code == ResponseCode::NoError && !cut {
                task.extra += 1;
                self.tasks.insert(tid, task);
                return self.query_again(now, tid);
            }
        }
        let in_zone = |r: &Record| zone.zone_of(&r.name);
        let oob = msg
            .answers
            .iter()
            .chain(&msg.authorities)
            .chain(&msg.additionals)
            .filter(|r| !in_zone(r))
            .count();
        self.c.out_of_bailiwick += oob as u64;
        let qtype = task.query.query_type();
        match msg.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            _ => {
                // This server cannot answer: the next one.
                return self.send(now, tid);
            }
        }
        // Answers about the current name (and the CNAMEs from it), inside the zone.
        let mut name = task.current.clone();
        let mut progressed = false;
        loop {
            let here: Vec<Record> = msg
                .answers
                .iter()
                .filter(|r| in_zone(r) && r.name == name)
                .cloned()
                .collect();
            let wanted: Vec<Record> = here
                .iter()
                .filter(|r| r.record_type() == qtype)
                .cloned()
                .collect();
            if !wanted.is_empty() {
                let ttl = wanted.iter().map(|r| r.ttl).min().unwrap_or(0);
                let entry = Entry::Records(wanted.clone());
                match scoped {
                    Some(net) => {
                        self.put_scoped(now, &name, qtype, net, entry, ttl);
                        task.scope = net.prefix_len();
                    }
                    None => self.store(now, &name, qtype, entry, ttl),
                }
                self.tasks.remove(&tid);
                let mut answers = task.chain.clone();
                answers.extend(wanted);
                return self.reply(&task, ResponseCode::NoError, answers, Vec::new());
            }
            let Some(c) = here
                .iter()
                .find(|r| r.record_type() == RecordType::CNAME)
                .cloned()
            else {
                break;
            };
            let RData::CNAME(target) = c.data.clone() else {
                break;
            };
            self.store(
                now,
                &name,
                RecordType::CNAME,
                Entry::Records(vec![c.clone()]),
                c.ttl,
            );
            task.chain.push(c);
            task.steps += 1;
            name = target.0;
            progressed = true;
            if task.steps > MAX_STEPS {
                self.tasks.insert(tid, task);
                return self.fail(tid);
            }
        }
        task.current = name.clone();
        let soa = msg
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA && in_zone(r) && r.name.zone_of(&name))
            .cloned();
        if msg.metadata.response_code == ResponseCode::NXDomain {
            if let Some(soa) = soa {
                return self.negative(now, tid, &task, &name, soa, true);
            }
            self.tasks.insert(tid, task);
            return self.fail(tid);
        }
        // A referral: NS for a zone below the one asked, above the name.
        let cut = msg
            .authorities
            .iter()
            .filter(|r| r.record_type() == RecordType::NS)
            .map(|r| r.name.clone())
            .find(|c| zone.zone_of(c) && c.num_labels() > zone.num_labels() && c.zone_of(&name));
        if let Some(cut) = cut {
            let ns: Vec<Record> = msg
                .authorities
                .iter()
                .filter(|r| r.record_type() == RecordType::NS && r.name == cut)
                .cloned()
                .collect();
            let ttl = ns.iter().map(|r| r.ttl).min().unwrap_or(0);
            self.store_glue(now, &cut, RecordType::NS, Entry::Records(ns.clone()), ttl);
            // Glue: only addresses of these servers, only inside the zone asked.
            let mut servers = Vec::new();
            for r in &ns {
                let RData::NS(t) = &r.data else { continue };
                let glue: Vec<Record> = msg
                    .additionals
                    .iter()
                    .filter(|a| a.name == t.0 && a.record_type() == RecordType::A && in_zone(a))
                    .cloned()
                    .collect();
                if let Some(g) = glue.first() {
                    self.store_glue(
                        now,
                        &t.0,
                        RecordType::A,
                        Entry::Records(glue.clone()),
                        g.ttl,
                    );
                }
                servers.extend(glue.iter().filter_map(|g| match &g.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                }));
            }
            if servers.is_empty() {
                // Glueless: the servers' addresses from the cache, else resolved first (the
                // first server's name, from the root down), then on from there.
                self.c.glueless += 1;
                let names = ns_names(&ns);
                servers = self.known_addrs(now, &names);
                if servers.is_empty() {
                    let (Some(first), true) = (names.first(), task.depth < MAX_DEPTH) else {
                        self.tasks.insert(tid, task);
                        return self.fail(tid);
                    };
                    task.steps += 1;
                    task.zone = cut;
                    task.extra = 0;
                    let child = Task {
                        client: task.client,
                        id: 0,
                        query: Query::query(first.clone(), RecordType::A),
                        edns: true,
                        subnet: task.subnet,
                        client_ecs: false,
                        scope: 0,
                        limit: usize::from(u16::MAX),
                        chain: Vec::new(),
                        current: first.clone(),
                        zone: Name::root(),
                        servers: Vec::new(),
                        tries: 0,
                        steps: task.steps,
                        extra: 0,
                        parent: Some(tid),
                        depth: task.depth + 1,
                    };
                    self.tasks.insert(tid, task);
                    return self.start(now, child);
                }
            }
            task.steps += 1;
            if task.steps > MAX_STEPS {
                self.tasks.insert(tid, task);
                return self.fail(tid);
            }
            task.zone = cut;
            task.servers = servers;
            task.tries = 0;
            task.extra = 0;
            self.tasks.insert(tid, task);
            return self.send(now, tid);
        }
        if progressed {
            // A CNAME whose target this server does not answer: from the closest servers.
            self.tasks.remove(&tid);
            return self.start(now, task);
        }
        // NODATA.
        if let Some(soa) = soa {
            return self.negative(now, tid, &task, &name, soa, false);
        }
        self.tasks.insert(tid, task);
        self.fail(tid)
    }
}

impl Resolver {
    /// A negative answer for `name` (NXDOMAIN or NODATA): cached for the negative TTL, and
    /// the client told, with the CNAMEs that led there.
    fn negative(
        &mut self,
        now: Instant,
        tid: u64,
        task: &Task,
        name: &Name,
        soa: Record,
        nxdomain: bool,
    ) -> Vec<Out> {
        let ttl = negative_ttl(&soa);
        let qtype = task.query.query_type();
        let entry = Entry::Negative {
            nxdomain,
            soa: Box::new(soa.clone()),
        };
        self.store(now, name, qtype, entry, ttl);
        let mut s = soa;
        s.ttl = ttl;
        self.tasks.remove(&tid);
        let rcode = if nxdomain {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        };
        self.reply(task, rcode, task.chain.clone(), vec![s])
    }
}

/// The server names of an NS set.
fn ns_names(ns: &[Record]) -> Vec<Name> {
    ns.iter()
        .filter_map(|r| match &r.data {
            RData::NS(t) => Some(t.0.clone()),
            _ => None,
        })
        .collect()
}

/// The negative TTL: the smaller of the SOA's TTL and its MINIMUM (RFC 2308 §5).
fn negative_ttl(soa: &Record) -> u32 {
    match &soa.data {
        RData::SOA(s) => soa.ttl.min(s.minimum),
        _ => soa.ttl,
    }
}
