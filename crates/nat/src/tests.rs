//! NAT conformance (RFC 4787, 5382, 5508) on frames, with time moved by hand.

use super::*;
use d11_element::{Collect, Element};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    UdpPacket, UdpRepr,
};

const A2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PGW: Ipv4Addr = Ipv4Addr::new(172, 16, 9, 4);
const UE: Ipv4Addr = Ipv4Addr::new(10, 45, 0, 2);
const UE2: Ipv4Addr = Ipv4Addr::new(10, 45, 0, 3);
const SRV: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SRV2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const A2_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xa2];
const PGW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x04];

fn nat(filtering: &str, max: usize) -> Nat {
    let cfg: NatConfig = serde_json::from_value(json!({
        "name": "nat",
        "ports": [
            {"name": "eth0", "addresses": ["172.16.9.1/24"]},
            {"name": "eth1", "addresses": ["198.51.100.2/24"]},
        ],
        "routes": [
            {"prefix": "0.0.0.0/0", "via": "198.51.100.1"},
            {"prefix": "10.45.0.0/16", "via": "172.16.9.4"},
        ],
        "nat": {"inside": ["eth0"], "outside": "eth1", "pool": ["198.51.100.10-11"], "filtering": filtering, "max_mappings": max},
    }))
    .unwrap();
    let mut n = crate::new(&cfg).unwrap();
    // Teach it the neighbours' MACs (an ARP request to the NAT from each).
    let mut tx = Collect::default();
    let now = Instant::now();
    for (port, mac, ip, target) in [
        (1, A2_MAC, A2, Ipv4Addr::new(198, 51, 100, 2)),
        (0, PGW_MAC, PGW, Ipv4Addr::new(172, 16, 9, 1)),
    ] {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&ip.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        f.resize(60, 0);
        n.handle_frame(now, port, &mut f, &mut tx);
    }
    n
}

fn eth(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip);
    f
}

fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let payload = b"order";
    let u = UdpRepr {
        src_port: sport,
        dst_port: dport,
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: u.header_len() + payload.len(),
        hop_limit: 64,
    };
    let mut b = vec![0u8; ip.buffer_len() + ip.payload_len];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut b[..20]), &caps);
    u.emit(
        &mut UdpPacket::new_unchecked(&mut b[20..]),
        &src.into(),
        &dst.into(),
        payload.len(),
        |p| p.copy_from_slice(payload),
        &caps,
    );
    b
}

fn tcp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    control: TcpControl,
    ack: bool,
) -> Vec<u8> {
    let t = TcpRepr {
        src_port: sport,
        dst_port: dport,
        control,
        seq_number: TcpSeqNumber(1000),
        ack_number: ack.then_some(TcpSeqNumber(2000)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: t.buffer_len(),
        hop_limit: 64,
    };
    let mut b = vec![0u8; 20 + t.buffer_len()];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut b[..20]), &caps);
    t.emit(
        &mut TcpPacket::new_unchecked(&mut b[20..]),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        &caps,
    );
    b
}

/// Sends `ip` into the NAT on `port` (from the PGW inside, or from a2 outside).
fn send(n: &mut Nat, now: Instant, port: PortId, ip: &[u8]) -> Vec<(PortId, Vec<u8>)> {
    let mac = n.router.port_mac(port).unwrap().0;
    let src = if port == 0 { PGW_MAC } else { A2_MAC };
    let mut f = eth(mac, src, ip);
    let mut tx = Collect::default();
    n.handle_frame(now, port, &mut f, &mut tx);
    tx.frames
}

/// (src, sport, dst, dport) of an IPv4 UDP/TCP frame, with checksums checked.
fn five(f: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert!(ip.verify_checksum(), "IP checksum");
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    match ip.next_header() {
        IpProtocol::Udp => {
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(u.verify_checksum(&s.into(), &d.into()), "UDP checksum");
            (s, u.src_port(), d, u.dst_port())
        }
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(t.verify_checksum(&s.into(), &d.into()), "TCP checksum");
            (s, t.src_port(), d, t.dst_port())
        }
        p => panic!("{p}"),
    }
}

