//! The userspace endpoint stack: a smoltcp interface on one frame port, shared by tokio tasks
//! through async TCP and UDP sockets.
//!
//! A host here behaves as the seed's client does: an address and prefix, a default gateway; a
//! packet to an address inside the prefix goes to that host (its MAC by ARP), anything else to
//! the gateway. smoltcp does ARP, ICMP echo, TCP and UDP; this crate adds what smoltcp leaves
//! to its user:
//! - [`TcpListener`]: an accept backlog (smoltcp has none) as a pool of listening sockets,
//!   re-armed after each accept, and a SYN-RECEIVED timeout so half-open connections cannot
//!   hold the pool; when every socket of a pool is half-open, SYNs are answered with SYN
//!   cookies (RFC 4987) and a socket is given only to a client that answers (`syncookie`);
//! - [`TcpStream`] and [`UdpSocket`]: `AsyncRead`/`AsyncWrite` and async datagrams for tokio
//!   tasks, woken by smoltcp's wakers;
//! - a per-connection view of TCP as the wire shows it ([`tracker`]): sequence numbers,
//!   windows, retransmissions, for `d11 show NODE tcp`;
//! - the frame guard in front of smoltcp, so malformed input is counted by reason.
//!
//! Everything runs on one thread: the stack is an `Rc<RefCell<_>>` shared by the element (which
//! the runtime feeds frames and time) and the tasks (which read and write sockets). A task that
//! changes a socket signals the runtime ([`Element::wakeup`]) so the stack transmits at once.

mod device;
mod recovery;
mod syncookie;
mod tcp;
mod timewait;
pub mod tracker;
mod udp;

pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;

use d11_element::counters::GuardDrops;
use d11_element::{counters, Collect, Element, PortId, Transmit};
use d11_wire::guard::{check_frame, Frame};
use device::{FrameIo, Wire};
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{json, Value};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Closed TCP sockets kept for reuse at most (see `Inner::spare`): 16 x 2 buffers of address
/// space (256 KiB each, 1 MiB with offloads), of which only the pages connections wrote are
/// backed.
const SPARE_SOCKETS: usize = 16;

/// The TTL of packets the stack sends: smoltcp's default hop limit.
pub const DEFAULT_TTL: u8 = 64;

/// A port of an endpoint (one per endpoint).
pub use d11_element::PortConfig as StackPort;

/// The buffer per connection and direction on a port without offloads. From `bench/endpoint`'s
/// sweep: 64 KiB windows cost a quarter of the goodput, more costs memory and wins nothing at
/// the rates a frame per system call allows.
pub const BUFFER_PLAIN: usize = 256 * 1024;
/// The buffer on a port with offloads, where super-frames move 10 Gbit/s and more and the
/// window must hold that rate for a round trip (the kernel's own TCP grows its buffers to
/// megabytes for the same reason). The pages are touched only as data flows.
pub const BUFFER_OFFLOAD: usize = 1024 * 1024;

/// TCP settings for every socket of the stack.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TcpTuning {
    /// Receive and send buffer per connection, octets. Above 64 KiB the stack advertises
    /// window scaling (RFC 7323) with the shift the buffer needs. 0 (the default) is
    /// [`BUFFER_OFFLOAD`] on a port with offloads and [`BUFFER_PLAIN`] on one without.
    pub buffer: usize,
    /// "cubic", "reno" or "none".
    pub congestion: String,
    /// Delayed ACK in milliseconds (0 = ACK every segment).
    pub ack_delay_ms: u64,
    pub nagle: bool,
    /// Half-open connections older than this are dropped from the accept pool.
    pub syn_timeout_ms: u64,
    /// Established connections idle this long are timed out (0 = never).
    pub idle_timeout_s: u64,
    /// Connections at most, listening sockets included; beyond it SYNs are refused.
    pub max_sockets: usize,
    /// Frames smoltcp may send back to back per poll (its `max_burst_size`; 0 = no limit).
    pub burst: usize,
}

impl Default for TcpTuning {
    fn default() -> Self {
        Self {
            buffer: 0,
            congestion: "cubic".into(),
            ack_delay_ms: 10,
            nagle: false,
            syn_timeout_ms: 3000,
            idle_timeout_s: 0,
            max_sockets: 4096,
            burst: 0,
        }
    }
}

/// An endpoint's configuration: its node's entry of the topology file.
#[derive(Debug, Clone, Deserialize)]
pub struct StackConfig {
    pub name: String,
    pub ports: Vec<StackPort>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub tcp: TcpTuning,
}

// `udp_no_socket`: datagrams to one of our addresses at a port no socket is bound to;
// `icmp_rate_limited`: of those, the ones dropped without a port unreachable (over the rate).
counters! {
    pub struct StackCounters {
        rx_frames,
        not_for_us,
        tcp_accepted,
        tcp_connected,
        tcp_connect_failed,
        tcp_syn_timeouts,
        tcp_syn_evicted,
        tcp_syncookies_sent,
        tcp_syncookies_accepted,
        tcp_syncookies_failed,
        tcp_refused_full,
        tcp_closed,
        tcp_sockets_reused,
        tcp_bad_checksum,
        tcp_super_frames_received,
        gso_unsupported,
        tcp_time_wait_dropped,
        udp_sent,
        udp_received,
        udp_no_socket,
        icmp_rate_limited,
        arp_probes,
    }
}

