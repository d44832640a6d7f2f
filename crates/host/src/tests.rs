//! Two userspace hosts and a router wired in memory: real tasks on real stacks, no root.

use super::*;
use d11_element::{Collect, Element};
use d11_router::{Router, RouterConfig};
use std::time::{Duration, Instant};

struct Net {
    a: StackElement,
    b: StackElement,
    r: Router,
}

/// Where a frame in flight goes: the segment a (host a and router port 0) or b.
#[derive(Clone, Copy)]
enum To {
    A,
    B,
    Router(usize),
}

impl Net {
    /// Polls whatever is due and delivers frames until none are in flight; true if any moved.
    fn shuttle(&mut self) -> bool {
        let now = Instant::now();
        let mut queue: std::collections::VecDeque<(To, Vec<u8>)> = Default::default();
        let mut out = Collect::default();
        if self.a.poll_at().is_some_and(|t| t <= now) {
            self.a.poll(now, &mut out);
        }
        queue.extend(out.frames.drain(..).map(|(_, f)| (To::Router(0), f)));
        if self.b.poll_at().is_some_and(|t| t <= now) {
            self.b.poll(now, &mut out);
        }
        queue.extend(out.frames.drain(..).map(|(_, f)| (To::Router(1), f)));
        if self.r.poll_at().is_some_and(|t| t <= now) {
            self.r.poll(now, &mut out);
        }
        queue.extend(
            out.frames
                .drain(..)
                .map(|(p, f)| (if p == 0 { To::A } else { To::B }, f)),
        );
        let moved = !queue.is_empty();
        while let Some((to, mut f)) = queue.pop_front() {
            match to {
                To::A => {
                    self.a.handle_frame(now, 0, &mut f, &mut out);
                    queue.extend(out.frames.drain(..).map(|(_, f)| (To::Router(0), f)));
                }
                To::B => {
                    self.b.handle_frame(now, 0, &mut f, &mut out);
                    queue.extend(out.frames.drain(..).map(|(_, f)| (To::Router(1), f)));
                }
                To::Router(p) => {
                    self.r.handle_frame(now, p, &mut f, &mut out);
                    queue.extend(
                        out.frames
                            .drain(..)
                            .map(|(p, f)| (if p == 0 { To::A } else { To::B }, f)),
                    );
                }
            }
        }
        moved
    }
}

fn world() -> (Net, Stack) {
    world_with(true)
}

/// a -- r -- b, b's services `checked` or not.
fn world_with(checked: bool) -> (Net, Stack) {
    let cfg = |name: &str, addr: &str, gw: &str| -> HostConfig {
        serde_json::from_value(json!({
            "name": name, "gateway": gw,
            "ports": [{"name": "eth0", "addresses": [addr]}],
            "services": {"source_bytes": 300000, "checked": checked},
        }))
        .unwrap()
    };
    let (a_stack, a) = Stack::new(&cfg("a", "10.0.1.2/24", "10.0.1.1").stack, "host").unwrap();
    let (b, app) = build(&cfg("b", "10.0.2.2/24", "10.0.2.1")).unwrap();
    let rc: RouterConfig = serde_json::from_value(json!({
        "name": "r",
        "ports": [
            {"name": "eth0", "addresses": ["10.0.1.1/24"]},
            {"name": "eth1", "addresses": ["10.0.2.1/24"]},
        ],
    }))
    .unwrap();
    spawn_local(async move {
        let _ = app.expect("b has services").await;
    });
    (
        Net {
            a,
            b,
            r: Router::new(&rc).unwrap(),
        },
        a_stack,
    )
}

/// Runs `f` while shuttling frames, until it completes or 20 s pass.
async fn drive<T>(net: &mut Net, f: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(f);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::select! {
            biased;
            v = &mut f => return v,
            _ = tokio::task::yield_now() => {}
        }
        if !net.shuttle() {
            // Nothing in flight: wait for the next timer of any element (a timer, not a guess).
            let next = [net.a.poll_at(), net.b.poll_at(), net.r.poll_at()]
                .into_iter()
                .flatten()
                .min();
            let until = next
                .unwrap_or_else(|| Instant::now() + Duration::from_millis(5))
                .min(Instant::now() + Duration::from_millis(5));
            tokio::time::sleep_until(until.into()).await;
        }
        assert!(Instant::now() < deadline, "timed out");
    }
}

fn run_local<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

