//! The cache's store and decisions, sans-IO: time is passed in (as `SystemTime`, which HTTP's
//! dates and `http-cache-semantics` use).
//!
//! Whether a response may be stored, whether a stored one satisfies a request (freshness from
//! s-maxage, max-age, Expires or the heuristic of RFC 9111 §4.2.2; `Vary`; `no-cache`,
//! `no-store`, `private` as a shared cache reads them), its `Age`, the validators of a
//! revalidation and what a 304 changes are `http-cache-semantics`'s (a maintained crate made
//! for this). What it does not do is here: stale-while-revalidate and stale-if-error (RFC
//! 5861), the store bounded in octets with least-recently-used eviction, variants per URL,
//! purge, and the `Cache-Status` member (RFC 9211).

use bytes::Bytes;
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};
use hyper::header::{HeaderMap, HeaderValue};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

/// A stored response.
#[derive(Debug, Clone)]
pub struct Stored {
    pub parts: hyper::http::response::Parts,
    pub body: Bytes,
}

#[derive(Debug)]
struct Variant {
    id: u64,
    policy: CachePolicy,
    stored: Stored,
    /// How long it was fresh for when stored (to measure staleness).
    lifetime: Duration,
    /// RFC 5861's windows, from the response's Cache-Control (none when it says
    /// must-revalidate, proxy-revalidate or no-cache).
    swr: Duration,
    sie: Duration,
    size: usize,
    used: u64,
}

/// What the cache can do for a request.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh response: serve it (its headers carry the updated `Age`).
    Fresh {
        stored: Box<Stored>,
        ttl: Duration,
    },
    /// A stored response that must be revalidated first: send `request` upstream (it has the
    /// validators). `serve_stale` when stale-while-revalidate allows serving it meanwhile.
    Stale(Box<Revalidate>),
    Miss,
}

/// A stored response that must be revalidated.
#[derive(Debug)]
pub struct Revalidate {
    pub id: u64,
    pub request: hyper::http::request::Parts,
    pub serve_stale: Option<Stored>,
}

/// The cache's counters.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub stored: u64,
    pub not_storable: u64,
    pub too_big: u64,
    pub evicted: u64,
    pub revalidated_304: u64,
    pub purged: u64,
}

/// The store: variants per key, at most `max_bytes` of bodies and headers.
#[derive(Debug)]
pub struct Cache {
    max_bytes: usize,
    /// An object larger than this is not stored.
    max_object: usize,
    bytes: usize,
    tick: u64,
    next_id: u64,
    entries: HashMap<String, Vec<Variant>>,
    /// Least recently used first: tick -> (key, variant id).
    lru: BTreeMap<u64, (String, u64)>,
    pub stats: Stats,
}

