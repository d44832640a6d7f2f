//! A TCP super-frame through eNodeB, SGW and PGW, each element's output fed to the next: it
//! crosses as UDP super-frames of G-PDUs and comes out as the super-frame it was, and each of
//! those UDP super-frames, cut, is octet for octet what the element sends for each segment.

use crate::enb::{EnbConfig, EnbLogic};
use crate::pgw::{PgwConfig, PgwLogic};
use crate::sgw::{SgwConfig, SgwLogic};
use d11_element::{CollectGso, Element, PortId};
use d11_wire::gso::{self, Gso, GSO_TCPV4};
use serde_json::json;
use std::net::Ipv4Addr;
use std::time::Instant;

const UE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
const UE: Ipv4Addr = Ipv4Addr::new(10, 45, 0, 2);
const SRV_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x99];
const SRV: Ipv4Addr = Ipv4Addr::new(172, 16, 9, 1);

type Frames = Vec<(PortId, Vec<u8>, Gso)>;

/// The three elements as bench/mobile sets them up: a PDU session of type `pdn` ("ethernet"
/// or "ipv4"), static tunnels (eNodeB 100, SGW 200 and 400, PGW 300).
struct Core {
    enb: crate::enb::Enb,
    sgw: crate::sgw::Sgw,
    pgw: crate::pgw::Pgw,
    ethernet: bool,
}

impl Core {
    fn new(pdn: &str) -> Core {
        let enb: EnbConfig = serde_json::from_value(json!({
            "name": "enb", "mme": "172.16.1.5", "echo_interval_s": 0,
            "ports": [{"name": "radio"}, {"name": "epc", "addresses": ["172.16.1.2/24"]}],
            "static_bearers": [{"ue_mac": "02:00:00:00:00:10", "pdn_type": pdn,
                "ue_ip": "10.45.0.2", "enb_teid": 100, "sgw": "172.16.1.3", "sgw_teid": 200}],
        }))
        .unwrap();
        let sgw: SgwConfig = serde_json::from_value(json!({
            "name": "sgw", "echo_interval_s": 0,
            "ports": [{"name": "epc", "addresses": ["172.16.1.3/24"]},
                      {"name": "s5", "addresses": ["172.16.5.3/24"]}],
            "static_sessions": [{"imsi": "001010000000001", "enb": "172.16.1.2", "enb_teid": 100,
                "s1u_teid": 200, "pgw": "172.16.5.4", "pgw_teid": 300, "s5u_teid": 400}],
        }))
        .unwrap();
        let pgw: PgwConfig = serde_json::from_value(json!({
            "name": "pgw", "echo_interval_s": 0,
            "ports": [{"name": "s5", "addresses": ["172.16.5.4/24"]},
                      {"name": "sgi", "addresses": ["172.16.9.4/24"]}],
            "routes": [{"prefix": "0.0.0.0/0", "via": "172.16.9.1"}],
            "static_sessions": [{"imsi": "001010000000001", "ue_ip": "10.45.0.2",
                "pdn_type": pdn, "s5u_teid": 300, "sgw": "172.16.5.3", "sgw_teid": 400}],
        }))
        .unwrap();
        Core {
            enb: EnbLogic::new(&enb, 1).unwrap(),
            sgw: SgwLogic::new(&sgw, 1).unwrap(),
            pgw: PgwLogic::new(&pgw, 1).unwrap(),
            ethernet: pdn == "ethernet",
        }
    }

    /// Where the UE sends its frames: the UEs' gateway through the tunnel (an Ethernet
    /// session), else the eNodeB (an IPv4 session carries IP packets only).
    fn ue_next_hop(&self) -> [u8; 6] {
        if self.ethernet {
            self.gateway_mac()
        } else {
            self.enb.router.port_mac(0).unwrap().0
        }
    }

