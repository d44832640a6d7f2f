use crate::args::ElementArgs;
use crate::control::MAX_REQUEST;
use crate::{Element, PortId, Transmit};
use anyhow::{Context, Result};
use d11_netdev::impair::Impaired;
use d11_netdev::pcap::Capture;
use d11_netdev::tap::{Tap, TapConfig};
use d11_netdev::{FrameDevice, Gso, MAX_FRAME};
use serde_json::{json, Map, Value};
use std::future::poll_fn;
use std::io::{BufWriter, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

/// Frames read from one port per wakeup before the others get a turn.
const BUDGET: usize = 64;

/// Frames read from one port back to back before they are handled, at most (fewer when the
/// port runs dry or a super-frame comes, which is handled after the batch, alone).
///
/// Reading a batch, handling it, then writing what it made keeps each of the three warm in
/// the caches: the kernel's read path, the program's own code, the kernel's write path (the
/// bridge, veth and the next host's receive run in our write). Frame by frame, each of them
/// ran after the other two had pushed it out. Measured in docs/perf.md ("Frames in
/// batches").
const BATCH: usize = 16;

/// Frames sent while a batch is handled that are kept to be written after it, at most; a
/// frame beyond that flushes the queue and goes at once.
const TX_QUEUE: usize = 64;

/// A port as the runtime holds it.
pub struct Port {
    pub name: String,
    pub dev: Box<dyn FrameDevice>,
    rx_frames: u64,
    rx_bytes: u64,
    tx_frames: u64,
    tx_bytes: u64,
    tx_errors: u64,
    rx_errors: u64,
    oversize: u64,
    /// Offloads: super-frames read and written whole, segments cut in software (for a program
    /// that reads segments, or a port without offloads), frames that could not be cut.
    rx_gso: u64,
    tx_gso: u64,
    gso_segments: u64,
    gso_errors: u64,
}

impl Port {
    pub fn new(name: impl Into<String>, dev: Box<dyn FrameDevice>) -> Self {
        Self {
            name: name.into(),
            dev,
            rx_frames: 0,
            rx_bytes: 0,
            tx_frames: 0,
            tx_bytes: 0,
            tx_errors: 0,
            rx_errors: 0,
            oversize: 0,
            rx_gso: 0,
            tx_gso: 0,
            gso_segments: 0,
            gso_errors: 0,
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("device".into(), json!(self.dev.name()));
        for (k, v) in [
            ("rx_frames", self.rx_frames),
            ("rx_bytes", self.rx_bytes),
            ("tx_frames", self.tx_frames),
            ("tx_bytes", self.tx_bytes),
            ("tx_errors", self.tx_errors),
            ("rx_errors", self.rx_errors),
            ("rx_oversize", self.oversize),
            ("rx_gso", self.rx_gso),
            ("tx_gso", self.tx_gso),
            ("gso_segments", self.gso_segments),
            ("gso_errors", self.gso_errors),
        ] {
            m.insert(k.into(), json!(v));
        }
        self.dev.counters(&mut |k, v| {
            m.insert(k.into(), json!(v));
        });
        Value::Object(m)
    }
}

struct Ports<'a> {
    ports: &'a mut [Port],
    now: Instant,
    /// Where a super-frame for a port without offloads is cut.
    seg: &'a mut [u8],
    /// Where plain frames sent while a batch is handled wait for the batch's end (see
    /// [`BATCH`]); `None` sends each at once.
    queue: Option<&'a mut TxQueue>,
}

/// Plain frames kept to be written after a batch, in the order sent.
#[derive(Default)]
struct TxQueue {
    /// The port of each frame kept; its octets are the buffer of the same index.
    ports: Vec<PortId>,
    /// One buffer per frame, reused: no allocation once warm.
    bufs: Vec<Vec<u8>>,
}

impl TxQueue {
    fn keep(&mut self, port: PortId, frame: &[u8]) {
        let j = self.ports.len();
        if self.bufs.len() == j {
            self.bufs.push(Vec::new());
        }
        let b = &mut self.bufs[j];
        b.clear();
        b.extend_from_slice(frame);
        self.ports.push(port);
    }
}

/// Counts a frame written to `p` (or not).
fn count_sent(p: &mut Port, len: usize, r: std::io::Result<()>) {
    match r {
        Ok(()) => {
            p.tx_frames += 1;
            p.tx_bytes += len as u64;
        }
        Err(_) => p.tx_errors += 1,
    }
}

impl Ports<'_> {
    /// Writes the frames kept so far, in order.
    fn flush(&mut self) {
        let Some(q) = self.queue.as_deref_mut() else {
            return;
        };
        for (&port, frame) in q.ports.iter().zip(&q.bufs) {
            let p = &mut self.ports[port];
            let r = p.dev.send(self.now, frame);
            count_sent(p, frame.len(), r);
        }
        q.ports.clear();
    }
}

