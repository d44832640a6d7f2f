use super::*;
use d11_dubbo::{Header, HEADER_LEN};
use tokio::task::LocalSet;

fn req(method: &str, args: Vec<Value>) -> Request {
    Request {
        service: "com.shop.Inventory".into(),
        version: "1.0.0".into(),
        method: method.into(),
        types: "J".repeat(args.len()),
        args,
        attachments: Vec::new(),
    }
}

/// A provider: `echo(n)` answers n after n milliseconds; `fail` throws; `missing` is an
/// unknown method.
fn handler() -> Handler {
    Rc::new(|r: Request| {
        Box::pin(async move {
            match r.method.as_str() {
                "echo" => {
                    let n = match r.args.first() {
                        Some(Value::Long(n)) => *n,
                        _ => 0,
                    };
                    tokio::time::sleep(Duration::from_millis(n as u64)).await;
                    Ok(Outcome::Value(Value::Long(n)))
                }
                "fail" => Ok(exception("java.lang.IllegalStateException", "out of stock")),
                _ => Err((status::SERVICE_NOT_FOUND, format!("no method {}", r.method))),
            }
        })
    })
}

fn run(f: impl Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    LocalSet::new().block_on(&rt, f);
}

#[test]
fn calls_are_multiplexed_and_matched_by_id() {
    run(async {
        let (a, b) = tokio::io::duplex(1 << 16);
        tokio::task::spawn_local(serve(b, handler()));
        let c = Client::new(a);
        // Fifty calls at once; the slow ones finish last, every caller gets its own answer.
        let calls: Vec<_> = (0..50i64)
            .map(|i| {
                let c = c.clone();
                let n = (50 - i) % 7 * 5;
                tokio::task::spawn_local(async move {
                    let v = c
                        .call(req("echo", vec![Value::Long(n)]), Duration::from_secs(5))
                        .await;
                    (n, v)
                })
            })
            .collect();
        for h in calls {
            let (n, v) = h.await.unwrap();
            assert_eq!(v, Ok(Some(Value::Long(n))));
        }
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.heartbeat(Duration::from_secs(1)).await, Ok(()));
        assert!(matches!(
            c.call(req("fail", vec![]), Duration::from_secs(1)).await,
            Err(Error::Exception { class, message })
                if class == "java.lang.IllegalStateException" && message == "out of stock"
        ));
        assert!(matches!(
            c.call(req("missing", vec![]), Duration::from_secs(1)).await,
            Err(Error::Status { status: 60, .. })
        ));
    });
}

#[test]
fn a_slow_call_times_out_and_the_others_go_on() {
    run(async {
        let (a, b) = tokio::io::duplex(1 << 16);
        tokio::task::spawn_local(serve(b, handler()));
        let c = Client::new(a);
        assert_eq!(
            c.call(
                req("echo", vec![Value::Long(300)]),
                Duration::from_millis(20)
            )
            .await,
            Err(Error::Timeout)
        );
        assert_eq!(
            c.call(req("echo", vec![Value::Long(1)]), Duration::from_secs(1))
                .await,
            Ok(Some(Value::Long(1)))
        );
    });
}

#[test]
fn a_bad_body_gets_bad_request_and_a_bad_header_closes() {
    run(async {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        tokio::task::spawn_local(serve(b, handler()));
        // A request whose body is not Hessian: answered 40 with its id.
        let mut f = Header {
            request: true,
            two_way: true,
            event: false,
            status: 0,
            id: 77,
            body_len: 2,
        }
        .encode()
        .to_vec();
        f.extend_from_slice(&[0x40, 0x40]);
        a.write_all(&f).await.unwrap();
        let mut resp = vec![0u8; HEADER_LEN];
        a.read_exact(&mut resp).await.unwrap();
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&resp);
        let h = Header::decode(&h).unwrap();
        assert_eq!((h.id, h.status), (77, status::BAD_REQUEST));
        let mut body = vec![0u8; h.body_len as usize];
        a.read_exact(&mut body).await.unwrap();
        // The connection still serves: a client on it works.
        let c = Client::new(a);
        assert_eq!(
            c.call(req("echo", vec![Value::Long(0)]), Duration::from_secs(1))
                .await,
            Ok(Some(Value::Long(0)))
        );
        // A bad header: the provider closes; calls fail as closed, not by timeout.
        let (mut a, b) = tokio::io::duplex(1 << 16);
        tokio::task::spawn_local(serve(b, handler()));
        a.write_all(&[0xca, 0xfe, 0, 0]).await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(a.read_to_end(&mut rest).await.unwrap(), 0);
        let c = Client::new(a);
        tokio::task::yield_now().await;
        assert!(matches!(
            c.call(req("echo", vec![Value::Long(0)]), Duration::from_secs(2))
                .await,
            Err(Error::Closed)
        ));
    });
}
