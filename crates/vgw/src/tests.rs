use super::*;
use d11_element::{Collect, Element};

const UNDERLAY: PortId = 1;

fn vgw() -> Vgw {
    let cfg: VgwConfig = serde_json::from_value(json!({
        "name": "vgw1",
        "ports": [
            {"name": "external", "addresses": ["203.0.113.2/24"]},
            {"name": "underlay", "addresses": ["10.1.0.1/24"]},
        ],
        "vpc": {"vni": 1001, "router": "192.168.1.1/24", "hosts": ["10.1.0.11"], "fdb_max": 4},
        "vips": [{"vip": "203.0.113.10", "lbs": ["192.168.1.10"]}],
    }))
    .unwrap();
    Logic::new(&cfg).unwrap()
}

/// VXLAN (VNI 1001) from `src` to the gateway's underlay address, carrying a broadcast
/// Ethernet frame from `inner_src`.
fn vxlan_from(src: [u8; 4], inner_src: [u8; 6]) -> Vec<u8> {
    let mut inner = Vec::new();
    inner.extend_from_slice(&[0xff; 6]);
    inner.extend_from_slice(&inner_src);
    inner.extend_from_slice(&[0x08, 0x06]);
    inner.resize(60, 0);
    let mut payload = vec![0x08, 0, 0, 0, 0, 0x03, 0xe9, 0];
    payload.extend_from_slice(&inner);
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0x66]);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::new(10, 1, 0, 1));
    d11_wire::ip::write_header(&mut ip, total, 64, 17, src, dst);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&50000u16.to_be_bytes());
    f.extend_from_slice(&vxlan::UDP_PORT.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&payload);
    f
}

fn counter(g: &Vgw, name: &str) -> u64 {
    let mut v = 0;
    g.counters(&mut |n, c| {
        if n == name {
            v = c;
        }
    });
    v
}

#[test]
fn vxlan_from_an_address_that_is_no_host_of_the_vpc_is_counted_and_unlearned() {
    let mut g = vgw();
    let now = Instant::now();
    let mut tx = Collect::default();
    for i in 0..10u8 {
        let mut f = vxlan_from([10, 1, 0, 66], [2, 0x66, 0, 0, 0, i]);
        g.handle_frame(now, UNDERLAY, &mut f, &mut tx);
    }
    assert_eq!(counter(&g, "vxlan_unknown_vtep"), 10);
    assert_eq!(g.show("fdb", now).unwrap(), json!([]));
    // The VPC's own host is believed.
    let mut f = vxlan_from([10, 1, 0, 11], [2, 0, 0, 0, 0, 0x11]);
    g.handle_frame(now, UNDERLAY, &mut f, &mut tx);
    assert_eq!(counter(&g, "vxlan_unknown_vtep"), 10);
    let fdb = g.show("fdb", now).unwrap();
    assert_eq!(fdb.as_array().map(Vec::len), Some(1), "{fdb}");
}

