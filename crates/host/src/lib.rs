//! A userspace IPv4 host on smoltcp, as a sans-IO [`Element`].
//!
//! It behaves as the seed's client does: an address and prefix, a default gateway; a packet to
//! an address inside the prefix goes straight to that host (MAC by ARP), anything else to the
//! gateway. smoltcp answers ARP and ICMP echo; this element adds the classic echo services on
//! UDP and TCP port 7 (RFC 862), with a pool of listening TCP sockets as an accept backlog.
//!
//! Before smoltcp sees a frame, [`d11_wire::guard::check_frame`] validates it, so malformed
//! input is counted by reason (smoltcp drops such frames silently).

use d11_element::counters::GuardDrops;
use d11_element::{counters, Collect, Element, PortId, Transmit};
use d11_wire::guard::{check_frame, Frame};
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::json;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpListenEndpoint};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The TTL of packets the host sends: smoltcp's default hop limit (`DEFAULT_HOP_LIMIT`).
pub const DEFAULT_TTL: u8 = 64;

#[derive(Debug, Clone, Deserialize)]
pub struct HostPort {
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    pub addresses: Vec<Ipv4Net>,
    #[serde(default)]
    pub mtu: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Services {
    /// UDP echo port (RFC 862); 0 turns it off.
    pub udp_echo: u16,
    /// TCP echo port; 0 turns it off.
    pub tcp_echo: u16,
    /// Listening TCP sockets kept ready (smoltcp has no accept queue: each takes one client).
    pub tcp_backlog: usize,
    /// Per-socket buffer size in octets.
    pub tcp_buffer: usize,
}

impl Default for Services {
    fn default() -> Self {
        Self {
            udp_echo: 7,
            tcp_echo: 7,
            tcp_backlog: 8,
            tcp_buffer: 64 * 1024,
        }
    }
}

/// The host's configuration: its node's entry of the topology file.
#[derive(Debug, Clone, Deserialize)]
pub struct HostConfig {
    pub name: String,
    pub ports: Vec<HostPort>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub services: Services,
}

counters! {
    pub struct HostCounters {
        rx_frames,
        not_for_us,
        udp_echoed,
        tcp_accepted,
        tcp_echoed_bytes,
    }
}

/// Adapts one received frame and the runtime's transmitter to smoltcp's `Device`.
struct FrameIo<'a> {
    rx: Option<&'a [u8]>,
    tx: &'a mut dyn Transmit,
    scratch: &'a mut Vec<u8>,
    mtu: usize,
}

struct RxTok<'a>(&'a [u8]);
struct TxTok<'a> {
    tx: &'a mut dyn Transmit,
    scratch: &'a mut Vec<u8>,
}

impl smoltcp::phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl smoltcp::phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if self.scratch.len() < len {
            self.scratch.resize(len, 0);
        }
        let r = f(&mut self.scratch[..len]);
        self.tx.send(0, &self.scratch[..len]);
        r
    }
}

impl Device for FrameIo<'_> {
    type RxToken<'b>
        = RxTok<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxTok<'b>
    where
        Self: 'b;

    fn receive(&mut self, _t: SmolInstant) -> Option<(RxTok<'_>, TxTok<'_>)> {
        let f = self.rx.take()?;
        Some((
            RxTok(f),
            TxTok {
                tx: &mut *self.tx,
                scratch: &mut *self.scratch,
            },
        ))
    }

    fn transmit(&mut self, _t: SmolInstant) -> Option<TxTok<'_>> {
        Some(TxTok {
            tx: &mut *self.tx,
            scratch: &mut *self.scratch,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu + 14;
        c
    }
}

pub struct Host {
    name: String,
    mac: EthernetAddress,
    addrs: Vec<Ipv4Net>,
    gateway: Option<Ipv4Addr>,
    mtu: usize,
    iface: Interface,
    sockets: SocketSet<'static>,
    udp: Option<SocketHandle>,
    tcp: Vec<SocketHandle>,
    tcp_port: u16,
    epoch: Instant,
    next_poll: Option<Instant>,
    scratch: Vec<u8>,
    buf: Vec<u8>,
    c: HostCounters,
    drops: GuardDrops,
}