fn directive(cc: &str, name: &str) -> Option<Option<u64>> {
    cc.split(',').find_map(|d| {
        let d = d.trim();
        let (k, v) = d.split_once('=').unwrap_or((d, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| {
            let v = v.trim().trim_matches('"');
            (!v.is_empty()).then(|| v.parse().ok()).flatten()
        })
    })
}

/// RFC 5861's windows of a response.
fn windows(h: &HeaderMap) -> (Duration, Duration) {
    let cc: String = h
        .get_all(hyper::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    if ["must-revalidate", "proxy-revalidate", "no-cache"]
        .iter()
        .any(|d| directive(&cc, d).is_some())
    {
        return (Duration::ZERO, Duration::ZERO);
    }
    let secs = |name| Duration::from_secs(directive(&cc, name).flatten().unwrap_or(0));
    (secs("stale-while-revalidate"), secs("stale-if-error"))
}

fn size_of(s: &Stored) -> usize {
    s.body.len()
        + s.parts
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
        + 64
}

impl Cache {
    pub fn new(max_bytes: usize, max_object: usize) -> Self {
        Self {
            max_bytes,
            max_object,
            bytes: 0,
            tick: 0,
            next_id: 1,
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn objects(&self) -> usize {
        self.entries.values().map(Vec::len).sum()
    }

    fn touch(&mut self, key: &str, id: u64) {
        let tick = self.tick;
        self.tick += 1;
        if let Some(v) = self
            .entries
            .get_mut(key)
            .and_then(|vs| vs.iter_mut().find(|v| v.id == id))
        {
            self.lru.remove(&v.used);
            v.used = tick;
            self.lru.insert(tick, (key.to_string(), id));
        }
    }

    /// What is stored for `req` under `key`.
    pub fn lookup(
        &mut self,
        key: &str,
        req: &hyper::http::request::Parts,
        now: SystemTime,
    ) -> Lookup {
        let Some(vs) = self.entries.get(key) else {
            self.stats.misses += 1;
            return Lookup::Miss;
        };
        let mut stale = None;
        for v in vs {
            match v.policy.before_request(req, now) {
                BeforeRequest::Fresh(_) => {
                    // The stored headers as they came, with the Age of now (the crate's own
                    // rewrites Date with a "+0000" zone that is no HTTP-date, and adds the
                    // Warning header RFC 9111 retired).
                    let (id, ttl) = (v.id, v.policy.time_to_live(now));
                    let stored = Box::new(self.as_served(v, now));
                    self.touch(key, id);
                    self.stats.hits += 1;
                    return Lookup::Fresh { stored, ttl };
                }
                BeforeRequest::Stale {
                    request,
                    matches: true,
                } if stale.is_none() => {
                    let staleness = v.policy.age(now).saturating_sub(v.lifetime);
                    let serve =
                        (staleness <= v.swr && !v.swr.is_zero()).then(|| self.as_served(v, now));
                    stale = Some((v.id, request, serve));
                }
                _ => {}
            }
        }
        match stale {
            Some((id, request, serve_stale)) => {
                self.stats.stale += 1;
                Lookup::Stale(Box::new(Revalidate {
                    id,
                    request,
                    serve_stale,
                }))
            }
            None => {
                self.stats.misses += 1;
                Lookup::Miss
            }
        }
    }

    /// A stored variant as served stale: its headers with the `Age` it has now.
    fn as_served(&self, v: &Variant, now: SystemTime) -> Stored {
        let mut parts = v.stored.parts.clone();
        let age = v.policy.age(now).as_secs();
        if let Ok(a) = HeaderValue::from_str(&age.to_string()) {
            parts.headers.insert(hyper::header::AGE, a);
        }
        Stored {
            parts,
            body: v.stored.body.clone(),
        }
    }

    /// The variant `id` of `key` served stale because the upstream failed, if its
    /// stale-if-error window allows it now.
    pub fn stale_if_error(&mut self, key: &str, id: u64, now: SystemTime) -> Option<Stored> {
        let v = self.entries.get(key)?.iter().find(|v| v.id == id)?;
        let staleness = v.policy.age(now).saturating_sub(v.lifetime);
        if v.sie.is_zero() || staleness > v.sie {
            return None;
        }
        let s = self.as_served(v, now);
        self.touch(key, id);
        Some(s)
    }

    /// A response from upstream for `req`: stored if it may be (a variant of `key`, replacing
    /// one the request would have matched); true if stored.
    pub fn store(
        &mut self,
        key: &str,
        req: &hyper::http::request::Parts,
        resp: Stored,
        now: SystemTime,
    ) -> bool {
        let policy = CachePolicy::new_options(req, &resp.parts, now, CacheOptions::default());
        if !policy.is_storable() {
            self.stats.not_storable += 1;
            return false;
        }
        let size = size_of(&resp);
        if size > self.max_object || size > self.max_bytes {
            self.stats.too_big += 1;
            return false;
        }
        // The variants this request would select are replaced.
        let old: Vec<u64> = self
            .entries
            .get(key)
            .map(|vs| {
                vs.iter()
                    .filter(|v| {
                        matches!(
                            v.policy.before_request(req, now),
                            BeforeRequest::Fresh(_) | BeforeRequest::Stale { matches: true, .. }
                        )
                    })
                    .map(|v| v.id)
                    .collect()
            })
            .unwrap_or_default();
        for id in old {
            self.remove(key, id);
        }
        let lifetime = policy.time_to_live(now) + policy.age(now);
        let (swr, sie) = windows(&resp.parts.headers);
        let id = self.next_id;
        self.next_id += 1;
        let tick = self.tick;
        self.tick += 1;
        self.entries
            .entry(key.to_string())
            .or_default()
            .push(Variant {
                id,
                policy,
                stored: resp,
                lifetime,
                swr,
                sie,
                size,
                used: tick,
            });
        self.lru.insert(tick, (key.to_string(), id));
        self.bytes += size;
        self.stats.stored += 1;
        while self.bytes > self.max_bytes {
            let Some((_, (k, i))) = self.lru.pop_first() else {
                break;
            };
            self.remove(&k, i);
            self.stats.evicted += 1;
        }
        true
    }

    /// A 304 (or another answer) to the revalidation of variant `id`: with 304, the stored
    /// response refreshed and returned; otherwise `None` (store the new response).
    pub fn revalidated(
        &mut self,
        key: &str,
        id: u64,
        req: &hyper::http::request::Parts,
        resp: &hyper::http::response::Parts,
        now: SystemTime,
    ) -> Option<Stored> {
        let vs = self.entries.get_mut(key)?;
        let v = vs.iter_mut().find(|v| v.id == id)?;
        match v.policy.after_response(req, resp, now) {
            AfterResponse::NotModified(policy, parts) => {
                v.lifetime = policy.time_to_live(now) + policy.age(now);
                let (swr, sie) = windows(&parts.headers);
                v.swr = swr;
                v.sie = sie;
                v.policy = policy;
                v.stored.parts = parts;
                let body = v.stored.body.clone();
                let parts = v.stored.parts.clone();
                self.stats.revalidated_304 += 1;
                self.touch(key, id);
                Some(Stored { parts, body })
            }
            AfterResponse::Modified(..) => None,
        }
    }

    fn remove(&mut self, key: &str, id: u64) {
        let Some(vs) = self.entries.get_mut(key) else {
            return;
        };
        if let Some(i) = vs.iter().position(|v| v.id == id) {
            let v = vs.remove(i);
            self.lru.remove(&v.used);
            self.bytes -= v.size;
        }
        if vs.is_empty() {
            self.entries.remove(key);
        }
    }

    /// Removes every variant of `key`; how many there were.
    pub fn purge(&mut self, key: &str) -> usize {
        let ids: Vec<u64> = self
            .entries
            .get(key)
            .map(|vs| vs.iter().map(|v| v.id).collect())
            .unwrap_or_default();
        for id in &ids {
            self.remove(key, *id);
        }
        self.stats.purged += ids.len() as u64;
        ids.len()
    }

    /// `d11 show NODE cache`: each stored variant.
    pub fn list(&self, now: SystemTime) -> serde_json::Value {
        let mut rows: Vec<(&String, &Variant)> = self
            .entries
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k, v)))
            .collect();
        rows.sort_by_key(|(k, v)| ((*k).clone(), v.id));
        serde_json::json!(rows
            .iter()
            .map(|(k, v)| serde_json::json!({
                "key": k,
                "status": v.stored.parts.status.as_u16(),
                "size": v.stored.body.len(),
                "age_s": v.policy.age(now).as_secs(),
                "ttl_s": v.policy.time_to_live(now).as_secs(),
                "etag": v.stored.parts.headers.get("etag").and_then(|e| e.to_str().ok()),
                "vary": v.stored.parts.headers.get("vary").and_then(|e| e.to_str().ok()),
            }))
            .collect::<Vec<_>>())
    }
}

/// This cache's member of `Cache-Status` (RFC 9211), appended after the upstream caches'.
pub fn cache_status(upstream: Option<&HeaderValue>, member: &str) -> HeaderValue {
    let s = match upstream.and_then(|v| v.to_str().ok()) {
        Some(u) if !u.trim().is_empty() => format!("{u}, {member}"),
        _ => member.to_string(),
    };
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::{Request, Response};

    fn req(path: &str, extra: &[(&str, &str)]) -> hyper::http::request::Parts {
        let mut b = Request::get(format!("http://img.shop.example{path}"));
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn resp(status: u16, headers: &[(&str, &str)], body: &'static [u8]) -> Stored {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Stored {
            parts: b.body(()).unwrap().into_parts().0,
            body: Bytes::from_static(body),
        }
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn date(t: SystemTime) -> String {
        httpdate::fmt_http_date(t)
    }

    #[test]
    fn fresh_then_stale_then_a_304_refreshes() {
        let mut c = Cache::new(1 << 20, 1 << 20);
        let r = req("/p/1.png", &[]);
        let d = date(t0());
        let stored = c.store(
            "k",
            &r,
            resp(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("etag", "\"a\""),
                    ("date", &d),
                ],
                b"img",
            ),
            t0(),
        );
        assert!(stored);
        match c.lookup("k", &r, t0() + Duration::from_secs(10)) {
            Lookup::Fresh { stored, ttl } => {
                assert_eq!(stored.parts.headers["age"], "10");
                assert_eq!(ttl, Duration::from_secs(50));
                assert_eq!(&stored.body[..], b"img");
            }
            l => panic!("{l:?}"),
        }
        let later = t0() + Duration::from_secs(61);
        let (id, rq) = match c.lookup("k", &r, later) {
            Lookup::Stale(s) if s.serve_stale.is_none() => (s.id, s.request),
            l => panic!("{l:?}"),
        };
        assert_eq!(rq.headers["if-none-match"], "\"a\"");
        let d2 = date(later);
        let nm = resp(
            304,
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"a\""),
                ("date", &d2),
            ],
            b"",
        );
        let s = c.revalidated("k", id, &rq, &nm.parts, later).unwrap();
        assert_eq!(&s.body[..], b"img");
        assert!(matches!(
            c.lookup("k", &r, later + Duration::from_secs(5)),
            Lookup::Fresh { .. }
        ));
        assert_eq!(c.stats.revalidated_304, 1);
    }

    #[test]
    fn no_store_private_and_vary() {
        let mut c = Cache::new(1 << 20, 1 << 20);
        let r = req("/x", &[]);
        assert!(!c.store(
            "k",
            &r,
            resp(200, &[("cache-control", "no-store, max-age=60")], b"x"),
            t0()
        ));
        assert!(!c.store(
            "k",
            &r,
            resp(200, &[("cache-control", "private, max-age=60")], b"x"),
            t0()
        ));
        assert!(matches!(c.lookup("k", &r, t0()), Lookup::Miss));
        // Vary: Accept-Encoding: each encoding its own variant.
        let gz = req("/v", &[("accept-encoding", "gzip")]);
        let id = req("/v", &[("accept-encoding", "identity")]);
        let vary = |b: &'static [u8]| {
            resp(
                200,
                &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
                b,
            )
        };
        assert!(c.store("v", &gz, vary(b"gz"), t0()));
        assert!(matches!(c.lookup("v", &id, t0()), Lookup::Miss));
        assert!(c.store("v", &id, vary(b"id"), t0()));
        match c.lookup("v", &gz, t0()) {
            Lookup::Fresh { stored, .. } => assert_eq!(&stored.body[..], b"gz"),
            l => panic!("{l:?}"),
        }
        match c.lookup("v", &id, t0()) {
            Lookup::Fresh { stored, .. } => assert_eq!(&stored.body[..], b"id"),
            l => panic!("{l:?}"),
        }
        assert_eq!(c.objects(), 2);
        assert_eq!(c.purge("v"), 2);
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn heuristic_freshness_from_last_modified() {
        let mut c = Cache::new(1 << 20, 1 << 20);
        let r = req("/h", &[]);
        // Modified 1,000 s before: fresh for a tenth of that (RFC 9111 §4.2.2).
        let lm = date(t0() - Duration::from_secs(1000));
        let d = date(t0());
        assert!(c.store(
            "h",
            &r,
            resp(200, &[("last-modified", &lm), ("date", &d)], b"h"),
            t0()
        ));
        assert!(matches!(
            c.lookup("h", &r, t0() + Duration::from_secs(90)),
            Lookup::Fresh { .. }
        ));
        assert!(matches!(
            c.lookup("h", &r, t0() + Duration::from_secs(110)),
            Lookup::Stale(_)
        ));
    }

    #[test]
    fn stale_while_revalidate_and_stale_if_error_windows() {
        let mut c = Cache::new(1 << 20, 1 << 20);
        let r = req("/s", &[]);
        let d = date(t0());
        let cc = "max-age=10, stale-while-revalidate=20, stale-if-error=100";
        assert!(c.store(
            "s",
            &r,
            resp(
                200,
                &[("cache-control", cc), ("etag", "\"s\""), ("date", &d)],
                b"s"
            ),
            t0()
        ));
        match c.lookup("s", &r, t0() + Duration::from_secs(25)) {
            Lookup::Stale(s) => assert_eq!(s.serve_stale.unwrap().parts.headers["age"], "25"),
            l => panic!("{l:?}"),
        }
        let id = match c.lookup("s", &r, t0() + Duration::from_secs(40)) {
            Lookup::Stale(s) if s.serve_stale.is_none() => s.id,
            l => panic!("{l:?}"),
        };
        assert!(c
            .stale_if_error("s", id, t0() + Duration::from_secs(100))
            .is_some());
        assert!(c
            .stale_if_error("s", id, t0() + Duration::from_secs(120))
            .is_none());
        // must-revalidate closes both windows.
        let cc = "max-age=10, must-revalidate, stale-while-revalidate=20, stale-if-error=100";
        assert!(c.store(
            "m",
            &r,
            resp(200, &[("cache-control", cc), ("date", &d)], b"m"),
            t0()
        ));
        match c.lookup("m", &r, t0() + Duration::from_secs(15)) {
            Lookup::Stale(s) if s.serve_stale.is_none() => {
                assert!(c
                    .stale_if_error("m", s.id, t0() + Duration::from_secs(15))
                    .is_none())
            }
            l => panic!("{l:?}"),
        }
    }

    #[test]
    fn the_store_is_bounded_and_evicts_the_least_recently_used() {
        let mut c = Cache::new(3 * 1200, 2000);
        let body: &'static [u8] = &[7u8; 1000];
        let r = |p: &str| req(p, &[]);
        for k in ["a", "b", "c"] {
            assert!(c.store(
                k,
                &r(k),
                resp(200, &[("cache-control", "max-age=60")], body),
                t0()
            ));
        }
        // "a" used again: "b" is now the least recently used.
        assert!(matches!(c.lookup("a", &r("a"), t0()), Lookup::Fresh { .. }));
        assert!(c.store(
            "d",
            &r("d"),
            resp(200, &[("cache-control", "max-age=60")], body),
            t0()
        ));
        assert!(matches!(c.lookup("b", &r("b"), t0()), Lookup::Miss));
        assert!(matches!(c.lookup("a", &r("a"), t0()), Lookup::Fresh { .. }));
        assert!(c.bytes() <= 3 * 1200);
        assert_eq!(c.stats.evicted, 1);
        // Larger than an object may be: not stored.
        let big: &'static [u8] = &[1u8; 3000];
        assert!(!c.store(
            "e",
            &r("e"),
            resp(200, &[("cache-control", "max-age=60")], big),
            t0()
        ));
        assert_eq!(c.stats.too_big, 1);
    }

    #[test]
    fn cache_status_members_are_appended() {
        let up = HeaderValue::from_static("d11-parent; fwd=uri-miss; stored");
        assert_eq!(
            cache_status(Some(&up), "d11-edge; hit; ttl=50"),
            "d11-parent; fwd=uri-miss; stored, d11-edge; hit; ttl=50"
        );
        assert_eq!(
            cache_status(None, "d11-edge; fwd=uri-miss"),
            "d11-edge; fwd=uri-miss"
        );
    }
}
