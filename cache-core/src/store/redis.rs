//! The Redis store: one multiplexed connection, kept and re-established by redis-rs'
//! `ConnectionManager`, so a hit costs exactly one command and no checkout round trip.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Client, Value};

use super::{FieldValues, StoreResult};
use crate::codec::EncodedField;

/// Merge fields and set the TTL in one command. A key holding another type (garbage left by
/// someone else) is replaced rather than failing the fill forever with WRONGTYPE.
const FILL_SCRIPT: &str = r"
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

pub(crate) struct RedisStore {
    connection: ConnectionManager,
    fill_script: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Prepares the connection without connecting: `Cache::build` must not fail or wait
    /// because Redis is down. Must run inside a Tokio runtime.
    pub(crate) fn new(client: Client, operation_timeout: Duration) -> StoreResult<Self> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(operation_timeout))
            .set_response_timeout(Some(operation_timeout))
            // Retrying inside one call would only hold the caller past its timeout; the next
            // call reconnects, and the circuit breaker paces those attempts.
            .set_number_of_retries(0);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisStore { connection, fill_script: redis::Script::new(FILL_SCRIPT) })
    }

    pub(crate) async fn read_fields(&self, key: &str, fields: &[&str]) -> StoreResult<FieldValues> {
        let mut command = redis::cmd("HMGET");
        command.arg(key).arg(fields);
        let reply = match command.query_async::<Value>(&mut self.connection.clone()).await {
            Ok(reply) => reply,
            // Someone stored another type under our key: that is garbage, hence a miss.
            Err(error) if error.code() == Some("WRONGTYPE") => Value::Nil,
            Err(error) => return Err(error),
        };
        Ok(field_values(reply, fields.len()))
    }

    pub(crate) async fn write_fields(
        &self,
        key: &str,
        fields: &[EncodedField],
        ttl: Duration,
    ) -> StoreResult<()> {
        let mut invocation = self.fill_script.key(key);
        invocation.arg(ttl_millis(ttl));
        for (name, value) in fields {
            invocation.arg(*name).arg(value.as_slice());
        }
        invocation.invoke_async::<Value>(&mut self.connection.clone()).await?;
        Ok(())
    }

    pub(crate) async fn delete(&self, keys: &[&str]) -> StoreResult<()> {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<Value>(&mut self.connection.clone())
            .await?;
        Ok(())
    }
}

/// Takes the bulk strings out of an `HMGET` reply without copying them.
fn field_values(reply: Value, expected: usize) -> FieldValues {
    match reply {
        Value::Array(values) if values.len() == expected => values
            .into_iter()
            .map(|value| match value {
                Value::BulkString(bytes) => Some(bytes),
                _ => None,
            })
            .collect(),
        _ => vec![None; expected],
    }
}

/// Milliseconds for `PEXPIRE`, at least 1 (0 would delete the entry at once).
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
