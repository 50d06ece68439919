use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Total {
    cents: i64,
}

#[cached_get(prefix = "total", key = "ids", schema = Total)]
async fn total(ids: &[i64]) -> Option<Total> {
    Some(Total { cents: ids.iter().sum() })
}

#[cached_get(prefix = "total", key = "{tenant}:{ids}", schema = Total)]
async fn total_of_tenant(tenant: &str, ids: Vec<i64>) -> Option<Total> {
    Some(Total { cents: ids.iter().sum::<i64>() + tenant.len() as i64 })
}

fn main() {}
