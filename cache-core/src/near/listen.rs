//! The listener: RESP3 connections of its own with `CLIENT TRACKING … BCAST` (to one server,
//! to every primary of a cluster, or to the primary Redis Sentinel names), the pushes they
//! hear applied to the near cache, and the health checks and probes that tell whether it
//! hears at all and at the right node (the near cache serves nothing while it does not).

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, PushInfo, PushKind, Value};

use super::topology::{cluster_primaries, host_of, primaries, resp3, same_primaries, Primary};
use super::{Near, HEALTH_CHECK};
use crate::key;
use crate::store::{is_primary, Sentinels};

/// Where the listener's connections go.
#[derive(Debug)]
pub(crate) enum ListenTo {
    /// One server: one connection.
    Server(Box<Client>),
    /// A Redis Cluster, given by the clients of its seed nodes: one connection per primary,
    /// found with `CLUSTER SLOTS` (every write, ours or another client's, lands on a primary,
    /// and a primary's tracking names every key it changes).
    Cluster(Vec<Client>),
    /// The primary Redis Sentinel names: one connection, to the primary the sentinels name
    /// when it connects, and made again when they name another (asked every health check).
    Sentinel(Arc<Sentinels>),
}

/// Listens for Redis' invalidations on connections of its own, for as long as the handle
/// lives; reconnects and turns tracking on again after every failure (and, on a cluster,
/// after every change of its primaries).
pub(crate) fn listen(
    near: &Arc<Near>,
    listen_to: ListenTo,
    namespace: Option<&str>,
    operation_timeout: Duration,
) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let listen_to = match listen_to {
        ListenTo::Server(client) => match resp3(&client, None) {
            Some(client) => ListenTo::Server(Box::new(client)),
            None => return,
        },
        other => other,
    };
    let tracked = Tracked {
        prefixes: match namespace {
            Some(namespace) => vec![
                key::entry_prefix(Some(namespace)),
                key::tag_stamp_prefix(Some(namespace)),
            ],
            // Entries of a handle without namespace can have any prefix: every key.
            None => Vec::new(),
        },
        // Under the first prefix, where no entry can be (see `key::near_probe_key`).
        probe: key::near_probe_key(namespace),
    };
    // Holds the near cache weakly: when the handle is dropped, the listener and its
    // connections go too, at the next push or health check.
    let weak = Arc::downgrade(near);
    let listening = async move {
        let mut wait = Duration::from_millis(50);
        loop {
            let heard = hear(&weak, &listen_to, &tracked, operation_timeout).await;
            let Some(near) = weak.upgrade() else { return };
            near.reset(false);
            drop(near);
            if heard {
                wait = Duration::from_millis(50);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    };
    // On a thread and runtime of its own (its connections' tasks too): behind the
    // application's tasks in a busy runtime's queues, a push waited long enough to break
    // the 5 ms promise (the checker under load on two cores saw 7 ms). It logs through the
    // subscriber of whoever built the handle.
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let spawned = std::thread::Builder::new()
        .name("cache-near-listener".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    tracing::dispatcher::with_default(&dispatch, || runtime.block_on(listening));
                }
                Err(error) => {
                    tracing::warn!(%error, "the near cache's listener could not start its runtime; running without it");
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "the near cache's listener could not start its thread; running without it");
    }
}

