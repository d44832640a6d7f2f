//! The carrier NAT: a [`d11_router::Router`] whose [`Hook`] translates (NAPT, RFC 4787 for
//! UDP, RFC 5382 for TCP, RFC 5508 for ICMP).
//!
//! - Mapping is endpoint-independent: an internal (address, port) keeps one external
//!   (address, port) whatever it talks to (REQ-1). The external address is paired: one internal
//!   address always gets the same pool address (REQ-2). The internal port is kept when it is
//!   free (port preservation).
//! - Filtering is endpoint-independent (any remote may send to a mapping) or address-dependent
//!   (only remotes the internal endpoint has sent to), set by `filtering`.
//! - Timeouts: UDP 2 min (REQ-5), TCP established 2 h 4 min and transitory 4 min (RFC 5382
//!   REQ-5), ICMP queries 60 s. Time is passed in; tests move it by hand.
//! - ICMP errors from outside about a mapped flow reach the internal host with the outer
//!   destination and the embedded header translated back, checksums fixed (RFC 5508 REQ-3), so
//!   traceroute works through it.
//! - Hairpinning: an internal host reaching another one through its external address gets
//!   there, seen from the first host's external address (REQ-9).
//! - The table is bounded (`max_mappings`); new flows past it are dropped and counted.

use d11_element::{counters, PortId};
use d11_router::program::{Outbox, RouterElement, RouterProgram};
use d11_router::{Hook, HookVerdict, Router, RouterConfig};
use d11_wire::{checksum_adjust as adjust, fill_ipv4_checksum, internet_checksum};
use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    EndpointIndependent,
    AddressDependent,
}

/// The NAT's own settings (the `nat` table of its node).
#[derive(Debug, Clone, Deserialize)]
pub struct NatSettings {
    /// Ports facing the subscribers (the PGW's SGi side).
    pub inside: Vec<String>,
    /// The port facing the carrier's network.
    pub outside: String,
    /// Public addresses: "198.51.100.10-19", or a list of such ranges / addresses.
    pub pool: Vec<String>,
    #[serde(default = "default_filtering")]
    pub filtering: Filtering,
    #[serde(default = "default_max")]
    pub max_mappings: usize,
    #[serde(default)]
    pub timeouts: Timeouts,
}

fn default_filtering() -> Filtering {
    Filtering::EndpointIndependent
}
fn default_max() -> usize {
    65536
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Timeouts {
    pub udp_s: u64,
    pub tcp_established_s: u64,
    pub tcp_transitory_s: u64,
    pub icmp_s: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            udp_s: 120,
            tcp_established_s: 7440,
            tcp_transitory_s: 240,
            icmp_s: 60,
        }
    }
}

/// The NAT's config: a router's, plus `nat`.
#[derive(Debug, Clone, Deserialize)]
pub struct NatConfig {
    #[serde(flatten)]
    pub router: RouterConfig,
    pub nat: NatSettings,
}

