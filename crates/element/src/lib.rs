//! The element runtime: what every d11 network program shares.
//!
//! A program is an [`Element`] (sans-IO logic: frames and time in, frames out) plus this
//! runtime, which owns the ports, waits on them with tokio's `AsyncFd`, drives timers, answers
//! the control socket (`d11 show`), signals readiness to the lab builder, and stops cleanly on
//! SIGTERM or SIGINT.
//!
//! The loop runs on a current-thread runtime: ports are opened (with `setns`) before it starts,
//! and one thread per program keeps the lab's many programs from fighting over two cores.

pub mod alloc_count;
pub mod args;
pub mod control;
pub mod counters;
pub mod health;
mod runtime;
pub mod sim;

pub use args::{ElementArgs, PortSpec};
pub use runtime::{open_ports, run, run_app, Port};

use std::time::Instant;

/// Index of a port in the order the program was given its ports.
pub type PortId = usize;

/// Where an element sends frames.
pub trait Transmit {
    /// Sends a frame out of `port`. Errors are counted by the runtime, not returned: an element
    /// has nothing better to do with a full queue than to drop.
    fn send(&mut self, port: PortId, frame: &[u8]);

    /// Whether anyone keeps notes for `port` (a capture is on); format notes only then.
    fn wants_notes(&self, port: PortId) -> bool {
        let _ = port;
        false
    }

    /// Sends a frame with a note of what the element decided (a pcapng comment).
    fn send_noted(&mut self, port: PortId, frame: &[u8], note: &str) {
        let _ = note;
        self.send(port, frame)
    }

    /// Whether `port` takes offloaded frames whole (a TAP with offloads).
    fn offloads(&self, port: PortId) -> bool {
        let _ = port;
        false
    }

    /// Sends a frame with its offload metadata: whole to a port with offloads, else cut into
    /// segments with complete checksums first ([`d11_wire::gso::segment`]). This default cuts
    /// into a buffer of its own; the runtime's transmitter reuses one.
    fn send_gso(&mut self, port: PortId, frame: &[u8], gso: &d11_wire::gso::Gso) {
        if gso.is_plain() {
            return self.send(port, frame);
        }
        let mut buf = vec![0u8; frame.len()];
        let _ = d11_wire::gso::segment(frame, gso, &mut buf, |s| self.send(port, s));
    }
}

/// Collects frames with their offload metadata, as ports that take offloaded frames whole
/// would: for unit tests of elements that pass super-frames on.
#[derive(Debug, Default)]
pub struct CollectGso {
    pub frames: Vec<(PortId, Vec<u8>, d11_wire::gso::Gso)>,
}

impl Transmit for CollectGso {
    fn send(&mut self, port: PortId, frame: &[u8]) {
        self.frames
            .push((port, frame.to_vec(), d11_wire::gso::Gso::NONE));
    }
    fn offloads(&self, _port: PortId) -> bool {
        true
    }
    fn send_gso(&mut self, port: PortId, frame: &[u8], gso: &d11_wire::gso::Gso) {
        self.frames.push((port, frame.to_vec(), *gso));
    }
}

/// Collects frames in memory: for unit tests of elements.
#[derive(Debug, Default)]
pub struct Collect {
    pub frames: Vec<(PortId, Vec<u8>)>,
}

impl Transmit for Collect {
    fn send(&mut self, port: PortId, frame: &[u8]) {
        self.frames.push((port, frame.to_vec()));
    }
}

/// The logic of one network element, free of I/O: it reads no clock and owns no device.
pub trait Element {
    /// A short role name (`router`, `host`, ...), shown by `d11 show NODE info`.
    fn role(&self) -> &'static str;

    /// Handles one frame received on `port`. The buffer may be rewritten in place (a router
    /// forwards by rewriting MACs and TTL). Must never panic on any input.
    fn handle_frame(&mut self, now: Instant, port: PortId, frame: &mut [u8], tx: &mut dyn Transmit);

    /// Whether the element takes offloaded frames whole through
    /// [`handle_frame_gso`](Self::handle_frame_gso) (a forwarder that passes TCP super-frames
    /// on). Otherwise the runtime cuts them into segments for [`handle_frame`](Self::handle_frame).
    fn takes_gso(&self) -> bool {
        false
    }

