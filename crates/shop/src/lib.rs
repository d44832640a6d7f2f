//! The order back end's logic, free of I/O: what `d11-inventory`, `d11-coupon` and `d11-order`
//! do with a call, over traits for the stores and services they reach (RPC in the lab, fakes
//! in tests).
//!
//! - [`deduct`]: the seed's optimistic lock. Read the item's quantity and version; if there is
//!   enough, write the new quantity only if the version is unchanged (compare-and-set); on a
//!   conflict, read again and retry. Never below zero.
//! - [`Inventory`]: deductions by order id, so a retried deduct for the same order never
//!   deducts twice, and [`Inventory::restore`] (compensation) gives back exactly once.
//! - [`Coupons`]: a coupon is redeemed at most once, by one order.
//! - [`create_order`]: a repeated idempotency key returns the first order; after the deduction,
//!   any failure compensates (stock returned, coupon released), so no half-order remains.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

/// A stock table with versions: what the inventory's database offers.
pub trait StockStore {
    /// (quantity, version) of `item`.
    fn read(&self, item: &str) -> impl Future<Output = Option<(i64, u64)>>;
    /// Sets `item`'s quantity to `qty` (and bumps its version) only if its version is still
    /// `version`; whether it did.
    fn cas(&self, item: &str, version: u64, qty: i64) -> impl Future<Output = bool>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeductError {
    #[error("no such item")]
    UnknownItem,
    #[error("out of stock")]
    OutOfStock,
    #[error("too many conflicting writers")]
    Contended,
    #[error("quantity must be positive")]
    BadQuantity,
}

/// Takes `n` of `item` with compare-and-set, retrying on conflicts (at most `max_tries`);
/// returns what is left and how many conflicts it met.
pub async fn deduct<S: StockStore>(
    store: &S,
    item: &str,
    n: i64,
    max_tries: u32,
) -> Result<(i64, u32), DeductError> {
    if n <= 0 {
        return Err(DeductError::BadQuantity);
    }
    for conflicts in 0..max_tries.max(1) {
        let (qty, version) = store.read(item).await.ok_or(DeductError::UnknownItem)?;
        if qty < n {
            return Err(DeductError::OutOfStock);
        }
        if store.cas(item, version, qty - n).await {
            return Ok((qty - n, conflicts));
        }
    }
    Err(DeductError::Contended)
}

/// Gives `n` of `item` back, with compare-and-set.
pub async fn give_back<S: StockStore>(store: &S, item: &str, n: i64, max_tries: u32) -> bool {
    for _ in 0..max_tries.max(1) {
        let Some((qty, version)) = store.read(item).await else {
            return false;
        };
        if store.cas(item, version, qty + n).await {
            return true;
        }
    }
    false
}

/// An in-memory stock table.
#[derive(Debug, Default, Clone)]
pub struct MemoryStock {
    items: Rc<RefCell<HashMap<String, (i64, u64)>>>,
}

impl MemoryStock {
    pub fn set(&self, item: &str, qty: i64) {
        self.items.borrow_mut().insert(item.into(), (qty, 0));
    }
    pub fn get(&self, item: &str) -> Option<(i64, u64)> {
        self.items.borrow().get(item).copied()
    }
}

impl StockStore for MemoryStock {
    async fn read(&self, item: &str) -> Option<(i64, u64)> {
        self.get(item)
    }
    async fn cas(&self, item: &str, version: u64, qty: i64) -> bool {
        let mut m = self.items.borrow_mut();
        match m.get_mut(item) {
            Some(e) if e.1 == version && qty >= 0 => {
                *e = (qty, version + 1);
                true
            }
            _ => false,
        }
    }
}

/// Where an order's deduction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deduction {
    InProgress,
    Done,
    Restored,
}

/// The inventory service: deductions remembered by order id.
#[derive(Debug, Default)]
pub struct Inventory<S> {
    pub store: S,
    done: RefCell<HashMap<String, (String, i64, Deduction)>>,
    pub conflicts: std::cell::Cell<u64>,
}