#[test]
fn tcp_echo_discard_and_source_through_a_router() {
    run_local(async {
        let (mut net, a) = world();
        let dst = |p| std::net::SocketAddrV4::new("10.0.2.2".parse().unwrap(), p);

        // Echo.
        let mut c = drive(&mut net, a.connect(dst(7))).await.expect("connect");
        drive(&mut net, c.write_all(b"double eleven"))
            .await
            .unwrap();
        let mut buf = [0u8; 13];
        drive(&mut net, c.read_exact(&mut buf)).await.unwrap();
        assert_eq!(&buf, b"double eleven");
        drop(c);

        // Discard: 1 MB in, its SHA-256 reported by b.
        let mut c = drive(&mut net, a.connect(dst(9))).await.expect("connect");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        drive(&mut net, c.write_all(&data)).await.unwrap();
        drive(&mut net, c.shutdown()).await.unwrap();
        let mut rest = Vec::new();
        drive(&mut net, c.read_to_end(&mut rest)).await.unwrap();
        let want = hex(&Sha256::digest(&data));
        let t = net.b.show("transfers", Instant::now()).unwrap();
        assert_eq!(t[0]["bytes"], 1_000_000);
        assert_eq!(t[0]["sha256"], want);

        // Source: 300000 octets of the seeded stream.
        let mut c = drive(&mut net, a.connect(dst(19))).await.expect("connect");
        let mut got = Vec::new();
        drive(&mut net, c.read_to_end(&mut got)).await.unwrap();
        let mut expect = vec![0u8; 300000];
        let n = SourceStream::new(11, 300000).fill(&mut expect);
        assert_eq!(n, 300000);
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "source stream differs");

        // The stack's view of TCP from the wire, relative to each side's ISN as Wireshark
        // shows it: 1,000,000 octets + SYN + FIN sent to discard; 300,000 + SYN + FIN
        // acknowledged from source (the last ACK leaves at the poll after the FIN came in).
        while net.shuttle() {}
        let tcp = net.a.show("tcp", Instant::now()).unwrap();
        let row = |port: &str| {
            tcp.as_array()
                .unwrap()
                .iter()
                .find(|r| r["remote"].as_str().is_some_and(|x| x.ends_with(port)))
                .cloned()
                .unwrap()
        };
        assert_eq!(row(":9")["seq"], 1_000_002, "{tcp}");
        assert_eq!(row(":19")["ack"], 300_002, "{tcp}");
        assert_eq!(row(":19")["seq"], 1, "{tcp}");
    });
}

#[test]
fn udp_echo_and_refused_connection() {
    run_local(async {
        let (mut net, a) = world();
        let u = a.udp_bind(0).unwrap();
        let to = std::net::SocketAddrV4::new("10.0.2.2".parse().unwrap(), 7);
        drive(&mut net, u.send_to(b"ping", to)).await.unwrap();
        let mut buf = [0u8; 16];
        // The first datagram may wait on ARP at both hops; smoltcp drops it then: resend on timer.
        let got = drive(&mut net, async {
            loop {
                tokio::select! {
                    r = u.recv_from(&mut buf) => break r,
                    _ = tokio::time::sleep(Duration::from_millis(300)) => { u.send_to(b"ping", to).await.unwrap(); }
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(&buf[..got.0], b"ping");
        // Nothing listens on 8: a RST, so connect fails.
        let r = drive(
            &mut net,
            a.connect(std::net::SocketAddrV4::new("10.0.2.2".parse().unwrap(), 8)),
        )
        .await;
        assert!(r.is_err());
    });
}

#[test]
fn garbage_is_counted_not_fatal() {
    run_local(async {
        let (mut net, _) = world();
        let mut tx = Collect::default();
        for len in [0usize, 5, 13, 14, 20, 34, 60] {
            let mut f = vec![0xffu8; len];
            if len >= 14 {
                f[6] = 2;
                f[12] = 8;
                f[13] = 0;
            }
            net.b.handle_frame(Instant::now(), 0, &mut f, &mut tx);
        }
        let mut total = 0;
        net.b.counters(&mut |k, v| {
            if k.starts_with("drop_") {
                total += v
            }
        });
        assert_eq!(total, 7);
    });
}

/// Unchecked services cost what `nc` does: the source sends zeros and neither hashes.
#[test]
fn unchecked_services_send_zeros_and_hash_nothing() {
    run_local(async {
        let (mut net, a) = world_with(false);
        let dst = |p| std::net::SocketAddrV4::new("10.0.2.2".parse().unwrap(), p);
        let mut c = drive(&mut net, a.connect(dst(19))).await.expect("connect");
        let mut got = Vec::new();
        drive(&mut net, c.read_to_end(&mut got)).await.unwrap();
        assert_eq!(got.len(), 300000);
        assert!(got.iter().all(|&b| b == 0));
        let mut c = drive(&mut net, a.connect(dst(9))).await.expect("connect");
        drive(&mut net, c.write_all(&[7u8; 5000])).await.unwrap();
        drive(&mut net, c.shutdown()).await.unwrap();
        let mut rest = Vec::new();
        drive(&mut net, c.read_to_end(&mut rest)).await.unwrap();
        let t = net.b.show("transfers", Instant::now()).unwrap();
        let t = t.as_array().unwrap();
        let row = |s: &str| t.iter().find(|x| x["service"] == s).cloned().unwrap();
        assert_eq!(row("source")["bytes"], 300000);
        assert_eq!(row("discard")["bytes"], 5000);
        assert!(row("source")["sha256"].is_null() && row("discard")["sha256"].is_null());
    });
}
