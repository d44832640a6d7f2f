//! Object storage, the CDN's origin (`d11-origin`): objects by path, each with an ETag (from
//! its content), Last-Modified, Content-Type and Cache-Control kept as metadata.
//!
//! - `PUT /path`: stores the body (`Content-Type`, `Cache-Control` and `Vary` of the request
//!   kept);
//!   201 when new, 204 when replaced; the ETag in the answer. Written to disk and synced
//!   before the answer, so an acknowledged object survives a crash.
//! - `GET` / `HEAD /path`: 200 with the metadata; `If-None-Match` (or, without it,
//!   `If-Modified-Since`) that matches: 304; `Range: bytes=` with one range: 206 with
//!   `Content-Range`, 416 when it cannot be satisfied; a Range it cannot read is ignored (RFC
//!   9110 §14.2 allows it). 404 for no such object.
//! - `DELETE /path`: 204, or 404.
//!
//! This module is the store and the answers, sans-IO; the HTTP server is in
//! [`crate::server`].

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One stored object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub body: Bytes,
    pub etag: String,
    /// Whole seconds (HTTP dates have no more).
    pub last_modified: SystemTime,
    pub content_type: String,
    pub cache_control: Option<String>,
    /// The `Vary` the object is served with, if any.
    pub vary: Option<String>,
}

impl Object {
    pub fn with_vary(mut self, vary: Option<&str>) -> Self {
        self.vary = vary.map(str::to_string);
        self
    }

    pub fn new(
        body: Bytes,
        content_type: &str,
        cache_control: Option<&str>,
        now: SystemTime,
    ) -> Self {
        let digest = Sha256::digest(&body);
        let etag = format!(
            "\"{}\"",
            digest[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            body,
            etag,
            last_modified: UNIX_EPOCH + Duration::from_secs(secs),
            content_type: content_type.to_string(),
            cache_control: cache_control.map(str::to_string),
            vary: None,
        }
    }
}

/// The objects, in memory and, with a directory, on disk.
#[derive(Debug, Default)]
pub struct Store {
    objects: BTreeMap<String, Object>,
    dir: Option<PathBuf>,
}

/// A path's file name on disk: its octets in hex (any path, no escaping to get wrong).
fn file_name(path: &str) -> String {
    path.bytes().map(|b| format!("{b:02x}")).collect()
}

fn from_file_name(name: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(name.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Writes `data` to `path` so that it is whole on disk or not there: a temporary file,
/// synced, renamed over, the directory synced.
fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

impl Store {
    /// A store kept in `dir` (read back now), or in memory only.
    pub fn open(dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut s = Store {
            objects: BTreeMap::new(),
            dir: dir.map(Path::to_path_buf),
        };
        let Some(dir) = dir else { return Ok(s) };
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("data_dir {}: {e}", dir.display()))?;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            let Some(stem) = name.strip_suffix(".meta") else {
                continue;
            };
            let Some(key) = from_file_name(stem) else {
                continue;
            };
            let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path())?)?;
            let body = std::fs::read(dir.join(stem))?;
            let secs = meta["last_modified"].as_u64().unwrap_or(0);
            s.objects.insert(
                key,
                Object {
                    etag: meta["etag"].as_str().unwrap_or("").to_string(),
                    last_modified: UNIX_EPOCH + Duration::from_secs(secs),
                    content_type: meta["content_type"]
                        .as_str()
                        .unwrap_or("application/octet-stream")
                        .to_string(),
                    cache_control: meta["cache_control"].as_str().map(str::to_string),
                    vary: meta["vary"].as_str().map(str::to_string),
                    body: Bytes::from(body),
                },
            );
        }
        Ok(s)
    }

    pub fn get(&self, path: &str) -> Option<&Object> {
        self.objects.get(path)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Stores `o` at `path` (on disk first, when there is a directory); true if it is new.
    pub fn put(&mut self, path: &str, o: Object) -> std::io::Result<bool> {
        if let Some(dir) = &self.dir {
            let name = file_name(path);
            write_durably(&dir.join(&name), &o.body)?;
            let secs = o
                .last_modified
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let meta = serde_json::json!({
                "etag": o.etag,
                "last_modified": secs,
                "content_type": o.content_type,
                "cache_control": o.cache_control,
                "vary": o.vary,
            });
            write_durably(
                &dir.join(format!("{name}.meta")),
                meta.to_string().as_bytes(),
            )?;
        }
        Ok(self.objects.insert(path.to_string(), o).is_none())
    }

    pub fn delete(&mut self, path: &str) -> std::io::Result<bool> {
        if let Some(dir) = &self.dir {
            let name = file_name(path);
            for f in [dir.join(format!("{name}.meta")), dir.join(&name)] {
                match std::fs::remove_file(&f) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(self.objects.remove(path).is_some())
    }

    /// `d11 show NODE objects`.
    pub fn list(&self) -> serde_json::Value {
        serde_json::json!(self
            .objects
            .iter()
            .map(|(p, o)| serde_json::json!({
                "path": p,
                "size": o.body.len(),
                "etag": o.etag,
                "content_type": o.content_type,
                "cache_control": o.cache_control,
                "vary": o.vary,
                "last_modified": httpdate::fmt_http_date(o.last_modified),
            }))
            .collect::<Vec<_>>())
    }
}

/// An answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }
}

/// A byte range of an object of `len` octets, from a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// Serve the whole object (no Range, or one that is ignored).
    Whole,
    /// first..=last.
    Part(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Reads `Range` (RFC 9110 §14): one `bytes=` range; several, another unit or a malformed one
/// are ignored.
pub fn range(h: Option<&HeaderValue>, len: u64) -> Range {
    let Some(spec) = h
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().strip_prefix("bytes="))
    else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.is_empty(), num(a), num(b)) {
        // bytes=-N: the last N.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                Range::Unsatisfiable
            } else {
                Range::Part(len.saturating_sub(n), len - 1)
            }
        }
        (false, Some(first), last) if b.is_empty() || last.is_some() => {
            if let Some(l) = last {
                if l < first {
                    return Range::Whole; // invalid: ignored
                }
            }
            if first >= len {
                return Range::Unsatisfiable;
            }
            Range::Part(first, last.unwrap_or(len - 1).min(len - 1))
        }
        _ => Range::Whole,
    }
}

