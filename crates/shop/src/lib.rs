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
//! - [`create_order`]: the order id comes from the idempotency key, so a repeated key (on any
//!   instance of the order service) finds the first order; every call it makes is idempotent
//!   by that id; after the deduction, any failure compensates (stock returned, coupon
//!   released), and a compensation that cannot reach its service is owed and retried
//!   ([`Desk::settle`]), so no half-order remains.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

/// A stock table with versions: what the inventory's database offers.
pub trait StockStore {
    /// (quantity, version) of `item`.
    fn read(&self, item: &str) -> impl Future<Output = Option<(i64, u64)>>;
    /// Sets `item`'s quantity to `qty` (and bumps its version) only if its version is still
    /// `version`, and in the same write records `why` (a database does both in one
    /// transaction); whether it did.
    fn cas(
        &self,
        item: &str,
        version: u64,
        qty: i64,
        why: &Deduction,
    ) -> impl Future<Output = bool>;
}

/// What an order took (or gave back): kept with the stock so that a restarted inventory still
/// knows which orders hold stock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deduction {
    pub order: String,
    pub item: String,
    pub n: i64,
    pub restored: bool,
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
    why: &Deduction,
    max_tries: u32,
) -> Result<(i64, u32), DeductError> {
    let (item, n) = (why.item.as_str(), why.n);
    if n <= 0 {
        return Err(DeductError::BadQuantity);
    }
    for conflicts in 0..max_tries.max(1) {
        let (qty, version) = store.read(item).await.ok_or(DeductError::UnknownItem)?;
        if qty < n {
            return Err(DeductError::OutOfStock);
        }
        if store.cas(item, version, qty - n, why).await {
            return Ok((qty - n, conflicts));
        }
    }
    Err(DeductError::Contended)
}

