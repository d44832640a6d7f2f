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
    #[serde(default)]
    pub segments: Vec<Segment>,
    #[serde(default)]
    pub nodes: Vec<Node>,
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
            anyhow::anyhow!("topology {}: {}", path.display(), e.to_string().trim())
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
            if !valid_name(&n.role, 24) {
                bail!("node {}: role {:?} is not a role name", n.name, n.role);
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
                        "node {} port {}: no segment {:?}",
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
}
