use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

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
            .map(|value| value.as_mut().map_or(Stored::Null, stored)),
    )
}

/// The decoder's view of a field held as a [`FieldValue`].
fn stored(value: &mut FieldValue) -> Stored<'_> {
    match value {
        FieldValue::Text(bytes) => Stored::Text(bytes),
        FieldValue::Null => Stored::Null,
        FieldValue::Skipped => Stored::Skipped,
    }
}

fn text_of<T: Serialize>(value: &T, field: &str) -> FieldValue {
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
        #[derive(Serialize)]
        struct S { a: String, b: Option<String> }
        let value = S { a: text.clone(), b: Some(text.clone()) };
        prop_assert_eq!(text_of(&value, "a"), FieldValue::Text(text.clone().into_bytes()));
        prop_assert_eq!(text_of(&value, "b"), FieldValue::Text(text.into_bytes()));
        prop_assert_eq!(text_of(&S { a: String::new(), b: None }, "b"), FieldValue::Null);
    }

    #[test]
    fn integers_are_decimal(n in any::<i64>()) {
        #[derive(Serialize)]
        struct S { n: i64 }
        prop_assert_eq!(text_of(&S { n }, "n"), text(&n.to_string()));
    }

    /// Whatever bytes another writer left in the hash, decoding fails or succeeds: it never
    /// panics, and the caller treats a failure as a miss.
    #[test]
    fn garbage_never_panics(values in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..24)), 19)) {
        let SchemaFields::Named(fields) = schema_fields::<Everything>() else { unreachable!() };
        let mut values: Vec<FieldValue> = values.into_iter().map(|v| v.map_or(FieldValue::Null, FieldValue::Text)).collect();
        let _ = decode::<Everything>(fields, &mut values.iter_mut().map(stored));
    }
}

#[test]
fn scalars_are_readable_text() {
    #[derive(Serialize)]
    struct User {
        id: i64,
        name: String,
        active: bool,
        birthday: &'static str,
        kind: Kind,
        ratio: f64,
        nan: f64,
        inf: f64,
        tags: Vec<&'static str>,
    }
    let user = User {
        id: -42,
        name: "Ünïcødé name".into(),
        active: true,
        birthday: "2000-01-31",
        kind: Kind::Plain,
        ratio: 0.1,
        nan: f64::NAN,
        inf: f64::NEG_INFINITY,
        tags: vec!["a", "b"],
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
    assert!(decode::<S>(fields, &mut [FieldValue::Null].iter_mut().map(stored)).is_err());
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
