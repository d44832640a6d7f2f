//! What the eNodeB, SGW and PGW share: each is a [`Router`] (ARP, ping, ICMP errors, routes,
//! next-hop resolution) whose [`Hook::local`] takes the UDP ports of its protocols (GTP-U 2152,
//! GTPv2-C 2123, S1 signalling), and which sends its own datagrams with
//! [`Router::send_udp`]. Also here: GTP-U path supervision (Echo with the Recovery counter)
//! and the restart counter kept across restarts.

use crate::tunnel::{Endpoint, Received};
use d11_element::counters;
pub use d11_router::udp::{parse_udp, Datagram, Udp, UdpError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The restart counter of a GTP entity (TS 23.007 §18): read from `file`, one more than last
/// time, written back. A missing or unreadable file starts at 1.
pub fn next_recovery(file: &Path) -> u8 {
    let last = std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .unwrap_or(0);
    let next = last.wrapping_add(1);
    if let Err(e) = std::fs::write(file, format!("{next}\n")) {
        tracing::warn!(file = %file.display(), error = %e, "cannot keep the restart counter");
    }
    next
}

/// Where a program keeps its restart counter: beside its config file.
pub fn recovery_file(config: Option<&Path>, node: &str) -> Option<std::path::PathBuf> {
    let dir = config?.parent()?;
    Some(dir.join(format!("{node}.recovery")))
}

/// One GTP-U path (local address to peer) under Echo supervision.
#[derive(Debug, Clone, Default)]
struct PathState {
    echo_sent: u64,
    echo_answered: u64,
    /// Echo Requests without an answer since the last one answered.
    outstanding: u32,
    recovery: Option<u8>,
    peer_restarts: u64,
    last_answer: Option<Instant>,
    next_echo: Option<Instant>,
}

/// GTP-U path supervision (TS 29.281 §7.2.1): an Echo Request to each peer every `interval`;
/// a changed Recovery in the answer means the peer restarted.
#[derive(Debug)]
pub struct Paths {
    interval: Duration,
    /// The UDP port of the protocol: GTP-U (2152) or GTPv2-C (2123).
    port: u16,
    paths: BTreeMap<(Ipv4Addr, Ipv4Addr), PathState>,
}

impl Paths {
    /// GTP-U paths.
    pub fn new(interval: Duration) -> Self {
        Self::on_port(interval, d11_wire::gtpu::UDP_PORT)
    }

    /// Paths of the protocol on UDP `port` (GTPv2-C: TS 29.274 §7.1 supervises its peers the
    /// same way, and there the Recovery is what tells a restart).
    pub fn on_port(interval: Duration, port: u16) -> Self {
        Self {
            interval,
            port,
            paths: BTreeMap::new(),
        }
    }

    /// Supervises the path from `local` to `peer` (idempotent).
    pub fn watch(&mut self, now: Instant, local: Ipv4Addr, peer: Ipv4Addr) {
        let interval = self.interval;
        let p = self.paths.entry((local, peer)).or_default();
        if p.next_echo.is_none() && !interval.is_zero() {
            p.next_echo = Some(now + interval);
        }
    }

    pub fn poll_at(&self) -> Option<Instant> {
        self.paths.values().filter_map(|p| p.next_echo).min()
    }

    /// Sends the Echo Requests that are due; `echo(local)` writes one from the endpoint at
    /// `local`.
    pub fn poll(
        &mut self,
        now: Instant,
        mut echo: impl FnMut(Ipv4Addr) -> Option<Vec<u8>>,
        out: &mut Vec<Datagram>,
    ) {
        let (interval, port) = (self.interval, self.port);
        for ((local, peer), p) in self.paths.iter_mut() {
            if p.next_echo.is_some_and(|t| t <= now) {
                p.next_echo = Some(now + interval);
                let Some(payload) = echo(*local) else {
                    continue;
                };
                p.echo_sent += 1;
                p.outstanding += 1;
                out.push(Datagram {
                    src: *local,
                    dst: *peer,
                    sport: port,
                    dport: port,
                    payload,
                });
            }
        }
    }

    /// [`poll`](Self::poll) for an element with one GTP-U endpoint: its Echo Requests.
    pub fn poll_echo(&mut self, now: Instant, ep: &mut Endpoint, out: &mut Vec<Datagram>) {
        self.poll(
            now,
            |_| {
                let mut b = Vec::new();
                ep.echo_request(&mut b);
                Some(b)
            },
            out,
        );
    }

    /// An Echo Response from `peer` to `local`; returns true if the peer restarted.
    pub fn answered(
        &mut self,
        now: Instant,
        local: Ipv4Addr,
        peer: Ipv4Addr,
        recovery: Option<u8>,
    ) -> bool {
        let p = self.paths.entry((local, peer)).or_default();
        p.echo_answered += 1;
        p.outstanding = 0;
        p.last_answer = Some(now);
        self.peer_recovery(local, peer, recovery)
    }

    /// The peer's restart counter, from any message that carries one; true if it changed
    /// (the peer restarted).
    pub fn peer_recovery(&mut self, local: Ipv4Addr, peer: Ipv4Addr, recovery: Option<u8>) -> bool {
        let p = self.paths.entry((local, peer)).or_default();
        let restarted = matches!((p.recovery, recovery), (Some(a), Some(b)) if a != b);
        if restarted {
            p.peer_restarts += 1;
        }
        if recovery.is_some() {
            p.recovery = recovery;
        }
        restarted
    }

    pub fn view(&self, now: Instant) -> Value {
        json!(self
            .paths
            .iter()
            .map(|((l, r), p)| json!({
                "local": l.to_string(),
                "peer": r.to_string(),
                "state": if p.outstanding >= 3 { "down" } else if p.echo_answered > 0 { "up" } else { "unknown" },
                "echo_sent": p.echo_sent,
                "echo_answered": p.echo_answered,
                "peer_recovery": p.recovery,
                "peer_restarts": p.peer_restarts,
                "last_answer_s_ago": p.last_answer.map(|t| now.saturating_duration_since(t).as_secs_f64()),
            }))
            .collect::<Vec<_>>())
    }
}

// What every GTP-U element counts about its paths.
counters! {
    pub struct PathCounters {
        error_indications_received,
        end_markers_received,
        peer_restarts,
    }
}

/// What a GTP-U message comes to once [`receive_gtpu`] did the common part.
#[derive(Debug)]
pub enum Gtpu<'a> {
    /// A T-PDU for one of our tunnels.
    Deliver { local_teid: u32, tpdu: &'a [u8] },
    /// The end of a tunnel's traffic on this path.
    EndMarker { local_teid: u32 },
    /// Answered, counted or dropped.
    Done,
}

/// Where [`receive_gtpu`] leaves its effects.
pub struct GtpuIo<'x> {
    pub paths: &'x mut Paths,
    pub out: &'x mut Vec<Datagram>,
    pub c: &'x mut PathCounters,
    pub reply: &'x mut Vec<u8>,
}