/// One life of the listener's connections: connect to every server, turn tracking on,
/// apply invalidations and check health until one fails, the cluster's primaries change or
/// the near cache is dropped. Answers whether tracking was on at all. The near cache serves
/// only while every connection hears: a write can land on any primary.
async fn hear(
    near: &Weak<Near>,
    listen_to: &ListenTo,
    tracked: &Tracked,
    operation_timeout: Duration,
) -> bool {
    let prefixes = &tracked.prefixes;
    let mut sentinel = None;
    let (clients, cluster) = match listen_to {
        ListenTo::Server(client) => (vec![Client::clone(client)], None),
        ListenTo::Sentinel(sentinels) => {
            let Some(address) = sentinels.primary_address().await else {
                return false;
            };
            let Some(client) = sentinels
                .client_at(&address)
                .and_then(|client| resp3(&client, None))
            else {
                return false;
            };
            sentinel = Some((sentinels.clone(), address));
            (vec![client], None)
        }
        ListenTo::Cluster(seeds) => {
            let Some(found) = primaries(seeds, operation_timeout).await else {
                return false;
            };
            let Some(seed) = seeds.first() else {
                return false;
            };
            let clients: Option<Vec<Client>> = found
                .iter()
                .map(|primary| resp3(seed, Some((&primary.address.0, primary.address.1))))
                .collect();
            let Some(clients) = clients else { return false };
            (clients, Some(found))
        }
    };
    let (sender, mut pushes) = tokio::sync::mpsc::unbounded_channel::<PushInfo>();
    let mut connections = Vec::with_capacity(clients.len());
    for client in &clients {
        match track(near, client, prefixes, sender.clone(), operation_timeout).await {
            Some(connection) => connections.push(connection),
            None => return false,
        }
    }
    drop(sender);
    // Behind Sentinel, the node named must be the primary (a sentinel may name a demoted
    // one for a moment after a failover): writes land on the primary only.
    if let (Some((sentinels, _)), Some(first)) = (&sentinel, connections.first_mut()) {
        if !is_primary(first, operation_timeout).await {
            tracing::debug!(
                ?sentinels,
                "the node the sentinels name is not a primary yet"
            );
            return false;
        }
    }
    // Redis accepted tracking; whether its pushes reach us (a proxy may drop them) is
    // another matter: a key of ours written on every connection must come back as a push.
    let probes: Vec<String> = match &cluster {
        None => vec![tracked.probe.clone()],
        Some(found) => found
            .iter()
            .map(|primary| key::slot_probe_key(&tracked.probe, primary.slot))
            .collect(),
    };
    if !heard_probes(
        near,
        &mut connections,
        &probes,
        &mut pushes,
        operation_timeout,
    )
    .await
    {
        return false;
    }
    match near.upgrade() {
        Some(alive) => alive.reset(true),
        None => return false,
    }
    // Health is checked beside the pushes, not between them: a push must never wait for a
    // round of PINGs (and `CLUSTER SLOTS`), which on a loaded machine took longer than the
    // 5 ms a push may take.
    let (sick, mut fell_sick) = tokio::sync::oneshot::channel::<()>();
    let health = tokio::spawn(check_health(
        near.clone(),
        connections,
        cluster.map(|known| (known, host_of(&clients[0]).unwrap_or_default())),
        sentinel,
        operation_timeout,
        sick,
    ));
    let _health = AbortOnDrop(health);
    loop {
        tokio::select! {
            biased;
            push = pushes.recv() => {
                let Some(push) = push else { return true };
                match push.kind {
                    PushKind::Invalidate => {
                        let keys = invalidated_keys(push.data);
                        let Some(near) = near.upgrade() else { return true };
                        near.invalidated(keys);
                    }
                    PushKind::Disconnection => return true,
                    _ => {}
                }
            }
            _ = &mut fell_sick => return true,
        }
    }
}

/// Aborts a task when dropped: the health check ends with the connections' life.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every [`HEALTH_CHECK`], that every connection answers a `PING` within the timeout and (on
/// a cluster) that the primaries are those it connected to, (behind Sentinel) that the node
/// is still a primary and the sentinels name no other; says `sick` when not, or when the
/// near cache was dropped.
async fn check_health(
    near: Weak<Near>,
    mut connections: Vec<MultiplexedConnection>,
    cluster: Option<(Vec<Primary>, String)>,
    sentinel: Option<(Arc<Sentinels>, (String, u16))>,
    operation_timeout: Duration,
    sick: tokio::sync::oneshot::Sender<()>,
) {
    let mut every = tokio::time::interval(HEALTH_CHECK);
    // Kept from one check to the next, made again after it failed.
    let mut to_sentinel: Option<MultiplexedConnection> = None;
    loop {
        every.tick().await;
        if near.strong_count() == 0 {
            break;
        }
        let mut answering = true;
        for connection in &mut connections {
            answering = answering && answers(connection, operation_timeout).await;
        }
        if !answering {
            break;
        }
        // A failover or a new primary: connect to the primaries as they are now. (Until
        // then a demoted primary, as a replica, still names the keys its new primary
        // changes: tracking covers replicated writes.)
        if let (Some((known, node_host)), Some(first)) = (&cluster, connections.first_mut()) {
            match cluster_primaries(first, node_host, operation_timeout).await {
                Some(now) if same_primaries(&now, known) => {}
                _ => break,
            }
        }
        // Behind Sentinel: a failover (the sentinels name another primary, or this one was
        // demoted) means writes land elsewhere. Sentinels that do not answer cannot say so;
        // the node's own `ROLE` still can.
        if let (Some((sentinels, tracked)), Some(first)) = (&sentinel, connections.first_mut()) {
            if !is_primary(first, operation_timeout).await {
                break;
            }
            if to_sentinel.is_none() {
                to_sentinel = sentinels.connect_sentinel().await;
            }
            if let Some(connection) = &mut to_sentinel {
                match sentinels.ask_on(connection).await {
                    Some(named) if named == *tracked => {}
                    Some(_) => break,
                    None => to_sentinel = None,
                }
            }
        }
    }
    let _ = sick.send(());
}

