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
    async fn cas(&self, item: &str, version: u64, qty: i64) -> bool {
        tokio::task::yield_now().await;
        self.0.cas(item, version, qty).await
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
}

impl Backends for World {
    async fn deduct(&self, order: &str, item: &str, n: i64) -> Result<(), String> {
        self.inv
            .deduct(order, item, n)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    async fn restore(&self, order: &str) -> Result<(), String> {
        self.inv.restore(order).await;
        Ok(())
    }
    async fn redeem(&self, coupon: &str, order: &str) -> Result<(), String> {
        tokio::task::yield_now().await;
        self.coupons
            .redeem(coupon, order)
            .map_err(|e| e.to_string())
    }
    async fn release(&self, coupon: &str, order: &str) -> Result<(), String> {
        self.coupons.release(coupon, order);
        Ok(())
    }
    async fn store(&self, order: &Order) -> Result<(), String> {
        tokio::task::yield_now().await;
        if self.store_fails.get() {
            return Err("db down".into());
        }
        self.orders.borrow_mut().push(order.clone());
        Ok(())
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
    };
    w.coupons.add("D11");
    Rc::new(w)
}

#[test]
fn a_thousand_orders_for_a_hundred_books() {
    run(async {
        let w = world(100);
        let keys = Rc::new(Keys::new("D11-"));
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let (w, keys) = (w.clone(), keys.clone());
                tokio::task::spawn_local(async move {
                    create_order(&keys, &*w, &format!("k{i}"), "u", "book", 1, None).await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(OrderError::Stock(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 100);
        assert_eq!(w.orders.borrow().len(), 100);
        assert_eq!(w.inv.store.0.get("book").unwrap().0, 0);
    });
}

#[test]
fn failures_after_the_deduction_are_undone_and_keys_are_idempotent() {
    run(async {
        let w = world(5);
        let keys = Keys::new("D11-");
        let o = create_order(&keys, &*w, "k1", "u", "book", 1, Some("D11"))
            .await
            .unwrap();
        // The same key again: the same order, nothing taken twice.
        assert_eq!(
            create_order(&keys, &*w, "k1", "u", "book", 1, Some("D11")).await,
            Ok(o.clone())
        );
        assert_eq!(w.inv.store.0.get("book").unwrap().0, 4);
        // The coupon is taken: the stock of the second order comes back.
        assert!(matches!(
            create_order(&keys, &*w, "k2", "u", "book", 1, Some("D11")).await,
            Err(OrderError::Coupon(_))
        ));
        assert_eq!(w.inv.store.0.get("book").unwrap().0, 4);
        // The store fails: stock and coupon come back, and the key may be tried again.
        assert!(w.coupons.release("D11", &o.id));
        w.store_fails.set(true);
        assert!(matches!(
            create_order(&keys, &*w, "k3", "u", "book", 2, Some("D11")).await,
            Err(OrderError::Store(_))
        ));
        assert_eq!(w.inv.store.0.get("book").unwrap().0, 4);
        assert_eq!(w.coupons.holder("D11"), None);
        w.store_fails.set(false);
        assert!(create_order(&keys, &*w, "k3", "u", "book", 2, Some("D11"))
            .await
            .is_ok());
        assert_eq!(w.inv.store.0.get("book").unwrap().0, 2);
        assert_eq!(w.orders.borrow().len(), 2);
    });
}

#[test]
fn the_same_key_at_once_makes_one_order() {
    run(async {
        let w = world(10);
        let keys = Rc::new(Keys::new("D11-"));
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let (w, keys) = (w.clone(), keys.clone());
                tokio::task::spawn_local(async move {
                    create_order(&keys, &*w, "same", "u", "book", 1, None).await
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
        assert_eq!(w.inv.store.0.get("book").unwrap().0, 9);
    });
}
