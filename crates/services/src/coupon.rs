//! `d11-coupon`: `com.shop.CouponService`.
//!
//! | method | types | returns |
//! |---|---|---|
//! | `redeem(coupon, orderId)` | `Ljava/lang/String;Ljava/lang/String;` | true; an `IllegalStateException` when the coupon is unknown or held by another order |
//! | `release(coupon, orderId)` | `Ljava/lang/String;Ljava/lang/String;` | whether the order held it (compensation) |
//!
//! A coupon is redeemed at most once, by one order; the same order again is fine (a retry).
//! The coupons live in memory (a restart frees them; the inventory and the order store are
//! the ones kept on disk).

use crate::{bad_args, handler, no_method, provide, string_arg, ServiceConfig};
use d11_element::App;
use d11_rpc::d11_dubbo::Outcome;
use d11_rpc::{exception, Value};
use d11_shop::Coupons;
use d11_stack::{Stack, StackElement};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;

pub const COUPON: &str = "com.shop.CouponService";

#[derive(Debug, Clone, Deserialize)]
pub struct CouponConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// The coupons on offer.
    #[serde(default)]
    pub coupons: Vec<String>,
}

pub fn build_coupon(cfg: &CouponConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let (stack, element) = Stack::new(&cfg.service.stack, "coupon")?;
    let coupons = Rc::new(Coupons::default());
    for c in &cfg.coupons {
        if c.is_empty() || c.len() > 64 {
            anyhow::bail!("coupon {c:?}: 1 to 64 characters");
        }
        coupons.add(c);
    }
    let (c2, names) = (coupons.clone(), cfg.coupons.clone());
    stack.add_table("coupons", move || {
        json!(names
            .iter()
            .map(|n| json!({"coupon": n, "order": c2.holder(n)}))
            .collect::<Vec<_>>())
    });
    let calls = Rc::new(RefCell::new(0u64));
    let stats = Rc::new(RefCell::new([0u64; 3]));
    let (calls2, s2) = (calls.clone(), stats.clone());
    stack.add_counters(move |out| {
        let s = s2.borrow();
        out("calls", *calls2.borrow());
        out("redeemed", s[0]);
        out("refused", s[1]);
        out("released", s[2]);
    });
    let h = handler(COUPON, calls, move |r| {
        let (coupons, stats) = (coupons.clone(), stats.clone());
        async move {
            let (Some(coupon), Some(order)) = (string_arg(&r, 0), string_arg(&r, 1)) else {
                return bad_args("(String coupon, String orderId)");
            };
            match r.method.as_str() {
                "redeem" => match coupons.redeem(&coupon, &order) {
                    Ok(()) => {
                        stats.borrow_mut()[0] += 1;
                        Ok(Outcome::Value(Value::Bool(true)))
                    }
                    Err(e) => {
                        stats.borrow_mut()[1] += 1;
                        Ok(exception("java.lang.IllegalStateException", &e.to_string()))
                    }
                },
                "release" => {
                    let done = coupons.release(&coupon, &order);
                    if done {
                        stats.borrow_mut()[2] += 1;
                    }
                    Ok(Outcome::Value(Value::Bool(done)))
                }
                m => no_method(m),
            }
        }
    });
    let app = provide(&stack, &cfg.service, COUPON, h)?;
    Ok((element, Some(app)))
}
