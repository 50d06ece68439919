//! `__meta`: the library's state of an entry, in one field of the entry's hash, so that a hit
//! reads the schema's fields plus one. This is its one description; the Lua scripts write and
//! read it (`lua_meta!` in `redis/scripts.rs`), [`Meta::parse`] reads it on every hit, and the
//! in-process store keeps the same state in a struct (`memory.rs`). The tests below feed the
//! same cases to all three.
//!
//! The value is space-separated tokens, written in this order, each at most once:
//!
//! | token | meaning |
//! |---|---|
//! | `by:<namespace>` | filled by the library for this namespace (empty without one); an entry without this handle's `by:` is never a hit |
//! | `inv:<stamp>` | the entry's last invalidation, a stamp of the namespace's clock (µs): a tombstone when nothing else is there |
//! | `none` | a cached absence (`cache_none`) |
//! | `null:<a,b>` | fields that are `None`, not stored (sorted) |
//! | `skip:<c>` | fields skipped by `skip_serializing_if`, not stored (sorted) |
//! | `lease:<token>@<deadline µs>` | a loader's lease on a freshly invalidated entry, live until the deadline (Redis' clock) |
//! | `tags:<born>:<t1,t2>` | registered under these tags (percent-encoded, sorted) by fills whose oldest load read the clock at `born` |
//! | `fresh:<deadline µs>` | fresh until this deadline (Redis' clock); after it the entry is an expired copy, kept for `fail_safe` but never a hit. Written only by fills of functions with `fail_safe`; an entry without it is fresh for as long as Redis keeps it |
//!
//! Unknown tokens are ignored, so that a newer version may add some.

use std::ops::Range;

use super::parse_stamp;

