//! The repository: plain CRUD functions over the database, each cached read and each write
//! with one attribute, as the README's table under "The example server" lists them.

use std::fmt;

use cache_core::{cached_delete, cached_get, cached_get_many, cached_update, Cache};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::db::Database;

/// `GET /api/users/{id}`: the JSON keys in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct UserInfo {
    pub name: String,
    pub id: i64,
    pub birthday: String,
    pub age: i64,
    pub avatar: Option<String>,
}

/// The user behind a token, looked up on every authenticated request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct CurrentUser {
    pub id: i64,
    pub name: String,
    pub email: String,
}

/// What a login checks, looked up by email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct UserInDb {
    pub id: i64,
    pub name: String,
    pub password: String,
}

/// The duplicate-email check on create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct UserId {
    pub id: i64,
}

/// One row of `GET /api/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct UserListItem {
    pub name: String,
    pub id: i64,
    pub email: String,
    pub avatar: Option<String>,
}

/// A cached page of the list without keyword, rows and all (`LIST_CACHE=pages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPage {
    pub users: Vec<UserListItem>,
}

/// A cached page of the list without keyword as the ids of its rows, in page order
/// (`LIST_CACHE=ids`, the default): the rows are the entries `user:{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserIdPage {
    pub ids: Vec<i64>,
}

/// What a cached list page holds (`LIST_CACHE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListCache {
    /// The ids of its rows (`users:{last}:{limit}`, tagged [`LIST_TAG`]), and each row in
    /// the entry `user:{id}` that a single read of the user shares: a profile update drops
    /// its row, not the pages.
    #[default]
    Ids,
    /// The whole page (`user_pages:{last}:{limit}`, tagged [`LIST_TAG`] and [`ROWS_TAG`]):
    /// one read a page, but any profile update drops every page. The behaviour before
    /// `Ids`, kept to compare them (the list benchmark).
    Pages,
}

/// The key of a list page: offset and limit.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub last: i64,
    pub limit: i64,
}

impl Page {
    /// The page a list query asks for when it has nothing but `last` and `limit` (defaults 0
    /// and 50), for the response cache; `None` for any other query (a keyword, a parameter
    /// that does not parse, one the route does not know).
    pub fn from_query(query: Option<&str>) -> Option<Page> {
        let mut page = Page { last: 0, limit: 50 };
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
        {
            let (name, value) = pair.split_once('=')?;
            match name {
                "last" => page.last = value.parse().ok()?,
                "limit" => page.limit = value.parse().ok()?,
                _ => return None,
            }
        }
        Some(page)
    }

    /// The pages worth caching: the first hundred at the usual sizes (10, 20, 50, 100),
    /// aligned to their size. Any other offset or size is read from the database: every
    /// page cached is an entry, registered under the list's tag, and a client must not be
    /// able to grow both without bound by asking for arbitrary ones.
    pub fn is_cacheable(&self) -> bool {
        matches!(self.limit, 10 | 20 | 50 | 100)
            && self.last % self.limit == 0
            && self.last / self.limit < 100
    }
}

impl fmt::Display for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.last, self.limit)
    }
}

/// A new user, validated.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: String,
    pub password_hash: String,
    pub avatar: Option<String>,
    pub age: i64,
    pub email: String,
    pub birthday: String,
}

/// A profile update, validated.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileUpdate {
    pub name: String,
    pub avatar: Option<String>,
    pub age: i64,
    pub birthday: String,
}

/// The tag of everything that depends on which users a page holds (the id lists, and
/// whatever holds rows too): a create or a delete drops them all.
pub const LIST_TAG: &str = "users:list";

/// The tag of what holds the rows of many users (whole pages, cached pages of responses),
/// beside [`LIST_TAG`]: a profile update drops them all. The id lists do not carry it.
pub const ROWS_TAG: &str = "users:rows";

/// Users, cached.
#[derive(Debug, Clone)]
pub struct UserRepo {
    db: Database,
    cache: Cache,
    list_cache: ListCache,
}

