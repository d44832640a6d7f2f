use super::*;
use d11_element::Collect;
use proptest::prelude::*;

const HA: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const HB: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

fn router() -> Router {
    router_with_mtu(600)
}

/// The test router, with this MTU on port 1.
fn router_with_mtu(mtu: u16) -> Router {
    let cfg: RouterConfig = serde_json::from_value(json!({
        "name": "r",
        "ports": [
            {"name": "eth0", "addresses": ["10.0.1.1/24"]},
            {"name": "eth1", "addresses": ["10.0.2.1/24"], "mtu": mtu},
        ],
        "routes": [{"prefix": "192.168.0.0/16", "via": "10.0.2.2"}],
        "icmp_limit": {"per_second": 10, "burst": 5},
    }))
    .unwrap();
    Router::new(&cfg).unwrap()
}

fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr, dst: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}

/// An ICMP echo request of `payload` octets from A to `dst`, to MAC `dst_mac`.
fn ping(dst: Ipv4Addr, dst_mac: [u8; 6], ttl: u8, payload: usize, df: bool) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&HA);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + 8 + payload;
    let mut ip = vec![0u8; total];
    write_ipv4_header(&mut ip, total, ttl, 1, A, dst);
    if !df {
        ip[6] = 0;
        fill_ipv4_checksum(&mut ip[..20]);
    }
    ip[20] = 8;
    for (i, b) in ip[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let c = internet_checksum(&ip[20..]);
    ip[22..24].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f
}

fn r_mac(r: &Router, port: PortId) -> [u8; 6] {
    r.port_mac(port).unwrap().0
}

/// Teaches the router A's MAC on eth0 and B's on eth1.
fn learned(r: &mut Router, now: Instant) {
    let mut tx = Collect::default();
    let m0 = r_mac(r, 0);
    let m1 = r_mac(r, 1);
    r.handle_frame(
        now,
        0,
        &mut arp(1, HA, A, [0; 6], Ipv4Addr::new(10, 0, 1, 1), [0xff; 6]),
        &mut tx,
    );
    r.handle_frame(
        now,
        1,
        &mut arp(1, HB, B, [0; 6], Ipv4Addr::new(10, 0, 2, 1), [0xff; 6]),
        &mut tx,
    );
    assert_eq!(tx.frames.len(), 2, "two ARP replies");
    assert_eq!(&tx.frames[0].1[0..6], &HA);
    assert_eq!(&tx.frames[0].1[6..12], &m0);
    assert_eq!(&tx.frames[1].1[6..12], &m1);
}

#[test]
fn forwards_with_ttl_and_macs_rewritten() {
    let mut r = router();
    let now = Instant::now();
    let mut tx = Collect::default();
    // Unknown next hop: ARP request on eth1, packet queued.
    let mut f = ping(B, r_mac(&r, 0), 64, 32, true);
    let orig = f.clone();
    r.handle_frame(now, 0, &mut f, &mut tx);
    assert_eq!(tx.frames.len(), 1);
    let (port, req) = &tx.frames[0];
    assert_eq!(*port, 1);
    assert_eq!(&req[0..6], &[0xff; 6]);
    assert_eq!(&req[38..42], &B.octets());
    // The reply releases it.
    tx.frames.clear();
    r.handle_frame(
        now,
        1,
        &mut arp(
            2,
            HB,
            B,
            r_mac(&r, 1),
            Ipv4Addr::new(10, 0, 2, 1),
            r_mac(&r, 1),
        ),
        &mut tx,
    );
    assert_eq!(tx.frames.len(), 1);
    let (port, out) = &tx.frames[0];
    assert_eq!(*port, 1);
    assert_eq!(&out[0..6], &HB);
    assert_eq!(&out[6..12], &r_mac(&r, 1));
    assert_eq!(out[14 + 8], 63);
    assert_eq!(
        internet_checksum(&out[14..34]),
        0,
        "header checksum still valid"
    );
    // Nothing else changed.
    let mut expect = orig[14..].to_vec();
    expect[8] = 63;
    expect[10..12].copy_from_slice(&out[24..26]);
    assert_eq!(&out[14..], &expect[..]);
    assert_eq!(r.counters_ref().forwarded, 1);
}