/// The scripts' reader and writer of `__meta` (Lua, spliced into each script that needs
/// them): `read_meta` parses it into a table, `write_meta` writes the table back in the
/// order above (or deletes the field when nothing is left); `has_data` tells an entry
/// holding values from a bare tombstone or lease.
macro_rules! lua_meta {
    () => {
        r"
local function read_meta(key)
  local meta = {null = {}, skip = {}}
  local text = redis.call('HGET', key, '__meta')
  if text then
    for token in string.gmatch(text, '%S+') do
      local name, value = string.match(token, '^(%a+):(.*)$')
      if name == 'null' or name == 'skip' then
        for field in string.gmatch(value, '[^,]+') do meta[name][field] = true end
      elseif name == 'inv' or name == 'lease' or name == 'by' or name == 'fresh' then
        meta[name] = value
      elseif name == 'tags' then
        local born, list = string.match(value, '^(%d+):(.*)$')
        if born then
          meta.born = born
          meta.tags = {}
          for tag in string.gmatch(list, '[^,]+') do meta.tags[tag] = true end
        end
      elseif token == 'none' then
        meta.none = true
      end
    end
  end
  return meta
end
local function write_meta(key, meta)
  local parts = {}
  if meta.by then parts[#parts + 1] = 'by:' .. meta.by end
  if meta.inv then parts[#parts + 1] = 'inv:' .. meta.inv end
  if meta.none then parts[#parts + 1] = 'none' end
  for _, name in ipairs({'null', 'skip'}) do
    local items = {}
    for field in pairs(meta[name]) do items[#items + 1] = field end
    if #items > 0 then
      table.sort(items)
      parts[#parts + 1] = name .. ':' .. table.concat(items, ',')
    end
  end
  if meta.lease then parts[#parts + 1] = 'lease:' .. meta.lease end
  if meta.tags then
    local items = {}
    for tag in pairs(meta.tags) do items[#items + 1] = tag end
    if #items > 0 then
      table.sort(items)
      parts[#parts + 1] = 'tags:' .. meta.born .. ':' .. table.concat(items, ',')
    end
  end
  if meta.fresh then parts[#parts + 1] = 'fresh:' .. meta.fresh end
  if #parts > 0 then
    redis.call('HSET', key, '__meta', table.concat(parts, ' '))
  else
    redis.call('HDEL', key, '__meta')
  end
end
local function has_data(key, meta)
  local stored = redis.call('HLEN', key) - redis.call('HEXISTS', key, '__meta')
  return stored > 0 or meta.none or next(meta.null) ~= nil or next(meta.skip) ~= nil
end
"
    };
}
pub(crate) use lua_meta;

/// Whether a lease `<token>@<deadline µs, Redis' clock>` is still live. Redis' clock is
/// read through this machine's: a skew between them only makes a reader wait for a dead
/// holder (bounded by `lease_wait`) or load beside a live one (a duplicate load), never
/// return anything wrong.
fn lease_is_live(lease: &[u8]) -> bool {
    let deadline = lease
        .iter()
        .rposition(|&byte| byte == b'@')
        .map_or(0, |at| parse_stamp(&lease[at + 1..]));
    deadline > now_micros()
}

/// This machine's clock in µs since the epoch, standing in for Redis' (see [`lease_is_live`]:
/// a skew moves a lease's or a freshness deadline's end by as much, nothing else).
pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// The parts of `__meta` a read needs; the lists as ranges of the text.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    pub(crate) stamp: u64,
    pub(crate) absent: bool,
    pub(crate) leased: bool,
    pub(crate) null: Range<usize>,
    pub(crate) skip: Range<usize>,
    pub(crate) owner: Option<Range<usize>>,
    pub(crate) tags: Option<Range<usize>>,
    /// `fresh:`: the deadline (µs, Redis' clock) after which the entry is an expired copy.
    pub(crate) fresh: Option<u64>,
}

impl Meta {
    pub(crate) fn parse(text: &[u8]) -> Meta {
        let mut meta = Meta::default();
        let mut start = 0;
        for token in text.split(|&byte| byte == b' ') {
            let at = start;
            start += token.len() + 1;
            match token.iter().position(|&byte| byte == b':') {
                Some(colon) => {
                    let value = at + colon + 1..at + token.len();
                    match &token[..colon] {
                        b"inv" => meta.stamp = parse_stamp(&text[value]),
                        b"null" => meta.null = value,
                        b"skip" => meta.skip = value,
                        b"lease" => meta.leased = lease_is_live(&text[value]),
                        b"by" => meta.owner = Some(value),
                        b"tags" => meta.tags = Some(value),
                        b"fresh" => meta.fresh = Some(parse_stamp(&text[value])),
                        _ => {}
                    }
                }
                None => meta.absent |= token == b"none",
            }
        }
        meta
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{lease_is_live, Meta};
    use crate::codec::FieldValue;
    use crate::store::{Fill, FillBody, Invalidation, MemoryStore, RedisStore};

    /// What a reader understands of one `__meta`, whoever reads it.
    #[derive(Debug, PartialEq, Eq)]
    struct Understood {
        by: Option<String>,
        inv: u64,
        none: bool,
        null: String,
        skip: String,
        leased: bool,
        tags: Option<String>,
        fresh: Option<u64>,
    }

    /// The cases: the text, what it means, and the text a script writes back after reading
    /// it (the same, but for unknown tokens, which are dropped).
    fn cases() -> Vec<(&'static str, Understood, &'static str)> {
        let nothing = || Understood {
            by: None,
            inv: 0,
            none: false,
            null: String::new(),
            skip: String::new(),
            leased: false,
            tags: None,
            fresh: None,
        };
        vec![
            (
                "by:shop",
                Understood {
                    by: Some("shop".into()),
                    ..nothing()
                },
                "by:shop",
            ),
            (
                "by:",
                Understood {
                    by: Some(String::new()),
                    ..nothing()
                },
                "by:",
            ),
            (
                "inv:1700000000000001",
                Understood {
                    inv: 1_700_000_000_000_001,
                    ..nothing()
                },
                "inv:1700000000000001",
            ),
            (
                "by:shop none",
                Understood {
                    by: Some("shop".into()),
                    none: true,
                    ..nothing()
                },
                "by:shop none",
            ),
            (
                "by:shop null:avatar,bio skip:nick",
                Understood {
                    by: Some("shop".into()),
                    null: "avatar,bio".into(),
                    skip: "nick".into(),
                    ..nothing()
                },
                "by:shop null:avatar,bio skip:nick",
            ),
            (
                "lease:t0k@99999999999999999",
                Understood {
                    leased: true,
                    ..nothing()
                },
                "lease:t0k@99999999999999999",
            ),
            (
                "inv:5 lease:t0k@1",
                Understood {
                    inv: 5,
                    leased: false,
                    ..nothing()
                },
                "inv:5 lease:t0k@1",
            ),
            (
                "by:shop tags:42:team%2C1,user:1",
                Understood {
                    by: Some("shop".into()),
                    tags: Some("42:team%2C1,user:1".into()),
                    ..nothing()
                },
                "by:shop tags:42:team%2C1,user:1",
            ),
            (
                "by:shop inv:7 none null:a skip:b lease:x@99999999999999999 tags:6:t",
                Understood {
                    by: Some("shop".into()),
                    inv: 7,
                    none: true,
                    null: "a".into(),
                    skip: "b".into(),
                    leased: true,
                    tags: Some("6:t".into()),
                    fresh: None,
                },
                "by:shop inv:7 none null:a skip:b lease:x@99999999999999999 tags:6:t",
            ),
            (
                "by:shop fresh:1700000000000001",
                Understood {
                    by: Some("shop".into()),
                    fresh: Some(1_700_000_000_000_001),
                    ..nothing()
                },
                "by:shop fresh:1700000000000001",
            ),
            (
                "fresh:9 by:shop tags:6:t",
                Understood {
                    by: Some("shop".into()),
                    tags: Some("6:t".into()),
                    fresh: Some(9),
                    ..nothing()
                },
                "by:shop tags:6:t fresh:9",
            ),
            (
                "by:shop later:1",
                Understood {
                    by: Some("shop".into()),
                    ..nothing()
                },
                "by:shop",
            ),
            ("", nothing(), ""),
        ]
    }

    fn rust_reads(text: &str) -> Understood {
        let meta = Meta::parse(text.as_bytes());
        let slice = |range: std::ops::Range<usize>| text[range].to_owned();
        Understood {
            by: meta.owner.map(slice),
            inv: meta.stamp,
            none: meta.absent,
            null: slice(meta.null),
            skip: slice(meta.skip),
            leased: meta.leased,
            tags: meta.tags.map(slice),
            fresh: meta.fresh,
        }
    }

    /// The scripts' reader, and writer: what `read_meta` understood, and what `write_meta`
    /// wrote back.
    const LUA_PROBE: &str = concat!(
        lua_meta!(),
        r"
redis.call('DEL', KEYS[1])
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], '__meta', ARGV[1]) end
local meta = read_meta(KEYS[1])
local function list(set)
  local items = {}
  for item in pairs(set) do items[#items + 1] = item end
  table.sort(items)
  return table.concat(items, ',')
end
write_meta(KEYS[1], meta)
local tags = ''
if meta.tags then tags = meta.born .. ':' .. list(meta.tags) end
return {meta.by or '\0', meta.inv or '', meta.none and '1' or '', list(meta.null),
  list(meta.skip), meta.lease or '', tags, redis.call('HGET', KEYS[1], '__meta') or '',
  meta.fresh or ''}
"
    );

    fn lua_reads(connection: &mut redis::Connection, text: &str) -> (Understood, String) {
        let reply: Vec<String> = redis::Script::new(LUA_PROBE)
            .key("meta-case")
            .arg(text)
            .invoke(connection)
            .expect("the probe script runs");
        let understood = Understood {
            by: (reply[0] != "\0").then(|| reply[0].clone()),
            inv: reply[1].parse().unwrap_or(0),
            none: reply[2] == "1",
            null: reply[3].clone(),
            skip: reply[4].clone(),
            leased: !reply[5].is_empty() && lease_is_live(reply[5].as_bytes()),
            tags: (!reply[6].is_empty()).then(|| reply[6].clone()),
            fresh: reply[8].parse().ok(),
        };
        (understood, reply[7].clone())
    }

    /// A private redis-server on a free loopback port, stopped on drop.
    struct Server {
        child: std::process::Child,
        port: u16,
    }

    impl Server {
        fn start() -> Server {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server on the PATH (scripts/test.sh installs it)");
            let server = Server { child, port };
            for _ in 0..200 {
                if server.client().get_connection().is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("redis-server did not start on port {port}");
        }

        fn client(&self) -> redis::Client {
            redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).expect("URL")
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn the_scripts_and_the_rust_parser_read_every_case_alike() {
        let server = Server::start();
        let mut connection = server.client().get_connection().unwrap();
        for (text, meant, written_back) in cases() {
            assert_eq!(rust_reads(text), meant, "Rust, {text:?}");
            let (understood, rewritten) = lua_reads(&mut connection, text);
            assert_eq!(understood, meant, "Lua, {text:?}");
            assert_eq!(rewritten, written_back, "Lua's write_meta of {text:?}");
        }
    }

    /// Digits (stamps, lease deadlines) differ between the stores' clocks; the rest must not.
    fn shape(text: Option<String>) -> String {
        let mut shaped = String::new();
        for ch in text.unwrap_or_default().chars() {
            if !ch.is_ascii_digit() {
                shaped.push(ch);
            } else if !shaped.ends_with('#') {
                shaped.push('#');
            }
        }
        shaped
    }

    #[tokio::test]
    async fn the_in_process_store_keeps_what_the_scripts_write() {
        let server = Server::start();
        let redis = RedisStore::new(server.client(), Duration::from_secs(2));
        let memory = MemoryStore::default();
        let mut inspect = server.client().get_connection().unwrap();
        let key = "shop:user:1";
        let clock = crate::key::clock_key(Some("shop"));
        let tags = [
            crate::key::tag_keys(Some("shop"), "team,1"),
            crate::key::tag_keys(Some("shop"), "user:1"),
        ];
        let fields = [
            ("name", FieldValue::Text(b"ada".to_vec())),
            ("avatar", FieldValue::Null),
            ("nick", FieldValue::Skipped),
        ];
        let lease_time = Duration::from_secs(10);
        let fill = |body, tags: &'static [crate::store::TagKeys], names| Fill {
            key,
            clock: Box::leak(clock.clone().into_boxed_str()),
            owner: "shop",
            body,
            ttl: Duration::from_secs(60),
            seen: None,
            tags,
            tag_names: names,
            replace: false,
            lease_time,
            grace: None,
        };
        let tags: &'static [crate::store::TagKeys] = Box::leak(Box::new(tags));
        let fields: &'static [crate::codec::EncodedField] = Box::leak(Box::new(fields));
        let compare = |step: &str, inspect: &mut redis::Connection| {
            let stored: Option<String> = redis::cmd("HGET")
                .arg(key)
                .arg("__meta")
                .query(inspect)
                .unwrap();
            assert_eq!(shape(memory.meta_text(key)), shape(stored), "after {step}");
        };

        let tagged = fill(FillBody::Fields(fields), tags, "team%2C1,user:1");
        assert!(redis.fill(tagged).await.unwrap());
        assert!(memory.fill(tagged));
        compare(
            "a tagged fill with a None and a skipped field",
            &mut inspect,
        );

        let invalidation = Invalidation {
            clock: &clock,
            entries: &[key],
            tags: &[],
            lease_time,
        };
        redis.invalidate(invalidation).await.unwrap();
        memory.invalidate(invalidation);
        compare("an invalidation (a tombstone)", &mut inspect);

        assert!(redis.acquire_lease(key, "t0k", lease_time).await.unwrap());
        assert!(memory.acquire_lease(key, "t0k", lease_time));
        compare("a lease on the tombstone", &mut inspect);

        let absent = fill(FillBody::Absent, &[], "");
        assert!(redis.fill(absent).await.unwrap());
        assert!(memory.fill(absent));
        compare("a cached absence", &mut inspect);

        let plain = fill(FillBody::Fields(&fields[..1]), &[], "");
        assert!(redis.fill(plain).await.unwrap());
        assert!(memory.fill(plain));
        compare("a fill over the absence", &mut inspect);
    }
}
