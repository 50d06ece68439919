use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Seat {
    id: i64,
}

#[cached_get(prefix = "seat", key = "at", schema = Seat)]
async fn seat_at(at: (i64, i64)) -> Option<Seat> {
    Some(Seat { id: at.0 * 100 + at.1 })
}

fn main() {}
