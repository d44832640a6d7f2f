//! `d11-coupon`: `com.shop.CouponService`.
//!
//! | method | types | returns |
//! |---|---|---|
//! | `redeem(coupon, orderId)` | `Ljava/lang/String;Ljava/lang/String;` | true; an `IllegalStateException` when the coupon is unknown or held by another order |
//! | `release(coupon, orderId)` | `Ljava/lang/String;Ljava/lang/String;` | whether the order held it (compensation) |
//!
//! A coupon is redeemed at most once, by one order; the same order again is fine (a retry).
//! The ledger lives in SQLite (`database`, a file that survives a restart; in memory without
//! one), and a redeem is answered only once it is committed: a coupon redeemed before a crash
//! is still held by its order after it.

use crate::{bad_args, handler, no_method, provide, string_arg, ServiceConfig};
use d11_element::App;
use d11_rpc::d11_dubbo::Outcome;
use d11_rpc::{exception, Value};
use d11_shop::CouponError;
use d11_stack::{Stack, StackElement};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;

pub const COUPON: &str = "com.shop.CouponService";

#[derive(Debug, Clone, Deserialize)]
pub struct CouponConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// The coupons on offer (added when the ledger does not have them yet).
    #[serde(default)]
    pub coupons: Vec<String>,
    /// The SQLite file of the ledger (in memory without one).
    #[serde(default)]
    pub database: Option<PathBuf>,
}

/// The coupon ledger in SQLite: each coupon and the order that holds it, if any.
pub struct CouponLedger {
    db: Connection,
    pub errors: Cell<u64>,
}

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Refused(#[from] CouponError),
    #[error("the coupon ledger: {0}")]
    Db(#[from] rusqlite::Error),
}

impl CouponLedger {
    pub fn open(path: Option<&std::path::Path>) -> rusqlite::Result<Self> {
        let db = crate::open_sqlite(
            path,
            "CREATE TABLE IF NOT EXISTS coupons (coupon TEXT PRIMARY KEY, order_id TEXT);",
        )?;
        Ok(Self {
            db,
            errors: Cell::new(0),
        })
    }

    /// Offers `coupon` unless the ledger has it already (held or not).
    pub fn add(&self, coupon: &str) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT OR IGNORE INTO coupons (coupon, order_id) VALUES (?1, NULL)",
            [coupon],
        )?;
        Ok(())
    }

    /// Redeems `coupon` for `order`, committed before it returns; the same order again is fine.
    pub fn redeem(&self, coupon: &str, order: &str) -> Result<(), LedgerError> {
        let taken = self
            .db
            .prepare_cached(
                "UPDATE coupons SET order_id = ?2 WHERE coupon = ?1 AND order_id IS NULL",
            )?
            .execute(params![coupon, order])?;
        if taken == 1 {
            return Ok(());
        }
        match self.holder_of(coupon)? {
            None => Err(CouponError::Unknown.into()),
            Some(Some(o)) if o == order => Ok(()),
            Some(_) => Err(CouponError::Taken.into()),
        }
    }

    /// Compensation: frees `coupon` if `order` holds it; whether it did.
    pub fn release(&self, coupon: &str, order: &str) -> Result<bool, LedgerError> {
        let n = self
            .db
            .prepare_cached(
                "UPDATE coupons SET order_id = NULL WHERE coupon = ?1 AND order_id = ?2",
            )?
            .execute(params![coupon, order])?;
        Ok(n == 1)
    }

    /// `None`: no such coupon; `Some(holder)` otherwise.
    fn holder_of(&self, coupon: &str) -> rusqlite::Result<Option<Option<String>>> {
        self.db
            .prepare_cached("SELECT order_id FROM coupons WHERE coupon = ?1")?
            .query_row([coupon], |r| r.get::<_, Option<String>>(0))
            .optional()
    }

    /// Every coupon and its holder.
    pub fn all(&self) -> rusqlite::Result<Vec<(String, Option<String>)>> {
        let mut st = self
            .db
            .prepare("SELECT coupon, order_id FROM coupons ORDER BY coupon")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }
}

