//! Decoding: the values of the schema's fields, in schema order → the schema struct.

use serde::de::{
    self, value::BorrowedStrDeserializer, DeserializeOwned, DeserializeSeed, IntoDeserializer,
    MapAccess, Visitor,
};

use super::CodecError;

/// One schema field as read back, for [`decode`]: a view into wherever the store keeps it
/// (Redis' reply itself, on the hit path), so that decoding copies nothing it can take.
#[derive(Debug)]
pub(crate) enum Stored<'a> {
    /// The encoded text; a `String` field takes these bytes.
    Text(&'a mut Vec<u8>),
    /// `None`: listed as such in `__meta`.
    Null,
    /// Skipped by `skip_serializing_if`: decoded as a missing field.
    Skipped,
}

/// Decodes a schema value from the values of `fields`, given in the same order.
///
/// Every field must be there (the caller treats a missing one as a miss before getting
/// here). Any decoding failure is an error, which the caller also treats as a miss.
pub(crate) fn decode<T: DeserializeOwned>(
    fields: &'static [&'static str],
    values: &mut dyn Iterator<Item = Stored<'_>>,
) -> Result<T, CodecError> {
    T::deserialize(HashDeserializer {
        entries: fields.iter().zip(values),
        current: None,
    })
}

/// Presents the hash fields to serde as a map, field name → [`FieldDecoder`].
struct HashDeserializer<'de, 'v> {
    entries: std::iter::Zip<
        std::slice::Iter<'static, &'static str>,
        &'v mut dyn Iterator<Item = Stored<'de>>,
    >,
    /// The field whose key was just handed out, and its value.
    current: Option<(&'static str, Stored<'de>)>,
}

impl<'de> de::Deserializer<'de> for HashDeserializer<'de, '_> {
    type Error = CodecError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> MapAccess<'de> for HashDeserializer<'de, '_> {
    type Error = CodecError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, CodecError> {
        // A skipped field is left out, so that serde applies `default` or `Option`'s `None`.
        for (name, value) in self.entries.by_ref() {
            if !matches!(value, Stored::Skipped) {
                self.current = Some((name, value));
                return seed
                    .deserialize(BorrowedStrDeserializer::new(name))
                    .map(Some);
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, CodecError> {
        let (name, value) = self
            .current
            .take()
            .ok_or_else(|| CodecError::Message("a value without its key".into()))?;
        let decoded = match value {
            Stored::Text(bytes) => seed.deserialize(FieldDecoder {
                bytes,
                inside_some: false,
            }),
            Stored::Null | Stored::Skipped => seed.deserialize(NullDecoder),
        };
        decoded.map_err(|error| CodecError::Message(format!("field `{name}`: {error}")))
    }
}

/// Decodes one field value as the type asks: text for strings, parsed text for numbers,
/// JSON for compound values.
struct FieldDecoder<'de> {
    /// The stored bytes: borrowed by most reads, taken whole by a `String`.
    bytes: &'de mut Vec<u8>,
    /// Under a `Some`, a further `Option` was stored as JSON (see the encoder).
    inside_some: bool,
}

fn utf8(bytes: &[u8]) -> Result<&str, CodecError> {
    std::str::from_utf8(bytes)
        .map_err(|_| CodecError::Message("stored value is not UTF-8 text".into()))
}

impl<'de> FieldDecoder<'de> {
    fn into_bytes(self) -> &'de [u8] {
        self.bytes
    }

    fn into_text(self) -> Result<&'de str, CodecError> {
        utf8(self.into_bytes())
    }

    fn parse<N: std::str::FromStr>(self) -> Result<N, CodecError> {
        let text = self.into_text()?;
        text.parse().map_err(|_| {
            CodecError::Message(format!(
                "`{text}` is not a valid {}",
                std::any::type_name::<N>()
            ))
        })
    }

    fn json(self) -> serde_json::Deserializer<serde_json::de::SliceRead<'de>> {
        serde_json::Deserializer::from_slice(self.into_bytes())
    }
}

/// Runs one `serde_json` deserializer method on the stored bytes, rejecting trailing garbage.
macro_rules! via_json {
    ($self:ident, $method:ident($($arg:expr),*)) => {{
        let mut json = $self.json();
        let value = de::Deserializer::$method(&mut json, $($arg),*)?;
        json.end()?;
        Ok(value)
    }};
}

macro_rules! chain_json_forwarded {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
            self.json(|json| de::Deserializer::$method(json, visitor))
        })*
    };
}

