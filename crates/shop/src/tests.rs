use super::*;
use std::cell::Cell;

fn run(f: impl Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f);
}

/// A stock table where every read yields first, so concurrent deducts interleave between
/// their read and their write, as callers of a remote database do.
#[derive(Clone, Default)]
struct Interleaved(MemoryStock);

impl StockStore for Interleaved {
    async fn read(&self, item: &str) -> Option<(i64, u64)> {
        tokio::task::yield_now().await;
        self.0.read(item).await
    }
    async fn cas(&self, item: &str, version: u64, qty: i64, why: &Deduction) -> bool {
        tokio::task::yield_now().await;
        self.0.cas(item, version, qty, why).await
    }
}

#[test]
fn compare_and_set_never_oversells() {
    run(async {
        let s = Interleaved::default();
        s.0.set("book", 100);
        let inv = Rc::new(Inventory::new(s.clone()));
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let inv = inv.clone();
                tokio::task::spawn_local(
                    async move { inv.deduct(&format!("o{i}"), "book", 1).await },
                )
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(left) => {
                    ok += 1;
                    assert!(left >= 0);
                }
                Err(DeductError::OutOfStock) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 100);
        assert_eq!(s.0.get("book").unwrap().0, 0);
        assert!(
            inv.conflicts.get() > 0,
            "the interleaving made writers conflict"
        );
    });
}

#[test]
fn a_retried_deduct_deducts_once_and_restore_gives_back_once() {
    run(async {
        let s = MemoryStock::default();
        s.set("book", 10);
        let inv = Inventory::new(s.clone());
        assert_eq!(inv.deduct("o1", "book", 3).await, Ok(7));
        assert_eq!(inv.deduct("o1", "book", 3).await, Ok(7));
        assert_eq!(s.get("book").unwrap().0, 7);
        assert!(inv.restore("o1").await);
        assert!(!inv.restore("o1").await);
        assert_eq!(s.get("book").unwrap().0, 10);
        assert_eq!(
            inv.deduct("o2", "book", 11).await,
            Err(DeductError::OutOfStock)
        );
        assert_eq!(
            inv.deduct("o3", "pen", 1).await,
            Err(DeductError::UnknownItem)
        );
        assert_eq!(
            inv.deduct("o4", "book", 0).await,
            Err(DeductError::BadQuantity)
        );
    });
}

#[test]
fn a_coupon_is_redeemed_once() {
    let c = Coupons::default();
    c.add("D11");
    assert_eq!(c.redeem("D11", "o1"), Ok(()));
    assert_eq!(c.redeem("D11", "o1"), Ok(()));
    assert_eq!(c.redeem("D11", "o2"), Err(CouponError::Taken));
    assert_eq!(c.redeem("X", "o2"), Err(CouponError::Unknown));
    assert!(!c.release("D11", "o2"));
    assert!(c.release("D11", "o1"));
    assert_eq!(c.redeem("D11", "o2"), Ok(()));
    assert_eq!(c.holder("D11").as_deref(), Some("o2"));
}

/// The order service's world in memory, with failures to switch on.
struct World {
    inv: Inventory<Interleaved>,
    coupons: Coupons,
    orders: RefCell<Vec<Order>>,
    store_fails: Cell<bool>,
    /// The inventory answers nothing (but did the work).
    inventory_mute: Cell<bool>,
    inventory_down: Cell<bool>,
    /// The coupon service never answers (the order waits in redeem).
    coupon_hangs: Cell<bool>,
}

impl Backends for World {
    async fn find(&self, id: &str) -> Result<Option<Order>, String> {
        Ok(self.orders.borrow().iter().find(|o| o.id == id).cloned())
    }
    async fn deduct(&self, order: &str, item: &str, n: i64) -> Result<(), CallError> {
        if self.inventory_down.get() {
            return Err(CallError::Unknown("connection refused".into()));
        }
        let r = self.inv.deduct(order, item, n).await;
        if self.inventory_mute.get() {
            return Err(CallError::Unknown("timeout".into()));
        }
        r.map(|_| ()).map_err(|e| CallError::Refused {
            why: if e == DeductError::OutOfStock {
                Refusal::OutOfStock
            } else {
                Refusal::Other
            },
            message: e.to_string(),
        })
    }
    async fn restore(&self, order: &str) -> Result<(), String> {
        if self.inventory_down.get() {
            return Err("connection refused".into());
        }
        self.inv.restore(order).await;
        Ok(())
    }
    async fn redeem(&self, coupon: &str, order: &str) -> Result<(), CallError> {
        tokio::task::yield_now().await;
        if self.coupon_hangs.get() {
            std::future::pending::<()>().await;
        }
        self.coupons
            .redeem(coupon, order)
            .map_err(|e| CallError::Refused {
                why: Refusal::CouponTaken,
                message: e.to_string(),
            })
    }
    async fn release(&self, coupon: &str, order: &str) -> Result<(), String> {
        self.coupons.release(coupon, order);
        Ok(())
    }
    async fn store(&self, order: &Order) -> Result<Order, CallError> {
        tokio::task::yield_now().await;
        if self.store_fails.get() {
            return Err(CallError::Unknown("db down".into()));
        }
        if let Some(o) = self.find(&order.id).await.unwrap() {
            return Ok(o);
        }
        self.orders.borrow_mut().push(order.clone());
        Ok(order.clone())
    }
}

