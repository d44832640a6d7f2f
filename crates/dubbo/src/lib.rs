//! The Dubbo 2 RPC wire format ("dubbo" protocol, Hessian 2 serialization), so that an existing
//! Dubbo client or server could talk to ours.
//!
//! ```text
//!  0      1      2                3        4 ................ 11  12 ...... 15
//! +------+------+----------------+--------+---------------------+------------+
//! | 0xda | 0xbb | R T E  serial. | status |  request id (64)    | body length|
//! +------+------+----------------+--------+---------------------+------------+
//! R: request (else response), T: two-way (a response is wanted), E: event (heartbeat)
//! serialization id 2: Hessian 2. status: responses only (20 = OK).
//! ```
//!
//! A request body is, in Hessian: the Dubbo version, the service path, the service version,
//! the method name, the parameter types as a JVM descriptor (`Ljava/lang/String;I`), the
//! arguments, and a map of attachments. A response body is an int (what follows: a value, an
//! exception, nothing; with or without attachments), then that, then the attachments. A
//! heartbeat is an event whose body is Hessian null.

use d11_hessian::{Decoder, Encoder, Value};

pub const MAGIC: [u8; 2] = [0xda, 0xbb];
pub const HEADER_LEN: usize = 16;
pub const HESSIAN2: u8 = 2;
/// Dubbo's default limit on a body (`payload`, 8 MiB).
pub const MAX_BODY: usize = 8 << 20;
/// The version Dubbo 2.7 writes in requests.
pub const DUBBO_VERSION: &str = "2.0.2";

const FLAG_REQUEST: u8 = 0x80;
const FLAG_TWO_WAY: u8 = 0x40;
const FLAG_EVENT: u8 = 0x20;

/// Response status codes (Dubbo's `Response`).
pub mod status {
    pub const OK: u8 = 20;
    pub const CLIENT_TIMEOUT: u8 = 30;
    pub const SERVER_TIMEOUT: u8 = 31;
    pub const BAD_REQUEST: u8 = 40;
    pub const BAD_RESPONSE: u8 = 50;
    pub const SERVICE_NOT_FOUND: u8 = 60;
    pub const SERVICE_ERROR: u8 = 70;
    pub const SERVER_ERROR: u8 = 80;
    pub const CLIENT_ERROR: u8 = 90;
}

/// The int that starts a response body (Dubbo's `DubboCodec`).
pub mod result {
    pub const WITH_EXCEPTION: i32 = 0;
    pub const VALUE: i32 = 1;
    pub const NULL_VALUE: i32 = 2;
    pub const WITH_EXCEPTION_WITH_ATTACHMENTS: i32 = 3;
    pub const VALUE_WITH_ATTACHMENTS: i32 = 4;
    pub const NULL_VALUE_WITH_ATTACHMENTS: i32 = 5;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 2]),
    #[error("serialization id {0} (only Hessian 2, id 2, is spoken)")]
    Serialization(u8),
    #[error("body of {0} octets is over the limit")]
    TooBig(usize),
    #[error("body: {0}")]
    Body(String),
}

impl From<d11_hessian::Error> for Error {
    fn from(e: d11_hessian::Error) -> Self {
        Error::Body(e.to_string())
    }
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub request: bool,
    pub two_way: bool,
    pub event: bool,
    pub status: u8,
    pub id: u64,
    pub body_len: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&MAGIC);
        h[2] = HESSIAN2
            | if self.request { FLAG_REQUEST } else { 0 }
            | if self.two_way { FLAG_TWO_WAY } else { 0 }
            | if self.event { FLAG_EVENT } else { 0 };
        h[3] = self.status;
        h[4..12].copy_from_slice(&self.id.to_be_bytes());
        h[12..16].copy_from_slice(&self.body_len.to_be_bytes());
        h
    }

    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<Self, Error> {
        if h[0..2] != MAGIC {
            return Err(Error::BadMagic([h[0], h[1]]));
        }
        let serial = h[2] & 0x1f;
        if serial != HESSIAN2 {
            return Err(Error::Serialization(serial));
        }
        Ok(Self {
            request: h[2] & FLAG_REQUEST != 0,
            two_way: h[2] & FLAG_TWO_WAY != 0,
            event: h[2] & FLAG_EVENT != 0,
            status: h[3],
            id: u64::from_be_bytes(h[4..12].try_into().unwrap_or_default()),
            body_len: u32::from_be_bytes(h[12..16].try_into().unwrap_or_default()),
        })
    }
}

