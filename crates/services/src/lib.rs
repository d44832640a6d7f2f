//! The shop's RPC services, each a program on the userspace stack, speaking Dubbo 2 with
//! Hessian 2 (`d11-rpc`) on port 20880, Dubbo's default. Providers register with
//! `d11-registry` and keep their registration alive with heartbeats; consumers follow the
//! registry's pushes and balance their calls over the healthy providers
//! (`d11_rpc::cluster`).
//!
//! | program | service | methods |
//! |---|---|---|
//! | `d11-registry` | `com.d11.Registry` | `register`, `heartbeat`, `deregister`, `subscribe` |
//! | `d11-inventory` | `com.shop.InventoryService` | `deduct(orderId, item, n)`, `restore(orderId)`, `stock(item)` |
//! | `d11-coupon` | `com.shop.CouponService` | `redeem(coupon, orderId)`, `release(coupon, orderId)` |
//! | `d11-db` | `com.shop.OrderStore` | `put(Order)`, `get(orderId)`, `count()` |
//! | `d11-order` | `com.shop.OrderService` | `createOrder(key, user, item, quantity, coupon, detail)` |
//!
//! docs/backend.md has the methods' types and what they return.

use d11_element::App;
use d11_rpc::cluster::{keep_registered, Balance, Cluster, Connector, Provider, Stream};
use d11_rpc::d11_dubbo::{status, Request};
use d11_rpc::{serve, Handler, Value};
use d11_stack::{Stack, StackConfig};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::net::SocketAddrV4;
use std::rc::Rc;
use std::time::Duration;

pub mod coupon;
pub mod db;
pub mod inventory;
pub mod order;
pub mod registry;

pub use inventory::{build_inventory, InventoryConfig, INVENTORY};

/// Opens a service's SQLite file (in memory without one) with `schema` applied. WAL with
/// NORMAL sync: a process killed at any point loses nothing it committed.
pub fn open_sqlite(
    path: Option<&std::path::Path>,
    schema: &str,
) -> rusqlite::Result<rusqlite::Connection> {
    let db = match path {
        Some(p) => rusqlite::Connection::open(p)?,
        None => rusqlite::Connection::open_in_memory()?,
    };
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.execute_batch(schema)?;
    Ok(db)
}

/// The Java exception classes the shop's services throw: the type a caller decides on (never
/// the message).
pub mod exceptions {
    /// `InventoryService.deduct`: not enough stock.
    pub const OUT_OF_STOCK: &str = "com.shop.OutOfStockException";
    /// A call that cannot be made (unknown item, contention, a coupon unknown or taken).
    pub const ILLEGAL_STATE: &str = "java.lang.IllegalStateException";
    /// Arguments of the wrong kind.
    pub const ILLEGAL_ARGUMENT: &str = "java.lang.IllegalArgumentException";
    /// `OrderService.createOrder`: not enough stock.
    pub const SOLD_OUT: &str = "com.shop.SoldOutException";
    /// `OrderService.createOrder`: the coupon is unknown or taken.
    pub const COUPON_REFUSED: &str = "com.shop.CouponException";
    /// `OrderService.createOrder`: the idempotency key was used for another order.
    pub const KEY_REUSED: &str = "com.shop.KeyReusedException";
    /// `OrderService.createOrder`: the same key is being processed.
    pub const IN_PROGRESS: &str = "com.shop.InProgressException";
    /// A service or store did not answer, or failed (whatever was done is undone).
    pub const UNAVAILABLE: &str = "com.shop.UnavailableException";
}

/// A service's database error, naming the file (or memory).
pub fn db_error(path: Option<&std::path::Path>, e: impl std::fmt::Display) -> anyhow::Error {
    let at = path.map_or("(memory)".into(), |p| p.display().to_string());
    anyhow::anyhow!("database {at}: {e}")
}

/// Dubbo's default port.
pub const PORT: u16 = 20880;