/// Whether an `If-None-Match` list names `etag` (weakly, as RFC 9110 §13.1.2 compares).
pub fn etag_matches(list: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    list.split(',')
        .any(|t| t.trim() == "*" || strip(t) == strip(etag))
}

/// The answer to GET or HEAD of `o` given the request's headers (`None`: no such object).
pub fn read(o: Option<&Object>, method: &Method, req: &HeaderMap) -> Answer {
    let Some(o) = o else {
        return Answer::empty(StatusCode::NOT_FOUND);
    };
    let mut h = HeaderMap::new();
    let hv = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    h.insert(header::ETAG, hv(&o.etag));
    h.insert(
        header::LAST_MODIFIED,
        hv(&httpdate::fmt_http_date(o.last_modified)),
    );
    if let Some(cc) = &o.cache_control {
        h.insert(header::CACHE_CONTROL, hv(cc));
    }
    if let Some(v) = &o.vary {
        h.insert(header::VARY, hv(v));
    }
    let inm = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    let not_modified = match inm {
        Some(list) => etag_matches(list, &o.etag),
        None => req
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok())
            .is_some_and(|since| o.last_modified <= since),
    };
    if not_modified {
        return Answer {
            status: StatusCode::NOT_MODIFIED,
            headers: h,
            body: Bytes::new(),
        };
    }
    h.insert(header::CONTENT_TYPE, hv(&o.content_type));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let len = o.body.len() as u64;
    let (status, body) = match range(req.get(header::RANGE), len) {
        Range::Whole => (StatusCode::OK, o.body.clone()),
        Range::Part(a, b) => {
            h.insert(header::CONTENT_RANGE, hv(&format!("bytes {a}-{b}/{len}")));
            (
                StatusCode::PARTIAL_CONTENT,
                o.body.slice(a as usize..=b as usize),
            )
        }
        Range::Unsatisfiable => {
            h.insert(header::CONTENT_RANGE, hv(&format!("bytes */{len}")));
            h.remove(header::CONTENT_TYPE);
            return Answer {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                headers: h,
                body: Bytes::new(),
            };
        }
    };
    Answer {
        status,
        headers: h,
        body: if method == Method::HEAD {
            Bytes::new()
        } else {
            body
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj() -> Object {
        Object::new(
            Bytes::from_static(b"0123456789"),
            "image/png",
            Some("public, max-age=60"),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn conditional_and_range_answers() {
        let o = obj();
        let a = read(Some(&o), &Method::GET, &HeaderMap::new());
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.headers["etag"], o.etag.as_str());
        assert_eq!(a.headers["cache-control"], "public, max-age=60");
        assert_eq!(a.headers["last-modified"], "Tue, 14 Nov 2023 22:13:20 GMT");
        let a = read(
            Some(&o),
            &Method::GET,
            &headers(&[("if-none-match", &o.etag)]),
        );
        assert_eq!(a.status, StatusCode::NOT_MODIFIED);
        assert!(a.body.is_empty());
        let a = read(
            Some(&o),
            &Method::GET,
            &headers(&[("if-none-match", "\"other\"")]),
        );
        assert_eq!(a.status, StatusCode::OK);
        let a = read(
            Some(&o),
            &Method::GET,
            &headers(&[("if-modified-since", "Tue, 14 Nov 2023 22:13:20 GMT")]),
        );
        assert_eq!(a.status, StatusCode::NOT_MODIFIED);
        let a = read(
            Some(&o),
            &Method::GET,
            &headers(&[("if-modified-since", "Tue, 14 Nov 2023 22:13:19 GMT")]),
        );
        assert_eq!(a.status, StatusCode::OK);
        let a = read(Some(&o), &Method::GET, &headers(&[("range", "bytes=2-4")]));
        assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(&a.body[..], b"234");
        assert_eq!(a.headers["content-range"], "bytes 2-4/10");
        let a = read(Some(&o), &Method::GET, &headers(&[("range", "bytes=-3")]));
        assert_eq!(&a.body[..], b"789");
        let a = read(Some(&o), &Method::GET, &headers(&[("range", "bytes=8-")]));
        assert_eq!(&a.body[..], b"89");
        let a = read(Some(&o), &Method::GET, &headers(&[("range", "bytes=10-")]));
        assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(a.headers["content-range"], "bytes */10");
        for ignored in [
            "bytes=5-2",
            "bytes=a-b",
            "lines=1-2",
            "bytes=1-2,4-5",
            "bytes=--1",
        ] {
            let a = read(Some(&o), &Method::GET, &headers(&[("range", ignored)]));
            assert_eq!(a.status, StatusCode::OK, "{ignored}");
        }
        let a = read(Some(&o), &Method::HEAD, &HeaderMap::new());
        assert!(a.body.is_empty());
        assert_eq!(read(None, &Method::GET, &HeaderMap::new()).status, 404);
    }

    #[test]
    fn objects_survive_a_restart_on_disk() {
        let dir = std::env::temp_dir().join(format!("d11-origin-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut s = Store::open(Some(&dir)).unwrap();
            assert!(s.put("/p/1.png", obj()).unwrap());
            assert!(!s.put("/p/1.png", obj()).unwrap());
            assert!(s.put("/p/2 ünï.png", obj()).unwrap());
            assert!(s.delete("/p/2 ünï.png").unwrap());
            assert!(s.put("/p/3.png", obj()).unwrap());
        }
        let s = Store::open(Some(&dir)).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.get("/p/1.png"), Some(&obj()));
        assert!(s.get("/p/2 ünï.png").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