#[test]
fn endpoint_independent_mapping_with_port_preservation() {
    let mut n = nat("endpoint-independent", 100);
    let t = Instant::now();
    let a = send(&mut n, t, 0, &udp(UE, 40000, SRV, 443));
    let b = send(&mut n, t, 0, &udp(UE, 40000, SRV2, 53));
    assert_eq!((a.len(), b.len()), (1, 1));
    let (sa, pa, da, _) = five(&a[0].1);
    let (sb, pb, db, _) = five(&b[0].1);
    assert_eq!(a[0].0, 1, "out of the outside port");
    assert_eq!(&a[0].1[0..6], &A2_MAC);
    assert_eq!((sa, pa), (sb, pb), "one mapping for both destinations");
    assert!(n.logic.pool().contains(&sa));
    assert_eq!(pa, 40000, "port preserved");
    assert_eq!((da, db), (SRV, SRV2));
    // A second host keeps its own port when free; the same port from another host's paired
    // address is not taken twice.
    let c = send(&mut n, t, 0, &udp(UE2, 40000, SRV, 443));
    let (sc, pc, _, _) = five(&c[0].1);
    assert_ne!((sc, pc), (sa, pa));
    assert_eq!(n.logic.len(), 2);
}

#[test]
fn unsolicited_inbound_is_dropped_and_replies_come_back() {
    let mut n = nat("endpoint-independent", 100);
    let t = Instant::now();
    assert!(send(
        &mut n,
        t,
        1,
        &udp(SRV, 443, Ipv4Addr::new(198, 51, 100, 10), 5555)
    )
    .is_empty());
    assert_eq!(n.logic.c.unsolicited_dropped, 1);
    let out = send(&mut n, t, 0, &udp(UE, 40000, SRV, 443));
    let (ext, eport, _, _) = five(&out[0].1);
    let back = send(&mut n, t, 1, &udp(SRV, 443, ext, eport));
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0, 0, "towards the PGW");
    assert_eq!(&back[0].1[0..6], &PGW_MAC);
    assert_eq!(five(&back[0].1), (SRV, 443, UE, 40000));
    // Endpoint-independent filtering: another remote may use the mapping too.
    assert_eq!(send(&mut n, t, 1, &udp(SRV2, 9, ext, eport)).len(), 1);
}

#[test]
fn address_dependent_filtering() {
    let mut n = nat("address-dependent", 100);
    let t = Instant::now();
    let out = send(&mut n, t, 0, &udp(UE, 40000, SRV, 443));
    let (ext, eport, _, _) = five(&out[0].1);
    assert_eq!(
        send(&mut n, t, 1, &udp(SRV, 80, ext, eport)).len(),
        1,
        "same address, any port"
    );
    assert!(send(&mut n, t, 1, &udp(SRV2, 443, ext, eport)).is_empty());
    assert_eq!(n.logic.c.filtered_dropped, 1);
}

#[test]
fn icmp_errors_are_translated_with_the_embedded_header() {
    let mut n = nat("endpoint-independent", 100);
    let t = Instant::now();
    let out = send(&mut n, t, 0, &udp(UE, 40000, SRV, 33434));
    let sent = out[0].1[14..].to_vec();
    let (ext, _, _, _) = five(&out[0].1);
    // A router beyond answers "port unreachable", quoting the packet as it saw it.
    let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&sent);
    let c = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
    ip.extend_from_slice(&SRV.octets());
    ip.extend_from_slice(&ext.octets());
    ip.extend_from_slice(&icmp);
    let len = ip.len() as u16;
    ip[2..4].copy_from_slice(&len.to_be_bytes());
    fill_ipv4_checksum(&mut ip[..20]);
    let back = send(&mut n, t, 1, &ip);
    assert_eq!(back.len(), 1);
    let f = &back[0].1[14..];
    let outer = Ipv4Packet::new_checked(f).unwrap();
    assert!(outer.verify_checksum());
    assert_eq!(outer.dst_addr(), UE);
    assert_eq!(internet_checksum(outer.payload()), 0, "ICMP checksum");
    let inner = &outer.payload()[8..];
    // The embedded packet is the UE's own, as it sent it: source, port and checksums.
    assert_eq!(
        five(&[&[0u8; 14][..], inner].concat()),
        (UE, 40000, SRV, 33434)
    );
    assert_eq!(n.logic.c.icmp_errors_translated, 1);
}