impl UserRepo {
    /// A repository over `db`, caching through `cache` (`Cache::disabled()` for none), list
    /// pages as id lists.
    pub fn new(db: Database, cache: Cache) -> UserRepo {
        UserRepo {
            db,
            cache,
            list_cache: ListCache::default(),
        }
    }

    /// The same, caching list pages as `list_cache` says.
    #[must_use]
    pub fn with_list_cache(mut self, list_cache: ListCache) -> UserRepo {
        self.list_cache = list_cache;
        self
    }

    /// The database, for its query count.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The cache handle, for its statistics.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    #[cached_get(prefix = "user", key = "user_id", schema = UserInfo, cache = self.cache)]
    pub async fn user_info(&self, user_id: i64) -> Result<Option<UserInfo>, sqlx::Error> {
        sqlx::query_as(&self.db.sql.user_info)
            .bind(user_id)
            .fetch_optional(self.db.executor())
            .await
    }

    #[cached_get(prefix = "user", key = "user_id", schema = CurrentUser, cache = self.cache)]
    pub async fn current_user(&self, user_id: i64) -> Result<Option<CurrentUser>, sqlx::Error> {
        sqlx::query_as(&self.db.sql.current_user)
            .bind(user_id)
            .fetch_optional(self.db.executor())
            .await
    }

    /// Whether the user exists (the first check of every per-id write route).
    pub async fn exists(&self, user_id: i64) -> Result<bool, sqlx::Error> {
        Ok(self.current_user(user_id).await?.is_some())
    }

    /// Login lookup, keyed by email and tagged with the id, so that a password change (by
    /// id) drops it.
    #[cached_get(prefix = "user", key = "email", schema = UserInDb, cache = self.cache, tags = ["user:{id}"])]
    pub async fn user_in_db(&self, email: &str) -> Result<Option<UserInDb>, sqlx::Error> {
        sqlx::query_as(&self.db.sql.user_in_db)
            .bind(email)
            .fetch_optional(self.db.executor())
            .await
    }

