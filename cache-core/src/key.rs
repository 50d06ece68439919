//! Entry keys: `{namespace}:{prefix}:{key}`, the key value's `Display` text verbatim (each
//! part of a composite key escaped: [`KeySegment`]).
//!
//! Neither namespace nor prefix may contain `:`, so the first one or two colons are always
//! separators and keys of different prefixes within one namespace can never collide, whatever
//! the key text holds (colons, `*`, spaces, newlines, any length: Redis keys are binary-safe).
//!
//! The library's own keys live under `__cache:{namespace}:` (`__cache::` without one): no
//! entry key can be one of them, because neither a namespace nor a prefix may start with
//! `__`. One pair of entry keys can still be equal: a handle without namespace using prefix
//! `shop` and key `user:1`, and a handle with namespace `shop` using prefix `user` and key
//! `1`. The entry records the namespace that filled it (`by:` in `__meta`), and an entry of
//! another namespace is a miss that the fill replaces, so the two never mix or see each
//! other's data.
//!
//! One key the library writes lives among a namespace's entries instead: the near cache's
//! probe (`{namespace}:__near-probe`, [`near_probe_key`]), since its listener tracks only the
//! entry prefix and the tag stamps; no entry key can be it either (`__` starts no prefix).
//!
//! On a Redis Cluster the library's keys carry hash tags (`{…}`) that put each where a
//! script needs it: a tag's stamp beside its member set, and a clock beside the entries of
//! each slot (`slot_clock_key`). Entry keys are never changed.

use std::fmt::{Display, Write as _};

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

/// One part of a composite key (`key = "{org}:{name}"`), written as the macros write it:
/// its `Display` text with `%` as `%25` and `:` as `%3A`. The parts of a composite key are
/// separated by text holding a `:` (the macros refuse others), which no escaped part holds,
/// so no two tuples of values make one key: `("a:b", "c")` is `a%3Ab:c`, `("a", "b:c")` is
/// `a:b%3Ac`. A key of one value is that value's text as it is.
///
/// For the direct API to name an entry that a function with a composite key caches:
///
/// ```
/// use cache_core::KeySegment;
/// let (org, name) = ("acme:eu", "ada");
/// let key = format!("{}:{}", KeySegment(org), KeySegment(name));
/// assert_eq!(key, "acme%3Aeu:ada");
/// // cache.get::<Member>("member", &key) reads what
/// // #[cached_get(prefix = "member", key = "{org}:{name}", …)] cached.
/// ```
#[derive(Debug, Clone, Copy)]
pub struct KeySegment<T>(pub T);

impl<T: Display> Display for KeySegment<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(Escaping(formatter), "{}", self.0)
    }
}

/// Writes through to a formatter with `%` and `:` escaped.
struct Escaping<'a, 'b>(&'a mut std::fmt::Formatter<'b>);

impl std::fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, mut text: &str) -> std::fmt::Result {
        while let Some(at) = text.find(['%', ':']) {
            self.0.write_str(&text[..at])?;
            self.0.write_str(if text.as_bytes()[at] == b'%' {
                "%25"
            } else {
                "%3A"
            })?;
            text = &text[at + 1..];
        }
        self.0.write_str(text)
    }
}

/// Checks a prefix or namespace: non-empty, no `:`, not starting with `__` (the library's
/// own keys start with `__cache:`), and no whitespace (a namespace is written into `__meta`,
/// whose tokens are separated by spaces). A namespace may not hold `{` or `}` either: the
/// library's keys carry a Redis Cluster hash tag after it, which a brace before would move.
///
/// The macros check a prefix by the same rule at compile time (`prefix_problem` in
/// `cache-macros/src/valid.rs`, which cannot call this): change both together.
pub(crate) fn check_segment(what: &'static str, segment: &str) -> Result<(), Error> {
    if what == "namespace" && segment.contains(['{', '}']) {
        return Err(Error::Config(format!(
            "{what} `{segment}` must not contain `{{` or `}}`"
        )));
    }
    if segment.is_empty() {
        return Err(Error::Config(format!("{what} must not be empty")));
    }
    if segment.contains(':') {
        return Err(Error::Config(format!(
            "{what} `{segment}` must not contain `:`"
        )));
    }
    if segment.contains(char::is_whitespace) {
        return Err(Error::Config(format!(
            "{what} `{segment:?}` must not contain whitespace"
        )));
    }
    if segment.starts_with("__") {
        return Err(Error::Config(format!(
            "{what} `{segment}` must not start with `__`"
        )));
    }
    Ok(())
}

