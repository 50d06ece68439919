//! Connections the application already has, handed to the cache instead of a URL
//! ([`CacheBuilder::redis`](crate::CacheBuilder::redis)).

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

/// A Redis connection the application already configured (TLS, credentials, timeouts,
/// database), for [`CacheBuilder::redis`](crate::CacheBuilder::redis). Made with `From` /
/// `.into()` from:
///
/// | source | reconnects | near cache |
/// |---|---|---|
/// | [`redis::Client`] | yes: a new connection after a failure | yes |
/// | [`MultiplexedConnection`] | no: once broken, the cache fails open until the process makes a new handle | no |
/// | `redis::aio::ConnectionManager` (feature `connection-manager`) | yes, by itself | no |
/// | `deadpool_redis::Pool` (feature `deadpool`) | yes: takes a new connection from the pool | no |
/// | [`ClusterClient`] | yes, per node | no |
/// | [`ClusterConnection`] | yes, by itself, per node | no |
///
/// A hit stays one command whatever the source: the cache holds one multiplexed connection
/// and shares it among all calls. From a pool it takes one connection out, once (and again
/// only after that one broke), so that no call pays the pool's checkout (deadpool-redis
/// sends `UNWATCH` and `PING` on every `Pool::get`). The near cache needs a connection of
/// its own that receives Redis' invalidation pushes, which only a [`redis::Client`] (or a
/// URL) can open: with another source, `near_cache` is a configuration error.
#[derive(Clone)]
pub struct RedisSource(pub(crate) Source);

/// The sources: each variant, the type it holds, and its name for `Debug`; the enum, its
/// names and the `From` impls are made from this one list.
macro_rules! sources {
    ($($(#[$cfg:meta])* $variant:ident($type:ty) = $name:literal),* $(,)?) => {
        // Built once per handle: the size of the larger clients does not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Clone)]
        pub(crate) enum Source {
            $($(#[$cfg])* $variant($type),)*
        }

        impl Source {
            /// What the source is, for `Debug` and errors (never its credentials).
            pub(crate) fn kind(&self) -> &'static str {
                match self {
                    $($(#[$cfg])* Source::$variant(_) => $name,)*
                }
            }
        }

        $(
            $(#[$cfg])*
            impl From<$type> for RedisSource {
                fn from(source: $type) -> Self {
                    RedisSource(Source::$variant(source))
                }
            }
        )*
    };
}

sources! {
    Client(redis::Client) = "redis::Client",
    Multiplexed(MultiplexedConnection) = "MultiplexedConnection",
    #[cfg(feature = "connection-manager")]
    Manager(redis::aio::ConnectionManager) = "ConnectionManager",
    #[cfg(feature = "deadpool")]
    Pool(deadpool_redis::Pool) = "deadpool_redis::Pool",
    ClusterClient(ClusterClient) = "ClusterClient",
    ClusterConnection(ClusterConnection) = "ClusterConnection",
}

impl std::fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RedisSource").field(&self.0.kind()).finish()
    }
}
