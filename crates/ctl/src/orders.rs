//! Orders: validation of the seed's JSON body, and the store behind a seam.
//!
//! The seed's request: `POST /purchaseOrder` with
//! `{"order": {"date": ..., "className": ..., "Author": ..., "price": ...}}`. The API is
//! idempotent by the `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header): a
//! repeated key returns the first order, never a second one; the same key with another body
//! is refused.

use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

/// A valid order request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewOrder {
    pub date: String,
    #[serde(rename = "className")]
    pub class_name: String,
    #[serde(rename = "Author")]
    pub author: String,
    pub price: f64,
    /// Optional beyond the seed's body: how many (1), a coupon, the buyer ("guest").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Order {
    #[serde(rename = "orderId")]
    pub id: String,
    #[serde(rename = "idempotencyKey")]
    pub key: String,
    pub order: NewOrder,
    /// The RPC calls behind it and their times (ms), when the back end is the order service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc: Option<Value>,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    New(Order),
    /// The key was seen before with the same order: the first order.
    Replayed(Order),
    /// The key was seen before with a different order.
    KeyReused,
    /// The store is full.
    Full,
    /// The back end refused or failed: (HTTP status, why).
    Failed(u16, String),
}

/// Why a body is not an order; the message goes back to the client.
pub fn validate(body: &[u8]) -> Result<NewOrder, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let o = v
        .get("order")
        .and_then(Value::as_object)
        .ok_or("body needs an \"order\" object")?;
    let s = |k: &str, max: usize| -> Result<String, String> {
        let x = o
            .get(k)
            .and_then(Value::as_str)
            .ok_or(format!("order.{k} must be a string"))?;
        if x.is_empty() || x.len() > max {
            return Err(format!("order.{k} must be 1 to {max} characters"));
        }
        Ok(x.to_string())
    };
    let price = o
        .get("price")
        .and_then(Value::as_f64)
        .ok_or("order.price must be a number")?;
    if !price.is_finite() || price < 0.0 {
        return Err("order.price must be a finite number, not negative".into());
    }
    let quantity = match o.get("quantity") {
        None => None,
        Some(q) => match q.as_i64() {
            Some(n @ 1..=1000) => Some(n),
            _ => return Err("order.quantity must be an integer from 1 to 1000".into()),
        },
    };
    let opt = |k: &str| -> Result<Option<String>, String> {
        match o.get(k) {
            None => Ok(None),
            Some(_) => s(k, 64).map(Some),
        }
    };
    Ok(NewOrder {
        date: s("date", 64)?,
        class_name: s("className", 200)?,
        author: s("Author", 200)?,
        price,
        quantity,
        coupon: opt("coupon")?,
        user: opt("user")?,
    })
}

/// Where orders go. In memory now; the RPC back end (order service) implements it later.
pub trait OrderBackend {
    fn create<'a>(
        &'a self,
        key: &'a str,
        order: NewOrder,
    ) -> Pin<Box<dyn Future<Output = Created> + 'a>>;
    fn list(&self) -> Vec<Order>;
}

/// Orders in memory, at most `max`; with a journal, each new order is written and synced to
/// the file before it is acknowledged, and the file is read back at start, so an acknowledged
/// order survives the controller's crash.
#[derive(Debug)]
pub struct MemoryOrders {
    inner: std::cell::RefCell<Store>,
}

#[derive(Debug)]
struct Store {
    list: Vec<Order>,
    by_key: HashMap<String, usize>,
    max: usize,
    prefix: String,
    journal: Option<std::fs::File>,
}

/// One journal line.
#[derive(Serialize, serde::Deserialize)]
struct Line {
    id: String,
    key: String,
    date: String,
    #[serde(rename = "className")]
    class_name: String,
    #[serde(rename = "Author")]
    author: String,
    price: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quantity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    coupon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
}

impl MemoryOrders {
    pub fn new(max: usize) -> Self {
        Self {
            inner: std::cell::RefCell::new(Store {
                list: Vec::new(),
                by_key: HashMap::new(),
                max,
                prefix: "D11-".into(),
                journal: None,
            }),
        }
    }

    /// Order ids start with `prefix` (two controllers: two prefixes, never the same id).
    pub fn with_prefix(self, prefix: &str) -> Self {
        self.inner.borrow_mut().prefix = prefix.to_string();
        self
    }

