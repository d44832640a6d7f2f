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

/// Two hosts on one segment of a new simulator: a (10.0.0.1, offloading if `a_offloads`)
/// and b (10.0.0.2), with their node ids.
fn pair(a_offloads: bool) -> (Sim, Stack, Stack, usize, usize) {
    let mut sim = Sim::new();
    let (a, a_el) = if a_offloads {
        offload_host("a", "10.0.0.1/24")
    } else {
        host("a", "10.0.0.1/24")
    };
    let (b, b_el) = host("b", "10.0.0.2/24");
    let (an, bn) = (sim.add(a_el), sim.add(b_el));
    sim.segment(&[(an, 0), (bn, 0)]);
    (sim, a, b, an, bn)
}

/// A datagram sent just before its socket is dropped, while the stack still asks ARP for the
/// next hop, arrives all the same.
#[test]
fn a_dropped_udp_socket_still_sends_what_waits_for_arp() {
    paused(async {
        let (mut sim, a, b, _, _) = pair(false);
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

/// A UDP datagram from 10.0.0.9 to 10.0.0.2 at `port`, as a frame to the broadcast address.
fn datagram(port: u16) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket,
        UdpRepr,
    };
    let (src, dst) = (Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 2));
    let udp = UdpRepr {
        src_port: 53,
        dst_port: port,
    };
    let payload = b"forged answer";
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + payload.len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 9]),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0; eth.buffer_len() + ip.buffer_len() + ip.payload_len];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut p, &caps);
    let mut u = UdpPacket::new_unchecked(p.payload_mut());
    udp.emit(
        &mut u,
        &src.into(),
        &dst.into(),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    buf
}

/// Datagrams sprayed at closed ports (forged answers guessing a resolver's port) are counted;
/// port unreachables go back at most at the ICMP rate (a burst of 50, then 1,000 a second),
/// the rest are dropped before they reach smoltcp. A bound port is not limited.
#[test]
fn datagrams_to_closed_ports_get_port_unreachable_at_the_icmp_rate() {
    paused(async {
        let mut sim = Sim::new();
        let (b, b_el) = host("b", "10.0.0.2/24");
        let bn = sim.add(b_el);
        sim.segment(&[(bn, 0)]);
        let _open = b.udp_bind(9000).unwrap();
        for i in 0..200u16 {
            sim.deliver(bn, 0, datagram(20000 + i));
        }
        for _ in 0..100 {
            sim.deliver(bn, 0, datagram(9000));
        }
        sim.run_async_for(Duration::from_millis(1)).await;
        assert_eq!(sim.counter(bn, "udp_no_socket"), 200);
        assert_eq!(sim.counter(bn, "icmp_rate_limited"), 150);
        // 100 ms earn 100 more (the bucket holds 50).
        sim.run_async_for(Duration::from_millis(100)).await;
        for i in 0..200u16 {
            sim.deliver(bn, 0, datagram(30000 + i));
        }
        sim.run_async_for(Duration::from_millis(1)).await;
        assert_eq!(sim.counter(bn, "udp_no_socket"), 400);
        assert_eq!(sim.counter(bn, "icmp_rate_limited"), 300);
    });
}

/// The TSval of a SYN we send (`frame` an Ethernet frame with TCP/IPv4), if it has one.
fn syn_tsval(frame: &[u8]) -> Option<u32> {
    let ip = smoltcp::wire::Ipv4Packet::new_checked(frame.get(14..)?).ok()?;
    let tcp = smoltcp::wire::TcpPacket::new_checked(ip.payload()).ok()?;
    if !tcp.syn() || tcp.ack() {
        return None;
    }
    let mut opts = tcp.options();
    while !opts.is_empty() {
        let (rest, opt) = smoltcp::wire::TcpOption::parse(opts).ok()?;
        if let smoltcp::wire::TcpOption::TimeStamp { tsval, .. } = opt {
            return Some(tsval);
        }
        opts = rest;
    }
    None
}

