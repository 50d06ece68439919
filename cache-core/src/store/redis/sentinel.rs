//! Redis Sentinel: which node is the primary, asked of the sentinels whenever a connection
//! is made (the first, and every one after a connection broke, timed out or answered
//! `READONLY`), and checked with `ROLE` on the node itself before it is used.
//!
//! The sentinels are asked here, with `SENTINEL get-master-addr-by-name` over plain redis-rs
//! clients, rather than through redis-rs' `sentinel` module: its `SentinelClient` caches the
//! primary it found and does not follow a failover by itself (redis-rs #1438), takes
//! `&mut self` for every connection (one handle shares its store among all calls), needs a
//! cargo feature of its own, and bounds nothing by the handle's timeouts. Asking anew on
//! every reconnection is one round trip to one sentinel, and follows any failover: the
//! store reconnects after the old primary's connection broke or it answered `READONLY`, and
//! invalidations wait for a replica (`WAIT`, see `RedisStore::replicated`) so that the
//! promoted replica has every acknowledged one.
//!
//! Sentinels and data nodes are configured apart: each sentinel URL carries its own scheme
//! (`rediss://` for TLS) and credentials, and the data nodes are reached with the settings
//! of a template client (its scheme, credentials, database and TLS; its address replaced by
//! the one the sentinels name).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, Value};

use crate::locks::MutexExt as _;
use crate::store::StoreResult;

/// The sentinels of one primary, and how to reach the data nodes they name.
pub(crate) struct Sentinels {
    master: String,
    sentinels: Vec<Client>,
    /// The data nodes' settings; its address is replaced by the primary's.
    template: Client,
    timeout: Duration,
    /// The primary the store's connection was last made to.
    current: Mutex<Option<(String, u16)>>,
    /// Until when invalidations do not wait for replicas: the primary had none when the
    /// connection was made (a promoted replica whose old primary is dead), so a `WAIT` would
    /// only hold the shared connection for its whole timeout.
    unreplicated_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Sentinels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinels")
            .field("master", &self.master)
            .field("sentinels", &self.sentinels.len())
            .finish_non_exhaustive()
    }
}

impl Sentinels {
    /// The sentinels (checked clients) of the primary named `master`, whose data nodes are
    /// reached like `template`; each question bounded by `timeout`.
    pub(crate) fn new(
        master: String,
        sentinels: Vec<Client>,
        template: Client,
        timeout: Duration,
    ) -> Self {
        Sentinels {
            master,
            sentinels,
            template,
            timeout,
            current: Mutex::new(None),
            unreplicated_until: Mutex::new(None),
        }
    }

    /// The primary's address as the first sentinel that knows it says; `None` when none
    /// answers in time. Each sentinel is given the timeout to connect and to answer.
    pub(crate) async fn primary_address(&self) -> Option<(String, u16)> {
        for sentinel in &self.sentinels {
            if let Some(address) = self.ask(sentinel).await {
                return Some(address);
            }
        }
        None
    }

