//! Settings from the environment, with the defaults the README's table under "The example server" lists.

use std::net::SocketAddr;

use crate::repo::ListCache;

/// Everything the server reads from its environment.
#[derive(Clone)]
pub struct Config {
    /// `APP_ADDR`, default `127.0.0.1:8000`.
    pub addr: SocketAddr,
    /// `DATABASE_URL`, default an SQLite file `users.db` in the working directory.
    pub database_url: String,
    /// `REDIS_URL`, default `redis://127.0.0.1:6379`; `mem://` for the in-process store.
    pub redis_url: String,
    /// `REDIS_CLUSTER_NODES`: comma-separated node URLs of a Redis Cluster, used instead of
    /// `REDIS_URL` when set.
    pub redis_cluster_nodes: Option<Vec<String>>,
    /// `REDIS_SENTINEL_MASTER` and `REDIS_SENTINEL_NODES` (comma-separated sentinel URLs):
    /// the primary Redis Sentinel names, used instead of `REDIS_URL` when set (both or none).
    pub redis_sentinel: Option<(String, Vec<String>)>,
    /// `REDIS_SENTINEL_PRIMARY_URL`: how the primary is reached behind Sentinel (scheme,
    /// credentials, database); default `redis://` without credentials.
    pub redis_sentinel_primary_url: Option<String>,
    /// `CACHE_NAMESPACE`: puts every cache key under `{namespace}:`; default none.
    pub cache_namespace: Option<String>,
    /// `CACHE_NEAR_ENTRIES`: near cache size (values kept in process memory); 0 (default)
    /// turns it off.
    pub near_entries: usize,
    /// `CACHE_MODE`: `on` (default) or `off`.
    pub cache_enabled: bool,
    /// `CACHE_RESPONSES`: `on` (default) caches whole responses of the public reads too
    /// (`ResponseCache`), `off` the repository only.
    pub cache_responses: bool,
    /// `LIST_CACHE`: `ids` (default) caches a list page as the ids of its rows, each row in
    /// its user's entry; `pages` caches whole pages (dropped by any profile update).
    pub list_cache: ListCache,
    /// `ACCESS_TOKEN_SECRET`, else derived from `JWT_SECRET` (default: random per start).
    pub access_secret: String,
    /// `REFRESH_TOKEN_SECRET`, else derived from `JWT_SECRET`.
    pub refresh_secret: String,
    /// `ACCESS_TOKEN_EXPIRE_MINUTES`, default 30.
    pub access_minutes: i64,
    /// `REFRESH_TOKEN_EXPIRE_MINUTES`, default 60.
    pub refresh_minutes: i64,
    /// `BCRYPT_COST`, default 12.
    pub bcrypt_cost: u32,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("database_url", &cache_core::redact_url(&self.database_url))
            .field("redis_url", &cache_core::redact_url(&self.redis_url))
            .field(
                "redis_cluster_nodes",
                &self.redis_cluster_nodes.as_ref().map(|nodes| {
                    nodes
                        .iter()
                        .map(|node| cache_core::redact_url(node))
                        .collect::<Vec<_>>()
                }),
            )
            .field(
                "redis_sentinel",
                &self.redis_sentinel.as_ref().map(|(master, sentinels)| {
                    let sentinels: Vec<String> = sentinels
                        .iter()
                        .map(|sentinel| cache_core::redact_url(sentinel))
                        .collect();
                    (master, sentinels)
                }),
            )
            .field(
                "redis_sentinel_primary_url",
                &self
                    .redis_sentinel_primary_url
                    .as_deref()
                    .map(cache_core::redact_url),
            )
            .field("cache_namespace", &self.cache_namespace)
            .field("near_entries", &self.near_entries)
            .field("cache_enabled", &self.cache_enabled)
            .field("cache_responses", &self.cache_responses)
            .field("list_cache", &self.list_cache)
            .field("access_minutes", &self.access_minutes)
            .field("refresh_minutes", &self.refresh_minutes)
            .field("bcrypt_cost", &self.bcrypt_cost)
            .finish_non_exhaustive()
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    name: &'static str,
    problem: String,
}

impl Config {
    /// The cache these settings ask for: off, a Redis Cluster, the primary Redis Sentinel
    /// names, or the one server (or `mem://`) of `REDIS_URL`.
    ///
    /// # Errors
    ///
    /// A URL the cache refuses.
    pub fn cache(&self) -> Result<cache_core::Cache, cache_core::Error> {
        if !self.cache_enabled {
            return Ok(cache_core::Cache::disabled());
        }
        let mut builder = match (&self.redis_cluster_nodes, &self.redis_sentinel) {
            (Some(nodes), _) => cache_core::Cache::builder().cluster_nodes(nodes.clone()),
            (None, Some((master, sentinels))) => {
                let builder = cache_core::Cache::builder().sentinel(master, sentinels.clone());
                match &self.redis_sentinel_primary_url {
                    Some(url) => builder.sentinel_primary_url(url),
                    None => builder,
                }
            }
            (None, None) => cache_core::Cache::builder().url(&self.redis_url),
        };
        if let Some(namespace) = &self.cache_namespace {
            builder = builder.namespace(namespace);
        }
        builder.near_cache(self.near_entries).build()
    }