    /// A core whose elements know each other's MACs, and the PGW the UE's (from its ARP
    /// answer up the tunnel, in an Ethernet session): what a first super-frame each way did.
    fn warm(pdn: &str) -> Core {
        let mut core = Core::new(pdn);
        if core.ethernet {
            let gw = Ipv4Addr::new(10, 45, 0, 1);
            let arp = d11_wire::arp::reply(UE_MAC, UE, core.gateway_mac(), gw);
            core.uplink(arp.to_vec(), Gso::NONE);
        }
        let (f, g) = tcp_super_frame((UE_MAC, core.ue_next_hop()), (UE, SRV), 20_000, 1386);
        core.uplink(f, g);
        let pgw_sgi = core.pgw.router.port_mac(1).unwrap().0;
        let (f, g) = tcp_super_frame((SRV_MAC, pgw_sgi), (SRV, UE), 20_000, 1386);
        core.downlink(f, g);
        core
    }

    /// Every element's address and MAC, for the ARP each asks.
    fn peers(&self) -> Vec<([u8; 6], Ipv4Addr)> {
        let mac = |r: &d11_router::Router, p: &str| r.port_mac(r.port_index(p).unwrap()).unwrap().0;
        vec![
            (mac(&self.enb.router, "epc"), Ipv4Addr::new(172, 16, 1, 2)),
            (mac(&self.sgw.router, "epc"), Ipv4Addr::new(172, 16, 1, 3)),
            (mac(&self.sgw.router, "s5"), Ipv4Addr::new(172, 16, 5, 3)),
            (mac(&self.pgw.router, "s5"), Ipv4Addr::new(172, 16, 5, 4)),
            (SRV_MAC, SRV),
        ]
    }

    /// The MAC the UEs' gateway (the PGW's side of the tunnels) has.
    fn gateway_mac(&self) -> [u8; 6] {
        let r = &self.pgw.router;
        r.port_mac(r.port_index(crate::pgw::UE_PORT).unwrap())
            .unwrap()
            .0
    }

    /// A frame (with its metadata) from the UE's radio through all three: what leaves each.
    fn uplink(&mut self, f: Vec<u8>, g: Gso) -> [Frames; 3] {
        let peers = self.peers();
        let a = feed(&mut self.enb, 0, vec![(f, g)], &peers);
        let b = feed(&mut self.sgw, 0, frames(&a), &peers);
        let c = feed(&mut self.pgw, 0, frames(&b), &peers);
        [a, b, c]
    }

    /// A frame (with its metadata) from the server through all three: what leaves each.
    fn downlink(&mut self, f: Vec<u8>, g: Gso) -> [Frames; 3] {
        let peers = self.peers();
        let a = feed(&mut self.pgw, 1, vec![(f, g)], &peers);
        let b = feed(&mut self.sgw, 1, frames(&a), &peers);
        let c = feed(&mut self.enb, 1, frames(&b), &peers);
        [a, b, c]
    }
}

fn frames(f: &Frames) -> Vec<(Vec<u8>, Gso)> {
    f.iter().map(|(_, f, g)| (f.clone(), *g)).collect()
}

