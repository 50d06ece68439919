//! How a handle reaches Redis: checking URLs, cluster seeds and sentinels, opening redis-rs
//! clients (TLS with the `tls` feature, the CA and identity given to the builder), and the
//! store over one server, a cluster, or the primary Redis Sentinel names. Nothing connects here: connections are made lazily by the store.

use std::sync::Arc;
use std::time::Duration;

use crate::redact::redact_url;
use crate::store::{RedisStore, Sentinels};
use crate::Error;

/// What `rediss://` connections trust and present, beyond the system's root certificates.
#[derive(Clone, Default)]
pub(crate) struct TlsOptions {
    /// PEM certificate(s) of a CA to trust instead of the system's roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key this client presents (mutual TLS).
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Redis stores drive their connections on the Tokio runtime they are built in.
pub(crate) fn require_runtime() -> Result<(), Error> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::Config(
            "a Redis cache must be built inside a Tokio runtime".into(),
        ));
    }
    Ok(())
}

/// The store of one Redis server, and its client (for the near cache's own connection).
pub(crate) fn redis_store(
    url: &str,
    operation_timeout: Duration,
    tls: &TlsOptions,
) -> Result<(RedisStore, redis::Client), Error> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis" | "rediss" | "redis+unix" | "unix") => {}
        _ => {
            return Err(Error::Config(format!(
                "unsupported cache URL `{}`: expected redis://, rediss://, redis+unix:// or mem://",
                redact_url(url)
            )))
        }
    }
    let client = open_client(url, scheme == Some("rediss"), tls)?;
    require_runtime()?;
    Ok((RedisStore::new(client.clone(), operation_timeout), client))
}

/// The store of a Redis Cluster given by some of its nodes.
pub(crate) fn cluster_store(
    nodes: &[String],
    operation_timeout: Duration,
    tls: &TlsOptions,
    replica_acks: u32,
) -> Result<(RedisStore, Vec<redis::Client>), Error> {
    if nodes.is_empty() {
        return Err(Error::Config(
            "cluster_nodes needs at least one node URL".into(),
        ));
    }
    let mut is_tls = false;
    let mut seeds = Vec::with_capacity(nodes.len());
    for node in nodes {
        match node.split_once("://").map(|(scheme, _)| scheme) {
            Some("redis") => {}
            Some("rediss") => is_tls = true,
            _ => {
                return Err(Error::Config(format!(
                    "unsupported cluster node URL `{}`: expected redis:// or rediss://",
                    redact_url(node)
                )))
            }
        }
        // Each node's URL is checked on its own, so that the error names the bad one; the
        // near cache's listener starts from these clients.
        seeds.push(open_client(node, node.starts_with("rediss://"), tls)?);
    }
    let builder = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        // The caller's timeout bounds every operation; these bound each attempt inside it, so
        // that a failed-over node is given up in time for a retry on its successor.
        .connection_timeout(operation_timeout)
        .response_timeout(operation_timeout);
    let builder = cluster_tls(builder, is_tls, tls);
    require_runtime()?;
    let client = builder
        .build()
        .map_err(|error| Error::Config(format!("invalid cluster nodes: {error}")))?;
    // An invalidation may wait for replicas up to three times (its tags, its entries, the
    // members it drains): a quarter of the operation timeout each keeps it within.
    let store = RedisStore::cluster(client, replica_acks, operation_timeout / 4);
    Ok((store, seeds))
}

/// The store of the primary that Redis Sentinel names for `master`: `sentinels` are the
/// sentinels' URLs (each with its own scheme and credentials), `primary_url` how to reach the
/// data nodes (its scheme, credentials, database and TLS; its host and port are replaced by
/// the primary's). Also answers the sentinels, for the near cache's listener.
pub(crate) fn sentinel_store(
    master: &str,
    sentinels: &[String],
    primary_url: Option<&str>,
    operation_timeout: Duration,
    tls: &TlsOptions,
    replica_acks: u32,
) -> Result<(RedisStore, Arc<Sentinels>), Error> {
    if master.trim().is_empty() {
        return Err(Error::Config("sentinel needs the master's name".into()));
    }
    if sentinels.is_empty() {
        return Err(Error::Config(
            "sentinel needs at least one sentinel URL".into(),
        ));
    }
    let mut clients = Vec::with_capacity(sentinels.len());
    for sentinel in sentinels {
        let scheme = sentinel.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("redis" | "rediss")) {
            return Err(Error::Config(format!(
                "unsupported sentinel URL `{}`: expected redis:// or rediss://",
                redact_url(sentinel)
            )));
        }
        clients.push(open_client(sentinel, scheme == Some("rediss"), tls)?);
    }
    let primary_url = primary_url.unwrap_or("redis://primary");
    let scheme = primary_url.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("redis" | "rediss")) {
        return Err(Error::Config(format!(
            "unsupported sentinel primary URL `{}`: expected redis:// or rediss://",
            redact_url(primary_url)
        )));
    }
    let template = open_client(primary_url, scheme == Some("rediss"), tls)?;
    require_runtime()?;
    let sentinels = Arc::new(Sentinels::new(
        master.to_owned(),
        clients,
        template,
        operation_timeout,
    ));
    // A quarter of the timeout, as on a cluster: a `WAIT` holds the shared connection, and
    // every command queued behind it, for as long as the replica does not answer.
    let store = RedisStore::sentinel(
        sentinels.clone(),
        operation_timeout,
        replica_acks,
        operation_timeout / 4,
    );
    Ok((store, sentinels))
}

#[cfg(feature = "tls")]
fn cluster_tls(
    builder: redis::cluster::ClusterClientBuilder,
    is_tls: bool,
    tls: &TlsOptions,
) -> redis::cluster::ClusterClientBuilder {
    if !is_tls || (tls.ca_pem.is_none() && tls.identity.is_none()) {
        return builder;
    }
    builder.certs(tls.certificates())
}

#[cfg(not(feature = "tls"))]
fn cluster_tls(
    builder: redis::cluster::ClusterClientBuilder,
    _: bool,
    _: &TlsOptions,
) -> redis::cluster::ClusterClientBuilder {
    builder
}

/// The redis-rs client of a checked URL. redis-rs' parse errors do not repeat the URL; ours
/// show it without its password.
#[cfg(feature = "tls")]
fn open_client(url: &str, is_tls: bool, tls: &TlsOptions) -> Result<redis::Client, Error> {
    let invalid = |error: redis::RedisError| {
        Error::Config(format!("invalid Redis URL `{}`: {error}", redact_url(url)))
    };
    if !is_tls {
        return redis::Client::open(url).map_err(invalid);
    }
    // rustls needs one process-wide crypto provider; another crate may have installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if tls.ca_pem.is_none() && tls.identity.is_none() {
        return redis::Client::open(url).map_err(invalid);
    }
    redis::Client::build_with_tls(url, tls.certificates()).map_err(invalid)
}

#[cfg(feature = "tls")]
impl TlsOptions {
    /// The CA and client identity in redis-rs' terms.
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self.identity.clone().map(|(client_cert, client_key)| {
                redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }
            }),
            root_cert: self.ca_pem.clone(),
        }
    }
}

#[cfg(not(feature = "tls"))]
fn open_client(url: &str, is_tls: bool, _: &TlsOptions) -> Result<redis::Client, Error> {
    if is_tls {
        return Err(Error::Config(
            "`rediss://` (TLS) needs cache-core's `tls` feature".into(),
        ));
    }
    redis::Client::open(url)
        .map_err(|error| Error::Config(format!("invalid Redis URL `{}`: {error}", redact_url(url))))
}
