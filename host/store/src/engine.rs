//! The two database engines behind the store's one interface: SQLite (embedded, the default)
//! and PostgreSQL (shared by several hosts).
//!
//! Every statement is written once, with `$1, $2, …` parameters, which both engines read (sqlx's
//! SQLite driver binds `$N` by number). The [`db!`] macro runs one body against
//! whichever engine a transaction or pool belongs to: it expands the body once per engine, so
//! each copy is type-checked against that engine's own sqlx types (no dynamic `Any` layer, no
//! conversion of values or rows at run time). The SQL is the dialect both engines share (row
//! values, `ON CONFLICT`, `RETURNING`, window functions; `CAST(SUM(…) AS BIGINT)` where
//! PostgreSQL would answer `NUMERIC`). Rows are decoded through [`crate::rows::Columns`], which
//! both engines' rows implement.
//!
//! **Write transactions are serialized on both engines.** SQLite allows one writer and a write
//! transaction takes the lock at `BEGIN IMMEDIATE`. On PostgreSQL every write transaction
//! starts by taking one transaction-scoped advisory lock ([`WRITE_LOCK`]), so writers of every
//! host sharing the database run one at a time, each seeing every commit before it, as on
//! SQLite. The invariants the store's operations rely on (one use per approval token, the
//! gap-free hash-chained event log, replay cursors, single-use codes and tickets) therefore hold
//! across hosts by the database's own lock, never by a process's memory. Every write appends to
//! the one event chain, so writes could not run in parallel anyway: the chain is a sequence.
//! Reads never take the lock.

use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{PgConnection, Postgres, Sqlite, SqliteConnection};

use crate::Result;
use crate::rows::{ColumnValue, Columns};

/// Key of the PostgreSQL advisory lock every write transaction holds until it ends
/// (`pg_advisory_xact_lock`); the ASCII of `HAPPYX:W`, so no other application using the same
/// database is likely to pick it by chance.
pub(crate) const WRITE_LOCK: i64 = 0x4841_5050_5958_3a57;

/// How a PostgreSQL write transaction starts: `BEGIN` and the [`WRITE_LOCK`] in one round
/// trip (one simple-protocol message holding both statements), as every write pays it.
const BEGIN_WRITE: &str = "BEGIN; SELECT pg_advisory_xact_lock(5206530950243564119)";

/// A store's connections.
#[derive(Debug, Clone)]
pub(crate) enum Engine {
    Sqlite {
        /// One connection: SQLite allows one writer, and queueing in-process is fairer than
        /// spinning on `SQLITE_BUSY`.
        write: SqlitePool,
        read: SqlitePool,
    },
    Postgres {
        pool: PgPool,
    },
}

/// One of each engine's variant of a thing: what [`db!`] matches on.
pub(crate) enum Either<S, P> {
    Sqlite(S),
    Postgres(P),
}

impl Engine {
    /// The pool reads go to.
    pub(crate) fn reader(&self) -> Either<&SqlitePool, &PgPool> {
        match self {
            Engine::Sqlite { read, .. } => Either::Sqlite(read),
            Engine::Postgres { pool } => Either::Postgres(pool),
        }
    }

    /// The pool of the write connection, for the few reads that must queue behind this
    /// process's writes (SQLite); on PostgreSQL the one pool.
    pub(crate) fn writer(&self) -> Either<&SqlitePool, &PgPool> {
        match self {
            Engine::Sqlite { write, .. } => Either::Sqlite(write),
            Engine::Postgres { pool } => Either::Postgres(pool),
        }
    }

    /// Starts a write transaction that holds the engine's write lock from its start.
    pub(crate) async fn begin(&self) -> Result<Tx> {
        match self {
            Engine::Sqlite { write, .. } => {
                Ok(Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?))
            }
            Engine::Postgres { pool } => Ok(Tx::Postgres(pool.begin_with(BEGIN_WRITE).await?)),
        }
    }

    /// Starts a read-only transaction with one consistent view of the database for all its
    /// statements (SQLite: a deferred transaction on the read pool; PostgreSQL: `REPEATABLE
    /// READ`). It takes no lock; end it with [`Tx::rollback`].
    pub(crate) async fn begin_read(&self) -> Result<Tx> {
        match self {
            Engine::Sqlite { read, .. } => Ok(Tx::Sqlite(read.begin().await?)),
            Engine::Postgres { pool } => Ok(Tx::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            )),
        }
    }

    /// Closes the pools, waiting for connections in use to be returned.
    pub(crate) async fn close(&self) {
        match self {
            Engine::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Engine::Postgres { pool } => pool.close().await,
        }
    }
}

