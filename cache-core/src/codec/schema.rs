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

/// The schema's field names, or why it cannot be cached.
pub(crate) fn schema_field_names<T: serde::de::DeserializeOwned>(
) -> Result<&'static [&'static str], crate::Error> {
    match schema_fields::<T>() {
        SchemaFields::Named(fields) => Ok(fields),
        SchemaFields::Unsupported(reason) => Err(crate::Error::UnsupportedSchema {
            type_name: std::any::type_name::<T>(),
            reason,
        }),
    }
}

/// Asks `T`'s `Deserialize` impl for its field names. Costs one failed call, no allocation.
pub(crate) fn schema_fields<'de, T: Deserialize<'de>>() -> SchemaFields {
    match T::deserialize(Probe { field: None }) {
        Err(Probed::Fields(fields)) => {
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
        Err(Probed::Map) => SchemaFields::Unsupported(
            "it deserializes from a map (`#[serde(flatten)]` or a map type), so its fields are unknown",
        ),
        _ => SchemaFields::Unsupported("it is not a struct with named fields"),
    }
}

/// What a probe found out, carried out of serde as the "error" that stops it.
#[derive(Debug)]
enum Probed {
    /// A struct with these fields.
    Fields(&'static [&'static str]),
    /// Something that deserializes from a map.
    Map,
    /// A field read with `deserialize_any`: its value must describe itself.
    Any,
    /// Anything else: a specific type, or the probe could not get that far.
    Other,
}

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("schema probe")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Probed::Other
    }
}

/// Asks a `Deserialize` impl what it is. Without `field`: a struct answers its field names.
/// With one: the struct is shown a map holding only that field, whose value is a
/// [`KindProbe`], which records what the field's type asks for.
struct Probe {
    field: Option<&'static str>,
}

impl<'de> de::Deserializer<'de> for Probe {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed::Other)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Probed> {
        match self.field {
            None => Err(Probed::Fields(fields)),
            Some(field) => visitor.visit_map(OneField { field: Some(field) }),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed::Map)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct enum identifier ignored_any
    }
}

/// The fields of `T` whose `Deserialize` asks the format what the value is
/// (`deserialize_any`): `serde_json::Value`, untagged and internally tagged enums, most
/// decimal types. Plain text cannot tell `"42"` from `42` or `"1.50"` from `1.5` for them, so
/// they are stored as JSON. Found by starting to deserialize each field with a probe that
/// records what it is asked for; costs one aborted call per field, no allocation but the list.
pub(crate) fn self_describing_fields<'de, T: Deserialize<'de>>(
    fields: &'static [&'static str],
) -> Vec<&'static str> {
    fields
        .iter()
        .copied()
        .filter(|&field| {
            matches!(
                T::deserialize(Probe { field: Some(field) }),
                Err(Probed::Any)
            )
        })
        .collect()
}

struct OneField {
    field: Option<&'static str>,
}

impl<'de> de::MapAccess<'de> for OneField {
    type Error = Probed;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Probed> {
        match self.field.take() {
            Some(field) => seed
                .deserialize(de::value::BorrowedStrDeserializer::new(field))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Probed> {
        seed.deserialize(KindProbe)
    }
}

/// Sees through `Option` and newtypes to the first real request.
struct KindProbe;

/// Methods that ask for one specific type.
macro_rules! typed {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
            Err(Probed::Other)
        })*
    };
}

impl<'de> de::Deserializer<'de> for KindProbe {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed::Any)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Probed> {
        visitor.visit_some(KindProbe)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Probed> {
        visitor.visit_newtype_struct(KindProbe)
    }

    typed! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_seq deserialize_map deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, Probed> {
        Err(Probed::Other)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Probed> {
        Err(Probed::Other)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, Probed> {
        Err(Probed::Other)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        Err(Probed::Other)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        Err(Probed::Other)
    }
}
