use cache_core::{cached_get, cached_update};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Item {
    id: i64,
    r#type: String,
}

#[cached_get(prefix = "item", key = "id", schema = Item, tags = ["type:{r#type}"])]
async fn get_item(id: i64) -> Option<Item> {
    Some(Item {
        id,
        r#type: "book".into(),
    })
}

#[cached_update(prefix = "item", key = "id", tags = ["type:{r#type}"])]
async fn retype(id: i64, r#type: &str) -> Result<(), String> {
    let _ = (id, r#type);
    Ok(())
}

fn main() {
    let _ = (get_item(1), retype(1, "dvd"));
}
