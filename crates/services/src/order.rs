//! `d11-order`: `com.shop.OrderService`.
//!
//! `createOrder(key, user, item, quantity, coupon, detail)`, types
//! `Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;JLjava/lang/String;Ljava/lang/String;`
//! (the coupon may be null), returns `{order: com.shop.Order, replayed: boolean, timings:
//! {call: microseconds}}`, or throws:
//!
//! | exception | when |
//! |---|---|
//! | `com.shop.SoldOutException` | not enough stock |
//! | `com.shop.CouponException` | the coupon is unknown or taken |
//! | `com.shop.KeyReusedException` | the key was used for another order |
//! | `com.shop.InProgressException` | the same key is being processed |
//! | `com.shop.UnavailableException` | a service or the store did not answer (whatever was done is undone) |
//!
//! It finds the inventory and coupon services through the registry (their providers followed
//! by long poll, calls balanced by `balance`) and stores orders in the shard of the order id
//! (`shards`, the `d11-db` nodes). Every call it makes is idempotent by the order id and is
//! retried on another provider after a timeout or a lost connection; undos that cannot reach
//! their service are owed and retried every second (`d11 show NODE owed`).
//!
//! What a crash must not forget is journalled in SQLite (`database`; in memory without one)
//! before the call it may have to undo: each order under way (written before its deduction,
//! removed once it is stored or given back) and each owed undo. At start, the orders a
//! previous run left under way (`d11 show NODE orphans`) are settled: stored, they stand;
//! not stored, their stock and coupon are given back.

use crate::coupon::COUPON;
use crate::db::{order_from, order_value, ORDER_STORE};
use crate::exceptions;
use crate::inventory::INVENTORY;
use crate::registry::REGISTRY;
use crate::{
    bad_args, connector, fixed, handler, long_arg, no_method, provide, string_arg, ServiceConfig,
};
use d11_element::{counters, App};
use d11_rpc::cluster::{map, Balance, CallOptions, Cluster};
use d11_rpc::d11_dubbo::Outcome;
use d11_rpc::{exception, Error, Value};
use d11_shop::{
    create_order, shard_of, Backends, CallError, Compensation, Desk, Intent, Journal, Order,
    OrderError, Refusal,
};
use d11_stack::{Stack, StackElement};
use rusqlite::{params, Connection};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

pub const ORDER: &str = "com.shop.OrderService";
pub const CREATE_TYPES: &str =
    "Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;JLjava/lang/String;Ljava/lang/String;";

#[derive(Debug, Clone, Deserialize)]
pub struct OrderConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// The order store's shards (d11-db), ADDRESS:PORT each; an order goes to shard
    /// `shard_of(id, n)`.
    pub shards: Vec<SocketAddrV4>,
    #[serde(default)]
    pub balance: Balance,
    /// Order ids are this prefix and 16 hex digits.
    #[serde(default = "default_prefix")]
    pub id_prefix: String,
    /// Milliseconds per call to another service.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// The SQLite file of the journal: orders under way and undos owed (in memory without one).
    #[serde(default)]
    pub database: Option<PathBuf>,
}

/// The order service's journal in SQLite. Each write is committed before it returns.
pub struct SqlJournal {
    db: Connection,
}

impl SqlJournal {
    pub fn open(path: Option<&std::path::Path>) -> rusqlite::Result<Self> {
        let db = crate::open_sqlite(
            path,
            "CREATE TABLE IF NOT EXISTS intents (
                 order_id TEXT PRIMARY KEY, key TEXT NOT NULL, coupon TEXT);
             CREATE TABLE IF NOT EXISTS owed (
                 kind TEXT NOT NULL, order_id TEXT NOT NULL, coupon TEXT NOT NULL,
                 PRIMARY KEY (kind, order_id, coupon));",
        )?;
        Ok(Self { db })
    }
}

/// A compensation as an `owed` row: (kind, order, coupon or "").
fn owed_row(c: &Compensation) -> (&'static str, &str, &str) {
    match c {
        Compensation::Restore { order } => ("restore", order, ""),
        Compensation::Release { coupon, order } => ("release", order, coupon),
    }
}

