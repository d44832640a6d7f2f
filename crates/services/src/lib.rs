//! The shop's RPC services, each on the userspace stack, speaking Dubbo 2 with Hessian 2
//! (`d11-rpc`) on port 20880, Dubbo's default.
//!
//! `d11-inventory` provides `com.shop.InventoryService`:
//!
//! | method | types | returns |
//! |---|---|---|
//! | `deduct(orderId, item, n)` | `Ljava/lang/String;Ljava/lang/String;J` | the quantity left (long); an `IllegalStateException` when out of stock |
//! | `restore(orderId)` | `Ljava/lang/String;` | whether stock was given back (boolean) |
//! | `stock(item)` | `Ljava/lang/String;` | the quantity (long) |
//!
//! Deductions are compare-and-set with retries, idempotent per order (`d11_shop::Inventory`).

use d11_element::{counters, App};
use d11_rpc::d11_dubbo::{status, Outcome, Request};
use d11_rpc::{exception, serve, Handler, Value};
use d11_shop::{DeductError, Inventory, MemoryStock};
use d11_stack::{Stack, StackConfig, StackElement};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Dubbo's default port.
pub const PORT: u16 = 20880;
pub const INVENTORY: &str = "com.shop.InventoryService";

#[derive(Debug, Clone, Deserialize)]
pub struct InventoryConfig {
    #[serde(flatten)]
    pub stack: StackConfig,
    /// Initial stock per item.
    #[serde(default)]
    pub stock: BTreeMap<String, i64>,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_backlog")]
    pub backlog: usize,
}

fn default_port() -> u16 {
    PORT
}
fn default_backlog() -> usize {
    32
}

counters! {
    pub struct InventoryCounters {
        calls,
        deducted,
        out_of_stock,
        restored,
        bad_calls,
    }
}

fn string_arg(r: &Request, i: usize) -> Option<String> {
    match r.args.get(i) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn long_arg(r: &Request, i: usize) -> Option<i64> {
    match r.args.get(i) {
        Some(Value::Long(n)) => Some(*n),
        Some(Value::Int(n)) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Builds the inventory service.
pub fn build_inventory(cfg: &InventoryConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let (stack, element) = Stack::new(&cfg.stack, "inventory")?;
    let store = MemoryStock::default();
    for (item, qty) in &cfg.stock {
        if *qty < 0 {
            anyhow::bail!("stock of {item}: {qty} is negative");
        }
        store.set(item, *qty);
    }
    let inv = Rc::new(Inventory::new(store.clone()));
    let c = Rc::new(RefCell::new(InventoryCounters::default()));
    let (s2, items) = (store.clone(), cfg.stock.keys().cloned().collect::<Vec<_>>());
    stack.add_table("stock", move || {
        json!(items
            .iter()
            .map(|i| {
                let (q, v) = s2.get(i).unwrap_or((0, 0));
                json!({"item": i, "quantity": q, "version": v})
            })
            .collect::<Vec<_>>())
    });
    let (c2, inv2) = (c.clone(), inv.clone());
    stack.add_counters(move |out| {
        c2.borrow().for_each(out);
        out("cas_conflicts", inv2.conflicts.get());
    });
    let handler: Handler = Rc::new(move |r: Request| {
        let (inv, c) = (inv.clone(), c.clone());
        Box::pin(async move {
            c.borrow_mut().calls += 1;
            if r.service != INVENTORY {
                return Err((
                    status::SERVICE_NOT_FOUND,
                    format!("no service {}", r.service),
                ));
            }
            match r.method.as_str() {
                "deduct" => {
                    let (Some(order), Some(item), Some(n)) =
                        (string_arg(&r, 0), string_arg(&r, 1), long_arg(&r, 2))
                    else {
                        c.borrow_mut().bad_calls += 1;
                        return Err((status::BAD_REQUEST, "deduct(String, String, long)".into()));
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
                            Ok(exception("java.lang.IllegalStateException", &e.to_string()))
                        }
                    }
                }
                "restore" => {
                    let Some(order) = string_arg(&r, 0) else {
                        c.borrow_mut().bad_calls += 1;
                        return Err((status::BAD_REQUEST, "restore(String)".into()));
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
                        return Err((status::BAD_REQUEST, "stock(String)".into()));
                    };
                    Ok(Outcome::Value(Value::Long(
                        inv.store.get(&item).map_or(0, |(q, _)| q),
                    )))
                }
                m => Err((status::SERVICE_NOT_FOUND, format!("no method {m}"))),
            }
        })
    });
    let listener = stack.listen(cfg.port, cfg.backlog)?;
    let app: App = Box::pin(async move {
        loop {
            let (conn, _) = listener.accept().await?;
            tokio::task::spawn_local(serve(conn, handler.clone()));
        }
    });
    Ok((element, Some(app)))
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