/// The connections we open carry TCP timestamps that follow the runtime's clock (virtual time
/// here, where the wall clock does not move): two SYNs five seconds apart carry values five
/// thousand milliseconds apart.
#[test]
fn syns_we_send_carry_timestamps_on_the_runtime_clock() {
    paused(async {
        let (mut sim, a, b, an, _) = pair(false);
        let _listener = b.listen(80, 4).unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);
        for _ in 0..2 {
            let a = a.clone();
            tokio::task::spawn_local(async move {
                let _conn = a.connect(to).await;
            });
            sim.run_async_for(Duration::from_secs(5)).await;
        }
        let ts: Vec<u32> = sim
            .wire
            .iter()
            .filter(|s| s.from.0 == an)
            .filter_map(|s| syn_tsval(&s.frame))
            .collect();
        assert_eq!(ts.len(), 2, "two SYNs with timestamps: {ts:?}");
        // (Milliseconds cut from the runtime's time: one either way.)
        let gap = ts[1].wrapping_sub(ts[0]);
        assert!((4999..=5001).contains(&gap), "{ts:?}");
    });
}

/// A host whose port takes offloaded frames (`--offload`).
fn offload_host(name: &'static str, addr: &str) -> (Stack, StackElement) {
    let cfg: StackConfig = serde_json::from_value(serde_json::json!({"name": name,
        "ports": [{"name": "eth0", "addresses": [addr], "offload": true}]}))
    .unwrap();
    Stack::new(&cfg, name).unwrap()
}

/// `n` octets of a pattern that repeats only every 251.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Whether `frame`'s TCP checksum is complete and right (true for what is not TCP/IPv4).
fn tcp_checksum_right(frame: &[u8]) -> bool {
    let Ok(ip) = smoltcp::wire::Ipv4Packet::new_checked(&frame[14..]) else {
        return true;
    };
    if ip.next_header() != smoltcp::wire::IpProtocol::Tcp {
        return true;
    }
    d11_wire::ip::tcp_checksum_ok(ip.src_addr(), ip.dst_addr(), ip.payload())
}

/// With offloads, smoltcp builds TCP super-frames (TSO) and leaves their checksums partial;
/// where the port cannot take them whole (the simulator's, like a TAP without offloads) they
/// are cut into segments of the MSS with complete checksums, and every octet arrives. The
/// other way, the plain segments an offloading stack receives have their checksums checked
/// by the stack itself (smoltcp no longer does): a segment with a wrong one is counted and
/// dropped.
#[test]
fn an_offloading_stack_sends_super_frames_and_checks_checksums_itself() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    paused(async {
        let (mut sim, a, b, an, bn) = pair(true);
        const N: usize = 3 << 20;
        let listener = b.listen(80, 4).unwrap();
        let got = Rc::new(RefCell::new(None));
        let g = got.clone();
        tokio::task::spawn_local(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).await.unwrap();
            // And back: b's plain segments into a.
            c.write_all(&buf).await.unwrap();
            c.shutdown().await.unwrap();
            *g.borrow_mut() = Some(buf);
        });
        let back = Rc::new(RefCell::new(None));
        let bk = back.clone();
        tokio::task::spawn_local(async move {
            let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);
            let mut c = a.connect(to).await.unwrap();
            let (mut r, mut w) = tokio::io::split(c);
            let send = async {
                w.write_all(&pattern(N)).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut buf = Vec::new();
            let recv = r.read_to_end(&mut buf);
            let (_, n) = tokio::join!(send, recv);
            n.unwrap();
            c = r.unsplit(w);
            drop(c);
            *bk.borrow_mut() = Some(buf);
        });
        sim.run_async_for(Duration::from_secs(20)).await;
        assert!(got.borrow().as_deref() == Some(&pattern(N)[..]), "a to b");
        assert!(back.borrow().as_deref() == Some(&pattern(N)[..]), "b to a");
        assert!(
            sim.counter(an, "tcp_super_frames_sent") > 0,
            "smoltcp built super-frames"
        );
        let from_a: Vec<&[u8]> = sim
            .wire
            .iter()
            .filter(|s| s.from.0 == an)
            .map(|s| &s.frame[..])
            .collect();
        assert!(from_a.iter().all(|f| f.len() <= 1514), "cut to the MTU");
        assert!(from_a.iter().all(|f| tcp_checksum_right(f)));
        assert_eq!(sim.counter(an, "tcp_bad_checksum"), 0);

        // A segment from b with one bit of its checksum wrong.
        let mut bad = sim
            .wire
            .iter()
            .rev()
            .find(|s| s.from.0 == bn && s.frame.len() > 54 && s.frame[23] == 6)
            .map(|s| s.frame.clone())
            .expect("a TCP segment from b");
        bad[14 + 20 + 17] ^= 1;
        sim.deliver(an, 0, bad);
        sim.run_async_for(Duration::from_millis(1)).await;
        assert_eq!(sim.counter(an, "tcp_bad_checksum"), 1);
    });
}