    /// What one sentinel says the primary's address is.
    async fn ask(&self, sentinel: &Client) -> Option<(String, u16)> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let asked = async {
            let mut connection = sentinel
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .ok()?;
            self.ask_on(&mut connection).await
        };
        tokio::time::timeout(self.timeout * 2, asked)
            .await
            .ok()
            .flatten()
    }

    /// `SENTINEL get-master-addr-by-name` on a connection to a sentinel.
    pub(crate) async fn ask_on(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> Option<(String, u16)> {
        let mut command = redis::cmd("SENTINEL");
        command.arg("get-master-addr-by-name").arg(&self.master);
        let asked = command.query_async::<Option<(String, u16)>>(connection);
        match tokio::time::timeout(self.timeout, asked).await {
            Ok(Ok(address)) => address,
            Ok(Err(error)) => {
                tracing::debug!(%error, "a sentinel did not say where the primary is");
                None
            }
            Err(_) => None,
        }
    }

    /// A connection to a sentinel, the first that answers (for the near cache's listener,
    /// which asks every health check).
    pub(crate) async fn connect_sentinel(&self) -> Option<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        for sentinel in &self.sentinels {
            let connect = sentinel.get_multiplexed_async_connection_with_config(&config);
            if let Ok(Ok(connection)) = tokio::time::timeout(self.timeout * 2, connect).await {
                return Some(connection);
            }
        }
        None
    }

    /// The data nodes' client, at `address`.
    pub(crate) fn client_at(&self, address: &(String, u16)) -> Option<Client> {
        at_address(&self.template, &address.0, address.1)
    }

    /// A connection to the primary: asked of the sentinels, connected with `config`, and
    /// checked to be a primary (`ROLE`; a sentinel may still name a demoted primary for a
    /// moment after a failover). Fails as an I/O error when no sentinel answers or the node
    /// named is not a primary, so that the call fails open and the next one asks again.
    pub(crate) async fn connect_primary(
        &self,
        config: &AsyncConnectionConfig,
    ) -> StoreResult<MultiplexedConnection> {
        let Some(address) = self.primary_address().await else {
            return Err(io_error(format!(
                "no sentinel said where the primary `{}` is",
                self.master
            )));
        };
        let client = self
            .client_at(&address)
            .ok_or_else(|| io_error("the data nodes' URL is not a TCP address".to_owned()))?;
        let mut connection = client
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        let Some(replicas) = primary_role(&mut connection, self.timeout).await else {
            return Err(io_error(format!(
                "the node {}:{} that the sentinels name is not a primary (a failover under way)",
                address.0, address.1
            )));
        };
        *self.unreplicated_until.lock_recovered() =
            (replicas == Some(0)).then(|| Instant::now() + UNREPLICATED_FOR);
        *self.current.lock_recovered() = Some(address);
        Ok(connection)
    }

    /// Whether the primary had no replica when the connection was made, lately.
    pub(crate) fn unreplicated(&self) -> bool {
        let mut until = self.unreplicated_until.lock_recovered();
        match *until {
            Some(instant) if instant > Instant::now() => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// Whether the sentinels still name the primary the store last connected to: `false`
    /// when one says another, or when none answers (nothing can be vouched for then).
    pub(crate) async fn still_primary(&self) -> bool {
        let current = self.current.lock_recovered().clone();
        current.is_some() && self.primary_address().await == current
    }
}

/// Whether the node on `connection` says it is a primary (`ROLE`); also `true` when it
/// refuses `ROLE` (an ACL user without it: the sentinels' word is all there is).
pub(crate) async fn is_primary(connection: &mut MultiplexedConnection, timeout: Duration) -> bool {
    primary_role(connection, timeout).await.is_some()
}

/// `Some` when the node on `connection` is a primary, with the number of replicas `ROLE`
/// lists (`None` inside: it refused `ROLE`, which is taken for a yes); `None` when not.
async fn primary_role(
    connection: &mut MultiplexedConnection,
    timeout: Duration,
) -> Option<Option<usize>> {
    let role = redis::cmd("ROLE");
    let role = role.query_async::<Value>(connection);
    match tokio::time::timeout(timeout, role).await {
        Ok(Ok(Value::Array(parts))) => {
            let primary = match parts.first() {
                Some(Value::BulkString(role)) => role == b"master",
                Some(Value::SimpleString(role)) => role == "master",
                _ => false,
            };
            let replicas = match parts.get(2) {
                Some(Value::Array(replicas)) => replicas.len(),
                _ => 0,
            };
            primary.then_some(Some(replicas))
        }
        Ok(Err(error)) if error.code() == Some("NOPERM") => Some(None),
        _ => None,
    }
}

/// How long a primary found without replicas is not waited for (as on a cluster).
const UNREPLICATED_FOR: Duration = Duration::from_secs(10);

/// `client`'s settings (credentials, database, protocol, TLS) at another TCP address.
fn at_address(client: &Client, host: &str, port: u16) -> Option<Client> {
    let info = at_tcp_address(client.get_connection_info().clone(), host, port)?;
    Client::open(info).ok()
}

/// `info` (credentials, database, protocol, TLS) at another TCP address: a node a sentinel
/// or a cluster names. `None` for a Unix socket (or anything newer), which names no node.
pub(crate) fn at_tcp_address(
    info: ConnectionInfo,
    host: &str,
    port: u16,
) -> Option<ConnectionInfo> {
    let addr = match info.addr().clone() {
        ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(host.to_owned(), port),
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure,
            tls_params,
        },
        _ => return None,
    };
    Some(info.set_addr(addr))
}

fn io_error(message: String) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::other(message))
}