/// Gives `why.n` of `why.item` back, with compare-and-set.
pub async fn give_back<S: StockStore>(store: &S, why: &Deduction, max_tries: u32) -> bool {
    for _ in 0..max_tries.max(1) {
        let Some((qty, version)) = store.read(&why.item).await else {
            return false;
        };
        if store.cas(&why.item, version, qty + why.n, why).await {
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
    async fn cas(&self, item: &str, version: u64, qty: i64, _why: &Deduction) -> bool {
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
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Being taken; `cancel` when a restore came meanwhile (its caller gave up waiting).
    InProgress {
        cancel: bool,
    },
    Held(Deduction),
}

/// The inventory service: deductions remembered by order id.
#[derive(Debug, Default)]
pub struct Inventory<S> {
    pub store: S,
    done: RefCell<HashMap<String, Entry>>,
    pub conflicts: std::cell::Cell<u64>,
}

impl<S: StockStore> Inventory<S> {
    pub fn new(store: S) -> Self {
        Self::with_deductions(store, [])
    }

    /// An inventory over `store` that already holds `records` (read back at a restart).
    pub fn with_deductions(store: S, records: impl IntoIterator<Item = Deduction>) -> Self {
        Self {
            store,
            done: RefCell::new(
                records
                    .into_iter()
                    .map(|d| (d.order.clone(), Entry::Held(d)))
                    .collect(),
            ),
            conflicts: Default::default(),
        }
    }

    /// Deducts `n` of `item` for `order`; the same order again (a retry) deducts nothing more.
    pub async fn deduct(&self, order: &str, item: &str, n: i64) -> Result<i64, DeductError> {
        // (Borrows end before any await: other calls run meanwhile.)
        let state = self.done.borrow().get(order).cloned();
        match state {
            Some(Entry::Held(d)) if !d.restored => return Ok(self.store_qty(item).await),
            Some(Entry::InProgress { .. }) => return Err(DeductError::Contended),
            _ => {}
        }
        self.done
            .borrow_mut()
            .insert(order.into(), Entry::InProgress { cancel: false });
        let why = Deduction {
            order: order.into(),
            item: item.into(),
            n,
            restored: false,
        };
        match deduct(&self.store, &why, 100).await {
            Ok((left, conflicts)) => {
                self.conflicts
                    .set(self.conflicts.get() + u64::from(conflicts));
                let before = self
                    .done
                    .borrow_mut()
                    .insert(order.into(), Entry::Held(why));
                if before == Some(Entry::InProgress { cancel: true }) {
                    // Its caller already asked for it back.
                    self.restore(order).await;
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

    /// Compensation: gives back what `order` took, once. A deduct still running for it gives
    /// back as soon as it is done. Whether stock was given back now.
    pub async fn restore(&self, order: &str) -> bool {
        let why = {
            let mut d = self.done.borrow_mut();
            match d.get_mut(order) {
                Some(Entry::Held(h)) if !h.restored => {
                    h.restored = true;
                    h.clone()
                }
                Some(Entry::InProgress { cancel }) => {
                    *cancel = true;
                    return false;
                }
                _ => return false,
            }
        };
        if give_back(&self.store, &why, 100).await {
            return true;
        }
        if let Some(Entry::Held(h)) = self.done.borrow_mut().get_mut(order) {
            h.restored = false;
        }
        false
    }

    /// The deductions it knows of.
    pub fn deductions(&self) -> Vec<Deduction> {
        self.done
            .borrow()
            .values()
            .filter_map(|e| match e {
                Entry::Held(d) => Some(d.clone()),
                Entry::InProgress { .. } => None,
            })
            .collect()
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
    /// The rest of the client's order (JSON), kept as it came.
    pub detail: String,
}

impl Order {
    /// Whether `o` asks for the same thing (a replay of the same key).
    pub fn same_request(&self, o: &Order) -> bool {
        (
            &self.key,
            &self.user,
            &self.item,
            self.quantity,
            &self.coupon,
            &self.detail,
        ) == (&o.key, &o.user, &o.item, o.quantity, &o.coupon, &o.detail)
    }
}

/// Why a call to another service failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The service answered no: nothing was done.
    #[error("{message}")]
    Refused { why: Refusal, message: String },
    /// No answer (timeout, connection lost, service down): it may or may not have been done.
    #[error("{0}")]
    Unknown(String),
}

/// What a refusal means for the order (the caller maps its service's answer to one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not enough stock.
    OutOfStock,
    /// The coupon is unknown or held by another order.
    CouponTaken,
    /// Anything else refused (a bad call, the service's own trouble).
    Other,
}

/// What the order service reaches: the inventory, the coupons and the order store (RPC and a
/// database in the lab). Every call is idempotent by the order id, so the caller may retry it.
pub trait Backends {
    /// The stored order with this id, if any.
    fn find(&self, id: &str) -> impl Future<Output = Result<Option<Order>, String>>;
    fn deduct(
        &self,
        order: &str,
        item: &str,
        n: i64,
    ) -> impl Future<Output = Result<(), CallError>>;
    fn restore(&self, order: &str) -> impl Future<Output = Result<(), String>>;
    fn redeem(&self, coupon: &str, order: &str) -> impl Future<Output = Result<(), CallError>>;
    fn release(&self, coupon: &str, order: &str) -> impl Future<Output = Result<(), String>>;
    /// Stores `order`, or returns the order already stored under its id.
    fn store(&self, order: &Order) -> impl Future<Output = Result<Order, CallError>>;
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderError {
    #[error("sold out: {0}")]
    SoldOut(String),
    #[error("the stock was not taken: {0}")]
    Stock(String),
    #[error("the coupon was refused: {0} (the stock is given back)")]
    CouponRefused(String),
    #[error("the coupon service failed: {0} (the stock is given back)")]
    Coupon(String),
    #[error("the order was not stored: {0} (stock and coupon are given back)")]
    Store(String),
    #[error("this idempotency key is being processed")]
    InProgress,
    #[error("this idempotency key was used for another order")]
    KeyReused,
    /// The order could not be written to the journal: nothing was done.
    #[error("the order could not be journalled: {0} (nothing was done)")]
    Journal(String),
}

/// An undo still owed to a service that could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Compensation {
    Restore { order: String },
    Release { coupon: String, order: String },
}

/// An order that may hold stock or a coupon and has not ended yet: journalled before the
/// deduction, removed once the order is stored or everything it took is given back (or owed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Intent {
    pub order: String,
    /// Its idempotency key: busy while a recovery settles it.
    pub key: String,
    pub coupon: Option<String>,
}

/// Where the order service keeps what a crash must not forget: orders under way and the
/// compensations owed. Each call returns once what it wrote is durable; a process killed at
/// any point finds, at its next start, every order it may have left half-done
/// ([`Desk::recover`]).
pub trait Journal {
    fn begin(&self, i: &Intent) -> Result<(), String>;
    fn end(&self, order: &str) -> Result<(), String>;
    fn owe(&self, c: &Compensation) -> Result<(), String>;
    fn paid(&self, c: &Compensation) -> Result<(), String>;
    /// What a previous run left: orders under way, compensations owed.
    fn load(&self) -> Result<(Vec<Intent>, Vec<Compensation>), String>;
}

/// A journal in memory (tests; a service without a database file).
#[derive(Debug, Default)]
pub struct MemoryJournal {
    pub intents: RefCell<Vec<Intent>>,
    pub owed: RefCell<Vec<Compensation>>,
}

impl Journal for MemoryJournal {
    fn begin(&self, i: &Intent) -> Result<(), String> {
        self.intents.borrow_mut().push(i.clone());
        Ok(())
    }
    fn end(&self, order: &str) -> Result<(), String> {
        self.intents.borrow_mut().retain(|i| i.order != order);
        Ok(())
    }
    fn owe(&self, c: &Compensation) -> Result<(), String> {
        let mut o = self.owed.borrow_mut();
        if !o.contains(c) {
            o.push(c.clone());
        }
        Ok(())
    }
    fn paid(&self, c: &Compensation) -> Result<(), String> {
        self.owed.borrow_mut().retain(|x| x != c);
        Ok(())
    }
    fn load(&self) -> Result<(Vec<Intent>, Vec<Compensation>), String> {
        Ok((self.intents.borrow().clone(), self.owed.borrow().clone()))
    }
}

/// The order service's state: idempotency keys being processed, compensations owed, orders a
/// previous run left under way, and the journal that keeps the last two across a crash.
pub struct Desk {
    busy: RefCell<std::collections::HashSet<String>>,
    owed: RefCell<Vec<Compensation>>,
    /// Orders a previous run began and never ended: settled by [`Desk::settle`].
    orphans: RefCell<Vec<Intent>>,
    journal: Rc<dyn Journal>,
    prefix: String,
}

impl std::fmt::Debug for Desk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desk")
            .field("owed", &self.owed)
            .field("orphans", &self.orphans)
            .finish_non_exhaustive()
    }
}

/// A created (or replayed) order and how long each call took.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub order: Order,
    pub replayed: bool,
    pub timings: Vec<(&'static str, std::time::Duration)>,
}

/// FNV-1a, 64 bits, of the parts, each followed by a 0 octet.
fn fnv1a(parts: &[&str]) -> u64 {
    parts
        .iter()
        .fold(d11_wire::fnv::Fnv64::default(), |h, p| {
            h.write(p.as_bytes()).write(&[0])
        })
        .finish()
}

/// The shard (of `n`) that holds order `id`.
pub fn shard_of(id: &str, n: usize) -> usize {
    (fnv1a(&[id]) % n.max(1) as u64) as usize
}

impl Desk {
    /// A desk with its journal in memory.
    pub fn new(prefix: &str) -> Self {
        Self::recover(prefix, Rc::new(MemoryJournal::default())).expect("memory journal")
    }

    /// A desk over `journal`, with what a previous run left in it: its owed compensations,
    /// and its orders under way, which [`Desk::settle`] brings to an end (the order stands if
    /// it was stored, else what it may have taken is given back).
    pub fn recover(prefix: &str, journal: Rc<dyn Journal>) -> Result<Self, String> {
        let (orphans, owed) = journal.load()?;
        Ok(Self {
            busy: RefCell::default(),
            owed: RefCell::new(owed),
            orphans: RefCell::new(orphans),
            journal,
            prefix: prefix.into(),
        })
    }

    /// Orders a previous run left under way, not settled yet.
    pub fn orphans(&self) -> Vec<Intent> {
        self.orphans.borrow().clone()
    }

    /// The order id of a user's idempotency key: the same on every order-service instance,
    /// so a retry that lands elsewhere finds the same order, and every call below (keyed by
    /// the order id) is idempotent.
    pub fn order_id(&self, user: &str, key: &str) -> String {
        format!("{}{:016x}", self.prefix, fnv1a(&[user, key]))
    }

    /// Compensations owed.
    pub fn owed(&self) -> Vec<Compensation> {
        self.owed.borrow().clone()
    }

    /// Whether there is anything for [`Desk::settle`] to do.
    pub fn unsettled(&self) -> bool {
        !self.owed.borrow().is_empty() || !self.orphans.borrow().is_empty()
    }

    /// Tries every owed compensation again, and ends the orders a previous run left under
    /// way; how many compensations and orphans are still unsettled.
    /// (What is being settled stays listed until it is.)
    pub async fn settle<B: Backends>(&self, b: &B) -> usize {
        let owed = self.owed.borrow().clone();
        for c in owed {
            if self.try_pay(b, &c).await {
                self.owed.borrow_mut().retain(|x| *x != c);
            }
        }
        let orphans = self.orphans.borrow().clone();
        for i in orphans {
            if self.settle_orphan(b, &i).await {
                self.orphans.borrow_mut().retain(|x| x.order != i.order);
            }
        }
        self.owed.borrow().len() + self.orphans.borrow().len()
    }

    /// Ends an order a previous run left under way: stored, it stands; not stored, whatever
    /// it may have taken is given back (each undo is idempotent by the order id, and does
    /// nothing where nothing was taken). Whether it is settled.
    async fn settle_orphan<B: Backends>(&self, b: &B, i: &Intent) -> bool {
        if !self.busy.borrow_mut().insert(i.key.clone()) {
            // A retry of the same key runs on this instance: settle it afterwards.
            return false;
        }
        let _busy = Busy(self, i.key.clone());
        match b.find(&i.order).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let mut undo = Vec::new();
                if let Some(c) = &i.coupon {
                    undo.push(Compensation::Release {
                        coupon: c.clone(),
                        order: i.order.clone(),
                    });
                }
                undo.push(Compensation::Restore {
                    order: i.order.clone(),
                });
                if self.compensate(b, undo).await.is_err() {
                    return false;
                }
            }
            Err(e) => {
                tracing::warn!(order = %i.order, error = %e, "an orphaned order waits for its store");
                return false;
            }
        }
        self.end(&i.order);
        tracing::info!(order = %i.order, "orphaned order settled");
        true
    }

    /// Runs `list`; an undo that fails is owed (journalled before this returns). `Err` when
    /// one could not even be journalled.
    async fn compensate<B: Backends>(&self, b: &B, list: Vec<Compensation>) -> Result<(), ()> {
        let mut all = Ok(());
        for c in list {
            if !self.pay(b, c).await {
                all = Err(());
            }
        }
        all
    }

    /// Tries `c` once; whether it was done (and then no longer journalled as owed).
    async fn try_pay<B: Backends>(&self, b: &B, c: &Compensation) -> bool {
        let r = match c {
            Compensation::Restore { order } => b.restore(order).await,
            Compensation::Release { coupon, order } => b.release(coupon, order).await,
        };
        match r {
            Ok(()) => {
                if let Err(e) = self.journal.paid(c) {
                    tracing::error!(?c, error = %e, "journal");
                }
                true
            }
            Err(e) => {
                tracing::warn!(?c, error = %e, "compensation not done");
                false
            }
        }
    }

    /// Tries `c`; on failure it is owed. Whether the journal holds what is true of it.
    async fn pay<B: Backends>(&self, b: &B, c: Compensation) -> bool {
        if self.try_pay(b, &c).await {
            return true;
        }
        let kept = self.journal.owe(&c);
        if let Err(e) = &kept {
            tracing::error!(?c, error = %e, "journal: an owed compensation is not kept");
        }
        let mut owed = self.owed.borrow_mut();
        if !owed.contains(&c) {
            owed.push(c);
        }
        kept.is_ok()
    }

    fn end(&self, order: &str) {
        if let Err(e) = self.journal.end(order) {
            // Harmless: the next start settles it again (every step is idempotent).
            tracing::error!(%order, error = %e, "journal");
        }
    }
}

/// Marks a key busy while its order is made.
struct Busy<'a>(&'a Desk, String);
impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.borrow_mut().remove(&self.1);
    }
}