/// The TCP segments `node` sent, in order: source, destination, and the segment itself.
fn tcp_sent(sim: &Sim, node: usize) -> Vec<(Ipv4Addr, Ipv4Addr, &[u8])> {
    sim.wire
        .iter()
        .filter(|s| s.from.0 == node)
        .filter_map(|s| {
            let ip = smoltcp::wire::Ipv4Packet::new_checked(s.frame.get(14..)?).ok()?;
            let tcp = s
                .frame
                .get(14 + ip.header_len() as usize..14 + ip.total_len() as usize)?;
            (ip.next_header() == smoltcp::wire::IpProtocol::Tcp).then_some((
                ip.src_addr(),
                ip.dst_addr(),
                tcp,
            ))
        })
        .collect()
}

/// (flags, payload length) of each TCP segment `node` sent, in order.
fn tcp_segments(sim: &Sim, node: usize) -> Vec<(u8, usize)> {
    tcp_sent(sim, node)
        .into_iter()
        .filter_map(|(_, _, t)| {
            let tcp = smoltcp::wire::TcpPacket::new_checked(t).ok()?;
            Some((t[13], tcp.payload().len()))
        })
        .collect()
}

/// What a task sends as soon as its connection opens leaves in the segment that ACKs the
/// SYN-ACK, not after a pure ACK of its own: the stack takes a frame in without sending, and
/// sends once the tasks the frame woke have run.
#[test]
fn the_first_data_rides_on_the_handshakes_last_ack() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    paused(async {
        let (mut sim, a, b, an, _) = pair(false);
        let listener = b.listen(80, 4).unwrap();
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        tokio::task::spawn_local(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).await.unwrap();
            g.borrow_mut().extend_from_slice(&buf);
            std::future::pending::<()>().await;
        });
        tokio::task::spawn_local(async move {
            let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);
            let mut c = a.connect(to).await.unwrap();
            c.write_all(b"hello").await.unwrap();
            std::future::pending::<()>().await;
        });
        sim.run_async_for(Duration::from_secs(1)).await;
        assert_eq!(*got.borrow(), b"hello");
        let segs = tcp_segments(&sim, an);
        // SYN, then ACK with the data (PSH: all that was queued).
        assert_eq!(segs.first(), Some(&(0x02, 0)), "{segs:?}");
        assert_eq!(segs.get(1), Some(&(0x18, 5)), "{segs:?}");
    });
}

/// Closed connections leave their sockets for the next ones (no fresh buffers each time),
/// and a reused socket starts a connection as a new one would: every exchange arrives whole.
#[test]
fn closed_connections_leave_their_sockets_to_the_next() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    paused(async {
        let (mut sim, a, b, an, bn) = pair(false);
        let listener = b.listen(80, 2).unwrap();
        tokio::task::spawn_local(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                tokio::task::spawn_local(async move {
                    let mut buf = Vec::new();
                    if c.read_to_end(&mut buf).await.is_ok() {
                        let _ = c.write_all(&buf).await;
                    }
                });
            }
        });
        let done = Rc::new(RefCell::new(0));
        let d = done.clone();
        tokio::task::spawn_local(async move {
            let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);
            for i in 0..6usize {
                let mut c = a.connect(to).await.unwrap();
                let msg = pattern(1000 + 50_000 * i);
                c.write_all(&msg).await.unwrap();
                c.shutdown().await.unwrap();
                let mut back = Vec::new();
                c.read_to_end(&mut back).await.unwrap();
                assert!(back == msg, "exchange {i}");
                drop(c);
                // The next connection once this one has left the socket set.
                a.quiesce(Duration::from_secs(5)).await;
                *d.borrow_mut() += 1;
            }
        });
        sim.run_async_for(Duration::from_secs(60)).await;
        assert_eq!(*done.borrow(), 6);
        assert!(
            sim.counter(an, "tcp_sockets_reused") > 0,
            "the client reused"
        );
        assert!(
            sim.counter(bn, "tcp_sockets_reused") > 0,
            "the server reused"
        );
    });
}