impl Journal for SqlJournal {
    fn begin(&self, i: &Intent) -> Result<(), String> {
        self.db
            .prepare_cached(
                "INSERT OR REPLACE INTO intents (order_id, key, coupon) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut st| st.execute(params![i.order, i.key, i.coupon]))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn end(&self, order: &str) -> Result<(), String> {
        self.db
            .prepare_cached("DELETE FROM intents WHERE order_id = ?1")
            .and_then(|mut st| st.execute([order]))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn owe(&self, c: &Compensation) -> Result<(), String> {
        let (k, o, cp) = owed_row(c);
        self.db
            .prepare_cached(
                "INSERT OR IGNORE INTO owed (kind, order_id, coupon) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut st| st.execute(params![k, o, cp]))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn paid(&self, c: &Compensation) -> Result<(), String> {
        let (k, o, cp) = owed_row(c);
        self.db
            .prepare_cached("DELETE FROM owed WHERE kind = ?1 AND order_id = ?2 AND coupon = ?3")
            .and_then(|mut st| st.execute(params![k, o, cp]))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn load(&self) -> Result<(Vec<Intent>, Vec<Compensation>), String> {
        let run = || -> rusqlite::Result<(Vec<Intent>, Vec<Compensation>)> {
            let mut st = self
                .db
                .prepare("SELECT order_id, key, coupon FROM intents ORDER BY rowid")?;
            let intents = st
                .query_map([], |r| {
                    Ok(Intent {
                        order: r.get(0)?,
                        key: r.get(1)?,
                        coupon: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = self
                .db
                .prepare("SELECT kind, order_id, coupon FROM owed ORDER BY rowid")?;
            let owed = st
                .query_map([], |r| {
                    let (kind, order, coupon): (String, String, String) =
                        (r.get(0)?, r.get(1)?, r.get(2)?);
                    Ok(if kind == "release" {
                        Compensation::Release { coupon, order }
                    } else {
                        Compensation::Restore { order }
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((intents, owed))
        };
        run().map_err(|e| e.to_string())
    }
}

fn default_prefix() -> String {
    "D11-".into()
}
fn default_timeout() -> u64 {
    2000
}

counters! {
    pub struct OrderCounters {
        created,
        replayed,
        sold_out,
        coupon_refused,
        key_reused,
        in_progress,
        unavailable,
    }
}

/// The services an order needs, over RPC.
pub struct Rpc {
    pub inventory: Rc<Cluster>,
    pub coupon: Rc<Cluster>,
    pub shards: Vec<Rc<Cluster>>,
    pub opts: CallOptions,
}

fn s(x: &str) -> Value {
    Value::String(x.into())
}

/// A failed call as the order sees it; `refusal` says what the service's exception classes
/// mean for this call.
fn call_error(e: Error, refusal: impl Fn(&str) -> Refusal) -> CallError {
    match e {
        // The service answered: nothing was done.
        Error::Exception { class, message } => CallError::Refused {
            why: refusal(&class),
            message: format!("{class}: {message}"),
        },
        Error::Status { status, message } => CallError::Refused {
            why: Refusal::Other,
            message: format!("status {status}: {message}"),
        },
        e => CallError::Unknown(e.to_string()),
    }
}

fn no_refusal(_: &str) -> Refusal {
    Refusal::Other
}

impl Rpc {
    fn shard(&self, id: &str) -> &Cluster {
        &self.shards[shard_of(id, self.shards.len())]
    }
}

impl Backends for Rpc {
    async fn find(&self, id: &str) -> Result<Option<Order>, String> {
        match self
            .shard(id)
            .call("get", "Ljava/lang/String;", vec![s(id)], self.opts)
            .await
        {
            Ok(None) => Ok(None),
            Ok(Some(v)) => order_from(&v)
                .map(Some)
                .ok_or_else(|| "the store answered something else than an order".into()),
            Err(e) => Err(e.to_string()),
        }
    }
    async fn deduct(&self, order: &str, item: &str, n: i64) -> Result<(), CallError> {
        self.inventory
            .call(
                "deduct",
                "Ljava/lang/String;Ljava/lang/String;J",
                vec![s(order), s(item), Value::Long(n)],
                self.opts,
            )
            .await
            .map(|_| ())
            .map_err(|e| {
                call_error(e, |class| {
                    if class == exceptions::OUT_OF_STOCK {
                        Refusal::OutOfStock
                    } else {
                        Refusal::Other
                    }
                })
            })
    }
    async fn restore(&self, order: &str) -> Result<(), String> {
        self.inventory
            .call("restore", "Ljava/lang/String;", vec![s(order)], self.opts)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    async fn redeem(&self, coupon: &str, order: &str) -> Result<(), CallError> {
        self.coupon
            .call(
                "redeem",
                "Ljava/lang/String;Ljava/lang/String;",
                vec![s(coupon), s(order)],
                self.opts,
            )
            .await
            .map(|_| ())
            .map_err(|e| {
                call_error(e, |class| {
                    if class == exceptions::ILLEGAL_STATE {
                        Refusal::CouponTaken
                    } else {
                        Refusal::Other
                    }
                })
            })
    }
    async fn release(&self, coupon: &str, order: &str) -> Result<(), String> {
        self.coupon
            .call(
                "release",
                "Ljava/lang/String;Ljava/lang/String;",
                vec![s(coupon), s(order)],
                self.opts,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    async fn store(&self, order: &Order) -> Result<Order, CallError> {
        match self
            .shard(&order.id)
            .call(
                "put",
                "Lcom/shop/Order;",
                vec![order_value(order)],
                self.opts,
            )
            .await
        {
            Ok(Some(v)) => order_from(&v)
                .ok_or_else(|| CallError::Unknown("the store answered something else".into())),
            Ok(None) => Err(CallError::Unknown("the store answered null".into())),
            Err(e) => Err(call_error(e, no_refusal)),
        }
    }
}

/// The exception class and message for an order error.
pub fn order_exception(e: &OrderError) -> (&'static str, String) {
    let class = match e {
        OrderError::SoldOut(_) => exceptions::SOLD_OUT,
        OrderError::CouponRefused(_) => exceptions::COUPON_REFUSED,
        OrderError::KeyReused => exceptions::KEY_REUSED,
        OrderError::InProgress => exceptions::IN_PROGRESS,
        OrderError::Stock(_)
        | OrderError::Coupon(_)
        | OrderError::Store(_)
        | OrderError::Journal(_) => exceptions::UNAVAILABLE,
    };
    (class, e.to_string())
}

pub fn build_order(cfg: &OrderConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let Some(registry) = cfg.service.registry else {
        anyhow::bail!("registry: the order service finds its services there (ADDRESS:PORT)");
    };
    if cfg.shards.is_empty() || cfg.shards.len() > 64 {
        anyhow::bail!("shards: 1 to 64 order-store addresses");
    }
    if !(10..=60_000).contains(&cfg.timeout_ms) {
        anyhow::bail!("timeout_ms: 10 to 60000");
    }
    let (stack, element) = Stack::new(&cfg.service.stack, "order")?;
    let conn = connector(&stack, Duration::from_secs(2));
    let rpc = Rc::new(Rpc {
        inventory: Cluster::new(INVENTORY, cfg.balance, conn.clone()),
        coupon: Cluster::new(COUPON, cfg.balance, conn),
        shards: cfg
            .shards
            .iter()
            .map(|a| fixed(&stack, ORDER_STORE, &[*a]))
            .collect(),
        opts: CallOptions {
            timeout: Duration::from_millis(cfg.timeout_ms),
            ..CallOptions::default().idempotent()
        },
    });
    let journal = SqlJournal::open(cfg.database.as_deref())
        .map_err(|e| crate::db_error(cfg.database.as_deref(), e))?;
    let desk = Rc::new(
        Desk::recover(&cfg.id_prefix, Rc::new(journal))
            .map_err(|e| crate::db_error(cfg.database.as_deref(), e))?,
    );
    if !desk.orphans().is_empty() || !desk.owed().is_empty() {
        tracing::warn!(
            orphans = desk.orphans().len(),
            owed = desk.owed().len(),
            "a previous run left orders under way or undos owed: settling them"
        );
    }
    let c = Rc::new(RefCell::new(OrderCounters::default()));
    let d2 = desk.clone();
    stack.add_table("owed", move || json!(d2.owed()));
    let d2 = desk.clone();
    stack.add_table("orphans", move || json!(d2.orphans()));
    let r2 = rpc.clone();
    stack.add_table("providers", move || {
        let mut v = r2.inventory.state();
        v.extend(r2.coupon.state());
        for s in &r2.shards {
            v.extend(s.state());
        }
        json!(v)
    });
    let calls = Rc::new(RefCell::new(0u64));
    let (c2, calls2, r2, d2) = (c.clone(), calls.clone(), rpc.clone(), desk.clone());
    stack.add_counters(move |out| {
        out("calls", *calls2.borrow());
        c2.borrow().for_each(out);
        out("owed", d2.owed().len() as u64);
        out("orphans", d2.orphans().len() as u64);
        let k = r2.inventory.counters.borrow();
        out("inventory_retries", k.retries);
        out("inventory_failed", k.failed);
        let k = r2.coupon.counters.borrow();
        out("coupon_retries", k.retries);
        out("coupon_failed", k.failed);
    });
    let (r2, d2) = (rpc.clone(), desk.clone());
    let h = handler(ORDER, calls, move |r| {
        let (rpc, desk, c) = (r2.clone(), d2.clone(), c.clone());
        async move {
            if r.method != "createOrder" {
                return no_method(&r.method);
            }
            let coupon = match r.args.get(4) {
                Some(Value::Null) => None,
                Some(Value::String(c)) if !c.is_empty() => Some(c.clone()),
                Some(Value::String(_)) => None,
                _ => return bad_args("createOrder(String, String, String, long, String, String)"),
            };
            let (Some(key), Some(user), Some(item), Some(quantity), Some(detail)) = (
                string_arg(&r, 0),
                string_arg(&r, 1),
                string_arg(&r, 2),
                long_arg(&r, 3),
                string_arg(&r, 5),
            ) else {
                return bad_args("createOrder(String, String, String, long, String, String)");
            };
            if key.is_empty() || key.len() > 255 || quantity <= 0 {
                return Ok(exception(
                    exceptions::ILLEGAL_ARGUMENT,
                    "key: 1 to 255 characters; quantity: at least 1",
                ));
            }
            let req = Order {
                id: String::new(),
                key,
                user,
                item,
                quantity,
                coupon,
                detail,
            };
            match create_order(&desk, &*rpc, &req).await {
                Ok(p) => {
                    let mut k = c.borrow_mut();
                    if p.replayed {
                        k.replayed += 1;
                    } else {
                        k.created += 1;
                    }
                    Ok(Outcome::Value(map(vec![
                        ("order", order_value(&p.order)),
                        ("replayed", Value::Bool(p.replayed)),
                        (
                            "timings",
                            map(p
                                .timings
                                .iter()
                                .map(|(n, d)| (*n, Value::Long(d.as_micros() as i64)))
                                .collect()),
                        ),
                    ])))
                }
                Err(e) => {
                    let (class, m) = order_exception(&e);
                    let mut k = c.borrow_mut();
                    match class {
                        exceptions::SOLD_OUT => k.sold_out += 1,
                        exceptions::COUPON_REFUSED => k.coupon_refused += 1,
                        exceptions::KEY_REUSED => k.key_reused += 1,
                        exceptions::IN_PROGRESS => k.in_progress += 1,
                        _ => k.unavailable += 1,
                    }
                    Ok(exception(class, &m))
                }
            }
        }
    });
    let app = provide(&stack, &cfg.service, ORDER, h)?;
    let reg = fixed(&stack, REGISTRY, &[registry]);
    Ok((
        element,
        Some(Box::pin(async move {
            tokio::task::spawn_local(rpc.inventory.clone().follow(reg.clone()));
            tokio::task::spawn_local(rpc.coupon.clone().follow(reg));
            let (rpc2, desk2) = (rpc.clone(), desk.clone());
            tokio::task::spawn_local(async move {
                let mut t = tokio::time::interval(Duration::from_secs(1));
                loop {
                    t.tick().await;
                    if desk2.unsettled() {
                        desk2.settle(&*rpc2).await;
                    }
                }
            });
            app.await
        })),
    ))
}
