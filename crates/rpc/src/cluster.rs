//! Calling a service that has several providers: the consumer side of Dubbo's cluster layer.
//!
//! A [`Cluster`] holds the providers of one service (set by hand or kept up to date from the
//! registry by [`Cluster::follow`]), one multiplexed [`Client`] connection per provider, made
//! when first needed, and picks a provider for each call by its [`Balance`]. A provider whose
//! connection fails or that does not answer in time is avoided for a while ([`AVOID`]) unless
//! no other is left.
//!
//! Retries: a call marked idempotent that times out or loses its connection is tried again on
//! another provider (at most `retries` more times); any call whose connection could not even
//! be made is tried elsewhere, as nothing was sent. A call that is not idempotent is never
//! sent twice.

use crate::{Client, Error, Value};
use d11_dubbo::Request;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// How long a provider whose connection failed is left out of the picks.
pub const AVOID: Duration = Duration::from_secs(2);

/// A byte stream to a provider.
pub trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

/// Makes a connection to a provider: our userspace TCP in the lab, the kernel's in benchmarks.
pub type Connector =
    Rc<dyn Fn(SocketAddrV4) -> Pin<Box<dyn Future<Output = io::Result<Box<dyn Stream>>>>>>;

/// How a provider is picked for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// At random, in proportion to the providers' weights (Dubbo's default).
    #[default]
    Random,
    /// In turn.
    #[serde(rename = "roundrobin")]
    RoundRobin,
    /// The provider with the fewest calls in flight (ties: by weight at random).
    #[serde(rename = "leastactive")]
    LeastActive,
}

impl std::str::FromStr for Balance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(Self::Random),
            "roundrobin" => Ok(Self::RoundRobin),
            "leastactive" => Ok(Self::LeastActive),
            _ => Err(format!(
                "{s:?} is not a balance: random, roundrobin or leastactive"
            )),
        }
    }
}

/// A provider of the service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Provider {
    pub address: SocketAddrV4,
    pub weight: u32,
}

/// How a call is made.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    pub timeout: Duration,
    /// May it be sent again after a timeout or a lost connection?
    pub idempotent: bool,
    /// Further tries on other providers.
    pub retries: u32,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3),
            idempotent: false,
            retries: 2,
        }
    }
}

impl CallOptions {
    pub fn idempotent(self) -> Self {
        Self {
            idempotent: true,
            ..self
        }
    }
}

/// What a cluster has done: for `d11 show`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ClusterCounters {
    pub calls: u64,
    pub retries: u64,
    pub failed: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub no_provider: u64,
}

struct Conn {
    /// One connect at a time per provider; the client once made.
    slot: Rc<tokio::sync::Mutex<Option<Client>>>,
    avoid_until: Cell<Option<Instant>>,
}

pub struct Cluster {
    service: String,
    balance: Balance,
    connector: Connector,
    providers: RefCell<Vec<Provider>>,
    conns: RefCell<HashMap<SocketAddrV4, Rc<Conn>>>,
    turn: Cell<usize>,
    rng: Cell<u64>,
    revision: Cell<u64>,
    pub counters: RefCell<ClusterCounters>,
    changed: tokio::sync::Notify,
}

impl Cluster {
    pub fn new(service: &str, balance: Balance, connector: Connector) -> Rc<Self> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        Rc::new(Self {
            service: service.into(),
            balance,
            connector,
            providers: RefCell::default(),
            conns: RefCell::default(),
            turn: Cell::new(0),
            rng: Cell::new(seed | 1),
            revision: Cell::new(0),
            counters: RefCell::default(),
            changed: tokio::sync::Notify::new(),
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Replaces the providers; connections to the ones gone are dropped.
    pub fn set_providers(&self, p: Vec<Provider>) {
        self.conns
            .borrow_mut()
            .retain(|a, _| p.iter().any(|x| x.address == *a));
        *self.providers.borrow_mut() = p;
        self.changed.notify_waiters();
    }

    pub fn providers(&self) -> Vec<Provider> {
        self.providers.borrow().clone()
    }

    /// The registry revision the providers come from.
    pub fn revision(&self) -> u64 {
        self.revision.get()
    }

    /// Waits until the cluster has at least one provider, or `timeout`.
    pub async fn wait_for_providers(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.changed.notified();
            if !self.providers.borrow().is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                return false;
            }
        }
    }

