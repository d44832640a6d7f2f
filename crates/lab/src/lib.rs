//! The lab builder: turns a topology file into network namespaces, bridges, TAPs, veths and
//! running programs, and removes exactly what it made.
//!
//! Layout of a lab with prefix P:
//! - namespace `P-fabric` holds one Linux bridge per segment; the kernel only switches frames
//!   there (no IP addresses, IPv6 off, so captures carry only the lab's own traffic);
//! - namespace `P-<node>` per node: a d11 program runs in it, its TAPs created in `P-fabric`
//!   and joined to the segments' bridges; a kernel host instead gets a veth whose one end is
//!   its `ethN` and whose other end joins the bridge;
//! - run directory `/run/d11/P/`: `state.json` (everything made, written before each step so a
//!   crash mid-way still leaves a complete record), `config/`, `ctl/` (control sockets),
//!   `logs/`.

pub mod capture;
pub mod client;
pub mod sys;
pub mod topology;
pub mod tshark;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use topology::{Node, Scheduling, Topology, FABRIC};

/// Where labs keep their state.
pub const RUN_ROOT: &str = "/run/d11";
/// How long a program may take to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortState {
    pub name: String,
    pub segment: String,
    /// The interface in the fabric namespace that joins the bridge (TAP or veth end).
    pub ifname: String,
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub role: String,
    pub netns: String,
    pub program: Option<String>,
    pub pid: Option<u32>,
    pub start_time: Option<u64>,
    pub control: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub ports: Vec<PortState>,
    /// The program's command line, for `lab restart`.
    #[serde(default)]
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentState {
    pub name: String,
    pub subnet: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureState {
    pub target: String,
    pub file: PathBuf,
    pub pid: u32,
    pub start_time: Option<u64>,
}

/// Everything a lab made, in the order it was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub prefix: String,
    pub name: String,
    pub topology: Option<PathBuf>,
    pub run_dir: PathBuf,
    pub fabric: String,
    /// Namespaces made (fabric first).
    pub namespaces: Vec<String>,
    pub segments: Vec<SegmentState>,
    pub nodes: Vec<NodeState>,
    #[serde(default)]
    pub captures: Vec<CaptureState>,
    /// The lab's PKI (`root.pem` for `curl --cacert`), if a node uses TLS.
    #[serde(default)]
    pub pki: Option<PathBuf>,
    /// Where programs write TLS secrets (SSLKEYLOGFILE), with `lab up --keylog`.
    #[serde(default)]
    pub keylog: Option<PathBuf>,
    /// The scheduling policy the programs run under (the topology's `scheduling`).
    #[serde(default)]
    pub scheduling: Scheduling,
}

pub fn run_dir(prefix: &str) -> PathBuf {
    Path::new(RUN_ROOT).join(prefix)
}

pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty()
        || prefix.len() > 24
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        bail!("prefix {prefix:?}: 1-24 of letters, digits, '-'");
    }
    Ok(())
}

impl LabState {
    pub fn load(prefix: &str) -> Result<Self> {
        let path = run_dir(prefix).join("state.json");
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "no lab with prefix {prefix:?} ({} not found)",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("corrupt state file {}", path.display()))
    }

    fn save(&self) -> Result<()> {
        let path = self.run_dir.join("state.json");
        let tmp = self.run_dir.join("state.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn node(&self, name: &str) -> Result<&NodeState> {
        self.nodes.iter().find(|n| n.name == name).with_context(|| {
            let names: Vec<_> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "lab {} has no node {name:?}; nodes: {}",
                self.prefix,
                names.join(", ")
            )
        })
    }

    /// The fabric-side interface for `node:port`, or a segment's bridge.
    pub fn capture_ifname(&self, target: &str) -> Result<(String, String)> {
        if let Some((node, port)) = target.split_once(':') {
            let n = self.node(node)?;
            let p = n
                .ports
                .iter()
                .find(|p| p.name == port)
                .with_context(|| format!("node {node} has no port {port:?}"))?;
            return Ok((
                p.ifname.clone(),
                format!("{node}:{port} on segment {}", p.segment),
            ));
        }
        let s = self
            .segments
            .iter()
            .find(|s| s.name == target)
            .with_context(|| {
                let names: Vec<_> = self.segments.iter().map(|s| s.name.as_str()).collect();
                format!(
                    "no segment {target:?} (segments: {}); or give NODE:PORT",
                    names.join(", ")
                )
            })?;
        Ok((s.name.clone(), format!("segment {}", s.name)))
    }
}