/// The key of the namespace's clock: a hash holding the last stamp given (`now`), the stamp
/// at which the clock was (re)made (`floor`), and the last stamp of each bucket of entries.
pub(crate) fn clock_key(namespace: Option<&str>) -> String {
    library_key(namespace, "clock", "")
}

/// The Redis keys of one tag: the set of entries registered under it, and its last stamp.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TagKeys {
    pub(crate) members: String,
    pub(crate) stamp: String,
}

/// The keys of one tag: its member set and its stamp, `…:tag{:<tag>}` and `…:stamp{:<tag>}`.
/// The braces are a Redis Cluster hash tag: both keys hash the text from the `:` to the
/// tag's first `}` (never empty), so they share a slot and one script can update both.
pub(crate) fn tag_keys(namespace: Option<&str>, tag: &str) -> TagKeys {
    TagKeys {
        members: library_key(namespace, "tag{:", tag) + "}",
        stamp: tag_stamp_key(namespace, tag),
    }
}

/// The key of a tag's last stamp alone (what reads check).
pub(crate) fn tag_stamp_key(namespace: Option<&str>, tag: &str) -> String {
    tag_stamp_prefix(namespace) + tag + "}"
}

/// What every tag stamp key of the namespace starts with, `…:stamp{:`: the near cache's
/// listener tracks it, and knows a tag's stamp by it ([`stamped_tag`]).
pub(crate) fn tag_stamp_prefix(namespace: Option<&str>) -> String {
    library_key(namespace, "stamp{:", "")
}

/// The tag whose stamp `key` is, given its namespace's [`tag_stamp_prefix`]; `None` for any
/// other key (a member set, a clock, an entry, another namespace's stamp).
pub(crate) fn stamped_tag<'k>(stamp_prefix: &str, key: &'k str) -> Option<&'k str> {
    key.strip_prefix(stamp_prefix)?.strip_suffix('}')
}

/// What every entry key of the namespace starts with, `{namespace}:` (empty without one:
/// then an entry key can start with anything).
pub(crate) fn entry_prefix(namespace: Option<&str>) -> String {
    namespace.map(|ns| format!("{ns}:")).unwrap_or_default()
}

/// Whether `key` is one of the library's own keys, of any namespace (no entry key is).
pub(crate) fn is_library_key(key: &str) -> bool {
    key.starts_with(LIBRARY_ROOT)
}

/// The key the near cache's listener writes to learn that Redis' pushes reach it. Under the
/// entry prefix, which its tracking covers, where no entry can be (`__` starts no prefix the
/// library writes for itself there, and a user's prefix would need the same name); without
/// a namespace, among the library's keys (tracking covers every key then).
pub(crate) fn near_probe_key(namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) => format!("{namespace}:__near-probe"),
        None => library_key(None, "near-probe", ""),
    }
}

/// The near probe key (`probe`, [`near_probe_key`]) written to the primary of `slot` on a
/// Redis Cluster: `<probe>{<slot tag>}`.
pub(crate) fn slot_probe_key(probe: &str, slot: u16) -> String {
    in_slot(probe, slot)
}

/// The slot Redis Cluster gives `key`: CRC16 (XMODEM) of its hash tag (the text between the
/// first `{` and the next `}`, if not empty) or of the whole key, modulo 16384.
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&byte| byte == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&byte| byte == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % SLOTS
}

/// Redis Cluster's number of hash slots.
pub(crate) const SLOTS: u16 = 16384;

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)]
    })
}

/// CRC16 (XMODEM, polynomial 0x1021) of each byte value, made at compile time: a byte at a
/// time instead of a bit at a time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