/// What every provider's config has besides its stack.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceConfig {
    #[serde(flatten)]
    pub stack: StackConfig,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_backlog")]
    pub backlog: usize,
    /// The registry, ADDRESS:PORT; without one the service is reached by its address only.
    #[serde(default)]
    pub registry: Option<SocketAddrV4>,
    /// The weight it registers with (random balancing).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Seconds between heartbeats to the registry.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_s: f64,
    /// Who may call: the callers' prefixes (the services whose role is to call this one).
    /// A connection from anywhere else is counted (`rpc_untrusted`) and closed before it
    /// is read. Without it, anyone who reaches the port may call.
    #[serde(default)]
    pub callers: Option<Vec<ipnet::Ipv4Net>>,
}

fn default_port() -> u16 {
    PORT
}
fn default_backlog() -> usize {
    64
}
fn default_weight() -> u32 {
    100
}
fn default_heartbeat() -> f64 {
    5.0
}

impl ServiceConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.heartbeat_s > 0.0 && self.heartbeat_s <= 60.0) {
            anyhow::bail!("heartbeat_s must be above 0 and at most 60");
        }
        if self.weight == 0 {
            anyhow::bail!("weight must be at least 1");
        }
        if self.callers.as_ref().is_some_and(Vec::is_empty) {
            anyhow::bail!(
                "callers: an empty list would refuse every caller; leave it out to allow any"
            );
        }
        Ok(())
    }
}

/// Connections over the stack's TCP, given up after `timeout`.
pub fn connector(stack: &Stack, timeout: Duration) -> Connector {
    let stack = stack.clone();
    Rc::new(move |a| {
        let stack = stack.clone();
        Box::pin(async move {
            match tokio::time::timeout(timeout, stack.connect(a)).await {
                Ok(Ok(s)) => Ok(Box::new(s) as Box<dyn Stream>),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )),
            }
        })
    })
}

/// A cluster with fixed providers (the registry itself, a database shard).
pub fn fixed(stack: &Stack, service: &str, at: &[SocketAddrV4]) -> Rc<Cluster> {
    let c = Cluster::new(
        service,
        Balance::RoundRobin,
        connector(stack, Duration::from_secs(2)),
    );
    c.set_providers(
        at.iter()
            .map(|a| Provider {
                address: *a,
                weight: 100,
            })
            .collect(),
    );
    c
}

/// Serves `service` with `handler` on the config's port to the config's `callers` and, with a
/// registry, keeps it registered there. The app to run.
pub fn provide(
    stack: &Stack,
    cfg: &ServiceConfig,
    service: &str,
    handler: Handler,
) -> anyhow::Result<App> {
    cfg.validate()?;
    let listener = stack.listen(cfg.port, cfg.backlog)?;
    let callers = cfg.callers.clone();
    let untrusted = Rc::new(std::cell::Cell::new(0u64));
    let u = untrusted.clone();
    stack.add_counters(move |out| out("rpc_untrusted", u.get()));
    let registration = cfg.registry.map(|r| {
        (
            fixed(stack, registry::REGISTRY, &[r]),
            SocketAddrV4::new(stack.address(), cfg.port),
        )
    });
    let (service, weight, every) = (
        service.to_string(),
        cfg.weight,
        Duration::from_secs_f64(cfg.heartbeat_s),
    );
    Ok(Box::pin(async move {
        if let Some((reg, me)) = registration {
            tokio::task::spawn_local(keep_registered(
                reg,
                service,
                "1.0.0".into(),
                me,
                weight,
                every,
            ));
        }
        loop {
            let (conn, peer) = listener.accept().await?;
            if let Some(c) = &callers {
                if !c.iter().any(|n| n.contains(peer.ip())) {
                    untrusted.set(untrusted.get() + 1);
                    tracing::debug!(%peer, "a caller that is not among `callers`: closed");
                    drop(conn);
                    continue;
                }
            }
            tokio::task::spawn_local(serve(conn, handler.clone()));
        }
    }))
}

