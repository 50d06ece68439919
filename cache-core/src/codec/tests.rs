//! The codec's tests: every serde shape a schema may take, encoded into hash fields and
//! decoded back (unit cases and property tests).

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::schema::{schema_fields, SchemaFields};
use super::*;

/// Encodes, lines the values up in schema order as a store would return them, decodes.
fn round_trip<T: Serialize + serde::de::DeserializeOwned>(value: &T) -> Result<T, CodecError> {
    let SchemaFields::Named(fields) = schema_fields::<T>() else {
        panic!("test schemas are plain structs");
    };
    let encoded = encode(value).expect("encodes");
    let mut values: Vec<Option<FieldValue>> = fields
        .iter()
        .map(|name| {
            encoded
                .iter()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value.clone())
        })
        .collect();
    decode(
        fields,
        &mut values
            .iter_mut()
            .map(|value| value.as_mut().map_or(Stored::Null, FieldValue::as_stored)),
    )
}

fn text_of<T: Serialize + serde::de::DeserializeOwned>(value: &T, field: &str) -> FieldValue {
    encode(value)
        .unwrap()
        .into_iter()
        .find(|(name, _)| *name == field)
        .map(|(_, value)| value)
        .unwrap()
}

fn text(value: &str) -> FieldValue {
    FieldValue::Text(value.as_bytes().to_vec())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Plain,
    Tuple(i32, String),
    Record { a: Option<u8> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    label: String,
    value: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    text: String,
    maybe_text: Option<String>,
    maybe_maybe: Option<Option<String>>,
    signed: i64,
    unsigned: u64,
    small: i8,
    wide: i128,
    float: f64,
    single: f32,
    flag: bool,
    letter: char,
    list: Vec<String>,
    map: BTreeMap<String, i32>,
    inner: Inner,
    maybe_inner: Option<Inner>,
    kind: Kind,
    unit: (),
    pair: (u8, String),
    #[serde(rename = "renamed-field")]
    renamed: u16,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Plain),
        (any::<i32>(), any::<String>()).prop_map(|(n, s)| Kind::Tuple(n, s)),
        any::<Option<u8>>().prop_map(|a| Kind::Record { a }),
    ]
}

fn inner() -> impl Strategy<Value = Inner> {
    (any::<String>(), any::<Option<i64>>()).prop_map(|(label, value)| Inner { label, value })
}

fn finite_or_infinite_f64() -> impl Strategy<Value = f64> {
    prop::num::f64::NORMAL
        | prop::num::f64::SUBNORMAL
        | prop::num::f64::ZERO
        | prop::num::f64::INFINITE
}

fn everything() -> impl Strategy<Value = Everything> {
    (
        (
            any::<String>(),
            any::<Option<String>>(),
            any::<Option<Option<String>>>(),
            any::<i64>(),
            any::<u64>(),
        ),
        (
            any::<i8>(),
            any::<i128>(),
            finite_or_infinite_f64(),
            prop::num::f32::NORMAL,
            any::<bool>(),
            any::<char>(),
        ),
        (
            prop::collection::vec(any::<String>(), 0..4),
            prop::collection::btree_map(any::<String>(), any::<i32>(), 0..4),
        ),
        (
            inner(),
            prop::option::of(inner()),
            kind(),
            (any::<u8>(), any::<String>()),
            any::<u16>(),
        ),
    )
        .prop_map(
            |(
                (text, maybe_text, maybe_maybe, signed, unsigned),
                (small, wide, float, single, flag, letter),
                (list, map),
                (inner, maybe_inner, kind, pair, renamed),
            )| Everything {
                text,
                maybe_text,
                maybe_maybe,
                signed,
                unsigned,
                small,
                wide,
                float,
                single,
                flag,
                letter,
                list,
                map,
                inner,
                maybe_inner,
                kind,
                unit: (),
                pair,
                renamed,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_value_round_trips(value in everything()) {
        prop_assert_eq!(round_trip(&value).unwrap(), value);
    }

    #[test]
    fn strings_are_stored_verbatim_and_none_apart_from_empty(text in any::<String>()) {
        #[derive(Serialize, Deserialize)]
        struct S { a: String, b: Option<String> }
        let value = S { a: text.clone(), b: Some(text.clone()) };
        prop_assert_eq!(text_of(&value, "a"), FieldValue::Text(text.clone().into_bytes()));
        prop_assert_eq!(text_of(&value, "b"), FieldValue::Text(text.into_bytes()));
        prop_assert_eq!(text_of(&S { a: String::new(), b: None }, "b"), FieldValue::Null);
    }

    #[test]
    fn integers_are_decimal(n in any::<i64>()) {
        #[derive(Serialize, Deserialize)]
        struct S { n: i64 }
        prop_assert_eq!(text_of(&S { n }, "n"), text(&n.to_string()));
    }

    /// Whatever bytes another writer left in the hash, decoding fails or succeeds: it never
    /// panics, and the caller treats a failure as a miss.
    #[test]
    fn garbage_never_panics(values in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..24)), 19)) {
        let SchemaFields::Named(fields) = schema_fields::<Everything>() else { unreachable!() };
        let mut values: Vec<FieldValue> = values.into_iter().map(|v| v.map_or(FieldValue::Null, FieldValue::Text)).collect();
        let _ = decode::<Everything>(fields, &mut values.iter_mut().map(FieldValue::as_stored));
    }
}

