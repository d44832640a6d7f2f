//! The journey as data: a hop is a row of a TOML file under `labs/journeys/`, and its
//! expected fields are templates resolved against the lab's state.
//!
//! ```toml
//! traffic = "order"                 # what the journey sends (order: the phone's app; ping)
//! [let]                             # named values the rows use as {post}
//! post = 'http.request.method == "POST"'
//!
//! [[hop]]
//! n = "2"
//! segment = "epc"                   # the capture file (segment name) it is read from
//! from = "enb"
//! to = "sgw"
//! frame = "{post}"                  # tshark display filter that picks the frame
//! when = "cloud"                    # optional: only if this fact holds ("!cloud": unless)
//! [hop.expect]                      # tshark field = expected value, in report order
//! "eth.src" = ["{mac enb epc}", "{mac ue radio if eth_pdu}"]   # outer, inner layer
//! "ip.ttl" = "{ttl ue - 1}"
//! "gtp.teid" = "{teid sgw sessions s1u_sgw_teid}"
//! ```
//!
//! A template is text with `{...}` placeholders. A placeholder is a fact the traffic observed
//! or a `[let]` name (`{ue_ip}`), or a lookup in the lab: `mac NODE PORT`, `addr NODE PORT`,
//! `ttl NODE` (its default TTL), `segment NODE` (its first port's), `teid NODE TABLE KEY`
//! (`KEY` of the first row of `d11 show NODE TABLE`, as tshark prints a TEID), `zone NODE
//! NAME TYPE` (the data of NAME's TYPE records in `d11 show NODE zones`); an argument
//! `$name` is a fact's value. `- N` subtracts; `if FACT` / `if !FACT` makes it empty unless the
//! fact holds. A list is the layers of a tunnelled frame (outer first), empty ones dropped,
//! joined with commas as tshark prints them.

use crate::Hop;
use anyhow::{bail, Context, Result};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A journey file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// What the journey sends through the lab: "order" or "ping".
    pub traffic: String,
    /// One line for the report, a template.
    #[serde(default)]
    pub summary: String,
    #[serde(default, rename = "let")]
    pub lets: BTreeMap<String, String>,
    #[serde(default, rename = "hop")]
    pub hops: Vec<Row>,
}

/// One hop as a row of data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub n: String,
    pub segment: String,
    pub from: String,
    pub to: String,
    pub frame: String,
    #[serde(default)]
    pub when: Option<String>,
    pub expect: Fields,
}

/// A field's expected value: one template, or one per layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Expect {
    One(String),
    Layers(Vec<String>),
}

/// (tshark field, expected value) in the file's order.
#[derive(Debug, Clone, Default)]
pub struct Fields(pub Vec<(String, Expect)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of tshark field = expected value")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Fields, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Expect>()? {
                    out.push((k, v));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Plan {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read journey file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("journey file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let p: Plan = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].lines().count().max(1);
                    format!("line {line}: ")
                })
                .unwrap_or_default();
            anyhow::anyhow!("{at}{}", e.message())
        })?;
        if !matches!(p.traffic.as_str(), "order" | "ping") {
            bail!("traffic {:?}: order or ping", p.traffic);
        }
        Ok(p)
    }

    /// The hops whose condition holds, every template resolved.
    pub fn hops(&self, lab: &dyn LabView, facts: &Facts) -> Result<Vec<Hop>> {
        let r = Resolver {
            lab,
            facts,
            lets: &self.lets,
        };
        let mut out = Vec::new();
        for row in &self.hops {
            if let Some(c) = &row.when {
                if !r.holds(c)? {
                    continue;
                }
            }
            let hop = (|| -> Result<Hop> {
                let mut expect = Vec::new();
                for (f, e) in &row.expect.0 {
                    let v = match e {
                        Expect::One(t) => r.template(t)?,
                        Expect::Layers(ls) => {
                            let mut parts = Vec::new();
                            for l in ls {
                                let v = r.template(l)?;
                                if !v.is_empty() {
                                    parts.push(v);
                                }
                            }
                            parts.join(",")
                        }
                    };
                    expect.push((f.clone(), v));
                }
                Ok(Hop {
                    n: row.n.clone(),
                    segment: r.template(&row.segment)?,
                    from: r.template(&row.from)?,
                    to: r.template(&row.to)?,
                    filter: r.template(&row.frame)?,
                    expect,
                })
            })()
            .with_context(|| format!("hop {}", row.n))?;
            out.push(hop);
        }
        Ok(out)
    }

    /// The summary line, resolved.
    pub fn summary(&self, lab: &dyn LabView, facts: &Facts) -> Result<String> {
        Resolver {
            lab,
            facts,
            lets: &self.lets,
        }
        .template(&self.summary)
    }
}

