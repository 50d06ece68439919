use std::future::Future;
use std::pin::Pin;

use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
}

// What `#[async_trait]` then another attribute leave: the `async` block wrapped once more.
#[cached_get(prefix = "user", key = "id", schema = User)]
fn get(id: i64) -> Pin<Box<dyn Future<Output = Option<User>> + Send>> {
    Box::pin(wrapped(async move { Some(User { id }) }))
}

fn wrapped<F>(future: F) -> F {
    future
}

fn main() {}