    /// Where the cache is, for the log: without passwords.
    pub fn cache_location(&self) -> String {
        match (&self.redis_cluster_nodes, self.cache_enabled) {
            (_, false) => "off".to_owned(),
            (None, true) if self.redis_sentinel.is_some() => {
                let (master, sentinels) = self.redis_sentinel.as_ref().expect("checked");
                format!(
                    "sentinel master {master} at {}",
                    sentinels
                        .iter()
                        .map(|sentinel| cache_core::redact_url(sentinel))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
            (Some(nodes), true) => format!(
                "cluster {}",
                nodes
                    .iter()
                    .map(|node| cache_core::redact_url(node))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            (None, true) => cache_core::redact_url(&self.redis_url),
        }
    }

    /// Reads the environment.
    ///
    /// # Errors
    ///
    /// A variable that is set but does not parse.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the variables from `lookup` instead of the environment (what `from_env` reads
    /// them from): a test can give the server exactly the variables an operator would.
    ///
    /// # Errors
    ///
    /// A variable that is set but does not parse.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let jwt_secret = var("JWT_SECRET").unwrap_or_else(random_secret);
        Ok(Config {
            addr: parsed("APP_ADDR", var("APP_ADDR"), "127.0.0.1:8000")?,
            database_url: var("DATABASE_URL")
                .unwrap_or_else(|| "sqlite://users.db?mode=rwc".into()),
            redis_url: var("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            cache_namespace: var("CACHE_NAMESPACE"),
            near_entries: parsed("CACHE_NEAR_ENTRIES", var("CACHE_NEAR_ENTRIES"), "0")?,
            redis_cluster_nodes: var("REDIS_CLUSTER_NODES").map(|nodes| list(&nodes)),
            redis_sentinel: match (var("REDIS_SENTINEL_MASTER"), var("REDIS_SENTINEL_NODES")) {
                (Some(master), Some(nodes)) => Some((master, list(&nodes))),
                (None, None) => None,
                _ => {
                    return Err(ConfigError {
                        name: "REDIS_SENTINEL_MASTER",
                        problem: "set together with REDIS_SENTINEL_NODES, or neither".into(),
                    })
                }
            },
            redis_sentinel_primary_url: var("REDIS_SENTINEL_PRIMARY_URL"),
            cache_enabled: on_off("CACHE_MODE", var("CACHE_MODE"))?,
            cache_responses: on_off("CACHE_RESPONSES", var("CACHE_RESPONSES"))?,
            list_cache: match var("LIST_CACHE").as_deref() {
                None | Some("ids") => ListCache::Ids,
                Some("pages") => ListCache::Pages,
                Some(other) => {
                    return Err(ConfigError {
                        name: "LIST_CACHE",
                        problem: format!("`{other}` is neither `ids` nor `pages`"),
                    })
                }
            },
            access_secret: var("ACCESS_TOKEN_SECRET")
                .unwrap_or_else(|| format!("{jwt_secret}:access")),
            refresh_secret: var("REFRESH_TOKEN_SECRET")
                .unwrap_or_else(|| format!("{jwt_secret}:refresh")),
            access_minutes: parsed(
                "ACCESS_TOKEN_EXPIRE_MINUTES",
                var("ACCESS_TOKEN_EXPIRE_MINUTES"),
                "30",
            )?,
            refresh_minutes: parsed(
                "REFRESH_TOKEN_EXPIRE_MINUTES",
                var("REFRESH_TOKEN_EXPIRE_MINUTES"),
                "60",
            )?,
            bcrypt_cost: parsed("BCRYPT_COST", var("BCRYPT_COST"), "12")?,
        })
    }
}

fn parsed<T: std::str::FromStr>(
    name: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let text = value.unwrap_or_else(|| default.to_owned());
    text.parse().map_err(|error: T::Err| ConfigError {
        name,
        problem: format!("`{text}`: {error}"),
    })
}

/// A comma-separated list, its items trimmed, empty ones left out.
fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A switch: `on` (the default) or `off`.
fn on_off(name: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
    match value.as_deref() {
        None | Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(ConfigError {
            name,
            problem: format!("`{other}` is neither `on` nor `off`"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_list_cache(value: Option<&str>) -> Result<Config, ConfigError> {
        Config::from_vars(|name| {
            (name == "LIST_CACHE")
                .then(|| value.map(str::to_owned))
                .flatten()
        })
    }

    #[test]
    fn list_cache_is_ids_unless_pages_and_refuses_anything_else() {
        assert_eq!(with_list_cache(None).unwrap().list_cache, ListCache::Ids);
        assert_eq!(
            with_list_cache(Some("")).unwrap().list_cache,
            ListCache::Ids
        );
        assert_eq!(
            with_list_cache(Some("ids")).unwrap().list_cache,
            ListCache::Ids
        );
        assert_eq!(
            with_list_cache(Some("pages")).unwrap().list_cache,
            ListCache::Pages
        );
        let error = with_list_cache(Some("Pages")).unwrap_err().to_string();
        assert_eq!(error, "LIST_CACHE: `Pages` is neither `ids` nor `pages`");
    }
}