/// Creates `req` (its `id` is ignored: the order id comes from the key): a stored order with
/// the same key is returned as it is; otherwise the stock, the coupon, and the store, and a
/// failure after the deduction undoes what may have been done (or owes it, see [`Desk`]).
pub async fn create_order<B: Backends>(
    desk: &Desk,
    b: &B,
    req: &Order,
) -> Result<Placed, OrderError> {
    use std::time::Instant;
    if !desk.busy.borrow_mut().insert(req.key.clone()) {
        return Err(OrderError::InProgress);
    }
    let _busy = Busy(desk, req.key.clone());
    let order = Order {
        id: desk.order_id(&req.user, &req.key),
        ..req.clone()
    };
    let mut timings = Vec::new();
    let mut t = Instant::now();
    let mut lap = |what: &'static str, timings: &mut Vec<_>| {
        let now = Instant::now();
        timings.push((what, now - t));
        t = now;
    };
    let found = b.find(&order.id).await;
    lap("db.find", &mut timings);
    match found {
        Err(e) => return Err(OrderError::Store(e)),
        Ok(Some(o)) if o.same_request(&order) => {
            return Ok(Placed {
                order: o,
                replayed: true,
                timings,
            })
        }
        Ok(Some(_)) => return Err(OrderError::KeyReused),
        Ok(None) => {}
    }
    desk.journal
        .begin(&Intent {
            order: order.id.clone(),
            key: order.key.clone(),
            coupon: order.coupon.clone(),
        })
        .map_err(OrderError::Journal)?;
    let r = take(desk, b, &order, &mut timings, &mut lap).await;
    // Stored, or given back (or the undo owed, journalled): the order has ended.
    desk.end(&order.id);
    r
}