#[test]
fn timeouts_expire_on_the_given_clock() {
    let mut n = nat("endpoint-independent", 100);
    let t = Instant::now();
    let mut tx = Collect::default();
    send(&mut n, t, 0, &udp(UE, 40000, SRV, 443));
    // TCP: SYN out, SYN-ACK in, ACK out: established.
    let syn = send(
        &mut n,
        t,
        0,
        &tcp(UE, 41000, SRV, 443, TcpControl::Syn, false),
    );
    let (ext, eport, _, _) = five(&syn[0].1);
    send(
        &mut n,
        t,
        1,
        &tcp(SRV, 443, ext, eport, TcpControl::Syn, true),
    );
    send(
        &mut n,
        t,
        0,
        &tcp(UE, 41000, SRV, 443, TcpControl::None, true),
    );
    // A half-open TCP flow (transitory).
    send(
        &mut n,
        t,
        0,
        &tcp(UE, 42000, SRV, 443, TcpControl::Syn, false),
    );
    let states: Vec<String> = n
        .logic
        .view(t)
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}:{}", m["internal"], m["state"]))
        .collect();
    assert!(
        states
            .iter()
            .any(|s| s.contains("41000") && s.contains("established")),
        "{states:?}"
    );
    let at = |s: u64| t + Duration::from_secs(s) + Duration::from_millis(500);
    n.poll(at(119), &mut tx);
    assert_eq!(n.logic.len(), 3, "UDP lives 2 minutes");
    n.poll(at(121), &mut tx);
    assert_eq!(n.logic.len(), 2);
    n.poll(at(241), &mut tx);
    assert_eq!(n.logic.len(), 1, "transitory TCP: 4 minutes");
    n.poll(at(7439), &mut tx);
    assert_eq!(n.logic.len(), 1);
    n.poll(at(7441), &mut tx);
    assert!(n.logic.is_empty(), "established TCP: 2 h 4 min");
    assert_eq!(n.logic.c.mappings_expired, 3);
    // After expiry the old external endpoint is unsolicited again.
    assert!(send(
        &mut n,
        at(7442),
        1,
        &tcp(SRV, 443, ext, eport, TcpControl::None, true)
    )
    .is_empty());
}

#[test]
fn hairpinning_reaches_the_other_host_from_an_external_address() {
    let mut n = nat("endpoint-independent", 100);
    let t = Instant::now();
    let out = send(&mut n, t, 0, &udp(UE, 40000, SRV, 443));
    let (ext_a, port_a, _, _) = five(&out[0].1);
    let hp = send(&mut n, t, 0, &udp(UE2, 50000, ext_a, port_a));
    assert_eq!(hp.len(), 1);
    assert_eq!(hp[0].0, 0, "back inside");
    let (s, sp, d, dp) = five(&hp[0].1);
    assert_eq!((d, dp), (UE, 40000));
    assert!(
        n.logic.pool().contains(&s),
        "seen from UE2's external address, {s}:{sp}"
    );
    assert_eq!(n.logic.c.hairpinned, 1);
}

#[test]
fn the_table_is_bounded() {
    let mut n = nat("endpoint-independent", 2);
    let t = Instant::now();
    for p in 0..3 {
        send(&mut n, t, 0, &udp(UE, 40000 + p, SRV, 443));
    }
    assert_eq!(n.logic.len(), 2);
    assert_eq!(n.logic.c.refused_full, 1);
}

#[test]
fn pools_parse() {
    assert_eq!(parse_pool(&["198.51.100.10-19".into()]).unwrap().len(), 10);
    assert_eq!(
        parse_pool(&["10.0.0.1".into(), "10.0.0.5-10.0.0.6".into()])
            .unwrap()
            .len(),
        3
    );
    assert!(parse_pool(&["10.0.0.9-1".into()]).is_err());
    assert!(parse_pool(&[]).is_err());
}

#[global_allocator]
static COUNTING: d11_element::alloc_count::Counting = d11_element::alloc_count::Counting;

