use super::*;
use hex_literal::hex;
use proptest::prelude::*;

fn s(x: &str) -> Value {
    Value::String(x.into())
}

/// Encodings given by the Hessian 2.0 specification's examples, read and (where the example is
/// the compact form an encoder picks) written.
#[test]
fn golden_examples_of_the_specification() {
    let read_and_write: &[(&[u8], Value)] = &[
        (&hex!("90"), Value::Int(0)),
        (&hex!("80"), Value::Int(-16)),
        (&hex!("bf"), Value::Int(47)),
        (&hex!("c0 00"), Value::Int(-2048)),
        (&hex!("c7 00"), Value::Int(-256)),
        (&hex!("cf ff"), Value::Int(2047)),
        (&hex!("d0 00 00"), Value::Int(-262144)),
        (&hex!("d7 ff ff"), Value::Int(262143)),
        (&hex!("49 7f ff ff ff"), Value::Int(i32::MAX)),
        (&hex!("e0"), Value::Long(0)),
        (&hex!("d8"), Value::Long(-8)),
        (&hex!("ef"), Value::Long(15)),
        (&hex!("f0 00"), Value::Long(-2048)),
        (&hex!("f7 00"), Value::Long(-256)),
        (&hex!("ff ff"), Value::Long(2047)),
        (&hex!("38 00 00"), Value::Long(-262144)),
        (&hex!("3f ff ff"), Value::Long(262143)),
        (&hex!("59 00 04 93 e0"), Value::Long(300_000)),
        (&hex!("4c 00 00 00 01 00 00 00 00"), Value::Long(1 << 32)),
        (&hex!("5b"), Value::Double(0.0)),
        (&hex!("5c"), Value::Double(1.0)),
        (&hex!("5d 80"), Value::Double(-128.0)),
        (&hex!("5d 7f"), Value::Double(127.0)),
        (&hex!("5e 80 00"), Value::Double(-32768.0)),
        (&hex!("5e 7f ff"), Value::Double(32767.0)),
        (
            &hex!("44 40 09 21 fb 54 44 2d 18"),
            Value::Double(std::f64::consts::PI),
        ),
        (&hex!("4e"), Value::Null),
        (&hex!("54"), Value::Bool(true)),
        (&hex!("46"), Value::Bool(false)),
        (&hex!("00"), s("")),
        (&hex!("05 68 65 6c 6c 6f"), s("hello")),
        (&hex!("01 c3 83"), s("\u{c3}")),
        (&hex!("20"), Value::Binary(vec![])),
        (&hex!("23 01 02 03"), Value::Binary(vec![1, 2, 3])),
        // 09:51:31 May 8, 1998 UTC, and 09:51:00 in minutes.
        (
            &hex!("4a 00 00 00 d0 4b 92 84 b8"),
            Value::Date(894_621_091_000),
        ),
        (&hex!("4b 00 e3 83 8f"), Value::Date(894_621_060_000)),
        (
            &hex!("48 91 03 66 65 65 a0 03 66 69 65 c9 00 03 66 6f 65 5a"),
            Value::Map {
                type_name: None,
                entries: vec![
                    (Value::Int(1), s("fee")),
                    (Value::Int(16), s("fie")),
                    (Value::Int(256), s("foe")),
                ],
            },
        ),
        (
            &hex!("72 04 5b 69 6e 74 90 91"),
            Value::List {
                type_name: Some("[int".into()),
                items: vec![Value::Int(0), Value::Int(1)],
            },
        ),
        (
            &hex!("7b 90 91 92"),
            Value::List {
                type_name: None,
                items: vec![Value::Int(0), Value::Int(1), Value::Int(2)],
            },
        ),
    ];
    for (bytes, v) in read_and_write {
        assert_eq!(from_bytes(bytes).as_ref(), Ok(v), "read {bytes:02x?}");
        assert_eq!(to_bytes(v), *bytes, "write {v:?}");
    }
    // Other forms an encoder does not pick, read all the same.
    let read_only: &[(&[u8], Value)] = &[
        (&hex!("49 00 00 01 2c"), Value::Int(300)),
        (&hex!("c8 00"), Value::Int(0)),
        (&hex!("4c 00 00 00 00 00 00 01 2c"), Value::Long(300)),
        (&hex!("5d 00"), Value::Double(0.0)),
        (&hex!("5f 00 00 2f da"), Value::Double(12.25)),
        (&hex!("53 00 05 68 65 6c 6c 6f"), s("hello")),
        // A chunked string: "he" then "llo".
        (&hex!("52 00 02 68 65 53 00 03 6c 6c 6f"), s("hello")),
        // Four-octet UTF-8 for U+1F600 (Java writes surrogates instead).
        (&hex!("02 f0 9f 98 80"), s("\u{1f600}")),
        (
            &hex!("57 90 91 5a"),
            Value::List {
                type_name: None,
                items: vec![Value::Int(0), Value::Int(1)],
            },
        ),
    ];
    for (bytes, v) in read_only {
        assert_eq!(from_bytes(bytes).as_ref(), Ok(v), "read {bytes:02x?}");
    }
}