/// What the traffic observed (addresses, ports, the nodes it went through), by name;
/// booleans as "true" and "false".
pub type Facts = BTreeMap<String, String>;

/// What a plan may look up in a lab.
pub trait LabView {
    fn mac(&self, node: &str, port: &str) -> Result<String>;
    fn addr(&self, node: &str, port: &str) -> Result<String>;
    fn default_ttl(&self, node: &str) -> Result<u8>;
    fn segment(&self, node: &str) -> Result<String>;
    fn show(&self, node: &str, table: &str) -> Result<Value>;
}

impl LabView for d11_lab::client::Client {
    fn mac(&self, node: &str, port: &str) -> Result<String> {
        d11_lab::client::Client::mac(self, node, port)
    }
    fn addr(&self, node: &str, port: &str) -> Result<String> {
        d11_lab::client::Client::addr(self, node, port)
    }
    fn default_ttl(&self, node: &str) -> Result<u8> {
        d11_lab::client::Client::default_ttl(self, node)
    }
    fn segment(&self, node: &str) -> Result<String> {
        d11_lab::client::Client::segment(self, node)
    }
    fn show(&self, node: &str, table: &str) -> Result<Value> {
        d11_lab::client::Client::show(self, node, Some(table))
    }
}

struct Resolver<'a> {
    lab: &'a dyn LabView,
    facts: &'a Facts,
    lets: &'a BTreeMap<String, String>,
}