/// Translating both ways, once the mapping exists, allocates nothing per packet.
#[test]
fn translating_allocates_nothing_once_warm() {
    let mut n = nat("endpoint-independent", 100);
    let now = Instant::now();
    let out = send(&mut n, now, 0, &udp(UE, 40000, SRV, 443));
    let (ext, eport, _, _) = five(&out[0].1);
    let frame = |port: PortId, ip: &[u8]| {
        let src = if port == 0 { PGW_MAC } else { A2_MAC };
        (port, eth(n.router.port_mac(port).unwrap().0, src, ip))
    };
    let frames = [
        frame(0, &udp(UE, 40000, SRV, 443)),
        frame(1, &udp(SRV, 443, ext, eport)),
    ];
    let (allocs, sent) =
        d11_element::alloc_count::allocations_forwarding(&mut n, now, &frames, 1000);
    assert_eq!(sent, 2000);
    assert_eq!(allocs, 0, "heap allocations for 2000 translated packets");
    assert_eq!(n.logic.len(), 1);
}

/// A TCP super-frame (`n` octets in segments of 1448, checksum partial, as a kernel with TSO
/// hands it over) from `src` to `dst`, as a frame to the NAT's `port`.
fn super_frame(
    n: &Nat,
    port: PortId,
    (src, sport): (Ipv4Addr, u16),
    (dst, dport): (Ipv4Addr, u16),
    len: usize,
) -> (Vec<u8>, d11_wire::gso::Gso) {
    let mut ip = tcp(src, sport, dst, dport, TcpControl::Psh, true);
    ip.extend((0..len).map(|i| (i * 7) as u8));
    let total = ip.len() as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    fill_ipv4_checksum(&mut ip[..20]);
    let mac = n.router.port_mac(port).unwrap().0;
    let mut f = eth(mac, if port == 0 { PGW_MAC } else { A2_MAC }, &ip);
    let g = d11_wire::gso::offload_tcp4(&mut f, 1448).unwrap();
    (f, g)
}

/// Super-frames are translated whole both ways: the partial checksum gets the new address
/// folded in (not the port, which the segmentation sums), so every segment cut from what the
/// NAT sent carries a valid checksum for the translated addresses and ports.
#[test]
fn super_frames_are_translated_whole_with_their_partial_checksums() {
    let mut n = nat("endpoint-independent", 100);
    let now = Instant::now();
    let check = |out: &[(PortId, Vec<u8>, d11_wire::gso::Gso)], port: PortId| {
        assert_eq!(out.len(), 1, "one super-frame out: {}", out.len());
        let (p, f, g) = &out[0];
        assert_eq!((*p, g.gso_size), (port, 1448));
        // What the kernel (or a NIC) completes from: the pseudo-header's sum of the
        // translated addresses, as the sender's kernel would have written it.
        let mut expect = f.clone();
        d11_wire::gso::offload_tcp4(&mut expect, g.gso_size).unwrap();
        assert_eq!(
            f[50..52],
            expect[50..52],
            "the partial checksum after translation"
        );
        let mut buf = vec![0u8; 2000];
        let mut segs = Vec::new();
        d11_wire::gso::segment(f, g, &mut buf, |s| segs.push(five(s))).unwrap();
        assert_eq!(segs.len(), 4, "5000 octets: four segments");
        assert!(segs.windows(2).all(|w| w[0] == w[1]));
        segs[0]
    };
    // Out: the UE's source becomes the pool's.
    let (mut f, g) = super_frame(&n, 0, (UE, 40000), (SRV, 443), 5000);
    let mut tx = d11_element::CollectGso::default();
    n.handle_frame_gso(now, 0, &mut f, &g, &mut tx);
    let (ext, eport, dst, dport) = check(&tx.frames, 1);
    assert_eq!((dst, dport), (SRV, 443));
    assert!(ext == Ipv4Addr::new(198, 51, 100, 10) || ext == Ipv4Addr::new(198, 51, 100, 11));
    // Back: the server's super-frame to the pool address goes to the UE.
    let (mut f, g) = super_frame(&n, 1, (SRV, 443), (ext, eport), 5000);
    let mut tx = d11_element::CollectGso::default();
    n.handle_frame_gso(now, 1, &mut f, &g, &mut tx);
    assert_eq!(check(&tx.frames, 0), (SRV, 443, UE, 40000));
    // Cut for a port without offloads, the segments are as good.
    let (mut f, g) = super_frame(&n, 0, (UE, 40000), (SRV, 443), 5000);
    let mut tx = Collect::default();
    n.handle_frame_gso(now, 0, &mut f, &g, &mut tx);
    assert_eq!(tx.frames.len(), 4);
    for (_, s) in &tx.frames {
        assert_eq!(five(s), (ext, eport, SRV, 443));
    }
}
