//! Single flight: concurrent misses on one entry through one handle call the function once.
//! The first miss leads; the others wait (bounded) for it to finish, then read the entry it
//! filled. If the leader's value could not be cached (`None`, `Err`, a refused fill), each
//! follower runs its own call: waiting never makes a result wrong, only fewer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::locks::MutexExt as _;

#[derive(Debug, Default)]
pub(crate) struct Flights {
    in_flight: Mutex<HashMap<String, watch::Receiver<()>>>,
}

/// This call's role in the flight for one entry.
#[derive(Debug)]
pub(crate) enum Flight<'a> {
    /// Load and fill; dropping the guard (done, failed or cancelled) releases the followers.
    Leader(LeaderGuard<'a>),
    /// Another call is loading this entry.
    Follower(watch::Receiver<()>),
}

#[derive(Debug)]
pub(crate) struct LeaderGuard<'a> {
    flights: &'a Flights,
    key: String,
    /// Never sent on: its drop is the signal.
    _done: watch::Sender<()>,
}

impl Flights {
    pub(crate) fn join(&self, key: String) -> Flight<'_> {
        let mut in_flight = self.in_flight.lock_recovered();
        if let Some(done) = in_flight.get(&key) {
            return Flight::Follower(done.clone());
        }
        let (sender, receiver) = watch::channel(());
        in_flight.insert(key.clone(), receiver);
        Flight::Leader(LeaderGuard {
            flights: self,
            key,
            _done: sender,
        })
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.flights.in_flight.lock_recovered();
        in_flight.remove(&self.key);
    }
}

/// Waits until the leader is done, or `limit` passed; `true` if the leader finished.
pub(crate) async fn wait_for_leader(mut done: watch::Receiver<()>, limit: Duration) -> bool {
    // `changed` fails once the sender is dropped: that is the leader finishing.
    tokio::time::timeout(limit, done.changed()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_call_leads_and_releases_followers_when_done() {
        let flights = Flights::default();
        let Flight::Leader(leader) = flights.join("k".into()) else {
            panic!("first leads")
        };
        let Flight::Follower(done) = flights.join("k".into()) else {
            panic!("second follows")
        };
        assert!(matches!(flights.join("other".into()), Flight::Leader(_)));
        let waiting = tokio::spawn(wait_for_leader(done, Duration::from_secs(10)));
        drop(leader);
        assert!(waiting.await.unwrap(), "released by the leader's drop");
        assert!(
            matches!(flights.join("k".into()), Flight::Leader(_)),
            "the flight is over"
        );
    }

    #[tokio::test]
    async fn a_follower_stops_waiting_after_the_limit() {
        let flights = Flights::default();
        let _leader = flights.join("k".into());
        let Flight::Follower(done) = flights.join("k".into()) else {
            panic!()
        };
        assert!(!wait_for_leader(done, Duration::from_millis(10)).await);
    }
}
