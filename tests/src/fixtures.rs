#![allow(missing_docs)] // test fixtures: the names say it all
//! A small users repository cached with the macros, over an in-memory "database" that counts
//! how often it is asked: the shape of a user's sqlx repository, minus the database.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use cache_core::{cached_delete, cached_get, cached_update, Cache};
use serde::{Deserialize, Serialize};

/// What `GET /users/{id}` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRead {
    pub id: i64,
    pub name: String,
    pub avatar: Option<String>,
    pub birthday: String,
}

/// What a login needs; shares the hash `user:{id}` with [`UserRead`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserLogin {
    pub id: i64,
    pub email: String,
    pub password: String,
}

/// One row of the fake database.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub name: String,
    pub avatar: Option<String>,
    pub birthday: String,
    pub email: String,
    pub password: String,
}

impl Row {
    pub fn sample(id: i64) -> Row {
        Row {
            id,
            name: format!("user{id}"),
            avatar: None,
            birthday: "2000-01-31".into(),
            email: format!("user{id}@example.com"),
            password: format!("hash{id}"),
        }
    }

    fn read(&self) -> UserRead {
        UserRead {
            id: self.id,
            name: self.name.clone(),
            avatar: self.avatar.clone(),
            birthday: self.birthday.clone(),
        }
    }

    fn login(&self) -> UserLogin {
        UserLogin {
            id: self.id,
            email: self.email.clone(),
            password: self.password.clone(),
        }
    }
}

/// The repository under test.
#[derive(Debug)]
pub struct UserRepo {
    pub cache: Cache,
    rows: Mutex<BTreeMap<i64, Row>>,
    loads: AtomicUsize,
    /// When set, every database call fails with this message.
    pub failing: Mutex<Option<String>>,
}

impl UserRepo {
    pub fn new(cache: Cache) -> UserRepo {
        UserRepo {
            cache,
            rows: Mutex::new(BTreeMap::new()),
            loads: AtomicUsize::new(0),
            failing: Mutex::new(None),
        }
    }

    pub fn insert(&self, row: Row) {
        self.rows.lock().unwrap().insert(row.id, row);
    }

    /// How many times a cached read reached the database.
    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    fn load(&self, id: i64) -> Result<Option<Row>, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if let Some(message) = self.failing.lock().unwrap().clone() {
            return Err(message);
        }
        Ok(self.rows.lock().unwrap().get(&id).cloned())
    }

    #[cached_get(prefix = "user", key = "id", schema = UserRead, cache = self.cache)]
    pub async fn get_user(&self, id: i64) -> Result<Option<UserRead>, String> {
        Ok(self.load(id)?.map(|row| row.read()))
    }

    #[cached_get(prefix = "user", key = "id", schema = UserLogin, cache = self.cache, ttl = 60)]
    pub async fn get_login(&self, id: i64) -> Result<Option<UserLogin>, String> {
        Ok(self.load(id)?.map(|row| row.login()))
    }

    #[cached_get(prefix = "user", key = "id", schema = UserRead, cache = self.cache)]
    pub async fn get_user_maybe(&self, id: Option<i64>) -> Option<UserRead> {
        let id = id?;
        self.load(id).ok().flatten().map(|row| row.read())
    }

    #[cached_update(prefix = "user", key = "id", cache = self.cache)]
    pub async fn rename(&self, id: i64, name: &str) -> Result<(), String> {
        if let Some(message) = self.failing.lock().unwrap().clone() {
            return Err(message);
        }
        let mut rows = self.rows.lock().unwrap();
        let row = rows.get_mut(&id).ok_or("no such user")?;
        row.name = name.to_owned();
        Ok(())
    }

    #[cached_delete(prefix = "user", key = "id", cache = self.cache)]
    pub async fn delete(&self, id: i64) -> Result<bool, String> {
        Ok(self.rows.lock().unwrap().remove(&id).is_some())
    }
}

/// A user row with a version that every write bumps: what the race tests and the checker
/// compare reads against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: i64,
    pub email: String,
    pub password: String,
    pub version: u64,
    pub deleted: bool,
}