fn world(stock: i64) -> Rc<World> {
    let s = Interleaved::default();
    s.0.set("book", stock);
    let w = World {
        inv: Inventory::new(s),
        coupons: Coupons::default(),
        orders: RefCell::default(),
        store_fails: Cell::new(false),
        inventory_mute: Cell::new(false),
        inventory_down: Cell::new(false),
        coupon_hangs: Cell::new(false),
    };
    w.coupons.add("D11");
    Rc::new(w)
}

fn req(key: &str, n: i64, coupon: Option<&str>) -> Order {
    Order {
        id: String::new(),
        key: key.into(),
        user: "u".into(),
        item: "book".into(),
        quantity: n,
        coupon: coupon.map(str::to_string),
        detail: "{}".into(),
    }
}

fn stock(w: &World) -> i64 {
    w.inv.store.0.get("book").unwrap().0
}

#[test]
fn a_thousand_orders_for_a_hundred_books() {
    run(async {
        let w = world(100);
        let desk = Rc::new(Desk::new("D11-"));
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let (w, desk) = (w.clone(), desk.clone());
                tokio::task::spawn_local(async move {
                    create_order(&desk, &*w, &req(&format!("k{i}"), 1, None)).await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(OrderError::SoldOut(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 100);
        assert_eq!(w.orders.borrow().len(), 100);
        assert_eq!(stock(&w), 0);
    });
}

#[test]
fn failures_after_the_deduction_are_undone_and_keys_are_idempotent() {
    run(async {
        let w = world(5);
        let desk = Desk::new("D11-");
        let p = create_order(&desk, &*w, &req("k1", 1, Some("D11")))
            .await
            .unwrap();
        assert!(!p.replayed);
        let o = p.order;
        assert_eq!(o.id, desk.order_id("u", "k1"));
        // The same key again, even on another instance of the service: the same order,
        // nothing taken twice.
        let other = Desk::new("D11-");
        let again = create_order(&other, &*w, &req("k1", 1, Some("D11")))
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.order, o);
        assert_eq!(stock(&w), 4);
        // The same key for something else is refused.
        assert_eq!(
            create_order(&desk, &*w, &req("k1", 2, None)).await,
            Err(OrderError::KeyReused)
        );
        // The coupon is taken: the stock of the second order comes back.
        assert!(matches!(
            create_order(&desk, &*w, &req("k2", 1, Some("D11"))).await,
            Err(OrderError::CouponRefused(_))
        ));
        assert_eq!(stock(&w), 4);
        // The store fails: stock and coupon come back, and the key may be tried again.
        assert!(w.coupons.release("D11", &o.id));
        w.store_fails.set(true);
        assert!(matches!(
            create_order(&desk, &*w, &req("k3", 2, Some("D11"))).await,
            Err(OrderError::Store(_))
        ));
        assert_eq!(stock(&w), 4);
        assert_eq!(w.coupons.holder("D11"), None);
        w.store_fails.set(false);
        assert!(create_order(&desk, &*w, &req("k3", 2, Some("D11")))
            .await
            .is_ok());
        assert_eq!(stock(&w), 2);
        assert_eq!(w.orders.borrow().len(), 2);
    });
}

#[test]
fn an_unanswered_deduct_is_given_back_now_or_later() {
    run(async {
        let w = world(5);
        let desk = Desk::new("D11-");
        // The inventory took the stock but its answer was lost: the order fails and the
        // stock comes back.
        w.inventory_mute.set(true);
        assert!(matches!(
            create_order(&desk, &*w, &req("k1", 1, None)).await,
            Err(OrderError::Stock(_))
        ));
        assert_eq!(stock(&w), 5);
        w.inventory_mute.set(false);
        // The inventory is down: nothing is taken, the restore is owed until it is back.
        w.inventory_down.set(true);
        assert!(create_order(&desk, &*w, &req("k2", 1, None)).await.is_err());
        assert_eq!(desk.owed().len(), 1);
        assert_eq!(desk.settle(&*w).await, 1);
        w.inventory_down.set(false);
        assert_eq!(desk.settle(&*w).await, 0);
        assert_eq!(stock(&w), 5);
        // The retry of k1 now makes the order.
        assert!(create_order(&desk, &*w, &req("k1", 1, None)).await.is_ok());
        assert_eq!(stock(&w), 4);
    });
}

#[test]
fn a_restore_during_its_deduct_gives_back_when_the_deduct_is_done() {
    run(async {
        let s = Interleaved::default();
        s.0.set("book", 3);
        let inv = Rc::new(Inventory::new(s.clone()));
        let i2 = inv.clone();
        let t = tokio::task::spawn_local(async move { i2.deduct("o1", "book", 1).await });
        tokio::task::yield_now().await;
        assert!(!inv.restore("o1").await, "still in progress");
        assert_eq!(t.await.unwrap(), Ok(2));
        assert_eq!(s.0.get("book").unwrap().0, 3);
        assert!(inv.deductions()[0].restored);
    });
}

#[test]
fn the_same_key_at_once_makes_one_order() {
    run(async {
        let w = world(10);
        let desk = Rc::new(Desk::new("D11-"));
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let (w, desk) = (w.clone(), desk.clone());
                tokio::task::spawn_local(async move {
                    create_order(&desk, &*w, &req("same", 1, None)).await
                })
            })
            .collect();
        let mut made = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => made += 1,
                Err(OrderError::InProgress) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(made >= 1);
        assert_eq!(w.orders.borrow().len(), 1);
        assert_eq!(stock(&w), 9);
    });
}

