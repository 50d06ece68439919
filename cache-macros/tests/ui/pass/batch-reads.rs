//! Every form `#[cached_get_many]` takes: the ids as `&[K]`, `&Vec<K>`, `Vec<K>` (`mut`
//! too); rows as `Vec<S>` with `key_field`, `Vec<Option<S>>`, `HashMap<K, S>`, with or
//! without `Result`; methods, free functions, string ids, tags of the value and of
//! parameters, and the handle given explicitly.
use std::collections::HashMap;

use cache_core::{cached_get_many, Cache};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: i64,
    team: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct Tenant {
    slug: String,
}

#[derive(Debug)]
struct DbError;

struct Repo {
    cache: Cache,
}

impl Repo {
    #[cached_get_many(prefix = "user", keys = "ids", schema = User, key_field = "id", cache = self.cache)]
    async fn users(&self, ids: &[i64]) -> Result<Vec<User>, DbError> {
        Ok(ids.iter().map(|&id| User { id, team: String::new() }).collect())
    }

    #[cached_get_many(prefix = "user", keys = "ids", schema = User, tags = ["team:{team}", "region:{region}"])]
    async fn by_position(&self, region: &str, ids: &Vec<i64>) -> Vec<Option<User>> {
        let _ = region;
        ids.iter().map(|_| None).collect()
    }

    #[cached_get_many(prefix = "user", keys = "ids", schema = User, ttl = 60)]
    async fn by_id(&self, mut ids: Vec<i64>) -> Result<HashMap<i64, User>, DbError> {
        ids.sort_unstable();
        Ok(HashMap::new())
    }
}

#[cached_get_many(prefix = "tenant", keys = "slugs", schema = Tenant, key_field = "slug")]
async fn tenants(slugs: &[String]) -> Vec<Tenant> {
    slugs.iter().map(|slug| Tenant { slug: slug.clone() }).collect()
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let repo = Repo { cache: Cache::disabled() };
        assert_eq!(repo.users(&[1, 2]).await.unwrap().len(), 2);
        assert_eq!(repo.by_position("eu", &vec![1]).await.len(), 1);
        assert!(repo.by_id(vec![2, 1]).await.unwrap().is_empty());
        assert_eq!(tenants(&["a".to_owned()]).await.len(), 1);
    });
}
