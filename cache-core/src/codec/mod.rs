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
//! | anything else (structs, sequences, maps, data-carrying variants, `Some(None)`) | JSON |
//! | `None` | no field; its name is listed in the library's field `__meta` (`null:avatar,bio`) |
//! | a field skipped by `skip_serializing_if` | no field; listed in `__meta` (`skip:tags`), read back as missing |
//!
//! So every stored value is UTF-8 text any client can read, and a reader that does not know
//! the library sees a `None` as an absent field, which is what most hash readers expect.
//!
//! Decoding is driven by the schema's `Deserialize`: the type asks for an `i64` and the text is
//! parsed as one, so nothing about the type has to be stored next to the value.

mod de;
mod schema;
mod ser;

pub(crate) use de::{decode, Stored};
pub(crate) use schema::schema_field_names;
pub(crate) use ser::{encode, EncodedField};

/// [`decode`] for one schema type, as a plain function pointer.
pub(crate) type DecodeFn<S> =
    fn(&'static [&'static str], &mut dyn Iterator<Item = Stored<'_>>) -> Result<S, CodecError>;

/// The library's hash field holding the entry's state: which fields are `None` or skipped,
/// the stamp of its last invalidation, a cached absence, a loader's lease, tag registration.
pub(crate) const META_FIELD: &str = "__meta";

/// One schema field as stored, or as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldValue {
    /// The encoded text.
    Text(Vec<u8>),
    /// `None`: no hash field, listed in `__meta`.
    Null,
    /// Skipped by `skip_serializing_if`: no hash field, listed in `__meta`. Decoded as a
    /// missing field, so that `#[serde(default)]` applies.
    Skipped,
}

impl FieldValue {
    /// The decoder's view of this value.
    pub(crate) fn as_stored(&mut self) -> Stored<'_> {
        match self {
            FieldValue::Text(bytes) => Stored::Text(bytes),
            FieldValue::Null => Stored::Null,
            FieldValue::Skipped => Stored::Skipped,
        }
    }

    /// The value as a whole number, if it is one (a write-through's version field).
    pub(crate) fn whole_number(&self) -> Option<u64> {
        match self {
            FieldValue::Text(text) => std::str::from_utf8(text).ok()?.parse().ok(),
            FieldValue::Null | FieldValue::Skipped => None,
        }
    }
}

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
