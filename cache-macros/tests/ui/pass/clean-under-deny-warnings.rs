//! The expansion adds no warning to the user's crate, whatever the body's shape.
#![deny(warnings)]

use cache_core::{cached_delete, cached_get, cached_update};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
}

#[derive(Debug)]
struct DbError;

fn user(id: i64) -> User {
    User { id }
}

#[cached_get(prefix = "user", key = "id", schema = User)]
async fn one_line(id: i64) -> Option<User> { Some(user(id)) }

#[cached_get(prefix = "user", key = "id", schema = User)]
async fn one_value(id: i64) -> User { user(id) }

#[cached_get(prefix = "user", key = "id", schema = User)]
async fn statements(id: i64) -> Result<Option<User>, DbError> {
    let doubled = id * 2;
    if doubled < 0 {
        return Err(DbError);
    }
    Ok(Some(User { id }))
}

#[cached_get(prefix = "user", key = "id", schema = User)]
async fn question_mark(id: i64) -> Result<User, DbError> {
    let checked: Result<i64, DbError> = Ok(id);
    Ok(User { id: checked? })
}

#[cached_get(prefix = "user", key = "id", schema = User)]
async fn nested_block(id: i64) -> User {
    {
        User { id }
    }
}

#[cached_update(prefix = "user", key = "id")]
async fn unit_update(id: i64) {
    let _ = id;
}

#[cached_update(prefix = "user", key = "id")]
async fn empty_update(id: i64) -> Result<(), DbError> {
    Ok(())
}

#[cached_delete(prefix = "user", key = "id")]
async fn one_line_delete(id: i64) -> bool { id > 0 }

fn main() {
    let _ = (
        one_line(1),
        one_value(1),
        statements(1),
        question_mark(1),
        nested_block(1),
        unit_update(1),
        empty_update(1),
        one_line_delete(1),
    );
}
