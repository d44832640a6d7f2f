//! `d11-inventory`: `com.shop.InventoryService`.
//!
//! | method | types | returns |
//! |---|---|---|
//! | `deduct(orderId, item, n)` | `Ljava/lang/String;Ljava/lang/String;J` | the quantity left (long); `com.shop.OutOfStockException` when out of stock, an `IllegalStateException` for an unknown item or a contended one |
//! | `restore(orderId)` | `Ljava/lang/String;` | whether stock was given back (boolean) |
//! | `stock(item)` | `Ljava/lang/String;` | the quantity (long) |
//!
//! Deductions are compare-and-set with retries, idempotent per order (`d11_shop::Inventory`).
//! The stock and the deductions live in SQLite (`database`, a file that survives a restart;
//! in memory without one): each compare-and-set writes the new quantity and the order's
//! deduction in one transaction, so a restarted inventory knows which orders hold stock.

use crate::{bad_args, handler, long_arg, no_method, provide, string_arg, ServiceConfig};
use d11_element::{counters, App};
use d11_rpc::d11_dubbo::Outcome;
use d11_rpc::{exception, Value};
use d11_shop::{DeductError, Deduction, Inventory, StockStore};
use d11_stack::{Stack, StackElement};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

pub const INVENTORY: &str = "com.shop.InventoryService";

#[derive(Debug, Clone, Deserialize)]
pub struct InventoryConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Stock per item, set when the database does not have the item yet.
    #[serde(default)]
    pub stock: BTreeMap<String, i64>,
    /// The SQLite file (in memory without one).
    #[serde(default)]
    pub database: Option<PathBuf>,
}

counters! {
    pub struct InventoryCounters {
        calls,
        deducted,
        out_of_stock,
        restored,
        bad_calls,
        db_errors,
    }
}

/// The stock table in SQLite.
#[derive(Clone)]
pub struct SqlStock {
    db: Rc<Connection>,
    errors: Rc<std::cell::Cell<u64>>,
}

impl SqlStock {
    pub fn open(path: Option<&std::path::Path>) -> rusqlite::Result<Self> {
        let db = crate::open_sqlite(
            path,
            "CREATE TABLE IF NOT EXISTS stock (
                 item TEXT PRIMARY KEY, quantity INTEGER NOT NULL CHECK (quantity >= 0),
                 version INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS deductions (
                 order_id TEXT PRIMARY KEY, item TEXT NOT NULL, n INTEGER NOT NULL,
                 restored INTEGER NOT NULL);",
        )?;
        Ok(Self {
            db: Rc::new(db),
            errors: Rc::default(),
        })
    }

    /// Sets `item` to `qty` unless the database already has it.
    pub fn seed(&self, item: &str, qty: i64) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT OR IGNORE INTO stock (item, quantity, version) VALUES (?1, ?2, 0)",
            params![item, qty],
        )?;
        Ok(())
    }

    pub fn get(&self, item: &str) -> Option<(i64, u64)> {
        self.db
            .prepare_cached("SELECT quantity, version FROM stock WHERE item = ?1")
            .and_then(|mut st| {
                st.query_row([item], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
                })
            })
            .optional()
            .unwrap_or_else(|e| {
                self.error(&e);
                None
            })
    }

    pub fn items(&self) -> Vec<(String, i64, u64)> {
        let run = || -> rusqlite::Result<Vec<(String, i64, u64)>> {
            let mut st = self
                .db
                .prepare("SELECT item, quantity, version FROM stock ORDER BY item")?;
            let rows = st.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })?;
            rows.collect()
        };
        run().unwrap_or_default()
    }

    pub fn deductions(&self) -> rusqlite::Result<Vec<Deduction>> {
        let mut st = self
            .db
            .prepare("SELECT order_id, item, n, restored FROM deductions")?;
        let rows = st.query_map([], |r| {
            Ok(Deduction {
                order: r.get(0)?,
                item: r.get(1)?,
                n: r.get(2)?,
                restored: r.get::<_, i64>(3)? != 0,
            })
        })?;
        rows.collect()
    }

    fn error(&self, e: &rusqlite::Error) {
        self.errors.set(self.errors.get() + 1);
        tracing::error!(error = %e, "stock database");
    }

    fn try_cas(
        &self,
        item: &str,
        version: u64,
        qty: i64,
        why: &Deduction,
    ) -> rusqlite::Result<bool> {
        let tx = self.db.unchecked_transaction()?;
        let n = tx
            .prepare_cached(
                "UPDATE stock SET quantity = ?1, version = version + 1 WHERE item = ?2 AND version = ?3",
            )?
            .execute(params![qty, item, version as i64])?;
        if n != 1 {
            return Ok(false);
        }
        tx.prepare_cached(
            "INSERT OR REPLACE INTO deductions (order_id, item, n, restored) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![why.order, why.item, why.n, i64::from(why.restored)])?;
        tx.commit()?;
        Ok(true)
    }
}