/// Feeds frames to `port` of `e`, answering its ARP for `peers`; what else it sent.
fn feed(
    e: &mut dyn Element,
    port: PortId,
    input: Vec<(Vec<u8>, Gso)>,
    peers: &[([u8; 6], Ipv4Addr)],
) -> Frames {
    let now = Instant::now();
    let mut tx = CollectGso::default();
    for (mut f, g) in input {
        if g.is_plain() {
            e.handle_frame(now, port, &mut f, &mut tx);
        } else {
            e.handle_frame_gso(now, port, &mut f, &g, &mut tx);
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < tx.frames.len() {
        let (p, fr, g) = tx.frames[i].clone();
        i += 1;
        if fr[12..14] == [8, 6] && fr[20..22] == [0, 1] {
            let target = Ipv4Addr::new(fr[38], fr[39], fr[40], fr[41]);
            if let Some(peer) = peers.iter().find(|x| x.1 == target) {
                let mine: [u8; 6] = fr[6..12].try_into().unwrap();
                let asker = Ipv4Addr::new(fr[28], fr[29], fr[30], fr[31]);
                let mut a = d11_wire::arp::reply(peer.0, peer.1, mine, asker).to_vec();
                e.handle_frame(now, p, &mut a, &mut tx);
                continue;
            }
        }
        out.push((p, fr, g));
    }
    out
}

/// A TCP/IPv4 super-frame from `src` to `dst` in a frame from `from` to `to`: `n` octets of
/// data in segments of `mss`, the checksum partial, as a kernel with TSO hands it over.
fn tcp_super_frame(
    (from, to): ([u8; 6], [u8; 6]),
    (src, dst): (Ipv4Addr, Ipv4Addr),
    n: usize,
    mss: u16,
) -> (Vec<u8>, Gso) {
    let mut f = vec![0u8; 66 + n];
    f[0..6].copy_from_slice(&to);
    f[6..12].copy_from_slice(&from);
    f[12..14].copy_from_slice(&[8, 0]);
    d11_wire::ip::write_header(&mut f[14..34], 52 + n, 64, 6, src, dst);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    f[38..42].copy_from_slice(&7u32.to_be_bytes());
    f[42..46].copy_from_slice(&9u32.to_be_bytes());
    f[46] = 8 << 4;
    f[47] = 0x18;
    f[48..50].copy_from_slice(&1000u16.to_be_bytes());
    // Timestamps, as Linux sends them.
    f[54..66].copy_from_slice(&[1, 1, 8, 10, 0, 0, 1, 2, 0, 0, 3, 4]);
    for (i, x) in f[66..].iter_mut().enumerate() {
        *x = (i * 11 % 249) as u8;
    }
    let g = gso::offload_tcp4(&mut f, mss).unwrap();
    (f, g)
}

/// Every segment a frame stands for, as IP packets.
fn segments(f: &[u8], g: &Gso) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let mut out = Vec::new();
    gso::segment(f, g, &mut buf, |s| out.push(s[14..].to_vec())).unwrap();
    out
}

/// The same packet one router hop later: TTL one less (and the checksum with it).
fn hop(ip: &[u8]) -> Vec<u8> {
    let mut p = ip.to_vec();
    p[8] -= 1;
    d11_wire::fill_ipv4_checksum(&mut p[..20]);
    p
}

/// What `e` sends, one frame at a time, for each segment of `f`: the UDP datagrams.
fn one_by_one(
    e: &mut dyn Element,
    port: PortId,
    f: &[u8],
    g: &Gso,
    peers: &[([u8; 6], Ipv4Addr)],
) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let mut input = Vec::new();
    gso::segment(f, g, &mut buf, |s| input.push((s.to_vec(), Gso::NONE))).unwrap();
    feed(e, port, input, peers)
        .into_iter()
        .map(|(_, f, _)| f[34..].to_vec())
        .collect()
}

/// The UDP datagrams a UDP super-frame stands for.
fn datagrams(f: &[u8], g: &Gso) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let mut out = Vec::new();
    gso::segment(f, g, &mut buf, |s| out.push(s[34..].to_vec())).unwrap();
    out
}

#[test]
fn a_tcp_super_frame_crosses_the_core_whole_both_ways_in_an_ethernet_session() {
    crosses_whole("ethernet");
}

#[test]
fn a_tcp_super_frame_crosses_the_core_whole_both_ways_in_an_ipv4_session() {
    crosses_whole("ipv4");
}

