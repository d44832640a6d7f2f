//! The GSLB's policy, sans-IO: a client's address (from EDNS Client Subnet, else the address
//! that asked) picks a region, the region gives its healthy VIPs; a region with none fails
//! over to the next in the configured order. Health comes from TCP checks the I/O layer makes
//! (rise and fall as [`d11_element::health`] counts them). Every decision is kept for
//! `d11 show gslb decisions`: who asked, for which client, which region and why.

use d11_element::health::{CheckConfig, Health};
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Instant;

/// A region: its VIPs, and the client subnets it is nearest to.
#[derive(Debug, Clone, Deserialize)]
pub struct Region {
    pub name: String,
    pub vips: Vec<Ipv4Addr>,
    #[serde(default)]
    pub clients: Vec<Ipv4Net>,
}

fn default_ttl() -> u32 {
    30
}
fn default_check_port() -> u16 {
    443
}
fn default_keep() -> usize {
    100
}

/// The policy: regions in failover order, the default region for clients no region lists,
/// the answers' TTL, and the health checks.
#[derive(Debug, Clone, Deserialize)]
pub struct GslbConfig {
    pub regions: Vec<Region>,
    /// For clients no region lists (the first region if not given).
    #[serde(default)]
    pub default_region: Option<String>,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// TCP port of the VIPs' health checks.
    #[serde(default = "default_check_port")]
    pub check_port: u16,
    #[serde(default)]
    pub check: CheckConfig,
    /// Decisions kept for `d11 show gslb decisions`.
    #[serde(default = "default_keep")]
    pub keep_decisions: usize,
}

impl GslbConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.regions.is_empty() {
            anyhow::bail!("a GSLB needs regions");
        }
        for r in &self.regions {
            if r.vips.is_empty() {
                anyhow::bail!("region {:?} has no vips", r.name);
            }
        }
        if let Some(d) = &self.default_region {
            if !self.regions.iter().any(|r| &r.name == d) {
                anyhow::bail!("default_region {d:?} is not a region");
            }
        }
        Ok(())
    }
}

/// Where the client's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The EDNS Client Subnet option of the query (address, source prefix).
    Ecs(Ipv4Addr, u8),
    /// The address that sent the query (a resolver, or an HTTPDNS client).
    Peer(Ipv4Addr),
    /// HTTPDNS's `ip` parameter.
    Param(Ipv4Addr),
}

impl Source {
    pub fn addr(&self) -> Ipv4Addr {
        match *self {
            Source::Ecs(a, _) | Source::Peer(a) | Source::Param(a) => a,
        }
    }
    fn describe(&self) -> String {
        match *self {
            Source::Ecs(a, p) => format!("ECS {a}/{p}"),
            Source::Peer(a) => format!("sender {a}"),
            Source::Param(a) => format!("ip={a}"),
        }
    }
}

/// One answer of the GSLB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub name: String,
    pub asked_by: Ipv4Addr,
    pub client: Source,
    pub region: String,
    pub vips: Vec<Ipv4Addr>,
    /// The ECS scope the answer holds for (RFC 7871 §7.2.1).
    pub scope: u8,
    pub why: String,
    pub at: Instant,
}

#[derive(Debug, Clone)]
struct Vip {
    addr: Ipv4Addr,
    region: usize,
    health: Health,
    checks_ok: u64,
    checks_failed: u64,
    last: Option<(Instant, bool)>,
}

// Counters (`d11 show gslb counters`).
d11_element::counters! {
    pub struct Counters {
        gslb_decisions,
        gslb_failovers,
        gslb_none_healthy,
        gslb_checks_ok,
        gslb_checks_failed,
        gslb_vips_down,
        gslb_vips_up,
    }
}

/// The policy and its state.
#[derive(Debug)]
pub struct Gslb {
    pub cfg: GslbConfig,
    vips: Vec<Vip>,
    decisions: VecDeque<Decision>,
    pub c: Counters,
}

