//! A cluster's topology as the listener needs it: its primaries (one tracking connection
//! each) from `CLUSTER SLOTS`, and whether they changed since (then it connects again).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Client, ConnectionAddr, ProtocolVersion, Value};

/// `client` speaking RESP3 (push messages), at `address` instead of its own if given.
pub(super) fn resp3(client: &Client, address: Option<(&str, u16)>) -> Option<Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    let info = match address {
        None => info,
        // A Unix socket (or anything newer) is not a cluster node's address.
        Some((host, port)) => crate::store::at_tcp_address(info, host, port)?,
    };
    Client::open(info).ok()
}

/// The host `client` connects to, if it is a TCP address.
pub(super) fn host_of(client: &Client) -> Option<String> {
    match client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => Some(host.clone()),
        _ => None,
    }
}

/// The primaries of a cluster, as the first seed that answers tells (`CLUSTER SLOTS`), with
/// the seed's credentials and TLS settings; sorted, so that two answers compare.
pub(super) async fn primaries(
    seeds: &[Client],
    operation_timeout: Duration,
) -> Option<Vec<Primary>> {
    for seed in seeds {
        let Some(client) = resp3(seed, None) else {
            continue;
        };
        let connect = client.get_multiplexed_async_connection();
        let Ok(Ok(mut connection)) = tokio::time::timeout(operation_timeout, connect).await else {
            continue;
        };
        let Some(seed_host) = host_of(&client) else {
            continue;
        };
        if let Some(found) = cluster_primaries(&mut connection, &seed_host, operation_timeout).await
        {
            return Some(found);
        }
    }
    None
}

/// The primaries `CLUSTER SLOTS` names, on a connection to a node at `node_host`.
pub(super) async fn cluster_primaries(
    connection: &mut MultiplexedConnection,
    node_host: &str,
    operation_timeout: Duration,
) -> Option<Vec<Primary>> {
    let mut command = redis::cmd("CLUSTER");
    command.arg("SLOTS");
    let slots = command.query_async::<Value>(connection);
    let Ok(Ok(Value::Array(ranges))) = tokio::time::timeout(operation_timeout, slots).await else {
        return None;
    };
    let mut found: Vec<Primary> = ranges
        .iter()
        .filter_map(|range| {
            // [start, end, [host, port, id, …] of the primary, replicas…]
            let Value::Array(range) = range else {
                return None;
            };
            let Some(Value::Int(start)) = range.first() else {
                return None;
            };
            let Some(Value::Array(primary)) = range.get(2) else {
                return None;
            };
            let host = match primary.first()? {
                Value::BulkString(host) => String::from_utf8(host.clone()).ok()?,
                Value::SimpleString(host) => host.clone(),
                _ => return None,
            };
            let Value::Int(port) = primary.get(1)? else {
                return None;
            };
            // An empty or unknown endpoint means "the node you asked".
            let host = if host.is_empty() || host == "?" {
                node_host.to_owned()
            } else {
                host
            };
            Some(Primary {
                address: (host, u16::try_from(*port).ok()?),
                slot: u16::try_from(*start).ok()?,
            })
        })
        .collect();
    found.sort_by(|a, b| (&a.address, a.slot).cmp(&(&b.address, b.slot)));
    found.dedup_by(|later, first| later.address == first.address);
    (!found.is_empty()).then_some(found)
}

/// A primary of a cluster, and one slot it serves (where its probe key goes).
#[derive(Debug, Clone)]
pub(super) struct Primary {
    pub(super) address: (String, u16),
    pub(super) slot: u16,
}

/// Whether two answers of `CLUSTER SLOTS` name the same primaries (slots moving between
/// them change nothing for tracking: each primary's tracking covers whatever it serves).
pub(super) fn same_primaries(a: &[Primary], b: &[Primary]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.address == b.address)
}
