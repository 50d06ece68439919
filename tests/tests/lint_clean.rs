//! The expansion is clean under `clippy::pedantic` in the user's crate: the test command runs
//! clippy with `-D warnings` over this file, whose annotated functions have every body shape.
#![warn(clippy::pedantic)]

use cache_core::{cached_delete, cached_get, cached_update, Cache};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Item {
    id: i64,
    name: String,
}

struct Repo {
    cache: Cache,
}

impl Repo {
    #[cached_get(prefix = "item", key = "id", schema = Item, cache = self.cache)]
    async fn one_line(&self, id: i64) -> Option<Item> {
        Some(Item {
            id,
            name: "x".into(),
        })
    }

    #[cached_get(prefix = "item", key = "id", schema = Item, cache = self.cache, tags = ["item:{name}"])]
    async fn statements(&self, id: i64) -> Result<Option<Item>, String> {
        if id < 0 {
            return Err("negative".into());
        }
        let name = format!("item{id}");
        Ok(Some(Item { id, name }))
    }

    #[cached_update(prefix = "item", key = "id", cache = self.cache, tags = ["item:{name}"])]
    async fn rename(&self, id: i64, name: &str) -> Result<(), String> {
        let _ = (id, name);
        Ok(())
    }

    #[cached_delete(prefix = "item", key = "id", cache = self.cache)]
    async fn delete(&self, id: i64) -> bool {
        id >= 0
    }
}

#[tokio::test]
async fn annotated_functions_of_every_shape_run() {
    let repo = Repo {
        cache: Cache::builder().url("mem://").build().unwrap(),
    };
    assert_eq!(repo.one_line(1).await.map(|item| item.id), Some(1));
    assert_eq!(repo.statements(2).await.unwrap().unwrap().name, "item2");
    repo.rename(2, "item2").await.unwrap();
    assert!(repo.delete(2).await);
}