/// Parses "a.b.c.d", "a.b.c.d-e" (last octet range) or "a.b.c.d-a.b.c.e".
pub fn parse_pool(items: &[String]) -> anyhow::Result<Vec<Ipv4Addr>> {
    let mut out = Vec::new();
    for it in items {
        match it.split_once('-') {
            None => out.push(
                it.parse()
                    .map_err(|_| anyhow::anyhow!("pool: bad address {it:?}"))?,
            ),
            Some((a, b)) => {
                let a: Ipv4Addr = a
                    .parse()
                    .map_err(|_| anyhow::anyhow!("pool: bad address in {it:?}"))?;
                let b: Ipv4Addr = match b.parse::<u8>() {
                    Ok(last) => Ipv4Addr::new(a.octets()[0], a.octets()[1], a.octets()[2], last),
                    Err(_) => b
                        .parse()
                        .map_err(|_| anyhow::anyhow!("pool: bad range {it:?}"))?,
                };
                let (x, y) = (u32::from(a), u32::from(b));
                if y < x || y - x > 65535 {
                    anyhow::bail!("pool: bad range {it:?}");
                }
                out.extend((x..=y).map(Ipv4Addr::from));
            }
        }
    }
    if out.is_empty() {
        anyhow::bail!("pool: no addresses");
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// An (address, port) pair; for ICMP queries the port is the identifier.
pub type Ep = (Ipv4Addr, u16);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpState {
    /// Opening or closing: the short timeout.
    Transitory,
    Established,
}

#[derive(Debug, Clone)]
struct Mapping {
    external: Ep,
    created: Instant,
    last: Instant,
    tcp: TcpState,
    syn_out: bool,
    syn_in: bool,
    fin_out: bool,
    fin_in: bool,
    /// Remote addresses the internal endpoint has sent to (address-dependent filtering).
    remotes: Vec<Ipv4Addr>,
}

counters! {
    pub struct NatCounters {
        translated_out,
        translated_in,
        mappings_created,
        mappings_expired,
        refused_full,
        refused_no_port,
        unsolicited_dropped,
        filtered_dropped,
        icmp_errors_translated,
        icmp_errors_unmatched,
        hairpinned,
        fragments_dropped,
        untranslatable_dropped,
    }
}

/// The translation table.
pub struct Table {
    inside: Vec<PortId>,
    outside: PortId,
    pool: Vec<Ipv4Addr>,
    filtering: Filtering,
    max: usize,
    t: Timeouts,
    // foldhash, not std's SipHash: a lookup or two on every frame. Its seed is random in each
    // process (hashbrown's default hasher), and the table is bounded by `max` whatever keys
    // the subscribers choose.
    by_internal: HashMap<(Proto, Ep), Mapping>,
    by_external: HashMap<(Proto, Ep), Ep>,
    paired: HashMap<Ipv4Addr, Ipv4Addr>,
    next_sweep: Option<Instant>,
    /// Set by prerouting for a hairpinned packet, taken by its postrouting.
    hairpin: bool,
    /// The packets seen now have a partial transport checksum (an offloaded super-frame the
    /// router forwards whole): see [`rewrite`].
    partial: bool,
    /// (Empty: the NAT sends nothing of its own.)
    outbox: Outbox,
    pub c: NatCounters,
}

/// Where the transport fields of a packet are, for rewriting.
struct Flow {
    proto: Proto,
    /// Offsets of source and destination port (ICMP: identifier at both).
    sport: usize,
    dport: usize,
    /// Offset of the transport checksum; None for UDP checksum 0 (none).
    csum: Option<usize>,
    /// TCP flags octet.
    flags: u8,
}

fn addr(ip: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3])
}

