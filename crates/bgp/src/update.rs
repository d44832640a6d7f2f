//! UPDATE messages to and from the RIB's terms: the withdrawn prefixes, the announced ones
//! and their attributes.
//!
//! Errors in path attributes are handled as RFC 7606 says: NetGauze is asked to keep parsing
//! past a malformed attribute (it lists what it skipped), and an UPDATE with such an error,
//! or that announces prefixes without ORIGIN, AS_PATH or NEXT_HOP (§3.d), is treated as a
//! withdrawal of the prefixes it announces ("treat-as-withdraw") rather than a reset of the
//! session. An AS_PATH on a 2-octet session is merged with AS4_PATH (RFC 6793 §4.2.3).

use crate::rib::{Attrs, Segment};
use ipnet::Ipv4Net;
use netgauze_bgp_pkt::community::Community;
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress};
use netgauze_bgp_pkt::path_attribute::{
    As2PathSegment, As4Path, As4PathSegment, AsPath, AsPathSegmentType, Communities,
    LocalPreference, MultiExitDiscriminator, NextHop, Origin, PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;

/// What an UPDATE says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub withdrawn: Vec<Ipv4Net>,
    pub announced: Vec<Ipv4Net>,
    /// The attributes of the announced prefixes; `None` when they are to be treated as
    /// withdrawn (RFC 7606), with the reason in `error`.
    pub attrs: Option<Attrs>,
    pub error: Option<String>,
}

/// Reads an UPDATE; `attr_errors`: the malformed attributes NetGauze skipped.
pub fn parse(u: &BgpUpdateMessage, attr_errors: usize) -> Parsed {
    let withdrawn = u
        .withdraw_routes()
        .iter()
        .map(|a| a.network().address())
        .collect();
    let announced: Vec<Ipv4Net> = u.nlri().iter().map(|a| a.network().address()).collect();
    let mut origin = None;
    let mut as_path: Option<Vec<Segment>> = None;
    let mut as4_path: Option<Vec<Segment>> = None;
    let mut attrs = Attrs::local(std::net::Ipv4Addr::UNSPECIFIED);
    let mut next_hop = None;
    for a in u.path_attributes() {
        match a.value() {
            PathAttributeValue::Origin(o) => origin = Some(u8::from(*o)),
            PathAttributeValue::AsPath(AsPath::As2PathSegments(s)) => {
                as_path = Some(
                    s.iter()
                        .map(|s| Segment {
                            set: s.segment_type() == AsPathSegmentType::AsSet,
                            asns: s.as_numbers().iter().map(|&a| u32::from(a)).collect(),
                        })
                        .collect(),
                )
            }
            PathAttributeValue::AsPath(AsPath::As4PathSegments(s)) => as_path = Some(segments4(s)),
            PathAttributeValue::As4Path(p) => as4_path = Some(segments4(p.segments())),
            PathAttributeValue::NextHop(n) => next_hop = Some(n.next_hop()),
            PathAttributeValue::MultiExitDiscriminator(m) => attrs.med = Some(m.metric()),
            PathAttributeValue::LocalPreference(l) => attrs.local_pref = Some(l.metric()),
            PathAttributeValue::Communities(c) => {
                attrs.communities = c.communities().iter().map(Community::value).collect()
            }
            _ => {}
        }
    }
    let mut p = Parsed {
        withdrawn,
        announced,
        attrs: None,
        error: None,
    };
    if p.announced.is_empty() {
        return p;
    }
    if attr_errors > 0 {
        p.error = Some(format!(
            "{attr_errors} malformed attribute(s): treat-as-withdraw"
        ));
        return p;
    }
    let (Some(origin), Some(mut path), Some(nh)) = (origin, as_path, next_hop) else {
        p.error = Some("a well-known attribute is missing: treat-as-withdraw".into());
        return p;
    };
    if let Some(p4) = as4_path {
        path = merge_as4(path, p4);
    }
    attrs.origin = origin;
    attrs.as_path = path;
    attrs.next_hop = nh;
    p.attrs = Some(attrs);
    p
}

fn segments4(s: &[As4PathSegment]) -> Vec<Segment> {
    s.iter()
        .map(|s| Segment {
            set: s.segment_type() == AsPathSegmentType::AsSet,
            asns: s.as_numbers().to_vec(),
        })
        .collect()
}