/// A TCP socket's local and remote IPv4 endpoints, once it has them.
pub(crate) fn endpoints(s: &tcp::Socket) -> Option<(SocketAddrV4, SocketAddrV4)> {
    let (l, r) = (s.local_endpoint()?, s.remote_endpoint()?);
    match (l.addr, r.addr) {
        (smoltcp::wire::IpAddress::Ipv4(la), smoltcp::wire::IpAddress::Ipv4(ra)) => {
            Some((SocketAddrV4::new(la, l.port), SocketAddrV4::new(ra, r.port)))
        }
        // (IPv4 only: the frame guard lets no IPv6 through.)
        _ => None,
    }
}

/// How many ICMP errors the stack sends: a token bucket of `RATE` a second holding at most
/// `BURST`, as Linux's `icmp_msgs_per_sec` and `icmp_msgs_burst` default. Datagrams sprayed
/// at closed ports (a flood of forged DNS answers guessing a resolver's port) are then
/// dropped without a reply each, and without a pass through every socket.
#[derive(Debug)]
struct IcmpLimit {
    tokens: u32,
    last: Option<Instant>,
}

impl IcmpLimit {
    const RATE: u32 = 1000;
    const BURST: u32 = 50;

    fn allow(&mut self, now: Instant) -> bool {
        let last = *self.last.get_or_insert(now);
        let earned =
            now.saturating_duration_since(last).as_micros() * u128::from(Self::RATE) / 1_000_000;
        if earned > 0 {
            self.tokens = (u128::from(self.tokens) + earned).min(u128::from(Self::BURST)) as u32;
            self.last = Some(now);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

type TableFn = Box<dyn Fn() -> Value>;
type CountersFn = Box<dyn Fn(&mut dyn FnMut(&str, u64))>;

/// An ARP request of ours for a next hop.
#[derive(Debug, Clone, Copy)]
struct Probe {
    at: Instant,
    answered: bool,
    tries: u8,
}

pub(crate) struct Inner {
    pub(crate) iface: Interface,
    pub(crate) sockets: SocketSet<'static>,
    epoch: Instant,
    /// The TCP timestamp clock at `epoch` (wall-clock milliseconds at the start).
    ts_base: u32,
    /// The latest time the runtime gave (for what tasks do between polls).
    clock: Instant,
    /// The port's name in the topology (`interfaces` reports it).
    port: String,
    mac: EthernetAddress,
    addrs: Vec<Ipv4Net>,
    gateway: Option<Ipv4Addr>,
    pub(crate) tuning: TcpTuning,
    pub(crate) wire: Wire,
    resend: recovery::Resend,
    /// Next hops we asked for ourselves (see [`Inner::probe_neighbour`]).
    probed: HashMap<Ipv4Addr, Probe>,
    pub(crate) c: StackCounters,
    drops: GuardDrops,
    /// TCP sockets of closed connections, kept (closed) for the next ones, at most
    /// [`SPARE_SOCKETS`]. A new socket's two buffers are fresh mappings (the mmap threshold
    /// is fixed, see `d11_element`), so a balancer opening thousands of connections a second
    /// would spend a few percent of its time in mmap, page faults and munmap; a spare keeps
    /// its pages. `listen` and `connect` reset everything of a connection but the tuning,
    /// which `tcp_socket` sets again.
    spare: Vec<tcp::Socket<'static>>,
    /// Sockets whose owner dropped them: removed once closed.
    /// Sockets the program let go of, closing, with their endpoints when they were let go
    /// (smoltcp forgets them once a socket is closed).
    pub(crate) orphans: Vec<(SocketHandle, Option<(SocketAddrV4, SocketAddrV4)>)>,
    /// UDP sockets dropped with datagrams still queued (waiting for ARP): removed once sent,
    /// or at their deadline.
    pub(crate) udp_orphans: Vec<(SocketHandle, Instant)>,
    /// Accept pools by port.
    pub(crate) pools: HashMap<u16, tcp::Pool>,
    cookies: syncookie::SynCookies,
    /// Closed connections in TIME-WAIT, out of smoltcp's socket set.
    timewait: timewait::TimeWait,
    /// Where outgoing frames of cookie connections are rewritten.
    cookie_scratch: Vec<u8>,
    icmp_limit: IcmpLimit,
    next_port: u16,
    next_poll: Option<Instant>,
    needs_poll: bool,
    tables: Vec<(String, TableFn)>,
    /// The application's own counters, shown with the stack's.
    app_counters: Vec<CountersFn>,
    role: &'static str,
}

impl Inner {
    /// A TCP socket for a new connection or a listening place, closed and tuned: one a
    /// closed connection left (see [`Inner::spare`]), or a new one.
    pub(crate) fn tcp_socket(&mut self) -> tcp::Socket<'static> {
        let t = &self.tuning;
        let mut s = match self.spare.pop() {
            Some(s) => {
                self.c.tcp_sockets_reused += 1;
                s
            }
            None => smoltcp::socket::tcp::Socket::new(
                smoltcp::socket::tcp::SocketBuffer::new(vec![0; t.buffer]),
                smoltcp::socket::tcp::SocketBuffer::new(vec![0; t.buffer]),
            ),
        };
        // (Set anew for a spare: a fresh congestion state, no timestamps until `connect`
        // asks for them, the idle timeout as configured.)
        s.set_tsval_generator(None);
        s.set_timeout(None);
        s.set_keep_alive(None);
        s.set_congestion_control(match t.congestion.as_str() {
            "reno" => smoltcp::socket::tcp::CongestionControl::Reno,
            "none" => smoltcp::socket::tcp::CongestionControl::None,
            _ => smoltcp::socket::tcp::CongestionControl::Cubic,
        });
        s.set_ack_delay(
            (t.ack_delay_ms > 0).then(|| smoltcp::time::Duration::from_millis(t.ack_delay_ms)),
        );
        s.set_nagle_enabled(t.nagle);
        if t.idle_timeout_s > 0 {
            s.set_timeout(Some(smoltcp::time::Duration::from_secs(t.idle_timeout_s)));
        }
        s
    }

    /// Whether a UDP socket is bound to `port`.
    fn udp_bound(&self, port: u16) -> bool {
        self.sockets.iter().any(|(_, s)| match s {
            smoltcp::socket::Socket::Udp(u) => u.endpoint().port == port,
            _ => false,
        })
    }

    pub(crate) fn tcp_count(&self) -> usize {
        self.sockets
            .iter()
            .filter(|(_, s)| matches!(s, smoltcp::socket::Socket::Tcp(_)))
            .count()
    }

    /// Sends our own ARP request for the next hop towards `dst`, at most every 20 s per next
    /// hop. smoltcp 0.14 sends one ARP request per second per interface and stays silent in
    /// between, so a program that starts talking to several new peers at once (an MME to its
    /// HSS and SGW, a balancer to its backends) would wait a second per peer; the answer to
    /// our request fills smoltcp's cache, since it fills from any ARP aimed at us.
    pub(crate) fn probe_neighbour(&mut self, dst: Ipv4Addr) {
        let Some(net) = self.addrs.iter().find(|n| n.contains(&dst)).copied() else {
            // Off-link: the gateway is the next hop.
            if let Some(gw) = self.gateway {
                if self.addrs.iter().any(|n| n.contains(&gw)) {
                    self.probe_neighbour(gw);
                }
            }
            return;
        };
        // Ourselves, or the subnet's broadcast (a /31 has none, RFC 3021: both addresses are
        // hosts, the peer on a point-to-point link included).
        if dst == net.addr() || (net.prefix_len() < 31 && dst == net.broadcast()) {
            return;
        }
        // Once answered, not asked again for 20 s (smoltcp's own cache keeps it 60 s); while
        // unanswered, `reprobe` asks again. (The time is the last the runtime gave: the stack
        // reads no clock.)
        let now = self.clock;
        if let Some(p) = self.probed.get(&dst) {
            if p.answered && now.saturating_duration_since(p.at) < Duration::from_secs(20) {
                return;
            }
            if !p.answered {
                return;
            }
        }
        self.probed.insert(
            dst,
            Probe {
                at: now,
                answered: false,
                tries: 1,
            },
        );
        self.arp_request(net.addr(), dst);
    }

    fn arp_request(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.resend
            .push((d11_wire::arp::request(self.mac.0, src, dst).to_vec(), 0));
        self.c.arp_probes += 1;
    }

    /// Probes not answered yet are sent again every 200 ms, ten times at most (a peer that is
    /// not up yet answers the first one after it starts).
    fn reprobe(&mut self, now: Instant) -> Option<Instant> {
        const EVERY: Duration = Duration::from_millis(200);
        let due: Vec<Ipv4Addr> = self
            .probed
            .iter()
            .filter(|(_, p)| {
                !p.answered && p.tries < 10 && now.saturating_duration_since(p.at) >= EVERY
            })
            .map(|(a, _)| *a)
            .collect();
        for dst in due {
            let Some(src) = self
                .addrs
                .iter()
                .find(|n| n.contains(&dst))
                .map(|n| n.addr())
            else {
                continue;
            };
            if let Some(p) = self.probed.get_mut(&dst) {
                p.at = now;
                p.tries += 1;
            }
            self.arp_request(src, dst);
        }
        self.probed
            .values()
            .filter(|p| !p.answered && p.tries < 10)
            .map(|p| p.at + EVERY)
            .min()
    }

    /// An ephemeral port (RFC 6335 range) not used by a socket of ours.
    pub(crate) fn ephemeral_port(&mut self) -> u16 {
        for _ in 0..16384 {
            let p = self.next_port;
            self.next_port = if self.next_port == u16::MAX {
                49152
            } else {
                self.next_port + 1
            };
            let used = self.sockets.iter().any(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => t.local_endpoint().is_some_and(|e| e.port == p),
                _ => false,
            });
            if !used {
                return p;
            }
        }
        self.next_port
    }

    /// Whether every socket of `port`'s accept pool is taken by a half-open connection.
    fn pool_full(&self, port: u16) -> bool {
        self.pools.get(&port).is_some_and(|p| {
            p.sockets.iter().all(|(h, _)| {
                self.sockets.get::<tcp::Socket>(*h).state() != smoltcp::socket::tcp::State::Listen
            })
        })
    }

    /// Whether a socket of ours is this connection (remote address and port, our port).
    fn has_socket(&self, (ip, port, local): &syncookie::Tuple) -> bool {
        let remote = smoltcp::wire::IpEndpoint::new((*ip).into(), *port);
        self.sockets.iter().any(|(_, s)| match s {
            smoltcp::socket::Socket::Tcp(t) => {
                t.remote_endpoint() == Some(remote)
                    && t.local_endpoint().is_some_and(|e| e.port == *local)
            }
            _ => false,
        })
    }

    /// A client answered a SYN cookie: the connection gets a socket of the pool (the oldest
    /// half-open one if none listens: a client that answered beats one that may never), which
    /// is handed the client's SYN as smoltcp must see it; smoltcp's SYN-ACK is not sent (the
    /// client has the cookie's), and the connection's numbers are shifted from then on.
    /// False when no socket could take it (every one of the pool busy with an established
    /// connection): the caller drops the ACK, as Linux does with a full accept queue, and the
    /// client's retransmission tries again (answered, it would be reset).
    fn open_by_cookie(
        &mut self,
        now: Instant,
        frame: &[u8],
        s: &syncookie::Seg,
        mss: u16,
        tx: &mut dyn Transmit,
    ) -> bool {
        if self.pool_full(s.dport) {
            let Inner {
                pools, sockets, c, ..
            } = self;
            if pools
                .get_mut(&s.dport)
                .is_some_and(|p| p.make_room(now, sockets))
            {
                c.tcp_syn_evicted += 1;
            }
        }
        let syn = syncookie::SynCookies::rebuilt_syn(frame, s, mss);
        let mut take = syncookie::TakeSynAck {
            tx,
            tuple: s.tuple_in(),
            isn: None,
        };
        self.poll(now, Some(&syn), &mut take);
        match take.isn {
            Some(isn) => {
                self.cookies.opened(now, s, isn);
                self.c.tcp_syncookies_accepted += 1;
                true
            }
            None => {
                self.c.tcp_syncookies_failed += 1;
                false
            }
        }
    }

    /// Polls smoltcp with `rx` (if any); what it sends goes to `tx`, through the sequence
    /// shift of cookie connections when there are some.
    fn poll(&mut self, now: Instant, rx: Option<&[u8]>, tx: &mut dyn Transmit) {
        self.poll_with(now, rx, true, tx);
    }

    /// A received frame, without sending what the sockets have to send (only smoltcp's direct
    /// answers: ARP, ICMP, resets, challenge ACKs): the runtime polls the stack once the frames
    /// of a wakeup are all in. A burst of segments is then acknowledged once, and every
    /// socket's send queue is walked once per burst, not once per frame.
    fn ingress(&mut self, now: Instant, frame: &[u8], tx: &mut dyn Transmit) {
        self.poll_with(now, Some(frame), false, tx);
    }

    fn poll_with(&mut self, now: Instant, rx: Option<&[u8]>, egress: bool, tx: &mut dyn Transmit) {
        let shifted = std::mem::take(&mut self.cookies.shifted);
        if shifted.is_empty() {
            self.poll_smoltcp(now, rx, egress, tx);
        } else {
            let mut scratch = std::mem::take(&mut self.cookie_scratch);
            let mut out = syncookie::ShiftOut {
                tx,
                shifted: &shifted,
                scratch: &mut scratch,
            };
            self.poll_smoltcp(now, rx, egress, &mut out);
            self.cookie_scratch = scratch;
        }
        self.cookies.shifted = shifted;
        if self.cookies.sweep_at().is_some_and(|t| t <= now) {
            let (cookies, sockets) = (&mut self.cookies, &self.sockets);
            cookies.sweep(now, |(ip, port, local)| {
                let remote = smoltcp::wire::IpEndpoint::new((*ip).into(), *port);
                sockets.iter().any(|(_, s)| match s {
                    smoltcp::socket::Socket::Tcp(t) => {
                        t.remote_endpoint() == Some(remote)
                            && t.local_endpoint().is_some_and(|e| e.port == *local)
                    }
                    _ => false,
                })
            });
        }
        if let Some(at) = self.cookies.sweep_at() {
            self.next_poll = Some(self.next_poll.map_or(at, |n| n.min(at)));
        }
    }

    fn poll_smoltcp(
        &mut self,
        now: Instant,
        rx: Option<&[u8]>,
        egress: bool,
        tx: &mut dyn Transmit,
    ) {
        self.clock = self.clock.max(now);
        let t =
            SmolInstant::from_micros(now.saturating_duration_since(self.epoch).as_micros() as i64);
        let since = now.saturating_duration_since(self.epoch).as_millis() as u32;
        tcp::set_tsval(self.ts_base.wrapping_add(since));
        self.needs_poll = false;
        let mut dev = FrameIo {
            rx,
            tx,
            wire: &mut self.wire,
            now,
        };
        if egress || rx.is_none() {
            self.iface.poll(t, &mut dev, &mut self.sockets);
        } else {
            self.iface
                .poll_ingress_single(t, &mut dev, &mut self.sockets);
        }
        // Loss recovery from what the peer acknowledged and SACKed, and probe timeouts (see
        // `recovery`).
        if let Some(frame) = rx {
            self.wire.recovery.on_in(now, frame, &mut self.resend);
            // An ARP reply to a probe of ours: that next hop answered.
            if frame.len() >= 42 && frame[12..14] == [8, 6] && frame[20..22] == [0, 2] {
                let spa = Ipv4Addr::new(frame[28], frame[29], frame[30], frame[31]);
                if let Some(p) = self.probed.get_mut(&spa) {
                    p.answered = true;
                    p.at = now;
                }
            }
            // A connection opened to us (a SYN without ACK, IPv4 without options or with):
            // our SYN-ACK needs the next hop back, which may be new to us; ask for it now
            // rather than wait out smoltcp's silence (see `probe_neighbour`).
            if device::is_tcp4(frame) {
                let ihl = d11_wire::ip::header_len(&frame[14..]);
                if let Some(&flags) = frame.get(14 + ihl + 13) {
                    // (Bounded: a flood of spoofed sources must not become a flood of ARP.)
                    if flags & 0x12 == 0x02 && self.probed.len() < 64 {
                        let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
                        self.probe_neighbour(src);
                    }
                }
            }
        }
        if !egress && rx.is_some() {
            // Timers, resends, pools, orphans and the next deadline: at the poll that follows
            // the burst.
            self.needs_poll = true;
            return;
        }
        self.wire.recovery.on_timer(now, &mut self.resend);
        let reprobe_at = self.reprobe(now);
        for (mut f, seg) in self.resend.drain(..) {
            self.wire.tracker.observe(now, &f, tracker::Dir::Out);
            if seg == 0 {
                tx.send(0, &f);
            } else {
                // A super-frame's copy: its partial checksum and metadata again.
                let g = device::tcp_checksum(&mut f, Some(seg));
                tx.send_gso(0, &f, &g);
            }
        }
        // Accept pools: half-open sockets past the SYN-RECEIVED timeout go back to listening.
        let mut changed = false;
        let syn_timeout = Duration::from_millis(self.tuning.syn_timeout_ms);
        for pool in self.pools.values_mut() {
            changed |= pool.maintain(now, syn_timeout, &mut self.sockets, &mut self.c);
        }
        // Orphans: removed once closed. Those in TIME-WAIT leave the socket set for the
        // TIME-WAIT table (see `timewait`): a smoltcp socket in TIME-WAIT still holds its
        // buffers and is walked at every poll, and a server that closes first makes thousands.
        let before = self.orphans.len();
        let (sockets, waits, wire, spare) = (
            &mut self.sockets,
            &mut self.timewait,
            &mut self.wire,
            &mut self.spare,
        );
        let mut tw_dropped = 0;
        self.orphans.retain(|(h, ends)| {
            let s = sockets.get::<tcp::Socket>(*h);
            let state = s.state();
            let tw = state == smoltcp::socket::tcp::State::TimeWait;
            let gone = state == smoltcp::socket::tcp::State::Closed || tw;
            if !gone {
                return true;
            }
            if let Some((l, r)) = endpoints(s).or(*ends) {
                // The connection's bookkeeping goes with it, so that those tables hold live
                // connections, not every one of the last two minutes.
                wire.tracker.forget(l, r);
                wire.recovery.forget(l, r);
                if tw && !waits.enter(now, l, r) {
                    tw_dropped += 1;
                }
            }
            if let smoltcp::socket::Socket::Tcp(t) = sockets.remove(*h) {
                if spare.len() < SPARE_SOCKETS {
                    spare.push(t);
                }
            }
            false
        });
        self.timewait.prune(now);
        self.c.tcp_closed += (before - self.orphans.len()) as u64;
        let sockets = &mut self.sockets;
        self.udp_orphans.retain(|(h, until)| {
            let sent = sockets.get::<smoltcp::socket::udp::Socket>(*h).send_queue() == 0;
            let gone = sent || now >= *until;
            if gone {
                sockets.remove(*h);
            }
            !gone
        });
        self.c.tcp_time_wait_dropped += tw_dropped;
        if changed {
            let mut dev = FrameIo {
                rx: None,
                tx,
                wire: &mut self.wire,
                now,
            };
            self.iface.poll(t, &mut dev, &mut self.sockets);
        }
        self.wire.tracker.prune(now);
        self.wire.recovery.prune(now);
        self.next_poll = self
            .iface
            .poll_at(t, &self.sockets)
            .map(|at| self.epoch + Duration::from_micros(at.total_micros().max(0) as u64));
        if let Some(at) = self.wire.recovery.poll_at() {
            self.next_poll = Some(self.next_poll.map_or(at, |n| n.min(at)));
        }
        if let Some(at) = reprobe_at {
            self.next_poll = Some(self.next_poll.map_or(at, |n| n.min(at)));
        }
        if let Some(at) = self.udp_orphans.iter().map(|(_, until)| *until).min() {
            self.next_poll = Some(self.next_poll.map_or(at, |n| n.min(at)));
        }
        // Pools with half-open sockets need a look when their timeout runs out.
        if let Some(at) = self
            .pools
            .values()
            .filter_map(|p| p.next_deadline(syn_timeout))
            .min()
        {
            self.next_poll = Some(self.next_poll.map_or(at, |n| n.min(at)));
        }
    }
}

/// A handle to the stack, cheap to clone, for tasks.
#[derive(Clone)]
pub struct Stack {
    pub(crate) inner: Rc<RefCell<Inner>>,
    pub(crate) notify: Rc<Notify>,
}

/// The stack as the runtime drives it.
pub struct StackElement {
    stack: Stack,
}

impl Stack {
    /// Builds the stack for a config with exactly one port. `role` names the program in
    /// `d11 show` (e.g. "ctl").
    pub fn new(cfg: &StackConfig, role: &'static str) -> anyhow::Result<(Stack, StackElement)> {
        Self::with_wakeup(cfg, role, Rc::new(Notify::new()))
    }