fn port(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Finds the transport fields of `ip` (whole packet); None if it cannot be translated.
fn flow(ip: &[u8], quoted: bool) -> Option<Flow> {
    let ihl = d11_wire::ip::header_len(ip);
    let l4 = ip.get(ihl..)?;
    match ip[9] {
        6 => {
            // A quoted TCP header may stop after 8 octets: the checksum is then not there.
            let has_csum = l4.len() >= 18;
            if l4.len() < if quoted { 8 } else { 20 } {
                return None;
            }
            Some(Flow {
                proto: Proto::Tcp,
                sport: ihl,
                dport: ihl + 2,
                csum: has_csum.then_some(ihl + 16),
                flags: if l4.len() > 13 { l4[13] } else { 0 },
            })
        }
        17 => {
            if l4.len() < 8 {
                return None;
            }
            let csum = (port(l4, 6) != 0).then_some(ihl + 6);
            Some(Flow {
                proto: Proto::Udp,
                sport: ihl,
                dport: ihl + 2,
                csum,
                flags: 0,
            })
        }
        1 => {
            if l4.len() < 8 || !matches!(l4[0], 0 | 8 | 13 | 14) {
                return None;
            }
            Some(Flow {
                proto: Proto::Icmp,
                sport: ihl + 4,
                dport: ihl + 4,
                csum: Some(ihl + 2),
                flags: 0,
            })
        }
        _ => None,
    }
}

/// Rewrites the address at `a_at` and the port at `p_at` of `ip`, updating the IP header
/// checksum (with `fix_ip`) and (if present) the transport checksum at `csum` (which covers the pseudo-header
/// for TCP and UDP, not for ICMP).
///
/// With `partial` (an offloaded packet: the field holds the pseudo-header's sum, not
/// complemented, and the rest is summed later from the transport header on), only the address
/// is folded in, the other way round; the port is part of what is summed later.
fn rewrite(
    ip: &mut [u8],
    a_at: usize,
    p_at: usize,
    new: Ep,
    f: &Flow,
    fix_ip: bool,
    partial: bool,
) {
    let old_a = [ip[a_at], ip[a_at + 1], ip[a_at + 2], ip[a_at + 3]];
    let old_p = [ip[p_at], ip[p_at + 1]];
    let na = new.0.octets();
    let np = new.1.to_be_bytes();
    if partial {
        if let Some(c) = f
            .csum
            .filter(|c| c + 2 <= ip.len() && f.proto != Proto::Icmp)
        {
            let s = !adjust(!port(ip, c), &old_a, &na);
            ip[c..c + 2].copy_from_slice(&s.to_be_bytes());
        }
    } else if let Some(c) = f.csum {
        if c + 2 <= ip.len() {
            let mut sum = port(ip, c);
            if f.proto != Proto::Icmp {
                sum = adjust(sum, &old_a, &na);
            }
            sum = adjust(sum, &old_p, &np);
            if f.proto == Proto::Udp && sum == 0 {
                sum = 0xffff;
            }
            ip[c..c + 2].copy_from_slice(&sum.to_be_bytes());
        }
    }
    ip[a_at..a_at + 4].copy_from_slice(&na);
    ip[p_at..p_at + 2].copy_from_slice(&np);
    if fix_ip {
        // RFC 1624, as for the transport checksum: the header's was checked on the way in
        // (or, quoted in an ICMP error, is the sender's to keep).
        let s = adjust(u16::from_be_bytes([ip[10], ip[11]]), &old_a, &na);
        ip[10..12].copy_from_slice(&s.to_be_bytes());
    }
}

impl Table {
    pub fn new(s: &NatSettings, ports: &[d11_element::PortConfig]) -> anyhow::Result<Self> {
        let find = |n: &str| {
            ports
                .iter()
                .position(|p| p.name == n)
                .ok_or_else(|| anyhow::anyhow!("nat: no port named {n:?}"))
        };
        let inside = s
            .inside
            .iter()
            .map(|n| find(n))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let outside = find(&s.outside)?;
        if inside.contains(&outside) {
            anyhow::bail!("nat: port {} is both inside and outside", s.outside);
        }
        Ok(Self {
            inside,
            outside,
            pool: parse_pool(&s.pool)?,

            filtering: s.filtering,
            max: s.max_mappings,
            t: s.timeouts.clone(),
            by_internal: HashMap::default(),
            by_external: HashMap::default(),
            paired: HashMap::default(),
            next_sweep: None,
            hairpin: false,
            partial: false,
            outbox: Outbox::default(),
            c: NatCounters::default(),
        })
    }

    pub fn pool(&self) -> &[Ipv4Addr] {
        &self.pool
    }

    pub fn outside(&self) -> PortId {
        self.outside
    }

    fn timeout(&self, p: Proto, m: &Mapping) -> Duration {
        Duration::from_secs(match (p, m.tcp) {
            (Proto::Udp, _) => self.t.udp_s,
            (Proto::Icmp, _) => self.t.icmp_s,
            (Proto::Tcp, TcpState::Established) => self.t.tcp_established_s,
            (Proto::Tcp, TcpState::Transitory) => self.t.tcp_transitory_s,
        })
    }

    /// The external endpoint of an internal one, made if new (None: table full, no port).
    fn map(&mut self, now: Instant, p: Proto, internal: Ep) -> Option<Ep> {
        if let Some(m) = self.by_internal.get(&(p, internal)) {
            return Some(m.external);
        }
        if self.by_internal.len() >= self.max {
            self.c.refused_full += 1;
            return None;
        }
        let n = self.pool.len();
        let ext_ip = *self.paired.entry(internal.0).or_insert_with(|| {
            let h = u32::from(internal.0).wrapping_mul(2_654_435_761);
            self.pool[(h as usize) % n]
        });
        // Port preservation when free; else the next free one above 1024.
        let wanted = internal.1;
        let free = |port: u16| !self.by_external.contains_key(&(p, (ext_ip, port)));
        let port = if wanted >= 1024 && free(wanted) || p == Proto::Icmp && free(wanted) {
            Some(wanted)
        } else {
            (0..64512u32)
                .map(|i| 1024 + ((u32::from(wanted) + i) % 64512) as u16)
                .find(|&q| free(q))
        };
        let Some(port) = port else {
            self.c.refused_no_port += 1;
            return None;
        };
        let ext = (ext_ip, port);
        self.by_internal.insert(
            (p, internal),
            Mapping {
                external: ext,
                created: now,
                last: now,
                tcp: TcpState::Transitory,
                syn_out: false,
                syn_in: false,
                fin_out: false,
                fin_in: false,
                remotes: Vec::new(),
            },
        );
        self.by_external.insert((p, ext), internal);
        self.c.mappings_created += 1;
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + Duration::from_secs(1));
        }
        Some(ext)
    }

    fn track(m: &mut Mapping, now: Instant, flags: u8, outbound: bool, remote: Ipv4Addr) {
        m.last = now;
        if outbound && !m.remotes.contains(&remote) && m.remotes.len() < 64 {
            m.remotes.push(remote);
        }
        let (syn, fin, rst, ack) = (
            flags & 0x02 != 0,
            flags & 0x01 != 0,
            flags & 0x04 != 0,
            flags & 0x10 != 0,
        );
        if outbound {
            m.syn_out |= syn;
            m.fin_out |= fin;
        } else {
            m.syn_in |= syn;
            m.fin_in |= fin;
        }
        m.tcp = if rst || m.fin_out && m.fin_in {
            TcpState::Transitory
        } else if m.syn_out && m.syn_in && ack {
            TcpState::Established
        } else {
            m.tcp
        };
    }

    fn outbound(&mut self, now: Instant, ip: &mut [u8]) -> HookVerdict {
        let Some(f) = flow(ip, false) else {
            self.c.untranslatable_dropped += 1;
            return HookVerdict::Drop;
        };
        let src = (addr(ip, 12), port(ip, f.sport));
        let dst = addr(ip, 16);
        // An existing mapping is looked up once; a new one is made, then tracked.
        let ext = match self.by_internal.get_mut(&(f.proto, src)) {
            Some(m) => {
                Self::track(m, now, f.flags, true, dst);
                m.external
            }
            None => {
                let Some(ext) = self.map(now, f.proto, src) else {
                    return HookVerdict::Drop;
                };
                if let Some(m) = self.by_internal.get_mut(&(f.proto, src)) {
                    Self::track(m, now, f.flags, true, dst);
                }
                ext
            }
        };
        rewrite(ip, 12, f.sport, ext, &f, true, self.partial);
        self.c.translated_out += 1;
        HookVerdict::Continue
    }

    /// Translates a packet for an external endpoint back to its internal one.
    fn inbound(&mut self, now: Instant, ip: &mut [u8], hairpin: bool) -> HookVerdict {
        let Some(f) = flow(ip, false) else {
            self.c.untranslatable_dropped += 1;
            return HookVerdict::Drop;
        };
        let dst = (addr(ip, 16), port(ip, f.dport));
        let src = addr(ip, 12);
        let Some(&internal) = self.by_external.get(&(f.proto, dst)) else {
            self.c.unsolicited_dropped += 1;
            return HookVerdict::Drop;
        };
        let filtering = self.filtering;
        let Some(m) = self.by_internal.get_mut(&(f.proto, internal)) else {
            self.c.unsolicited_dropped += 1;
            return HookVerdict::Drop;
        };
        if filtering == Filtering::AddressDependent && !hairpin && !m.remotes.contains(&src) {
            self.c.filtered_dropped += 1;
            return HookVerdict::Drop;
        }
        Self::track(m, now, f.flags, false, src);
        rewrite(ip, 16, f.dport, internal, &f, true, self.partial);
        self.c.translated_in += 1;
        HookVerdict::Continue
    }

    /// An ICMP error from outside: the embedded packet is one we sent (source = external).
    fn inbound_icmp_error(&mut self, ip: &mut [u8]) -> HookVerdict {
        let ihl = d11_wire::ip::header_len(ip);
        let emb_at = ihl + 8;
        let Some(emb) = ip.get(emb_at..) else {
            return HookVerdict::Drop;
        };
        if emb.len() < 20 || emb[0] >> 4 != 4 {
            self.c.icmp_errors_unmatched += 1;
            return HookVerdict::Drop;
        }
        let eihl = d11_wire::ip::header_len(emb);
        let Some(f) = flow(emb, true) else {
            self.c.icmp_errors_unmatched += 1;
            return HookVerdict::Drop;
        };
        if emb.len() < eihl + 8 {
            self.c.icmp_errors_unmatched += 1;
            return HookVerdict::Drop;
        }
        let esrc = (addr(emb, 12), port(emb, f.sport));
        let Some(&internal) = self.by_external.get(&(f.proto, esrc)) else {
            self.c.icmp_errors_unmatched += 1;
            return HookVerdict::Drop;
        };
        // Embedded: source back to internal (its IP checksum; its transport checksum if quoted).
        let emb = &mut ip[emb_at..];
        rewrite(emb, 12, f.sport, internal, &f, true, false);
        // Outer: destination to the internal host; ICMP checksum over the whole message.
        ip[16..20].copy_from_slice(&internal.0.octets());
        fill_ipv4_checksum(&mut ip[..ihl]);
        ip[ihl + 2] = 0;
        ip[ihl + 3] = 0;
        let sum = internet_checksum(&ip[ihl..]);
        ip[ihl + 2..ihl + 4].copy_from_slice(&sum.to_be_bytes());
        self.c.icmp_errors_translated += 1;
        HookVerdict::Continue
    }

    fn sweep(&mut self, now: Instant) {
        let before = self.by_internal.len();
        let mut expired = Vec::new();
        for (k, m) in &self.by_internal {
            if now.saturating_duration_since(m.last) >= self.timeout(k.0, m) {
                expired.push(*k);
            }
        }
        for k in expired {
            if let Some(m) = self.by_internal.remove(&k) {
                self.by_external.remove(&(k.0, m.external));
            }
        }
        self.c.mappings_expired += (before - self.by_internal.len()) as u64;
        self.next_sweep = (!self.by_internal.is_empty()).then(|| now + Duration::from_secs(1));
    }

    /// The mappings, for `d11 show NODE mappings`.
    pub fn view(&self, now: Instant) -> serde_json::Value {
        let mut rows: Vec<_> = self
            .by_internal
            .iter()
            .map(|(k, m)| {
                let idle = now.saturating_duration_since(m.last);
                json!({
                    "proto": k.0,
                    "internal": format!("{}:{}", k.1 .0, k.1 .1),
                    "external": format!("{}:{}", m.external.0, m.external.1),
                    "state": if k.0 == Proto::Tcp { json!(m.tcp) } else { json!(null) },
                    "age_s": now.saturating_duration_since(m.created).as_secs(),
                    "idle_s": idle.as_secs(),
                    "expires_in_s": self.timeout(k.0, m).saturating_sub(idle).as_secs(),
                    "remotes": m.remotes.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        rows.sort_by(|a, b| a["internal"].as_str().cmp(&b["internal"].as_str()));
        json!(rows)
    }

    pub fn len(&self) -> usize {
        self.by_internal.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_internal.is_empty()
    }
}

impl Hook for Table {
    fn offload(&mut self, gso: &d11_wire::gso::Gso) {
        self.partial = gso.flags & d11_wire::gso::NEEDS_CSUM != 0;
    }

    /// Destination translation: packets from outside to the pool (and ICMP errors about
    /// them), and the destination half of hairpinning.
    fn prerouting(&mut self, now: Instant, in_port: PortId, ip: &mut [u8]) -> HookVerdict {
        let dst = addr(ip, 16);
        let to_pool = self.pool.contains(&dst);
        let from_inside = self.inside.contains(&in_port);
        self.hairpin = false;
        if !to_pool || !(from_inside || in_port == self.outside) {
            return HookVerdict::Continue;
        }
        if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
            // Non-first fragments carry no ports; we do not reassemble.
            self.c.fragments_dropped += 1;
            return HookVerdict::Drop;
        }
        let ihl = d11_wire::ip::header_len(ip);
        if !from_inside && ip[9] == 1 && ip.len() > ihl && matches!(ip[ihl], 3 | 11 | 12) {
            return self.inbound_icmp_error(ip);
        }
        if from_inside {
            // Hairpin: the destination goes back in now; the source goes out in postrouting.
            self.hairpin = true;
            self.c.hairpinned += 1;
        }
        self.inbound(now, ip, from_inside)
    }

    /// Source translation: packets from inside leaving by the outside port, and the source
    /// half of hairpinning.
    fn postrouting(
        &mut self,
        now: Instant,
        in_port: PortId,
        out_port: PortId,
        ip: &mut [u8],
    ) -> HookVerdict {
        let hairpin = std::mem::take(&mut self.hairpin);
        if !self.inside.contains(&in_port) || !(out_port == self.outside || hairpin) {
            return HookVerdict::Continue;
        }
        if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
            self.c.fragments_dropped += 1;
            return HookVerdict::Drop;
        }
        self.outbound(now, ip)
    }
}

/// The NAT element: a router with the table as its hook.
/// The NAT: a router whose hook is the mapping table.
pub type Nat = RouterElement<Table>;

/// Builds the NAT: the router, with proxy ARP for the public pool on the outside port.
pub fn new(cfg: &NatConfig) -> anyhow::Result<Nat> {
    let mut router = Router::new(&cfg.router)?;
    let table = Table::new(&cfg.nat, &cfg.router.ports)?;
    for a in table.pool() {
        router.add_proxy_arp(table.outside(), *a);
    }
    Ok(RouterElement::new(router, table))
}

impl RouterProgram for Table {
    fn role(&self) -> &'static str {
        "nat"
    }

    /// Super-frames are translated whole: the table rewrites a partial checksum as such.
    fn takes_gso(&self) -> bool {
        true
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    fn poll_at(&self) -> Option<Instant> {
        self.next_sweep
    }

    fn poll(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.sweep(now);
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        &["mappings"]
    }

    fn show(&self, table: &str, now: Instant) -> Option<serde_json::Value> {
        (table == "mappings").then(|| self.view(now))
    }

    fn counters(&self, out: &mut dyn FnMut(&str, u64)) {
        self.c.for_each(out);
    }
}

#[cfg(test)]
mod tests;