impl Gslb {
    /// Every VIP starts up (as a balancer's servers do) and goes down after `fall` failures.
    pub fn new(cfg: GslbConfig) -> anyhow::Result<Self> {
        cfg.validate()?;
        let vips = cfg
            .regions
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                r.vips.iter().map(move |&addr| Vip {
                    addr,
                    region: i,
                    health: Health::new(true),
                    checks_ok: 0,
                    checks_failed: 0,
                    last: None,
                })
            })
            .collect();
        Ok(Self {
            cfg,
            vips,
            decisions: VecDeque::new(),
            c: Counters::default(),
        })
    }

    /// The VIPs to check (each once, though two regions may list it).
    pub fn check_targets(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<_> = self.vips.iter().map(|v| v.addr).collect();
        v.sort();
        v.dedup();
        v
    }

    /// A health check's result for `vip`.
    pub fn record_check(&mut self, now: Instant, vip: Ipv4Addr, ok: bool) {
        let cfg = self.cfg.check.clone();
        for v in self.vips.iter_mut().filter(|v| v.addr == vip) {
            v.last = Some((now, ok));
            if ok {
                v.checks_ok += 1;
            } else {
                v.checks_failed += 1;
            }
            match v.health.record(ok, &cfg) {
                Some(true) => self.c.gslb_vips_up += 1,
                Some(false) => self.c.gslb_vips_down += 1,
                None => {}
            }
        }
        if ok {
            self.c.gslb_checks_ok += 1;
        } else {
            self.c.gslb_checks_failed += 1;
        }
    }

    fn healthy(&self, region: usize) -> Vec<Ipv4Addr> {
        self.vips
            .iter()
            .filter(|v| v.region == region && v.health.up)
            .map(|v| v.addr)
            .collect()
    }

    /// The region nearest `addr`: the longest client prefix holding it, and that prefix.
    fn nearest(&self, addr: Ipv4Addr) -> Option<(usize, Ipv4Net)> {
        self.cfg
            .regions
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.clients.iter().map(move |p| (i, *p)))
            .filter(|(_, p)| p.contains(&addr))
            .max_by_key(|(_, p)| p.prefix_len())
    }

    /// The scope an answer holds for (RFC 7871 §7.2.1): the prefix that chose the region,
    /// lengthened to the longest prefix inside it (a client outside such a prefix shares its
    /// answer with its whole block of that length, which misses every such prefix); with no
    /// prefix, the longest of all, for the same reason.
    fn scope(&self, by: Option<Ipv4Net>) -> u8 {
        let all = self.cfg.regions.iter().flat_map(|r| r.clients.iter());
        match by {
            Some(p) => all
                .filter(|q| p.contains(&q.network()))
                .map(|q| q.prefix_len())
                .max()
                .unwrap_or(p.prefix_len())
                .max(p.prefix_len()),
            None => all.map(|q| q.prefix_len()).max().unwrap_or(0),
        }
    }

    /// The answer for `name` asked by `asked_by` for `client`.
    pub fn decide(
        &mut self,
        now: Instant,
        name: &str,
        asked_by: Ipv4Addr,
        client: Source,
    ) -> Decision {
        self.c.gslb_decisions += 1;
        let addr = client.addr();
        let near = self.nearest(addr);
        let default = self
            .cfg
            .default_region
            .as_ref()
            .and_then(|d| self.cfg.regions.iter().position(|r| &r.name == d))
            .unwrap_or(0);
        let (first, mut why) = match near {
            Some((i, p)) => (
                i,
                format!(
                    "{} in {p}, nearest {}",
                    client.describe(),
                    self.cfg.regions[i].name
                ),
            ),
            None => (
                default,
                format!(
                    "{} in no region's clients: default {}",
                    client.describe(),
                    self.cfg.regions[default].name
                ),
            ),
        };
        let scope = self.scope(near.map(|(_, p)| p));
        let n = self.cfg.regions.len();
        let mut chosen = None;
        for k in 0..n {
            let i = (first + k) % n;
            let up = self.healthy(i);
            if up.is_empty() {
                why += &format!("; {} has no healthy VIP", self.cfg.regions[i].name);
                continue;
            }
            if k > 0 {
                self.c.gslb_failovers += 1;
                why += &format!(": failover to {}", self.cfg.regions[i].name);
            }
            chosen = Some((i, up));
            break;
        }
        let (region, vips) = chosen.unwrap_or_else(|| {
            // Nothing healthy anywhere: the nearest region's VIPs all the same (an answer
            // that may work beats none).
            self.c.gslb_none_healthy += 1;
            why += &format!(": all of {}", self.cfg.regions[first].name);
            (first, self.cfg.regions[first].vips.clone())
        });
        let d = Decision {
            name: name.to_string(),
            asked_by,
            client,
            region: self.cfg.regions[region].name.clone(),
            vips,
            scope,
            why,
            at: now,
        };
        if self.cfg.keep_decisions > 0 {
            if self.decisions.len() >= self.cfg.keep_decisions {
                self.decisions.pop_front();
            }
            self.decisions.push_back(d.clone());
        }
        d
    }

    /// `d11 show gslb decisions`, the latest last.
    pub fn show_decisions(&self, now: Instant) -> Value {
        json!(self
            .decisions
            .iter()
            .map(|d| json!({
                "name": d.name,
                "asked_by": d.asked_by.to_string(),
                "client": d.client.addr().to_string(),
                "from": match d.client {
                    Source::Ecs(_, p) => format!("ecs/{p}"),
                    Source::Peer(_) => "sender".into(),
                    Source::Param(_) => "ip".into(),
                },
                "region": d.region,
                "vips": d.vips.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
                "scope": d.scope,
                "why": d.why,
                "secs_ago": now.saturating_duration_since(d.at).as_secs(),
            }))
            .collect::<Vec<_>>())
    }

    /// `d11 show gslb health`: each VIP's state by its checks.
    pub fn show_health(&self, now: Instant) -> Value {
        json!(self
            .vips
            .iter()
            .map(|v| json!({
                "vip": v.addr.to_string(),
                "region": self.cfg.regions[v.region].name,
                "state": if v.health.up { "up" } else { "down" },
                "streak": v.health.streak,
                "checks_ok": v.checks_ok,
                "checks_failed": v.checks_failed,
                "last": v.last.map(|(t, ok)| json!({
                    "ok": ok,
                    "secs_ago": now.saturating_duration_since(t).as_secs(),
                })),
            }))
            .collect::<Vec<_>>())
    }
}