/// A GTP-U message from `from` to our endpoint `ep` at `local`: what every element does with
/// it. Echo Requests are answered, and so are an unknown TEID (Error Indication) and an
/// unknown required extension (notification); an Echo Response updates the path (a changed
/// Recovery is a peer restart); a received Error Indication is counted and logged. T-PDUs and
/// End Markers are the caller's.
pub fn receive_gtpu<'a>(
    ep: &mut Endpoint,
    payload: &'a [u8],
    now: Instant,
    local: Ipv4Addr,
    from: Ipv4Addr,
    io: GtpuIo<'_>,
) -> Gtpu<'a> {
    let answer = |out: &mut Vec<Datagram>, reply: &[u8]| {
        out.push(Datagram {
            src: local,
            dst: from,
            sport: d11_wire::gtpu::UDP_PORT,
            dport: d11_wire::gtpu::UDP_PORT,
            payload: reply.to_vec(),
        })
    };
    match ep.receive(from, payload, io.reply) {
        Received::Deliver { local_teid, tpdu } => return Gtpu::Deliver { local_teid, tpdu },
        Received::EndMarker { local_teid } => {
            io.c.end_markers_received += 1;
            return Gtpu::EndMarker { local_teid };
        }
        Received::Reply => answer(io.out, io.reply),
        Received::EchoResponse { recovery } => {
            if io.paths.answered(now, local, from, recovery) {
                io.c.peer_restarts += 1;
                tracing::warn!(peer = %from, "GTP-U peer restarted (Recovery changed)");
            }
        }
        Received::ErrorIndication { teid } => {
            // TS 29.281 §7.3.1: the peer has no such tunnel.
            io.c.error_indications_received += 1;
            tracing::warn!(peer = %from, teid, "Error Indication");
        }
        // An unknown TEID draws an Error Indication, an unknown extension a notification.
        Received::Dropped(_) if !io.reply.is_empty() => answer(io.out, io.reply),
        Received::Dropped(_) => {}
    }
    Gtpu::Done
}

/// A GTP-U datagram that an element may handle where it lies, split from its IPv4 header.
pub struct InPlace<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub header: &'a mut [u8],
    pub udp: &'a mut [u8],
}

/// The GTP-U datagram in `ip` if it is one a fast path may take: read by [`parse_udp`] (its
/// length and checksum right), in IPv4 without options, not a fragment, to the GTP-U port,
/// filling the packet, with room for a GTP-U header. `None` for anything else, which the
/// slow path ([`parse_udp`] and [`receive_gtpu`]) handles and counts.
pub fn gtpu_in_place(ip: &mut [u8]) -> Option<InPlace<'_>> {
    if ip.len() < 20 || ip[0] != 0x45 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let u = parse_udp(ip).ok()?;
    let (src, dst) = (u.src, u.dst);
    if u.dport != d11_wire::gtpu::UDP_PORT
        || u.payload.len() != ip.len() - 28
        || u.payload.len() < d11_wire::gtpu::HEADER_LEN
    {
        return None;
    }
    let (header, udp) = ip.split_at_mut(20);
    Some(InPlace {
        src,
        dst,
        header,
        udp,
    })
}

