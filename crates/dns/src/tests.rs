//! The authoritative logic over the lab's own zone files (`labs/dns/`), with queries built and
//! answers read by hickory-proto.

use super::*;
use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RecordType};
use std::path::Path;

fn zone(file: &str, origin: &str) -> Zone {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs/dns");
    Zone::load(&dir.join(file), origin).unwrap()
}

fn root() -> Authority {
    Authority::new(vec![zone("root.zone", ".")])
}
fn tld() -> Authority {
    Authority::new(vec![zone("example.zone", "example.")])
}
fn shop() -> Authority {
    Authority::new(vec![zone("shop.example.zone", "shop.example.")])
}

fn asked(transport: Transport) -> Asked {
    Asked {
        transport,
        peer: Ipv4Addr::new(198, 51, 100, 53),
        now: Instant::now(),
    }
}

fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0x1111;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn ask(a: &mut Authority, name: &str, t: RecordType) -> Message {
    let r = a
        .answer(&query(name, t, true), asked(Transport::Udp))
        .unwrap();
    Message::from_vec(&r).unwrap()
}

fn names(rs: &[hickory_proto::rr::Record]) -> Vec<String> {
    rs.iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect()
}

#[test]
fn the_root_refers_to_the_tld_with_glue() {
    let mut a = root();
    let m = ask(&mut a, "www.shop.example.", RecordType::A);
    assert_eq!(m.metadata.id, 0x1111);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert!(!m.metadata.authoritative, "a referral is not authoritative");
    assert!(m.metadata.recursion_desired && !m.metadata.recursion_available);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(names(&m.authorities), ["example. NS tld-dns.example."]);
    assert_eq!(names(&m.additionals), ["tld-dns.example. A 192.0.2.11"]);
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(EDNS_PAYLOAD));
    assert_eq!(a.c.dns_referrals, 1);
    // The root's own NS, authoritatively.
    let m = ask(&mut a, ".", RecordType::NS);
    assert!(m.metadata.authoritative);
    assert_eq!(names(&m.answers), [". NS root-dns.example."]);
    assert_eq!(names(&m.additionals), ["root-dns.example. A 192.0.2.10"]);
}

/// The CDN's zone (section 7): the picture name's CNAME into the CDN's GSLB, and that name's
/// zone referred to cdn-gslb with glue.
#[test]
fn the_cdn_zone_answers_the_cname_and_refers_to_its_gslb() {
    let mut a = Authority::new(vec![zone("cdnco.example.zone", "cdnco.example.")]);
    let m = ask(&mut a, "img.shop.example.cdnco.example.", RecordType::A);
    assert!(m.metadata.authoritative);
    assert_eq!(
        names(&m.answers),
        ["img.shop.example.cdnco.example. CNAME img-shop.gslb.cdnco.example."]
    );
    assert_eq!(
        names(&m.authorities),
        ["gslb.cdnco.example. NS cdn-gslb.cdnco.example."]
    );
    assert_eq!(
        names(&m.additionals),
        ["cdn-gslb.cdnco.example. A 192.0.2.54"]
    );
}

#[test]
fn the_tld_refers_to_the_shop() {
    let m = ask(&mut tld(), "www.shop.example.", RecordType::A);
    assert_eq!(
        names(&m.authorities),
        ["shop.example. NS auth-dns.shop.example."]
    );
    assert_eq!(
        names(&m.additionals),
        ["auth-dns.shop.example. A 203.0.113.53"]
    );
}

/// N4 of docs/journey.md: the CNAME, authoritatively, and the referral of its target to the
/// GSLB with the glue.
#[test]
fn the_shop_answers_the_cname_and_refers_its_target_to_the_gslb() {
    let m = ask(&mut shop(), "www.shop.example.", RecordType::A);
    assert!(m.metadata.authoritative);
    assert_eq!(
        names(&m.answers),
        ["www.shop.example. CNAME vip.shop.example."]
    );
    assert_eq!(
        names(&m.authorities),
        ["vip.shop.example. NS gslb.shop.example."]
    );
    assert_eq!(names(&m.additionals), ["gslb.shop.example. A 203.0.113.54"]);
    // Asked for the CNAME itself: just that.
    let m = ask(&mut shop(), "www.shop.example.", RecordType::CNAME);
    assert_eq!(
        names(&m.answers),
        ["www.shop.example. CNAME vip.shop.example."]
    );
    assert!(m.authorities.is_empty());
}