    /// The state for `d11 show`: providers with their calls in flight and whether avoided.
    pub fn state(&self) -> Vec<serde_json::Value> {
        let now = Instant::now();
        self.providers
            .borrow()
            .iter()
            .map(|p| {
                let c = self.conns.borrow().get(&p.address).cloned();
                let in_flight = c
                    .as_ref()
                    .and_then(|c| c.slot.try_lock().ok().and_then(|s| s.clone()))
                    .map_or(0, |cl| cl.in_flight());
                let avoided = c.and_then(|c| c.avoid_until.get()).is_some_and(|t| t > now);
                serde_json::json!({
                    "service": self.service,
                    "address": p.address.to_string(),
                    "weight": p.weight,
                    "in_flight": in_flight,
                    "avoided": avoided,
                })
            })
            .collect()
    }

    fn random(&self) -> u64 {
        // xorshift64*: enough to spread calls, not for secrets.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn conn(&self, a: SocketAddrV4) -> Rc<Conn> {
        self.conns
            .borrow_mut()
            .entry(a)
            .or_insert_with(|| {
                Rc::new(Conn {
                    slot: Rc::default(),
                    avoid_until: Cell::new(None),
                })
            })
            .clone()
    }

    fn in_flight(&self, a: SocketAddrV4) -> usize {
        self.conns
            .borrow()
            .get(&a)
            .and_then(|c| c.slot.try_lock().ok().and_then(|s| s.clone()))
            .map_or(0, |c| c.in_flight())
    }

    fn weighted(&self, c: &[Provider]) -> SocketAddrV4 {
        let total: u64 = c.iter().map(|p| u64::from(p.weight.max(1))).sum();
        let mut r = self.random() % total.max(1);
        for p in c {
            let w = u64::from(p.weight.max(1));
            if r < w {
                return p.address;
            }
            r -= w;
        }
        c[0].address
    }

    /// Picks a provider not in `tried` and not avoided (falling back to the avoided, then to
    /// the tried ones, rather than to none).
    fn pick(&self, tried: &[SocketAddrV4]) -> Option<SocketAddrV4> {
        let now = Instant::now();
        let all = self.providers.borrow().clone();
        let avoided = |p: &Provider| {
            self.conns
                .borrow()
                .get(&p.address)
                .and_then(|c| c.avoid_until.get())
                .is_some_and(|t| t > now)
        };
        let fresh: Vec<Provider> = all
            .iter()
            .filter(|p| !tried.contains(&p.address))
            .cloned()
            .collect();
        let good: Vec<Provider> = fresh.iter().filter(|p| !avoided(p)).cloned().collect();
        let c = if !good.is_empty() {
            good
        } else if !fresh.is_empty() {
            fresh
        } else {
            all
        };
        if c.is_empty() {
            return None;
        }
        Some(match self.balance {
            Balance::Random => self.weighted(&c),
            Balance::RoundRobin => {
                let t = self.turn.get();
                self.turn.set(t.wrapping_add(1));
                c[t % c.len()].address
            }
            Balance::LeastActive => {
                let least = c.iter().map(|p| self.in_flight(p.address)).min()?;
                let c: Vec<Provider> = c
                    .into_iter()
                    .filter(|p| self.in_flight(p.address) == least)
                    .collect();
                self.weighted(&c)
            }
        })
    }

    async fn client(&self, a: SocketAddrV4) -> Result<Client, Error> {
        let conn = self.conn(a);
        let mut slot = conn.slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        self.counters.borrow_mut().connects += 1;
        match (self.connector)(a).await {
            Ok(s) => {
                let c = Client::new(s);
                *slot = Some(c.clone());
                conn.avoid_until.set(None);
                Ok(c)
            }
            Err(e) => {
                self.counters.borrow_mut().connect_failures += 1;
                conn.avoid_until.set(Some(Instant::now() + AVOID));
                Err(Error::Connect(format!("{a}: {e}")))
            }
        }
    }

