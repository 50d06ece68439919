//! Encoding: a struct value → `(field name, bytes)` pairs.

use std::io::Write as _;

use serde::de::DeserializeOwned;
use serde::ser::{self, Impossible, Serialize, SerializeStruct};

use super::schema::{schema_fields, self_describing_fields, SchemaFields};
use super::{CodecError, FieldValue};
use crate::Error;

/// One encoded hash field.
pub(crate) type EncodedField = (&'static str, FieldValue);

/// Turns a schema value into its hash fields. The value must serialize as a struct.
///
/// The schema's `Deserialize` is consulted too: fields that it reads with `deserialize_any`
/// are stored as JSON (see [`super::schema::self_describing_fields`]).
pub(crate) fn encode<T: Serialize + DeserializeOwned>(
    value: &T,
) -> Result<Vec<EncodedField>, Error> {
    let self_describing = match schema_fields::<T>() {
        SchemaFields::Named(fields) => self_describing_fields::<T>(fields),
        SchemaFields::Unsupported(_) => Vec::new(),
    };
    value
        .serialize(StructEncoder {
            fields: Vec::new(),
            self_describing,
        })
        .map_err(|FieldError { field, error }| Error::Encode {
            field: field.to_owned(),
            message: error.to_string(),
        })
}

/// Collects the fields of the top-level struct. Errors carry the field they happened in.
struct StructEncoder {
    fields: Vec<EncodedField>,
    /// Fields stored as JSON because their type reads any value (`deserialize_any`).
    self_describing: Vec<&'static str>,
}

/// A codec error and the field it happened in.
#[derive(Debug)]
struct FieldError {
    field: &'static str,
    error: CodecError,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.error)
    }
}

impl std::error::Error for FieldError {}

impl ser::Error for FieldError {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        FieldError {
            field: "",
            error: CodecError::Message(msg.to_string()),
        }
    }
}

fn not_a_struct<T>() -> Result<T, FieldError> {
    Err(FieldError {
        field: "",
        error: CodecError::Message(
            "the schema value must serialize as a struct with named fields".into(),
        ),
    })
}

impl SerializeStruct for StructEncoder {
    type Ok = Vec<EncodedField>;
    type Error = FieldError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), FieldError> {
        let as_json = self.self_describing.contains(&key);
        let encoded =
            encode_field(value, as_json).map_err(|error| FieldError { field: key, error })?;
        self.fields.push((key, encoded));
        Ok(())
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), FieldError> {
        self.fields.push((key, FieldValue::Skipped));
        Ok(())
    }

    fn end(self) -> Result<Vec<EncodedField>, FieldError> {
        Ok(self.fields)
    }
}

/// Encodes one field value: plain text where the table in `codec` says so, else JSON;
/// `as_json` for a type that reads any value, which gets JSON for everything but `None`.
pub(super) fn encode_field<T: Serialize + ?Sized>(
    value: &T,
    as_json: bool,
) -> Result<FieldValue, CodecError> {
    let mut out = Vec::new();
    match value.serialize(FieldEncoder {
        out: &mut out,
        inside_some: false,
        as_json,
    }) {
        Ok(Written::Text) => Ok(FieldValue::Text(out)),
        Ok(Written::Null) => Ok(FieldValue::Null),
        Err(CodecError::NeedsJson) => Ok(FieldValue::Text(serde_json::to_vec(value)?)),
        Err(error) => Err(error),
    }
}

/// What [`FieldEncoder`] produced.
enum Written {
    Text,
    Null,
}

/// Writes scalars as text; answers [`CodecError::NeedsJson`] for everything stored as JSON,
/// before writing anything, so that the caller can start over with `serde_json`.
struct FieldEncoder<'a> {
    out: &'a mut Vec<u8>,
    /// Under a `Some`, a further `Option` is written as an [`OptionChain`], so that
    /// `Some(None)` and `Some(Some(None))` stay distinct.
    inside_some: bool,
    /// Everything but the top-level `None` goes to JSON.
    as_json: bool,
}