    /// [`new`](Self::new) for a stack that starts after its program did (a phone's, once
    /// attached): the stack signals `notify`, which the program's element already handed the
    /// runtime.
    pub fn with_wakeup(
        cfg: &StackConfig,
        role: &'static str,
        notify: Rc<Notify>,
    ) -> anyhow::Result<(Stack, StackElement)> {
        let [port] = cfg.ports.as_slice() else {
            anyhow::bail!(
                "an endpoint has exactly one port; config has {}",
                cfg.ports.len()
            );
        };
        if port.addresses.is_empty() {
            anyhow::bail!("port {}: an endpoint needs an address", port.name);
        }
        if cfg.tcp.buffer != 0 && (cfg.tcp.buffer < 1024 || cfg.tcp.buffer > (1 << 30)) {
            anyhow::bail!(
                "tcp.buffer {} is out of range (1 KiB to 1 GiB, or 0 for the port's default)",
                cfg.tcp.buffer
            );
        }
        if !matches!(cfg.tcp.congestion.as_str(), "cubic" | "reno" | "none") {
            anyhow::bail!(
                "tcp.congestion {:?}: cubic, reno or none",
                cfg.tcp.congestion
            );
        }
        let mac = EthernetAddress(port.mac_for(&cfg.name)?);
        let mtu = port.ip_mtu();
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        // A fresh seed per start (std's random hash keys): initial sequence numbers (RFC 6528)
        // and ephemeral ports (RFC 6056) must not repeat those of a previous run on the same
        // address, or a restarted program's first connections meet the stale ones its peers
        // still hold for the dead run and wait out a reset.
        let seed = {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(mac.0)
        };
        config.random_seed = seed;
        let mut sink = Collect::default();
        let mut wire = Wire {
            scratch: vec![0u8; mtu + 14],
            mtu,
            burst: cfg.tcp.burst,
            tracker: tracker::Tracker::default(),
            recovery: recovery::Recovery::default(),
            offload: port.offload,
            super_frames: 0,
        };
        let epoch = Instant::now();
        let mut dev = FrameIo {
            rx: None,
            tx: &mut sink,
            wire: &mut wire,
            now: epoch,
        };
        let mut iface = Interface::new(config, &mut dev, SmolInstant::from_micros(0));
        // smoltcp holds a fixed number of addresses (the workspace asks for 8: a router's BGP
        // stack has one per port); more is a config error, not silently fewer.
        let mut full = false;
        iface.update_ip_addrs(|a| {
            for n in &port.addresses {
                full |= a
                    .push(IpCidr::new(n.addr().into(), n.prefix_len()))
                    .is_err();
            }
        });
        if full {
            anyhow::bail!(
                "port {}: {} addresses, more than the stack holds",
                port.name,
                port.addresses.len()
            );
        }
        if let Some(gw) = cfg.gateway {
            if !port.addresses.iter().any(|n| n.contains(&gw)) {
                anyhow::bail!("gateway {gw} is not on the endpoint's subnet");
            }
            iface
                .routes_mut()
                .add_default_ipv4_route(gw)
                .map_err(|_| anyhow::anyhow!("cannot add default route"))?;
        }
        let inner = Inner {
            iface,
            sockets: SocketSet::new(Vec::new()),
            epoch,
            ts_base: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u32),
            clock: epoch,
            port: port.name.clone(),
            mac,
            addrs: port.addresses.clone(),
            gateway: cfg.gateway,
            tuning: TcpTuning {
                buffer: match (cfg.tcp.buffer, port.offload) {
                    (0, true) => BUFFER_OFFLOAD,
                    (0, false) => BUFFER_PLAIN,
                    (b, _) => b,
                },
                ..cfg.tcp.clone()
            },
            wire,
            resend: Vec::new(),
            probed: HashMap::new(),
            c: StackCounters::default(),
            drops: GuardDrops::default(),
            orphans: Vec::new(),
            udp_orphans: Vec::new(),
            pools: HashMap::new(),
            cookies: syncookie::SynCookies::new(epoch),
            timewait: timewait::TimeWait::default(),
            cookie_scratch: Vec::new(),
            spare: Vec::new(),
            icmp_limit: IcmpLimit {
                tokens: IcmpLimit::BURST,
                last: None,
            },
            next_port: 49152 + (seed >> 48) as u16 % 16384,
            next_poll: Some(epoch),
            needs_poll: false,
            tables: Vec::new(),
            app_counters: Vec::new(),
            role,
        };
        let stack = Stack {
            inner: Rc::new(RefCell::new(inner)),
            notify,
        };
        Ok((stack.clone(), StackElement { stack }))
    }

