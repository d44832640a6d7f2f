//! Topology files: the nodes of a lab, their ports, and the segments that join them.
//!
//! ```toml
//! name = "two-hosts-router"
//! [[segments]]
//! name = "left"
//! subnet = "10.0.1.0/24"      # documentation; shown by `d11 lab status`
//! [[nodes]]
//! name = "r1"
//! role = "router"             # runs the program d11-router; "kernel" = a kernel-stack host
//! ports = [{ name = "eth0", segment = "left", addresses = ["10.0.1.1/24"] }]
//! routes = [{ prefix = "0.0.0.0/0", via = "10.0.2.254" }]
//! ```
//!
//! Every key of a node's table is handed to its program as its config (JSON), so a role can
//! take settings this crate knows nothing about.

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Topology {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The journey file `d11 journey` checks this lab against (relative to the topology
    /// file): its hops as rows of data (`labs/journeys/`).
    #[serde(default)]
    pub journey: Option<String>,
    /// How Linux schedules the lab's programs (not its kernel hosts): `normal` (the default)
    /// or `batch`.
    #[serde(default)]
    pub scheduling: Scheduling,
    #[serde(default)]
    pub segments: Vec<Segment>,
    #[serde(default)]
    pub nodes: Vec<Node>,
}

/// The Linux scheduling policy the lab's programs run under (sched(7)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    /// `SCHED_OTHER`: a program woken by a frame may preempt the one that wrote it.
    #[default]
    Normal,
    /// `SCHED_BATCH`: a woken program never preempts a running one; it waits for a CPU that
    /// is free or for the running program's slice to end. Many programs, each woken by the
    /// last one's frames, then switch less and take several frames per wakeup
    /// (docs/perf.md, the whole chain).
    Batch,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Segment {
    pub name: String,
    #[serde(default)]
    pub subnet: Option<String>,
    /// MTU of the segment's bridge and every port on it.
    #[serde(default)]
    pub mtu: Option<u16>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Port {
    pub name: String,
    pub segment: String,
    #[serde(default)]
    pub addresses: Vec<Ipv4Net>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Impairment of what this port sends and receives: "tx:SPEC", "rx:SPEC" or "both:SPEC".
    #[serde(default)]
    pub impair: Vec<String>,
    /// Segmentation and checksum offloads on: a kernel host's NIC keeps TSO, GSO, GRO and
    /// checksum offload (the lab turns them off otherwise, so captures show what travels); a
    /// d11 program's TAP takes TCP super-frames and partial checksums (`--offload`), which
    /// forwarders pass on whole and endpoints take whole and send too (TSO); the others get
    /// them cut.
    #[serde(default)]
    pub offload: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Route {
    pub prefix: Ipv4Net,
    #[serde(default)]
    pub via: Option<Ipv4Addr>,
    #[serde(default)]
    pub port: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Node {
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Everything else: role-specific settings, passed through to the program.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The role that is not a program of ours but the kernel's own IP stack.
pub const KERNEL: &str = "kernel";

/// Every role a node can have: `kernel`, or a program of ours (`d11-ROLE`).
pub const ROLES: &[(&str, &str)] = &[
    (
        KERNEL,
        "a host with the kernel's own IP stack (any Linux tool runs there)",
    ),
    ("host", "a userspace IPv4 host (ping, TCP and UDP echo)"),
    ("router", "an IPv4 router"),
    ("nat", "the carrier NAT"),
    ("ue", "the phone"),
    ("enb", "the eNodeB"),
    ("mme", "the MME"),
    ("hss", "the HSS"),
    ("sgw", "the serving gateway"),
    ("pgw", "the PDN gateway"),
    ("vswitch", "a physical host's virtual switch (VXLAN VTEP)"),
    ("vgw", "the cloud's gateway node (VIPs, VPC router)"),
    ("lb", "the L4 load balancer"),
    ("ctl", "a controller (HTTPS, the order API)"),
    ("registry", "the RPC service registry"),
    ("order", "the order service"),
    ("inventory", "the inventory service"),
    ("coupon", "the coupon service"),
    ("db", "an order-store shard (SQLite)"),
    (
        "dns",
        "a DNS server (authoritative for a zone from a master file)",
    ),
    ("origin", "object storage, the CDN's origin (HTTP)"),
    ("cdn", "an HTTP cache, the CDN's edge or parent"),
    ("null", "the null forwarder (benchmarks)"),
];
/// The namespace suffix reserved for the lab's segments.
pub const FABRIC: &str = "fabric";

impl Node {
    pub fn is_kernel(&self) -> bool {
        self.role == KERNEL
    }

    /// The program that plays this role.
    pub fn program(&self) -> Option<String> {
        (!self.is_kernel()).then(|| format!("d11-{}", self.role))
    }

    /// The node's config as its program reads it (JSON).
    pub fn program_config(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

impl Topology {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read topology {}", path.display()))?;
        let t: Topology = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!("topology {}: {}", path.display(), toml_error(&text, &e))
        })?;
        t.validate()
            .with_context(|| format!("topology {}", path.display()))?;
        Ok(t)
    }

    pub fn validate(&self) -> Result<()> {
        let mut segs = HashSet::new();
        for s in &self.segments {
            // A segment becomes a bridge of that name: an interface name (15 bytes).
            if !valid_name(&s.name, 15) {
                bail!("segment {:?}: names are 1-15 of a-z, 0-9, '-'", s.name);
            }
            if !segs.insert(s.name.as_str()) {
                bail!("segment {:?} is declared twice", s.name);
            }
        }
        let mut nodes = HashSet::new();
        for n in &self.nodes {
            if !valid_name(&n.name, 24) {
                bail!("node {:?}: names are 1-24 of a-z, 0-9, '-'", n.name);
            }
            if n.name == FABRIC {
                bail!("node name {FABRIC:?} is reserved for the lab's segments");
            }
            if !nodes.insert(n.name.as_str()) {
                bail!("node {:?} is declared twice", n.name);
            }
            if !ROLES.iter().any(|(r, _)| *r == n.role) {
                bail!(
                    "node {}: key role: {:?} is not a role; the roles are {}",
                    n.name,
                    n.role,
                    ROLES.iter().map(|(r, _)| *r).collect::<Vec<_>>().join(", ")
                );
            }
            let mut ports = HashSet::new();
            for p in &n.ports {
                if !valid_name(&p.name, 15) {
                    bail!(
                        "node {}: port {:?}: names are 1-15 of a-z, 0-9, '-'",
                        n.name,
                        p.name
                    );
                }
                if !ports.insert(p.name.as_str()) {
                    bail!("node {}: port {:?} is declared twice", n.name, p.name);
                }
                if !segs.contains(p.segment.as_str()) {
                    bail!(
                        "node {} port {}: key segment: no segment {:?}",
                        n.name,
                        p.name,
                        p.segment
                    );
                }
                for i in &p.impair {
                    let (dir, spec) = i.split_once(':').with_context(|| {
                        format!(
                            "node {} port {}: impair {i:?}: expected tx|rx|both:SPEC",
                            n.name, p.name
                        )
                    })?;
                    if !matches!(dir, "tx" | "rx" | "both") {
                        bail!(
                            "node {} port {}: impair {i:?}: direction must be tx, rx or both",
                            n.name,
                            p.name
                        );
                    }
                    d11_netdev::impair::Impairment::parse(spec)
                        .map_err(|e| anyhow::anyhow!("node {} port {}: {e}", n.name, p.name))?;
                    if n.is_kernel() {
                        bail!("node {} port {}: impairment needs a d11 program; put it on the peer's port", n.name, p.name);
                    }
                    if p.offload {
                        bail!("node {} port {}: a port with offload = true cannot be impaired (impairment works on segments)", n.name, p.name);
                    }
                }
                if let Some(m) = &p.mac {
                    if n.is_kernel() {
                        bail!(
                            "node {}: a kernel host's MAC is the kernel's; remove mac",
                            n.name
                        );
                    }
                    parse_mac_ok(m).with_context(|| format!("node {} port {}", n.name, p.name))?;
                }
            }
            if n.is_kernel() && n.ports.is_empty() {
                bail!("node {}: a kernel host needs a port", n.name);
            }
        }
        Ok(())
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// A TOML error on one line: where (line, column), in which node and key, and what.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return msg;
    };
    let at = span.start.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = at - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    // The node: the last `[[nodes]]` before the error, and its name.
    // (An error on a node's header itself, a missing field, points at the header.)
    let upto = &text[..(at + "[[nodes]]".len()).min(text.len())];
    let node = upto.rfind("[[nodes]]").and_then(|h| {
        text[h..].lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
        })
    });
    // The key: the one this line sets.
    let this_line = text[at - (col - 1)..].lines().next().unwrap_or("");
    let key = this_line
        .split_once('=')
        .map(|(k, _)| k.trim().to_string())
        .filter(|k| !k.is_empty() && !k.contains(['{', '[', '"', ' ']));
    let mut out = format!("line {line}, column {col}");
    if let Some(n) = node {
        out += &format!(", node {n}");
    }
    if let Some(k) = key {
        out += &format!(", key {k}");
    }
    format!("{out}: {msg}")
}

fn parse_mac_ok(s: &str) -> Result<()> {
    let parts: Vec<_> = s.split(':').collect();
    if parts.len() != 6 || parts.iter().any(|p| u8::from_str_radix(p, 16).is_err()) {
        bail!("MAC {s:?}: expected six hex octets separated by ':'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Topology> {
        let t: Topology = toml::from_str(s)?;
        t.validate()?;
        Ok(t)
    }

    #[test]
    fn good_and_bad() {
        let base = r#"
            name = "t"
            [[segments]]
            name = "left"
            [[nodes]]
            name = "r1"
            role = "router"
            ports = [{ name = "eth0", segment = "left", addresses = ["10.0.1.1/24"] }]
            icmp_limit = { per_second = 5 }
        "#;
        let t = parse(base).unwrap();
        let cfg = t.nodes[0].program_config();
        assert_eq!(
            cfg["icmp_limit"]["per_second"], 5,
            "role settings pass through"
        );
        assert_eq!(t.nodes[0].program().as_deref(), Some("d11-router"));

        let e = parse(&base.replace("segment = \"left\"", "segment = \"right\"")).unwrap_err();
        assert!(e.to_string().contains("no segment \"right\""), "{e}");
        let e = parse(&base.replace("name = \"left\"", "name = \"a-very-long-segment-name\""))
            .unwrap_err();
        assert!(e.to_string().contains("1-15"), "{e}");
        let e = parse(&base.replace("name = \"r1\"", "name = \"fabric\"")).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        let e = parse(&base.replace("addresses", "impair = [\"sideways:loss=0.1\"], addresses"))
            .unwrap_err();
        assert!(e.to_string().contains("direction"), "{e}");
    }

    #[test]
    fn toml_errors_say_where_which_node_and_key_on_one_line() {
        let text = "name = \"t\"\n[[segments]]\nname = \"a\"\n[[nodes]]\nname = \"r1\"\nrole = \"router\"\nports = [{ name = \"e\", segment = \"a\", addresses = [\"10.0.0.999/24\"] }]\n";
        let e = toml::from_str::<Topology>(text).unwrap_err();
        let m = toml_error(text, &e);
        assert!(m.starts_with("line 7, column "), "{m}");
        assert!(m.contains("node r1, key ports: invalid IP address"), "{m}");
        assert!(!m.contains('\n'));
        let e = parse(
            &text
                .replace("role = \"router\"", "role = \"switch\"")
                .replace("999", "9"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("\"switch\" is not a role; the roles are kernel, host, router"),
            "{e}"
        );
    }

    #[test]
    fn scheduling_is_normal_unless_the_lab_says_batch() {
        let text = "name = \"t\"\n[[segments]]\nname = \"a\"\n";
        assert_eq!(parse(text).unwrap().scheduling, Scheduling::Normal);
        let batch = format!("scheduling = \"batch\"\n{text}");
        assert_eq!(parse(&batch).unwrap().scheduling, Scheduling::Batch);
        let bad = format!("scheduling = \"fifo\"\n{text}");
        let e = toml::from_str::<Topology>(&bad).unwrap_err();
        let m = toml_error(&bad, &e);
        assert!(
            m.contains("unknown variant `fifo`, expected `normal` or `batch`"),
            "{m}"
        );
        assert!(!m.contains('\n'));
    }
}
