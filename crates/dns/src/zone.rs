//! A zone loaded from an RFC 1035 master file, and the lookup of RFC 1034 §4.3.2 over it:
//! an answer (following CNAMEs inside the zone), a referral at a zone cut with its glue,
//! NODATA or NXDOMAIN with the SOA for negative caching (RFC 2308).

use anyhow::{bail, Context, Result};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType};
use hickory_proto::serialize::txt::Parser;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One zone: its origin and its record sets by owner name and type.
#[derive(Debug, Clone)]
pub struct Zone {
    pub origin: Name,
    sets: HashMap<LowerName, BTreeMap<RecordType, RecordSet>>,
}

/// What a zone says about a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Records of the name and type (and the CNAMEs that led there); authoritative.
    Answer(Vec<Record>),
    /// Below a zone cut: the child's NS records and the glue this zone has for them. The
    /// CNAMEs that led there come first, if any.
    Referral {
        cnames: Vec<Record>,
        ns: Vec<Record>,
        glue: Vec<Record>,
    },
    /// The name exists, not with this type: the SOA for the negative answer.
    NoData { cnames: Vec<Record>, soa: Record },
    /// The name does not exist.
    NxDomain { cnames: Vec<Record>, soa: Record },
}

/// How many CNAMEs a lookup follows inside one zone before it stops (a loop).
const MAX_CNAMES: usize = 8;

impl Zone {
    /// Loads a master file whose origin is `origin` (`$ORIGIN` in the file wins).
    pub fn load(path: &Path, origin: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read zone file {}", path.display()))?;
        Self::parse(&text, origin).with_context(|| format!("zone file {}", path.display()))
    }

    /// A zone from master-file text.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let origin = Name::from_ascii(origin).with_context(|| format!("origin {origin:?}"))?;
        let (origin, map) = Parser::new(text, None, Some(origin))
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut sets: HashMap<LowerName, BTreeMap<RecordType, RecordSet>> = HashMap::new();
        for (key, set) in map {
            if !origin.zone_of(set.name()) {
                bail!("{} is not in the zone {origin}", set.name());
            }
            sets.entry(key.name)
                .or_default()
                .insert(key.record_type, set);
        }
        let z = Self { origin, sets };
        if z.soa().is_none() {
            bail!("the zone {} has no SOA at its origin", z.origin);
        }
        if z.set(&z.origin.clone().into(), RecordType::NS).is_none() {
            bail!("the zone {} has no NS at its origin", z.origin);
        }
        Ok(z)
    }

    fn set(&self, name: &LowerName, t: RecordType) -> Option<&RecordSet> {
        self.sets.get(name).and_then(|m| m.get(&t))
    }

    fn records(&self, name: &LowerName, t: RecordType) -> Vec<Record> {
        self.set(name, t)
            .map(|s| s.records_without_rrsigs().cloned().collect())
            .unwrap_or_default()
    }

    /// The SOA at the origin.
    pub fn soa(&self) -> Option<Record> {
        self.records(&self.origin.clone().into(), RecordType::SOA)
            .into_iter()
            .next()
    }

    /// The SOA for a negative answer: its TTL the smaller of its own and its MINIMUM field
    /// (RFC 2308 §3).
    fn negative_soa(&self) -> Record {
        let mut soa = self.soa().expect("checked at load");
        if let RData::SOA(s) = &soa.data {
            soa.ttl = soa.ttl.min(s.minimum);
        }
        soa
    }

    /// Whether `name` is in this zone (at or below the origin).
    pub fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }

    /// Every record set, for `d11 show NODE zones`: (name, type, TTL, data).
    pub fn rows(&self) -> Vec<(String, String, u32, String)> {
        let mut out: Vec<_> = self
            .sets
            .values()
            .flat_map(|m| m.values())
            .flat_map(|s| s.records_without_rrsigs())
            .map(|r| {
                (
                    r.name.to_string(),
                    r.record_type().to_string(),
                    r.ttl,
                    r.data.to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The zone cut at or above `name` (below the origin), if any: the delegation's name.
    fn cut(&self, name: &Name) -> Option<LowerName> {
        let depth = usize::from(self.origin.num_labels());
        let n = usize::from(name.num_labels());
        (depth + 1..=n)
            .map(|k| LowerName::from(name.trim_to(k)))
            .find(|c| self.set(c, RecordType::NS).is_some())
    }

    /// Whether some name of the zone lies below `name` (an empty non-terminal exists).
    fn has_descendant(&self, name: &Name) -> bool {
        let name = LowerName::from(name);
        self.sets
            .keys()
            .any(|k| k.num_labels() > name.num_labels() && name.zone_of(k))
    }

    /// The glue for NS records: addresses of their targets that this zone holds (also the
    /// additional section of an NS answer, RFC 1035 §3.3.11).
    pub fn glue(&self, ns: &[Record]) -> Vec<Record> {
        let mut out = Vec::new();
        for r in ns {
            if let RData::NS(t) = &r.data {
                let t = LowerName::from(&t.0);
                for ty in [RecordType::A, RecordType::AAAA] {
                    out.extend(self.records(&t, ty));
                }
            }
        }
        out
    }

    /// RFC 1034 §4.3.2 step 3 for `name` and `qtype` (`ANY` answers with one record set,
    /// RFC 8482).
    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Lookup {
        let mut cnames = Vec::new();
        let mut name = name.clone();
        loop {
            if let Some(cut) = self.cut(&name) {
                // At the cut itself a DS question belongs to the parent; everything else is
                // the child's.
                let at_cut = LowerName::from(&name) == cut;
                if !(at_cut && qtype == RecordType::DS) {
                    let ns = self.records(&cut, RecordType::NS);
                    let glue = self.glue(&ns);
                    return Lookup::Referral { cnames, ns, glue };
                }
            }
            let key = LowerName::from(&name);
            let Some(types) = self.sets.get(&key) else {
                return if self.has_descendant(&name) {
                    Lookup::NoData {
                        cnames,
                        soa: self.negative_soa(),
                    }
                } else {
                    Lookup::NxDomain {
                        cnames,
                        soa: self.negative_soa(),
                    }
                };
            };
            if qtype == RecordType::ANY {
                let first = types
                    .values()
                    .next()
                    .map(|s| s.records_without_rrsigs().cloned().collect::<Vec<Record>>());
                cnames.extend(first.unwrap_or_default());
                return Lookup::Answer(cnames);
            }
            if let Some(s) = types.get(&qtype) {
                cnames.extend(s.records_without_rrsigs().cloned());
                return Lookup::Answer(cnames);
            }
            if let Some(c) = types.get(&RecordType::CNAME) {
                let Some(rec) = c.records_without_rrsigs().next().cloned() else {
                    break;
                };
                let RData::CNAME(target) = rec.data.clone() else {
                    break;
                };
                cnames.push(rec);
                if cnames.len() > MAX_CNAMES || !self.contains(&target.0) {
                    // Out of the zone: the resolver follows it.
                    return Lookup::Answer(cnames);
                }
                name = target.0;
                continue;
            }
            break;
        }
        Lookup::NoData {
            cnames,
            soa: self.negative_soa(),
        }
    }
}