    /// The stack's first address.
    pub fn address(&self) -> Ipv4Addr {
        self.inner.borrow().addrs[0].addr()
    }

    /// Asks the runtime to poll the stack soon (after a socket changed, or for a program
    /// that embeds the stack and has news for its element).
    pub fn kick(&self) {
        let mut i = self.inner.borrow_mut();
        if !i.needs_poll {
            i.needs_poll = true;
            self.notify.notify_one();
        }
    }

    /// Adds a table to `d11 show` (e.g. the controller's orders).
    pub fn add_table(&self, name: &str, f: impl Fn() -> Value + 'static) {
        self.inner
            .borrow_mut()
            .tables
            .push((name.to_string(), Box::new(f)));
    }

    /// Adds the application's counters (an MME's attaches, ...) to `d11 show NODE counters`,
    /// after those added before.
    pub fn add_counters(&self, f: impl Fn(&mut dyn FnMut(&str, u64)) + 'static) {
        self.inner.borrow_mut().app_counters.push(Box::new(f));
    }

    pub fn counters(&self) -> StackCounters {
        self.inner.borrow().c.clone()
    }
}

impl StackElement {
    /// A frame from the port; `trusted`: its TCP checksum needs no check (partial, or checked
    /// by the kernel).
    fn receive(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        trusted: bool,
        tx: &mut dyn Transmit,
    ) {
        let mut i = self.stack.inner.borrow_mut();
        i.c.rx_frames += 1;
        if port != 0 {
            return;
        }
        let (dst_mac, tcp_at, udp_at) = match check_frame(frame) {
            Ok(Frame::Arp { dst_mac, .. }) => (dst_mac, None, None),
            Ok(Frame::Ipv4 {
                dst_mac,
                protocol,
                header_len,
                total_len,
                src,
                dst,
                ..
            }) => {
                let at = 14 + header_len;
                // A datagram's ports are in its first fragment only.
                let first = u16::from_be_bytes([frame[20], frame[21]]) & 0x1fff == 0;
                let ours = i.addrs.iter().any(|n| n.addr() == dst);
                let tcp = protocol == smoltcp::wire::IpProtocol::Tcp;
                // On a port with offloads smoltcp leaves TCP checksums to the device: the ones
                // the kernel did not vouch for are checked here.
                if tcp
                    && i.wire.offload
                    && !trusted
                    && first
                    && !d11_wire::ip::tcp_checksum_ok(src, dst, &frame[at..14 + total_len])
                {
                    i.c.tcp_bad_checksum += 1;
                    return;
                }
                (
                    dst_mac,
                    (tcp && total_len >= header_len + 20).then_some(at),
                    (protocol == smoltcp::wire::IpProtocol::Udp
                        && total_len >= header_len + 8
                        && first
                        && ours)
                        .then_some(at),
                )
            }
            Err(r) => {
                i.drops.count(r);
                return;
            }
        };
        if dst_mac != i.mac && !dst_mac.is_broadcast() {
            i.c.not_for_us += 1;
            return;
        }
        if let Some(at) = udp_at {
            let port = u16::from_be_bytes([frame[at + 2], frame[at + 3]]);
            if !i.udp_bound(port) {
                i.c.udp_no_socket += 1;
                if !i.icmp_limit.allow(now) {
                    i.c.icmp_rate_limited += 1;
                    return;
                }
            }
        }
        if let Some(s) = tcp_at.and_then(|at| syncookie::Seg::parse(frame, at)) {
            let mac = i.mac.0;
            match i.timewait.on_segment(now, frame, &s, mac) {
                timewait::Verdict::Pass => {}
                timewait::Verdict::Drop => return,
                timewait::Verdict::Ack(ack) => {
                    tx.send(0, &ack);
                    return;
                }
            }
            if i.pools.contains_key(&s.dport) {
                if s.is_syn() {
                    // Every socket of the pool half-open (a flood, or a burst of clients): a
                    // SYN cookie, and nothing kept.
                    if i.pool_full(s.dport) && !i.has_socket(&s.tuple_in()) {
                        let mss = (i.wire.mtu.saturating_sub(40)).min(usize::from(u16::MAX)) as u16;
                        let window = i.tuning.buffer.min(65535) as u16;
                        let mac = i.mac.0;
                        let reply = i.cookies.syn_ack(now, frame, &s, mss, window, mac);
                        i.c.tcp_syncookies_sent += 1;
                        tx.send(0, &reply);
                        return;
                    }
                } else if s.is_ack()
                    && i.cookies.active(now)
                    && !i.cookies.shifted.contains_key(&s.tuple_in())
                {
                    if let Some(mss) = i.cookies.check(now, &s) {
                        if !i.has_socket(&s.tuple_in())
                            && !i.open_by_cookie(now, frame, &s, mss, tx)
                        {
                            return;
                        }
                    }
                }
            }
            if !i.cookies.shifted.is_empty() {
                i.cookies.shift_in(frame, &s);
            }
        }
        i.ingress(now, frame, tx);
    }
}