impl<S: StockStore> Inventory<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            done: RefCell::default(),
            conflicts: Default::default(),
        }
    }

    /// Deducts `n` of `item` for `order`; the same order again (a retry) deducts nothing more.
    pub async fn deduct(&self, order: &str, item: &str, n: i64) -> Result<i64, DeductError> {
        // (Borrows end before any await: other calls run meanwhile.)
        let state = self.done.borrow().get(order).map(|e| e.2);
        match state {
            Some(Deduction::Done) => return Ok(self.store_qty(item).await),
            Some(Deduction::InProgress) => return Err(DeductError::Contended),
            Some(Deduction::Restored) | None => {}
        }
        self.done
            .borrow_mut()
            .insert(order.into(), (item.into(), n, Deduction::InProgress));
        match deduct(&self.store, item, n, 100).await {
            Ok((left, conflicts)) => {
                self.conflicts
                    .set(self.conflicts.get() + u64::from(conflicts));
                if let Some(e) = self.done.borrow_mut().get_mut(order) {
                    e.2 = Deduction::Done;
                }
                Ok(left)
            }
            Err(e) => {
                self.done.borrow_mut().remove(order);
                Err(e)
            }
        }
    }

    async fn store_qty(&self, item: &str) -> i64 {
        self.store.read(item).await.map_or(0, |(q, _)| q)
    }

    /// Compensation: gives back what `order` took, once.
    pub async fn restore(&self, order: &str) -> bool {
        let entry = {
            let mut d = self.done.borrow_mut();
            match d.get_mut(order) {
                Some(e) if e.2 == Deduction::Done => {
                    e.2 = Deduction::Restored;
                    Some((e.0.clone(), e.1))
                }
                _ => None,
            }
        };
        let Some((item, n)) = entry else {
            return false;
        };
        if give_back(&self.store, &item, n, 100).await {
            return true;
        }
        if let Some(e) = self.done.borrow_mut().get_mut(order) {
            e.2 = Deduction::Done;
        }
        false
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CouponError {
    #[error("no such coupon")]
    Unknown,
    #[error("already redeemed by another order")]
    Taken,
}

/// Coupons: each redeemed at most once.
#[derive(Debug, Default)]
pub struct Coupons {
    /// coupon -> the order that holds it.
    held: RefCell<HashMap<String, Option<String>>>,
}

impl Coupons {
    pub fn add(&self, coupon: &str) {
        self.held.borrow_mut().insert(coupon.into(), None);
    }

    /// Redeems `coupon` for `order`; the same order again is fine.
    pub fn redeem(&self, coupon: &str, order: &str) -> Result<(), CouponError> {
        let mut h = self.held.borrow_mut();
        match h.get_mut(coupon) {
            None => Err(CouponError::Unknown),
            Some(Some(o)) if o == order => Ok(()),
            Some(Some(_)) => Err(CouponError::Taken),
            Some(slot) => {
                *slot = Some(order.into());
                Ok(())
            }
        }
    }

    /// Compensation: frees `coupon` if `order` holds it.
    pub fn release(&self, coupon: &str, order: &str) -> bool {
        let mut h = self.held.borrow_mut();
        match h.get_mut(coupon) {
            Some(slot) if slot.as_deref() == Some(order) => {
                *slot = None;
                true
            }
            _ => false,
        }
    }

    pub fn holder(&self, coupon: &str) -> Option<String> {
        self.held.borrow().get(coupon).cloned().flatten()
    }
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Order {
    pub id: String,
    pub key: String,
    pub user: String,
    pub item: String,
    pub quantity: i64,
    pub coupon: Option<String>,
}

/// What the order service reaches: the inventory, the coupons and the order store (RPC and a
/// database in the lab).
pub trait Backends {
    fn deduct(&self, order: &str, item: &str, n: i64) -> impl Future<Output = Result<(), String>>;
    fn restore(&self, order: &str) -> impl Future<Output = Result<(), String>>;
    fn redeem(&self, coupon: &str, order: &str) -> impl Future<Output = Result<(), String>>;
    fn release(&self, coupon: &str, order: &str) -> impl Future<Output = Result<(), String>>;
    fn store(&self, order: &Order) -> impl Future<Output = Result<(), String>>;
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderError {
    #[error("the stock was not taken: {0}")]
    Stock(String),
    #[error("the coupon was refused: {0} (the stock was given back)")]
    Coupon(String),
    #[error("the order was not stored: {0} (stock and coupon given back)")]
    Store(String),
    #[error("this idempotency key is being processed")]
    InProgress,
    #[error("compensation failed: {0}")]
    Compensation(String),
}

/// The order service's memory of idempotency keys.
#[derive(Debug, Default)]
pub struct Keys {
    by_key: RefCell<HashMap<String, Option<Order>>>,
    next: std::cell::Cell<u64>,
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
            ..Default::default()
        }
    }
}

/// Creates an order: the idempotency key first (a repeat returns the first order), then the
/// stock, the coupon, and the store; a failure after the deduction undoes what was done.
pub async fn create_order<B: Backends>(
    keys: &Keys,
    b: &B,
    key: &str,
    user: &str,
    item: &str,
    quantity: i64,
    coupon: Option<&str>,
) -> Result<Order, OrderError> {
    match keys.by_key.borrow().get(key) {
        Some(Some(o)) => return Ok(o.clone()),
        Some(None) => return Err(OrderError::InProgress),
        None => {}
    }
    keys.by_key.borrow_mut().insert(key.into(), None);
    let n = keys.next.get() + 1;
    keys.next.set(n);
    let order = Order {
        id: format!("{}{n:08}", keys.prefix),
        key: key.into(),
        user: user.into(),
        item: item.into(),
        quantity,
        coupon: coupon.map(str::to_string),
    };
    let forget = |keys: &Keys| {
        keys.by_key.borrow_mut().remove(key);
    };
    if let Err(e) = b.deduct(&order.id, item, quantity).await {
        forget(keys);
        return Err(OrderError::Stock(e));
    }
    if let Some(c) = coupon {
        if let Err(e) = b.redeem(c, &order.id).await {
            forget(keys);
            b.restore(&order.id)
                .await
                .map_err(OrderError::Compensation)?;
            return Err(OrderError::Coupon(e));
        }
    }
    if let Err(e) = b.store(&order).await {
        forget(keys);
        if let Some(c) = coupon {
            b.release(c, &order.id)
                .await
                .map_err(OrderError::Compensation)?;
        }
        b.restore(&order.id)
            .await
            .map_err(OrderError::Compensation)?;
        return Err(OrderError::Store(e));
    }
    keys.by_key
        .borrow_mut()
        .insert(key.into(), Some(order.clone()));
    Ok(order)
}

pub mod registry;
#[cfg(test)]
mod tests;