fn crosses_whole(pdn: &str) {
    let mut core = Core::warm(pdn);
    let up = |core: &Core, n| tcp_super_frame((UE_MAC, core.ue_next_hop()), (UE, SRV), n, 1386);
    let pgw_sgi = core.pgw.router.port_mac(1).unwrap().0;
    let down = |n| tcp_super_frame((SRV_MAC, pgw_sgi), (SRV, UE), n, 1386);
    for n in [20_000, 63_000] {
        let (f, g) = up(&core, n);
        let [enb, sgw, pgw] = core.uplink(f.clone(), g);
        // Super-frames; a last G-PDU left alone goes as itself.
        for (hopname, out) in [("eNodeB", &enb), ("SGW", &sgw)] {
            assert!(
                out[0].2.is_udp_segments()
                    && out[1..]
                        .iter()
                        .all(|(_, f, g)| g.is_udp_segments() || datagrams(f, g).len() == 1),
                "{hopname} sent UDP super-frames: {:?}",
                out.iter().map(|x| x.2).collect::<Vec<_>>()
            );
        }
        // 46 G-PDUs of 1,460 octets (or 1,446) do not fit one IPv4 packet: 44 (or 45) go
        // in one super-frame, the rest in another (or alone).
        assert_eq!(enb.len(), if n == 63_000 { 2 } else { 1 });
        assert_eq!(
            pgw.len(),
            enb.len(),
            "a TCP super-frame out of the PGW for each"
        );
        assert!(pgw[0].2.gso_type == GSO_TCPV4 && pgw[0].2.gso_size == 1386);
        let mut got = Vec::new();
        for (port, out, og) in &pgw {
            assert_eq!(*port, 1);
            got.extend(segments(out, og));
        }
        let want: Vec<_> = segments(&f, &g).iter().map(|p| hop(p)).collect();
        assert_eq!(got, want, "the segments that went in, one hop later");
        // Each UDP super-frame, cut, is what goes one G-PDU per frame.
        let via_enb: Vec<_> = enb.iter().flat_map(|(_, f, g)| datagrams(f, g)).collect();
        let peers = core.peers();
        assert_eq!(via_enb, one_by_one(&mut core.enb, 0, &f, &g, &peers));

        let (f, g) = down(n);
        let [pgw, sgw, enb] = core.downlink(f.clone(), g);
        assert!(pgw[0].2.is_udp_segments() && sgw[0].2.is_udp_segments());
        assert_eq!(enb.len(), sgw.len(), "a frame to the radio for each");
        assert_eq!(
            enb[0].2.gso_type, GSO_TCPV4,
            "a TCP super-frame to the radio"
        );
        let mut got = Vec::new();
        for (port, out, og) in &enb {
            assert_eq!((*port, &out[..6]), (0, &UE_MAC[..]));
            got.extend(segments(out, og));
        }
        let want: Vec<_> = segments(&f, &g).iter().map(|p| hop(p)).collect();
        assert_eq!(got, want);
        let via_sgw: Vec<_> = sgw.iter().flat_map(|(_, f, g)| datagrams(f, g)).collect();
        let via_pgw: Vec<_> = pgw.iter().flat_map(|(_, f, g)| datagrams(f, g)).collect();
        let direct: Vec<_> = via_pgw
            .iter()
            .map(|d| {
                let fr = crate::testutil::udp_frame(
                    core.sgw.router.port_mac(1).unwrap().0,
                    (
                        core.pgw.router.port_mac(0).unwrap().0,
                        Ipv4Addr::new(172, 16, 5, 4),
                    ),
                    Ipv4Addr::new(172, 16, 5, 3),
                    2152,
                    &d[8..],
                );
                let fr = crate::testutil::with_udp_checksum(fr);
                (fr, Gso::NONE)
            })
            .collect();
        let peers = core.peers();
        let switched: Vec<_> = feed(&mut core.sgw, 1, direct, &peers)
            .into_iter()
            .map(|(_, f, _)| f[34..].to_vec())
            .collect();
        assert_eq!(
            via_sgw, switched,
            "the SGW switches each G-PDU as it switches one"
        );
    }
    assert!(
        core.enb.logic.c.uplink_super_frames >= 3 && core.enb.logic.c.downlink_super_frames >= 2
    );
    // (In an IPv4 session the first super-frame down was cut: the router had not yet asked
    // for the UE's MAC, which its packets into the tunnel at once never need.)
    assert!(
        core.pgw.logic.c.uplink_super_frames >= 2 && core.pgw.logic.c.downlink_super_frames >= 2
    );
}