/// A call.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub service: String,
    pub version: String,
    pub method: String,
    /// JVM descriptor of the parameter types, e.g. `Ljava/lang/String;I`.
    pub types: String,
    pub args: Vec<Value>,
    /// `Map<String, Object>`: Dubbo 2.7 and later send some values as other types than
    /// strings (`timeout` as an int), so any Hessian value is kept as it came.
    pub attachments: Vec<(String, Value)>,
}

impl Request {
    /// A call of `service` (version 0.0.0) with no attachments.
    pub fn new(service: &str, method: &str, types: &str, args: Vec<Value>) -> Self {
        Self {
            service: service.into(),
            version: "0.0.0".into(),
            method: method.into(),
            types: types.into(),
            args,
            attachments: Vec::new(),
        }
    }
}

/// What a call came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Value(Value),
    Null,
    /// The exception (a Hessian object, e.g. `java.lang.RuntimeException` with `detailMessage`).
    Exception(Value),
}

/// A whole frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Request {
        id: u64,
        two_way: bool,
        request: Request,
    },
    Response {
        id: u64,
        status: u8,
        /// For status OK; other statuses carry an error message instead.
        outcome: Result<Outcome, String>,
        attachments: Vec<(String, Value)>,
    },
    /// A heartbeat (request or its response).
    Heartbeat { id: u64, request: bool },
}

fn attachment_map(entries: &[(String, Value)]) -> Value {
    Value::Map {
        type_name: None,
        entries: entries
            .iter()
            .map(|(k, v)| (Value::String(k.clone()), v.clone()))
            .collect(),
    }
}

