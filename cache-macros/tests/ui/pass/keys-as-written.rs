//! Keys as users write them: a field of a parameter, a field of `self`, a template combining
//! both, a tuple field, a raw identifier, and an `Option` field (`None` bypasses).

use cache_core::{cached_delete, cached_get, cached_update, Cache};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: i64,
    email: String,
}

pub struct GetUser {
    pub id: i64,
    pub email: Option<String>,
}

pub struct Path<T>(pub T);

struct Repo {
    cache: Cache,
    tenant: String,
}

impl Repo {
    #[cached_get(prefix = "user", key = "req.id", schema = User, cache = self.cache)]
    async fn by_request(&self, req: GetUser) -> Option<User> {
        Some(User { id: req.id, email: String::new() })
    }

    #[cached_get(prefix = "user", key = "req.email", schema = User, cache = self.cache)]
    async fn by_optional_field(&self, req: &GetUser) -> Option<User> {
        req.email.clone().map(|email| User { id: 1, email })
    }

    #[cached_get(prefix = "tenant", key = "self.tenant", schema = User, cache = self.cache)]
    async fn of_tenant(&self) -> Option<User> {
        None
    }

    #[cached_get(
        prefix = "user",
        key = "{self.tenant}:{id}",
        schema = User,
        cache = self.cache,
        tags = ["tenant:{self.tenant}", "user:{req.id}", "mail:{email}"]
    )]
    async fn of_tenant_by_id(&self, id: i64, req: GetUser) -> Option<User> {
        let _ = req;
        Some(User { id, email: String::new() })
    }

    #[cached_get(prefix = "user", key = "path.0", schema = User, cache = self.cache)]
    async fn by_path(&self, path: Path<i64>) -> Option<User> {
        Some(User { id: path.0, email: String::new() })
    }

    #[cached_update(prefix = "kind", key = "r#type", cache = self.cache, tags = ["t:{self.tenant}"])]
    async fn retype(&self, r#type: String) -> Result<(), ()> {
        let _ = r#type;
        Ok(())
    }

    // An `impl Trait` return: written back as the body returns it.
    #[cached_delete(prefix = "user", key = "req.id", cache = self.cache)]
    async fn delete(&self, req: GetUser) -> impl std::fmt::Debug {
        req.id
    }
}

fn main() {
    let repo = Repo {
        cache: Cache::disabled(),
        tenant: "t".into(),
    };
    let _ = repo.by_request(GetUser { id: 1, email: None });
    let _ = repo.by_optional_field(&GetUser { id: 1, email: None });
    let _ = repo.of_tenant();
    let _ = repo.of_tenant_by_id(1, GetUser { id: 1, email: None });
    let _ = repo.by_path(Path(1));
    let _ = repo.retype("x".into());
    let _ = repo.delete(GetUser { id: 1, email: None });
}
