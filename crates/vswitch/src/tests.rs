use super::*;
use d11_element::{Collect, Element};

const UNDERLAY: PortId = 2;

fn switch(name: &str, addr: &str, peer: &str) -> Vswitch {
    let cfg: VswitchConfig = serde_json::from_value(json!({
        "name": name,
        "ports": [
            {"name": "vm1"},
            {"name": "vm2"},
            {"name": "underlay", "addresses": [addr]},
        ],
        "vnis": {"vm1": 1001, "vm2": 1002},
        "vteps": {"1001": [peer], "1002": [peer]},
    }))
    .unwrap();
    Logic::new(&cfg).unwrap()
}

fn eth(dst: [u8; 6], src: [u8; 6], body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(body);
    f.resize(f.len().max(60), 0);
    f
}

/// Two switches joined by their underlay ports: feeds `(switch, port, frame)` and runs until
/// quiet; returns what left by VM ports as (switch, port, frame).
fn run(
    sw: &mut [Vswitch; 2],
    start: Vec<(usize, PortId, Vec<u8>)>,
) -> Vec<(usize, PortId, Vec<u8>)> {
    let now = Instant::now();
    let mut queue = start;
    let mut out = Vec::new();
    while let Some((s, p, mut f)) = queue.pop() {
        let mut tx = Collect::default();
        sw[s].handle_frame(now, p, &mut f, &mut tx);
        for (q, g) in tx.frames {
            if q == UNDERLAY {
                queue.push((1 - s, UNDERLAY, g));
            } else {
                out.push((s, q, g));
            }
        }
    }
    out
}

const A1: [u8; 6] = [2, 0, 0, 0, 0xa, 1];
const B1: [u8; 6] = [2, 0, 0, 0, 0xb, 1];
const T2: [u8; 6] = [2, 0, 0, 0, 0xc, 2];

#[test]
fn broadcast_reaches_its_vni_only_and_replies_follow_learned_macs() {
    let mut sw = [
        switch("hosta", "10.1.0.11/24", "10.1.0.12"),
        switch("hostb", "10.1.0.12/24", "10.1.0.11"),
    ];
    // A broadcast from VNI 1001 on hosta: hostb's VNI 1001 port gets it, nobody in 1002.
    let out = run(&mut sw, vec![(0, 0, eth([0xff; 6], A1, b"who has"))]);
    assert_eq!(
        out.iter().map(|(s, p, _)| (*s, *p)).collect::<Vec<_>>(),
        [(1, 0)]
    );
    assert_eq!(sw[0].logic.c.flooded, 1);
    // The reply is unicast to a learned MAC: straight to hosta's VM 1, no flood.
    let out = run(&mut sw, vec![(1, 0, eth(A1, B1, b"is at"))]);
    assert_eq!(
        out.iter().map(|(s, p, _)| (*s, *p)).collect::<Vec<_>>(),
        [(0, 0)]
    );
    assert_eq!(sw[1].logic.c.flooded, 0);
    assert_eq!(sw[1].logic.c.encapsulated, 1);
    // The same MAC in VNI 1002 is another host: a frame to it from 1002 floods in 1002 only.
    let out = run(&mut sw, vec![(0, 1, eth(B1, T2, b"tenant 2"))]);
    assert_eq!(
        out.iter().map(|(s, p, _)| (*s, *p)).collect::<Vec<_>>(),
        [(1, 1)]
    );
    let fdb = sw[1].show("fdb", Instant::now()).unwrap();
    assert!(fdb
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["vni"] == 1001 && e["where"] == "vtep" && e["at"] == "10.1.0.11"));
}