/// Writes an Ethernet header (destination, source, EtherType) into the first 14 octets of `h`.
pub fn ethernet_header(h: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    h[..6].copy_from_slice(&dst);
    h[6..12].copy_from_slice(&src);
    h[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// An Ethernet frame: destination, source, EtherType, payload (padded to 60 octets).
pub fn ethernet_frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len().max(46));
    ethernet_frame_into(&mut f, dst, src, ethertype, payload);
    f
}

/// [`ethernet_frame`] into a buffer of the caller's (appended to it).
pub fn ethernet_frame_into(
    f: &mut Vec<u8>,
    dst: [u8; 6],
    src: [u8; 6],
    ethertype: u16,
    payload: &[u8],
) {
    let start = f.len();
    f.resize(start + 14, 0);
    ethernet_header(&mut f[start..], dst, src, ethertype);
    f.extend_from_slice(payload);
    if f.len() - start < 60 {
        f.resize(start + 60, 0);
    }
}

/// The restart counter of a program started with `args`: one more than at its last start.
pub fn recovery_for(args: &d11_element::ElementArgs) -> u8 {
    recovery_file(args.config.as_deref(), &args.node).map_or(1, |f| next_recovery(&f))
}

/// The JSON of an endpoint's counters.
pub fn endpoint_counters(ep: &Endpoint, prefix: &str, out: &mut dyn FnMut(&str, u64)) {
    let c = &ep.c;
    for (k, v) in [
        ("rx_g_pdu", c.rx_g_pdu),
        ("rx_malformed", c.rx_malformed),
        ("rx_unknown_teid", c.rx_unknown_teid),
        ("rx_wrong_peer", c.rx_wrong_peer),
        ("rx_unsupported_extension", c.rx_unsupported_extension),
        ("rx_unexpected", c.rx_unexpected),
        ("tx_error_indication", c.tx_error_indication),
        ("tx_echo_response", c.tx_echo_response),
        ("tx_sehn", c.tx_sehn),
    ] {
        out(&format!("{prefix}{k}"), v);
    }
}

/// Counts a local datagram that could not be read.
pub fn udp_error_name(e: UdpError) -> &'static str {
    match e {
        UdpError::NotUdp => "not_udp",
        UdpError::BadLength => "udp_bad_length",
        UdpError::BadChecksum => "udp_bad_checksum",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_router::udp_checksum;

    #[test]
    fn udp_is_read_and_checked() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut ip = vec![0u8; 20 + 8 + 3];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&31u16.to_be_bytes());
        ip[9] = 17;
        ip[12..16].copy_from_slice(&s.octets());
        ip[16..20].copy_from_slice(&d.octets());
        ip[20..22].copy_from_slice(&2152u16.to_be_bytes());
        ip[22..24].copy_from_slice(&2152u16.to_be_bytes());
        ip[24..26].copy_from_slice(&11u16.to_be_bytes());
        ip[28..].copy_from_slice(b"abc");
        let sum = udp_checksum(s, d, &ip[20..]);
        ip[26..28].copy_from_slice(&sum.to_be_bytes());
        let u = parse_udp(&ip).unwrap();
        assert_eq!((u.sport, u.payload), (2152, &b"abc"[..]));
        ip[30] ^= 1;
        assert_eq!(parse_udp(&ip).unwrap_err(), UdpError::BadChecksum);
        ip[24..26].copy_from_slice(&99u16.to_be_bytes());
        assert_eq!(parse_udp(&ip).unwrap_err(), UdpError::BadLength);
    }

    #[test]
    fn recovery_grows_across_restarts() {
        let f = std::env::temp_dir().join(format!("d11-recovery-{}", std::process::id()));
        let _ = std::fs::remove_file(&f);
        assert_eq!(next_recovery(&f), 1);
        assert_eq!(next_recovery(&f), 2);
        std::fs::remove_file(&f).unwrap();
    }

    #[test]
    fn a_changed_recovery_is_a_restart() {
        let t = Instant::now();
        let (l, r) = (Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2));
        let mut p = Paths::new(Duration::from_secs(1));
        p.watch(t, l, r);
        assert!(!p.answered(t, l, r, Some(4)));
        assert!(!p.answered(t, l, r, Some(4)));
        assert!(p.answered(t, l, r, Some(5)));
        assert_eq!(p.view(t)[0]["peer_restarts"], 1);
    }
}
