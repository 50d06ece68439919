//! How the Redis store reaches Redis: one connection, made lazily in a task of its own (so a
//! call's timeout does not cancel it) and replaced when it breaks, so that a hit costs one
//! command and no checkout.
//!
//! The names, from the application to a command: a [`RedisSource`](crate::RedisSource) (its
//! inner `Source`) is what the application hands the builder; an [`Opener`] is how the store
//! makes a connection from it (a client, a cluster client, a pool, or the one connection it
//! was given); a [`Link`] is one open connection (to a server, through a manager, to a
//! cluster); the [`Connection`] is the slot holding the current link, made and replaced here.
//! The near cache's listener opens connections of its own, from `near::ListenTo`.

use std::sync::{Arc, RwLock};

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Value};

use super::sentinel::Sentinels;
use crate::locks::RwLockExt as _;
use crate::store::StoreResult;

/// Where commands go: one server through one multiplexed connection, or a Redis Cluster
/// through redis-rs' cluster connection (which follows `MOVED`/`ASK`, finds promoted
/// replicas and splits multi-slot `MGET`/`UNLINK` by node).
#[derive(Clone)]
pub(crate) enum Link {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
    /// The application's own, reconnecting by itself.
    #[cfg(feature = "connection-manager")]
    Manager(redis::aio::ConnectionManager),
}

/// `$body` with `$connection` bound to whichever connection `$link` holds.
macro_rules! on_link {
    ($link:expr, $connection:ident => $body:expr) => {
        match $link {
            Link::Single($connection) => $body,
            Link::Cluster($connection) => $body,
            #[cfg(feature = "connection-manager")]
            Link::Manager($connection) => $body,
        }
    };
}

impl redis::aio::ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        on_link!(self, connection => connection.req_packed_command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        on_link!(self, connection => connection.req_packed_commands(pipeline, offset, count))
    }

    fn get_db(&self) -> i64 {
        on_link!(self, connection => connection.get_db())
    }
}

/// How to make the [`Link`].
pub(super) enum Opener {
    Single(Client, AsyncConnectionConfig),
    /// The primary the sentinels name, asked anew for every connection (see `sentinel`).
    Sentinel(Arc<Sentinels>, AsyncConnectionConfig),
    Cluster(ClusterClient),
    /// A connection the application gave: used as it is, never replaced (one that
    /// reconnects by itself does so inside).
    Given(Link),
    /// One connection taken out of the application's pool, and another only after it broke.
    #[cfg(feature = "deadpool")]
    Pool(deadpool_redis::Pool),
}

/// One connection, made on first use and replaced when it breaks or stops answering.
/// Cloning it for a command is one reference count; no lock is held across an await, and no
/// command but the caller's is sent (a pool checkout would add a round trip).
pub(super) struct Connection {
    opener: Opener,
    current: RwLock<Option<Link>>,
    /// Held while connecting, so that a burst of calls makes one connection, not many; holds
    /// the task making the connection until a call takes its outcome.
    connecting: tokio::sync::Mutex<Option<tokio::task::JoinHandle<StoreResult<Link>>>>,
}

impl Connection {
    pub(super) fn new(opener: Opener) -> Self {
        Connection {
            opener,
            current: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) async fn get(&self) -> StoreResult<Link> {
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        // Connecting is rare and its future is large: boxed, it does not weigh on every
        // command's future (each call would copy kilobytes otherwise).
        Box::pin(self.connect()).await
    }

    async fn connect(&self) -> StoreResult<Link> {
        let mut connecting = self.connecting.lock().await;
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        let connection = match &self.opener {
            // Made in a task of its own, which the operation timeout of the call that started
            // it does not cancel: a later call takes the connection it made. Made inside the
            // call, a connection that takes longer than one operation timeout (a cluster's
            // nodes over TLS on busy cores: 460-570 ms) was cancelled and started again by
            // every call, which all timed out until the breaker opened.
            Opener::Single(client, config) => {
                let (client, config) = (client.clone(), config.clone());
                in_task(&mut connecting, async move {
                    let connection = client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
                    Ok(Link::Single(connection))
                })
                .await?
            }
            Opener::Sentinel(sentinels, config) => {
                let (sentinels, config) = (sentinels.clone(), config.clone());
                in_task(&mut connecting, async move {
                    Ok(Link::Single(sentinels.connect_primary(&config).await?))
                })
                .await?
            }
            Opener::Cluster(client) => {
                let client = client.clone();
                in_task(&mut connecting, async move {
                    Ok(Link::Cluster(client.get_async_connection().await?))
                })
                .await?
            }
            Opener::Given(link) => link.clone(),
            #[cfg(feature = "deadpool")]
            Opener::Pool(pool) => {
                let connection = pool.get().await.map_err(|error| match error {
                    deadpool_redis::PoolError::Backend(error) => error,
                    other => redis::RedisError::from(std::io::Error::other(format!(
                        "no connection from the pool: {other}"
                    ))),
                })?;
                // Out of the pool for good (it makes room for another): a multiplexed
                // connection serves every call at once.
                Link::Single(deadpool_redis::Connection::take(connection))
            }
        };
        *self.current.write_recovered() = Some(connection.clone());
        Ok(connection)
    }

    fn current(&self) -> Option<Link> {
        self.current.read_recovered().clone()
    }

    /// Whether a connection is made.
    pub(super) fn is_made(&self) -> bool {
        // A read lock, no clone: every operation asks.
        self.current.read_recovered().is_some()
    }

    /// The sentinels, when the primary is found through them.
    pub(super) fn sentinels(&self) -> Option<&Sentinels> {
        match &self.opener {
            Opener::Sentinel(sentinels, _) => Some(sentinels),
            _ => None,
        }
    }

    /// Forgets the connection, so the next call makes a new one: after an I/O error, and
    /// after a timeout (a connection whose peer vanished may never error by itself), and
    /// after `READONLY` (behind Sentinel, the next connection asks for the new primary). A
    /// cluster connection is kept: it reconnects each node by itself and refreshes the slot
    /// map when a node fails over; making it again would reconnect every node.
    pub(super) fn discard(&self) {
        if matches!(self.opener, Opener::Cluster(_) | Opener::Given(_)) {
            return;
        }
        *self.current.write_recovered() = None;
    }
}

/// The connection made by the task in `connecting`, which `open` starts if there is none.
/// Awaiting the task does not cancel it: a call whose timeout ends the wait leaves it
/// connecting for the next call. Its outcome, a connection or an error, goes to one call.
async fn in_task(
    connecting: &mut Option<tokio::task::JoinHandle<StoreResult<Link>>>,
    open: impl std::future::Future<Output = StoreResult<Link>> + Send + 'static,
) -> StoreResult<Link> {
    let task = connecting.get_or_insert_with(|| tokio::spawn(open));
    let outcome = task.await;
    *connecting = None;
    outcome.map_err(|error| {
        redis::RedisError::from(std::io::Error::other(format!(
            "the connecting task failed: {error}"
        )))
    })?
}