#[test]
fn bad_vxlan_is_counted_and_dropped() {
    let mut sw = [
        switch("hosta", "10.1.0.11/24", "10.1.0.12"),
        switch("hostb", "10.1.0.12/24", "10.1.0.11"),
    ];
    // Resolve the underlay first (hosta learns hostb's MAC from a flood).
    run(&mut sw, vec![(0, 0, eth([0xff; 6], A1, b"hello"))]);
    let inner = eth(A1, B1, b"x");
    let mut send = |vx: Vec<u8>| {
        let l = &mut sw[0].logic;
        l.out.datagrams.push(Datagram {
            src: l.addr,
            dst: Ipv4Addr::new(10, 1, 0, 12),
            sport: 50000,
            dport: vxlan::UDP_PORT,
            payload: vx,
        });
        let mut tx = Collect::default();
        sw[0].poll(Instant::now(), &mut tx);
        for (_, mut f) in tx.frames {
            sw[1].handle_frame(Instant::now(), UNDERLAY, &mut f, &mut Collect::default());
        }
    };
    let with = |hdr: [u8; 8]| {
        let mut v = hdr.to_vec();
        v.extend_from_slice(&inner);
        v
    };
    send(vec![0x08, 0, 0]); // truncated
    send(with([0x00, 0, 0, 0, 0, 0x03, 0xe9, 0])); // I flag clear
    send(with([0x08, 0, 0, 0, 0, 0x10, 0x92, 0])); // VNI 4242: not here
    send(with([0x08, 0, 0, 0, 0, 0x03, 0xe9, 0])[..8 + 10].to_vec()); // runt inner frame
    let c = &sw[1].logic.c;
    assert_eq!(
        (
            c.vxlan_malformed,
            c.vxlan_bad_flags,
            c.vxlan_unknown_vni,
            c.vxlan_runt
        ),
        (1, 1, 1, 1)
    );
}

#[test]
fn vxlan_from_an_unknown_vtep_is_counted_and_learns_nothing() {
    // hosta believes only 10.1.0.12; hostb sends from 10.1.0.13, an address hosta never
    // configured for VNI 1001 (a rogue on the underlay).
    let mut sw = [
        switch("hosta", "10.1.0.11/24", "10.1.0.12"),
        switch("hostb", "10.1.0.13/24", "10.1.0.11"),
    ];
    let out = run(&mut sw, vec![(1, 0, eth([0xff; 6], B1, b"i am a1"))]);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(sw[0].logic.c.vxlan_unknown_vtep, 1);
    assert_eq!(sw[0].logic.c.decapsulated, 0);
    assert!(sw[0].logic.fdb.is_empty());
    assert_eq!(
        sw[0].show("vteps", Instant::now()).unwrap(),
        json!([
            {"vni": 1001, "vtep": "10.1.0.12", "source": "config"},
            {"vni": 1002, "vtep": "10.1.0.12", "source": "config"},
        ])
    );
}

#[test]
fn learning_is_bounded_per_vni_and_moves_are_counted() {
    let cfg: VswitchConfig = serde_json::from_value(json!({
        "name": "hosta",
        "ports": [
            {"name": "vm1"},
            {"name": "vm2"},
            {"name": "vm3"},
            {"name": "underlay", "addresses": ["10.1.0.11/24"]},
        ],
        "vnis": {"vm1": 1001, "vm2": 1002, "vm3": 1001},
        "fdb_max_per_vni": 3,
    }))
    .unwrap();
    let mut s = Logic::new(&cfg).unwrap();
    let now = Instant::now();
    let mut tx = Collect::default();
    // VNI 1001 fills up with five MACs: three are learned, two counted.
    for i in 0..5u8 {
        s.handle_frame(
            now,
            0,
            &mut eth([0xff; 6], [2, 0, 0, 0, 1, i], b"x"),
            &mut tx,
        );
    }
    assert_eq!(s.logic.c.fdb_full, 2);
    // VNI 1002 still learns: the other tenant's flood did not take its room.
    s.handle_frame(now, 1, &mut eth([0xff; 6], T2, b"x"), &mut tx);
    assert_eq!(s.logic.c.fdb_full, 2);
    assert_eq!(s.logic.fdb.len(), 4);
    // A learned MAC shows up on another port of its VNI: a move.
    s.handle_frame(
        now,
        2,
        &mut eth([0xff; 6], [2, 0, 0, 0, 1, 0], b"x"),
        &mut tx,
    );
    assert_eq!(s.logic.c.mac_moves, 1);
    // Aged out, the room comes back.
    let later = now + Duration::from_secs(301);
    s.poll(later, &mut tx);
    assert!(s.logic.fdb.is_empty());
    s.handle_frame(
        later,
        0,
        &mut eth([0xff; 6], [2, 0, 0, 0, 1, 9], b"x"),
        &mut tx,
    );
    assert_eq!((s.logic.fdb.len(), s.logic.c.fdb_full), (1, 2));
}