pub fn build_coupon(cfg: &CouponConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let (stack, element) = Stack::new(&cfg.service.stack, "coupon")?;
    let ledger = CouponLedger::open(cfg.database.as_deref())
        .map_err(|e| crate::db_error(cfg.database.as_deref(), e))?;
    for c in &cfg.coupons {
        if c.is_empty() || c.len() > 64 {
            anyhow::bail!("coupon {c:?}: 1 to 64 characters");
        }
        ledger.add(c)?;
    }
    let ledger = Rc::new(ledger);
    let l2 = ledger.clone();
    stack.add_table("coupons", move || {
        json!(l2
            .all()
            .unwrap_or_default()
            .into_iter()
            .map(|(c, o)| json!({"coupon": c, "order": o}))
            .collect::<Vec<_>>())
    });
    let calls = Rc::new(RefCell::new(0u64));
    let stats = Rc::new(RefCell::new([0u64; 3]));
    let (calls2, s2, l2) = (calls.clone(), stats.clone(), ledger.clone());
    stack.add_counters(move |out| {
        let s = s2.borrow();
        out("calls", *calls2.borrow());
        out("redeemed", s[0]);
        out("refused", s[1]);
        out("released", s[2]);
        out("db_errors", l2.errors.get());
    });
    let h = handler(COUPON, calls, move |r| {
        let (ledger, stats) = (ledger.clone(), stats.clone());
        async move {
            let (Some(coupon), Some(order)) = (string_arg(&r, 0), string_arg(&r, 1)) else {
                return bad_args("(String coupon, String orderId)");
            };
            let db_error = |e: &LedgerError| {
                ledger.errors.set(ledger.errors.get() + 1);
                tracing::error!(error = %e, "coupon ledger");
                // Not done: the caller may retry (redeem and release are idempotent).
                Ok(exception(crate::exceptions::UNAVAILABLE, &e.to_string()))
            };
            match r.method.as_str() {
                "redeem" => match ledger.redeem(&coupon, &order) {
                    Ok(()) => {
                        stats.borrow_mut()[0] += 1;
                        Ok(Outcome::Value(Value::Bool(true)))
                    }
                    Err(LedgerError::Refused(e)) => {
                        stats.borrow_mut()[1] += 1;
                        Ok(exception(crate::exceptions::ILLEGAL_STATE, &e.to_string()))
                    }
                    Err(e) => db_error(&e),
                },
                "release" => match ledger.release(&coupon, &order) {
                    Ok(done) => {
                        if done {
                            stats.borrow_mut()[2] += 1;
                        }
                        Ok(Outcome::Value(Value::Bool(done)))
                    }
                    Err(e) => db_error(&e),
                },
                m => no_method(m),
            }
        }
    });
    let app = provide(&stack, &cfg.service, COUPON, h)?;
    Ok((element, Some(app)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coupon_is_held_by_one_order_and_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("d11-coupon-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("coupons.sqlite");
        let _ = std::fs::remove_file(&path);
        {
            let l = CouponLedger::open(Some(&path)).unwrap();
            l.add("C1").unwrap();
            l.redeem("C1", "o1").unwrap();
            l.redeem("C1", "o1").unwrap(); // a retry
            assert!(matches!(
                l.redeem("C1", "o2"),
                Err(LedgerError::Refused(CouponError::Taken))
            ));
            assert!(matches!(
                l.redeem("C9", "o2"),
                Err(LedgerError::Refused(CouponError::Unknown))
            ));
            assert!(!l.release("C1", "o2").unwrap());
        }
        // Reopened (a restart), with the config offering C1 again: still held by o1.
        let l = CouponLedger::open(Some(&path)).unwrap();
        l.add("C1").unwrap();
        assert!(matches!(
            l.redeem("C1", "o2"),
            Err(LedgerError::Refused(CouponError::Taken))
        ));
        assert!(l.release("C1", "o1").unwrap());
        assert!(!l.release("C1", "o1").unwrap());
        l.redeem("C1", "o2").unwrap();
        assert_eq!(
            l.all().unwrap(),
            [("C1".to_string(), Some("o2".to_string()))]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
