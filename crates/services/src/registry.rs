//! `d11-registry`: the registry centre, `com.d11.Registry` over the same Dubbo 2 / Hessian 2
//! RPC as the services (real deployments use Nacos or ZooKeeper, each with its own protocol).
//!
//! | method | types | returns |
//! |---|---|---|
//! | `register(service, version, address, weight)` | `Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;I` | the instance id (long) |
//! | `heartbeat(id)` | `J` | false when the registry no longer knows it (register again) |
//! | `deregister(id)` | `J` | whether it was known |
//! | `subscribe(service, revision, waitMs)` | `Ljava/lang/String;JJ` | `{revision, instances: [{id, address, version, weight}]}` |
//!
//! `subscribe` answers at once when the service's revision differs from the caller's, and
//! otherwise waits up to `waitMs` for a change: a long poll, so every change is pushed to the
//! subscribers as it happens. Instances silent for `unhealthy_after_s` (15) are left out of
//! the answers; after `remove_after_s` (30) they are removed.

use crate::{bad_args, handler, long_arg, no_method, provide, string_arg, ServiceConfig};
use d11_element::App;
use d11_rpc::cluster::map;
use d11_rpc::d11_dubbo::Outcome;
use d11_rpc::Value;
use d11_shop::registry::Registry;
use d11_stack::{Stack, StackElement};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const REGISTRY: &str = "com.d11.Registry";

#[derive(Debug, Clone, Deserialize)]
pub struct RegistryConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    #[serde(default = "d15")]
    pub unhealthy_after_s: f64,
    #[serde(default = "d30")]
    pub remove_after_s: f64,
}

fn d15() -> f64 {
    15.0
}
fn d30() -> f64 {
    30.0
}

/// The longest a subscriber may wait.
const MAX_WAIT: Duration = Duration::from_secs(30);

fn answer(reg: &Registry, service: &str) -> Value {
    let (rev, inst) = reg.lookup(service);
    map(vec![
        ("revision", Value::Long(rev as i64)),
        (
            "instances",
            Value::List {
                type_name: None,
                items: inst
                    .into_iter()
                    .map(|i| {
                        map(vec![
                            ("id", Value::Long(i.id as i64)),
                            ("address", Value::String(i.address)),
                            ("version", Value::String(i.version)),
                            ("weight", Value::Int(i.weight as i32)),
                        ])
                    })
                    .collect(),
            },
        ),
    ])
}

pub fn build_registry(cfg: &RegistryConfig) -> anyhow::Result<(StackElement, Option<App>)> {
    let (u, r) = (cfg.unhealthy_after_s, cfg.remove_after_s);
    if !(u > 0.0 && r > u && r <= 3600.0) {
        anyhow::bail!("need 0 < unhealthy_after_s < remove_after_s <= 3600");
    }
    let (stack, element) = Stack::new(&cfg.service.stack, "registry")?;
    let mut state = Registry::default();
    state.unhealthy_after = Duration::from_secs_f64(u);
    state.remove_after = Duration::from_secs_f64(r);
    let reg = Rc::new(RefCell::new(state));
    let changed = Rc::new(tokio::sync::Notify::new());
    let reg2 = reg.clone();
    stack.add_table("services", move || {
        let now = Instant::now();
        let r = reg2.borrow();
        json!(r
            .all()
            .map(|i| json!({
                "service": i.service,
                "id": i.id,
                "version": i.version,
                "address": i.address,
                "weight": i.weight,
                "healthy": i.healthy,
                "last_beat_s": now.saturating_duration_since(i.last_beat).as_secs_f64(),
                "revision": r.revision(&i.service),
            }))
            .collect::<Vec<_>>())
    });
    let calls = Rc::new(RefCell::new(0u64));
    let (calls2, reg2) = (calls.clone(), reg.clone());
    stack.add_counters(move |out| {
        out("calls", *calls2.borrow());
        out("instances", reg2.borrow().all().count() as u64);
        out(
            "healthy",
            reg2.borrow().all().filter(|i| i.healthy).count() as u64,
        );
    });
    let (reg2, ch2) = (reg.clone(), changed.clone());
    let h = handler(REGISTRY, calls, move |rq| {
        let (reg, changed) = (reg2.clone(), ch2.clone());
        async move {
            let now = Instant::now();
            match rq.method.as_str() {
                "register" => {
                    let (Some(s), Some(v), Some(a), Some(w)) = (
                        string_arg(&rq, 0),
                        string_arg(&rq, 1),
                        string_arg(&rq, 2),
                        long_arg(&rq, 3),
                    ) else {
                        return bad_args("register(String, String, String, int)");
                    };
                    if a.parse::<std::net::SocketAddrV4>().is_err() || !(1..=1_000_000).contains(&w)
                    {
                        return Ok(d11_rpc::exception(
                            crate::exceptions::ILLEGAL_ARGUMENT,
                            "address must be ADDRESS:PORT and weight 1 to 1000000",
                        ));
                    }
                    let before = reg.borrow().revision(&s);
                    let id = reg.borrow_mut().register(now, &s, &v, &a, w as u32);
                    if reg.borrow().revision(&s) != before {
                        changed.notify_waiters();
                    }
                    Ok(Outcome::Value(Value::Long(id as i64)))
                }
                "heartbeat" => {
                    let Some(id) = long_arg(&rq, 0) else {
                        return bad_args("heartbeat(long)");
                    };
                    let ok = reg.borrow_mut().heartbeat(now, id as u64);
                    changed.notify_waiters();
                    Ok(Outcome::Value(Value::Bool(ok)))
                }
                "deregister" => {
                    let Some(id) = long_arg(&rq, 0) else {
                        return bad_args("deregister(long)");
                    };
                    let ok = reg.borrow_mut().deregister(id as u64);
                    changed.notify_waiters();
                    Ok(Outcome::Value(Value::Bool(ok)))
                }
                "subscribe" => {
                    let (Some(s), Some(rev), Some(wait)) =
                        (string_arg(&rq, 0), long_arg(&rq, 1), long_arg(&rq, 2))
                    else {
                        return bad_args("subscribe(String, long, long)");
                    };
                    let deadline = tokio::time::Instant::now()
                        + Duration::from_millis(wait.max(0) as u64).min(MAX_WAIT);
                    loop {
                        let n = changed.notified();
                        if reg.borrow().revision(&s) != rev as u64 {
                            break;
                        }
                        if tokio::time::timeout_at(deadline, n).await.is_err() {
                            break;
                        }
                    }
                    Ok(Outcome::Value(answer(&reg.borrow(), &s)))
                }
                m => no_method(m),
            }
        }
    });
    let app = provide(&stack, &cfg.service, super::registry::REGISTRY, h)?;
    let sweeper = reg.clone();
    Ok((
        element,
        Some(Box::pin(async move {
            tokio::task::spawn_local(async move {
                let mut t = tokio::time::interval(Duration::from_millis(500));
                loop {
                    t.tick().await;
                    if !sweeper.borrow_mut().sweep(Instant::now()).is_empty() {
                        changed.notify_waiters();
                    }
                }
            });
            app.await
        })),
    ))
}