    /// Whether the element, taking offloaded frames, also takes super-frames inside a UDP
    /// tunnel ([`Gso::is_tunnel`](d11_wire::gso::Gso::is_tunnel): a VTEP's). Otherwise the
    /// runtime cuts those into segments first.
    fn takes_tunnel_gso(&self) -> bool {
        false
    }

    /// Whether the element, taking offloaded frames, also takes UDP super-frames
    /// ([`Gso::is_udp_segments`](d11_wire::gso::Gso::is_udp_segments): a GTP-U element's
    /// G-PDUs, one after the other). The runtime then asks its ports to hand them over whole;
    /// otherwise it cuts any that come into datagrams first.
    fn takes_udp_segments(&self) -> bool {
        false
    }

    /// Handles an offloaded frame (a TCP super-frame, or a frame whose checksum is partial), as
    /// `gso` describes it; called only if [`takes_gso`](Self::takes_gso). Must never panic.
    fn handle_frame_gso(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &mut [u8],
        gso: &d11_wire::gso::Gso,
        tx: &mut dyn Transmit,
    ) {
        let _ = gso;
        self.handle_frame(now, port, frame, tx)
    }

    /// When [`poll`](Self::poll) next has work (retransmissions, ageing, ARP retries).
    fn poll_at(&self) -> Option<Instant> {
        None
    }

    /// Does timed work.
    fn poll(&mut self, now: Instant, tx: &mut dyn Transmit) {
        let _ = (now, tx);
    }

    /// The tables `show` answers, besides the runtime's own `info`, `ports` and `counters`.
    fn tables(&self) -> Vec<String> {
        Vec::new()
    }

    /// A table as JSON, or `None` if the element has no such table.
    fn show(&self, table: &str, now: Instant) -> Option<serde_json::Value>;

    /// The element's counters (frames seen, dropped by reason, ...).
    fn counters(&self, out: &mut dyn FnMut(&str, u64));

    /// The program is stopping (SIGTERM or SIGINT): a last word on the wire, such as a
    /// phone's detach, goes out now.
    fn shutdown(&mut self, now: Instant, tx: &mut dyn Transmit) {
        let _ = (now, tx);
    }

    /// Signalled when work arrives from outside the frame loop (a task wrote to a socket), so
    /// the runtime calls [`poll`](Self::poll) without waiting for a frame or a timer.
    fn wakeup(&self) -> Option<std::rc::Rc<tokio::sync::Notify>> {
        None
    }
}

/// An application running beside the frame loop (a server, a client): when it returns, the
/// program exits with its result.
pub type App = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>;

/// A stable, locally administered unicast MAC for a node's port, so that captures of two runs
/// of the same lab show the same addresses (and journey reports can name them).
pub fn derive_mac(node: &str, port: &str) -> [u8; 6] {
    let h = d11_wire::fnv::Fnv64::default()
        .write(node.as_bytes())
        .write(&[0])
        .write(port.as_bytes())
        .finish();
    let b = h.to_be_bytes();
    // 02 = locally administered unicast; d1 keeps clear of vendor prefixes Wireshark names.
    [0x02, 0xd1, b[2], b[3], b[4], b[5]]
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let mut out = [0u8; 6];
    let parts: Vec<_> = s.split(':').collect();
    if parts.len() != 6 {
        anyhow::bail!("MAC {s:?}: expected six hex octets separated by ':'");
    }
    for (o, p) in out.iter_mut().zip(parts) {
        *o =
            u8::from_str_radix(p, 16).map_err(|_| anyhow::anyhow!("MAC {s:?}: bad octet {p:?}"))?;
    }
    if out[0] & 1 != 0 {
        anyhow::bail!("MAC {s:?} is multicast; a port needs a unicast address");
    }
    Ok(out)
}