#[test]
fn ttl_expired_and_no_route_draw_icmp_from_the_ingress_address() {
    let mut r = router();
    let now = Instant::now();
    learned(&mut r, now);
    let mut tx = Collect::default();
    r.handle_frame(now, 0, &mut ping(B, r_mac(&r, 0), 1, 8, true), &mut tx);
    r.handle_frame(
        now,
        0,
        &mut ping(Ipv4Addr::new(8, 8, 8, 8), r_mac(&r, 0), 64, 8, true),
        &mut tx,
    );
    assert_eq!(tx.frames.len(), 2);
    for ((port, f), (t, c)) in tx.frames.iter().zip([(11, 0), (3, 0)]) {
        assert_eq!(*port, 0);
        assert_eq!(&f[0..6], &HA);
        assert_eq!(&f[26..30], &[10, 0, 1, 1], "from the address A knows");
        assert_eq!(&f[30..34], &A.octets());
        assert_eq!((f[34], f[35]), (t, c));
        assert_eq!(internet_checksum(&f[34..]), 0);
        // The quoted header is the original one.
        assert_eq!(&f[42 + 12..42 + 16], &A.octets());
    }
}

#[test]
fn df_too_big_gets_frag_needed_with_mtu() {
    let mut r = router();
    let now = Instant::now();
    learned(&mut r, now);
    let mut tx = Collect::default();
    r.handle_frame(now, 0, &mut ping(B, r_mac(&r, 0), 64, 1000, true), &mut tx);
    assert_eq!(tx.frames.len(), 1);
    let f = &tx.frames[0].1;
    assert_eq!((f[34], f[35]), (3, 4));
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), 600);
    assert_eq!(r.counters_ref().frag_needed, 1);
}

#[test]
fn fragments_without_df_and_reassembles_exactly() {
    let mut r = router();
    let now = Instant::now();
    learned(&mut r, now);
    let mut tx = Collect::default();
    let f = ping(B, r_mac(&r, 0), 64, 1400, false);
    let orig_payload = f[34..].to_vec();
    r.handle_frame(now, 0, &mut f.clone(), &mut tx);
    assert_eq!(tx.frames.len(), 3, "1428 octets over MTU 600");
    let mut data = vec![0u8; orig_payload.len()];
    let mut covered = 0;
    for (i, (port, fr)) in tx.frames.iter().enumerate() {
        assert_eq!(*port, 1);
        let ip = &fr[14..];
        assert!(ip.len() <= 600);
        assert_eq!(internet_checksum(&ip[..20]), 0);
        let fo = u16::from_be_bytes([ip[6], ip[7]]);
        let mf = fo & 0x2000 != 0;
        assert_eq!(mf, i < 2);
        let off = usize::from(fo & 0x1fff) * 8;
        let len = usize::from(u16::from_be_bytes([ip[2], ip[3]])) - 20;
        data[off..off + len].copy_from_slice(&ip[20..20 + len]);
        covered += len;
    }
    assert_eq!(covered, orig_payload.len());
    assert_eq!(data, orig_payload);
}