    /// Keeps the orders in `path` (JSON lines), reading back what it holds.
    pub fn with_journal(self, path: &std::path::Path) -> std::io::Result<Self> {
        use std::io::BufRead;
        {
            let mut s = self.inner.borrow_mut();
            if let Ok(f) = std::fs::File::open(path) {
                for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
                    let line = line?;
                    let l: Line = serde_json::from_str(&line).map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{} line {}: {e}", path.display(), n + 1),
                        )
                    })?;
                    let i = s.list.len();
                    s.by_key.insert(l.key.clone(), i);
                    s.list.push(Order {
                        id: l.id,
                        key: l.key,
                        order: NewOrder {
                            date: l.date,
                            class_name: l.class_name,
                            author: l.author,
                            price: l.price,
                            quantity: l.quantity,
                            coupon: l.coupon,
                            user: l.user,
                        },
                        rpc: None,
                    });
                }
            }
            s.journal = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            );
        }
        Ok(self)
    }

    pub fn create_now(&self, key: &str, order: NewOrder) -> Created {
        let mut s = self.inner.borrow_mut();
        if let Some(&i) = s.by_key.get(key) {
            let first = s.list[i].clone();
            return if first.order == order {
                Created::Replayed(first)
            } else {
                Created::KeyReused
            };
        }
        if s.list.len() >= s.max {
            return Created::Full;
        }
        let o = Order {
            id: format!("{}{:08}", s.prefix, s.list.len() + 1),
            key: key.to_string(),
            order,
            rpc: None,
        };
        if let Some(f) = s.journal.as_mut() {
            use std::io::Write;
            let line = Line {
                id: o.id.clone(),
                key: o.key.clone(),
                date: o.order.date.clone(),
                class_name: o.order.class_name.clone(),
                author: o.order.author.clone(),
                price: o.order.price,
                quantity: o.order.quantity,
                coupon: o.order.coupon.clone(),
                user: o.order.user.clone(),
            };
            let mut b = serde_json::to_vec(&line).unwrap_or_default();
            b.push(b'\n');
            // Written and on disk before the client hears "created".
            if let Err(e) = f.write_all(&b).and_then(|()| f.sync_data()) {
                tracing::error!(error = %e, "cannot write the order journal");
                return Created::Full;
            }
        }
        let n = s.list.len();
        s.by_key.insert(key.to_string(), n);
        s.list.push(o.clone());
        Created::New(o)
    }
}

impl OrderBackend for MemoryOrders {
    fn create<'a>(
        &'a self,
        key: &'a str,
        order: NewOrder,
    ) -> Pin<Box<dyn Future<Output = Created> + 'a>> {
        Box::pin(std::future::ready(self.create_now(key, order)))
    }

    fn list(&self) -> Vec<Order> {
        self.inner.borrow().list.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"order": {"date": "2018-11-11 00:00:01", "className": "Rust in Action", "Author": "d11", "price": 11.11}}"#;

    #[test]
    fn validates_the_seed_body() {
        let o = validate(SEED.as_bytes()).unwrap();
        assert_eq!(o.class_name, "Rust in Action");
        assert_eq!(o.price, 11.11);
        for (bad, why) in [
            ("{", "not JSON"),
            ("[]", "\"order\" object"),
            (
                r#"{"order": {"date": "d", "className": "", "Author": "a", "price": 1}}"#,
                "className",
            ),
            (
                r#"{"order": {"date": "d", "className": "c", "Author": "a", "price": -1}}"#,
                "price",
            ),
            (
                r#"{"order": {"date": "d", "className": "c", "Author": "a", "price": "1"}}"#,
                "price",
            ),
        ] {
            let e = validate(bad.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn idempotency() {
        let m = MemoryOrders::new(2);
        let o = validate(SEED.as_bytes()).unwrap();
        let Created::New(first) = m.create_now("k1", o.clone()) else {
            panic!()
        };
        assert_eq!(
            m.create_now("k1", o.clone()),
            Created::Replayed(first.clone())
        );
        let mut other = o.clone();
        other.price = 1.0;
        assert_eq!(m.create_now("k1", other), Created::KeyReused);
        assert!(matches!(m.create_now("k2", o.clone()), Created::New(x) if x.id != first.id));
        assert_eq!(m.create_now("k3", o), Created::Full);
        assert_eq!(m.list().len(), 2);
    }

    #[test]
    fn the_journal_keeps_acknowledged_orders_across_a_restart() {
        let f = std::env::temp_dir().join(format!("d11-orders-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&f);
        let o = validate(SEED.as_bytes()).unwrap();
        {
            let m = MemoryOrders::new(10)
                .with_prefix("D11-1-")
                .with_journal(&f)
                .unwrap();
            assert!(
                matches!(m.create_now("a", o.clone()), Created::New(x) if x.id == "D11-1-00000001")
            );
            assert!(matches!(m.create_now("b", o.clone()), Created::New(_)));
        }
        // A crash: a new store reads the journal back.
        let m = MemoryOrders::new(10)
            .with_prefix("D11-1-")
            .with_journal(&f)
            .unwrap();
        assert_eq!(m.list().len(), 2);
        assert!(
            matches!(m.create_now("a", o.clone()), Created::Replayed(x) if x.id == "D11-1-00000001")
        );
        assert!(matches!(m.create_now("c", o), Created::New(x) if x.id == "D11-1-00000003"));
        std::fs::write(&f, "not json\n").unwrap();
        assert!(MemoryOrders::new(10).with_journal(&f).is_err());
        std::fs::remove_file(&f).unwrap();
    }
}