#[test]
fn nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl() {
    let mut a = shop();
    let m = ask(&mut a, "nope.shop.example.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative && m.answers.is_empty());
    let [soa] = m.authorities.as_slice() else {
        panic!("{:?}", m.authorities)
    };
    assert_eq!(soa.record_type(), RecordType::SOA);
    // min(SOA TTL 3600, MINIMUM 300), RFC 2308 §3.
    assert_eq!(soa.ttl, 300);
    let m = ask(&mut a, "gslb.shop.example.", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    assert_eq!((a.c.dns_nxdomain, a.c.dns_nodata), (1, 1));
    // Not our zone: refused.
    let m = ask(&mut a, "www.other.example.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn any_gets_one_record_set_as_rfc_8482_allows() {
    let m = ask(&mut shop(), "shop.example.", RecordType::ANY);
    assert!(!m.answers.is_empty());
    let t = m.answers[0].record_type();
    assert!(m.answers.iter().all(|r| r.record_type() == t), "one set");
}

#[test]
fn an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp() {
    // 40 A records under one name: over 512 octets.
    let mut text = String::from(
        "$ORIGIN big.example.\n$TTL 60\n@ SOA ns hm 1 1 1 1 1\n@ NS ns\nns A 192.0.2.1\n",
    );
    for i in 0..40 {
        text.push_str(&format!("many A 10.0.0.{i}\n"));
    }
    let mut a = Authority::new(vec![Zone::parse(&text, "big.example.").unwrap()]);
    let q = query("many.big.example.", RecordType::A, false);
    let m = Message::from_vec(&a.answer(&q, asked(Transport::Udp)).unwrap()).unwrap();
    assert!(m.metadata.truncation && m.answers.is_empty());
    assert_eq!(m.queries.len(), 1);
    let m = Message::from_vec(&a.answer(&q, asked(Transport::Tcp)).unwrap()).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 40);
    // With EDNS the client's 1232 octets are enough.
    let q = query("many.big.example.", RecordType::A, true);
    let m = Message::from_vec(&a.answer(&q, asked(Transport::Udp)).unwrap()).unwrap();
    assert_eq!(m.answers.len(), 40);
    assert_eq!(a.c.dns_truncated, 1);
}

/// Malformed queries (from RFC 1035's rules: compression loops, labels over 63 octets, counts
/// beyond the message, no question) get FORMERR or are dropped, and are counted; the server
/// answers the next good query.
#[test]
fn bad_queries_get_formerr_or_are_dropped_and_counted() {
    let mut a = shop();
    let good = query("www.shop.example.", RecordType::A, false);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // A header alone that says one question follows.
    cases.push(("count beyond the message", good[..12].to_vec()));
    // A name that points at itself.
    let mut lp = good[..12].to_vec();
    lp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    cases.push(("compression loop", lp));
    // A 64-octet label.
    let mut long = good[..12].to_vec();
    long.push(64);
    long.extend_from_slice(&[b'a'; 64]);
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    cases.push(("label over 63", long));
    // No question at all.
    let mut none = good[..12].to_vec();
    none[4..6].copy_from_slice(&[0, 0]);
    cases.push(("no question", none));
    // The question cut in the middle.
    cases.push(("truncated", good[..good.len() - 3].to_vec()));
    for (what, q) in &cases {
        let r = a.answer(q, asked(Transport::Udp)).expect(what);
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{what}");
        assert_eq!(m.metadata.id, 0x1111, "{what}");
    }
    assert_eq!(a.c.dns_formerr, cases.len() as u64);
    // Too short for a header, and a response: dropped.
    assert!(a.answer(&good[..5], asked(Transport::Udp)).is_none());
    let mut resp = good.clone();
    resp[2] |= 0x80;
    assert!(a.answer(&resp, asked(Transport::Udp)).is_none());
    assert_eq!(a.c.dns_dropped, 2);
    // Another opcode: NOTIMP.
    let mut notify = good.clone();
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    let m = Message::from_vec(&a.answer(&notify, asked(Transport::Udp)).unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    // And the server goes on.
    let m = Message::from_vec(&a.answer(&good, asked(Transport::Udp)).unwrap()).unwrap();
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn zone_files_with_mistakes_say_what() {
    let err = |t: &str| format!("{:#}", Zone::parse(t, "z.example.").unwrap_err());
    assert!(err("$TTL 1\n@ NS ns\nns A 192.0.2.1\n").contains("no SOA"));
    assert!(err("$TTL 1\n@ SOA ns hm 1 1 1 1 1\n").contains("no NS"));
    assert!(
        err("$TTL 1\n@ SOA ns hm 1 1 1 1 1\n@ NS ns\nother.example. A 192.0.2.1\n")
            .contains("not in the zone")
    );
    assert!(!err("$TTL 1\n@ SOA ns hm 1 1 1 1 1\n@ NS ns\nns A 300.0.0.1\n").is_empty());
}

mod resolver {
    use super::*;
    use crate::resolver::{Out, Resolver};
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::{Duration, Instant};

    const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 45, 0, 2), 40000);

    /// The lab's servers in memory, by address; the GSLB stands in as a plain zone.
    fn servers() -> HashMap<Ipv4Addr, Authority> {
        let vip = "$ORIGIN vip.shop.example.\n$TTL 30\n@ SOA gslb.shop.example. hm 1 1 1 1 10\n@ NS gslb.shop.example.\n@ A 203.0.113.10\n@ A 203.0.113.11\n@ A 203.0.113.12\n";
        HashMap::from([
            (Ipv4Addr::new(192, 0, 2, 10), root()),
            (Ipv4Addr::new(192, 0, 2, 11), tld()),
            (Ipv4Addr::new(203, 0, 113, 53), shop()),
            (
                Ipv4Addr::new(203, 0, 113, 54),
                Authority::new(vec![Zone::parse(vip, "vip.shop.example.").unwrap()]),
            ),
        ])
    }

    fn ldns() -> Resolver {
        Resolver::new(
            vec![(
                Name::from_ascii("root-dns.example.").unwrap(),
                Ipv4Addr::new(192, 0, 2, 10),
            )],
            7,
        )
    }

    /// Runs the resolver against `net` until it answers the client; the upstream queries
    /// it sent, in order. A server that is not in `net` never answers.
    fn resolve(
        r: &mut Resolver,
        net: &mut HashMap<Ipv4Addr, Authority>,
        now: &mut Instant,
        name: &str,
        t: RecordType,
    ) -> (Message, Vec<Ipv4Addr>) {
        resolve_for(r, net, now, CLIENT, name, t)
    }

    /// [`resolve`] for the client at `client`.
    fn resolve_for(
        r: &mut Resolver,
        net: &mut HashMap<Ipv4Addr, Authority>,
        now: &mut Instant,
        client: SocketAddrV4,
        name: &str,
        t: RecordType,
    ) -> (Message, Vec<Ipv4Addr>) {
        let (m, went) = resolve_asking(r, net, now, client, name, t);
        (m, went.into_iter().map(|(a, _)| a).collect())
    }

    /// [`resolve_for`], with the question sent to each server (`NAME TYPE`).
    fn resolve_asking(
        r: &mut Resolver,
        net: &mut HashMap<Ipv4Addr, Authority>,
        now: &mut Instant,
        client: SocketAddrV4,
        name: &str,
        t: RecordType,
    ) -> (Message, Vec<(Ipv4Addr, String)>) {
        let mut outs = r.on_query(*now, client, &query(name, t, true), Transport::Udp);
        let mut went = Vec::new();
        loop {
            let Some(o) = outs.pop() else {
                *now += r.timeout;
                outs.extend(r.poll(*now));
                assert!(!outs.is_empty(), "the resolver went quiet");
                continue;
            };
            match o {
                Out::Client { to, bytes } => {
                    assert_eq!(to, client);
                    return (Message::from_vec(&bytes).unwrap(), went);
                }
                Out::Server { to, id, bytes, tcp } => {
                    let q = Message::from_vec(&bytes).unwrap().queries[0].clone();
                    went.push((to, format!("{} {}", q.name(), q.query_type())));
                    let t = if tcp { Transport::Tcp } else { Transport::Udp };
                    if let Some(a) = net.get_mut(&to) {
                        if let Some(resp) = a.answer(&bytes, asked(t)) {
                            outs.extend(r.on_response(*now, to, id, &resp));
                        }
                    }
                }
            }
        }
    }

    /// N1-N7 of docs/journey.md section 6: root, TLD, shop (CNAME and referral), GSLB; then
    /// the same question is a cache hit with the TTL counting down.
    #[test]
    fn resolves_www_through_root_tld_shop_and_gslb_then_from_the_cache() {
        let (mut r, mut net, mut now) = (ldns(), servers(), Instant::now());
        let (m, asked) = resolve(
            &mut r,
            &mut net,
            &mut now,
            "www.shop.example.",
            RecordType::A,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.recursion_available && m.metadata.id == 0x1111);
        assert_eq!(
            names(&m.answers),
            [
                "www.shop.example. CNAME vip.shop.example.",
                "vip.shop.example. A 203.0.113.10",
                "vip.shop.example. A 203.0.113.11",
                "vip.shop.example. A 203.0.113.12"
            ]
        );
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            asked,
            [
                ip("192.0.2.10"),
                ip("192.0.2.11"),
                ip("203.0.113.53"),
                ip("203.0.113.54")
            ]
        );
        assert_eq!((r.c.cache_misses, r.c.upstream_queries), (1, 4));
        // Ten seconds later: from the cache, no upstream query, TTLs counting down.
        now += Duration::from_secs(10);
        let (m, asked) = resolve(
            &mut r,
            &mut net,
            &mut now,
            "www.shop.example.",
            RecordType::A,
        );
        assert!(asked.is_empty());
        assert_eq!(m.answers.len(), 4);
        assert_eq!(m.answers[1].ttl, 20, "30 s of TTL, 10 gone");
        assert_eq!(r.c.cache_hits, 1);
        // Another name of the shop: straight to its server (the delegation is cached).
        let (m, asked) = resolve(
            &mut r,
            &mut net,
            &mut now,
            "gslb.shop.example.",
            RecordType::A,
        );
        assert_eq!(names(&m.answers), ["gslb.shop.example. A 203.0.113.54"]);
        assert_eq!(asked, [ip("203.0.113.53")]);
    }

    /// ECS towards the GSLB only: the client's /24 goes to it (and to nobody else), its
    /// answer is cached for the scope it gave, and a client outside that scope is asked for
    /// again (and gets its own region).
    #[test]
    fn ecs_goes_to_the_gslb_and_answers_are_cached_by_their_scope() {
        let (mut r, mut net, mut now) = (ldns(), servers(), Instant::now());
        net.insert(Ipv4Addr::new(203, 0, 113, 54), super::gslb());
        r.ecs_zones = vec![Name::from_ascii("vip.shop.example.").unwrap()];
        let at = |a: [u8; 4]| SocketAddrV4::new(Ipv4Addr::from(a), 5353);
        let (m, asked) = resolve_for(
            &mut r,
            &mut net,
            &mut now,
            at([198, 51, 100, 10]),
            "www.shop.example.",
            RecordType::A,
        );
        assert_eq!(
            names(&m.answers)[1..],
            [
                "vip.shop.example. A 203.0.113.10",
                "vip.shop.example. A 203.0.113.11",
                "vip.shop.example. A 203.0.113.12"
            ]
        );
        assert_eq!(asked.len(), 4);
        let g = &net[&Ipv4Addr::new(203, 0, 113, 54)]
            .gslb
            .as_ref()
            .unwrap()
            .0;
        let d = g.show_decisions(now);
        assert_eq!(
            (d[0]["client"].as_str(), d[0]["from"].as_str()),
            (Some("198.51.100.0"), Some("ecs/24"))
        );
        // Another client of the same /26: a cache hit.
        let (m, asked) = resolve_for(
            &mut r,
            &mut net,
            &mut now,
            at([198, 51, 100, 20]),
            "www.shop.example.",
            RecordType::A,
        );
        assert!(asked.is_empty());
        assert_eq!(m.answers.len(), 4);
        // The carrier's /24 is what ldns sends (RFC 7871's default), so north's /26 inside
        // it is not seen apart: a client there is a hit too. One in north's 100.64.0.0/10 is
        // outside the cached scope, so the GSLB is asked again, and its /10 scope is cached.
        let (_, asked) = resolve_for(
            &mut r,
            &mut net,
            &mut now,
            at([198, 51, 100, 200]),
            "www.shop.example.",
            RecordType::A,
        );
        assert!(asked.is_empty());
        let (m, asked) = resolve_for(
            &mut r,
            &mut net,
            &mut now,
            at([100, 64, 1, 1]),
            "www.shop.example.",
            RecordType::A,
        );
        assert_eq!(asked, [Ipv4Addr::new(203, 0, 113, 54)]);
        assert_eq!(
            names(&m.answers)[1..],
            [
                "vip.shop.example. A 203.0.113.20",
                "vip.shop.example. A 203.0.113.21"
            ]
        );
        let cache = r.show_cache(now);
        let scopes: Vec<_> = cache
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "vip.shop.example." && e["type"] == "A")
            .map(|e| e["ecs_scope"].clone())
            .collect();
        let mut s: Vec<String> = scopes
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        s.sort();
        assert_eq!(s, ["100.64.0.0/10", "198.51.100.0/24"].map(String::from));
        let (_, asked) = resolve_for(
            &mut r,
            &mut net,
            &mut now,
            at([100, 100, 0, 1]),
            "www.shop.example.",
            RecordType::A,
        );
        assert!(asked.is_empty(), "inside the /10");
    }

    /// An answer too big for UDP: the shop's server truncates it, the resolver asks again
    /// over TCP (RFC 7766) and caches all of it; its own answer to a UDP client is cut to the
    /// client's size with TC, and whole over TCP.
    #[test]
    fn a_truncated_answer_is_asked_again_over_tcp() {
        let (mut r, mut net, mut now) = (ldns(), servers(), Instant::now());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs/dns");
        let mut text = std::fs::read_to_string(dir.join("shop.example.zone")).unwrap();
        for i in 0..120 {
            text += &format!("big 60 IN A 10.0.{}.{}\n", i / 200, i % 200 + 1);
        }
        net.insert(
            Ipv4Addr::new(203, 0, 113, 53),
            Authority::new(vec![Zone::parse(&text, "shop.example.").unwrap()]),
        );
        let (m, asked) = resolve(
            &mut r,
            &mut net,
            &mut now,
            "big.shop.example.",
            RecordType::A,
        );
        assert_eq!(r.c.tcp_retries, 1);
        // root, TLD, the shop over UDP (truncated), the shop over TCP.
        assert_eq!(asked.len(), 4);
        assert!(m.metadata.truncation && m.answers.is_empty(), "{m:?}");
        assert_eq!(r.c.truncated, 1);
        let outs = r.on_query(
            now,
            CLIENT,
            &query("big.shop.example.", RecordType::A, true),
            Transport::Tcp,
        );
        let [Out::Client { bytes, .. }] = outs.as_slice() else {
            panic!("{outs:?}")
        };
        let m = Message::from_vec(bytes).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 120);
    }

    /// QNAME minimisation (RFC 9156): each server is asked for one label below its zone,
    /// type A, the shop's server the whole question; the answers are the same. A minimised
    /// NXDOMAIN ends the resolution (RFC 8020).
    #[test]
    fn qname_minimisation_asks_each_server_one_label_more() {
        let (mut r, mut net, mut now) = (ldns(), servers(), Instant::now());
        r.qname_minimisation = true;
        let (m, asked) = resolve_asking(
            &mut r,
            &mut net,
            &mut now,
            CLIENT,
            "www.shop.example.",
            RecordType::A,
        );
        let q: Vec<&str> = asked.iter().map(|(_, q)| q.as_str()).collect();
        assert_eq!(
            q,
            [
                "example. A",
                "shop.example. A",
                "www.shop.example. A",
                "vip.shop.example. A"
            ]
        );
        assert_eq!(m.answers.len(), 4);
        // Two labels below the shop's zone: a minimised NXDOMAIN for the first says enough.
        let (m, asked) = resolve_asking(
            &mut r,
            &mut net,
            &mut now,
            CLIENT,
            "a.nope.shop.example.",
            RecordType::TXT,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let q: Vec<&str> = asked.iter().map(|(_, q)| q.as_str()).collect();
        assert_eq!(q, ["nope.shop.example. A"]);
        // A name that exists without being a zone (NODATA for the minimised question): one
        // label more, then the whole question.
        let (m, asked) = resolve_asking(
            &mut r,
            &mut net,
            &mut now,
            CLIENT,
            "x.gslb.shop.example.",
            RecordType::TXT,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let q: Vec<&str> = asked.iter().map(|(_, q)| q.as_str()).collect();
        assert_eq!(q, ["gslb.shop.example. A", "x.gslb.shop.example. TXT"]);
    }

    /// A glueless delegation: example. hands shop.example. to ns.other., a name in another
    /// TLD whose address it cannot give. The resolver resolves ns.other. from the root (its
    /// own referral has glue), then asks it, and on to the answer.
    #[test]
    fn a_glueless_delegation_is_followed_by_resolving_the_server_first() {
        let (mut r, mut net, mut now) = (ldns(), servers(), Instant::now());
        let zone =
            |text: &str, origin: &str| Authority::new(vec![Zone::parse(text, origin).unwrap()]);
        let soa = "@ SOA root-dns.example. hm.example. 1 1800 900 604800 300\n";
        net.insert(
            Ipv4Addr::new(192, 0, 2, 10),
            zone(
                &format!("$ORIGIN .\n$TTL 3600\n{soa}@ NS root-dns.example.\nexample. NS tld-dns.example.\ntld-dns.example. A 192.0.2.11\nroot-dns.example. A 192.0.2.10\nother. NS ns.other.\nns.other. A 192.0.2.20\n"),
                ".",
            ),
        );
        net.insert(
            Ipv4Addr::new(192, 0, 2, 11),
            zone(
                &format!("$ORIGIN example.\n$TTL 3600\n{soa}@ NS tld-dns\ntld-dns A 192.0.2.11\nshop NS ns.other.\n"),
                "example.",
            ),
        );
        net.insert(
            Ipv4Addr::new(192, 0, 2, 20),
            zone(
                &format!("$ORIGIN other.\n$TTL 3600\n{soa}@ NS ns\nns A 203.0.113.53\n"),
                "other.",
            ),
        );
        let (m, asked) = resolve(
            &mut r,
            &mut net,
            &mut now,
            "www.shop.example.",
            RecordType::A,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
        assert_eq!(m.answers.len(), 4, "{m:?}");
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            asked,
            [
                ip("192.0.2.10"),   // root: example.
                ip("192.0.2.11"),   // TLD: shop.example. NS ns.other., no glue
                ip("192.0.2.10"),   // root: other. (for ns.other.)
                ip("192.0.2.20"),   // other.: ns.other. A 203.0.113.53
                ip("203.0.113.53"), // the shop: CNAME and the GSLB's referral
                ip("203.0.113.54"), // the GSLB
            ]
        );
        assert_eq!(r.c.glueless, 1);
        // The server's address is cached: the next glueless referral to it asks nobody more.
        let (m, asked) = resolve(
            &mut r,
            &mut net,
            &mut now,
            "gslb.shop.example.",
            RecordType::A,
        );
        assert_eq!(m.answers.len(), 1);
        assert_eq!(asked, [ip("203.0.113.53")]);
    }

    #[test]
    fn nxdomain_is_cached_for_the_negative_ttl() {
        let (mut r, mut net, mut now) = (ldns(), servers(), Instant::now());
        let (m, _) = resolve(
            &mut r,
            &mut net,
            &mut now,
            "nope.shop.example.",
            RecordType::A,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        let (m, asked) = resolve(
            &mut r,
            &mut net,
            &mut now,
            "nope.shop.example.",
            RecordType::A,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(asked.is_empty(), "from the cache");
        // After the negative TTL (300 s) it asks again.
        now += Duration::from_secs(301);
        let (_, asked) = resolve(
            &mut r,
            &mut net,
            &mut now,
            "nope.shop.example.",
            RecordType::A,
        );
        assert!(!asked.is_empty());
    }

    #[test]
    fn a_dead_server_is_retried_then_servfail() {
        let (mut r, mut net, mut now) = (ldns(), servers(), Instant::now());
        net.remove(&Ipv4Addr::new(203, 0, 113, 53));
        let (m, asked) = resolve(
            &mut r,
            &mut net,
            &mut now,
            "www.shop.example.",
            RecordType::A,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        let to_shop = asked
            .iter()
            .filter(|a| **a == Ipv4Addr::new(203, 0, 113, 53))
            .count();
        assert_eq!(to_shop, r.attempts);
        assert_eq!((r.c.timeouts, r.c.servfail), (r.attempts as u64, 1));
    }

    /// Many names that do not exist, asked while nothing answers upstream: at most
    /// `max_tasks` resolutions at once (the rest SERVFAIL, counted); at most `max_cache`
    /// entries, expired ones making room.
    #[test]
    fn resolutions_and_the_cache_are_bounded() {
        let (mut r, mut net, mut now) = (ldns(), servers(), Instant::now());
        r.max_tasks = 3;
        let mut served = 0;
        for i in 0..5 {
            let q = query(&format!("n{i}.shop.example."), RecordType::A, false);
            if let [Out::Client { .. }] = r.on_query(now, CLIENT, &q, Transport::Udp).as_slice() {
                served += 1;
            }
        }
        assert_eq!((served, r.c.busy), (2, 2), "two refused at once");
        let mut r = ldns();
        r.max_cache = 5;
        for i in 0..6 {
            resolve(
                &mut r,
                &mut net,
                &mut now,
                &format!("n{i}.shop.example."),
                RecordType::A,
            );
        }
        assert!(r.c.cache_full >= 1, "{:?}", r.c);
        // After the negative TTL the expired entries make room again.
        now += Duration::from_secs(400);
        let before = r.c.cache_full;
        resolve(
            &mut r,
            &mut net,
            &mut now,
            "later.shop.example.",
            RecordType::A,
        );
        assert_eq!(r.c.cache_full, before);
    }

    fn a_record(name: &str, a: [u8; 4]) -> hickory_proto::rr::Record {
        hickory_proto::rr::Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            86400,
            hickory_proto::rr::RData::A(Ipv4Addr::from(a).into()),
        )
    }

    /// Forged answers (a wrong ID, the right ID from another address, an answer to another
    /// question) are dropped and counted; records out of the asked zone's bailiwick are
    /// counted and never cached.
    #[test]
    fn forged_and_out_of_bailiwick_answers_are_never_cached() {
        let (mut r, mut net, now) = (ldns(), servers(), Instant::now());
        let outs = r.on_query(
            now,
            CLIENT,
            &query("www.shop.example.", RecordType::A, true),
            Transport::Udp,
        );
        let [Out::Server { to, id, bytes, .. }] = outs.as_slice() else {
            panic!("{outs:?}")
        };
        let (to, id) = (*to, *id);
        let forged = |id: u16, name: &str| {
            let mut m = Message::response(id, OpCode::Query);
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            m.add_answer(a_record(name, [6, 6, 6, 6]));
            m.to_vec().unwrap()
        };
        let wrong_id = id.wrapping_add(1);
        assert!(r
            .on_response(now, to, wrong_id, &forged(wrong_id, "www.shop.example."))
            .is_empty());
        let elsewhere = Ipv4Addr::new(192, 0, 2, 66);
        assert!(r
            .on_response(now, elsewhere, id, &forged(id, "www.shop.example."))
            .is_empty());
        assert!(r
            .on_response(now, to, id, &forged(id, "www.bank.example."))
            .is_empty());
        // Malformed answers with the right ID from the right server: a compression loop, a
        // record cut short, counts beyond the message. Counted and dropped; the question
        // stays open for the real answer.
        let good = forged(id, "www.shop.example.");
        let mut looped = good[..12].to_vec();
        looped[5] = 1; // one question, no answer
        looped[7] = 0;
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        let cut = good[..good.len() - 3].to_vec();
        let mut counts = good.clone();
        counts[7] = 9; // nine answers announced
        for bad in [looped, cut, counts] {
            assert!(r.on_response(now, to, id, &bad).is_empty());
        }
        assert_eq!(r.c.unexpected_answers, 6);
        // The root's real referral; then the TLD (asked about example.) answers its referral
        // with an address for a name outside example. in the additional section.
        let resp = net
            .get_mut(&to)
            .unwrap()
            .answer(bytes, asked(Transport::Udp))
            .unwrap();
        let outs = r.on_response(now, to, id, &resp);
        let [Out::Server { to, id, bytes, .. }] = outs.as_slice() else {
            panic!("{outs:?}")
        };
        let real = net
            .get_mut(to)
            .unwrap()
            .answer(bytes, asked(Transport::Udp))
            .unwrap();
        let mut m = Message::from_vec(&real).unwrap();
        m.add_additional(a_record("www.bank.other.", [6, 6, 6, 7]));
        let outs = r.on_response(now, *to, *id, &m.to_vec().unwrap());
        assert_eq!(outs.len(), 1, "on to the shop's server: {outs:?}");
        assert_eq!(r.c.out_of_bailiwick, 1);
        let cache = r.show_cache(now).to_string();
        assert!(!cache.contains("6.6.6"), "{cache}");
        assert!(
            cache.contains("203.0.113.53"),
            "the in-bailiwick glue is: {cache}"
        );
    }
}

/// A GSLB with two regions: east nearest the carrier (198.51.100.0/24, and a /26 inside it
/// that is north's), north nearest 100.64.0.0/10; checks fall after 2 failures.
fn gslb() -> Authority {
    let vip = "$ORIGIN vip.shop.example.\n$TTL 30\n@ SOA gslb.shop.example. hm 1 1 1 1 10\n@ NS gslb.shop.example.\n";
    let mut a = Authority::new(vec![Zone::parse(vip, "vip.shop.example.").unwrap()]);
    let cfg: gslb::GslbConfig = serde_json::from_value(serde_json::json!({
        "ttl": 20,
        "check": {"rise": 2, "fall": 2},
        "regions": [
            {"name": "east", "vips": ["203.0.113.10", "203.0.113.11", "203.0.113.12"],
             "clients": ["198.51.100.0/24"]},
            {"name": "north", "vips": ["203.0.113.20", "203.0.113.21"],
             "clients": ["100.64.0.0/10", "198.51.100.192/26"]},
        ]
    }))
    .unwrap();
    a.gslb = Some((
        gslb::Gslb::new(cfg).unwrap(),
        vec![Name::from_ascii("vip.shop.example.").unwrap()],
    ));
    a
}

/// A query for vip.shop.example A from `peer`, with ECS `subnet/prefix` if given.
fn ask_gslb(a: &mut Authority, peer: [u8; 4], ecs: Option<([u8; 4], u8)>) -> Message {
    let mut m = Message::query();
    m.metadata.id = 7;
    m.add_query(Query::query(
        Name::from_ascii("vip.shop.example.").unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    if let Some((addr, p)) = ecs {
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            IpAddr::V4(Ipv4Addr::from(addr)),
            p,
            0,
        )));
    }
    m.set_edns(e);
    let asked = Asked {
        transport: Transport::Udp,
        peer: Ipv4Addr::from(peer),
        now: Instant::now(),
    };
    Message::from_vec(&a.answer(&m.to_vec().unwrap(), asked).unwrap()).unwrap()
}

fn vips(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

fn scope(m: &Message) -> Option<u8> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some(s.scope_prefix()),
        _ => None,
    }
}

/// The policy: ECS picks the region (else the resolver's address), the answer says the scope
/// it holds for, and every decision is kept with its reason.
#[test]
fn the_gslb_picks_the_region_nearest_the_client() {
    let mut a = gslb();
    let east = ["203.0.113.10", "203.0.113.11", "203.0.113.12"];
    // ECS from the carrier: east, for the whole /24 but north's /26 inside it (scope 26).
    let m = ask_gslb(&mut a, [198, 51, 100, 53], Some(([198, 51, 100, 0], 24)));
    assert!(m.metadata.authoritative);
    assert_eq!(vips(&m), east);
    assert_eq!(m.answers[0].ttl, 20);
    assert_eq!(scope(&m), Some(26));
    // A client in north's /26 inside the carrier's /24.
    let m = ask_gslb(&mut a, [198, 51, 100, 53], Some(([198, 51, 100, 192], 26)));
    assert_eq!(vips(&m), ["203.0.113.20", "203.0.113.21"]);
    assert_eq!(scope(&m), Some(26));
    // No ECS: the resolver's own address decides; no ECS in the answer.
    let m = ask_gslb(&mut a, [100, 64, 1, 1], None);
    assert_eq!(vips(&m), ["203.0.113.20", "203.0.113.21"]);
    assert_eq!(scope(&m), None);
    // Nobody's client: the default region (the first), scope the longest prefix.
    let m = ask_gslb(&mut a, [198, 51, 100, 53], Some(([10, 9, 8, 0], 24)));
    assert_eq!(vips(&m), east);
    assert_eq!(scope(&m), Some(26));
    // ECS with bits beyond its prefix: FORMERR (RFC 7871 §7.1.2).
    let m = ask_gslb(&mut a, [198, 51, 100, 53], Some(([198, 51, 100, 0], 20)));
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    let (g, _) = a.gslb.as_ref().unwrap();
    let d = g.show_decisions(Instant::now());
    let d = d.as_array().unwrap();
    assert_eq!(d.len(), 4);
    assert_eq!(d[0]["client"], "198.51.100.0");
    assert_eq!(d[0]["from"], "ecs/24");
    assert_eq!(d[0]["region"], "east");
    assert_eq!(d[0]["asked_by"], "198.51.100.53");
    assert!(
        d[0]["why"].as_str().unwrap().contains("198.51.100.0/24"),
        "{}",
        d[0]
    );
    assert_eq!(d[2]["from"], "sender");
    assert!(
        d[3]["why"].as_str().unwrap().contains("default east"),
        "{}",
        d[3]
    );
    // Other types at the name: NODATA from the zone.
    let m = ask(&mut a, "vip.shop.example.", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

/// Health: a VIP that fails `fall` checks leaves the answers and comes back after `rise`;
/// a region with none left fails over to the next; nothing healthy anywhere: the nearest
/// region's VIPs all the same, counted.
#[test]
fn the_gslb_leaves_out_dead_vips_and_fails_over() {
    let mut a = gslb();
    let carrier = Some(([198, 51, 100, 0], 24));
    let t = Instant::now();
    let check = |a: &mut Authority, vip: [u8; 4], ok: bool| {
        a.gslb
            .as_mut()
            .unwrap()
            .0
            .record_check(t, Ipv4Addr::from(vip), ok)
    };
    check(&mut a, [203, 0, 113, 11], false);
    assert_eq!(
        vips(&ask_gslb(&mut a, [1, 1, 1, 1], carrier)).len(),
        3,
        "fall is 2"
    );
    check(&mut a, [203, 0, 113, 11], false);
    assert_eq!(
        vips(&ask_gslb(&mut a, [1, 1, 1, 1], carrier)),
        ["203.0.113.10", "203.0.113.12"]
    );
    for v in [[203, 0, 113, 10], [203, 0, 113, 12]] {
        check(&mut a, v, false);
        check(&mut a, v, false);
    }
    assert_eq!(
        vips(&ask_gslb(&mut a, [1, 1, 1, 1], carrier)),
        ["203.0.113.20", "203.0.113.21"]
    );
    for v in [[203, 0, 113, 20], [203, 0, 113, 21]] {
        check(&mut a, v, false);
        check(&mut a, v, false);
    }
    assert_eq!(vips(&ask_gslb(&mut a, [1, 1, 1, 1], carrier)).len(), 3);
    // East's .10 comes back after two good checks.
    check(&mut a, [203, 0, 113, 10], true);
    check(&mut a, [203, 0, 113, 10], true);
    assert_eq!(
        vips(&ask_gslb(&mut a, [1, 1, 1, 1], carrier)),
        ["203.0.113.10"]
    );
    let (g, _) = a.gslb.as_ref().unwrap();
    assert_eq!(g.c.gslb_failovers, 1);
    assert_eq!(g.c.gslb_none_healthy, 1);
    assert_eq!(g.c.gslb_vips_down, 5);
    assert_eq!(g.c.gslb_vips_up, 1);
    let d = g.show_decisions(t);
    let why = d[2]["why"].as_str().unwrap();
    assert!(
        why.contains("east has no healthy VIP: failover to north"),
        "{why}"
    );
    let h = g.show_health(t);
    assert_eq!(h[0]["state"], "up");
    assert_eq!(h[1]["state"], "down");
}