/// A short text whose slot is `slot`: a hash tag that places a key in the slot of another.
/// The table (16384 texts of 1 to 5 characters: the first hex counter that lands in each
/// slot, so that every process and version names a slot's clock alike) is made once, on the
/// first use: 314 737 candidates, written into a buffer and hashed without allocating (a few
/// ms unoptimized; it ran inside a first operation's timeout when it took 300 ms on a busy
/// machine, and the operation failed). A cluster store makes it when it is built
/// ([`warm_slot_tags`]), before any operation can wait for it.
pub(crate) fn slot_tag(slot: u16) -> &'static str {
    &slot_tags()[usize::from(slot % SLOTS)]
}

/// Makes the table of [`slot_tag`] now, if not made yet.
pub(crate) fn warm_slot_tags() {
    slot_tags();
}

fn slot_tags() -> &'static [Box<str>] {
    static TAGS: std::sync::OnceLock<Vec<Box<str>>> = std::sync::OnceLock::new();
    TAGS.get_or_init(|| {
        let mut candidates = vec![0u32; usize::from(SLOTS)];
        let mut found = vec![false; usize::from(SLOTS)];
        let mut missing = usize::from(SLOTS);
        let mut candidate = 0u32;
        let mut digits = [0u8; 8];
        while missing > 0 {
            let at = usize::from(slot_of(hex_digits(candidate, &mut digits)));
            if !found[at] {
                found[at] = true;
                candidates[at] = candidate;
                missing -= 1;
            }
            candidate += 1;
        }
        candidates
            .iter()
            .map(|candidate| format!("{candidate:x}").into_boxed_str())
            .collect()
    })
}

/// `value` in lowercase hex, as `format!("{value:x}")` writes it, into `buffer`.
fn hex_digits(mut value: u32, buffer: &mut [u8; 8]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
        if value == 0 {
            return &buffer[start..];
        }
    }
}

/// The clock of the entries in `slot` on a Redis Cluster, `<namespace clock>{<slot tag>}`:
/// a fill or an invalidation of an entry updates it in the same script as the entry.
pub(crate) fn slot_clock_key(namespace_clock: &str, slot: u16) -> String {
    in_slot(namespace_clock, slot)
}

/// `key` with the hash tag of `slot` appended: a key that lives in `slot`.
fn in_slot(key: &str, slot: u16) -> String {
    format!("{key}{{{}}}", slot_tag(slot))
}

/// What every library key starts with, whatever its namespace.
const LIBRARY_ROOT: &str = "__cache:";

fn library_key(namespace: Option<&str>, kind: &str, name: &str) -> String {
    format!(
        "{LIBRARY_ROOT}{}:{kind}{name}",
        namespace.unwrap_or_default()
    )
}

/// How many buckets the clock hash keeps: the stamp of an entry's last invalidation survives
/// there when the entry's own tombstone is evicted, shared with the other keys of its bucket.
pub(crate) const CLOCK_BUCKETS: u32 = 1024;

/// How many buckets each slot's clock keeps on a Redis Cluster: 16384 clocks of 64 (a million
/// in all, fewer collisions than one clock of 1024) stay small hashes (listpacks).
pub(crate) const SLOT_CLOCK_BUCKETS: u32 = 64;

/// The clock hash field of the bucket holding `key` among `buckets` (`b0` … ). A stable
/// function of the key's bytes, so every process agrees.
pub(crate) fn bucket_field(key: &str, buckets: u32) -> String {
    let bucket = key
        .bytes()
        .fold(0u32, |hash, byte| (hash * 31 + u32::from(byte)) % buckets);
    format!("b{bucket}")
}

