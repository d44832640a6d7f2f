//! The decision process step by step, import policy, loop detection and RFC 8212.

use crate::rib::*;
use std::net::Ipv4Addr;

fn net(s: &str) -> ipnet::Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Peers of AS 64500: 0 and 1 eBGP (AS 64501, 64502), 2 iBGP; every import accepts.
fn rib() -> Rib {
    let peer = |addr: &str, asn: u32, id: &str| Peer {
        addr: ip(addr),
        remote_as: asn,
        router_id: ip(id),
        import: Some(Policy::accept_all()),
        export: Some(Policy::accept_all()),
        local_addr: ip("198.18.0.0"),
        next_hop_self: false,
    };
    Rib::new(
        64500,
        ip("10.0.0.1"),
        vec![
            peer("198.18.0.1", 64501, "10.0.0.21"),
            peer("198.18.0.7", 64502, "10.0.0.22"),
            peer("10.9.0.2", 64500, "10.0.0.3"),
        ],
    )
}

fn path(asns: &[u32], nh: &str) -> Attrs {
    let mut a = Attrs::local(ip(nh));
    if !asns.is_empty() {
        a.as_path = vec![Segment {
            set: false,
            asns: asns.to_vec(),
        }];
    }
    a
}

fn best(r: &Rib, p: &str) -> (Option<PeerId>, &'static str) {
    let (f, _, why) = r.best(&net(p)).unwrap();
    (f, why)
}

#[test]
fn the_decision_process_goes_step_by_step() {
    let p = "203.0.113.0/24";
    let mut r = rib();
    // One path: the only path, installed.
    let c = r.announce(0, net(p), path(&[64501, 64510], "198.18.0.1"));
    assert_eq!(
        c,
        [Change::Best {
            prefix: net(p),
            next_hop: Some(ip("198.18.0.1")),
            from: Some(0)
        }]
    );
    assert_eq!(best(&r, p), (Some(0), "the only path"));
    // A shorter AS_PATH from peer 1 wins.
    r.announce(1, net(p), path(&[64510], "198.18.0.7"));
    assert_eq!(best(&r, p), (Some(1), "the shortest AS_PATH"));
    // LOCAL_PREF 200 on peer 0's path beats the shorter path.
    let mut a = path(&[64501, 64510], "198.18.0.1");
    a.local_pref = Some(200);
    r.announce(0, net(p), a);
    assert_eq!(best(&r, p), (Some(0), "the highest LOCAL_PREF"));
    // Equal LOCAL_PREF and length: the lower ORIGIN.
    let mut a0 = path(&[64501, 64510], "198.18.0.1");
    a0.origin = 2;
    r.announce(0, net(p), a0);
    let b1 = path(&[64502, 64510], "198.18.0.7");
    r.announce(1, net(p), b1);
    assert_eq!(best(&r, p), (Some(1), "the lowest ORIGIN"));
    // Equal all the way: eBGP over iBGP, then the lowest BGP Identifier.
    let mut r = rib();
    r.announce(2, net(p), path(&[64510], "10.9.0.9"));
    r.announce(0, net(p), path(&[64510], "198.18.0.1"));
    assert_eq!(best(&r, p), (Some(0), "eBGP over iBGP"));
    r.announce(1, net(p), path(&[64510], "198.18.0.7"));
    assert_eq!(best(&r, p), (Some(0), "the lowest BGP Identifier"));
    // MED compares only paths from the same neighbouring AS.
    let mut r = rib();
    let mut m0 = path(&[64510], "198.18.0.1");
    m0.med = Some(50);
    let mut m1 = path(&[64510], "198.18.0.7");
    m1.med = Some(10);
    r.announce(0, net(p), m0);
    r.announce(1, net(p), m1);
    assert_eq!(best(&r, p), (Some(1), "the lowest MED from the same AS"));
    // Withdrawn: the other takes over; both gone: the prefix is gone.
    let c = r.withdraw(1, net(p));
    assert_eq!(c.len(), 1);
    assert_eq!(best(&r, p).0, Some(0));
    assert_eq!(r.withdraw(0, net(p)), [Change::Gone { prefix: net(p) }]);
    assert!(r.best(&net(p)).is_none());
}

#[test]
fn import_refuses_loops_and_ebgp_without_a_policy() {
    let p = net("203.0.113.0/24");
    let mut r = rib();
    // Our own AS in the path: refused, counted.
    assert!(r
        .announce(0, p, path(&[64501, 64500, 64510], "198.18.0.1"))
        .is_empty());
    assert_eq!(r.routes[0].refused_loop, 1);
    // RFC 8212: an eBGP peer with no import policy gets nothing accepted; iBGP does.
    r.peers[1].import = None;
    r.peers[2].import = None;
    assert!(r
        .announce(1, p, path(&[64502, 64510], "198.18.0.7"))
        .is_empty());
    assert_eq!(r.routes[1].refused_policy, 1);
    assert_eq!(r.announce(2, p, path(&[64510], "10.9.0.9")).len(), 1);
    // A route of our own beats everything.
    r.originate(p, Attrs::local(ip("0.0.0.0")));
    assert_eq!(best(&r, "203.0.113.0/24"), (None, "a route of our own"));
}