impl Resolver<'_> {
    fn template(&self, t: &str) -> Result<String> {
        self.template_depth(t, 0)
    }

    fn template_depth(&self, t: &str, depth: usize) -> Result<String> {
        if depth > 8 {
            bail!("{t:?}: [let] names refer to each other in a loop");
        }
        let mut out = String::new();
        let mut rest = t;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let j = rest[i..]
                .find('}')
                .with_context(|| format!("{t:?}: an unclosed {{"))?;
            out.push_str(&self.placeholder(&rest[i + 1..i + j], depth)?);
            rest = &rest[i + j + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A fact or a `[let]` name.
    fn name(&self, n: &str, depth: usize) -> Result<Option<String>> {
        if let Some(v) = self.facts.get(n) {
            return Ok(Some(v.clone()));
        }
        match self.lets.get(n) {
            Some(t) => Ok(Some(self.template_depth(t, depth + 1)?)),
            None => Ok(None),
        }
    }

    fn holds(&self, cond: &str) -> Result<bool> {
        let (neg, name) = match cond.trim().strip_prefix('!') {
            Some(n) => (true, n.trim()),
            None => (false, cond.trim()),
        };
        let v = self
            .name(name, 0)?
            .with_context(|| format!("condition {cond:?}: no fact {name:?}"))?;
        let yes = !(v.is_empty() || v == "false");
        Ok(yes != neg)
    }

    fn placeholder(&self, p: &str, depth: usize) -> Result<String> {
        let (expr, cond) = match p.split_once(" if ") {
            Some((e, c)) => (e, Some(c)),
            None => (p, None),
        };
        if let Some(c) = cond {
            if !self.holds(c)? {
                return Ok(String::new());
            }
        }
        let mut words: Vec<&str> = expr.split_whitespace().collect();
        let mut minus = 0u64;
        if words.len() >= 3 && words[words.len() - 2] == "-" {
            minus = words[words.len() - 1]
                .parse()
                .with_context(|| format!("{{{p}}}: `- N` takes a number"))?;
            words.truncate(words.len() - 2);
        }
        let args: Vec<String> = words
            .iter()
            .skip(1)
            .map(|a| match a.strip_prefix('$') {
                Some(n) => self
                    .name(n, depth)?
                    .with_context(|| format!("{{{p}}}: no fact {n:?}")),
                None => Ok(a.to_string()),
            })
            .collect::<Result<_>>()?;
        let arg = |i: usize| -> Result<&str> {
            args.get(i)
                .map(String::as_str)
                .with_context(|| format!("{{{p}}}: missing argument {}", i + 1))
        };
        let head = *words
            .first()
            .with_context(|| format!("an empty placeholder in {p:?}"))?;
        let v = match head {
            "mac" => self.lab.mac(arg(0)?, arg(1)?)?,
            "addr" => self.lab.addr(arg(0)?, arg(1)?)?,
            "ttl" => self.lab.default_ttl(arg(0)?)?.to_string(),
            "segment" => self.lab.segment(arg(0)?)?,
            "teid" => {
                let (node, table, key) = (arg(0)?, arg(1)?, arg(2)?);
                let v = self.lab.show(node, table)?;
                let t = v[0][key]
                    .as_u64()
                    .with_context(|| format!("{node} {table} has no {key}: {v}"))?;
                format!("0x{t:08x}")
            }
            "zone" => {
                // The data of NAME's TYPE records in `d11 show NODE zones`, as tshark prints
                // them (names without the root's dot, several joined with commas).
                let (node, name, rtype) = (arg(0)?, arg(1)?, arg(2)?);
                let v = self.lab.show(node, "zones")?;
                let want = format!("{}.", name.trim_end_matches('.'));
                let data: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|z| z["records"].as_array().cloned().unwrap_or_default())
                    .filter(|r| {
                        r["name"]
                            .as_str()
                            .is_some_and(|n| n.eq_ignore_ascii_case(&want))
                            && r["type"] == rtype
                    })
                    .filter_map(|r| {
                        r["data"]
                            .as_str()
                            .map(|d| d.trim_end_matches('.').to_string())
                    })
                    .collect();
                if data.is_empty() {
                    bail!("{{{p}}}: {node}'s zones have no {rtype} for {name}");
                }
                data.join(",")
            }
            n if words.len() == 1 => self
                .name(n, depth)?
                .with_context(|| format!("{{{p}}}: no fact, [let] name or lookup {n:?}"))?,
            other => bail!("{{{p}}}: no lookup {other:?} (mac, addr, ttl, segment, teid, zone)"),
        };
        if minus == 0 {
            return Ok(v);
        }
        let n: u64 = v
            .parse()
            .with_context(|| format!("{{{p}}}: {v:?} is not a number"))?;
        n.checked_sub(minus)
            .map(|n| n.to_string())
            .with_context(|| format!("{{{p}}}: {n} - {minus} is negative"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A lab that answers from tables: MAC `mac-NODE-PORT`, the mobile core's addresses.
    struct Fake;
    impl LabView for Fake {
        fn mac(&self, node: &str, port: &str) -> Result<String> {
            Ok(format!("mac-{node}-{port}"))
        }
        fn addr(&self, node: &str, port: &str) -> Result<String> {
            match (node, port) {
                ("enb", "epc") => Ok("172.16.1.2".into()),
                ("sgw", "epc") => Ok("172.16.1.3".into()),
                ("sgw", "s5") => Ok("172.16.5.3".into()),
                ("pgw", "s5") => Ok("172.16.5.4".into()),
                (n, p) => Ok(format!("ip-{n}-{p}")),
            }
        }
        fn default_ttl(&self, node: &str) -> Result<u8> {
            Ok(if node.starts_with('k') { 64 } else { 65 })
        }
        fn segment(&self, node: &str) -> Result<String> {
            Ok(format!("vm-{node}"))
        }
        fn show(&self, node: &str, table: &str) -> Result<Value> {
            match (node, table) {
                ("sgw", "sessions") => Ok(json!([{"s1u_sgw_teid": 0x1234, "s5u_sgw_teid": 7}])),
                ("pgw", "sessions") => {
                    Ok(json!([{"s5u_pgw_teid": 0xabcdef01u32, "s5u_sgw_teid": 7}]))
                }
                ("enb", "bearers") => Ok(json!([{"enb_teid": 1}])),
                (n, "zones") if n.ends_with("dns") => {
                    let r = |name: &str, t: &str, data: &str| json!({"name": name, "type": t, "ttl": 60, "data": data});
                    Ok(json!([{"origin": ".", "records": [
                        r("example.", "NS", "tld-dns.example."),
                        r("tld-dns.example.", "A", "192.0.2.11"),
                        r("shop.example.", "NS", "auth-dns.shop.example."),
                        r("auth-dns.shop.example.", "A", "203.0.113.53"),
                        r("www.shop.example.", "CNAME", "vip.shop.example."),
                        r("vip.shop.example.", "NS", "gslb.shop.example."),
                        r("gslb.shop.example.", "A", "203.0.113.54"),
                        r("img.shop.example.", "CNAME", "img.shop.example.cdnco.example."),
                        r("img.shop.example.cdnco.example.", "CNAME", "img-shop.gslb.cdnco.example."),
                        r("gslb.cdnco.example.", "NS", "cdn-gslb.cdnco.example."),
                        r("cdn-gslb.cdnco.example.", "A", "192.0.2.54"),
                    ]}]))
                }
                _ => bail!("{node} has no table {table}"),
            }
        }
    }

    fn facts(pairs: &[(&str, &str)]) -> Facts {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn placeholders_resolve_from_facts_lets_and_lookups() {
        let p = Plan::parse(
            r#"
traffic = "order"
summary = "from {ue_ip} via {path}"
[let]
post = 'http.request.method == "POST"'
path = "{cloud_path if cloud}{lab_path if !cloud}"
cloud_path = "the cloud"
lab_path = "a router"
[[hop]]
n = "2"
segment = "epc"
from = "enb"
to = "sgw"
frame = "{post} && ip.dst == {addr $ctl eth0}"
[hop.expect]
"eth.src" = ["{mac enb epc}", "{mac ue radio if eth_pdu}"]
"ip.src" = ["{addr enb epc}", "{ue_ip}"]
"ip.ttl" = "{ttl ue - 2}"
"gtp.teid" = "{teid sgw sessions s1u_sgw_teid}"
[[hop]]
n = "13"
when = "cross_host"
segment = "{segment $ctl}"
from = "a"
to = "b"
frame = "x"
expect = {}
"#,
        )
        .unwrap();
        let f = facts(&[
            ("ue_ip", "10.45.0.2"),
            ("ctl", "ctl1"),
            ("eth_pdu", "true"),
            ("cloud", "false"),
            ("cross_host", "false"),
        ]);
        let hops = p.hops(&Fake, &f).unwrap();
        assert_eq!(hops.len(), 1, "hop 13's condition does not hold");
        let h = &hops[0];
        assert_eq!(
            h.filter,
            "http.request.method == \"POST\" && ip.dst == ip-ctl1-eth0"
        );
        let e: Vec<(&str, &str)> = h
            .expect
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            e,
            [
                ("eth.src", "mac-enb-epc,mac-ue-radio"),
                ("ip.src", "172.16.1.2,10.45.0.2"),
                ("ip.ttl", "63"),
                ("gtp.teid", "0x00001234"),
            ],
            "in the file's order"
        );
        assert_eq!(p.summary(&Fake, &f).unwrap(), "from 10.45.0.2 via a router");
        // An IPv4 PDU session: the inner Ethernet layer is gone.
        let f = facts(&[
            ("ue_ip", "10.45.0.2"),
            ("ctl", "ctl1"),
            ("eth_pdu", "false"),
            ("cloud", "true"),
            ("cross_host", "true"),
        ]);
        let hops = p.hops(&Fake, &f).unwrap();
        assert_eq!(hops[0].expect[0].1, "mac-enb-epc");
        assert_eq!(hops[1].segment, "vm-ctl1");
        assert_eq!(
            p.summary(&Fake, &f).unwrap(),
            "from 10.45.0.2 via the cloud"
        );
    }

    #[test]
    fn mistakes_name_the_hop_and_the_placeholder() {
        let p = |hop: &str| {
            Plan::parse(&format!(
                "traffic = \"ping\"\n[[hop]]\nn = \"7\"\nsegment = \"s\"\nfrom = \"a\"\nto = \"b\"\nframe = \"f\"\n[hop.expect]\n\"ip.src\" = \"{hop}\"\n"
            ))
            .unwrap()
        };
        let err = |hop: &str| format!("{:#}", p(hop).hops(&Fake, &Facts::new()).unwrap_err());
        assert!(err("{nope}").contains("hop 7") && err("{nope}").contains("\"nope\""));
        assert!(err("{mac a}").contains("missing argument 2"));
        assert!(err("{ttl a - x}").contains("takes a number"));
        assert!(err("{teid x y z}").contains("x has no table y"));
        assert!(err("{mac $gone p}").contains("no fact \"gone\""));
        assert!(err("{ttl a").contains("unclosed"));
        let bad = Plan::parse("traffic = \"dns\"").unwrap_err().to_string();
        assert!(bad.contains("order or ping"), "{bad}");
        let bad = Plan::parse("traffic = \"ping\"\nhops = 1")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("unknown field `hops`"), "{bad}");
        let bad = Plan::parse("traffic = \"ping\"\n[[hop]]\nn = 1")
            .unwrap_err()
            .to_string();
        assert!(bad.starts_with("line 3: "), "{bad}");
    }

    /// The journey files of `labs/` parse, and every hop of the reference journey resolves
    /// in each of its shapes (the cloud or a router beyond the carrier, Ethernet or IPv4
    /// PDU sessions, the balancer and controller on one host or two, with or without a
    /// coupon).
    #[test]
    fn the_labs_journeys_resolve() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs/journeys");
        let order = Plan::load(&dir.join("order.toml")).unwrap();
        let ping = Plan::load(&dir.join("ping.toml")).unwrap();
        let hops = ping.hops(&Fake, &Facts::new()).unwrap();
        assert_eq!(
            hops[1].expect[4],
            ("ip.ttl".into(), "63".into()),
            "k1's 64, less r1"
        );
        assert_eq!(
            hops[3].expect[4],
            ("ip.ttl".into(), "64".into()),
            "h2's 65, less r1"
        );
        let base = [
            ("ue_ip", "10.45.0.2"),
            ("imsi", "001010000000001"),
            ("server", "203.0.113.10"),
            ("ext_ip", "198.51.100.1"),
            ("ext_port", "40000"),
            ("ue_port", "50000"),
            ("gw_mac", "02:00:00:00:00:01"),
            ("first_router", "a2"),
            ("ctl", "ctl1"),
            ("lb_host", "hosta"),
            ("ctl_host", "hostb"),
            ("db", "db1"),
            ("dns_server", "198.51.100.53"),
            ("dns_port", "40001"),
            ("dns_ext_ip", "198.51.100.1"),
            ("dns_ext_port", "40002"),
            ("dns_ecs", "198.51.100.0"),
            ("gslb_vips", "203.0.113.10,203.0.113.11"),
            ("gslb_vip1", "203.0.113.10"),
            ("dns2_port", "40003"),
            ("pic_path", "/p/1.png"),
            ("pic_etag", "\"e1\""),
            ("pic_size", "10000"),
            ("edge_ip", "198.51.100.80"),
            ("pic_ext_port", "40004"),
        ];
        let mut names = Vec::new();
        for cloud in ["true", "false"] {
            for eth in ["true", "false"] {
                for cross in ["true", "false"] {
                    for coupon in ["true", "false"] {
                        for how in ["none", "dns", "httpdns"] {
                            let mut f = facts(&base);
                            for (k, v) in [
                                ("cloud", cloud),
                                ("rpc", cloud),
                                ("eth_pdu", eth),
                                ("cross_host", cross),
                                ("coupon", coupon),
                                ("dns", if how == "dns" { "true" } else { "false" }),
                                ("dns_again", if how == "dns" { "true" } else { "false" }),
                                ("httpdns", if how == "httpdns" { "true" } else { "false" }),
                                // The product page's pictures, in the labs with DNS.
                                ("cdn", if how == "dns" { "true" } else { "false" }),
                            ] {
                                f.insert(k.into(), v.into());
                            }
                            let hops = order.hops(&Fake, &f).unwrap();
                            let n: Vec<String> = hops.iter().map(|h| h.n.clone()).collect();
                            names.push(n.join(" "));
                            order.summary(&Fake, &f).unwrap();
                        }
                    }
                }
            }
        }
        // The reference lab: every hop of journey.md section 3 in the report's order.
        assert_eq!(
            names[0],
            "1 2 3 4 5 6 7 8 9 10 11 12 13 14 rpc1 rpc2 rpc3 rpc4 14' 10' 9' 5' 4' 3' 2' 1'"
        );
        assert!(names.contains(
            &"1 2 3 4 5 6 7 8 9 10 11 12 14 rpc1 rpc2 rpc4 14' 10' 9' 5' 4' 3' 2' 1'".to_string()
        ));
        assert!(names.contains(&"1 2 3 4 5 (lab) 5' 4' 3' 2' 1'".to_string()));
        // Stage 4 before the order: N1-N7 of section 6, or HTTPDNS's H1-H5.
        assert_eq!(
            names[1],
            "N1 N1 (NAT) N2 N2' N3 N3' N4 N4' N5 N5' N6 N7 N7 (phone) N1 (again) N7 (again) C1 C2' C3' C4 C4' P1 P2 P3 P3' P2' 1 2 3 4 5 6 7 8 9 10 11 12 13 14 rpc1 rpc2 rpc3 rpc4 14' 10' 9' 5' 4' 3' 2' 1'"
        );
        assert!(names[2].starts_with("H1 H2 H3 H4 H5 1 2 "), "{}", names[2]);
    }
}