/// The steps of an order that take something: stock, coupon, the store.
async fn take<B: Backends>(
    desk: &Desk,
    b: &B,
    order: &Order,
    timings: &mut Vec<(&'static str, std::time::Duration)>,
    lap: &mut impl FnMut(&'static str, &mut Vec<(&'static str, std::time::Duration)>),
) -> Result<Placed, OrderError> {
    let restore = || Compensation::Restore {
        order: order.id.clone(),
    };
    let r = b.deduct(&order.id, &order.item, order.quantity).await;
    lap("inventory.deduct", timings);
    match r {
        Ok(()) => {}
        Err(CallError::Refused {
            why: Refusal::OutOfStock,
            message,
        }) => return Err(OrderError::SoldOut(message)),
        Err(CallError::Refused { message, .. }) => return Err(OrderError::Stock(message)),
        Err(CallError::Unknown(e)) => {
            let _ = desk.compensate(b, vec![restore()]).await;
            return Err(OrderError::Stock(e));
        }
    }
    if let Some(c) = &order.coupon {
        let r = b.redeem(c, &order.id).await;
        lap("coupon.redeem", timings);
        if let Err(e) = r {
            let mut undo = vec![restore()];
            if let CallError::Unknown(_) = e {
                undo.push(Compensation::Release {
                    coupon: c.clone(),
                    order: order.id.clone(),
                });
            }
            let _ = desk.compensate(b, undo).await;
            return Err(match e {
                CallError::Refused {
                    why: Refusal::CouponTaken,
                    message,
                } => OrderError::CouponRefused(message),
                e => OrderError::Coupon(e.to_string()),
            });
        }
    }
    let r = b.store(order).await;
    lap("db.store", timings);
    match r {
        Ok(stored) if stored.same_request(order) => Ok(Placed {
            order: stored,
            replayed: false,
            timings: std::mem::take(timings),
        }),
        Ok(_) => Err(OrderError::KeyReused),
        Err(e) => {
            let mut undo = Vec::new();
            if let Some(c) = &order.coupon {
                undo.push(Compensation::Release {
                    coupon: c.clone(),
                    order: order.id.clone(),
                });
            }
            undo.push(restore());
            let _ = desk.compensate(b, undo).await;
            Err(OrderError::Store(e.to_string()))
        }
    }
}

pub mod registry;
#[cfg(test)]
mod tests;
