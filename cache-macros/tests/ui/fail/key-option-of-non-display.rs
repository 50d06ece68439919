use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Product {
    id: i64,
}

struct Kind(i64);

#[cached_get(prefix = "product", key = "kind", schema = Product)]
async fn first_of_kind(kind: Option<Kind>) -> Option<Product> {
    kind.map(|kind| Product { id: kind.0 })
}

fn main() {}