#[test]
fn fragment_copies_only_copied_options() {
    // IHL 7: a Record Route option (type 7, not copied) then NOPs, a Security-like option
    // with the copied bit (0x82, length 4 padded).
    let mut ip = vec![0u8; 28 + 100];
    ip[0] = 0x47;
    ip[2..4].copy_from_slice(&(128u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[20..28].copy_from_slice(&[0x07, 0x03, 0x04, 0x82, 0x04, 0xaa, 0xbb, 0x00]);
    fill_ipv4_checksum(&mut ip[..28]);
    let mut frags = Vec::new();
    fragment(&ip, 68, |f| frags.push(f.to_vec()));
    assert!(frags.len() > 1);
    assert_eq!(frags[0][0], 0x47);
    assert_eq!(frags[1][0], 0x46, "only the 4-octet copied option remains");
    assert_eq!(&frags[1][20..24], &[0x82, 0x04, 0xaa, 0xbb]);
    let total: usize = frags
        .iter()
        .enumerate()
        .map(|(i, f)| f.len() - if i == 0 { 28 } else { 24 })
        .sum();
    assert_eq!(total, 100);
}

#[test]
fn answers_ping_and_udp_to_itself() {
    let mut r = router();
    let now = Instant::now();
    learned(&mut r, now);
    let mut tx = Collect::default();
    r.handle_frame(
        now,
        0,
        &mut ping(Ipv4Addr::new(10, 0, 2, 1), r_mac(&r, 0), 64, 16, true),
        &mut tx,
    );
    assert_eq!(tx.frames.len(), 1);
    let f = &tx.frames[0].1;
    assert_eq!(&f[26..30], &[10, 0, 2, 1]);
    assert_eq!(f[34], 0, "echo reply");
    assert_eq!(internet_checksum(&f[34..]), 0);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut r = router();
    let now = Instant::now();
    learned(&mut r, now);
    let mut tx = Collect::default();
    for _ in 0..20 {
        r.handle_frame(now, 0, &mut ping(B, r_mac(&r, 0), 1, 8, true), &mut tx);
    }
    assert_eq!(tx.frames.len(), 5, "burst of 5");
    assert_eq!(r.counters_ref().icmp_rate_limited, 15);
    // A second later ten more tokens (capped at the burst of 5).
    tx.frames.clear();
    for _ in 0..20 {
        r.handle_frame(
            now + Duration::from_secs(1),
            0,
            &mut ping(B, r_mac(&r, 0), 1, 8, true),
            &mut tx,
        );
    }
    assert_eq!(tx.frames.len(), 5);
}

#[test]
fn unanswered_arp_gives_host_unreachable() {
    let mut r = router();
    let mut now = Instant::now();
    learned(&mut r, now);
    let mut tx = Collect::default();
    let c = Ipv4Addr::new(10, 0, 2, 77);
    r.handle_frame(now, 0, &mut ping(c, r_mac(&r, 0), 64, 8, true), &mut tx);
    while let Some(t) = r.poll_at() {
        now = t;
        r.poll(now, &mut tx);
    }
    let reqs = tx
        .frames
        .iter()
        .filter(|(p, f)| *p == 1 && f[12..14] == [8, 6])
        .count();
    assert_eq!(reqs, 3);
    let unreach: Vec<_> = tx
        .frames
        .iter()
        .filter(|(p, f)| *p == 0 && f.len() > 35 && f[34] == 3 && f[35] == 1)
        .collect();
    assert_eq!(unreach.len(), 1);
}

#[test]
fn frames_for_other_macs_and_malformed_frames_are_counted() {
    let mut r = router();
    let now = Instant::now();
    let mut tx = Collect::default();
    r.handle_frame(now, 0, &mut ping(B, HB, 64, 8, true), &mut tx);
    assert_eq!(r.counters_ref().not_for_us, 1);
    let mut bad = ping(B, r_mac(&r, 0), 64, 8, true);
    bad[24] ^= 0xff; // checksum
    r.handle_frame(now, 0, &mut bad, &mut tx);
    r.handle_frame(now, 0, &mut [0u8; 5], &mut tx);
    assert!(tx.frames.is_empty());
    assert_eq!(r.drops().total(), 2);
}

proptest! {
    #[test]
    fn never_panics_on_garbage(mut data in proptest::collection::vec(any::<u8>(), 0..200), ipv4: bool, port in 0usize..3) {
        let mut r = router();
        let now = Instant::now();
        if ipv4 && data.len() > 34 {
            let mac = r_mac(&r, 0);
            data[0..6].copy_from_slice(&mac);
            data[12] = 8; data[13] = 0;
            data[14] = 0x45;
            fill_ipv4_checksum(&mut data[14..34]);
        }
        let mut tx = Collect::default();
        r.handle_frame(now, port, &mut data, &mut tx);
        r.poll(now + Duration::from_secs(10), &mut tx);
    }
}

#[test]
fn send_udp_resolves_the_next_hop_and_checksums() {
    let mut r = router();
    let now = Instant::now();
    let mut tx = Collect::default();
    assert!(r.send_udp(now, None, B, 2152, 2152, b"gtp", &mut tx));
    // First an ARP request for B (the datagram waits for the answer).
    assert_eq!(tx.frames.len(), 1);
    assert_eq!(&tx.frames[0].1[12..14], &[8, 6]);
    let mac1 = r.port_mac(1).unwrap().0;
    let mut reply = arp(2, HB, B, mac1, Ipv4Addr::new(10, 0, 2, 1), mac1);
    r.handle_frame(now, 1, &mut reply, &mut tx);
    let (port, f) = tx.frames.last().unwrap();
    assert_eq!((*port, &f[0..6]), (1, &HB[..]));
    let ip = &f[14..];
    assert_eq!(
        (&ip[12..16], &ip[16..20]),
        (&[10, 0, 2, 1][..], &B.octets()[..])
    );
    assert_eq!(&ip[28..31], b"gtp");
    let sum = u16::from_be_bytes([ip[26], ip[27]]);
    let mut udp = ip[20..31].to_vec();
    udp[6..8].fill(0);
    assert_eq!(udp_checksum(Ipv4Addr::new(10, 0, 2, 1), B, &udp), sum);
    // Too big for the 600-octet port: refused and counted.
    assert!(!r.send_udp(now, None, B, 1, 1, &[0; 600], &mut tx));
    assert_eq!(r.counters_ref().local_too_big, 1);
}

#[global_allocator]
static COUNTING: d11_element::alloc_count::Counting = d11_element::alloc_count::Counting;

/// Forwarding, once the next hops are known, allocates nothing per packet: both ways, and
/// a packet for the router itself (a ping answered) neither.
#[test]
fn forwarding_allocates_nothing_once_warm() {
    let mut r = router();
    let now = Instant::now();
    learned(&mut r, now);
    let there = ping(B, r_mac(&r, 0), 64, 200, true);
    let mut back = ping(A, r_mac(&r, 1), 64, 200, true);
    back[6..12].copy_from_slice(&HB);
    back[14 + 12..14 + 16].copy_from_slice(&B.octets());
    fill_ipv4_checksum(&mut back[14..34]);
    let frames = [(0, there), (1, back)];
    let (allocs, sent) =
        d11_element::alloc_count::allocations_forwarding(&mut r, now, &frames, 1000);
    assert_eq!(sent, 2000);
    assert_eq!(allocs, 0, "heap allocations for 2000 forwarded packets");
    assert_eq!(
        r.counters_ref().forwarded,
        2008,
        "with the 4 rounds of warming"
    );
}

/// A TCP/IPv4 super-frame from A to B as a kernel with TSO hands it over: `n` octets of data
/// in segments of 1448, the TCP checksum partial.
fn super_frame(dst_mac: [u8; 6], n: usize) -> (Vec<u8>, d11_wire::gso::Gso) {
    let mut f = vec![0u8; 14 + 40 + n];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&HA);
    f[12..14].copy_from_slice(&[8, 0]);
    d11_wire::ip::write_header(&mut f[14..34], 40 + n, 64, 6, A, B);
    f[20] = 0x40; // DF
    fill_ipv4_checksum(&mut f[14..34]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5001u16.to_be_bytes());
    f[38..42].copy_from_slice(&1000u32.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x18;
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let g = d11_wire::gso::offload_tcp4(&mut f, 1448).unwrap();
    (f, g)
}

/// A transit super-frame goes on whole, TTL and MACs rewritten like any packet, its offload
/// metadata kept; to a port that takes only segments (the runtime's transmitter cuts), each
/// segment is a valid TCP/IPv4 frame; one whose segments do not fit the next port is cut in
/// the router and each segment gets "fragmentation needed".
#[test]
fn super_frames_pass_whole_or_are_cut() {
    let now = Instant::now();
    let mut r = router_with_mtu(1500);
    learned(&mut r, now);
    let (mut f, g) = super_frame(r_mac(&r, 0), 10_000);
    let mut tx = d11_element::CollectGso::default();
    r.handle_frame_gso(now, 0, &mut f, &g, &mut tx);
    assert_eq!(tx.frames.len(), 1, "one super-frame out");
    let (port, out, og) = &tx.frames[0];
    assert_eq!((*port, og, out.len()), (1, &g, 14 + 40 + 10_000));
    assert_eq!((&out[0..6], out[14 + 8]), (&HB[..], 63));
    assert_eq!(internet_checksum(&out[14..34]), 0, "IP checksum updated");
    assert_eq!(r.counters_ref().frag_needed, 0);
    // Collect takes segments only: cut by the default transmitter, each complete.
    let (mut f, g) = super_frame(r_mac(&r, 0), 10_000);
    let mut tx = Collect::default();
    r.handle_frame_gso(now, 0, &mut f, &g, &mut tx);
    assert_eq!(tx.frames.len(), 7);
    let mut data = Vec::new();
    for (port, s) in &tx.frames {
        assert_eq!(*port, 1);
        assert_eq!(s[14 + 8], 63);
        assert_eq!(internet_checksum(&s[14..34]), 0);
        let tcp = &s[34..];
        assert_eq!(
            d11_wire::ip::pseudo_checksum(A, B, 6, tcp),
            0,
            "TCP checksum complete"
        );
        data.extend_from_slice(&tcp[20..]);
    }
    assert_eq!(data, f[54..].to_vec());
    // Port 1's MTU made smaller than a segment: cut here, each segment refused with DF.
    let mut small = router_with_mtu(1400);
    learned(&mut small, now);
    let (mut f, g) = super_frame(r_mac(&small, 0), 3000);
    let mut tx = d11_element::CollectGso::default();
    small.handle_frame_gso(now, 0, &mut f, &g, &mut tx);
    // 3000 octets: 1448 + 1448 + 104. The two full segments are too big for 1400 with DF;
    // the last fits and goes on, a plain frame.
    assert_eq!(small.counters_ref().gso_cut, 3);
    assert_eq!(small.counters_ref().frag_needed, 2);
    let ports: Vec<PortId> = tx.frames.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(
        ports,
        [0, 0, 1],
        "two ICMP errors back to A, one segment on"
    );
    assert!(tx.frames[2].2.is_plain());
}
