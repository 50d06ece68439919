//! The README's ACL rules, as command lists, and the `ACL SETUSER` arguments made of them: a
//! test user gets exactly what the README tells operators to grant, so a missing command fails.

/// The commands the library needs, exactly as the README's ACL rule lists them: what it
/// sends (`HMGET`, `HGET`, `MGET`, `UNLINK`, `EVALSHA`, `SCRIPT LOAD`) and what its scripts run.
pub const CACHE_ACL_COMMANDS: &str = "-@all +hmget +hget +mget +unlink +evalsha +script|load \
    +hset +hdel +hlen +hexists +del +exists +pexpire +pttl +type +time +get +set +sadd +srem \
    +spop +scard +srandmember";

/// What a Redis Cluster needs beyond [`CACHE_ACL_COMMANDS`], as the README says: the slot
/// map, and `WAIT` for replicas.
pub const CLUSTER_ACL_COMMANDS: &str = "+wait +cluster|slots";

/// What the near cache's listener needs beyond [`CACHE_ACL_COMMANDS`], as the README says.
pub const NEAR_ACL_COMMANDS: &str = "+hello +client|tracking +ping";

/// `ACL SETUSER` arguments for user `name` with password `cache-secret`, exactly `commands`
/// (space-separated) and the key `patterns`, and nothing else.
pub(crate) fn acl_rule(name: &str, commands: &str, patterns: &[&str]) -> Vec<String> {
    let mut rule: Vec<String> = [name, "on", ">cache-secret", "resetkeys", "resetchannels"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    rule.extend(commands.split_whitespace().map(str::to_owned));
    rule.extend(patterns.iter().map(|pattern| format!("~{pattern}")));
    rule
}