/// Attachments are a `Map<String, Object>`: string keys, values of any type.
fn read_attachments(v: Value) -> Result<Vec<(String, Value)>, Error> {
    match v {
        Value::Map { entries, .. } => entries
            .into_iter()
            .map(|(k, v)| match k {
                Value::String(k) => Ok((k, v)),
                _ => Err(Error::Body(
                    "attachments: a key that is not a string".into(),
                )),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(Error::Body("attachments: not a map".into())),
    }
}

/// How many arguments a JVM descriptor lists.
pub fn count_types(desc: &str) -> Result<usize, Error> {
    let b = desc.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        while i < b.len() && b[i] == b'[' {
            i += 1;
        }
        match b.get(i) {
            Some(b'L') => {
                let end = desc[i..]
                    .find(';')
                    .ok_or_else(|| Error::Body(format!("descriptor {desc:?}: no ';'")))?;
                i += end + 1;
            }
            Some(b'Z' | b'B' | b'C' | b'D' | b'F' | b'I' | b'J' | b'S') => i += 1,
            _ => return Err(Error::Body(format!("descriptor {desc:?}: bad type"))),
        }
        n += 1;
    }
    Ok(n)
}

impl Frame {
    /// The frame's octets: header and Hessian body.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        let header = match self {
            Frame::Request {
                id,
                two_way,
                request: r,
            } => {
                for s in [DUBBO_VERSION, &r.service, &r.version, &r.method, &r.types] {
                    e.write(&Value::String(s.to_string()));
                }
                for a in &r.args {
                    e.write(a);
                }
                let mut att = r.attachments.clone();
                if !att.iter().any(|(k, _)| k == "path") {
                    att.push(("path".into(), Value::String(r.service.clone())));
                }
                e.write(&attachment_map(&att));
                Header {
                    request: true,
                    two_way: *two_way,
                    event: false,
                    status: 0,
                    id: *id,
                    body_len: 0,
                }
            }
            Frame::Response {
                id,
                status,
                outcome,
                attachments,
            } => {
                match outcome {
                    Ok(o) => {
                        let att = !attachments.is_empty();
                        let (code, v) = match o {
                            Outcome::Value(v) => (
                                if att {
                                    result::VALUE_WITH_ATTACHMENTS
                                } else {
                                    result::VALUE
                                },
                                Some(v),
                            ),
                            Outcome::Null => (
                                if att {
                                    result::NULL_VALUE_WITH_ATTACHMENTS
                                } else {
                                    result::NULL_VALUE
                                },
                                None,
                            ),
                            Outcome::Exception(x) => (
                                if att {
                                    result::WITH_EXCEPTION_WITH_ATTACHMENTS
                                } else {
                                    result::WITH_EXCEPTION
                                },
                                Some(x),
                            ),
                        };
                        e.write(&Value::Int(code));
                        if let Some(v) = v {
                            e.write(v);
                        }
                        if att {
                            e.write(&attachment_map(attachments));
                        }
                    }
                    // A failed status carries the error as a string.
                    Err(msg) => e.write(&Value::String(msg.clone())),
                }
                Header {
                    request: false,
                    two_way: false,
                    event: false,
                    status: *status,
                    id: *id,
                    body_len: 0,
                }
            }
            Frame::Heartbeat { id, request } => {
                e.write(&Value::Null);
                Header {
                    request: *request,
                    two_way: *request,
                    event: true,
                    status: if *request { 0 } else { status::OK },
                    id: *id,
                    body_len: 0,
                }
            }
        };
        let body = e.into_bytes();
        let mut h = header;
        h.body_len = body.len() as u32;
        let mut out = h.encode().to_vec();
        out.extend_from_slice(&body);
        out
    }

    fn decode_body(h: &Header, body: &[u8]) -> Result<Frame, Error> {
        let mut d = Decoder::new(body);
        if h.event {
            d.read()?;
            return Ok(Frame::Heartbeat {
                id: h.id,
                request: h.request,
            });
        }
        if h.request {
            let _version = d.read_string()?;
            let service = d.read_string()?;
            let version = d.read_string()?;
            let method = d.read_string()?;
            let types = d.read_string()?;
            let n = count_types(&types)?;
            let mut args = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                args.push(d.read()?);
            }
            let attachments = if d.is_empty() {
                Vec::new()
            } else {
                read_attachments(d.read()?)?
            };
            return Ok(Frame::Request {
                id: h.id,
                two_way: h.two_way,
                request: Request {
                    service,
                    version,
                    method,
                    types,
                    args,
                    attachments,
                },
            });
        }
        if h.status != status::OK {
            let msg = match d.read()? {
                Value::String(s) => s,
                other => format!("{other:?}"),
            };
            return Ok(Frame::Response {
                id: h.id,
                status: h.status,
                outcome: Err(msg),
                attachments: Vec::new(),
            });
        }
        let code = d.read_int()?;
        let (outcome, with_att) = match code {
            result::VALUE => (Outcome::Value(d.read()?), false),
            result::VALUE_WITH_ATTACHMENTS => (Outcome::Value(d.read()?), true),
            result::NULL_VALUE => (Outcome::Null, false),
            result::NULL_VALUE_WITH_ATTACHMENTS => (Outcome::Null, true),
            result::WITH_EXCEPTION => (Outcome::Exception(d.read()?), false),
            result::WITH_EXCEPTION_WITH_ATTACHMENTS => (Outcome::Exception(d.read()?), true),
            c => return Err(Error::Body(format!("response type {c}"))),
        };
        let attachments = if with_att {
            read_attachments(d.read()?)?
        } else {
            Vec::new()
        };
        Ok(Frame::Response {
            id: h.id,
            status: h.status,
            outcome: Ok(outcome),
            attachments,
        })
    }

    /// Reads a frame from the start of `buf` (a TCP stream's bytes): `Ok(None)` if more bytes
    /// are needed, else the frame and how many octets it took. A header error means the stream
    /// is lost (close it); a body error comes with the header, so a server can answer
    /// `BAD_REQUEST` to that request and go on.
    #[allow(clippy::type_complexity)]
    pub fn read(
        buf: &[u8],
        max_body: usize,
    ) -> Result<Option<(Header, Result<Frame, Error>, usize)>, Error> {
        if buf.len() < HEADER_LEN {
            // A wrong magic can be seen early.
            if buf.len() >= 2 && buf[0..2] != MAGIC {
                return Err(Error::BadMagic([buf[0], buf[1]]));
            }
            return Ok(None);
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&buf[..HEADER_LEN]);
        let h = Header::decode(&hb)?;
        let len = h.body_len as usize;
        if len > max_body {
            return Err(Error::TooBig(len));
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let f = Self::decode_body(&h, &buf[HEADER_LEN..HEADER_LEN + len]);
        Ok(Some((h, f, HEADER_LEN + len)))
    }
}

#[cfg(test)]
mod tests;