/// Tag names as `__meta` lists them: comma-separated, with `%`, `,` and bytes outside
/// printable ASCII (spaces included) percent-encoded, so any tag text fits one token.
pub(crate) fn encode_tag(tag: &str, out: &mut String) {
    // An empty tag would vanish between two commas: it is a lone `%`.
    if tag.is_empty() {
        out.push('%');
    }
    for byte in tag.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' && byte != b',' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The reverse of [`encode_tag`]; `None` for text it cannot have written.
pub(crate) fn decode_tag(encoded: &[u8]) -> Option<String> {
    if encoded == b"%" {
        return Some(String::new());
    }
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the parts back from a key made with `separator` (which holds a `:`).
    fn parts_of(key: &str, separator: &str, count: usize) -> Vec<String> {
        let colon = separator.find(':').unwrap();
        let mut parts = Vec::new();
        let mut rest = key;
        for index in 0..count {
            let end = if index + 1 == count {
                rest.len()
            } else {
                rest.find(':').unwrap() - colon
            };
            let escaped = &rest[..end];
            parts.push(escaped.replace("%3A", ":").replace("%25", "%"));
            rest = rest.get(end + separator.len()..).unwrap_or_default();
        }
        parts
    }

    #[test]
    fn composite_key_parts_are_escaped() {
        let key = |a: &str, b: &str| format!("{}:{}", KeySegment(a), KeySegment(b));
        assert_eq!(key("a:b", "c"), "a%3Ab:c");
        assert_eq!(key("a", "b:c"), "a:b%3Ac");
        assert_eq!(key("50%", "x"), "50%25:x");
        assert_eq!(key("%3A", ""), "%253A:");
        assert_eq!(KeySegment(42).to_string(), "42");
        assert_ne!(key("a%3Ab", "c"), key("a:b", "c"));
    }

    proptest::proptest! {
        /// Any texts (colons, braces, percent signs, unicode), any separator holding a
        /// colon: the parts read back from the key are the parts, so no two tuples share
        /// a key.
        #[test]
        fn composite_keys_are_injective(
            parts in proptest::collection::vec("[a-z:{}%3A5é ]{0,6}", 2..4),
            separator in proptest::sample::select(vec![":", "::", "-:-", ":x", "y:"]),
        ) {
            let key = parts
                .iter()
                .map(|part| KeySegment(part).to_string())
                .collect::<Vec<_>>()
                .join(separator);
            proptest::prop_assert_eq!(parts_of(&key, separator, parts.len()), parts);
        }
    }

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
        assert!(check_segment("namespace", "a b").is_err());
    }

    /// One sample of each class of prefix refused, the same as the macros' test
    /// `prefixes_refused_as_the_runtime_refuses_them` in `cache-macros/src/valid.rs`.
    #[test]
    fn prefixes_refused_as_the_macros_refuse_them() {
        for refused in ["", "a:b", "a b", "a\tb", "a\u{a0}b", "a\nb", "__x"] {
            assert!(check_segment("prefix", refused).is_err(), "{refused:?}");
        }
        for accepted in ["user", "_x", "a_b", "a-b.c", "{x}", "é"] {
            assert!(check_segment("prefix", accepted).is_ok(), "{accepted:?}");
        }
    }

    #[test]
    fn library_keys_cannot_be_entry_keys() {
        assert_eq!(clock_key(None), "__cache::clock");
        assert_eq!(clock_key(Some("shop")), "__cache:shop:clock");
        assert_eq!(
            tag_keys(Some("shop"), "user:1").stamp,
            "__cache:shop:stamp{:user:1}"
        );
        // The key text of an entry of prefix `shop` cannot reach the namespace's clock.
        assert_ne!(entry_key(None, "shop", "__clock"), clock_key(Some("shop")));
    }

    /// The keys the near cache tracks, recognises and writes: the same strings as always,
    /// and a tag's stamp known as such whatever the tag holds.
    #[test]
    fn the_near_cache_tracks_and_recognises_the_keys_the_library_writes() {
        assert_eq!(entry_prefix(Some("shop")), "shop:");
        assert_eq!(entry_prefix(None), "");
        assert_eq!(tag_stamp_prefix(Some("shop")), "__cache:shop:stamp{:");
        assert_eq!(tag_stamp_prefix(None), "__cache::stamp{:");
        for namespace in [Some("shop"), None] {
            let prefix = tag_stamp_prefix(namespace);
            for tag in ["user:1", "", "}", "a}b", "{x}"] {
                let keys = tag_keys(namespace, tag);
                assert_eq!(stamped_tag(&prefix, &keys.stamp), Some(tag), "{tag:?}");
                assert_eq!(stamped_tag(&prefix, &keys.members), None, "{tag:?}");
                assert!(is_library_key(&keys.stamp) && is_library_key(&keys.members));
            }
            assert_eq!(stamped_tag(&prefix, &clock_key(namespace)), None);
            assert!(is_library_key(&clock_key(namespace)));
            let entry = entry_key(namespace, "user", "1");
            assert!(!is_library_key(&entry) && entry.starts_with(&entry_prefix(namespace)));
        }
        assert_eq!(
            stamped_tag(
                &tag_stamp_prefix(Some("shop")),
                &tag_stamp_key(Some("shop2"), "t")
            ),
            None,
            "another namespace's stamp"
        );
        assert_eq!(near_probe_key(Some("shop")), "shop:__near-probe");
        assert!(near_probe_key(Some("shop")).starts_with(&entry_prefix(Some("shop"))));
        assert_eq!(near_probe_key(None), "__cache::near-probe");
        assert_eq!(
            slot_probe_key("shop:__near-probe", 0),
            "shop:__near-probe{265b}"
        );
        for slot in [0, 1, 5_000, SLOTS - 1] {
            let probe = slot_probe_key(&near_probe_key(Some("shop")), slot);
            assert_eq!(slot_of(probe.as_bytes()), slot);
        }
    }

    #[test]
    fn tags_survive_their_encoding_in_meta() {
        for tag in ["user:1", "a b,c%d", "naïve\nline", "", "%41"] {
            let mut encoded = String::new();
            encode_tag(tag, &mut encoded);
            assert!(!encoded.contains([' ', ',']), "{encoded}");
            assert_eq!(decode_tag(encoded.as_bytes()).as_deref(), Some(tag));
        }
        assert_eq!(bucket_field("user:1", 1024), bucket_field("user:1", 1024));
        assert!(bucket_field("x", 64).starts_with('b'));
    }

    #[test]
    fn slots_are_redis_cluster_slots() {
        // The value Redis' cluster specification gives, and its hash tag rules.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        for key in [
            "user:1",
            "shop:user:{42}",
            "a{}b",
            "{}",
            "x{y}z{w}",
            "",
            "é{ü}",
        ] {
            assert_eq!(
                Some(redis::cluster_routing::Slot::for_key(key)),
                redis::cluster_routing::Slot::new(slot_of(key.as_bytes())),
                "{key}"
            );
        }
        assert_eq!(slot_of(b"shop:user:{42}"), slot_of(b"42"));
    }

    /// Slot clocks keep their names across versions: each slot's tag is the first hex
    /// counter, as `format!` writes it, whose CRC lands there.
    #[test]
    fn slot_tags_are_the_first_hex_counter_of_each_slot() {
        let mut first = vec![None; usize::from(SLOTS)];
        for candidate in 0u32..314_737 {
            let text = format!("{candidate:x}");
            let mut digits = [0u8; 8];
            assert_eq!(hex_digits(candidate, &mut digits), text.as_bytes());
            let slot = usize::from(slot_of(text.as_bytes()));
            first[slot].get_or_insert(text);
        }
        for (slot, text) in first.iter().enumerate() {
            let slot = u16::try_from(slot).unwrap();
            assert_eq!(Some(slot_tag(slot)), text.as_deref(), "slot {slot}");
        }
        assert_eq!(slot_tag(0), "265b");
    }

    #[test]
    fn library_keys_share_the_slots_they_must() {
        for tag in ["user:1", "", "}", "a}b", "{x}"] {
            let keys = tag_keys(Some("shop"), tag);
            assert_eq!(
                slot_of(keys.members.as_bytes()),
                slot_of(keys.stamp.as_bytes()),
                "{tag:?}"
            );
        }
        for slot in [0, 1, 5_000, SLOTS - 1] {
            assert_eq!(
                slot_of(slot_clock_key("__cache:shop:clock", slot).as_bytes()),
                slot
            );
        }
        assert!(check_segment("namespace", "a{b").is_err());
    }
}
