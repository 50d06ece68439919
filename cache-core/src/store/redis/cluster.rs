//! The steps only a Redis Cluster takes: a script touches one slot, so tags are checked and
//! stamped in their own slots, entries are invalidated slot by slot, members are pruned across
//! slots, and invalidations wait for replicas (`WAIT`) so that a failover cannot lose them
//! (that wait is Sentinel's too: one primary, its replicas promoted by the sentinels).

use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::Value;

use super::link::{Link, Opener};
use super::scripts::DRAIN_BATCH;
use super::RedisStore;
use crate::key;
use crate::locks::MutexExt as _;
use crate::store::{ttl_millis, Drain, Fill, StoreResult, TagKeys};

impl RedisStore {
    /// Prepares the connection to a Redis Cluster, without connecting.
    pub(crate) fn cluster(
        client: ClusterClient,
        replica_acks: u32,
        replica_wait: Duration,
    ) -> Self {
        Self::on_cluster(Opener::Cluster(client), replica_acks, replica_wait)
    }

    /// A cluster connection the application gave.
    pub(crate) fn given_cluster(
        connection: ClusterConnection,
        replica_acks: u32,
        replica_wait: Duration,
    ) -> Self {
        let opener = Opener::Given(Link::Cluster(connection));
        Self::on_cluster(opener, replica_acks, replica_wait)
    }

    /// A cluster store: invalidations wait for `replica_acks` replicas, `replica_wait` at most.
    fn on_cluster(opener: Opener, replica_acks: u32, replica_wait: Duration) -> Self {
        // Slot clocks are named by the slot tags: made here, not inside the first operation
        // (whose timeout they would eat into while blocking the runtime's thread).
        key::warm_slot_tags();
        RedisStore {
            replica_acks,
            replica_wait,
            ..Self::with(opener)
        }
    }

    /// Checks one tag of a fill on a cluster and registers the entry under it; `false` when
    /// the tag was invalidated after the miss read the namespace clock (`born`).
    pub(super) async fn tag_fill(
        &self,
        connection: &mut Link,
        tag: &TagKeys,
        fill: &Fill<'_>,
        born: Option<u64>,
    ) -> StoreResult<bool> {
        let mut create = String::new();
        loop {
            let reply: Vec<Value> = self
                .tag_fill_script
                .key(&tag.members)
                .key(&tag.stamp)
                .arg(fill.key)
                .arg(born.map(|born| born.to_string()).unwrap_or_default())
                .arg(ttl_millis(fill.life()))
                .arg(ttl_millis(fill.lease_time))
                .arg(&create)
                .invoke_async(connection)
                .await?;
            let mut reply = reply.into_iter();
            let stamp = match reply.next() {
                Some(Value::Int(stamp)) => stamp,
                _ => -1,
            };
            if stamp >= 0 || !create.is_empty() {
                let sample: Vec<Vec<u8>> = reply
                    .filter_map(|member| match member {
                        Value::BulkString(member) => Some(member),
                        _ => None,
                    })
                    .collect();
                prune_members(connection.clone(), tag.members.clone(), sample);
                return Ok(born.is_none_or(|born| u64::try_from(stamp).unwrap_or(0) <= born));
            }
            // The tag has no stamp (never invalidated, or lost): it gets the namespace clock's
            // `now`, above any stamp it may have had.
            create = self.clock_now(connection, fill.clock).await?.to_string();
        }
    }

    /// Cluster: invalidates entries, one script per slot (the slot's clock and its entries).
    /// `replicate`: wait for replicas (see [`RedisStore::replicated`]); not for the
    /// tombstones of a tag's members, which only clean up (the tag's stamp keeps reads right).
    pub(super) async fn invalidate_entries(
        &self,
        connection: &mut Link,
        namespace_clock: &str,
        entries: &[&str],
        lease_time: Duration,
        replicate: bool,
    ) -> StoreResult<()> {
        let mut by_slot: Vec<(u16, &str)> = entries
            .iter()
            .map(|entry| (key::slot_of(entry.as_bytes()), *entry))
            .collect();
        by_slot.sort_unstable();
        for group in by_slot.chunk_by(|a, b| a.0 == b.0) {
            let clock = key::slot_clock_key(namespace_clock, group[0].0);
            let mut invocation = self.invalidate_script.key(&clock);
            for (_, entry) in group {
                invocation.key(*entry);
            }
            invocation.arg(ttl_millis(lease_time)).arg(group.len());
            for (_, entry) in group {
                invocation.arg(key::bucket_field(entry, key::SLOT_CLOCK_BUCKETS));
            }
            invocation.invoke_async::<Vec<String>>(connection).await?;
            if replicate {
                self.replicated(connection, group[0].0).await?;
            }
        }
        Ok(())
    }

