//! Invalidations Redis did not take (unreachable, refusing writes): kept by the handle,
//! blocking its reads of what they concern, and delivered — on the next call, and by a
//! background task with backoff — as soon as Redis takes them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{is_unreachable, Engine, OUTAGE_BACKOFF_LIMIT};
use crate::Error;

impl Engine {
    /// Whether any tag invalidation waits for Redis (then every hit's tags must be checked).
    pub(crate) fn tag_invalidations_pending(&self) -> bool {
        self.pending.has_tags()
    }

    /// Taken before a read: `None` when no tag invalidation waits for Redis, else a mark
    /// that [`delivered_since`](Self::delivered_since) compares after the read.
    pub(crate) fn tag_delivery_mark(&self) -> Option<u64> {
        self.pending.tag_delivery_mark()
    }

    /// Whether a delivery of pending invalidations completed since `mark` was taken.
    pub(crate) fn delivered_since(&self, mark: u64) -> bool {
        self.pending.deliveries() != mark
    }

    /// Whether reads of the entry at `key`, carrying `tags`, must skip Redis because an
    /// invalidation of it is undelivered. Tries to deliver pending invalidations first, so
    /// recovery is immediate.
    pub(crate) async fn reads_blocked(self: &Arc<Self>, key: &str, tags: &[String]) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        if self.delivery.permit() {
            // Rare, and a large future: boxed so that it does not weigh on every read.
            Box::pin(self.deliver_pending()).await;
        }
        // Counted as a bypass by the call, which knows whether it is its first read.
        self.pending.blocks(key, tags)
    }

    /// [`reads_blocked`](Self::reads_blocked) for many entries (read without tags known),
    /// delivering at most once.
    pub(crate) async fn reads_blocked_many<'k>(
        self: &Arc<Self>,
        keys: impl ExactSizeIterator<Item = &'k str>,
    ) -> Vec<bool> {
        if self.pending.is_empty() {
            return vec![false; keys.len()];
        }
        if self.delivery.permit() {
            Box::pin(self.deliver_pending()).await;
        }
        keys.map(|key| self.pending.blocks(key, &[])).collect()
    }

    /// Whether an undelivered invalidation concerns the entry at `key` or one of `tags`,
    /// without trying to deliver first.
    pub(crate) fn blocks(&self, key: &str, tags: &[String]) -> bool {
        self.pending.blocks(key, tags)
    }

    /// Tries to deliver the pending invalidations now.
    async fn deliver_pending(self: &Arc<Self>) {
        let delivery = self
            .pending
            .deliver(|undelivered| async move {
                let keys: Vec<&str> = undelivered.keys.iter().map(String::as_str).collect();
                self.store_invalidation(&keys, &undelivered.tags).await?;
                Ok::<_, Error>(undelivered)
            })
            .await;
        self.metrics.pending(self.pending.len());
        match delivery {
            Ok(()) => {
                self.delivery.succeeded();
                if self.pending.is_empty() {
                    tracing::info!(
                        "delivered the invalidations that Redis missed while unreachable"
                    );
                }
            }
            Err(error) if is_unreachable(&error) => {
                self.delivery.failed_up_to(OUTAGE_BACKOFF_LIMIT);
            }
            Err(_) => self.delivery.failed(),
        }
    }

    /// Keeps trying to deliver pending invalidations in the background, so that other
    /// processes stop seeing the entries soon after Redis is reachable again, even if this
    /// process makes no further calls. Ends when nothing is pending or the handle is dropped.
    fn spawn_delivery(self: &Arc<Self>) {
        if self.delivery_task_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.delivery_task_running.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let Some(delay) = weak.upgrade().map(|engine| engine.delivery.delay()) else {
                    return;
                };
                tokio::time::sleep(delay).await;
                let Some(engine) = weak.upgrade() else { return };
                if engine.delivery.permit() {
                    engine.deliver_pending().await;
                }
                if engine.pending.is_empty() {
                    engine.delivery_task_running.store(false, Ordering::Release);
                    // An invalidation may have failed between the check and the store above.
                    if engine.pending.is_empty() {
                        return;
                    }
                    engine.spawn_delivery();
                    return;
                }
            }
        });
    }

    /// Keeps what Redis did not take, blocking this handle's reads of it, and starts
    /// delivering it in the background.
    pub(super) fn remember_undelivered(self: &Arc<Self>, keys: &[&str], tags: &[String]) {
        let longest_ttl = Duration::from_millis(self.longest_ttl_ms.load(Ordering::Relaxed));
        self.pending.add(keys, tags, longest_ttl);
        self.metrics.pending(self.pending.len());
        self.spawn_delivery();
    }
}