/// What the listener tracks: the key prefixes, and the key it writes to check that pushes
/// arrive.
#[derive(Debug)]
struct Tracked {
    prefixes: Vec<String>,
    probe: String,
}

/// Writes `probes[i]` on `connections[i]` and waits (up to the operation timeout) for the
/// pushes that name them all, applying any other invalidation that arrives meanwhile.
/// `false`, said once, when a probe cannot be written or its push never comes.
async fn heard_probes(
    near: &Weak<Near>,
    connections: &mut [MultiplexedConnection],
    probes: &[String],
    pushes: &mut tokio::sync::mpsc::UnboundedReceiver<PushInfo>,
    operation_timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + operation_timeout;
    for (connection, probe) in connections.iter_mut().zip(probes) {
        let mut write = redis::cmd("SET");
        write
            .arg(probe)
            .arg("1")
            .arg("PX")
            .arg(crate::time::millis(operation_timeout).max(1) * 4);
        let written = write.query_async::<()>(connection);
        match tokio::time::timeout_at(deadline, written).await {
            Ok(Ok(())) => {}
            // Refused (an ACL user without `set` on it, a full Redis under `noeviction`, a
            // replica): said once. A timeout or a broken connection is just a failed try.
            Ok(Err(error)) if !error.is_io_error() && !error.is_timeout() => {
                if let Some(near) = near.upgrade() {
                    near.unavailable(&format!(
                        "it could not write the probe key {probe}: {error}"
                    ));
                }
                return false;
            }
            Ok(Err(_)) | Err(_) => return false,
        }
    }
    let mut unheard: Vec<&str> = probes.iter().map(String::as_str).collect();
    while !unheard.is_empty() {
        let push = match tokio::time::timeout_at(deadline, pushes.recv()).await {
            Ok(Some(push)) => push,
            Ok(None) => return false,
            Err(_) => {
                if let Some(near) = near.upgrade() {
                    near.unavailable(&"redis accepted CLIENT TRACKING, but the push naming the probe key did not arrive within the operation timeout (a proxy that drops pushes?)");
                }
                return false;
            }
        };
        match push.kind {
            PushKind::Invalidate => {
                let keys = invalidated_keys(push.data);
                if let Some(keys) = &keys {
                    unheard.retain(|probe| !keys.iter().any(|key| key == probe.as_bytes()));
                }
                let Some(near) = near.upgrade() else {
                    return false;
                };
                near.invalidated(keys);
            }
            PushKind::Disconnection => return false,
            _ => {}
        }
    }
    true
}

/// A connection to `client`'s server with tracking on, its pushes sent to `sender`; `None`
/// when it cannot be had (said once if Redis refuses RESP3 or tracking).
async fn track(
    near: &Weak<Near>,
    client: &Client,
    prefixes: &[String],
    sender: tokio::sync::mpsc::UnboundedSender<PushInfo>,
    operation_timeout: Duration,
) -> Option<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(operation_timeout))
        .set_response_timeout(Some(operation_timeout))
        .set_push_sender(sender);
    let connect = client.get_multiplexed_async_connection_with_config(&config);
    let mut connection = match tokio::time::timeout(operation_timeout, connect).await {
        Ok(Ok(connection)) => connection,
        // A server that does not speak RESP3 (before Redis 6) refuses `HELLO 3` here.
        Ok(Err(error)) if error.kind() != redis::ErrorKind::Io => {
            if let Some(near) = near.upgrade() {
                near.unavailable(&error);
            }
            return None;
        }
        _ => return None,
    };
    let mut tracking = redis::cmd("CLIENT");
    tracking.arg("TRACKING").arg("ON").arg("BCAST");
    for prefix in prefixes {
        tracking.arg("PREFIX").arg(prefix);
    }
    let enabled = tracking.query_async::<()>(&mut connection);
    match tokio::time::timeout(operation_timeout, enabled).await {
        Ok(Ok(())) => Some(connection),
        Ok(Err(error)) => {
            if let Some(near) = near.upgrade() {
                near.unavailable(&error);
            }
            None
        }
        Err(_) => None,
    }
}

/// Whether the connection answers a `PING` within the timeout.
async fn answers(connection: &mut MultiplexedConnection, timeout: Duration) -> bool {
    let ping = redis::cmd("PING");
    let reply = tokio::time::timeout(timeout, ping.query_async::<Value>(connection)).await;
    matches!(reply, Ok(Ok(_)))
}

/// The keys of an `invalidate` push: an array of keys, or nil for "everything".
fn invalidated_keys(data: Vec<Value>) -> Option<Vec<Vec<u8>>> {
    match data.into_iter().next() {
        Some(Value::Array(keys)) => Some(
            keys.into_iter()
                .filter_map(|key| match key {
                    Value::BulkString(key) => Some(key),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}