impl FieldEncoder<'_> {
    fn text(self, text: &[u8]) -> Result<Written, CodecError> {
        if self.as_json {
            return Err(CodecError::NeedsJson);
        }
        self.out.extend_from_slice(text);
        Ok(Written::Text)
    }

    fn display(self, value: impl std::fmt::Display) -> Result<Written, CodecError> {
        if self.as_json {
            return Err(CodecError::NeedsJson);
        }
        write!(self.out, "{value}").map_err(|error| CodecError::Message(error.to_string()))?;
        Ok(Written::Text)
    }

    /// Finite floats as serde_json writes them (the shortest text that parses back to the
    /// same value); `NaN`, `inf`, `-inf` as Rust displays and parses them.
    fn float<F: Serialize + std::fmt::Display>(
        self,
        value: F,
        finite: bool,
    ) -> Result<Written, CodecError> {
        if self.as_json {
            return Err(CodecError::NeedsJson);
        }
        if finite {
            serde_json::to_writer(self.out, &value)?;
            Ok(Written::Text)
        } else {
            self.display(value)
        }
    }
}

macro_rules! display_scalars {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, value: $ty) -> Result<Written, CodecError> { self.display(value) })*
    };
}

macro_rules! as_json {
    ($($method:ident($($arg:ty),*) -> $ret:ty),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ret, CodecError> { Err(CodecError::NeedsJson) })*
    };
}

