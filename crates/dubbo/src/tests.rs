use super::*;
use hex_literal::hex;
use proptest::prelude::*;

fn s(x: &str) -> Value {
    Value::String(x.into())
}

#[test]
fn a_heartbeat_is_the_bytes_dubbo_sends() {
    // Request, two-way, event, Hessian 2; id 1; body: Hessian null.
    let b = Frame::Heartbeat {
        id: 1,
        request: true,
    }
    .encode();
    assert_eq!(
        b,
        hex!("da bb e2 00 00 00 00 00 00 00 00 01 00 00 00 01 4e")
    );
    let (h, f, n) = Frame::read(&b, MAX_BODY).unwrap().unwrap();
    assert!(h.request && h.two_way && h.event);
    assert_eq!(
        (f, n),
        (
            Ok(Frame::Heartbeat {
                id: 1,
                request: true
            }),
            b.len()
        )
    );
    // Its answer: a response event with status OK (20).
    let b = Frame::Heartbeat {
        id: 1,
        request: false,
    }
    .encode();
    assert_eq!(&b[..4], &hex!("da bb 22 14"));
}

#[test]
fn requests_and_responses_round_trip() {
    let req = Request {
        service: "com.shop.OrderService".into(),
        version: "1.0.0".into(),
        method: "createOrder".into(),
        types: "Ljava/lang/String;Ljava/lang/String;I".into(),
        args: vec![s("key-1"), s("book-11"), Value::Int(1)],
        attachments: vec![("path".into(), Value::String("com.shop.OrderService".into()))],
    };
    let f = Frame::Request {
        id: 7,
        two_way: true,
        request: req,
    };
    let b = f.encode();
    assert_eq!(&b[..4], &hex!("da bb c2 00"));
    assert_eq!(&b[4..12], &7u64.to_be_bytes());
    assert_eq!(
        u32::from_be_bytes(b[12..16].try_into().unwrap()) as usize,
        b.len() - 16
    );
    // The body starts with the Dubbo version as a short Hessian string.
    assert_eq!(&b[16..22], b"\x052.0.2");
    assert_eq!(Frame::read(&b, MAX_BODY).unwrap().unwrap().1, Ok(f));
    for outcome in [
        Ok(Outcome::Value(s("D11-00000001"))),
        Ok(Outcome::Null),
        Ok(Outcome::Exception(Value::Object {
            class: "java.lang.RuntimeException".into(),
            fields: vec![("detailMessage".into(), s("out of stock"))],
        })),
        Err("service com.shop.X not found".to_string()),
    ] {
        for attachments in [
            vec![],
            vec![("dubbo".to_string(), Value::String("2.0.2".into()))],
        ] {
            let status = if outcome.is_ok() {
                status::OK
            } else {
                status::SERVICE_NOT_FOUND
            };
            let attachments = if outcome.is_ok() { attachments } else { vec![] };
            let f = Frame::Response {
                id: 9,
                status,
                outcome: outcome.clone(),
                attachments,
            };
            let b = f.encode();
            assert_eq!(b[3], status);
            assert_eq!(Frame::read(&b, MAX_BODY).unwrap().unwrap().1, Ok(f));
        }
    }
}

#[test]
fn partial_corrupt_and_oversized_frames() {
    let b = Frame::Heartbeat {
        id: 3,
        request: true,
    }
    .encode();
    for n in 0..b.len() {
        assert_eq!(Frame::read(&b[..n], MAX_BODY), Ok(None), "prefix {n}");
    }
    assert_eq!(
        Frame::read(&hex!("ca fe"), MAX_BODY),
        Err(Error::BadMagic([0xca, 0xfe]))
    );
    let mut h = Header {
        request: true,
        two_way: true,
        event: false,
        status: 0,
        id: 1,
        body_len: 100 << 20,
    }
    .encode();
    assert_eq!(Frame::read(&h, MAX_BODY), Err(Error::TooBig(100 << 20)));
    h[2] = 0xc6; // serialization 6 (Java)
    assert_eq!(Frame::read(&h, MAX_BODY), Err(Error::Serialization(6)));
    // A request whose body is garbage: the header is known, the body is an error; the next
    // frame is read after it.
    let mut bad = Header {
        request: true,
        two_way: true,
        event: false,
        status: 0,
        id: 5,
        body_len: 3,
    }
    .encode()
    .to_vec();
    bad.extend_from_slice(&[0x40, 0x40, 0x40]);
    bad.extend_from_slice(&b);
    let (h, f, n) = Frame::read(&bad, MAX_BODY).unwrap().unwrap();
    assert_eq!((h.id, n), (5, 19));
    assert!(matches!(f, Err(Error::Body(_))));
    let (_, f, _) = Frame::read(&bad[n..], MAX_BODY).unwrap().unwrap();
    assert_eq!(
        f,
        Ok(Frame::Heartbeat {
            id: 3,
            request: true
        })
    );
}

#[test]
fn descriptors_count_their_types() {
    assert_eq!(count_types(""), Ok(0));
    assert_eq!(count_types("I"), Ok(1));
    assert_eq!(count_types("[Ljava/lang/String;J[[I"), Ok(3));
    assert!(count_types("Ljava/lang/String").is_err());
    assert!(count_types("Q").is_err());
}

proptest! {
    #[test]
    fn any_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut rest = &b[..];
        while let Ok(Some((_, _, n))) = Frame::read(rest, 1 << 16) {
            rest = &rest[n..];
        }
    }

    #[test]
    fn corrupt_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200), req in any::<bool>(), ev in any::<bool>(), st in any::<u8>()) {
        let mut f = Header { request: req, two_way: req, event: ev, status: st, id: 1, body_len: body.len() as u32 }.encode().to_vec();
        f.extend_from_slice(&body);
        let r = Frame::read(&f, MAX_BODY);
        prop_assert!(matches!(r, Ok(Some(_))));
    }
}