impl Transmit for Ports<'_> {
    fn send(&mut self, port: PortId, frame: &[u8]) {
        if port >= self.ports.len() {
            return;
        }
        if let Some(q) = self.queue.as_deref_mut() {
            if q.ports.len() < TX_QUEUE {
                q.keep(port, frame);
                return;
            }
        }
        // Whatever was kept goes first: frames leave in the order sent.
        self.flush();
        let p = &mut self.ports[port];
        let r = p.dev.send(self.now, frame);
        count_sent(p, frame.len(), r);
    }
    fn wants_notes(&self, port: PortId) -> bool {
        self.ports.get(port).is_some_and(|p| p.dev.wants_notes())
    }
    fn offloads(&self, port: PortId) -> bool {
        self.ports.get(port).is_some_and(|p| p.dev.offloads())
    }
    fn send_gso(&mut self, port: PortId, frame: &[u8], gso: &Gso) {
        if gso.is_plain() {
            return self.send(port, frame);
        }
        self.flush();
        let now = self.now;
        let Some(p) = self.ports.get_mut(port) else {
            return;
        };
        if p.dev.offloads() && (!gso.is_tunnel() || p.dev.tunnel_offloads()) {
            let r = p.dev.send_gso(now, frame, gso);
            if r.is_ok() {
                p.tx_gso += 1;
            }
            count_sent(p, frame.len(), r);
        } else {
            let r = d11_wire::gso::segment(frame, gso, self.seg, |s| {
                let r = p.dev.send(now, s);
                count_sent(p, s.len(), r)
            });
            match r {
                Ok(n) => p.gso_segments += n as u64,
                Err(_) => p.gso_errors += 1,
            }
        }
    }
    fn send_noted(&mut self, port: PortId, frame: &[u8], note: &str) {
        self.flush();
        let now = self.now;
        if let Some(p) = self.ports.get_mut(port) {
            let r = p.dev.send_noted(now, frame, note);
            count_sent(p, frame.len(), r);
        }
    }
}

/// Opens the ports named by `--port`, wrapped as `--impair` and `--capture-dir` say.
///
/// Must run before any multi-threaded runtime exists: it enters the fabric namespace on this
/// thread to create the TAPs there.
pub fn open_ports(args: &ElementArgs) -> Result<Vec<Port>> {
    let mut ports = Vec::new();
    for spec in args.port_specs()? {
        let tap = Tap::open(&TapConfig {
            name: &spec.tap,
            netns: args.fabric.as_deref(),
            bridge: spec.bridge.as_deref(),
            mtu: None,
            tun: false,
            offloads: args.offloads(&spec.name),
        })
        .with_context(|| format!("port {}: cannot open TAP {}", spec.name, spec.tap))?;
        let imp = args.impairment(&spec.name)?;
        let mut dev: Box<dyn FrameDevice> = Box::new(tap);
        if let Some(dir) = &args.capture_dir {
            let path = dir.join(format!("{}-{}.pcapng", args.node, spec.name));
            let file = std::fs::File::create(&path)
                .with_context(|| format!("cannot create capture {}", path.display()))?;
            let label = format!("{}:{}", args.node, spec.name);
            dev = Box::new(Capture::with_name(dev, BufWriter::new(file), &label)?);
        }
        if !imp.tx.is_none() || !imp.rx.is_none() {
            let seed = args.seed ^ fnv(&spec.name);
            dev = Box::new(Impaired::new(dev, imp.tx, imp.rx, seed));
        }
        ports.push(Port::new(spec.name, dev));
    }
    Ok(ports)
}

fn fnv(s: &str) -> u64 {
    d11_wire::fnv::fnv1a64(s.as_bytes())
}