/// RFC 6793 §4.2.3: the AS_PATH's leading ASes (as many as it has more than AS4_PATH), then
/// AS4_PATH; AS4_PATH is ignored when longer.
fn merge_as4(path: Vec<Segment>, as4: Vec<Segment>) -> Vec<Segment> {
    let len = |v: &[Segment]| v.iter().map(|s| s.asns.len()).sum::<usize>();
    let (n, n4) = (len(&path), len(&as4));
    if n4 > n {
        return path;
    }
    let mut keep = n - n4;
    let mut out = Vec::new();
    for s in path {
        if keep == 0 {
            break;
        }
        let take = keep.min(s.asns.len());
        out.push(Segment {
            set: s.set,
            asns: s.asns[..take].to_vec(),
        });
        keep -= take;
    }
    out.extend(as4);
    out
}

fn nlri(prefixes: &[Ipv4Net]) -> Vec<Ipv4UnicastAddress> {
    prefixes
        .iter()
        .filter_map(|p| Ipv4Unicast::from_net(p.trunc()).ok())
        .map(Ipv4UnicastAddress::new_no_path_id)
        .collect()
}

/// An UPDATE withdrawing `withdrawn` and announcing `announce` with its attributes; `asn4`:
/// 4-octet AS_PATH (else 2-octet with AS_TRANS and AS4_PATH); `ibgp`: LOCAL_PREF is sent.
pub fn build(
    withdrawn: &[Ipv4Net],
    announce: Option<(&Attrs, &[Ipv4Net])>,
    asn4: bool,
    ibgp: bool,
) -> BgpUpdateMessage {
    let mut attrs = Vec::new();
    let mut prefixes = Vec::new();
    if let Some((a, p)) = announce {
        prefixes = nlri(p);
        let well_known = |v| PathAttribute::from(false, true, false, false, v).ok();
        let optional = |v| PathAttribute::from(true, true, false, false, v).ok();
        let kind = |set: bool| {
            if set {
                AsPathSegmentType::AsSet
            } else {
                AsPathSegmentType::AsSequence
            }
        };
        let four: Vec<As4PathSegment> = a
            .as_path
            .iter()
            .map(|s| As4PathSegment::new(kind(s.set), s.asns.clone()))
            .collect();
        let path = if asn4 {
            AsPath::as4_path_segments(four.clone())
        } else {
            AsPath::as2_path_segments(
                a.as_path
                    .iter()
                    .map(|s| {
                        let two: Vec<u16> = s
                            .asns
                            .iter()
                            .map(|&x| u16::try_from(x).unwrap_or(crate::session::AS_TRANS))
                            .collect();
                        As2PathSegment::new(kind(s.set), two)
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let origin = Origin::try_from(a.origin).unwrap_or(Origin::Incomplete);
        attrs.extend(well_known(PathAttributeValue::Origin(origin)));
        attrs.extend(well_known(PathAttributeValue::AsPath(path)));
        if !asn4 && a.as_path.iter().any(|s| s.asns.iter().any(|&x| x > 0xffff)) {
            attrs.extend(optional(PathAttributeValue::As4Path(As4Path::new(four))));
        }
        attrs.extend(well_known(PathAttributeValue::NextHop(NextHop::new(
            a.next_hop,
        ))));
        if let Some(m) = a.med {
            attrs.extend(
                PathAttribute::from(
                    true,
                    false,
                    false,
                    false,
                    PathAttributeValue::MultiExitDiscriminator(MultiExitDiscriminator::new(m)),
                )
                .ok(),
            );
        }
        if ibgp {
            attrs.extend(well_known(PathAttributeValue::LocalPreference(
                LocalPreference::new(a.local_pref.unwrap_or(100)),
            )));
        }
        if !a.communities.is_empty() {
            let c: Vec<Community> = a.communities.iter().map(|&c| Community::new(c)).collect();
            attrs.extend(optional(PathAttributeValue::Communities(Communities::new(
                c,
            ))));
        }
    }
    BgpUpdateMessage::new(nlri(withdrawn), attrs, prefixes)
}