#[global_allocator]
static COUNTING: d11_element::alloc_count::Counting = d11_element::alloc_count::Counting;

/// Once the MACs are learned and the peer VTEP resolved, encapsulating a VM's frame and
/// decapsulating VXLAN for a VM allocate nothing per frame.
#[test]
fn switching_allocates_nothing_once_warm() {
    let mut sw = [
        switch("hosta", "10.1.0.11/24", "10.1.0.12"),
        switch("hostb", "10.1.0.12/24", "10.1.0.11"),
    ];
    let body = [0x45u8; 600];
    run(&mut sw, vec![(0, 0, eth([0xff; 6], A1, b"who has"))]);
    run(&mut sw, vec![(1, 0, eth(A1, B1, b"is at"))]);
    let a_to_b = eth(B1, A1, &body);
    let out = run(&mut sw, vec![(0, 0, a_to_b.clone())]);
    assert_eq!(out.len(), 1, "unicast to B1 on hostb: {out:?}");
    // The VXLAN frame hosta sends for it.
    let mut tx = Collect::default();
    sw[0].handle_frame(Instant::now(), 0, &mut a_to_b.clone(), &mut tx);
    let [(UNDERLAY, vxlan)] = &tx.frames[..] else {
        panic!("one VXLAN frame: {:?}", tx.frames);
    };
    let now = Instant::now();
    for (s, frames) in [(0, [(0, a_to_b)]), (1, [(UNDERLAY, vxlan.clone())])] {
        let (allocs, sent) =
            d11_element::alloc_count::allocations_forwarding(&mut sw[s], now, &frames, 1000);
        assert_eq!(sent, 1000);
        assert_eq!(allocs, 0, "heap allocations for 1000 frames on switch {s}");
    }
}