struct RawFdRef(RawFd);
impl AsRawFd for RawFdRef {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

type Request = (Option<String>, oneshot::Sender<Value>);

/// Runs `element` over `ports` until SIGTERM or SIGINT.
pub fn run<E: Element>(args: &ElementArgs, element: E, ports: Vec<Port>) -> Result<()> {
    run_app(args, ports, || Ok((element, None)))
}

/// Builds the element and its app inside a current-thread runtime with a `LocalSet` (so the
/// app can `spawn_local` tasks that share the stack), then runs the frame loop and the app
/// until a signal, or until the app returns.
pub fn run_app<E: Element>(
    args: &ElementArgs,
    ports: Vec<Port>,
    build: impl FnOnce() -> Result<(E, Option<crate::App>)>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let (element, app) = build()?;
        let app = async move {
            match app {
                Some(a) => a.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = run_loop(args, element, ports) => r,
            r = app => r,
        }
    })
}

async fn run_loop<E: Element>(
    args: &ElementArgs,
    mut element: E,
    mut ports: Vec<Port>,
) -> Result<()> {
    let started = Instant::now();
    let fds: Vec<AsyncFd<RawFdRef>> = ports
        .iter()
        .map(|p| {
            // SAFETY: each descriptor belongs to a port in `ports`, which outlives `fds`
            // (parameters drop after locals), so it stays open while registered.
            unsafe { AsyncFd::register_with_interest(RawFdRef(p.dev.raw_fd()), Interest::READABLE) }
                .map_err(|e| e.into_parts().1)
        })
        .collect::<std::io::Result<_>>()
        .context("cannot register ports with the runtime")?;

    let (req_tx, mut req_rx) = mpsc::channel::<Request>(16);
    if let Some(path) = &args.control {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot bind control socket {}", path.display()))?;
        tokio::spawn(serve_control(listener, req_tx));
    }
    let notify = element.wakeup();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    if let Some(fd) = args.ready_fd {
        signal_ready(fd);
    }
    tracing::info!(node = %args.node, role = element.role(), ports = ports.len(), "ready");

    // Read buffers, one per frame of a batch: made as a batch first needs them (once each),
    // so a program that reads a frame or two per wakeup keeps one or two resident.
    let mut bufs: Vec<Vec<u8>> = vec![vec![0u8; MAX_FRAME]];
    let mut lens = [0usize; BATCH];
    let mut txq = TxQueue::default();
    // Segments cut from a super-frame: those handed to an element that reads segments only,
    // and those sent to a port without offloads.
    let mut seg_rx = vec![0u8; MAX_FRAME];
    let mut seg_tx = vec![0u8; MAX_FRAME];
    let takes_gso = element.takes_gso();
    let takes_tunnel_gso = takes_gso && element.takes_tunnel_gso();
    let takes_udp_segments = takes_gso && element.takes_udp_segments();
    if takes_udp_segments {
        for p in ports.iter_mut().filter(|p| p.dev.offloads()) {
            if !p.dev.take_udp_segments() {
                tracing::info!(port = %p.name, "no UDP super-frames from this kernel's TAP");
            }
        }
    }
    // Ports whose budget ran out last turn: served again without waiting for an edge.
    let mut pending = vec![false; ports.len()];
    let mut ready = vec![false; ports.len()];
    loop {
        let deadline = ports
            .iter()
            .filter_map(|p| p.dev.poll_at())
            .chain(element.poll_at())
            .min()
            // Captures flush on poll; wake at least this often.
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(200));
        let any_pending = pending.iter().any(|p| *p);
        tokio::select! {
            biased;
            _ = term.recv() => break,
            _ = int.recv() => break,
            Some((table, reply)) = req_rx.recv() => {
                let _ = reply.send(answer(&args.node, started, &element, &ports, table.as_deref()));
                continue;
            }
            _ = poll_fn(|cx| {
                let mut any = any_pending;
                for (i, fd) in fds.iter().enumerate() {
                    if let Poll::Ready(Ok(mut g)) = fd.poll_read_ready(cx) {
                        // Cleared before draining: a frame that lands while we drain raises
                        // a new edge; a drain cut short by the budget is kept in `pending`.
                        g.clear_ready();
                        ready[i] = true;
                        any = true;
                    }
                }
                if any { Poll::Ready(()) } else { Poll::Pending }
            }) => {}
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = async {
                match &notify {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let now = Instant::now();
        for i in 0..ports.len() {
            if !(ready[i] || pending[i]) {
                continue;
            }
            ready[i] = false;
            pending[i] = true;
            // A batch of plain frames read back to back, handled in order, and what they
            // made written after them (see [`BATCH`]), until the port runs dry or its budget
            // is spent.
            let mut left = BUDGET;
            while left > 0 {
                let mut k = 0;
                let mut special = None;
                let mut ended = false;
                while k < BATCH && left > 0 {
                    left -= 1;
                    if k == bufs.len() {
                        bufs.push(vec![0u8; MAX_FRAME]);
                    }
                    match ports[i].dev.recv_gso(now, &mut bufs[k]) {
                        Ok(Some((n, gso))) => {
                            let p = &mut ports[i];
                            p.rx_frames += 1;
                            p.rx_bytes += n as u64;
                            if n > bufs[k].len() {
                                p.oversize += 1;
                                continue;
                            }
                            lens[k] = n;
                            if gso.is_plain() {
                                k += 1;
                                continue;
                            }
                            // A super-frame ends the batch: handled after it, alone.
                            special = Some(gso);
                            break;
                        }
                        Ok(None) => {
                            pending[i] = false;
                            ended = true;
                            break;
                        }
                        Err(e) => {
                            ports[i].rx_errors += 1;
                            tracing::warn!(port = %ports[i].name, error = %e, "receive failed");
                            pending[i] = false;
                            ended = true;
                            break;
                        }
                    }
                }
                {
                    let mut tx = Ports {
                        ports: &mut ports,
                        now,
                        seg: &mut seg_tx,
                        queue: Some(&mut txq),
                    };
                    for (b, &n) in bufs.iter_mut().zip(lens.iter()).take(k) {
                        element.handle_frame(now, i, &mut b[..n], &mut tx);
                    }
                    tx.flush();
                }
                if let Some(gso) = special {
                    let n = lens[k];
                    let buf = &mut bufs[k];
                    if !gso.is_single() {
                        ports[i].rx_gso += 1;
                    }
                    let mut tx = Ports {
                        ports: &mut ports,
                        now,
                        seg: &mut seg_tx,
                        queue: None,
                    };
                    if takes_gso
                        && (takes_tunnel_gso || !gso.is_tunnel())
                        && (takes_udp_segments || !gso.is_udp_segments())
                    {
                        element.handle_frame_gso(now, i, &mut buf[..n], &gso, &mut tx);
                    } else {
                        // The element reads segments: cut here, as the kernel's GSO would.
                        let r = d11_wire::gso::segment(&buf[..n], &gso, &mut seg_rx, |s| {
                            element.handle_frame(now, i, s, &mut tx)
                        });
                        let p = &mut ports[i];
                        match r {
                            Ok(k) => p.gso_segments += k as u64,
                            Err(_) => p.gso_errors += 1,
                        }
                    }
                }
                if ended {
                    break;
                }
            }
        }
        for p in ports.iter_mut() {
            p.dev.poll(now);
        }
        let mut now = now;
        if notify.is_some() && element.poll_at().is_some_and(|t| t <= now) {
            // The tasks the frames woke run first, so that what they answer leaves with the
            // ACK of what woke them (one segment, not two).
            tokio::task::yield_now().await;
            now = Instant::now();
        }
        if element.poll_at().is_some_and(|t| t <= now) {
            let mut tx = Ports {
                ports: &mut ports,
                now,
                seg: &mut seg_tx,
                queue: None,
            };
            element.poll(now, &mut tx);
        }
    }
    tracing::info!(node = %args.node, "stopping");
    let now = Instant::now();
    element.shutdown(
        now,
        &mut Ports {
            ports: &mut ports,
            now,
            seg: &mut seg_tx,
            queue: None,
        },
    );
    for p in ports.iter_mut() {
        p.dev.poll(now);
    }
    if let Some(path) = &args.control {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn signal_ready(fd: RawFd) {
    use std::os::fd::FromRawFd;
    // SAFETY: the builder handed us this descriptor for exactly this purpose; we own it now.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    if let Err(e) = f.write_all(b"READY\n") {
        tracing::warn!(error = %e, "cannot signal readiness");
    }
}

fn answer<E: Element>(
    node: &str,
    started: Instant,
    element: &E,
    ports: &[Port],
    table: Option<&str>,
) -> Value {
    let now = Instant::now();
    let ok = |v: Value| json!({ "ok": v });
    match table {
        None => {
            let mut tables: Vec<String> = ["info", "ports", "counters"].map(String::from).to_vec();
            tables.extend(element.tables());
            ok(json!({ "node": node, "role": element.role(), "tables": tables }))
        }
        Some("info") => ok(json!({
            "node": node,
            "role": element.role(),
            "pid": std::process::id(),
            "uptime_s": now.duration_since(started).as_secs_f64(),
            "ports": ports.iter().map(|p| json!({"name": p.name, "device": p.dev.name()})).collect::<Vec<_>>(),
        })),
        Some("ports") => ok(Value::Array(ports.iter().map(Port::to_json).collect())),
        Some("counters") => {
            let mut m = Map::new();
            element.counters(&mut |k, v| {
                m.insert(k.to_string(), json!(v));
            });
            ok(Value::Object(m))
        }
        Some(t) => match element.show(t, now) {
            Some(v) => ok(v),
            None => {
                let mut tables: Vec<String> =
                    ["info", "ports", "counters"].map(String::from).to_vec();
                tables.extend(element.tables());
                json!({ "error": format!("{node} has no table {t:?}; tables: {}", tables.join(", ")) })
            }
        },
    }
}

async fn serve_control(listener: UnixListener, requests: mpsc::Sender<Request>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(r, MAX_REQUEST as u64));
            let read =
                tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
            let reply = match read {
                Ok(Ok(_)) => match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let table = v.get("table").and_then(Value::as_str).map(str::to_string);
                        let (tx, rx) = oneshot::channel();
                        if requests.send((table, tx)).await.is_err() {
                            return;
                        }
                        rx.await
                            .unwrap_or_else(|_| json!({"error": "element stopped"}))
                    }
                    Err(e) => json!({ "error": format!("bad request: {e}") }),
                },
                _ => json!({ "error": "no request line" }),
            };
            let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `dev` has received so far.
    fn received(dev: &mut dyn FrameDevice) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        while let Some(n) = dev.recv(Instant::now(), &mut buf).expect("a read") {
            out.push(buf[..n].to_vec());
        }
        out
    }

    #[test]
    fn frames_kept_during_a_batch_leave_after_it_in_the_order_sent() {
        let (a, mut a_peer) = d11_netdev::mem::MemPair::new("a", "a-peer").unwrap();
        let (b, mut b_peer) = d11_netdev::mem::MemPair::new("b", "b-peer").unwrap();
        let mut ports = vec![Port::new("a", Box::new(a)), Port::new("b", Box::new(b))];
        let mut seg = vec![0u8; 64];
        let mut q = TxQueue::default();
        let mut tx = Ports {
            ports: &mut ports,
            now: Instant::now(),
            seg: &mut seg,
            queue: Some(&mut q),
        };
        tx.send(0, b"one");
        tx.send(1, b"two");
        tx.send_gso(0, b"three", &Gso::NONE);
        tx.send(9, b"to no port");
        assert!(
            received(&mut a_peer).is_empty(),
            "kept until the batch ends"
        );
        // A noted frame (a program's capture says what it decided) goes at once, after what
        // was kept.
        tx.send_noted(1, b"four", "a note");
        tx.send(0, b"five");
        assert_eq!(received(&mut a_peer), [&b"one"[..], b"three"]);
        assert_eq!(received(&mut b_peer), [&b"two"[..], b"four"]);
        tx.flush();
        assert_eq!(received(&mut a_peer), [&b"five"[..]]);
        // More than the queue holds: the rest go at once, still in order.
        for n in 0..TX_QUEUE + 3 {
            tx.send(1, &[n as u8]);
        }
        tx.flush();
        let got = received(&mut b_peer);
        assert_eq!(got.len(), TX_QUEUE + 3);
        assert!(
            got.iter().enumerate().all(|(n, f)| f == &[n as u8]),
            "{got:?}"
        );
        assert_eq!(
            (ports[0].tx_frames, ports[1].tx_frames),
            (3, TX_QUEUE as u64 + 5)
        );
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv("eth0"), fnv("eth0"));
        assert_ne!(fnv("eth0"), fnv("eth1"));
    }
}
