//! Entry keys: `{namespace}:{prefix}:{key}`, the key value's `Display` text verbatim.
//!
//! Neither namespace nor prefix may contain `:`, so the first one or two colons are always
//! separators and keys of different prefixes or namespaces can never collide, whatever the
//! key text holds (colons, `*`, spaces, newlines, any length: Redis keys are binary-safe).

use std::fmt::{Display, Write as _};

use crate::store::TagKeys;
use crate::Error;

/// Builds the Redis key of one entry.
pub(crate) fn entry_key(
    namespace: Option<&str>,
    prefix: &str,
    key: &(impl Display + ?Sized),
) -> String {
    let mut text =
        String::with_capacity(namespace.map_or(0, |ns| ns.len() + 1) + prefix.len() + 24);
    if let Some(namespace) = namespace {
        text.push_str(namespace);
        text.push(':');
    }
    text.push_str(prefix);
    text.push(':');
    // Writing into a String cannot fail; a `Display` impl that errors leaves a partial key,
    // which is still a key of its own.
    let _ = write!(text, "{key}");
    text
}

/// Checks a prefix or namespace: non-empty, no `:`, not starting with `__` (the library's
/// own keys: `__clock`, `__tag:…`, `__stamp:…`).
pub(crate) fn check_segment(what: &'static str, segment: &str) -> Result<(), Error> {
    if segment.is_empty() {
        return Err(Error::Config(format!("{what} must not be empty")));
    }
    if segment.contains(':') {
        return Err(Error::Config(format!(
            "{what} `{segment}` must not contain `:`"
        )));
    }
    if segment.starts_with("__") {
        return Err(Error::Config(format!(
            "{what} `{segment}` must not start with `__`"
        )));
    }
    Ok(())
}

/// The key of the namespace's invalidation clock.
pub(crate) fn clock_key(namespace: Option<&str>) -> String {
    library_key(namespace, "__clock", "")
}

/// The keys of one tag: its member set and its stamp.
pub(crate) fn tag_keys(namespace: Option<&str>, tag: &str) -> TagKeys {
    TagKeys {
        members: library_key(namespace, "__tag:", tag),
        stamp: library_key(namespace, "__stamp:", tag),
    }
}

fn library_key(namespace: Option<&str>, kind: &str, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{namespace}:{kind}{name}"),
        None => format!("{kind}{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespace_prefix_and_verbatim_display() {
        assert_eq!(entry_key(None, "user", &42), "user:42");
        assert_eq!(
            entry_key(Some("shop"), "user", "alice@example.com"),
            "shop:user:alice@example.com"
        );
        assert_eq!(entry_key(None, "user", ""), "user:");
        assert_eq!(entry_key(None, "user", "a:b *\n"), "user:a:b *\n");
    }

    #[test]
    fn segments_reject_colons_and_emptiness() {
        assert!(check_segment("prefix", "user").is_ok());
        assert!(check_segment("prefix", "us:er").is_err());
        assert!(check_segment("namespace", "").is_err());
        assert!(check_segment("prefix", "__tag").is_err());
    }
}