    /// Cluster: stamps tags with one new stamp of the namespace clock (tag stamps are
    /// comparable with the `born` of entries because they all come from that one clock),
    /// then each tag in its own slot. The members popped with it are invalidated here; the
    /// sets that may hold more are left to drain.
    pub(super) async fn stamp_tags(
        &self,
        connection: &mut Link,
        namespace_clock: &str,
        tags: &[TagKeys],
        lease_time: Duration,
    ) -> StoreResult<Drain> {
        let stamp: String = self
            .new_stamp_script
            .key(namespace_clock)
            .invoke_async(connection)
            .await?;
        let mut drain = Drain {
            stamp: stamp.clone(),
            sets: Vec::new(),
        };
        for tag in tags {
            let popped: Vec<String> = self
                .stamp_tag_script
                .key(&tag.members)
                .key(&tag.stamp)
                .arg(&stamp)
                .arg(ttl_millis(lease_time))
                .invoke_async(connection)
                .await?;
            self.replicated(connection, key::slot_of(tag.stamp.as_bytes()))
                .await?;
            // The tag is stamped (and replicated): reads are right from here on. Tombstoning
            // the popped members only cleans up, and does not fail the invalidation.
            let entries: Vec<&str> = popped.iter().map(String::as_str).collect();
            let cleanup =
                self.invalidate_entries(connection, namespace_clock, &entries, lease_time, false);
            if let Err(error) = cleanup.await {
                tracing::debug!(%error, "could not tombstone a tag's members; they expire with their TTL");
            }
            if popped.len() == DRAIN_BATCH {
                drain.sets.push(tag.members.clone());
            }
        }
        Ok(drain)
    }

    /// Cluster: waits until `replica_acks` replicas of the primary serving `slot` have what
    /// this connection wrote there (`WAIT`), at most `replica_wait`; behind Sentinel the same
    /// on the one primary (`slot` is then 0). Replication is asynchronous: without this, a
    /// primary killed right after acknowledging an invalidation could take it along, and its
    /// promoted replica would serve the old entry until its TTL. Replicas that do not
    /// acknowledge in time fail the step (the invalidation stays pending and is delivered
    /// again); a primary without replicas is not waited for (behind Sentinel, once the
    /// sentinels confirmed it is still the primary: a primary cut off from its replica, which
    /// was promoted meanwhile, also has none).
    pub(super) async fn replicated(&self, connection: &mut Link, slot: u16) -> StoreResult<()> {
        if self.replica_acks == 0 {
            return Ok(());
        }
        let sentinels = self.connection.sentinels();
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            slot,
            SlotAddr::Master,
        )));
        match (&*connection, sentinels) {
            (Link::Cluster(_), _) => {}
            // A primary found without replicas when connected: nothing to wait for.
            (Link::Single(_), Some(sentinels)) if !sentinels.unreplicated() => {}
            _ => return Ok(()),
        }
        let now = std::time::Instant::now();
        {
            let mut unreplicated = self.unreplicated.lock_recovered();
            match unreplicated.get(&slot) {
                Some(until) if *until > now => return Ok(()),
                Some(_) => {
                    unreplicated.remove(&slot);
                }
                None => {}
            }
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.replica_acks)
            .arg(ttl_millis(self.replica_wait));
        let acks = on_primary(connection, wait, &route).await?;
        if matches!(acks, Value::Int(acks) if acks >= i64::from(self.replica_acks)) {
            return Ok(());
        }
        // Too few acknowledgements: a primary without replicas (a replica just promoted by a
        // failover has none) has nothing to wait for, and is not asked again for a while.
        // One whose replicas lag could lose the invalidation if it died now: the step
        // fails, so the invalidation stays pending and is delivered again (to the promoted
        // replica, if it comes to that).
        let role = on_primary(connection, redis::cmd("ROLE"), &route).await?;
        let replicas = match role {
            Value::Array(parts) => match parts.get(2) {
                Some(Value::Array(replicas)) => replicas.len(),
                _ => 0,
            },
            _ => 0,
        };
        if replicas == 0 {
            if let Some(sentinels) = sentinels {
                if !sentinels.still_primary().await {
                    self.connection.discard();
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "the primary has no replica, and the sentinels do not vouch for it",
                    )));
                }
            }
            tracing::debug!(slot, "the primary has no replica to wait for");
            self.unreplicated
                .lock_recovered()
                .insert(slot, now + UNREPLICATED_FOR);
            return Ok(());
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no replica acknowledged the invalidation in time",
        )))
    }
}

/// `command` on the primary: routed to the one serving the route's slot on a cluster, sent
/// as it is on one server's connection.
async fn on_primary(
    connection: &mut Link,
    command: redis::Cmd,
    route: &RoutingInfo,
) -> StoreResult<Value> {
    let reply = match connection {
        Link::Cluster(connection) => connection.route_command(command, route.clone()).await,
        other => command.query_async::<Value>(other).await,
    };
    reply.and_then(Value::extract_error)
}

/// Cluster: removes from a tag's member set those of `sample` whose entries are gone, off the
/// caller's path (as the fill script does on one server, three looked at per fill keep a set
/// within about one and a half times its live entries). Not atomic across the two slots: a
/// member filled again between the check and the removal is unregistered, which costs only
/// the eager cleanup of that entry (reads check the tag's stamp, not the set).
fn prune_members(mut connection: Link, members: String, sample: Vec<Vec<u8>>) {
    if sample.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        for member in sample {
            let exists: StoreResult<i64> = redis::cmd("EXISTS")
                .arg(&member)
                .query_async(&mut connection)
                .await;
            if exists == Ok(0) {
                let _: StoreResult<i64> = redis::cmd("SREM")
                    .arg(&members)
                    .arg(&member)
                    .query_async(&mut connection)
                    .await;
            }
        }
    });
}

/// How long a slot whose primary had no replica to acknowledge is not waited for.
const UNREPLICATED_FOR: Duration = Duration::from_secs(10);