impl Host {
    pub fn new(cfg: &HostConfig, now: Instant) -> anyhow::Result<Self> {
        let [port] = cfg.ports.as_slice() else {
            anyhow::bail!(
                "a host has exactly one port; config has {}",
                cfg.ports.len()
            );
        };
        if port.addresses.is_empty() {
            anyhow::bail!("port {}: a host needs an address", port.name);
        }
        let mac = EthernetAddress(match &port.mac {
            Some(m) => d11_element::parse_mac(m)?,
            None => d11_element::derive_mac(&cfg.name, &port.name),
        });
        let mtu = usize::from(port.mtu.unwrap_or(1500));
        let mut scratch = vec![0u8; mtu + 14];
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = u64::from_be_bytes([
            0, 0, mac.0[0], mac.0[1], mac.0[2], mac.0[3], mac.0[4], mac.0[5],
        ]);
        let mut sink = Collect::default();
        let mut dev = FrameIo {
            rx: None,
            tx: &mut sink,
            scratch: &mut scratch,
            mtu,
        };
        let mut iface = Interface::new(config, &mut dev, SmolInstant::from_micros(0));
        iface.update_ip_addrs(|a| {
            for n in &port.addresses {
                let _ = a.push(IpCidr::new(n.addr().into(), n.prefix_len()));
            }
        });
        if let Some(gw) = cfg.gateway {
            if !port.addresses.iter().any(|n| n.contains(&gw)) {
                anyhow::bail!("gateway {gw} is not on the host's subnet");
            }
            iface
                .routes_mut()
                .add_default_ipv4_route(gw)
                .map_err(|_| anyhow::anyhow!("cannot add default route"))?;
        }
        let mut sockets = SocketSet::new(Vec::new());
        let s = &cfg.services;
        let udp = (s.udp_echo != 0).then(|| {
            let mut u = udp::Socket::new(
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 64 * 1024]),
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 64 * 1024]),
            );
            let _ = u.bind(s.udp_echo);
            sockets.add(u)
        });
        let mut tcp = Vec::new();
        if s.tcp_echo != 0 {
            for _ in 0..s.tcp_backlog.max(1) {
                let mut t = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; s.tcp_buffer]),
                    tcp::SocketBuffer::new(vec![0; s.tcp_buffer]),
                );
                let _ = t.listen(s.tcp_echo);
                tcp.push(sockets.add(t));
            }
        }
        Ok(Self {
            name: cfg.name.clone(),
            mac,
            addrs: port.addresses.clone(),
            gateway: cfg.gateway,
            mtu,
            iface,
            sockets,
            udp,
            tcp,
            tcp_port: s.tcp_echo,
            epoch: now,
            next_poll: Some(now),
            scratch,
            buf: vec![0; 64 * 1024],
            c: HostCounters::default(),
            drops: GuardDrops::default(),
        })
    }

    fn smol(&self, t: Instant) -> SmolInstant {
        SmolInstant::from_micros(t.saturating_duration_since(self.epoch).as_micros() as i64)
    }

    /// Lets smoltcp consume `rx` (if any), runs the echo services, and flushes output.
    fn drive(&mut self, now: Instant, rx: Option<&[u8]>, tx: &mut dyn Transmit) {
        let t = self.smol(now);
        let mut dev = FrameIo {
            rx,
            tx,
            scratch: &mut self.scratch,
            mtu: self.mtu,
        };
        self.iface.poll(t, &mut dev, &mut self.sockets);
        self.services();
        let mut dev = FrameIo {
            rx: None,
            tx,
            scratch: &mut self.scratch,
            mtu: self.mtu,
        };
        self.iface.poll(t, &mut dev, &mut self.sockets);
        self.next_poll = self
            .iface
            .poll_at(t, &self.sockets)
            .map(|at| self.epoch + Duration::from_micros(at.total_micros().max(0) as u64));
    }

    fn services(&mut self) {
        if let Some(h) = self.udp {
            let u = self.sockets.get_mut::<udp::Socket>(h);
            while let Ok((n, meta)) = u.recv_slice(&mut self.buf) {
                if u.send_slice(&self.buf[..n], meta.endpoint).is_ok() {
                    self.c.udp_echoed += 1;
                }
            }
        }
        for &h in &self.tcp {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if s.is_active() && s.may_recv() {
                // Echo what fits in the send buffer; the rest waits in the receive buffer,
                // which closes our window: TCP's own flow control, nothing dropped.
                let room = s.send_capacity() - s.send_queue();
                let want = room.min(self.buf.len());
                if want > 0 && s.can_recv() {
                    if let Ok(n) = s.recv_slice(&mut self.buf[..want]) {
                        let _ = s.send_slice(&self.buf[..n]);
                        self.c.tcp_echoed_bytes += n as u64;
                    }
                }
            }
            if s.state() == tcp::State::CloseWait && s.send_queue() == 0 && !s.can_recv() {
                s.close();
            }
            if !s.is_open() {
                // Re-arm: this socket waits for the next client.
                if s.listen(IpListenEndpoint {
                    addr: None,
                    port: self.tcp_port,
                })
                .is_ok()
                {
                    self.c.tcp_accepted += 1;
                }
            }
        }
    }
}

