//! The schema's field names, learnt from its `Deserialize` impl alone.
//!
//! serde's derive passes the list of field names to `Deserializer::deserialize_struct`; a
//! deserializer that stops right there reads it without any extra derive on the user's type.

use serde::de::{self, Deserialize, Visitor};

/// What the probe found out about a schema type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchemaFields {
    /// A struct with these (serialized) field names.
    Named(&'static [&'static str]),
    /// Not storable as a flat hash; the text says why.
    Unsupported(&'static str),
}

/// Asks `T`'s `Deserialize` impl for its field names. Costs one failed call, no allocation.
pub(crate) fn schema_fields<'de, T: Deserialize<'de>>() -> SchemaFields {
    match T::deserialize(Probe) {
        Err(ProbeResult::Fields(fields)) => {
            if fields.is_empty() {
                SchemaFields::Unsupported("it has no fields")
            } else if fields.iter().any(|name| name.starts_with("__")) {
                SchemaFields::Unsupported("a field name starts with `__`, reserved for the cache")
            } else if fields.iter().any(|name| name.contains([',', ' '])) {
                SchemaFields::Unsupported(
                    "a field name contains `,` or a space, which separate the lists in `__meta`",
                )
            } else {
                SchemaFields::Named(fields)
            }
        }
        Err(ProbeResult::Map) => SchemaFields::Unsupported(
            "it deserializes from a map (`#[serde(flatten)]` or a map type), so its fields are unknown",
        ),
        _ => SchemaFields::Unsupported("it is not a struct with named fields"),
    }
}

#[derive(Debug)]
enum ProbeResult {
    Fields(&'static [&'static str]),
    Map,
    Other,
}

impl std::fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("schema probe")
    }
}

impl std::error::Error for ProbeResult {}

impl de::Error for ProbeResult {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        ProbeResult::Other
    }
}

struct Probe;

impl<'de> de::Deserializer<'de> for Probe {
    type Error = ProbeResult;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeResult> {
        Err(ProbeResult::Other)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ProbeResult> {
        Err(ProbeResult::Fields(fields))
    }

    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeResult> {
        Err(ProbeResult::Map)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct enum identifier ignored_any
    }
}