    /// Calls `method` of the service on a provider picked by the balance.
    pub async fn call(
        &self,
        method: &str,
        types: &str,
        args: Vec<Value>,
        o: CallOptions,
    ) -> Result<Option<Value>, Error> {
        self.counters.borrow_mut().calls += 1;
        let mut tried = Vec::new();
        let mut last = Error::NoProvider(self.service.clone());
        for attempt in 0..=o.retries {
            if attempt > 0 {
                self.counters.borrow_mut().retries += 1;
            }
            let Some(a) = self.pick(&tried) else {
                self.counters.borrow_mut().no_provider += 1;
                break;
            };
            tried.push(a);
            let client = match self.client(a).await {
                Ok(c) => c,
                Err(e) => {
                    // Nothing was sent: another provider may take it.
                    last = e;
                    continue;
                }
            };
            let req = Request::new(&self.service, method, types, args.clone());
            match client.call(req, o.timeout).await {
                Err(e @ (Error::Closed | Error::Timeout)) => {
                    // A provider that lost its connection or stopped answering is left
                    // alone for a while (the registry drops it if it is dead).
                    self.conn(a).avoid_until.set(Some(Instant::now() + AVOID));
                    last = e;
                    if !o.idempotent {
                        break;
                    }
                }
                r => return r,
            }
        }
        self.counters.borrow_mut().failed += 1;
        Err(last)
    }

    /// Keeps the providers up to date from the registry: a long poll for every revision newer
    /// than the one it has (the registry answers at once when there is one: a push). Runs
    /// until the program ends.
    pub async fn follow(self: Rc<Self>, registry: Rc<Cluster>) {
        let mut rev = 0;
        loop {
            let r = registry
                .call(
                    "subscribe",
                    "Ljava/lang/String;JJ",
                    vec![
                        Value::String(self.service.clone()),
                        Value::Long(rev as i64),
                        Value::Long(10_000),
                    ],
                    CallOptions {
                        timeout: Duration::from_secs(15),
                        ..CallOptions::default().idempotent()
                    },
                )
                .await;
            match r.map(|v| v.as_ref().and_then(parse_instances)) {
                Ok(Some((r, p))) => {
                    if r != rev || p != *self.providers.borrow() {
                        tracing::info!(service = %self.service, revision = r, providers = p.len(), "providers");
                        self.revision.set(r);
                        self.set_providers(p);
                    }
                    rev = r;
                }
                Ok(None) => {
                    tracing::warn!(service = %self.service, "the registry's answer is not a subscription");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::debug!(service = %self.service, error = %e, "registry");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// A map field of a Hessian map with string keys.
pub fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Map { entries, .. } => entries
            .iter()
            .find(|(k, _)| matches!(k, Value::String(s) if s == name))
            .map(|(_, v)| v),
        Value::Object { fields, .. } => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
        _ => None,
    }
}

/// A map with string keys, as Hessian writes a `java.util.HashMap`.
pub fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map {
        type_name: None,
        entries: entries
            .into_iter()
            .map(|(k, v)| (Value::String(k.into()), v))
            .collect(),
    }
}

/// A subscription answer: `{revision: long, instances: [{address: "a:p", weight: int}]}`.
pub fn parse_instances(v: &Value) -> Option<(u64, Vec<Provider>)> {
    let rev = match field(v, "revision")? {
        Value::Long(r) => *r as u64,
        Value::Int(r) => *r as u64,
        _ => return None,
    };
    let Value::List { items, .. } = field(v, "instances")? else {
        return None;
    };
    let mut p = Vec::new();
    for i in items {
        let Some(Value::String(a)) = field(i, "address") else {
            return None;
        };
        let weight = match field(i, "weight") {
            Some(Value::Int(w)) => *w as u32,
            Some(Value::Long(w)) => *w as u32,
            _ => 100,
        };
        p.push(Provider {
            address: a.parse().ok()?,
            weight,
        });
    }
    Some((rev, p))
}

/// Registers a provider with the registry and keeps it alive with heartbeats every
/// `every`, registering again when the registry has forgotten it. Runs until the program ends.
pub async fn keep_registered(
    registry: Rc<Cluster>,
    service: String,
    version: String,
    address: SocketAddrV4,
    weight: u32,
    every: Duration,
) {
    let o = CallOptions::default().idempotent();
    loop {
        let id = match registry
            .call(
                "register",
                "Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;I",
                vec![
                    Value::String(service.clone()),
                    Value::String(version.clone()),
                    Value::String(address.to_string()),
                    Value::Int(weight as i32),
                ],
                o,
            )
            .await
        {
            Ok(Some(Value::Long(id))) => id,
            r => {
                tracing::debug!(?r, %service, "not registered yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        tracing::info!(%service, %address, id, "registered");
        loop {
            tokio::time::sleep(every).await;
            match registry
                .call("heartbeat", "J", vec![Value::Long(id)], o)
                .await
            {
                Ok(Some(Value::Bool(true))) => {}
                Ok(_) => break,
                Err(e) => tracing::debug!(error = %e, "heartbeat"),
            }
        }
    }
}