    /// Duplicate-email check. Absences are cached too (most creates use a new email); the
    /// create invalidates the key.
    #[cached_get(
        prefix = "user",
        key = "email",
        schema = UserId,
        cache = self.cache,
        tags = ["user:{id}"],
        cache_none = true
    )]
    pub async fn user_id_by_email(&self, email: &str) -> Result<Option<UserId>, sqlx::Error> {
        sqlx::query_as(&self.db.sql.user_id_by_email)
            .bind(email)
            .fetch_optional(self.db.executor())
            .await
    }

    /// A page of the list without keyword; cached only for the bounded set of pages that
    /// [`Page::is_cacheable`] allows.
    pub async fn list(&self, page: Page) -> Result<Vec<UserListItem>, sqlx::Error> {
        // Without a cache the id list would be one more query for nothing.
        if !page.is_cacheable() || !self.cache.is_enabled() {
            return Ok(self.load_page(page).await?.users);
        }
        match self.list_cache {
            ListCache::Pages => Ok(self.list_page(page).await?.users),
            ListCache::Ids => {
                let page = self.list_ids(page).await?;
                // A user deleted since the id list was read has no row: left out (the
                // delete dropped the id list too, so the next read has the new one).
                self.list_items(&page.ids).await
            }
        }
    }

    /// The ids of a page, in page order; dropped by a create or a delete.
    #[cached_get(prefix = "users", key = "page", schema = UserIdPage, cache = self.cache, tags = ["users:list"])]
    pub async fn list_ids(&self, page: Page) -> Result<UserIdPage, sqlx::Error> {
        let ids = sqlx::query_scalar(&self.db.sql.list_ids)
            .bind(page.limit)
            .bind(page.last)
            .fetch_all(self.db.executor())
            .await?;
        Ok(UserIdPage { ids })
    }

    /// The rows of `ids`, in their order, in one round trip to Redis, with one query for
    /// those that missed. Each row is the entry `user:{id}` of the single reads, which every
    /// write of the user drops; an id without a row (deleted) is left out.
    #[cached_get_many(prefix = "user", keys = "ids", schema = UserListItem, key_field = "id", cache = self.cache)]
    pub async fn list_items(&self, ids: &[i64]) -> Result<Vec<UserListItem>, sqlx::Error> {
        // Without the cache (off, or Redis down) the body gets every id and its rows are the
        // answer as they come: `ORDER BY id` is the page order, as the id lists are in id
        // order. Through the cache the answer follows the ids, whatever the body's order.
        if ids.is_empty() {
            // `IN ()` is no SQL; through the cache an empty batch makes no call at all.
            return Ok(Vec::new());
        }
        let sql = self.db.sql.list_by_ids(ids.len());
        let mut query = sqlx::query_as(&sql).persistent(false);
        for id in ids {
            query = query.bind(*id);
        }
        query.fetch_all(self.db.executor()).await
    }

    /// The whole page (`LIST_CACHE=pages`).
    #[cached_get(prefix = "user_pages", key = "page", schema = UserPage, cache = self.cache, tags = ["users:list", "users:rows"])]
    pub async fn list_page(&self, page: Page) -> Result<UserPage, sqlx::Error> {
        self.load_page(page).await
    }

    async fn load_page(&self, page: Page) -> Result<UserPage, sqlx::Error> {
        let users = sqlx::query_as(&self.db.sql.list)
            .bind(page.limit)
            .bind(page.last)
            .fetch_all(self.db.executor())
            .await?;
        Ok(UserPage { users })
    }

    /// A keyword search: not cached (every keyword would be an entry of its own).
    pub async fn search(
        &self,
        keyword: &str,
        page: Page,
    ) -> Result<Vec<UserListItem>, sqlx::Error> {
        let escaped = keyword
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        sqlx::query_as(&self.db.sql.search)
            .bind(format!("%{escaped}%"))
            .bind(page.limit)
            .bind(page.last)
            .fetch_all(self.db.executor())
            .await
    }

    /// Creates a user; `Ok(None)` when the email is taken. Drops the email's cached absence
    /// and everything under `users:list`: a page may hold the new id.
    #[cached_update(prefix = "user", key = "email", cache = self.cache, tags = ["users:list"])]
    pub async fn create(&self, email: &str, user: NewUser) -> Result<Option<i64>, sqlx::Error> {
        let inserted = sqlx::query_scalar(&self.db.sql.insert)
            .bind(&user.name)
            .bind(&user.password_hash)
            .bind(&user.avatar)
            .bind(user.age)
            .bind(email)
            .bind(&user.birthday)
            .fetch_one(self.db.executor())
            .await;
        match inserted {
            Ok(id) => Ok(Some(id)),
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Drops the user's entries and whatever holds rows of many users (`users:rows`); the
    /// id lists stay: the user is on the same pages.
    #[cached_update(prefix = "user", key = "user_id", cache = self.cache, tags = ["user:{user_id}", "users:rows"])]
    pub async fn update_profile(
        &self,
        user_id: i64,
        profile: &ProfileUpdate,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&self.db.sql.update)
            .bind(&profile.name)
            .bind(&profile.avatar)
            .bind(profile.age)
            .bind(&profile.birthday)
            .bind(user_id)
            .execute(self.db.executor())
            .await?;
        Ok(())
    }

    /// The login entry keyed by email carries the tag `user:{id}`: this drops it, which is
    /// what the tutorial forgot (the old password kept working). No list holds a password,
    /// so no list is dropped (the row entry `user:{id}` goes with the key, and is read again).
    #[cached_update(prefix = "user", key = "user_id", cache = self.cache, tags = ["user:{user_id}"])]
    pub async fn update_password(
        &self,
        user_id: i64,
        password_hash: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&self.db.sql.update_password)
            .bind(password_hash)
            .bind(user_id)
            .execute(self.db.executor())
            .await?;
        Ok(())
    }

    /// Drops the user's entries and everything under `users:list`: the pages after the
    /// user's shift.
    #[cached_delete(prefix = "user", key = "user_id", cache = self.cache, tags = ["user:{user_id}", "users:list"])]
    pub async fn delete(&self, user_id: i64) -> Result<bool, sqlx::Error> {
        let deleted = sqlx::query(&self.db.sql.delete)
            .bind(user_id)
            .execute(self.db.executor())
            .await?;
        Ok(deleted.rows_affected() > 0)
    }
}
