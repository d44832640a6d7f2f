//! Dubbo-style RPC over any byte stream: our userspace TCP (`d11_stack::TcpStream`) or, for
//! comparison, the kernel's. Frames are `d11_dubbo`'s.
//!
//! - [`Client`]: one connection to one provider, many calls in flight on it, matched by request
//!   id; each call has a timeout; a heartbeat keeps the connection honest. A call whose
//!   connection breaks fails at once.
//! - [`serve`]: reads frames and hands each request to the handler as its own task (so a slow
//!   call does not hold the others), answers heartbeats, answers a request whose body cannot be
//!   read with `BAD_REQUEST`, and closes the connection on a bad header (the stream is lost).
//!
//! Everything is `!Send` (`spawn_local`): one thread per program, as the element runtime runs.

use d11_dubbo::{status, Error as WireError, Frame, Outcome, Request, MAX_BODY};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

pub use d11_dubbo;
pub use d11_hessian::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("the call timed out")]
    Timeout,
    #[error("the connection is closed")]
    Closed,
    #[error("the provider answered status {status}: {message}")]
    Status { status: u8, message: String },
    /// The provider threw `class` (a Java exception class name: the type callers decide on).
    #[error("the provider threw: {class}: {message}")]
    Exception { class: String, message: String },
    #[error("cannot connect to {0}")]
    Connect(String),
    #[error("no provider of {0}")]
    NoProvider(String),
}

/// What a handler returns: the outcome, or (status, message) for a failure the caller sees as
/// such (service not found, ...).
pub type Reply = Result<Outcome, (u8, String)>;

/// A handler of calls.
pub type Handler = Rc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Reply>>>>;

/// Reads frames off `r` into `buf`; `Ok(None)` at a clean end of stream.
async fn next_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<(d11_dubbo::Header, Result<Frame, WireError>)>, WireError> {
    loop {
        if let Some((h, f, n)) = Frame::read(buf, MAX_BODY)? {
            buf.drain(..n);
            return Ok(Some((h, f)));
        }
        let mut chunk = [0u8; 16384];
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Serves one connection until it closes or sends a bad header.
pub async fn serve<S>(stream: S, handler: Handler)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut r, mut w) = tokio::io::split(stream);
    // One writer: responses from concurrent calls go out whole, one after another.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::task::spawn_local(async move {
        while let Some(b) = rx.recv().await {
            if w.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut buf = Vec::new();
    loop {
        let (h, f) = match next_frame(&mut r, &mut buf).await {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "closing an RPC connection: bad header");
                break;
            }
        };
        match f {
            Ok(Frame::Heartbeat { id, request: true }) => {
                let _ = tx.send(Frame::Heartbeat { id, request: false }.encode());
            }
            Ok(Frame::Request {
                id,
                two_way,
                request,
            }) => {
                let (handler, tx) = (handler.clone(), tx.clone());
                tokio::task::spawn_local(async move {
                    let reply = handler(request).await;
                    if two_way {
                        let (status, outcome) = match reply {
                            Ok(o) => (status::OK, Ok(o)),
                            Err((s, m)) => (s, Err(m)),
                        };
                        let _ = tx.send(
                            Frame::Response {
                                id,
                                status,
                                outcome,
                                attachments: Vec::new(),
                            }
                            .encode(),
                        );
                    }
                });
            }
            Ok(_) => {}
            Err(e) if h.request && !h.event => {
                let _ = tx.send(
                    Frame::Response {
                        id: h.id,
                        status: status::BAD_REQUEST,
                        outcome: Err(format!("cannot read the request: {e}")),
                        attachments: Vec::new(),
                    }
                    .encode(),
                );
            }
            Err(_) => {}
        }
    }
    drop(tx);
    let _ = writer.await;
}

type Pending = Rc<RefCell<HashMap<u64, oneshot::Sender<Result<Frame, Error>>>>>;

/// A connection to one provider.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    next_id: Rc<std::cell::Cell<u64>>,
    closed: Rc<std::cell::Cell<bool>>,
}

