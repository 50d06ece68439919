//! Serde structs ↔ Redis hash fields.
//!
//! Each field of the schema struct is one hash field, encoded so that `redis-cli HGETALL` is
//! readable and another service can read it:
//!
//! | value | stored as |
//! |---|---|
//! | `String`, `char`, dates and anything serde writes as a string | the text, verbatim |
//! | integers, floats | decimal (`NaN`, `inf`, `-inf` for the non-finite floats) |
//! | `bool` | `true` / `false` |
//! | unit enum variant | its name (`Admin`) |
//! | `None` | the single byte `0xFF`, which no UTF-8 string and no number can be |
//! | a field skipped by `skip_serializing_if` | the single byte `0xFE`; read back as absent |
//! | anything else (structs, sequences, maps, data-carrying variants, `Some(None)`) | JSON |
//!
//! Decoding is driven by the schema's `Deserialize`: the type asks for an `i64` and the text is
//! parsed as one, so nothing about the type has to be stored next to the value.

mod de;
mod schema;
mod ser;

pub(crate) use de::decode;
pub(crate) use schema::{schema_fields, SchemaFields};
pub(crate) use ser::{encode, EncodedField};

/// How `None` is stored: `0xFF` never occurs in UTF-8 text, so it cannot collide with a string.
pub(crate) const NONE_MARKER: &[u8] = b"\xff";
/// How a field skipped by `skip_serializing_if` is stored: present (so the entry counts as
/// complete) but handed to serde as missing, so `#[serde(default)]` and `Option` apply.
pub(crate) const SKIPPED_MARKER: &[u8] = b"\xfe";

/// Errors inside the codec; converted to [`crate::Error`] (or a miss) at its edge.
#[derive(Debug)]
pub(crate) enum CodecError {
    /// The value has a shape that is stored as JSON; the caller re-encodes the whole field.
    NeedsJson,
    /// Anything serde or the parser reported.
    Message(String),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::NeedsJson => f.write_str("value is stored as JSON"),
            CodecError::Message(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for CodecError {}

impl serde::ser::Error for CodecError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        CodecError::Message(msg.to_string())
    }
}

impl serde::de::Error for CodecError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        CodecError::Message(msg.to_string())
    }
}

impl From<serde_json::Error> for CodecError {
    fn from(error: serde_json::Error) -> Self {
        CodecError::Message(error.to_string())
    }
}

#[cfg(test)]
mod tests;