/// Options of `d11 lab up`.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    pub prefix: String,
    /// Directory holding the d11-* programs (default: beside the running executable).
    pub bin_dir: Option<PathBuf>,
    /// Capture every segment to DIR/<segment>.pcapng from the start.
    pub capture_dir: Option<PathBuf>,
    /// Programs write their ports' frames to DIR/<node>-<port>.pcapng, with decision notes.
    pub program_capture_dir: Option<PathBuf>,
    pub seed: u64,
    /// Programs append TLS secrets to this file (SSLKEYLOGFILE), for Wireshark.
    pub keylog: Option<PathBuf>,
}

fn tap_name(node: &str, port: &str, ni: usize, pi: usize) -> String {
    let n = format!("{node}-{port}");
    if n.len() <= 15 {
        n
    } else {
        format!("n{ni}p{pi}")
    }
}

fn bin_dir(opts: &UpOptions) -> Result<PathBuf> {
    if let Some(d) = &opts.bin_dir {
        return Ok(d.clone());
    }
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    Ok(exe
        .parent()
        .context("executable has no directory")?
        .to_path_buf())
}

/// Brings a lab up. On any failure, everything made so far is removed before the error returns.
pub fn up(topo: &Topology, topo_path: Option<&Path>, opts: &UpOptions) -> Result<LabState> {
    sys::require_root()?;
    validate_prefix(&opts.prefix)?;
    let dir = run_dir(&opts.prefix);
    if dir.join("state.json").exists() {
        bail!(
            "a lab with prefix {:?} is already up; `d11 lab down --prefix {}` first",
            opts.prefix,
            opts.prefix
        );
    }
    let bins = bin_dir(opts)?;
    for n in &topo.nodes {
        if let Some(p) = n.program() {
            if !bins.join(&p).exists() {
                bail!(
                    "node {}: role {:?} needs program {} in {} (build it with cargo build)",
                    n.name,
                    n.role,
                    p,
                    bins.display()
                );
            }
        }
    }
    for d in ["config", "ctl", "logs"] {
        fs::create_dir_all(dir.join(d))
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut st = LabState {
        prefix: opts.prefix.clone(),
        name: topo.name.clone(),
        topology: topo_path.map(|p| p.canonicalize().unwrap_or(p.to_path_buf())),
        run_dir: dir.clone(),
        fabric: format!("{}-{FABRIC}", opts.prefix),
        namespaces: Vec::new(),
        segments: Vec::new(),
        nodes: Vec::new(),
        captures: Vec::new(),
        pki: None,
        keylog: opts
            .keylog
            .as_ref()
            .map(|k| std::path::absolute(k).unwrap_or(k.clone())),
        scheduling: topo.scheduling,
    };
    st.save()?;
    match build(topo, opts, &bins, &mut st) {
        Ok(()) => Ok(st),
        Err(e) => {
            let _ = st.save();
            let _ = down(&opts.prefix);
            Err(e)
        }
    }
}

fn add_netns(st: &mut LabState, ns: &str) -> Result<()> {
    if sys::netns_exists(ns) {
        bail!("network namespace {ns} already exists and is not ours; choose another --prefix");
    }
    st.namespaces.push(ns.to_string());
    st.save()?;
    sys::ip(&["netns", "add", ns])?;
    let path = Path::new("/run/netns").join(ns);
    // No IPv6 anywhere in the lab unless asked: no router solicitations or ND in captures.
    sys::sysctl_in(&path, "net.ipv6.conf.all.disable_ipv6", "1")?;
    sys::sysctl_in(&path, "net.ipv6.conf.default.disable_ipv6", "1")?;
    sys::ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
    Ok(())
}

/// The names a node's certificate carries: its `tls.names`, then its addresses.
fn tls_names(n: &Node) -> Option<Vec<String>> {
    let tls = n.extra.get("tls")?;
    let mut names: Vec<String> = tls
        .get("names")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for p in &n.ports {
        names.extend(p.addresses.iter().map(|a| a.addr().to_string()));
    }
    Some(names)
}

/// Issues the lab's PKI if any node asks for TLS.
fn issue_pki(topo: &Topology, st: &mut LabState) -> Result<()> {
    let leaves: Vec<d11_tls::Leaf> = topo
        .nodes
        .iter()
        .filter_map(|n| {
            tls_names(n).map(|names| d11_tls::Leaf {
                stem: n.name.clone(),
                names,
            })
        })
        .collect();
    if leaves.is_empty() {
        return Ok(());
    }
    let dir = st.run_dir.join("pki");
    d11_tls::issue(&dir, &topo.name, &leaves).context("cannot issue the lab's certificates")?;
    st.pki = Some(dir);
    st.save()
}

fn build(topo: &Topology, opts: &UpOptions, bins: &Path, st: &mut LabState) -> Result<()> {
    issue_pki(topo, st)?;
    let fabric = st.fabric.clone();
    add_netns(st, &fabric)?;
    // Where br_netfilter is loaded (Docker loads it), bridged IPv4 goes through netfilter and
    // its header checks, which would drop malformed frames before our programs could count
    // them. A segment is a plain switch: turn that off in the fabric namespace (per namespace
    // since Linux 5.3; the files exist only while the module is loaded).
    let fabric_path = Path::new("/run/netns").join(&fabric);
    for key in [
        "bridge-nf-call-iptables",
        "bridge-nf-call-ip6tables",
        "bridge-nf-call-arptables",
    ] {
        if Path::new("/proc/sys/net/bridge").join(key).exists() {
            sys::sysctl_in(&fabric_path, &format!("net.bridge.{key}"), "0")?;
        }
    }
    for s in &topo.segments {
        st.segments.push(SegmentState {
            name: s.name.clone(),
            subnet: s.subnet.clone(),
        });
        st.save()?;
        // STP off (the default): ports forward at once. A switch, learning MACs, as the lab's
        // segments are switched Ethernet.
        sys::ip(&[
            "-n",
            &fabric,
            "link",
            "add",
            "name",
            &s.name,
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        if let Some(mtu) = s.mtu {
            sys::ip(&[
                "-n",
                &fabric,
                "link",
                "set",
                "dev",
                &s.name,
                "mtu",
                &mtu.to_string(),
            ])?;
        }
        sys::ip(&["-n", &fabric, "link", "set", "dev", &s.name, "up"])?;
    }
    // Captures start before any program does, so they hold every frame from the first one.
    if let Some(dir) = &opts.capture_dir {
        fs::create_dir_all(dir)?;
        for s in &topo.segments {
            let file = dir.join(format!("{}.pcapng", s.name));
            start_capture(st, &s.name, &file, bins)?;
        }
    }
    let mut used_ifnames: Vec<String> = topo.segments.iter().map(|s| s.name.clone()).collect();
    for (ni, n) in topo.nodes.iter().enumerate() {
        let ns = format!("{}-{}", opts.prefix, n.name);
        add_netns(st, &ns)?;
        let mut ports = Vec::new();
        for (pi, p) in n.ports.iter().enumerate() {
            let mut ifname = tap_name(&n.name, &p.name, ni, pi);
            if used_ifnames.contains(&ifname) {
                ifname = format!("n{ni}p{pi}");
            }
            used_ifnames.push(ifname.clone());
            ports.push(PortState {
                name: p.name.clone(),
                segment: p.segment.clone(),
                ifname,
                addresses: p.addresses.iter().map(|a| a.to_string()).collect(),
            });
        }
        st.nodes.push(NodeState {
            name: n.name.clone(),
            role: n.role.clone(),
            netns: ns.clone(),
            program: n.program(),
            pid: None,
            start_time: None,
            control: None,
            log: None,
            ports,
            argv: Vec::new(),
        });
        st.save()?;
        if n.is_kernel() {
            setup_kernel_host(topo, n, st, ni)?;
        } else {
            start_program(topo, n, opts, bins, st, ni).map_err(|e| match &st.topology {
                Some(t) => e.context(format!("topology {}", t.display())),
                None => e,
            })?;
        }
    }
    Ok(())
}

fn segment_mtu(topo: &Topology, seg: &str) -> Option<u16> {
    topo.segments
        .iter()
        .find(|s| s.name == seg)
        .and_then(|s| s.mtu)
}

fn setup_kernel_host(topo: &Topology, n: &Node, st: &mut LabState, ni: usize) -> Result<()> {
    let fabric = st.fabric.clone();
    let ns = st.nodes[ni].netns.clone();
    for (pi, p) in n.ports.iter().enumerate() {
        let outer = st.nodes[ni].ports[pi].ifname.clone();
        sys::ip(&[
            "-n", &fabric, "link", "add", "name", &outer, "type", "veth", "peer", "name", &p.name,
            "netns", &ns,
        ])?;
        let mtu = p.mtu.or(segment_mtu(topo, &p.segment));
        if let Some(m) = mtu {
            let m = m.to_string();
            sys::ip(&["-n", &fabric, "link", "set", "dev", &outer, "mtu", &m])?;
            sys::ip(&["-n", &ns, "link", "set", "dev", &p.name, "mtu", &m])?;
        }
        sys::ip(&[
            "-n", &fabric, "link", "set", "dev", &outer, "master", &p.segment, "up",
        ])?;
        // Full checksums and no segmentation offload on the kernel host's NIC, so that what a
        // capture shows is what travels, and our programs receive complete frames; unless the
        // port asks for offloads (a benchmark of super-frames).
        let state = if p.offload { "on" } else { "off" };
        sys::run(
            "ip",
            &[
                "netns", "exec", &ns, "ethtool", "-K", &p.name, "tx", state, "tso", state, "gso",
                state, "gro", state,
            ],
        )
        .context("ethtool is needed for kernel hosts (apt-get install ethtool)")?;
        for a in &p.addresses {
            sys::ip(&["-n", &ns, "addr", "add", &a.to_string(), "dev", &p.name])?;
        }
        sys::ip(&["-n", &ns, "link", "set", "dev", &p.name, "up"])?;
    }
    if let Some(gw) = n.gateway {
        sys::ip(&["-n", &ns, "route", "add", "default", "via", &gw.to_string()])?;
    }
    // `dns = ["ADDRESS", ...]`: the host's resolver configuration, which `ip netns exec`
    // (and so `d11 lab exec`) mounts over /etc/resolv.conf.
    if let Some(v) = n.extra.get("dns") {
        let servers: Vec<std::net::Ipv4Addr> = match v {
            serde_json::Value::String(s) => vec![s.parse()],
            serde_json::Value::Array(a) => {
                a.iter().map(|x| x.as_str().unwrap_or("").parse()).collect()
            }
            _ => vec!["".parse()],
        }
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|_| {
            anyhow::anyhow!(
                "node {}: dns must be an IPv4 address or a list of them",
                n.name
            )
        })?;
        let text: String = servers
            .iter()
            .map(|s| format!("nameserver {s}\n"))
            .collect();
        write_resolv_conf(&ns, &format!("{RESOLV_MARK} for node {}\n{text}", n.name))?;
    }
    for r in &n.routes {
        let mut args = vec![
            "-n".to_string(),
            ns.clone(),
            "route".into(),
            "add".into(),
            r.prefix.to_string(),
        ];
        if let Some(v) = r.via {
            args.extend(["via".into(), v.to_string()]);
        }
        if let Some(p) = &r.port {
            args.extend(["dev".into(), p.clone()]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        sys::ip(&a)?;
    }
    Ok(())
}

/// The first line of the resolver configurations the lab writes (only those are removed).
const RESOLV_MARK: &str = "# written by d11 lab";

/// `/etc/netns/NETNS/resolv.conf`, which `ip netns exec` mounts over /etc/resolv.conf.
fn resolv_conf(ns: &str) -> PathBuf {
    Path::new("/etc/netns").join(ns).join("resolv.conf")
}

fn write_resolv_conf(ns: &str, text: &str) -> Result<()> {
    let path = resolv_conf(ns);
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Removes a resolver configuration of the lab's (the lab's mark, or a phone's), and its
/// directory once empty; anything else is left alone.
fn remove_resolv_conf(ns: &str) {
    let path = resolv_conf(ns);
    let ours = fs::read_to_string(&path)
        .is_ok_and(|t| t.starts_with(RESOLV_MARK) || t.starts_with("# The DNS server of "));
    if ours {
        let _ = fs::remove_file(&path);
    }
    if let Some(d) = path.parent() {
        let _ = fs::remove_dir(d); // only if empty
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors that we take ownership of.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error()).context("pipe");
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Spawns `cmd` inside namespace `ns`, in its own session, with a readiness pipe on fd 3, and
/// waits for "READY". Returns the pid.
/// What a program that exited said was wrong, on one line: its last `PROGRAM: error: ...`
/// (without the path of the JSON config the lab wrote: the key it names is the topology's),
/// else its last line.
fn program_error(log: &str) -> String {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(": error: "))
        .map(|l| l.split_once(": error: ").map_or(l, |(_, e)| e))
        .or_else(|| log.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("(nothing in its log)")
        .trim();
    match line.strip_prefix("config ") {
        Some(rest) if rest.contains(".json: ") => rest
            .split_once(".json: ")
            .map_or(line, |(_, e)| e)
            .to_string(),
        _ => line.to_string(),
    }
}

/// Starts `cmd` in the namespace at `ns_path` under `policy` and waits for it to write READY
/// on descriptor 3.
fn spawn_ready(
    mut cmd: Command,
    ns_path: &Path,
    log: &Path,
    what: &str,
    policy: Scheduling,
) -> Result<u32> {
    let nsfd = File::open(ns_path).with_context(|| format!("open {}", ns_path.display()))?;
    let (r, w) = pipe()?;
    let logf = OpenOptions::new().create(true).append(true).open(log)?;
    cmd.stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    let ns_raw = nsfd.as_raw_fd();
    let w_raw = w.as_raw_fd();
    let sched = match policy {
        Scheduling::Normal => libc::SCHED_OTHER,
        Scheduling::Batch => libc::SCHED_BATCH,
    };
    // SAFETY: only async-signal-safe calls (setns, sched_setscheduler, setsid, dup2) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns_raw, libc::CLONE_NEWNET) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Inherited by every thread the program starts (sched(7)).
            let param = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(0, sched, &param) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Own session: a Ctrl-C meant for the shell that ran `d11 lab up` does not reach it.
            libc::setsid();
            if libc::dup2(w_raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    drop(w); // our copy: EOF on `r` now means the child closed or died
    let pid = child.id();
    // The child is reaped by `lab down` (it outlives us); do not wait on it here.
    std::mem::forget(child);
    let mut rf = File::from(r);
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "{what} did not report ready within {READY_TIMEOUT:?}; see {}",
                log.display()
            );
        }
        let mut pfd = libc::pollfd {
            fd: rf.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        if n < 0 {
            continue;
        }
        if n == 0 {
            continue;
        }
        let mut b = [0u8; 64];
        let k = rf.read(&mut b).unwrap_or(0);
        if k == 0 {
            let text = fs::read_to_string(log).unwrap_or_default();
            bail!(
                "{what} exited before it was ready: {} (log: {})",
                program_error(&text),
                log.display()
            );
        }
        got.extend_from_slice(&b[..k]);
        if got.starts_with(b"READY") {
            return Ok(pid);
        }
    }
}

fn start_program(
    topo: &Topology,
    n: &Node,
    opts: &UpOptions,
    bins: &Path,
    st: &mut LabState,
    ni: usize,
) -> Result<()> {
    let dir = st.run_dir.clone();
    let prog = n.program().expect("not a kernel host");
    let cfg_path = dir.join("config").join(format!("{}.json", n.name));
    let mut cfg = n.program_config();
    // Ports inherit their segment's MTU unless they set their own.
    if let Some(ports) = cfg.get_mut("ports").and_then(|p| p.as_array_mut()) {
        for (p, tp) in ports.iter_mut().zip(&n.ports) {
            if tp.mtu.is_none() {
                if let Some(m) = segment_mtu(topo, &tp.segment) {
                    p["mtu"] = serde_json::json!(m);
                }
            }
        }
    }
    // Files a node names (keys ending in `_file`) are relative to the topology file.
    if let (Some(obj), Some(base)) = (
        cfg.as_object_mut(),
        st.topology.as_ref().and_then(|t| t.parent()),
    ) {
        for (k, v) in obj.iter_mut() {
            if let (true, Some(p)) = (k.ends_with("_file"), v.as_str()) {
                if Path::new(p).is_relative() {
                    *v = serde_json::json!(base.join(p));
                }
            }
        }
    }
    // A relative `database` (the order store's and the inventory's SQLite files) or
    // `data_dir` (the origin's objects) lives in the lab's run directory, so it survives
    // `lab restart` and goes with `lab down`.
    for k in ["database", "data_dir"] {
        if let Some(v) = cfg.get_mut(k) {
            if let Some(p) = v.as_str().filter(|p| Path::new(p).is_relative()) {
                let data = dir.join("data");
                fs::create_dir_all(&data)?;
                *v = serde_json::json!(data.join(p));
            }
        }
    }
    // TLS nodes get the certificate the lab issued for them.
    if let (Some(pki), Some(tls)) = (&st.pki, cfg.get_mut("tls").and_then(|t| t.as_object_mut())) {
        tls.entry("cert")
            .or_insert_with(|| serde_json::json!(pki.join(format!("{}.pem", n.name))));
        tls.entry("key")
            .or_insert_with(|| serde_json::json!(pki.join(format!("{}.key", n.name))));
    }
    // A phone in modem mode writes its namespace's resolver configuration at attach.
    if n.role == "ue" && cfg.get("mode").and_then(|m| m.as_str()) == Some("modem") {
        let ns = &st.nodes[ni].netns;
        let path = resolv_conf(ns);
        if let Some(d) = path.parent() {
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        if let Some(obj) = cfg.as_object_mut() {
            obj.entry("resolv_conf")
                .or_insert_with(|| serde_json::json!(path));
        }
    }
    // A client app (a phone's) trusts the lab's root unless told otherwise.
    if let (Some(pki), Some(app)) = (&st.pki, cfg.get_mut("app").and_then(|t| t.as_object_mut())) {
        app.entry("cacert")
            .or_insert_with(|| serde_json::json!(pki.join("root.pem")));
    }
    fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg)?)?;
    let control = dir.join("ctl").join(format!("{}.sock", n.name));
    let log = dir.join("logs").join(format!("{}.log", n.name));
    let mut cmd = Command::new(bins.join(&prog));
    cmd.arg("--node").arg(&n.name);
    cmd.arg("--config").arg(&cfg_path);
    cmd.arg("--control").arg(&control);
    cmd.arg("--fabric")
        .arg(Path::new("/run/netns").join(&st.fabric));
    cmd.arg("--ready-fd").arg("3");
    cmd.arg("--seed").arg(opts.seed.to_string());
    for (p, ps) in n.ports.iter().zip(&st.nodes[ni].ports) {
        cmd.arg("--port")
            .arg(format!("{}={}@{}", p.name, ps.ifname, p.segment));
        for i in &p.impair {
            cmd.arg("--impair").arg(format!("{}:{}", p.name, i));
        }
        if p.offload {
            cmd.arg("--offload").arg(&p.name);
        }
    }
    if let Some(d) = &opts.program_capture_dir {
        fs::create_dir_all(d)?;
        cmd.arg("--capture-dir").arg(d);
    }
    match &st.keylog {
        Some(k) => cmd.env("SSLKEYLOGFILE", k),
        None => cmd.env_remove("SSLKEYLOGFILE"),
    };
    st.nodes[ni].control = Some(control);
    st.nodes[ni].log = Some(log.clone());
    st.nodes[ni].argv = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    st.save()?;
    let ns_path = Path::new("/run/netns").join(&st.nodes[ni].netns);
    let pid = spawn_ready(
        cmd,
        &ns_path,
        &log,
        &format!("node {} ({prog})", n.name),
        st.scheduling,
    )?;
    st.nodes[ni].pid = Some(pid);
    st.nodes[ni].start_time = sys::start_time(pid);
    st.save()?;
    Ok(())
}

/// Starts `d11 lab capture TARGET -w FILE` in the background, in the fabric namespace.
pub fn start_capture(st: &mut LabState, target: &str, file: &Path, bins: &Path) -> Result<()> {
    let (ifname, _) = st.capture_ifname(target)?;
    let mut cmd = Command::new(bins.join("d11"));
    cmd.args([
        "lab",
        "capture-raw",
        &ifname,
        "--ready-fd",
        "3",
        "--name",
        target,
        "-w",
    ])
    .arg(file);
    let log = st
        .run_dir
        .join("logs")
        .join(format!("capture-{}.log", target.replace(':', "-")));
    let ns_path = Path::new("/run/netns").join(&st.fabric);
    let pid = spawn_ready(
        cmd,
        &ns_path,
        &log,
        &format!("capture of {target}"),
        Scheduling::Normal,
    )?;
    st.captures.push(CaptureState {
        target: target.to_string(),
        file: file.to_path_buf(),
        pid,
        start_time: sys::start_time(pid),
    });
    st.save()
}

/// Restarts the program of `node` (as a crash and reboot would): SIGTERM (SIGKILL after 5 s),
/// then the same command line again; returns once it reports ready. Its ports come back on
/// the same segments; what it kept in memory is gone.
/// Takes segment `segment` down (`up` false: nothing crosses it any more, as a cut cable) or
/// back up. The segment's bridge stays, so its capture goes on and shows the frames that go
/// into the cut; an nftables rule in the fabric drops what the bridge would forward.
pub fn link(prefix: &str, segment: &str, up: bool) -> Result<()> {
    sys::require_root()?;
    let st = LabState::load(prefix)?;
    if !st.segments.iter().any(|s| s.name == segment) {
        let names: Vec<_> = st.segments.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "lab {prefix} has no segment {segment:?} (segments: {})",
            names.join(", ")
        );
    }
    let fabric = st.fabric.as_str();
    nft(
        fabric,
        "add table bridge d11\nadd chain bridge d11 forward { type filter hook forward priority 0; policy accept; }\n",
    )?;
    let tag = format!("cut {segment}");
    let rules = nft_list(fabric)?;
    let handles: Vec<String> = rules
        .lines()
        .filter(|l| l.contains(&format!("comment \"{tag}\"")))
        .filter_map(|l| l.rsplit("# handle ").next().map(|h| h.trim().to_string()))
        .collect();
    if up {
        for h in handles {
            nft(
                fabric,
                &format!("delete rule bridge d11 forward handle {h}\n"),
            )?;
        }
    } else if handles.is_empty() {
        // The segment's ports (the fabric's side of each node's port on it).
        let ports: Vec<String> = st
            .nodes
            .iter()
            .flat_map(|n| n.ports.iter())
            .filter(|p| p.segment == segment)
            .map(|p| format!("\"{}\"", p.ifname))
            .collect();
        if ports.is_empty() {
            bail!("segment {segment} has no ports");
        }
        nft(
            fabric,
            &format!(
                "add rule bridge d11 forward iifname {{ {} }} drop comment \"{tag}\"\n",
                ports.join(", ")
            ),
        )?;
    }
    Ok(())
}

/// Runs an nftables script in namespace `ns`.
fn nft(ns: &str, script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("nft is needed for lab link (apt-get install nftables)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let o = child.wait_with_output()?;
    if !o.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

/// The lab's link rules in namespace `ns`, with their handles.
fn nft_list(ns: &str) -> Result<String> {
    let o = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "-a", "list", "chain", "bridge", "d11", "forward",
        ])
        .output()
        .context("nft is needed for lab link (apt-get install nftables)")?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

pub fn restart(prefix: &str, node: &str) -> Result<u32> {
    sys::require_root()?;
    let mut st = LabState::load(prefix)?;
    let ni = st
        .nodes
        .iter()
        .position(|n| n.name == node)
        .ok_or_else(|| anyhow::anyhow!("lab {prefix} has no node {node:?}"))?;
    let n = st.nodes[ni].clone();
    if n.argv.is_empty() {
        bail!("node {node} runs no program of ours (a kernel host): nothing to restart");
    }
    if let Some(pid) = n.pid {
        if sys::alive(pid, n.start_time) {
            sys::kill(pid, libc::SIGTERM);
            let stuck = sys::wait_exit(&[pid], Duration::from_secs(5));
            for &p in &stuck {
                sys::kill(p, libc::SIGKILL);
            }
            sys::wait_exit(&stuck, Duration::from_secs(5));
        }
    }
    let mut cmd = Command::new(&n.argv[0]);
    cmd.args(&n.argv[1..]);
    match &st.keylog {
        Some(k) => cmd.env("SSLKEYLOGFILE", k),
        None => cmd.env_remove("SSLKEYLOGFILE"),
    };
    let log = n
        .log
        .clone()
        .unwrap_or_else(|| st.run_dir.join("logs").join(format!("{node}.log")));
    let ns_path = Path::new("/run/netns").join(&n.netns);
    let pid = spawn_ready(cmd, &ns_path, &log, &format!("node {node}"), st.scheduling)?;
    st.nodes[ni].pid = Some(pid);
    st.nodes[ni].start_time = sys::start_time(pid);
    st.save()?;
    Ok(pid)
}

/// Removes the lab with `prefix`: stops its programs (SIGTERM, then SIGKILL after 5 s),
/// deletes its namespaces (and with them bridges, TAPs, veths) and its run directory. Touches
/// only what the state file records. Idempotent.
pub fn down(prefix: &str) -> Result<DownReport> {
    sys::require_root()?;
    validate_prefix(prefix)?;
    let dir = run_dir(prefix);
    let st = match LabState::load(prefix) {
        Ok(s) => s,
        Err(_) if !dir.exists() => return Ok(DownReport::default()),
        Err(e) => return Err(e),
    };
    let mut report = DownReport::default();
    // Every process inside our namespaces: programs, captures, and whatever `lab exec` left.
    let mut pids: Vec<u32> = st
        .namespaces
        .iter()
        .flat_map(|ns| sys::netns_pids(ns))
        .collect();
    for n in &st.nodes {
        if let Some(pid) = n.pid {
            if sys::alive(pid, n.start_time) && !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    for c in &st.captures {
        if sys::alive(c.pid, c.start_time) && !pids.contains(&c.pid) {
            pids.push(c.pid);
        }
    }
    pids.retain(|&p| p != std::process::id());
    for &p in &pids {
        sys::kill(p, libc::SIGTERM);
    }
    let stuck = sys::wait_exit(&pids, Duration::from_secs(5));
    for &p in &stuck {
        sys::kill(p, libc::SIGKILL);
    }
    sys::wait_exit(&stuck, Duration::from_secs(5));
    report.processes = pids.len();
    report.killed = stuck.len();
    for ns in &st.namespaces {
        remove_resolv_conf(ns);
    }
    // Nodes first, the fabric last.
    for ns in st.namespaces.iter().rev() {
        if sys::netns_exists(ns) {
            sys::ip(&["netns", "del", ns])?;
            report.namespaces += 1;
        }
    }
    fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    Ok(report)
}

#[derive(Debug, Default, Serialize)]
pub struct DownReport {
    pub processes: usize,
    pub killed: usize,
    pub namespaces: usize,
}

/// Prefixes of the labs that have a run directory.
pub fn list() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(RUN_ROOT)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().join("state.json").exists())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A node's status for `d11 lab status`.
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: String,
    pub netns: String,
    pub state: &'static str,
    pub pid: Option<u32>,
    pub ports: Vec<String>,
}

pub fn status(st: &LabState) -> Vec<NodeStatus> {
    st.nodes
        .iter()
        .map(|n| {
            let state = if n.program.is_none() {
                if sys::netns_exists(&n.netns) {
                    "kernel"
                } else {
                    "missing"
                }
            } else {
                match n.pid {
                    Some(pid) if sys::alive(pid, n.start_time) => "running",
                    Some(_) => "dead",
                    None => "not started",
                }
            };
            NodeStatus {
                name: n.name.clone(),
                role: n.role.clone(),
                netns: n.netns.clone(),
                state,
                pid: n.pid,
                ports: n
                    .ports
                    .iter()
                    .map(|p| {
                        if p.addresses.is_empty() {
                            format!("{}@{}", p.name, p.segment)
                        } else {
                            format!("{}@{} {}", p.name, p.segment, p.addresses.join(","))
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit() {
        assert_eq!(tap_name("r1", "eth0", 0, 0), "r1-eth0");
        assert_eq!(tap_name("cdn-parent-x", "eth0", 3, 1), "n3p1");
        assert!(validate_prefix("d11").is_ok());
        assert!(validate_prefix("a/b").is_err());
    }
}