macro_rules! parsed {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
            visitor.$visit(self.parse::<$ty>()?)
        })*
    };
}

macro_rules! json_forwarded {
    ($($method:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
            via_json!(self, $method(visitor))
        })*
    };
}

impl<'de> de::Deserializer<'de> for FieldDecoder<'de> {
    type Error = CodecError;

    /// Types that read any value (`serde_json::Value`, untagged enums, decimals) are stored
    /// as JSON by the encoder, so the text says exactly what it is: `"42"` a string, `42` a
    /// number. Text that is not JSON is garbage here, hence a miss.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        via_json!(self, deserialize_any(visitor))
    }

    parsed! {
        deserialize_i8 => visit_i8: i8, deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32, deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128, deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16, deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64, deserialize_u128 => visit_u128: u128,
        deserialize_f32 => visit_f32: f32, deserialize_f64 => visit_f64: f64,
        deserialize_char => visit_char: char,
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.into_bytes() {
            b"true" => visitor.visit_bool(true),
            b"false" => visitor.visit_bool(false),
            _ => Err(CodecError::Message(
                "stored value is not `true` or `false`".into(),
            )),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_borrowed_str(self.into_text()?)
    }

    /// Takes the bytes as they came from Redis: no copy of the text.
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match String::from_utf8(std::mem::take(self.bytes)) {
            Ok(text) => visitor.visit_string(text),
            Err(_) => Err(CodecError::Message("stored value is not UTF-8 text".into())),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        if self.inside_some {
            OptionChain(self.into_bytes()).deserialize_option(visitor)
        } else {
            visitor.visit_some(FieldDecoder {
                bytes: self.bytes,
                inside_some: true,
            })
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        // Unit variants are stored as their bare name, data-carrying ones as JSON objects.
        match self.bytes.first() {
            Some(b'{') | Some(b'"') => via_json!(self, deserialize_enum(name, variants, visitor)),
            _ => visitor.visit_enum(IntoDeserializer::<CodecError>::into_deserializer(
                self.into_text()?,
            )),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        via_json!(self, deserialize_unit_struct(name, visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        via_json!(self, deserialize_tuple(len, visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        via_json!(self, deserialize_tuple_struct(name, len, visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        via_json!(self, deserialize_struct(name, fields, visitor))
    }

    json_forwarded! {
        deserialize_bytes, deserialize_byte_buf, deserialize_unit, deserialize_seq, deserialize_map,
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_unit()
    }
}

/// An `Option` under a `Some`, as the encoder's `write_option_chain` wrote it: `null` for
/// `None`, `[x]` for `Some(x)`; below the last `Option` layer, JSON.
struct OptionChain<'de>(&'de [u8]);

impl<'de> de::Deserializer<'de> for OptionChain<'de> {
    type Error = CodecError;

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.0 {
            b"null" => visitor.visit_none(),
            [b'[', inner @ .., b']'] => visitor.visit_some(OptionChain(inner)),
            _ => Err(CodecError::Message(
                "stored value is not a nested option".into(),
            )),
        }
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        let mut json = serde_json::Deserializer::from_slice(self.0);
        let value = de::Deserializer::deserialize_any(&mut json, visitor)?;
        json.end()?;
        Ok(value)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.json(|json| de::Deserializer::deserialize_unit_struct(json, name, visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.json(|json| de::Deserializer::deserialize_tuple(json, len, visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.json(|json| de::Deserializer::deserialize_tuple_struct(json, name, len, visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.json(|json| de::Deserializer::deserialize_struct(json, name, fields, visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.json(|json| de::Deserializer::deserialize_enum(json, name, variants, visitor))
    }

    chain_json_forwarded! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_seq deserialize_map deserialize_identifier deserialize_ignored_any
    }
}

impl<'de> OptionChain<'de> {
    /// Runs one `serde_json` method on the text, rejecting trailing garbage.
    fn json<T>(
        self,
        read: impl FnOnce(
            &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
        ) -> Result<T, serde_json::Error>,
    ) -> Result<T, CodecError> {
        let mut json = serde_json::Deserializer::from_slice(self.0);
        let value = read(&mut json)?;
        json.end()?;
        Ok(value)
    }
}

/// A field listed as `null` in `__meta`: `None` to an `Option`, an error (so a miss) to anything else.
struct NullDecoder;

impl<'de> de::Deserializer<'de> for NullDecoder {
    type Error = CodecError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_none()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_none()
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_unit()
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier
    }
}
