//! `d11-db`: one shard of the order store, `com.shop.OrderStore`, over an embedded SQLite
//! database (`database`, a file; `sqlite3 FILE 'SELECT * FROM orders'` reads it).
//!
//! | method | types | returns |
//! |---|---|---|
//! | `put(order)` | `Lcom/shop/Order;` | the order stored under its id: this one, or the one that was there first |
//! | `get(orderId)` | `Ljava/lang/String;` | the order, or null |
//! | `count()` | | the number of orders (long) |
//!
//! An order is a Hessian typed object `com.shop.Order` with the fields `id`, `key`, `user`,
//! `item`, `quantity` (long), `coupon` (string or null) and `detail` (the client's JSON).
//! `put` is idempotent: a retry stores nothing twice. The order service picks the shard by
//! the order id (`d11_shop::shard_of`). Standby replication is a later step: every write goes
//! through [`OrderDb::put`], the place to ship it from.

use crate::{bad_args, handler, no_method, provide, string_arg, ServiceConfig};
use d11_element::App;
use d11_rpc::cluster::field;
use d11_rpc::d11_dubbo::Outcome;
use d11_rpc::{exception, Value};
use d11_shop::Order;
use d11_stack::{Stack, StackElement};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

pub const ORDER_STORE: &str = "com.shop.OrderStore";
pub const ORDER_CLASS: &str = "com.shop.Order";

#[derive(Debug, Clone, Deserialize)]
pub struct DbConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// The SQLite file.
    pub database: PathBuf,
}

/// An order as a Hessian typed object.
pub fn order_value(o: &Order) -> Value {
    let s = |x: &str| Value::String(x.into());
    Value::Object {
        class: ORDER_CLASS.into(),
        fields: vec![
            ("id".into(), s(&o.id)),
            ("key".into(), s(&o.key)),
            ("user".into(), s(&o.user)),
            ("item".into(), s(&o.item)),
            ("quantity".into(), Value::Long(o.quantity)),
            ("coupon".into(), o.coupon.as_deref().map_or(Value::Null, s)),
            ("detail".into(), s(&o.detail)),
        ],
    }
}

/// An order from a Hessian object (or map) with its fields.
pub fn order_from(v: &Value) -> Option<Order> {
    let s = |n: &str| match field(v, n) {
        Some(Value::String(x)) => Some(x.clone()),
        _ => None,
    };
    let quantity = match field(v, "quantity")? {
        Value::Long(q) => *q,
        Value::Int(q) => i64::from(*q),
        _ => return None,
    };
    let coupon = match field(v, "coupon") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.clone()),
        _ => return None,
    };
    Some(Order {
        id: s("id")?,
        key: s("key")?,
        user: s("user")?,
        item: s("item")?,
        quantity,
        coupon,
        detail: s("detail").unwrap_or_default(),
    })
}

/// The orders table.
pub struct OrderDb {
    db: Connection,
}

impl OrderDb {
    pub fn open(path: &std::path::Path) -> rusqlite::Result<Self> {
        let db = crate::open_sqlite(
            Some(path),
            "CREATE TABLE IF NOT EXISTS orders (
                 id TEXT PRIMARY KEY, key TEXT NOT NULL, user TEXT NOT NULL, item TEXT NOT NULL,
                 quantity INTEGER NOT NULL, coupon TEXT, detail TEXT NOT NULL,
                 created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')));",
        )?;
        Ok(Self { db })
    }

    /// Stores `o` unless its id is there; the order stored under the id.
    pub fn put(&self, o: &Order) -> rusqlite::Result<Order> {
        self.db
            .prepare_cached(
                "INSERT OR IGNORE INTO orders (id, key, user, item, quantity, coupon, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                o.id, o.key, o.user, o.item, o.quantity, o.coupon, o.detail
            ])?;
        self.get(&o.id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
    }

    pub fn get(&self, id: &str) -> rusqlite::Result<Option<Order>> {
        self.db
            .prepare_cached(
                "SELECT id, key, user, item, quantity, coupon, detail FROM orders WHERE id = ?1",
            )?
            .query_row([id], |r| {
                Ok(Order {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    user: r.get(2)?,
                    item: r.get(3)?,
                    quantity: r.get(4)?,
                    coupon: r.get(5)?,
                    detail: r.get(6)?,
                })
            })
            .optional()
    }

    pub fn count(&self) -> rusqlite::Result<i64> {
        self.db
            .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
    }

    /// The newest `n` orders.
    pub fn recent(&self, n: usize) -> rusqlite::Result<Vec<serde_json::Value>> {
        let mut st = self.db.prepare(
            "SELECT id, key, user, item, quantity, coupon, created FROM orders
             ORDER BY rowid DESC LIMIT ?1",
        )?;
        let rows = st.query_map([n as i64], |r| {
            Ok(json!({
                "id": r.get::<_, String>(0)?,
                "key": r.get::<_, String>(1)?,
                "user": r.get::<_, String>(2)?,
                "item": r.get::<_, String>(3)?,
                "quantity": r.get::<_, i64>(4)?,
                "coupon": r.get::<_, Option<String>>(5)?,
                "created": r.get::<_, String>(6)?,
            }))
        })?;
        rows.collect()
    }
}

pub fn build_db(cfg: &DbConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let (stack, element) = Stack::new(&cfg.service.stack, "db")?;
    let db =
        Rc::new(OrderDb::open(&cfg.database).map_err(|e| crate::db_error(Some(&cfg.database), e))?);
    let d2 = db.clone();
    stack.add_table("orders", move || json!(d2.recent(100).unwrap_or_default()));
    let calls = Rc::new(RefCell::new(0u64));
    let stats = Rc::new(RefCell::new([0u64; 3]));
    let (calls2, s2, d2) = (calls.clone(), stats.clone(), db.clone());
    stack.add_counters(move |out| {
        let s = s2.borrow();
        out("calls", *calls2.borrow());
        out("stored", s[0]);
        out("already_stored", s[1]);
        out("db_errors", s[2]);
        out("orders", d2.count().unwrap_or(0) as u64);
    });
    let h = handler(ORDER_STORE, calls, move |r| {
        let (db, stats) = (db.clone(), stats.clone());
        async move {
            let failed = |e: rusqlite::Error| {
                stats.borrow_mut()[2] += 1;
                tracing::error!(error = %e, "order database");
                Ok(exception("java.sql.SQLException", &e.to_string()))
            };
            match r.method.as_str() {
                "put" => {
                    let Some(o) = r.args.first().and_then(order_from) else {
                        return bad_args("put(com.shop.Order)");
                    };
                    let before = db.get(&o.id);
                    match before.and_then(|b| Ok((b.is_some(), db.put(&o)?))) {
                        Ok((existed, stored)) => {
                            stats.borrow_mut()[usize::from(existed)] += 1;
                            Ok(Outcome::Value(order_value(&stored)))
                        }
                        Err(e) => failed(e),
                    }
                }
                "get" => {
                    let Some(id) = string_arg(&r, 0) else {
                        return bad_args("get(String)");
                    };
                    match db.get(&id) {
                        Ok(Some(o)) => Ok(Outcome::Value(order_value(&o))),
                        Ok(None) => Ok(Outcome::Null),
                        Err(e) => failed(e),
                    }
                }
                "count" => match db.count() {
                    Ok(n) => Ok(Outcome::Value(Value::Long(n))),
                    Err(e) => failed(e),
                },
                m => no_method(m),
            }
        }
    });
    let app = provide(&stack, &cfg.service, ORDER_STORE, h)?;
    Ok((element, Some(app)))
}