/// A handler from a closure over (method, request), answering other services with
/// "service not found" and counting calls.
pub fn handler<F, Fut>(service: &'static str, calls: Rc<RefCell<u64>>, f: F) -> Handler
where
    F: Fn(Request) -> Fut + 'static,
    Fut: std::future::Future<Output = d11_rpc::Reply> + 'static,
{
    let f = Rc::new(f);
    Rc::new(move |r: Request| {
        *calls.borrow_mut() += 1;
        if r.service != service {
            let m = format!("no service {}", r.service);
            return Box::pin(async move { Err((status::SERVICE_NOT_FOUND, m)) });
        }
        let f = f.clone();
        Box::pin(async move { f(r).await })
    })
}

/// The "wrong arguments" answer.
pub fn bad_args(signature: &str) -> d11_rpc::Reply {
    Err((status::BAD_REQUEST, format!("expected {signature}")))
}

/// The "no such method" answer.
pub fn no_method(m: &str) -> d11_rpc::Reply {
    Err((status::SERVICE_NOT_FOUND, format!("no method {m}")))
}

pub fn string_arg(r: &Request, i: usize) -> Option<String> {
    match r.args.get(i) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

pub fn long_arg(r: &Request, i: usize) -> Option<i64> {
    match r.args.get(i) {
        Some(Value::Long(n)) => Some(*n),
        Some(Value::Int(n)) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Hessian arguments from JSON values, by the JVM descriptor: `J` long, `I` int, `Z` boolean,
/// `D` double, `Ljava/lang/String;` string; `{n}` in a string becomes `n`.
pub fn args_from_json(
    types: &str,
    args: &[serde_json::Value],
    n: usize,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let b = types.as_bytes();
    let mut i = 0;
    for a in args {
        let t = *b
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("more arguments than types in {types:?}"))?;
        let v = match t {
            b'J' => Value::Long(a.as_i64().ok_or_else(|| anyhow::anyhow!("{a}: a long"))?),
            b'I' => Value::Int(
                a.as_i64()
                    .and_then(|x| i32::try_from(x).ok())
                    .ok_or_else(|| anyhow::anyhow!("{a}: an int"))?,
            ),
            b'Z' => Value::Bool(
                a.as_bool()
                    .ok_or_else(|| anyhow::anyhow!("{a}: a boolean"))?,
            ),
            b'D' => Value::Double(a.as_f64().ok_or_else(|| anyhow::anyhow!("{a}: a double"))?),
            b'L' => Value::String(
                a.as_str()
                    .ok_or_else(|| anyhow::anyhow!("{a}: a string"))?
                    .replace("{n}", &n.to_string()),
            ),
            _ => anyhow::bail!("type {:?} in {types:?} is not supported here", t as char),
        };
        out.push(v);
        i += if t == b'L' {
            types[i..].find(';').map_or(types.len(), |e| e + 1)
        } else {
            1
        };
    }
    Ok(out)
}

/// A Hessian value as JSON (for printing results).
pub fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => json!(null),
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Long(l) => json!(l),
        Value::Double(d) => json!(d),
        Value::Date(d) => json!({ "date_ms": d }),
        Value::String(s) => json!(s),
        Value::Binary(b) => json!({ "binary_len": b.len() }),
        Value::List { items, .. } => json!(items.iter().map(to_json).collect::<Vec<_>>()),
        Value::Map { entries, .. } => json!(entries
            .iter()
            .map(|(k, v)| json!([to_json(k), to_json(v)]))
            .collect::<Vec<_>>()),
        Value::Object { class, fields } => {
            let mut m = serde_json::Map::new();
            m.insert("class".into(), json!(class));
            for (n, v) in fields {
                m.insert(n.clone(), to_json(v));
            }
            serde_json::Value::Object(m)
        }
    }
}

#[cfg(test)]
mod sim_tests;
