//! The stack in memory under a virtual clock (`d11_element::sim`).

use super::*;
use d11_element::sim::{paused, Sim};
use std::cell::RefCell;
use std::net::SocketAddrV4;

fn host(name: &'static str, addr: &str) -> (Stack, StackElement) {
    let cfg: StackConfig = serde_json::from_value(serde_json::json!({"name": name,
        "ports": [{"name": "eth0", "addresses": [addr]}]}))
    .unwrap();
    Stack::new(&cfg, name).unwrap()
}

/// A datagram sent just before its socket is dropped, while the stack still asks ARP for the
/// next hop, arrives all the same.
#[test]
fn a_dropped_udp_socket_still_sends_what_waits_for_arp() {
    paused(async {
        let mut sim = Sim::new();
        let ((a, a_el), (b, b_el)) = (host("a", "10.0.0.1/24"), host("b", "10.0.0.2/24"));
        let (an, bn) = (sim.add(a_el), sim.add(b_el));
        sim.segment(&[(an, 0), (bn, 0)]);
        let a_again = a.clone();
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        let rx = b.udp_bind(9000).unwrap();
        tokio::task::spawn_local(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = rx.recv_from(&mut buf).await {
                g.borrow_mut().push((buf[..n].to_vec(), from));
            }
        });
        tokio::task::spawn_local(async move {
            let tx = a.udp_bind(7000).unwrap();
            let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 9000);
            tx.send_to(b"last words", to).await.unwrap();
            drop(tx);
        });
        sim.run_async_for(Duration::from_secs(1)).await;
        let from = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7000);
        assert_eq!(*got.borrow(), [(b"last words".to_vec(), from)]);
        // The socket is gone once its datagram left: the port can be bound again.
        sim.run_async_for(Duration::from_secs(4)).await;
        assert!(a_again.udp_bind(7000).is_ok());
    });
}