/// The specification's object example: a class definition once, then two instances.
#[test]
fn objects_share_one_class_definition() {
    let car = |color: &str, model: &str| Value::Object {
        class: "example.Car".into(),
        fields: vec![("color".into(), s(color)), ("model".into(), s(model))],
    };
    let mut e = Encoder::new();
    e.write(&car("red", "corvette"));
    e.write(&car("green", "civic"));
    let b = e.into_bytes();
    let want = [
        &hex!("43 0b")[..],
        b"example.Car",
        &hex!("92 05"),
        b"color",
        &[0x05],
        b"model",
        &hex!("60 03"),
        b"red",
        &[0x08],
        b"corvette",
        &hex!("60 05"),
        b"green",
        &[0x05],
        b"civic",
    ]
    .concat();
    assert_eq!(b, want);
    let mut d = Decoder::new(&b);
    assert_eq!(d.read().unwrap(), car("red", "corvette"));
    assert_eq!(d.read().unwrap(), car("green", "civic"));
    assert!(d.is_empty());
}

#[test]
fn references_resolve_and_bad_ones_are_errors() {
    // A list, then a reference to it (value #0).
    let mut e = Encoder::new();
    let l = Value::List {
        type_name: None,
        items: vec![Value::Int(1)],
    };
    e.write(&l);
    e.write_ref(0);
    let b = e.into_bytes();
    let mut d = Decoder::new(&b);
    assert_eq!(d.read().unwrap(), l);
    assert_eq!(d.read().unwrap(), l);
    assert!(matches!(
        from_bytes(&hex!("51 91")),
        Err(Error::BadRef { what: "value", .. })
    ));
    assert!(matches!(
        from_bytes(&hex!("61")),
        Err(Error::BadRef { what: "class", .. })
    ));
    assert!(matches!(
        from_bytes(&hex!("71 91")),
        Err(Error::BadRef { what: "type", .. })
    ));
}

#[test]
fn java_strings_count_utf16_units() {
    // U+1F600 is two UTF-16 units, each written as three octets (CESU-8), as Java does.
    let b = to_bytes(&s("\u{1f600}"));
    assert_eq!(b, hex!("02 ed a0 bd ed b8 80"));
    assert_eq!(from_bytes(&b), Ok(s("\u{1f600}")));
    // Long strings are chunked at 32768 units.
    let long = "x".repeat(70_000);
    let b = to_bytes(&s(&long));
    assert_eq!(&b[..3], &hex!("52 80 00"));
    assert_eq!(from_bytes(&b), Ok(s(&long)));
}

#[test]
fn bad_input_is_an_error() {
    assert!(matches!(from_bytes(&[]), Err(Error::Truncated(0))));
    assert!(matches!(
        from_bytes(&hex!("49 00 00")),
        Err(Error::Truncated(_))
    ));
    assert!(matches!(
        from_bytes(&hex!("05 68 65")),
        Err(Error::Truncated(_))
    ));
    assert!(matches!(
        from_bytes(&hex!("40")),
        Err(Error::BadCode { code: 0x40, .. })
    ));
    assert!(matches!(from_bytes(&hex!("01 ff")), Err(Error::BadUtf8(_))));
    assert!(matches!(
        from_bytes(&hex!("58 80")),
        Err(Error::BadLength(-16))
    ));
    // Nested lists past the limit.
    let deep = [vec![0x79u8; 200], vec![0x90]].concat();
    assert!(matches!(from_bytes(&deep), Err(Error::TooDeep(_))));
    // A huge length does not allocate: it fails when the items run out.
    assert!(matches!(
        from_bytes(&hex!("58 49 7f ff ff ff 90")),
        Err(Error::Truncated(_))
    ));
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::Int),
        any::<i64>().prop_map(Value::Long),
        any::<f64>()
            .prop_filter("NaN has no equality", |d| !d.is_nan())
            .prop_map(Value::Double),
        (-1_000_000_000_000i64..1_000_000_000_000).prop_map(Value::Date),
        ".{0,40}".prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Binary),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            (
                proptest::option::of("[a-z.]{1,12}"),
                proptest::collection::vec(inner.clone(), 0..10)
            )
                .prop_map(|(type_name, items)| Value::List { type_name, items }),
            (
                proptest::option::of("[a-z.]{1,12}"),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..5)
            )
                .prop_map(|(type_name, entries)| Value::Map { type_name, entries }),
            (
                "[a-z.]{1,12}",
                proptest::collection::vec(("[a-z]{1,8}", inner), 0..4)
            )
                .prop_map(|(class, fields)| Value::Object { class, fields }),
        ]
    })
}

proptest! {
    #[test]
    fn round_trip(v in value()) {
        let b = to_bytes(&v);
        prop_assert_eq!(from_bytes(&b), Ok(v));
    }

    #[test]
    fn every_truncation_is_an_error(v in value()) {
        let b = to_bytes(&v);
        for n in 0..b.len() {
            prop_assert!(from_bytes(&b[..n]).is_err());
        }
    }

    #[test]
    fn any_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut d = Decoder::new(&b);
        while !d.is_empty() {
            if d.read().is_err() {
                break;
            }
        }
    }
}