impl StockStore for SqlStock {
    async fn read(&self, item: &str) -> Option<(i64, u64)> {
        self.get(item)
    }
    async fn cas(&self, item: &str, version: u64, qty: i64, why: &Deduction) -> bool {
        self.try_cas(item, version, qty, why).unwrap_or_else(|e| {
            self.error(&e);
            false
        })
    }
}

struct Parts {
    store: SqlStock,
    inv: Rc<Inventory<SqlStock>>,
    c: Rc<RefCell<InventoryCounters>>,
    calls: Rc<RefCell<u64>>,
}

fn open(cfg: &InventoryConfig) -> anyhow::Result<Parts> {
    let store = SqlStock::open(cfg.database.as_deref())
        .map_err(|e| crate::db_error(cfg.database.as_deref(), e))?;
    for (item, qty) in &cfg.stock {
        if *qty < 0 {
            anyhow::bail!("stock of {item}: {qty} is negative");
        }
        store.seed(item, *qty)?;
    }
    let inv = Rc::new(Inventory::with_deductions(
        store.clone(),
        store.deductions()?,
    ));
    Ok(Parts {
        store,
        inv,
        c: Rc::default(),
        calls: Rc::default(),
    })
}

/// Builds the inventory service.
pub fn build_inventory(cfg: &InventoryConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let (stack, element) = Stack::new(&cfg.service.stack, "inventory")?;
    let p = open(cfg)?;
    let (store, inv, c, calls) = (p.store.clone(), p.inv.clone(), p.c.clone(), p.calls.clone());
    let s2 = store.clone();
    stack.add_table("stock", move || {
        json!(s2
            .items()
            .into_iter()
            .map(|(i, q, v)| json!({"item": i, "quantity": q, "version": v}))
            .collect::<Vec<_>>())
    });
    let inv2 = inv.clone();
    stack.add_table("deductions", move || json!(inv2.deductions()));
    let (c2, inv2, calls2, s3) = (c.clone(), inv.clone(), calls.clone(), store.clone());
    stack.add_counters(move |out| {
        let mut k = c2.borrow().clone();
        k.calls = *calls2.borrow();
        k.db_errors = s3.errors.get();
        k.for_each(out);
        out("cas_conflicts", inv2.conflicts.get());
    });
    let app = provide(&stack, &cfg.service, INVENTORY, handler_of(p))?;
    Ok((element, Some(app)))
}

/// The same service over the kernel's TCP, for comparison benchmarks: listens on `addr`,
/// prints READY, serves until killed (no registry, no control socket).
pub fn serve_inventory_kernel(
    cfg: &InventoryConfig,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let p = open(cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&rt, async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("READY");
        let h = handler_of(p);
        loop {
            let (conn, _) = listener.accept().await?;
            conn.set_nodelay(true)?;
            tokio::task::spawn_local(d11_rpc::serve(conn, h.clone()));
        }
    })
}

fn handler_of(p: Parts) -> d11_rpc::Handler {
    let Parts { inv, c, calls, .. } = p;
    let h = handler(INVENTORY, calls, move |r| {
        let (inv, c) = (inv.clone(), c.clone());
        async move {
            match r.method.as_str() {
                "deduct" => {
                    let (Some(order), Some(item), Some(n)) =
                        (string_arg(&r, 0), string_arg(&r, 1), long_arg(&r, 2))
                    else {
                        c.borrow_mut().bad_calls += 1;
                        return bad_args("deduct(String, String, long)");
                    };
                    match inv.deduct(&order, &item, n).await {
                        Ok(left) => {
                            c.borrow_mut().deducted += 1;
                            Ok(Outcome::Value(Value::Long(left)))
                        }
                        Err(e) => {
                            if e == DeductError::OutOfStock {
                                c.borrow_mut().out_of_stock += 1;
                            }
                            let class = if e == DeductError::OutOfStock {
                                crate::exceptions::OUT_OF_STOCK
                            } else {
                                crate::exceptions::ILLEGAL_STATE
                            };
                            Ok(exception(class, &e.to_string()))
                        }
                    }
                }
                "restore" => {
                    let Some(order) = string_arg(&r, 0) else {
                        c.borrow_mut().bad_calls += 1;
                        return bad_args("restore(String)");
                    };
                    let done = inv.restore(&order).await;
                    if done {
                        c.borrow_mut().restored += 1;
                    }
                    Ok(Outcome::Value(Value::Bool(done)))
                }
                "stock" => {
                    let Some(item) = string_arg(&r, 0) else {
                        c.borrow_mut().bad_calls += 1;
                        return bad_args("stock(String)");
                    };
                    Ok(Outcome::Value(Value::Long(
                        inv.store.get(&item).map_or(0, |(q, _)| q),
                    )))
                }
                m => no_method(m),
            }
        }
    });
    h
}
