//! One way to ask a running lab things, for the journey, the CLI and the netns tests: run a
//! command in a node's namespace, read a program's table (`d11 show`), a port's MAC and
//! address, a node's default TTL, wait until a state is reached, count malformed frames in a
//! lab's captures.

use crate::tshark::Tshark;
use crate::{LabState, NodeState};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A running lab, as its state file describes it.
#[derive(Debug, Clone)]
pub struct Client {
    pub state: LabState,
}

impl Client {
    /// The lab with this prefix (its state file under /run/d11).
    pub fn open(prefix: &str) -> Result<Self> {
        Ok(Self::new(LabState::load(prefix)?))
    }

    pub fn new(state: LabState) -> Self {
        Self { state }
    }

    pub fn node(&self, name: &str) -> Result<&NodeState> {
        self.state.node(name)
    }

    /// `cmd` to run in `node`'s namespace (`ip netns exec`), not started.
    pub fn command<S: AsRef<OsStr>>(&self, node: &str, cmd: &[S]) -> Result<Command> {
        let n = self.node(node)?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &n.netns]).args(cmd);
        Ok(c)
    }

    /// Runs `cmd` in `node`'s namespace; its output, whatever its status.
    pub fn exec<S: AsRef<OsStr>>(&self, node: &str, cmd: &[S]) -> Result<Output> {
        self.command(node, cmd)?
            .output()
            .context("cannot run ip netns exec")
    }

    /// Runs `cmd` in `node`'s namespace; its standard output, or an error with both outputs
    /// unless it succeeded.
    pub fn run<S: AsRef<OsStr>>(&self, node: &str, cmd: &[S]) -> Result<String> {
        let o = self.exec(node, cmd)?;
        if !o.status.success() {
            let words: Vec<_> = cmd.iter().map(|s| s.as_ref().to_string_lossy()).collect();
            bail!(
                "`{}` in {node} failed ({}): {}{}",
                words.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// A program's table (`d11 show NODE TABLE`), or its list of tables with `None`.
    pub fn show(&self, node: &str, table: Option<&str>) -> Result<Value> {
        let sock = self.node(node)?.control.as_ref().with_context(|| {
            format!(
                "node {node} is a kernel host: use `d11 lab exec {node} -- ip addr` and friends"
            )
        })?;
        d11_element::control::query(sock, table)
    }

    /// One of a program's counters.
    pub fn counter(&self, node: &str, name: &str) -> Result<u64> {
        self.show(node, Some("counters"))?[name]
            .as_u64()
            .with_context(|| format!("{node} has no counter {name}"))
    }

    /// The MAC of `node`'s `port`: as its program reports it, or the kernel's for a kernel
    /// host.
    pub fn mac(&self, node: &str, port: &str) -> Result<String> {
        if self.node(node)?.control.is_none() {
            let out = self.run(node, &["ip", "-j", "link", "show", "dev", port])?;
            let v: Value = serde_json::from_str(&out).context("ip -j link")?;
            return v[0]["address"]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("{node} has no interface {port}"));
        }
        self.show(node, Some("interfaces"))?
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == port))
            .and_then(|i| i["mac"].as_str())
            .map(str::to_string)
            .with_context(|| format!("{node} has no interface {port}"))
    }

    /// The TTL `node` gives the packets it sends: its program's, or the kernel's sysctl.
    pub fn default_ttl(&self, node: &str) -> Result<u8> {
        if self.node(node)?.control.is_none() {
            return self
                .run(node, &["cat", "/proc/sys/net/ipv4/ip_default_ttl"])?
                .trim()
                .parse()
                .context("ip_default_ttl");
        }
        self.show(node, Some("interfaces"))?[0]["default_ttl"]
            .as_u64()
            .and_then(|t| u8::try_from(t).ok())
            .with_context(|| format!("{node} reports no default_ttl"))
    }

    /// The first address of `node`'s `port`, without its prefix length.
    pub fn addr(&self, node: &str, port: &str) -> Result<String> {
        let p = self
            .node(node)?
            .ports
            .iter()
            .find(|p| p.name == port)
            .with_context(|| format!("{node} has no port {port}"))?;
        p.addresses
            .first()
            .map(|a| a.split('/').next().unwrap_or(a).to_string())
            .with_context(|| format!("{node}:{port} has no address"))
    }

    /// The segment of `node`'s first port.
    pub fn segment(&self, node: &str) -> Result<String> {
        self.node(node)?
            .ports
            .first()
            .map(|p| p.segment.clone())
            .with_context(|| format!("{node} has no port"))
    }

    /// The pid of `node`'s program now (after a restart, the new one).
    pub fn pid(&self, node: &str) -> Result<u32> {
        LabState::load(&self.state.prefix)?
            .node(node)?
            .pid
            .with_context(|| format!("node {node} runs no program of ours"))
    }

    /// Asks `node` for `table` until `done` holds of it, at most `timeout`; returns it, or an
    /// error with the last answer.
    pub fn wait_show(
        &self,
        node: &str,
        table: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let mut last = Value::Null;
        let got = wait_until(timeout, || {
            last = self.show(node, Some(table))?;
            Ok(done(&last).then(|| last.clone()))
        });
        got.with_context(|| format!("{node} {table} did not get there: {last}"))
    }
}

/// Calls `poll` every 50 ms until it returns a value, at most `timeout` (a state to reach,
/// checked, never a fixed sleep); an error if the time runs out, or `poll`'s own.
pub fn wait_until<T>(timeout: Duration, mut poll: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = poll()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("not reached within {:.1} s", timeout.as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Frames tshark marks malformed or with an error-level expert note, per capture file of
/// `dir` (by segment name, sorted); `tshark` prepares the reader of each file (dissector
/// preferences, key log).
pub fn malformed(dir: &Path, tshark: impl Fn(&Path) -> Tshark) -> Result<Vec<(String, usize)>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcapng"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let n = tshark(&f).malformed()?.len();
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, n));
    }
    Ok(out)
}