/// The window scale (RFC 7323) in `node`'s SYN or SYN-ACK.
fn syn_window_shift(sim: &Sim, node: usize) -> Option<u8> {
    tcp_sent(sim, node).into_iter().find_map(|(src, dst, t)| {
        let tcp = smoltcp::wire::TcpPacket::new_checked(t).ok()?;
        let repr = smoltcp::wire::TcpRepr::parse(
            &tcp,
            &src.into(),
            &dst.into(),
            &smoltcp::phy::ChecksumCapabilities::ignored(),
        )
        .ok()?;
        (repr.control == smoltcp::wire::TcpControl::Syn)
            .then_some(repr.window_scale)
            .flatten()
    })
}

/// `tcp.buffer` left at 0 means 1 MiB on a port with offloads and 256 KiB on one without, and
/// the SYNs say so: four times the buffer is a window scale two more. A buffer set in the
/// config holds whatever the port; one out of range is refused.
#[test]
fn the_buffer_follows_the_port_unless_the_config_sets_it() {
    paused(async {
        let (mut sim, a, b, an, bn) = pair(true);
        let listener = b.listen(80, 1).unwrap();
        tokio::task::spawn_local(async move {
            let _ = listener.accept().await;
        });
        tokio::task::spawn_local(async move {
            let _ = a
                .connect(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80))
                .await;
        });
        sim.run_async_for(Duration::from_secs(1)).await;
        let (sa, sb) = (syn_window_shift(&sim, an), syn_window_shift(&sim, bn));
        assert_eq!(BUFFER_OFFLOAD, 4 * BUFFER_PLAIN);
        assert!(sa.is_some(), "a's SYN scales its window");
        assert_eq!(sb.map(|s| s + 2), sa, "offloading a, plain b");
    });
    let cfg = |buffer: usize| -> StackConfig {
        serde_json::from_value(serde_json::json!({"name": "c",
            "ports": [{"name": "eth0", "addresses": ["10.0.0.3/24"], "offload": true}],
            "tcp": {"buffer": buffer}}))
        .unwrap()
    };
    let (c, _) = Stack::new(&cfg(65536), "c").unwrap();
    assert_eq!(c.inner.borrow().tuning.buffer, 65536);
    let err = Stack::new(&cfg(512), "c")
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("tcp.buffer 512"), "{err}");
}

/// A program that closes first still acknowledges the peer's FIN (and the data with it) when
/// it comes, whether it let go of the connection at once or when it read the end: the peer
/// sends its FIN once, not again after a retransmission timeout, and no ACK of ours closes
/// the window.
#[test]
fn a_connection_closed_first_acknowledges_the_peers_fin() {
    for read_to_end in [false, true] {
        fin_acknowledged(read_to_end);
    }
}

fn fin_acknowledged(read_to_end: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    paused(async {
        let (mut sim, a, b, an, bn) = pair(false);
        let listener = b.listen(443, 2).unwrap();
        tokio::task::spawn_local(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).await.unwrap();
            // A last record after the peer's (TLS's close_notify), then our FIN.
            let _ = c.write_all(&[0x15; 24]).await;
            let _ = c.shutdown().await;
            std::future::pending::<()>().await;
        });
        tokio::task::spawn_local(async move {
            let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 443);
            let mut c = a.connect(to).await.unwrap();
            c.write_all(&[0x15; 24]).await.unwrap();
            c.shutdown().await.unwrap();
            if read_to_end {
                // Let go of it the moment the end is read (a proxy's side done).
                let mut buf = Vec::new();
                let _ = c.read_to_end(&mut buf).await;
            }
            drop(c);
            std::future::pending::<()>().await;
        });
        sim.run_async_for(Duration::from_secs(5)).await;
        let segs = tcp_segments(&sim, bn);
        let fins = segs.iter().filter(|(f, _)| f & 0x01 != 0).count();
        assert_eq!(
            fins, 1,
            "read to end {read_to_end}: b's FIN, once: {segs:?}"
        );
        let zero_window = tcp_sent(&sim, an)
            .iter()
            .any(|(_, _, t)| t[13] & 0x02 == 0 && t[14..16] == [0, 0]);
        assert!(
            !zero_window,
            "a closed the window: {:?}",
            tcp_segments(&sim, an)
        );
    });
}
