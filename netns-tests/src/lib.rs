//! The root test harness: each test builds its own lab under a unique prefix and tears it down
//! on every exit path: `Drop` on success and on panic, and a signal watcher on SIGINT/SIGTERM
//! (`./scripts/test` also sweeps the run's prefixes on exit, in case of SIGKILL).
//!
//! Tests drive the real binaries (`d11`, `d11-router`, ...) from the workspace's target
//! directory and read what happened from `d11 show` and from captures decoded by tshark.

use anyhow::{bail, Context, Result};
use d11_lab::client::Client;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);
static WATCHER: Once = Once::new();

/// The directory holding the built binaries: `D11_BIN_DIR`, else this test's target dir.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("D11_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/debug/deps/<test> -> target/debug
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn d11() -> Command {
    Command::new(bin_dir().join("d11"))
}

/// Fails the test clearly unless we are root with the tools the tests need.
pub fn require_root() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("netns tests need root (namespaces, TAPs): run `sudo ./scripts/test`");
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe.
        unsafe {
            libc::write(fd, [1u8].as_ptr().cast(), 1);
        }
    }
}

/// On SIGINT or SIGTERM: tear down every live lab of this process, then exit.
fn install_watcher() {
    WATCHER.call_once(|| {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        SIGNAL_PIPE.store(fds[1], Ordering::SeqCst);
        // SAFETY: the handler only writes to a pipe.
        unsafe {
            libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        }
        let rfd = fds[0];
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            // SAFETY: blocking read of one byte from our pipe.
            let n = unsafe { libc::read(rfd, b.as_mut_ptr().cast(), 1) };
            if n == 1 {
                let live = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
                for p in live {
                    let _ = d11().args(["--prefix", &p, "lab", "down"]).output();
                }
                std::process::exit(130);
            }
        });
    });
}

/// A lab brought up for one test; removed when dropped.
pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
    /// Leave `dir` to a [`LabDir`] (see [`Lab::stop`]).
    hand_over_dir: bool,
}

/// A lab's directory (topology, captures) once the lab is down, for reading captures the
/// programs flushed when they stopped; removed when dropped, kept if the test failed.
pub struct LabDir(pub PathBuf);

/// A process a test started (a server in a node's namespace): killed and reaped when the test
/// ends, a failed assertion's exit included.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for LabDir {
    fn drop(&mut self) {
        remove_unless_failed(&self.0);
    }
}