/// A TCP/IPv4 super-frame from `src` to `dst` of `n` octets of data, as a kernel with TSO
/// hands it to a TAP (checksum partial, segments of `mss`).
fn tcp_super_frame(dst: [u8; 6], src: [u8; 6], n: usize, mss: u16) -> (Vec<u8>, Gso) {
    let (a, b) = (
        Ipv4Addr::new(192, 168, 1, 20),
        Ipv4Addr::new(192, 168, 1, 21),
    );
    let mut f = eth(dst, src, &[0u8; 40]);
    f.truncate(54);
    d11_wire::ip::write_header(&mut f[14..34], 40 + n, 64, 6, a, b);
    d11_wire::fill_ipv4_checksum(&mut f[14..34]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    f[38..42].copy_from_slice(&1000u32.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x18;
    f.extend((0..n).map(|i| (i * 7 % 253) as u8));
    let g = d11_wire::gso::offload_tcp4(&mut f, mss).unwrap();
    (f, g)
}

#[test]
fn a_tcp_super_frame_crosses_the_underlay_whole_and_cut_segments_arrive_the_same() {
    let mut sw = [
        switch("hosta", "10.1.0.11/24", "10.1.0.12"),
        switch("hostb", "10.1.0.12/24", "10.1.0.11"),
    ];
    // Learn both VMs, and the underlay neighbours.
    run(&mut sw, vec![(0, 0, eth([0xff; 6], A1, b"who has"))]);
    run(&mut sw, vec![(1, 0, eth(A1, B1, b"is at"))]);
    let now = Instant::now();
    let (f, g) = tcp_super_frame(B1, A1, 10_000, 1398);
    let mut tx = d11_element::CollectGso::default();
    sw[0].handle_frame_gso(now, 0, &mut f.clone(), &g, &mut tx);
    assert_eq!(tx.frames.len(), 1, "one VXLAN super-frame: {:?}", tx.frames);
    let (port, mut outer, og) = tx.frames.remove(0);
    assert_eq!(port, UNDERLAY);
    assert_eq!(
        (
            og.gso_type,
            og.gso_size,
            og.outer_th,
            og.inner_nh,
            og.csum_start
        ),
        (
            d11_wire::gso::GSO_UDP_TUNNEL_IPV4 | d11_wire::gso::GSO_TCPV4,
            1398,
            34,
            64,
            84
        )
    );
    assert_eq!(&outer[36..38], &4789u16.to_be_bytes(), "to the VXLAN port");
    assert_eq!(&outer[40..42], &[0, 0], "a zero outer UDP checksum");
    assert_eq!(&outer[50..], &f[..], "the inner frame as it came");
    assert_eq!(sw[0].logic.c.encap_gso, 1);

    // Whole to hostb: the VM gets the same super-frame with the same metadata.
    let mut tx = d11_element::CollectGso::default();
    sw[1].handle_frame_gso(now, UNDERLAY, &mut outer.clone(), &og, &mut tx);
    assert_eq!(tx.frames, vec![(0, f.clone(), g)]);
    assert_eq!(sw[1].logic.c.decap_gso, 1);

    // Cut (as a port without tunnel offloads, or the kernel, would): eight plain VXLAN
    // packets, taken by hostb's ordinary path, whose inner segments carry the data.
    let mut buf = vec![0u8; 2000];
    let mut segs = Vec::new();
    d11_wire::gso::segment(&outer, &og, &mut buf, |s| segs.push(s.to_vec())).unwrap();
    assert_eq!(segs.len(), 8);
    let mut data = Vec::new();
    for s in segs {
        let mut tx = Collect::default();
        sw[1].handle_frame(now, UNDERLAY, &mut s.clone(), &mut tx);
        assert_eq!(tx.frames.len(), 1);
        let inner = &tx.frames[0].1;
        assert_eq!(
            d11_wire::ip::pseudo_checksum(
                Ipv4Addr::new(192, 168, 1, 20),
                Ipv4Addr::new(192, 168, 1, 21),
                6,
                &inner[34..]
            ),
            0,
            "the inner TCP checksum is complete"
        );
        data.extend_from_slice(&inner[54..]);
    }
    assert_eq!(&data[..], &f[54..]);

    // From an underlay address that is no VTEP of the VNI: counted and dropped.
    outer[26..30].copy_from_slice(&[10, 1, 0, 99]);
    let mut tx = d11_element::CollectGso::default();
    sw[1].handle_frame_gso(now, UNDERLAY, &mut outer, &og, &mut tx);
    assert!(tx.frames.is_empty());
    assert_eq!(sw[1].logic.c.vxlan_unknown_vtep, 1);
    // A tunnel super-frame that is not VXLAN to us: counted and dropped, not forwarded.
    let mut other = f.clone();
    let mut tx = d11_element::CollectGso::default();
    sw[1].handle_frame_gso(now, UNDERLAY, &mut other, &og, &mut tx);
    assert!(tx.frames.is_empty());
    assert_eq!(sw[1].logic.c.gso_not_vxlan, 1);

    // Segments that cannot fit the underlay (1500) once wrapped: counted, not sent.
    let (mut big, bg) = tcp_super_frame(B1, A1, 10_000, 1460);
    let mut tx = d11_element::CollectGso::default();
    sw[0].handle_frame_gso(now, 0, &mut big, &bg, &mut tx);
    assert!(tx.frames.is_empty());
    assert_eq!(sw[0].logic.c.encap_too_big, 1);
    // A super-frame whose VXLAN packet would pass 65,535 octets is cut into segments first.
    let (mut huge, hg) = tcp_super_frame(B1, A1, 65_481, 1398);
    let mut tx = d11_element::CollectGso::default();
    sw[0].handle_frame_gso(now, 0, &mut huge, &hg, &mut tx);
    assert_eq!(tx.frames.len(), 65_481usize.div_ceil(1398));
    assert!(tx
        .frames
        .iter()
        .all(|(p, _, g)| *p == UNDERLAY && g.is_plain()));
    assert_eq!(sw[0].logic.c.encap_gso_cut, 1);
}
