//! Orders through the order service (`d11-order`) by RPC: the controller finds its providers
//! in the registry and calls `createOrder`, which is idempotent by key, so a call that times
//! out or loses its connection is sent again to another provider.

use crate::orders::{Created, NewOrder, Order, OrderBackend};
use d11_rpc::cluster::{field, Balance, CallOptions, Cluster};
use d11_rpc::{Error, Value};
use d11_services::exceptions::{COUPON_REFUSED, IN_PROGRESS, KEY_REUSED, SOLD_OUT};
use d11_services::order::{CREATE_TYPES, ORDER};
use d11_stack::Stack;
use serde_json::json;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How many acknowledged orders `d11 show NODE orders` lists.
const RECENT: usize = 1000;

pub struct RpcOrders {
    pub cluster: Rc<Cluster>,
    pub registry: Rc<Cluster>,
    opts: CallOptions,
    recent: RefCell<VecDeque<Order>>,
}

impl RpcOrders {
    pub fn new(stack: &Stack, registry: SocketAddrV4, balance: Balance, timeout: Duration) -> Self {
        Self {
            cluster: Cluster::new(
                ORDER,
                balance,
                d11_services::connector(stack, Duration::from_secs(2)),
            ),
            registry: d11_services::fixed(stack, d11_services::registry::REGISTRY, &[registry]),
            opts: CallOptions {
                timeout,
                ..CallOptions::default().idempotent()
            },
            recent: RefCell::default(),
        }
    }

    async fn create_now(&self, key: &str, order: NewOrder) -> Created {
        let detail = serde_json::to_string(&order).unwrap_or_default();
        let args = vec![
            Value::String(key.into()),
            Value::String(order.user.clone().unwrap_or_else(|| "guest".into())),
            Value::String(order.class_name.clone()),
            Value::Long(order.quantity.unwrap_or(1)),
            order.coupon.clone().map_or(Value::Null, Value::String),
            Value::String(detail),
        ];
        let t = Instant::now();
        // Just started: the registry's first answer may still be on its way.
        if self.cluster.providers().is_empty() {
            self.cluster
                .wait_for_providers(Duration::from_secs(2))
                .await;
        }
        let r = self
            .cluster
            .call("createOrder", CREATE_TYPES, args, self.opts)
            .await;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let v = match r {
            Ok(Some(v)) => v,
            Ok(None) => return Created::Failed(503, "the order service answered null".into()),
            Err(Error::Exception { class, message }) => {
                let m = format!("{class}: {message}");
                return match class.as_str() {
                    KEY_REUSED => Created::KeyReused,
                    SOLD_OUT | COUPON_REFUSED | IN_PROGRESS => Created::Failed(409, m),
                    _ => Created::Failed(503, m),
                };
            }
            Err(e) => return Created::Failed(503, format!("order service: {e}")),
        };
        let id = match field(&v, "order").and_then(|o| field(o, "id")) {
            Some(Value::String(id)) => id.clone(),
            _ => return Created::Failed(503, "the order service's answer has no order id".into()),
        };
        let mut hops = vec![json!({"call": "ctl -> order: createOrder", "ms": ms})];
        if let Some(Value::Map { entries, .. }) = field(&v, "timings") {
            for (k, v) in entries {
                let (Value::String(k), Value::Long(us)) = (k, v) else {
                    continue;
                };
                let call = match k.as_str() {
                    "db.find" => "order -> db: get",
                    "inventory.deduct" => "order -> inventory: deduct",
                    "coupon.redeem" => "order -> coupon: redeem",
                    "db.store" => "order -> db: put",
                    other => other,
                };
                hops.push(json!({"call": call, "ms": *us as f64 / 1e3}));
            }
        }
        let o = Order {
            id,
            key: key.into(),
            order,
            rpc: Some(json!(hops)),
        };
        let mut r = self.recent.borrow_mut();
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back(o.clone());
        if field(&v, "replayed") == Some(&Value::Bool(true)) {
            Created::Replayed(o)
        } else {
            Created::New(o)
        }
    }
}

impl OrderBackend for RpcOrders {
    fn create<'a>(
        &'a self,
        key: &'a str,
        order: NewOrder,
    ) -> Pin<Box<dyn Future<Output = Created> + 'a>> {
        Box::pin(self.create_now(key, order))
    }

    fn list(&self) -> Vec<Order> {
        self.recent.borrow().iter().cloned().collect()
    }
}