#[test]
fn a_policy_matches_prefixes_and_sets_attributes() {
    let pol: Policy = serde_json::from_value(serde_json::json!({
        "rules": [
            {"prefixes": [{"net": "10.0.0.0/8", "le": 24}], "accept": false},
            {"prefixes": [{"net": "203.0.113.0/24"}], "local_pref": 200, "prepend": 2,
             "add_communities": [4294967041u32]},
        ],
        "default_accept": false,
    }))
    .unwrap();
    let mut a = path(&[64510], "198.18.0.1");
    assert!(!pol.apply(64500, &net("10.1.2.0/24"), &mut a.clone()));
    assert!(
        !pol.apply(64500, &net("192.0.2.0/24"), &mut a.clone()),
        "the default"
    );
    assert!(
        !pol.apply(64500, &net("203.0.113.0/25"), &mut a.clone()),
        "exact length only"
    );
    assert!(pol.apply(64500, &net("203.0.113.0/24"), &mut a));
    assert_eq!(a.local_pref, Some(200));
    assert_eq!(a.as_path_string(), "64500 64500 64510");
    assert_eq!(a.communities, [NO_EXPORT]);
}

#[test]
fn a_peer_going_down_takes_its_paths_with_it() {
    let mut r = rib();
    r.announce(0, net("203.0.113.0/24"), path(&[64510], "198.18.0.1"));
    r.announce(0, net("192.0.2.0/24"), path(&[64501], "198.18.0.1"));
    r.announce(
        1,
        net("203.0.113.0/24"),
        path(&[64502, 64510], "198.18.0.7"),
    );
    let mut c = r.peer_down(0);
    c.sort_by_key(|x| format!("{x:?}"));
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(best(&r, "203.0.113.0/24"), (Some(1), "the only path"));
    assert!(r.best(&net("192.0.2.0/24")).is_none());
    let rows = r.show_routes();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["as_path"], "64502 64510");
    assert_eq!(rows[0]["best"], true);
}

/// Export: not back where it came from, eBGP with our AS and our address, no LOCAL_PREF or
/// MED across ASes, iBGP split horizon, next-hop-self, NO_EXPORT, and RFC 8212.
#[test]
fn export_follows_the_rules() {
    let p = net("203.0.113.0/24");
    let mut r = rib();
    let mut a = path(&[64501, 64510], "198.18.0.1");
    a.med = Some(5);
    a.local_pref = Some(200);
    r.announce(0, p, a);
    assert_eq!(r.export(0, &p), None, "not back to the peer it came from");
    let e = r.export(1, &p).unwrap();
    assert_eq!(e.as_path_string(), "64500 64501 64510");
    assert_eq!(
        (e.next_hop, e.local_pref, e.med),
        (ip("198.18.0.0"), None, None)
    );
    // To the iBGP peer: LOCAL_PREF kept, the next hop kept unless next-hop-self.
    let i = r.export(2, &p).unwrap();
    assert_eq!((i.local_pref, i.next_hop), (Some(200), ip("198.18.0.1")));
    assert_eq!(
        i.as_path_string(),
        "64501 64510",
        "no prepend inside the AS"
    );
    r.peers[2].next_hop_self = true;
    assert_eq!(r.export(2, &p).unwrap().next_hop, ip("198.18.0.0"));
    // Learned over iBGP: not to another iBGP peer (split horizon), but to eBGP peers.
    let mut r = rib();
    r.peers.push(Peer {
        router_id: ip("10.0.0.4"),
        addr: ip("10.9.0.4"),
        ..r.peers[2].clone()
    });
    r.routes.push(Default::default());
    r.announce(2, p, path(&[64510], "10.9.0.9"));
    assert_eq!(r.export(3, &p), None);
    assert!(r.export(0, &p).is_some());
    // NO_EXPORT: not to eBGP; RFC 8212: an eBGP peer without an export policy gets nothing.
    let mut a = path(&[64510], "10.9.0.9");
    a.communities = vec![NO_EXPORT];
    r.announce(2, p, a);
    assert_eq!(r.export(0, &p), None);
    let q = net("192.0.2.0/24");
    r.originate(q, Attrs::local(ip("0.0.0.0")));
    r.peers[1].export = None;
    assert_eq!(r.export(1, &q), None);
    let e = r.export(0, &q).unwrap();
    assert_eq!(e.as_path_string(), "64500");
    assert_eq!(
        r.export(2, &q).unwrap().next_hop,
        ip("198.18.0.0"),
        "our own: our address"
    );
}