#[test]
fn an_order_cut_by_a_crash_is_given_back_at_the_next_start() {
    run(async {
        let w = world(100);
        let journal = Rc::new(MemoryJournal::default());
        let desk = Rc::new(Desk::recover("D11-", journal.clone()).unwrap());
        // One order completes; another is cut while it waits for the coupon service.
        create_order(&desk, &*w, &req("done", 1, None))
            .await
            .unwrap();
        w.coupon_hangs.set(true);
        let (w2, d2) = (w.clone(), desk.clone());
        let cut = tokio::task::spawn_local(async move {
            create_order(&d2, &*w2, &req("cut", 2, Some("D11"))).await
        });
        while stock(&w) != 97 {
            tokio::task::yield_now().await;
        }
        cut.abort(); // kill -9: nothing after this point of the order runs
        let _ = cut.await;
        drop(desk);
        assert_eq!(journal.intents.borrow().len(), 1);
        // The next start finds it under way, not stored: the stock comes back.
        w.coupon_hangs.set(false);
        let desk = Desk::recover("D11-", journal.clone()).unwrap();
        assert_eq!(desk.orphans().len(), 1);
        assert!(desk.unsettled());
        assert_eq!(desk.settle(&*w).await, 0);
        assert_eq!(stock(&w), 99);
        assert_eq!(w.coupons.holder("D11"), None);
        assert!(journal.intents.borrow().is_empty());
        assert_eq!(w.orders.borrow().len(), 1);
    });
}

#[test]
fn a_stored_order_found_under_way_stands_and_owed_undos_outlive_a_crash() {
    run(async {
        let w = world(10);
        let journal = Rc::new(MemoryJournal::default());
        // A previous run stored this order and died before ending it.
        let desk = Desk::recover("D11-", journal.clone()).unwrap();
        create_order(&desk, &*w, &req("kept", 1, None))
            .await
            .unwrap();
        let id = desk.order_id("u", "kept");
        journal
            .begin(&Intent {
                order: id.clone(),
                key: "kept".into(),
                coupon: None,
            })
            .unwrap();
        // The next order's store fails, and the inventory goes away once its deduct is done:
        // the restore is owed, and journalled.
        w.store_fails.set(true);
        let down_after_deduct = async {
            while stock(&w) != 8 {
                tokio::task::yield_now().await;
            }
            w.inventory_down.set(true);
        };
        let owed = req("owed", 1, None);
        let (out, ()) = tokio::join!(create_order(&desk, &*w, &owed), down_after_deduct);
        assert!(matches!(out, Err(OrderError::Store(_))), "{out:?}");
        assert_eq!(journal.owed.borrow().len(), 1);
        drop(desk);
        // Restarted with the inventory back: the owed restore is paid; the stored order stands.
        w.inventory_down.set(false);
        w.store_fails.set(false);
        let desk = Desk::recover("D11-", journal.clone()).unwrap();
        assert_eq!((desk.owed().len(), desk.orphans().len()), (1, 1));
        assert_eq!(desk.settle(&*w).await, 0);
        assert_eq!(stock(&w), 9);
        assert!(journal.owed.borrow().is_empty());
        assert!(journal.intents.borrow().is_empty());
        assert_eq!(w.orders.borrow()[0].id, id);
    });
}
