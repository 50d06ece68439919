//! Test harness: real redis-servers, clusters and Sentinel groups on free loopback ports
//! ([`server`], [`cluster`], [`sentinel`]), the README's ACL rules ([`acl`]), real faults (a listener that never
//! answers, a proxy that can be cut: [`proxy`]), what a test can observe (commands a server
//! received, log lines: [`log`]), the backend matrix the suites share ([`backend`]), and data
//! and timing helpers ([`fixtures`], [`measure`]). Every server is a child process stopped by
//! its PID when dropped.

pub mod acl;
pub mod backend;
pub mod cluster;
pub mod fixtures;
pub mod log;
pub mod measure;
pub mod proxy;
pub mod sentinel;
pub mod server;

pub use acl::{CACHE_ACL_COMMANDS, CLUSTER_ACL_COMMANDS, NEAR_ACL_COMMANDS};
pub use backend::Backend;
pub use log::{CapturedLog, CommandLog};
pub use proxy::{CuttableProxy, SilentListener};
pub use server::{free_port, refused_url, unique_namespace, RedisServer};