impl Element for Host {
    fn role(&self) -> &'static str {
        "host"
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        tx: &mut dyn Transmit,
    ) {
        self.c.rx_frames += 1;
        if port != 0 {
            return;
        }
        let dst_mac = match check_frame(frame) {
            Ok(Frame::Arp { dst_mac, .. }) | Ok(Frame::Ipv4 { dst_mac, .. }) => dst_mac,
            Err(r) => {
                self.drops.count(r);
                return;
            }
        };
        if dst_mac != self.mac && !dst_mac.is_broadcast() {
            self.c.not_for_us += 1;
            return;
        }
        self.drive(now, Some(frame), tx);
    }

    fn poll_at(&self) -> Option<Instant> {
        self.next_poll
    }

    fn poll(&mut self, now: Instant, tx: &mut dyn Transmit) {
        self.drive(now, None, tx);
    }

    fn tables(&self) -> &'static [&'static str] {
        &["interfaces", "tcp"]
    }

    fn show(&self, table: &str, _now: Instant) -> Option<serde_json::Value> {
        match table {
            "interfaces" => Some(json!([{
                "name": "eth0",
                "mac": d11_element::mac_string(&self.mac.0),
                "addresses": self.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "gateway": self.gateway.map(|g| g.to_string()),
                "mtu": self.mtu,
                "default_ttl": DEFAULT_TTL,
            }])),
            "tcp" => Some(json!(self
                .tcp
                .iter()
                .map(|&h| {
                    let s = self.sockets.get::<tcp::Socket>(h);
                    json!({
                        "state": s.state().to_string(),
                        "local": s.local_endpoint().map(|e| e.to_string()),
                        "remote": s.remote_endpoint().map(|e| e.to_string()),
                        "send_queue": s.send_queue(),
                        "recv_queue": s.recv_queue(),
                    })
                })
                .collect::<Vec<_>>())),
            _ => None,
        }
    }

    fn counters(&self, out: &mut dyn FnMut(&str, u64)) {
        self.c.for_each(out);
        self.drops.for_each(out);
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("name", &self.name).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_router::{Router, RouterConfig};

    /// Two userspace hosts and a router, wired in memory; frames are shuttled until quiet.
    struct World {
        h1: Host,
        h2: Host,
        r: Router,
        now: Instant,
    }

    impl World {
        fn new() -> Self {
            let now = Instant::now();
            let h = |name: &str, addr: &str, gw: &str| -> Host {
                let cfg: HostConfig = serde_json::from_value(json!({
                    "name": name, "gateway": gw,
                    "ports": [{"name": "eth0", "addresses": [addr]}],
                }))
                .unwrap();
                Host::new(&cfg, now).unwrap()
            };
            let rc: RouterConfig = serde_json::from_value(json!({
                "name": "r",
                "ports": [
                    {"name": "eth0", "addresses": ["10.0.1.1/24"]},
                    {"name": "eth1", "addresses": ["10.0.2.1/24"]},
                ],
            }))
            .unwrap();
            World {
                h1: h("h1", "10.0.1.2/24", "10.0.1.1"),
                h2: h("h2", "10.0.2.2/24", "10.0.2.1"),
                r: Router::new(&rc).unwrap(),
                now,
            }
        }

        /// Delivers frames in flight until none are left (segments are point-to-point here).
        fn settle(&mut self, mut from_h1: Vec<Vec<u8>>) -> usize {
            let mut moved = 0;
            let mut from_h2: Vec<Vec<u8>> = Vec::new();
            for _ in 0..1000 {
                let mut to_r = Collect::default();
                let mut r_out = Collect::default();
                for mut f in from_h1.drain(..) {
                    self.r.handle_frame(self.now, 0, &mut f, &mut r_out);
                    moved += 1;
                }
                for mut f in from_h2.drain(..) {
                    self.r.handle_frame(self.now, 1, &mut f, &mut r_out);
                    moved += 1;
                }
                for (p, mut f) in r_out.frames {
                    if p == 0 {
                        self.h1.handle_frame(self.now, 0, &mut f, &mut to_r);
                        from_h1.append(&mut to_r.frames.drain(..).map(|x| x.1).collect());
                    } else {
                        self.h2.handle_frame(self.now, 0, &mut f, &mut to_r);
                        from_h2.append(&mut to_r.frames.drain(..).map(|x| x.1).collect());
                    }
                    moved += 1;
                }
                let mut t1 = Collect::default();
                self.h1.poll(self.now, &mut t1);
                from_h1.extend(t1.frames.into_iter().map(|x| x.1));
                let mut t2 = Collect::default();
                self.h2.poll(self.now, &mut t2);
                from_h2.extend(t2.frames.into_iter().map(|x| x.1));
                if from_h1.is_empty() && from_h2.is_empty() {
                    break;
                }
            }
            moved
        }
    }

    #[test]
    fn udp_echo_through_the_router() {
        let mut w = World::new();
        // A UDP client socket on h1 sends to h2:7 and must get the same bytes back.
        let mut u = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 2048]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 2048]),
        );
        u.bind(5000).unwrap();
        let h = w.h1.sockets.add(u);
        w.h1.sockets
            .get_mut::<udp::Socket>(h)
            .send_slice(
                b"double eleven",
                (smoltcp::wire::IpAddress::v4(10, 0, 2, 2), 7),
            )
            .unwrap();
        let mut out = Collect::default();
        w.h1.poll(w.now, &mut out);
        w.settle(out.frames.into_iter().map(|x| x.1).collect());
        // ARP resolution took a round; retry the poll until the reply arrives.
        for _ in 0..5 {
            w.now += Duration::from_millis(1100);
            let mut o = Collect::default();
            w.h1.poll(w.now, &mut o);
            w.settle(o.frames.into_iter().map(|x| x.1).collect());
        }
        let mut buf = [0u8; 64];
        let (n, meta) =
            w.h1.sockets
                .get_mut::<udp::Socket>(h)
                .recv_slice(&mut buf)
                .unwrap();
        assert_eq!(&buf[..n], b"double eleven");
        assert_eq!(meta.endpoint.port, 7);
        assert_eq!(w.h2.c.udp_echoed, 1);
        assert_eq!(w.r.counters_ref().forwarded, 2);
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let mut w = World::new();
        let mut tx = Collect::default();
        for len in [0usize, 5, 13, 14, 20, 34, 60] {
            let mut f = vec![0xffu8; len];
            if len >= 14 {
                f[6] = 2; // unicast source
                f[12] = 8;
                f[13] = 0;
            }
            w.h1.handle_frame(w.now, 0, &mut f, &mut tx);
        }
        assert_eq!(w.h1.drops.total(), 7);
    }
}
