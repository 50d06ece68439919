use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct ProductSummary {
    id: i64,
}

#[cached_get(prefix = "products", key = "page", schema = Vec<ProductSummary>)]
async fn products(page: u32) -> Vec<ProductSummary> {
    vec![ProductSummary { id: i64::from(page) }]
}

fn main() {}