impl Client {
    /// Starts the reader and writer tasks on `stream`.
    pub fn new<S>(stream: S) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let (mut r, mut w) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pending: Pending = Rc::default();
        let closed = Rc::new(std::cell::Cell::new(false));
        tokio::task::spawn_local(async move {
            while let Some(b) = rx.recv().await {
                if w.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
        let (p, c) = (pending.clone(), closed.clone());
        tokio::task::spawn_local(async move {
            let mut buf = Vec::new();
            while let Ok(Some((h, f))) = next_frame(&mut r, &mut buf).await {
                if h.request {
                    continue;
                }
                let waiter = p.borrow_mut().remove(&h.id);
                if let Some(w) = waiter {
                    let _ = w.send(f.map_err(|e| Error::Status {
                        status: status::BAD_RESPONSE,
                        message: e.to_string(),
                    }));
                }
            }
            // The connection is gone: every call waiting on it fails now.
            c.set(true);
            for (_, w) in p.borrow_mut().drain() {
                let _ = w.send(Err(Error::Closed));
            }
        });
        Self {
            tx,
            pending,
            next_id: Rc::new(std::cell::Cell::new(1)),
            closed,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get() || self.tx.is_closed()
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.borrow().len()
    }

    fn id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    async fn exchange(
        &self,
        frame_for: impl FnOnce(u64) -> Frame,
        timeout: Duration,
    ) -> Result<Frame, Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let id = self.id();
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        if self.tx.send(frame_for(id).encode()).is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(Error::Closed);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => {
                self.pending.borrow_mut().remove(&id);
                Err(Error::Timeout)
            }
        }
    }

    /// Calls `request`; its value (or null), an exception, or why not.
    pub async fn call(&self, request: Request, timeout: Duration) -> Result<Option<Value>, Error> {
        match self
            .exchange(
                |id| Frame::Request {
                    id,
                    two_way: true,
                    request,
                },
                timeout,
            )
            .await?
        {
            Frame::Response {
                status: s, outcome, ..
            } => match outcome {
                Ok(Outcome::Value(v)) => Ok(Some(v)),
                Ok(Outcome::Null) => Ok(None),
                Ok(Outcome::Exception(x)) => {
                    let (class, message) = exception_parts(&x);
                    Err(Error::Exception { class, message })
                }
                Err(message) => Err(Error::Status { status: s, message }),
            },
            _ => Err(Error::Status {
                status: status::BAD_RESPONSE,
                message: "not a response".into(),
            }),
        }
    }

    /// A heartbeat; Ok when the provider answered it in time.
    pub async fn heartbeat(&self, timeout: Duration) -> Result<(), Error> {
        match self
            .exchange(|id| Frame::Heartbeat { id, request: true }, timeout)
            .await?
        {
            Frame::Heartbeat { request: false, .. } => Ok(()),
            _ => Err(Error::Status {
                status: status::BAD_RESPONSE,
                message: "not a heartbeat answer".into(),
            }),
        }
    }
}

/// The class and message (Java's `detailMessage`) of an exception object.
pub fn exception_parts(x: &Value) -> (String, String) {
    match x {
        Value::Object { class, fields } => {
            let message = fields
                .iter()
                .find(|(n, _)| n == "detailMessage")
                .and_then(|(_, v)| match v {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            (class.clone(), message)
        }
        other => ("(not an object)".into(), format!("{other:?}")),
    }
}

/// An exception as Java serialises a Throwable: `detailMessage`, and an empty `stackTrace`
/// (clients that print the trace expect the field).
pub fn exception(class: &str, message: &str) -> Outcome {
    Outcome::Exception(Value::Object {
        class: class.into(),
        fields: vec![
            ("detailMessage".into(), Value::String(message.into())),
            (
                "stackTrace".into(),
                Value::List {
                    type_name: Some("[java.lang.StackTraceElement".into()),
                    items: Vec::new(),
                },
            ),
        ],
    })
}

pub mod cluster;
#[cfg(test)]
mod tests;