#[test]
fn g_pdus_that_do_not_merge_go_on_one_by_one() {
    let mut core = Core::warm("ethernet");
    let (f, g) = tcp_super_frame((UE_MAC, core.gateway_mac()), (UE, SRV), 10_000, 1386);
    let [enb, _, _] = core.uplink(f.clone(), g);
    let (_, mut sf, sg) = enb[0].clone();
    // One G-PDU's T-PDU corrupted on the way (its TCP checksum no longer right).
    let at = 42 + usize::from(sg.gso_size) * 2 + 8 + 14 + 52 + 100;
    sf[at] ^= 0xff;
    let peers = core.peers();
    let b = feed(&mut core.sgw, 0, vec![(sf, sg)], &peers);
    let c = feed(&mut core.pgw, 0, frames(&b), &peers);
    assert_eq!(c.len(), segments(&f, &g).len(), "each segment on its own");
    assert!(c.iter().all(|(p, _, g)| *p == 1 && g.is_plain()));
}

/// Counts what an element sends, whole super-frames as one, and keeps nothing.
#[derive(Default)]
struct Sink(u64);

impl d11_element::Transmit for Sink {
    fn send(&mut self, _port: PortId, _frame: &[u8]) {
        self.0 += 1;
    }
    fn offloads(&self, _port: PortId) -> bool {
        true
    }
    fn send_gso(&mut self, _port: PortId, _frame: &[u8], _gso: &Gso) {
        self.0 += 1;
    }
}

/// Feeds `frame` to `port` of `e` `rounds` times through one buffer; the allocations that
/// made and the frames sent.
fn allocations(
    e: &mut dyn Element,
    port: PortId,
    (frame, g): (&[u8], Gso),
    rounds: usize,
) -> (u64, u64) {
    let now = Instant::now();
    let mut buf = frame.to_vec();
    let mut tx = Sink::default();
    let mut run = |e: &mut dyn Element, tx: &mut Sink| {
        buf.copy_from_slice(frame);
        e.handle_frame_gso(now, port, &mut buf, &g, tx);
    };
    // A few rounds first: buffer pools fill.
    for _ in 0..4 {
        run(e, &mut tx);
    }
    let before = tx.0;
    let allocs = d11_element::alloc_count::allocations_in(|| {
        for _ in 0..rounds {
            run(e, &mut tx);
        }
    });
    (allocs, tx.0 - before)
}

#[test]
fn super_frames_cross_each_element_without_allocating_once_warm() {
    assert!(d11_element::alloc_count::counting_is_on());
    for pdn in ["ethernet", "ipv4"] {
        let mut core = Core::warm(pdn);
        let (f, g) = tcp_super_frame((UE_MAC, core.ue_next_hop()), (UE, SRV), 40_000, 1386);
        let [enb, sgw, _] = core.uplink(f.clone(), g);
        let pgw_sgi = core.pgw.router.port_mac(1).unwrap().0;
        let (df, dg) = tcp_super_frame((SRV_MAC, pgw_sgi), (SRV, UE), 40_000, 1386);
        let [pgw, sgw_d, _] = core.downlink(df.clone(), dg);
        let runs = [
            ("eNodeB up", allocations(&mut core.enb, 0, (&f, g), 200)),
            (
                "SGW up",
                allocations(&mut core.sgw, 0, (&enb[0].1, enb[0].2), 200),
            ),
            (
                "PGW up",
                allocations(&mut core.pgw, 0, (&sgw[0].1, sgw[0].2), 200),
            ),
            ("PGW down", allocations(&mut core.pgw, 1, (&df, dg), 200)),
            (
                "SGW down",
                allocations(&mut core.sgw, 1, (&pgw[0].1, pgw[0].2), 200),
            ),
            (
                "eNodeB down",
                allocations(&mut core.enb, 1, (&sgw_d[0].1, sgw_d[0].2), 200),
            ),
        ];
        for (what, (allocs, sent)) in runs {
            assert_eq!(sent, 200, "{pdn} {what}: one frame out for each");
            assert_eq!(
                allocs, 0,
                "{pdn} {what}: heap allocations for 200 super-frames"
            );
        }
    }
}