#[test]
fn scalars_are_readable_text() {
    #[derive(Serialize, Deserialize)]
    struct User {
        id: i64,
        name: String,
        active: bool,
        birthday: String,
        kind: Kind,
        ratio: f64,
        nan: f64,
        inf: f64,
        tags: Vec<String>,
    }
    let user = User {
        id: -42,
        name: "Ünïcødé name".into(),
        active: true,
        birthday: "2000-01-31".into(),
        kind: Kind::Plain,
        ratio: 0.1,
        nan: f64::NAN,
        inf: f64::NEG_INFINITY,
        tags: vec!["a".into(), "b".into()],
    };
    assert_eq!(text_of(&user, "id"), text("-42"));
    assert_eq!(text_of(&user, "name"), text("Ünïcødé name"));
    assert_eq!(text_of(&user, "active"), text("true"));
    assert_eq!(text_of(&user, "birthday"), text("2000-01-31"));
    assert_eq!(text_of(&user, "kind"), text("Plain"));
    assert_eq!(text_of(&user, "ratio"), text("0.1"));
    assert_eq!(text_of(&user, "nan"), text("NaN"));
    assert_eq!(text_of(&user, "inf"), text("-inf"));
    assert_eq!(text_of(&user, "tags"), text(r#"["a","b"]"#));
}

#[test]
fn nan_round_trips() {
    #[derive(Serialize, Deserialize)]
    struct S {
        x: f64,
    }
    assert!(round_trip(&S { x: f64::NAN }).unwrap().x.is_nan());
}

#[test]
fn a_null_field_is_a_decoding_error_for_a_non_option_type() {
    #[derive(Debug, Deserialize)]
    struct S {
        _n: i64,
    }
    let SchemaFields::Named(fields) = schema_fields::<S>() else {
        unreachable!()
    };
    assert!(decode::<S>(
        fields,
        &mut [FieldValue::Null].iter_mut().map(FieldValue::as_stored)
    )
    .is_err());
}

#[test]
fn the_probe_names_fields_and_refuses_what_a_hash_cannot_hold() {
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Named {
        a: i32,
        #[serde(rename = "b-renamed")]
        b: i32,
        #[serde(skip)]
        c: i32,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Flat {
        a: i32,
        #[serde(flatten)]
        rest: BTreeMap<String, String>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Reserved {
        __version: u64,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Tuple(i32, i32);

    assert_eq!(
        schema_fields::<Named>(),
        SchemaFields::Named(&["a", "b-renamed"])
    );
    assert!(matches!(
        schema_fields::<Flat>(),
        SchemaFields::Unsupported(_)
    ));
    assert!(matches!(
        schema_fields::<Reserved>(),
        SchemaFields::Unsupported(_)
    ));
    assert!(matches!(
        schema_fields::<Tuple>(),
        SchemaFields::Unsupported(_)
    ));
    assert!(matches!(
        schema_fields::<i64>(),
        SchemaFields::Unsupported(_)
    ));
    assert!(matches!(
        schema_fields::<BTreeMap<String, String>>(),
        SchemaFields::Unsupported(_)
    ));
}

#[test]
fn a_top_level_value_that_is_not_a_struct_cannot_be_encoded() {
    assert!(matches!(encode(&42), Err(crate::Error::Encode { .. })));
    assert!(matches!(
        encode(&vec![1, 2]),
        Err(crate::Error::Encode { .. })
    ));
}

/// Types whose `Deserialize` reads any value (`deserialize_any`) get back exactly what was
/// encoded: plain text could not tell `"42"` from `42` for them, so they are stored as JSON.
mod self_describing {
    use super::*;
    use rust_decimal::Decimal;
    use serde_json::{json, Value};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Num(i64),
        Flag(bool),
        Text(String),
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Mixed {
        value: Value,
        maybe_value: Option<Value>,
        loose: Loose,
        money: Decimal,
        maybe_money: Option<Decimal>,
        triple: Option<Option<Option<String>>>,
        double: Option<Option<i64>>,
        plain: String,
    }

    fn mixed(value: Value, loose: Loose, money: Decimal) -> Mixed {
        Mixed {
            maybe_value: Some(value.clone()),
            value,
            loose,
            money,
            maybe_money: Some(money),
            triple: Some(Some(None)),
            double: Some(None),
            plain: "42".into(),
        }
    }

    #[test]
    fn the_cases_that_came_back_as_another_type() {
        let cases = [
            mixed(json!("42"), Loose::Text("123".into()), Decimal::new(150, 2)),
            mixed(
                json!("true"),
                Loose::Text("true".into()),
                "12345678901234567890.123456789".parse().unwrap(),
            ),
            mixed(json!(null), Loose::Num(123), Decimal::new(-1, 28)),
            mixed(
                json!({"a": ["1", 1, null]}),
                Loose::Flag(false),
                Decimal::ZERO,
            ),
        ];
        for case in cases {
            assert_eq!(round_trip(&case).unwrap(), case);
        }
    }

    #[test]
    fn plain_types_keep_their_readable_text() {
        let case = mixed(json!("42"), Loose::Text("x".into()), Decimal::new(150, 2));
        assert_eq!(
            text_of(&case, "plain"),
            text("42"),
            "a String stays verbatim"
        );
        assert_eq!(text_of(&case, "value"), text(r#""42""#));
        assert_eq!(text_of(&case, "money"), text(r#""1.50""#));
        assert_eq!(text_of(&case, "triple"), text("[null]"));
        assert_eq!(text_of(&case, "double"), text("null"));
    }

    #[test]
    fn every_level_of_a_nested_option_survives() {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        struct Nested {
            a: Option<Option<Option<String>>>,
            b: Option<Option<Option<Value>>>,
        }
        let levels = [
            None,
            Some(None),
            Some(Some(None)),
            Some(Some(Some(String::new()))),
            Some(Some(Some("null".into()))),
        ];
        for a in &levels {
            for b in [
                None,
                Some(None),
                Some(Some(None)),
                Some(Some(Some(Value::Null))),
                Some(Some(Some(json!([null])))),
            ] {
                let value = Nested { a: a.clone(), b };
                assert_eq!(round_trip(&value).unwrap(), value);
            }
        }
    }

    #[test]
    fn text_that_is_not_json_in_a_self_describing_field_is_a_miss() {
        #[derive(Debug, Serialize, Deserialize)]
        struct Holder {
            value: Value,
        }
        let mut garbage = FieldValue::Text(b"not json".to_vec());
        let decoded: Result<Holder, _> =
            decode(&["value"], &mut std::iter::once(garbage.as_stored()));
        assert!(decoded.is_err());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::String),
            "(-?[0-9]{1,20}(\\.[0-9]{1,10})?|true|false|null)".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn loose() -> impl Strategy<Value = Loose> {
        prop_oneof![
            any::<i64>().prop_map(Loose::Num),
            any::<bool>().prop_map(Loose::Flag),
            ".*".prop_map(Loose::Text),
            "(-?[0-9]{1,18}|true|false)".prop_map(Loose::Text),
        ]
    }

    fn decimal() -> impl Strategy<Value = Decimal> {
        (any::<i64>(), 0u32..=28).prop_map(|(mantissa, scale)| Decimal::new(mantissa, scale))
    }

    fn option_chain() -> impl Strategy<Value = Option<Option<Option<String>>>> {
        prop_oneof![
            Just(None),
            Just(Some(None)),
            Just(Some(Some(None))),
            ".*".prop_map(|text| Some(Some(Some(text)))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_value_round_trips_exactly(
            value in json_value(),
            maybe in prop::option::of(json_value()),
            loose in loose(),
            money in decimal(),
            maybe_money in prop::option::of(decimal()),
            triple in option_chain(),
            double in prop::option::of(prop::option::of(any::<i64>())),
            plain in ".*",
        ) {
            let value = Mixed {
                value,
                maybe_value: maybe,
                loose,
                money,
                maybe_money,
                triple,
                double,
                plain,
            };
            let back = round_trip(&value).unwrap();
            prop_assert_eq!(&back, &value);
            // Decimals compare by value: the scale must survive too (`1.50` is not `1.5`).
            prop_assert_eq!(back.money.scale(), value.money.scale());
        }
    }
}