#[test]
fn the_mac_table_is_bounded() {
    let mut g = vgw();
    let now = Instant::now();
    let mut tx = Collect::default();
    for i in 0..6u8 {
        let mut f = vxlan_from([10, 1, 0, 11], [2, 0, 0, 0, 1, i]);
        g.handle_frame(now, UNDERLAY, &mut f, &mut tx);
    }
    assert_eq!(
        g.show("fdb", now).unwrap().as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(counter(&g, "fdb_full"), 2);
}

/// The gateway node (VIP 203.0.113.10 to `lbs`, checks as `check` says) and host A's switch
/// (port lb1 in VNI 1001), as the virtual-time tests join them.
fn sim_configs(
    lbs: serde_json::Value,
    check: serde_json::Value,
) -> (VgwConfig, d11_vswitch::VswitchConfig) {
    let cfg: VgwConfig = serde_json::from_value(json!({
        "name": "vgw1",
        "ports": [
            {"name": "external", "addresses": ["203.0.113.2/24"]},
            {"name": "underlay", "addresses": ["10.1.0.1/24"]},
        ],
        "vpc": {"vni": 1001, "router": "192.168.1.1/24", "hosts": ["10.1.0.11"]},
        "vips": [{"vip": "203.0.113.10", "lbs": lbs}],
        "lb_check": check,
    }))
    .unwrap();
    let hosta: d11_vswitch::VswitchConfig = serde_json::from_value(json!({
        "name": "hosta",
        "ports": [{"name": "lb1"}, {"name": "underlay", "addresses": ["10.1.0.11/24"]}],
        "vnis": {"lb1": 1001},
        "vteps": {"1001": ["10.1.0.1"]},
    }))
    .unwrap();
    (cfg, hosta)
}

/// The gateway node, host A's switch and an LB VM (our TCP stack, listening on 443) in a
/// network in memory under a virtual clock: the node's SYN probes cross VXLAN to the VM, whose
/// SYN-ACKs keep it up; the second LB address has no VM and goes down after `fall` checks.
#[test]
fn lb_checks_through_vxlan_under_virtual_time() {
    use d11_element::sim::Sim;
    use d11_stack::{Stack, StackConfig};
    let (cfg, hosta) = sim_configs(
        json!(["192.168.1.10", "192.168.1.11"]),
        json!({"interval_ms": 1000, "timeout_ms": 500, "rise": 2, "fall": 2}),
    );
    let lb1: StackConfig = serde_json::from_value(json!({
        "name": "lb1",
        "ports": [{"name": "eth0", "addresses": ["192.168.1.10/24"]}],
        "gateway": "192.168.1.1",
    }))
    .unwrap();
    let (stack, lb1) = Stack::new(&lb1, "lb").unwrap();
    let _listener = stack.listen(443, 4).unwrap();
    let mut sim = Sim::new();
    let g = sim.add(Logic::new(&cfg).unwrap());
    let h = sim.add(d11_vswitch::Logic::new(&hosta).unwrap());
    let l = sim.add(lb1);
    let underlay = sim.segment(&[(g, 1), (h, 1)]);
    sim.segment(&[(h, 0), (l, 0)]);
    sim.run_for(std::time::Duration::from_secs(10));
    let vips = sim.show(g, "vips");
    let state = |a: &str| {
        vips[0]["lbs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["address"] == a)
            .map(|x| x["state"].clone())
    };
    assert_eq!(state("192.168.1.10"), Some(json!("up")), "{vips}");
    assert_eq!(state("192.168.1.11"), Some(json!("down")), "{vips}");
    assert_eq!(sim.counter(g, "lbs_down"), 1);
    // A check every second: about ten of them reached the VM and were answered.
    let ok = sim.counter(g, "lb_checks_ok");
    assert!((8..=11).contains(&ok), "{ok}");
    // Every probe to the VM crossed the underlay in VXLAN.
    let vxlan = sim
        .wire
        .iter()
        .filter(|s| s.segment == underlay && s.frame.len() > 42 && s.frame[36..38] == [0x12, 0xb5])
        .count();
    assert!(vxlan >= 20, "{vxlan}");
}

#[global_allocator]
static COUNTING: d11_element::alloc_count::Counting = d11_element::alloc_count::Counting;

/// Once a flow is in the conntrack table and the next hops are known, the gateway node
/// allocates nothing per packet: a client's segment to the VIP (translated to the LB and
/// sent into VXLAN) and the LB's answer out of VXLAN (translated back to the VIP). The frames
/// are a real handshake's, between a client and an LB VM on our stack, in memory under a
/// virtual clock.
#[test]
fn forwarding_a_flow_both_ways_allocates_nothing_once_warm() {
    use d11_element::sim::{paused, Sim};
    use d11_stack::{Stack, StackConfig};
    use std::net::SocketAddrV4;
    paused(async {
        let (cfg, hosta) = sim_configs(json!(["192.168.1.10"]), json!({}));
        let stack = |name: &str, ip: &str, gw: &str| -> StackConfig {
            serde_json::from_value(json!({
                "name": name,
                "ports": [{"name": "eth0", "addresses": [ip]}],
                "gateway": gw,
            }))
            .unwrap()
        };
        let (lb, lb_el) =
            Stack::new(&stack("lb1", "192.168.1.10/24", "192.168.1.1"), "lb").unwrap();
        let listener = lb.listen(443, 4).unwrap();
        let (client, client_el) =
            Stack::new(&stack("k1", "203.0.113.50/24", "203.0.113.2"), "client").unwrap();
        let connected = std::rc::Rc::new(std::cell::Cell::new(false));
        let c = connected.clone();
        tokio::task::spawn_local(async move {
            let _accepted = listener.accept().await;
            std::future::pending::<()>().await;
        });
        tokio::task::spawn_local(async move {
            let vip = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 443);
            if let Ok(conn) = client.connect(vip).await {
                c.set(true);
                let _keep = conn;
                std::future::pending::<()>().await;
            }
        });
        let mut sim = Sim::new();
        let (g, h, l, k) = (
            sim.add(Logic::new(&cfg).unwrap()),
            sim.add(d11_vswitch::Logic::new(&hosta).unwrap()),
            sim.add(lb_el),
            sim.add(client_el),
        );
        let external = sim.segment(&[(g, 0), (k, 0)]);
        let underlay = sim.segment(&[(g, UNDERLAY), (h, 1)]);
        sim.segment(&[(h, 0), (l, 0)]);
        sim.run_async_for(std::time::Duration::from_secs(2)).await;
        assert!(connected.get(), "the client reached the LB through the VIP");
        let is_tcp_to = |f: &[u8], dst: [u8; 4]| {
            f.len() >= 54 && f[12..14] == [8, 0] && f[23] == 6 && f[30..34] == dst
        };
        // The client's last segment to the VIP, and the last VXLAN frame from the host
        // carrying a segment from the LB to the client.
        let to_vip = sim
            .wire
            .iter()
            .rev()
            .find(|s| {
                s.segment == external && s.from.0 == k && is_tcp_to(&s.frame, [203, 0, 113, 10])
            })
            .map(|s| s.frame.clone())
            .expect("a segment from the client to the VIP");
        let from_lb = sim
            .wire
            .iter()
            .rev()
            .find(|s| {
                s.segment == underlay
                    && s.from.0 == h
                    && s.frame.len() > 50 + 54
                    && is_tcp_to(&s.frame[50..], [203, 0, 113, 50])
            })
            .map(|s| s.frame.clone())
            .expect("VXLAN from the host with the LB's answer");
        let now = sim.now();
        let gw = sim.get_mut::<Vgw>(g);
        let translated = counter(gw, "vip_translated");
        let frames = [(0, to_vip), (UNDERLAY, from_lb)];
        let (allocs, sent) =
            d11_element::alloc_count::allocations_forwarding(gw, now, &frames, 1000);
        assert_eq!(sent, 2000, "each frame forwarded");
        assert!(counter(gw, "vip_translated") >= translated + 1000);
        assert!(counter(gw, "vip_replies_translated") >= 1000);
        assert_eq!(
            allocs, 0,
            "heap allocations for 1000 rounds of a flow both ways"
        );
    });
}