/// Puts ports in the order the element's config names them; every configured port must have
/// been given with `--port`, and no other.
pub fn order_ports(mut ports: Vec<Port>, names: &[&str]) -> anyhow::Result<Vec<Port>> {
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let i = ports.iter().position(|p| p.name == *n).ok_or_else(|| {
            anyhow::anyhow!("config names port {n:?} but no --port {n}=TAP was given")
        })?;
        out.push(ports.swap_remove(i));
    }
    if let Some(p) = ports.first() {
        anyhow::bail!("--port {} is not in the config", p.name);
    }
    Ok(out)
}

/// The `main` of every element program: runs `f`, prints an error as one line, exits non-zero.
pub fn main_with(program: &str, f: impl FnOnce() -> anyhow::Result<()>) -> std::process::ExitCode {
    fixed_mmap_threshold();
    match f() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Allocations of 128 KiB and more (a TCP socket's windows are 256 KiB or 1 MiB each) come from `mmap`
/// and go back to the kernel when freed. glibc otherwise raises that threshold after the first
/// such free, and from then on serves the windows from the heap: each new connection's `calloc`
/// then clears 1 MiB by hand (`memset` was the first entry of the balancer's profile under new
/// connections), and the memory of connections gone stays with the process. Measured on
/// d11-lb, a new connection per request: about 8 % more requests a second, and 5 MB resident
/// after the load instead of 29 MB (docs/perf.md).
fn fixed_mmap_threshold() {
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// `aa:bb:cc:dd:ee:ff`, as Wireshark and `ip link` write MACs.
pub fn mac_string(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[derive(serde::Deserialize)]
struct PortNames {
    #[serde(default)]
    ports: Vec<PortName>,
}

#[derive(serde::Deserialize)]
struct PortName {
    name: String,
}

/// The whole `main` of an element program: checks the flags, starts logging, loads the config
/// as `C`, builds the element from it, opens the ports the config names (in its order) and
/// runs until SIGTERM. Any error is one line on stderr and a non-zero exit.
pub fn program_main<C, E>(
    program: &str,
    args: &ElementArgs,
    build: impl FnOnce(&C) -> anyhow::Result<E>,
) -> std::process::ExitCode
where
    C: serde::de::DeserializeOwned,
    E: Element,
{
    program_main_app(program, args, |cfg: &C| Ok((build(cfg)?, None)))
}

/// [`program_main`] for programs with an application beside the element (endpoints: the
/// element is the stack, the app serves or calls over it). `build` runs inside the runtime,
/// so it may bind sockets; the program reports ready after it returns.
pub fn program_main_app<C, E>(
    program: &str,
    args: &ElementArgs,
    build: impl FnOnce(&C) -> anyhow::Result<(E, Option<App>)>,
) -> std::process::ExitCode
where
    C: serde::de::DeserializeOwned,
    E: Element,
{
    main_with(program, || {
        args.validate()?;
        args.init_logging();
        let cfg: C = args.load_config()?;
        let names: PortNames = args.load_config()?;
        let names: Vec<&str> = names.ports.iter().map(|p| p.name.as_str()).collect();
        let ports = order_ports(open_ports(args)?, &names)?;
        run_app(args, ports, || build(&cfg))
    })
}

/// A port as every element's config names it: its name on the node, an optional MAC (derived
/// from node and port names when absent), its IPv4 addresses, and the link's IP MTU.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PortConfig {
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub addresses: Vec<ipnet::Ipv4Net>,
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Whether the port's device takes offloaded frames (`--offload PORT`: a TAP with
    /// `IFF_VNET_HDR`). [`ElementArgs::load_config`] sets it from the command line, so a
    /// program that builds its own super-frames (the endpoint stack's TSO) knows it may.
    #[serde(default)]
    pub offload: bool,
}

impl PortConfig {
    /// The port's MAC: the configured one, or one derived from `node` and the port name.
    pub fn mac_for(&self, node: &str) -> anyhow::Result<[u8; 6]> {
        match &self.mac {
            Some(m) => parse_mac(m),
            None => Ok(derive_mac(node, &self.name)),
        }
    }

    /// The IP MTU, 1500 when not set.
    pub fn ip_mtu(&self) -> usize {
        usize::from(self.mtu.unwrap_or(1500))
    }
}