impl ser::Serializer for FieldEncoder<'_> {
    type Ok = Written;
    type Error = CodecError;
    type SerializeSeq = Impossible<Written, CodecError>;
    type SerializeTuple = Impossible<Written, CodecError>;
    type SerializeTupleStruct = Impossible<Written, CodecError>;
    type SerializeTupleVariant = Impossible<Written, CodecError>;
    type SerializeMap = Impossible<Written, CodecError>;
    type SerializeStruct = Impossible<Written, CodecError>;
    type SerializeStructVariant = Impossible<Written, CodecError>;

    display_scalars! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char,
    }

    fn serialize_f32(self, value: f32) -> Result<Written, CodecError> {
        self.float(value, value.is_finite())
    }

    fn serialize_f64(self, value: f64) -> Result<Written, CodecError> {
        self.float(value, value.is_finite())
    }

    fn serialize_str(self, value: &str) -> Result<Written, CodecError> {
        self.text(value.as_bytes())
    }

    fn serialize_none(self) -> Result<Written, CodecError> {
        if self.inside_some {
            self.out.extend_from_slice(b"null");
            return Ok(Written::Text);
        }
        Ok(Written::Null)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Written, CodecError> {
        if self.inside_some {
            self.out.push(b'[');
            write_option_chain(self.out, value)?;
            self.out.push(b']');
            return Ok(Written::Text);
        }
        value.serialize(FieldEncoder {
            out: self.out,
            inside_some: true,
            as_json: self.as_json,
        })
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Written, CodecError> {
        self.text(variant.as_bytes())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Written, CodecError> {
        value.serialize(self)
    }

    as_json! {
        serialize_bytes(&[u8]) -> Written,
        serialize_unit() -> Written,
        serialize_unit_struct(&'static str) -> Written,
        serialize_seq(Option<usize>) -> Self::SerializeSeq,
        serialize_tuple(usize) -> Self::SerializeTuple,
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct,
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant,
        serialize_map(Option<usize>) -> Self::SerializeMap,
        serialize_struct(&'static str, usize) -> Self::SerializeStruct,
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant,
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Written, CodecError> {
        Err(CodecError::NeedsJson)
    }
}

/// Writes a value found under `Some(…)` inside a `Some`: `None` as `null`, `Some(x)` as
/// `[x]` (recursively), anything else as JSON. JSON alone writes `Some(None)` and `None`
/// both as `null`; this keeps every level of an `Option<Option<Option<T>>>`.
fn write_option_chain<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), CodecError> {
    match value.serialize(OptionChain { out: &mut *out }) {
        Err(CodecError::NeedsJson) => Ok(serde_json::to_writer(out, value)?),
        other => other,
    }
}

/// See [`write_option_chain`]: handles the `Option` layers, answers
/// [`CodecError::NeedsJson`] (before writing anything) for every other shape.
struct OptionChain<'a> {
    out: &'a mut Vec<u8>,
}

macro_rules! chain_as_json {
    ($($method:ident($($arg:ty),*) -> $ret:ty),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ret, CodecError> { Err(CodecError::NeedsJson) })*
    };
}

impl ser::Serializer for OptionChain<'_> {
    type Ok = ();
    type Error = CodecError;
    type SerializeSeq = Impossible<(), CodecError>;
    type SerializeTuple = Impossible<(), CodecError>;
    type SerializeTupleStruct = Impossible<(), CodecError>;
    type SerializeTupleVariant = Impossible<(), CodecError>;
    type SerializeMap = Impossible<(), CodecError>;
    type SerializeStruct = Impossible<(), CodecError>;
    type SerializeStructVariant = Impossible<(), CodecError>;

    fn serialize_none(self) -> Result<(), CodecError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CodecError> {
        self.out.push(b'[');
        write_option_chain(self.out, value)?;
        self.out.push(b']');
        Ok(())
    }

    chain_as_json! {
        serialize_bool(bool) -> (), serialize_i8(i8) -> (), serialize_i16(i16) -> (),
        serialize_i32(i32) -> (), serialize_i64(i64) -> (), serialize_i128(i128) -> (),
        serialize_u8(u8) -> (), serialize_u16(u16) -> (), serialize_u32(u32) -> (),
        serialize_u64(u64) -> (), serialize_u128(u128) -> (), serialize_f32(f32) -> (),
        serialize_f64(f64) -> (), serialize_char(char) -> (), serialize_str(&str) -> (),
        serialize_bytes(&[u8]) -> (), serialize_unit() -> (),
        serialize_unit_struct(&'static str) -> (),
        serialize_unit_variant(&'static str, u32, &'static str) -> (),
        serialize_seq(Option<usize>) -> Self::SerializeSeq,
        serialize_tuple(usize) -> Self::SerializeTuple,
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct,
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant,
        serialize_map(Option<usize>) -> Self::SerializeMap,
        serialize_struct(&'static str, usize) -> Self::SerializeStruct,
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant,
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), CodecError> {
        Err(CodecError::NeedsJson)
    }
}

/// Accepts only a struct at the top: a schema is a set of named fields.
impl ser::Serializer for StructEncoder {
    type Ok = Vec<EncodedField>;
    type Error = FieldError;
    type SerializeSeq = Impossible<Self::Ok, FieldError>;
    type SerializeTuple = Impossible<Self::Ok, FieldError>;
    type SerializeTupleStruct = Impossible<Self::Ok, FieldError>;
    type SerializeTupleVariant = Impossible<Self::Ok, FieldError>;
    type SerializeMap = Impossible<Self::Ok, FieldError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<Self::Ok, FieldError>;

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Self, FieldError> {
        Ok(StructEncoder {
            fields: Vec::with_capacity(len),
            self_describing: self.self_describing,
        })
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Self::Ok, FieldError> {
        value.serialize(self)
    }

    fn serialize_bool(self, _: bool) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_i8(self, _: i8) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_i16(self, _: i16) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_i32(self, _: i32) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_i64(self, _: i64) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_u8(self, _: u8) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_u16(self, _: u16) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_u32(self, _: u32) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_u64(self, _: u64) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_f32(self, _: f32) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_f64(self, _: f64) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_char(self, _: char) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_str(self, _: &str) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_none(self) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_unit(self) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Self::Ok, FieldError> {
        not_a_struct()
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, FieldError> {
        not_a_struct()
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, FieldError> {
        not_a_struct()
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, FieldError> {
        not_a_struct()
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, FieldError> {
        not_a_struct()
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, FieldError> {
        not_a_struct()
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, FieldError> {
        not_a_struct()
    }
}