/// An open transaction of either engine. Dropped without [`Tx::commit`], it rolls back.
#[derive(Debug)]
pub(crate) enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// Something statements run on, one connection of either engine: a [`Tx`], or a bare
/// connection (an import's target database).
pub(crate) trait Conn: Send {
    /// The connection statements run on.
    fn conn(&mut self) -> Either<&mut SqliteConnection, &mut PgConnection>;
}

impl Conn for Tx {
    fn conn(&mut self) -> Either<&mut SqliteConnection, &mut PgConnection> {
        match self {
            Tx::Sqlite(t) => Either::Sqlite(&mut **t),
            Tx::Postgres(t) => Either::Postgres(&mut **t),
        }
    }
}

impl Conn for SqliteConnection {
    fn conn(&mut self) -> Either<&mut SqliteConnection, &mut PgConnection> {
        Either::Sqlite(self)
    }
}

impl Conn for PgConnection {
    fn conn(&mut self) -> Either<&mut SqliteConnection, &mut PgConnection> {
        Either::Postgres(self)
    }
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => t.rollback().await?,
            Tx::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}

/// A result row of either engine, read through [`Columns`]: what `db!(rows …)` gives.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Columns for Row {
    fn col<T: ColumnValue>(&self, name: &str) -> Result<T> {
        match self {
            Row::Sqlite(r) => r.col(name),
            Row::Postgres(r) => r.col(name),
        }
    }
}

/// An engine's rows (one, an optional one, or several) as [`Row`]s, so both copies of a
/// `db!(rows …)` body give one type.
pub(crate) trait IntoRows {
    type Out;
    fn into_rows(self) -> Self::Out;
}

impl IntoRows for SqliteRow {
    type Out = Row;
    fn into_rows(self) -> Row {
        Row::Sqlite(self)
    }
}

impl IntoRows for PgRow {
    type Out = Row;
    fn into_rows(self) -> Row {
        Row::Postgres(self)
    }
}

impl<T: IntoRows> IntoRows for Option<T> {
    type Out = Option<T::Out>;
    fn into_rows(self) -> Self::Out {
        self.map(T::into_rows)
    }
}

impl<T: IntoRows> IntoRows for Vec<T> {
    type Out = Vec<T::Out>;
    fn into_rows(self) -> Self::Out {
        self.into_iter().map(T::into_rows).collect()
    }
}

/// Runs `$body` with `$c` bound to the engine-specific side of `$target`, expanded once per
/// engine:
///
/// - `db!(tx, c => …)` with `tx: &mut Tx`: `c` is `&mut SqliteConnection` or
///   `&mut PgConnection`; statements run with `.execute(&mut *c)`.
/// - `db!(read self, c => …)` with `self: &Store`: `c` is the read pool (`&SqlitePool` or
///   `&PgPool`); statements run with `.fetch_all(c)`. `db!(rows write self, c => …)` reads
///   through the write connection's pool instead ([`Engine::writer`]).
///
/// Both copies of the body must produce the same type: decode rows inside the body, or write
/// `db!(rows tx, c => …)` / `db!(rows read self, c => …)` for a body that gives the engine's
/// rows (one, `Option` or `Vec`), which come out as [`Row`]s.
macro_rules! db {
    // The one expansion: `$body` once per engine, `$c` bound to that engine's side of `$on`.
    (@on $on:expr, $c:ident => $body:expr) => {
        match $on {
            $crate::engine::Either::Sqlite($c) => $body,
            $crate::engine::Either::Postgres($c) => $body,
        }
    };
    (rows write $store:expr, $c:ident => $body:expr) => {
        $crate::engine::db!(@on $store.engine.writer(), $c => $crate::engine::IntoRows::into_rows($body))
    };
    (rows read $store:expr, $c:ident => $body:expr) => {
        $crate::engine::db!(@on $store.engine.reader(), $c => $crate::engine::IntoRows::into_rows($body))
    };
    (rows $tx:expr, $c:ident => $body:expr) => {
        $crate::engine::db!($tx, $c => $crate::engine::IntoRows::into_rows($body))
    };
    (read $store:expr, $c:ident => $body:expr) => {
        $crate::engine::db!(@on $store.engine.reader(), $c => $body)
    };
    ($tx:expr, $c:ident => $body:expr) => {
        $crate::engine::db!(@on {
            #[allow(unused_imports)]
            use $crate::engine::Conn as _;
            $tx.conn()
        }, $c => $body)
    };
}
pub(crate) use db;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_begin_takes_the_write_lock() {
        assert_eq!(
            BEGIN_WRITE,
            format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")
        );
    }
}