/// A fresh scratch directory for one test (`d11-NAME-PID-N` in the temporary directory),
/// removed when dropped unless the test failed.
pub fn scratch(name: &str) -> LabDir {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("d11-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    LabDir(dir)
}

fn remove_unless_failed(dir: &Path) {
    if std::thread::panicking() {
        eprintln!("the failed test's files are kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Lab {
    /// Brings up `topology` (TOML text) under a fresh prefix, with every segment captured.
    pub fn up(topology: &str) -> Lab {
        Self::up_with(topology, &[])
    }

    pub fn up_with(topology: &str, extra_args: &[&str]) -> Lab {
        require_root();
        install_watcher();
        let tag = std::env::var("D11_TEST_TAG").unwrap_or_else(|_| "t".into());
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{tag}-{}x{n}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("d11-test-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let topo = dir.join("topology.toml");
        std::fs::write(&topo, topology).expect("write topology");
        LIVE.lock().unwrap().push(prefix.clone());
        let lab = Lab {
            prefix,
            dir,
            hand_over_dir: false,
        };
        let out = d11()
            .args(["--prefix", &lab.prefix, "lab", "up"])
            .arg(&topo)
            .arg("--capture")
            .arg(lab.dir.join("pcap"))
            .args(extra_args)
            .output()
            .expect("run d11 lab up");
        if !out.status.success() {
            panic!("lab up failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        lab
    }

    /// Takes the lab down (its programs flush their captures); its files stay until the
    /// returned [`LabDir`] is dropped.
    pub fn stop(mut self) -> LabDir {
        self.hand_over_dir = true;
        let dir = LabDir(self.dir.clone());
        drop(self);
        dir
    }

    pub fn pcap(&self, segment: &str) -> PathBuf {
        self.dir.join("pcap").join(format!("{segment}.pcapng"))
    }

    /// The lab client (`d11_lab::client`) the journey and the CLI use too.
    pub fn client(&self) -> Client {
        Client::open(&self.prefix).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Runs `cmd` in `node`'s namespace.
    pub fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        self.client()
            .exec(node, cmd)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`exec`](Self::exec), and fails the test unless the command succeeded.
    pub fn exec_ok(&self, node: &str, cmd: &[&str]) -> String {
        self.client()
            .run(node, cmd)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// traceroute from `node` (kernel host) to `dst`, one probe per hop: the hop addresses
    /// (`*` for a silent hop), and the whole output for messages.
    pub fn traceroute(&self, node: &str, dst: &str) -> (Vec<String>, String) {
        let out = self.exec_ok(node, &["traceroute", "-n", "-q", "1", "-w", "2", dst]);
        let hops = out
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect();
        (hops, out)
    }

    /// `d11 show NODE TABLE`.
    pub fn show(&self, node: &str, table: &str) -> Value {
        self.client()
            .show(node, Some(table))
            .unwrap_or_else(|e| panic!("d11 show {node} {table}: {e:#}"))
    }

    /// Asks `node` for `table` until `done` holds of it (a state to reach, such as a phone's
    /// attach), at most `secs` seconds; returns it, or panics with the last answer.
    pub fn wait_show(
        &self,
        node: &str,
        table: &str,
        secs: u64,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.client()
            .wait_show(node, table, std::time::Duration::from_secs(secs), done)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn counter(&self, node: &str, name: &str) -> u64 {
        self.client()
            .counter(node, name)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn status(&self) -> Value {
        let o = d11()
            .args(["--prefix", &self.prefix, "lab", "status", "--json"])
            .output()
            .expect("status");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("status JSON")
    }

    /// The pid of `node`'s program.
    pub fn pid(&self, node: &str) -> i32 {
        let pid = self.client().pid(node).unwrap_or_else(|e| panic!("{e:#}"));
        i32::try_from(pid).expect("a pid fits an i32")
    }

    /// Sends `sig` to `node`'s program (SIGKILL, SIGSTOP, ...).
    pub fn signal(&self, node: &str, sig: i32) {
        // SAFETY: a plain kill(2) of a process this lab started.
        assert_eq!(unsafe { libc::kill(self.pid(node), sig) }, 0);
    }

    /// `d11 lab restart NODE`: returns once the program is ready again.
    pub fn restart(&self, node: &str) {
        let o = d11()
            .args(["--prefix", &self.prefix, "lab", "restart", node])
            .output()
            .expect("d11 lab restart");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// `d11 lab rpc SEGMENT -- --address ADDRESS ARGS...`, ready to run or spawn.
    pub fn rpc_command(&self, segment: &str, address: &str, args: &[&str]) -> Command {
        let mut c = d11();
        c.args([
            "--prefix",
            &self.prefix,
            "lab",
            "rpc",
            segment,
            "--",
            "--address",
            address,
        ])
        .args(args);
        c
    }

    /// [`rpc_command`](Self::rpc_command), run: the summary it prints.
    pub fn rpc(&self, segment: &str, address: &str, args: &[&str]) -> Value {
        let o = self
            .rpc_command(segment, address, args)
            .output()
            .expect("d11 lab rpc");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("d11-rpc-call's JSON")
    }

    /// The MAC of `node`'s `port` as its program reports it.
    pub fn mac(&self, node: &str, port: &str) -> String {
        self.client()
            .mac(node, port)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Sends `payload` as one UDP datagram from kernel host `node` to `dst`:`port` (nc; the
    /// bytes go through printf's octal escapes, so any octet is fine).
    pub fn udp_send(&self, node: &str, dst: &str, port: u16, payload: &[u8]) {
        let esc: String = payload.iter().map(|b| format!("\\{b:03o}")).collect();
        self.exec_ok(
            node,
            &[
                "sh",
                "-c",
                &format!("printf '{esc}' | nc -u -w 1 -q 1 {dst} {port}"),
            ],
        );
    }

    /// Starts `openssl s_server -WWW` on kernel host `node`, port 443, with the certificate the
    /// lab issued for it (the node needs `tls = { names = [...] }`), serving the files of
    /// `dir`; returns once it listens (it prints ACCEPT). Kill it when done.
    pub fn openssl_www(&self, node: &str, dir: &Path) -> Child {
        let pki = format!("/run/d11/{}/pki", self.prefix);
        let mut server = Command::new("ip")
            .args(["netns", "exec", &format!("{}-{node}", self.prefix)])
            .args(["openssl", "s_server", "-WWW", "-accept", "443"])
            .args(["-cert", &format!("{pki}/{node}.pem")])
            .args(["-key", &format!("{pki}/{node}.key")])
            .args(["-cert_chain", &format!("{pki}/intermediate.pem")])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let mut out = BufReader::new(server.stdout.take().expect("stdout"));
        let mut line = String::new();
        while !line.contains("ACCEPT") {
            line.clear();
            let n = out.read_line(&mut line).expect("read s_server");
            assert!(n > 0, "openssl s_server exited before ACCEPT");
        }
        server
    }

    /// Starts capturing `target` (segment or NODE:PORT); returns once the capture is bound.
    pub fn capture(&self, target: &str) -> Capture {
        let file = self
            .dir
            .join(format!("cap-{}.pcapng", target.replace(':', "-")));
        let mut child = d11()
            .args(["--prefix", &self.prefix, "lab", "capture", target, "-w"])
            .arg(&file)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start capture");
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().expect("stderr"))
            .read_line(&mut line)
            .expect("capture readiness line");
        assert!(line.contains("capturing"), "capture did not start: {line}");
        Capture { child, file }
    }

    /// Removes the lab now (also done on drop); returns `d11 lab down`'s output.
    pub fn down(&self) -> Output {
        d11()
            .args(["--prefix", &self.prefix, "lab", "down"])
            .output()
            .expect("lab down")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let o = self.down();
        if !o.status.success() {
            eprintln!(
                "lab down {} failed: {}",
                self.prefix,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        if let Ok(mut l) = LIVE.lock() {
            l.retain(|p| p != &self.prefix);
        }
        // Its topology and captures: kept for a failed test to be read, else removed (or
        // handed over by `stop`).
        if !self.hand_over_dir {
            remove_unless_failed(&self.dir);
        }
    }
}

/// A running `d11 lab capture`.
pub struct Capture {
    child: Child,
    pub file: PathBuf,
}

impl Capture {
    /// Freezes the capture process (SIGSTOP), once it is stopped: frames wait in its socket
    /// until [`resume`](Self::resume).
    pub fn pause(&self) {
        let pid = self.child.id();
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid as i32, libc::SIGSTOP);
        }
        // The state field follows the command's closing parenthesis in /proc/PID/stat.
        let state = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match state() {
                Some('T') => return,
                Some('Z' | 'X') | None => panic!("the capture (pid {pid}) exited"),
                _ if std::time::Instant::now() > deadline => {
                    panic!("the capture (pid {pid}) did not stop within 10 s")
                }
                _ => std::thread::yield_now(),
            }
        }
    }

    /// Lets a paused capture go on (SIGCONT).
    pub fn resume(&self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGCONT);
        }
    }

    /// Stops the capture (SIGTERM; it flushes and exits) and returns the file.
    pub fn stop(mut self) -> PathBuf {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        self.file.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs tshark over `file` with a display filter and returns the chosen fields per packet.
pub fn tshark_fields(
    file: &Path,
    filter: &str,
    fields: &[&str],
    extra: &[&str],
) -> Vec<Vec<String>> {
    d11_lab::tshark::Tshark::read(file)
        .args(extra)
        .fields(filter, fields)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Frames tshark marks malformed or with an error-level expert note.
pub fn malformed(file: &Path, extra: &[&str]) -> Vec<String> {
    d11_lab::tshark::Tshark::read(file)
        .args(extra)
        .malformed()
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Sends raw frames out of `ifname` in the network namespace `netns` (AF_PACKET), as a
/// misbehaving neighbour would.
pub fn inject(netns: &str, ifname: &str, frames: &[Vec<u8>]) -> Result<()> {
    let ns = PathBuf::from("/run/netns").join(netns);
    let ifname = ifname.to_string();
    let frames = frames.to_vec();
    std::thread::spawn(move || -> Result<()> {
        let nsf = std::fs::File::open(&ns).with_context(|| format!("open {}", ns.display()))?;
        // SAFETY: this thread alone moves into the namespace and ends afterwards.
        if unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        let sock = d11_netdev::packet::PacketSocket::open(&ifname, false)
            .with_context(|| format!("AF_PACKET socket on {ifname}"))?;
        for f in &frames {
            sock.send(f)
                .with_context(|| format!("sendto ({} bytes)", f.len()))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("inject thread panicked"))?
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn mac_bytes(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(s.split(':')) {
        *o = u8::from_str_radix(p, 16).expect("hex");
    }
    m
}

/// tshark prints numbers in decimal or hex and booleans as 1/0 or True/False, depending on the
/// field and version: one canonical decimal form for comparisons.
pub fn num(s: &str) -> String {
    let l = s.trim().to_ascii_lowercase();
    if let Some(h) = l.strip_prefix("0x") {
        if let Ok(v) = u64::from_str_radix(h, 16) {
            return v.to_string();
        }
    }
    match l.as_str() {
        "true" => "1".into(),
        "false" => "0".into(),
        _ => l,
    }
}

/// Waits until process `pid` exits (a pidfd becomes readable), at most `timeout`.
pub fn wait_exit(pid: u32, timeout: std::time::Duration) -> bool {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
    if fd < 0 {
        return true; // already gone
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd; then we close our descriptor.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    unsafe { libc::close(fd) };
    n == 1
}

/// An Ethernet frame (padded to 60 octets).
pub fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// An IPv4 packet (DF, TTL 64) around `payload`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut ip = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    d11_wire::fill_ipv4_checksum(&mut ip[..20]);
    ip.extend_from_slice(payload);
    ip
}

/// An IPv4/UDP packet with its checksum.
pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    pseudo.extend_from_slice(&u);
    let c = d11_wire::internet_checksum(&pseudo);
    u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    ipv4(src, dst, 17, &u)
}
