//! The database: SQLite (default, a file created with its schema on start) or PostgreSQL,
//! through sqlx's `Any` driver so that one set of queries serves both. Queries are runtime
//! strings (`query_as` + `FromRow`), so a fresh clone builds without a live database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

/// Which SQL the two databases disagree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The pool and the SQL of each query for its dialect.
#[derive(Debug, Clone)]
pub struct Database {
    /// The connection pool.
    pub pool: AnyPool,
    /// The SQL of each query.
    pub sql: Queries,
    /// The queries the repository ran through [`Database::executor`], on every clone.
    queries: Arc<AtomicU64>,
}

/// Every query the repository runs.
#[derive(Debug, Clone)]
pub struct Queries {
    pub(crate) user_info: String,
    pub(crate) current_user: String,
    pub(crate) user_in_db: String,
    pub(crate) user_id_by_email: String,
    pub(crate) list: String,
    pub(crate) list_ids: String,
    /// `SELECT … WHERE id IN (` before the placeholders of [`Queries::list_by_ids`].
    list_by_ids: String,
    pub(crate) search: String,
    pub(crate) insert: String,
    pub(crate) update: String,
    pub(crate) update_password: String,
    pub(crate) delete: String,
}

impl Queries {
    fn new(dialect: Dialect) -> Queries {
        // SQLite stores the date as text; PostgreSQL has a DATE column, which takes a text
        // parameter only through a cast. Reading, both give text through the cast.
        let date = |param: &str| match dialect {
            Dialect::Sqlite => param.to_owned(),
            Dialect::Postgres => format!("CAST({param} AS DATE)"),
        };
        let list_columns = "name, id, email, avatar";
        Queries {
            user_info: "SELECT name, id, CAST(birthday AS TEXT) AS birthday, age, avatar FROM users WHERE id = $1".into(),
            current_user: "SELECT id, name, email FROM users WHERE id = $1".into(),
            user_in_db: "SELECT id, name, password FROM users WHERE email = $1".into(),
            user_id_by_email: "SELECT id FROM users WHERE email = $1".into(),
            list: format!("SELECT {list_columns} FROM users ORDER BY id LIMIT $1 OFFSET $2"),
            list_ids: "SELECT id FROM users ORDER BY id LIMIT $1 OFFSET $2".into(),
            list_by_ids: format!("SELECT {list_columns} FROM users WHERE id IN ("),
            search: format!(
                "SELECT {list_columns} FROM users WHERE name LIKE $1 ESCAPE '\\' ORDER BY id LIMIT $2 OFFSET $3"
            ),
            insert: format!(
                "INSERT INTO users (name, password, avatar, age, email, birthday) \
                 VALUES ($1, $2, $3, $4, $5, {}) RETURNING id",
                date("$6")
            ),
            update: format!(
                "UPDATE users SET name = $1, avatar = $2, age = $3, birthday = {} WHERE id = $5",
                date("$4")
            ),
            update_password: "UPDATE users SET password = $1 WHERE id = $2".into(),
            delete: "DELETE FROM users WHERE id = $1".into(),
        }
    }
}

impl Queries {
    /// The rows of `count` ids (at least one), bound as `$1` … `$count`, in id order.
    ///
    /// A placeholder list, not one array parameter: sqlx's `Any` driver binds no arrays
    /// (PostgreSQL's `= ANY($1)` would need the `Postgres` driver), and `IN ($1, …)` is the
    /// same SQL on both databases. Each count is a statement text of its own, which is why
    /// the repository runs it unprepared (`persistent(false)`): a page of 100 ids must not
    /// push the other queries out of each connection's statement cache.
    pub(crate) fn list_by_ids(&self, count: usize) -> String {
        let mut sql = self.list_by_ids.clone();
        for n in 1..=count {
            if n > 1 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&n.to_string());
        }
        sql.push_str(") ORDER BY id");
        sql
    }
}

/// The table; the two databases differ in the id's auto-increment and the date type.
fn schema(dialect: Dialect) -> String {
    let (id, date) = match dialect {
        Dialect::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT"),
        Dialect::Postgres => ("BIGSERIAL PRIMARY KEY", "DATE"),
    };
    format!(
        "CREATE TABLE IF NOT EXISTS users (
            id {id},
            name VARCHAR(30) NOT NULL,
            password VARCHAR(60) NOT NULL,
            avatar VARCHAR(100),
            age BIGINT NOT NULL,
            email VARCHAR(60) NOT NULL UNIQUE,
            birthday {date} NOT NULL
        )"
    )
}

impl Database {
    /// Connects and creates the schema when missing.
    ///
    /// # Errors
    ///
    /// An unsupported URL, or the database refusing.
    pub async fn connect(url: &str) -> Result<Database, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(sqlx::Error::Configuration(
                format!("DATABASE_URL must be sqlite:… or postgres://…, not `{url}`").into(),
            ));
        };
        let mut options = AnyPoolOptions::new();
        if url.contains(":memory:") {
            // Every connection to `sqlite::memory:` is a database of its own.
            options = options.max_connections(1);
        }
        let pool = options.connect(url).await?;
        sqlx::query(&schema(dialect)).execute(&pool).await?;
        Ok(Database {
            pool,
            sql: Queries::new(dialect),
            queries: Arc::default(),
        })
    }

    /// The pool, for one query, counted (what the list benchmark reports as database queries
    /// per request: one relaxed atomic add next to a round trip to the database).
    pub fn executor(&self) -> &AnyPool {
        self.queries.fetch_add(1, Ordering::Relaxed);
        &self.pool
    }

    /// How many queries went through [`Database::executor`] since the connection, on this
    /// database and its clones.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}