impl Element for StackElement {
    fn role(&self) -> &'static str {
        self.stack.inner.borrow().role
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        tx: &mut dyn Transmit,
    ) {
        self.receive(now, port, frame, false, tx);
    }

    fn takes_gso(&self) -> bool {
        self.stack.inner.borrow().wire.offload
    }

    fn handle_frame_gso(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        g: &d11_wire::gso::Gso,
        tx: &mut dyn Transmit,
    ) {
        use d11_wire::gso::{DATA_VALID, GSO_ECN, GSO_TCPV4, NEEDS_CSUM};
        // (Only TCP super-frames are offered: TUN_F_TSO4; UDP-tunnel ones are cut before they
        // come.) A datagram's partial checksum is completed here: smoltcp checks those.
        let unusable = (!g.is_single() && g.gso_type & !GSO_ECN != GSO_TCPV4)
            || (g.flags & NEEDS_CSUM != 0
                && !device::is_tcp4(frame)
                && d11_wire::gso::complete_checksum(frame, g).is_err());
        if unusable {
            let mut i = self.stack.inner.borrow_mut();
            i.c.rx_frames += 1;
            i.c.gso_unsupported += 1;
            return;
        }
        if !g.is_single() {
            self.stack.inner.borrow_mut().c.tcp_super_frames_received += 1;
        }
        self.receive(
            now,
            port,
            frame,
            g.flags & (NEEDS_CSUM | DATA_VALID) != 0,
            tx,
        );
    }

    fn poll_at(&self) -> Option<Instant> {
        let i = self.stack.inner.borrow();
        if i.needs_poll {
            Some(i.epoch)
        } else {
            i.next_poll
        }
    }

    fn poll(&mut self, now: Instant, tx: &mut dyn Transmit) {
        self.stack.inner.borrow_mut().poll(now, None, tx);
    }

    fn wakeup(&self) -> Option<Rc<Notify>> {
        Some(self.stack.notify.clone())
    }

    fn tables(&self) -> Vec<String> {
        let mut t = vec!["interfaces".to_string(), "tcp".into()];
        t.extend(
            self.stack
                .inner
                .borrow()
                .tables
                .iter()
                .map(|(n, _)| n.clone()),
        );
        t
    }

    fn show(&self, table: &str, now: Instant) -> Option<Value> {
        let i = self.stack.inner.borrow();
        match table {
            "interfaces" => Some(json!([{
                "name": i.port,
                "mac": d11_element::mac_string(&i.mac.0),
                "addresses": i.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "gateway": i.gateway.map(|g| g.to_string()),
                "mtu": i.wire.mtu,
                "default_ttl": DEFAULT_TTL,
            }])),
            "tcp" => Some(tcp::show(&i, now)),
            _ => i.tables.iter().find(|(n, _)| n == table).map(|(_, f)| f()),
        }
    }

    fn counters(&self, out: &mut dyn FnMut(&str, u64)) {
        let i = self.stack.inner.borrow();
        i.c.for_each(out);
        out("tcp_sockets", i.tcp_count() as u64);
        out("tcp_time_wait", i.timewait.len() as u64);
        out("tcp_time_wait_acks", i.timewait.acks);
        out(
            "tcp_time_wait_segments_dropped",
            i.timewait.dropped_segments,
        );
        out("tcp_retransmits", i.wire.tracker.total_retransmits());
        out("tcp_late_in", i.wire.tracker.total_late_in());
        out("tcp_recovery_resent", i.wire.recovery.resent);
        out("tcp_recovery_probes", i.wire.recovery.probes);
        out("tcp_super_frames_sent", i.wire.super_frames);
        i.drops.for_each(out);
        for f in &i.app_counters {
            f(out);
        }
    }
}

#[cfg(test)]
mod sim_tests;
