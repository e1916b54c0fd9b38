//! Whole-database transfer, engine side: table discovery, a consistent snapshot
//! streamed row by row for `happyx export`, and a fresh database built in a
//! temp file inside the data dir for `happyx import`, renamed into place only
//! after its single transaction committed.
//!
//! Tables are discovered from `sqlite_master` (every table but SQLite's own and
//! `_sqlx_migrations`), columns from `PRAGMA table_info`, so tables added by
//! later migrations are transferred without code changes here. Values are
//! typed [`Cell`]s; nothing here knows the file format.
//!
//! PostgreSQL takes the same path with one more step on each side, so that both engines share
//! one format, one set of import checks and one checksum:
//! - **Export** reads a `REPEATABLE READ READ ONLY` transaction. The table list and column
//!   kinds are those of SQLite's schema at the same version (an in-memory database migrated
//!   for the purpose; a test proves the two schemas equal). Text keys are ordered with
//!   `COLLATE "C"` (byte order, as SQLite's), so both engines write identical files for the
//!   same state.
//! - **Import** builds and checks the scratch SQLite database exactly as for SQLite, then
//!   copies it into PostgreSQL in one transaction that holds the write lock and first checks
//!   that the target holds no rows. Tables are copied parents first, so no foreign key needs
//!   deferring; a failure at any step rolls the whole copy back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use futures::{Stream, StreamExt};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous,
};
use sqlx::{
    Arguments, ConnectOptions, Connection, PgConnection, Row, SqliteConnection, TypeInfo, ValueRef,
};

use super::config::{DatabaseUrl, StorageConfig};
use super::{DB_FILE, Result, StoreError, migrate};

/// Tables whose rows are markers set by a migration rather than state: a database that holds
/// only these is empty for an import (a freshly migrated PostgreSQL database holds the
/// backfill marker until a host opens it).
const MARKER_TABLES: &[&str] = &["event_hash_backfill"];

/// SQLite's type affinity of a column, from its declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    Integer,
    Text,
    /// Declared `BLOB`: only blobs (or NULL).
    Blob,
    Real,
    Numeric,
    /// No declared type: any value.
    Any,
}

impl Affinity {
    /// The affinity rules of <https://www.sqlite.org/datatype3.html#determination_of_column_affinity>.
    pub fn of(decl: &str) -> Affinity {
        let d = decl.to_ascii_uppercase();
        if d.contains("INT") {
            Affinity::Integer
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
            Affinity::Text
        } else if d.contains("BLOB") {
            Affinity::Blob
        } else if d.is_empty() {
            Affinity::Any
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }

    /// Whether a value of this kind may be stored without SQLite converting it.
    pub fn accepts(self, cell: &Cell) -> bool {
        matches!(
            (self, cell),
            (_, Cell::Null)
                | (Affinity::Any, _)
                | (Affinity::Integer, Cell::Integer(_))
                | (Affinity::Text, Cell::Text(_))
                | (Affinity::Blob, Cell::Blob(_))
                | (
                    Affinity::Real | Affinity::Numeric,
                    Cell::Integer(_) | Cell::Real(_)
                )
        )
    }
}

/// One column of a transferred table.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    /// The declared type, as written in the migration.
    pub decl_type: String,
    pub affinity: Affinity,
}

/// One transferred table: its columns in declaration order.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    pub columns: Vec<ColumnInfo>,
    /// Positions of the primary key columns in key order; empty: rows go in rowid order.
    key: Vec<usize>,
}

impl TableInfo {
    /// A table description (rows ordered by rowid), for checks on rows built elsewhere.
    pub fn new(name: impl Into<String>, columns: Vec<ColumnInfo>) -> Self {
        TableInfo {
            name: name.into(),
            columns,
            key: Vec::new(),
        }
    }

    /// The `ORDER BY` list that puts rows in key order on either engine: text keys compare
    /// bytewise (`COLLATE "C"` on PostgreSQL, SQLite's default), so both engines agree.
    fn order_by(&self, postgres: bool) -> String {
        if self.key.is_empty() {
            return "rowid".into();
        }
        self.key
            .iter()
            .map(|&i| {
                let c = &self.columns[i];
                match (postgres, c.affinity) {
                    (true, Affinity::Text) => format!("{} COLLATE \"C\"", ident(&c.name)),
                    _ => ident(&c.name),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A typed SQLite value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Quotes an identifier for SQL (`"` doubled).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn connect_options(path: &Path) -> Result<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .foreign_keys(true)
        .busy_timeout(std::time::Duration::from_secs(30))
        // Whole-table scans are slow by design here; no per-statement warnings.
        .disable_statement_logging())
}

/// Every user table of the database, sorted by name, with its columns.
async fn discover(conn: &mut SqliteConnection) -> Result<Vec<TableInfo>> {
    let names: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(names.len());
    for (name, sql) in names {
        let cols: Vec<(i64, String, String, i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT cid, name, type, \"notnull\", dflt_value, pk FROM pragma_table_info($1) ORDER BY cid",
        )
        .bind(&name)
        .fetch_all(&mut *conn)
        .await?;
        let mut pk: Vec<(i64, usize)> = cols
            .iter()
            .enumerate()
            .filter(|(_, c)| c.5 > 0)
            .map(|(i, c)| (c.5, i))
            .collect();
        pk.sort();
        let without_rowid = sql.to_ascii_uppercase().contains("WITHOUT ROWID");
        let key = if !pk.is_empty() {
            pk.into_iter().map(|p| p.1).collect()
        } else if without_rowid {
            // Unreachable in SQLite (a WITHOUT ROWID table needs a primary key).
            (0..cols.len()).collect()
        } else {
            Vec::new()
        };
        out.push(TableInfo {
            name,
            columns: cols
                .into_iter()
                .map(|c| ColumnInfo {
                    affinity: Affinity::of(&c.2),
                    name: c.1,
                    decl_type: c.2,
                })
                .collect(),
            key,
        });
    }
    Ok(out)
}

/// The tables of this version's schema as SQLite declares them: an in-memory database,
/// migrated for the purpose. PostgreSQL's schema is the same (proven by
/// `migrate::introspect`); its exports and imports follow this list.
async fn canonical_tables() -> Result<Vec<TableInfo>> {
    let opts = SqliteConnectOptions::from_str("sqlite::memory:")?.disable_statement_logging();
    // One connection for the pool's whole life: an in-memory database lives in its connection.
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .connect_with(opts)
        .await?;
    migrate::run(&pool).await?;
    let mut conn = pool.acquire().await?;
    let tables = discover(&mut conn).await;
    drop(conn);
    pool.close().await;
    tables
}

fn postgres_options(url: &DatabaseUrl) -> Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url.expose())?.disable_statement_logging())
}

/// Applied schema version of a PostgreSQL database; `None` when it has never been migrated.
async fn postgres_schema_version(conn: &mut PgConnection) -> Result<Option<i64>> {
    let (migrated,): (bool,) = sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !migrated {
        return Ok(None);
    }
    let (v,): (Option<i64>,) =
        sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await?;
    Ok(Some(v.unwrap_or(0)))
}

/// The first table (of `tables`, markers aside) that holds rows in a PostgreSQL database,
/// with its count.
async fn postgres_first_nonempty(
    conn: &mut PgConnection,
    tables: &[TableInfo],
) -> Result<Option<(String, i64)>> {
    for t in tables {
        if MARKER_TABLES.contains(&t.name.as_str()) {
            continue;
        }
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            ident(&t.name)
        )))
        .fetch_one(&mut *conn)
        .await?;
        if n > 0 {
            return Ok(Some((t.name.clone(), n)));
        }
    }
    Ok(None)
}

/// Highest applied migration, 0 for a database without migrations.
async fn schema_version_of(conn: &mut SqliteConnection) -> Result<i64> {
    let exists: Option<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if exists.is_none() {
        return Ok(0);
    }
    let (v,): (Option<i64>,) =
        sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
            .fetch_one(&mut *conn)
            .await?;
    Ok(v.unwrap_or(0))
}

fn postgres_cell_at(row: &PgRow, i: usize) -> Result<Cell> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let kind = raw.type_info().name().to_string();
    Ok(match kind.as_str() {
        "INT8" => Cell::Integer(row.try_get::<i64, _>(i)?),
        "INT4" => Cell::Integer(row.try_get::<i32, _>(i)?.into()),
        "INT2" => Cell::Integer(row.try_get::<i16, _>(i)?.into()),
        "BOOL" => Cell::Integer(row.try_get::<bool, _>(i)?.into()),
        "FLOAT8" => Cell::Real(row.try_get::<f64, _>(i)?),
        "FLOAT4" => Cell::Real(row.try_get::<f32, _>(i)?.into()),
        "BYTEA" => Cell::Blob(row.try_get::<Vec<u8>, _>(i)?),
        _ => Cell::Text(row.try_get::<String, _>(i)?),
    })
}

fn cell_at(row: &SqliteRow, i: usize) -> Result<Cell> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let kind = raw.type_info().name().to_string();
    Ok(match kind.as_str() {
        "INTEGER" | "BOOLEAN" => Cell::Integer(row.try_get_unchecked::<i64, _>(i)?),
        "REAL" => Cell::Real(row.try_get_unchecked::<f64, _>(i)?),
        "BLOB" => Cell::Blob(row.try_get_unchecked::<Vec<u8>, _>(i)?),
        _ => Cell::Text(row.try_get_unchecked::<String, _>(i)?),
    })
}

/// The connection a snapshot reads.
enum Source {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// A read transaction over the configured database: one consistent snapshot for
/// the whole export, even while hosts keep writing (SQLite's WAL, PostgreSQL's
/// repeatable read).
pub struct Snapshot {
    conn: Source,
    tables: Vec<TableInfo>,
    schema_version: i64,
}

impl Snapshot {
    /// Opens the database of `data_dir` (or the PostgreSQL database `storage.url` names)
    /// without migrating or writing it. `NotFound` when there is no database (or, on
    /// PostgreSQL, one no host has migrated).
    pub async fn open(data_dir: &Path, storage: &StorageConfig) -> Result<Snapshot> {
        if let Some(url) = &storage.url {
            return Self::open_postgres(url).await;
        }
        let path = data_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::NotFound);
        }
        let mut conn = SqliteConnection::connect_with(&connect_options(&path)?).await?;
        // A deferred BEGIN takes its snapshot at the first read, below.
        sqlx::query("BEGIN").execute(&mut conn).await?;
        let schema_version = schema_version_of(&mut conn).await?;
        let tables = discover(&mut conn).await?;
        Ok(Snapshot {
            conn: Source::Sqlite(conn),
            tables,
            schema_version,
        })
    }

    async fn open_postgres(url: &DatabaseUrl) -> Result<Snapshot> {
        let mut conn = PgConnection::connect_with(&postgres_options(url)?).await?;
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut conn)
            .await?;
        let found = postgres_schema_version(&mut conn)
            .await?
            .ok_or(StoreError::NotFound)?;
        // The table list is this version's; another version's database is not read by it.
        if found != migrate::SCHEMA_VERSION {
            return Err(StoreError::SchemaMismatch {
                found,
                supported: migrate::SCHEMA_VERSION,
            });
        }
        Ok(Snapshot {
            conn: Source::Postgres(conn),
            tables: canonical_tables().await?,
            schema_version: found,
        })
    }

    pub fn schema_version(&self) -> i64 {
        self.schema_version
    }

    pub fn tables(&self) -> &[TableInfo] {
        &self.tables
    }

    /// Streams the rows of table number `index` (values in column order),
    /// ordered by primary key (or rowid). Rows are fetched lazily through a
    /// bounded channel, so memory does not grow with the table.
    pub fn rows(&mut self, index: usize) -> impl Stream<Item = Result<Vec<Cell>>> + '_ {
        let t = &self.tables[index];
        let postgres = matches!(self.conn, Source::Postgres(_));
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            t.column_list(),
            ident(&t.name),
            t.order_by(postgres)
        );
        let width = t.columns.len();
        match &mut self.conn {
            Source::Sqlite(conn) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch(conn)
                .map(move |row| {
                    let row = row?;
                    (0..width).map(|i| cell_at(&row, i)).collect()
                })
                .left_stream(),
            Source::Postgres(conn) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch(conn)
                .map(move |row| {
                    let row = row?;
                    (0..width).map(|i| postgres_cell_at(&row, i)).collect()
                })
                .right_stream(),
        }
    }

    /// Ends the read transaction and closes the connection.
    pub async fn close(self) -> Result<()> {
        match self.conn {
            Source::Sqlite(mut conn) => {
                sqlx::query("COMMIT").execute(&mut conn).await?;
                conn.close().await?;
            }
            Source::Postgres(mut conn) => {
                sqlx::query("COMMIT").execute(&mut conn).await?;
                conn.close().await?;
            }
        }
        Ok(())
    }
}

/// The first table of an existing database that holds rows, with its count;
/// `None` when the database is absent or holds no row in any table. Opens the
/// database without migrating it. On PostgreSQL, migration markers do not count (see
/// [`MARKER_TABLES`]).
pub async fn first_nonempty_table(
    data_dir: &Path,
    storage: &StorageConfig,
) -> Result<Option<(String, i64)>> {
    if let Some(url) = &storage.url {
        let mut conn = PgConnection::connect_with(&postgres_options(url)?).await?;
        let found = match postgres_schema_version(&mut conn).await? {
            None => None,
            Some(_) => postgres_first_nonempty(&mut conn, &canonical_tables().await?).await?,
        };
        conn.close().await?;
        return Ok(found);
    }
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let mut conn = SqliteConnection::connect_with(&connect_options(&path)?).await?;
    let tables = discover(&mut conn).await?;
    let mut found = None;
    for t in &tables {
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            ident(&t.name)
        )))
        .fetch_one(&mut conn)
        .await?;
        if n > 0 {
            found = Some((t.name.clone(), n));
            break;
        }
    }
    conn.close().await?;
    Ok(found)
}

/// Why one row could not be inserted. Messages name constraints and columns,
/// never stored values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertError {
    /// A UNIQUE or PRIMARY KEY constraint; `column` when SQLite named one.
    Duplicate {
        column: Option<String>,
    },
    /// A CHECK constraint; `column` and the allowed values for `col IN (…)` checks.
    Check {
        column: Option<String>,
        allowed: Option<String>,
        constraint: String,
    },
    NotNull {
        column: String,
    },
    /// Anything else SQLite refused (its message, which holds no values).
    Other(String),
}

/// A foreign key that points nowhere, found before commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DanglingReference {
    pub table: String,
    /// Zero-based position of the row in insertion order.
    pub index: u64,
    pub column: String,
    pub parent: String,
}

/// A chunk whose position disagrees with its neighbours (see `chunk_overlap`).
#[derive(Debug)]
pub struct ChunkProblem {
    pub table: String,
    /// Position of the row in the imported table (0-based).
    pub index: u64,
    pub column: String,
    pub message: &'static str,
}

/// A gap (or a bad start) in the restored event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqGap {
    /// Zero-based position of the offending event in insertion order.
    pub index: u64,
    pub seq: i64,
    /// The sequence number expected instead.
    pub expected: i64,
}

fn classify(e: sqlx::Error) -> std::result::Result<InsertError, StoreError> {
    let sqlx::Error::Database(db) = &e else {
        return Err(e.into());
    };
    let msg = db.message().to_string();
    let after = |prefix: &str| msg.strip_prefix(prefix).map(str::trim);
    let column_of = |s: &str| {
        s.split(',')
            .next()
            .and_then(|c| c.trim().rsplit('.').next())
            .map(str::to_string)
    };
    if let Some(rest) = after("UNIQUE constraint failed:") {
        return Ok(InsertError::Duplicate {
            column: column_of(rest),
        });
    }
    if let Some(rest) = after("NOT NULL constraint failed:") {
        return Ok(InsertError::NotNull {
            column: column_of(rest).unwrap_or_default(),
        });
    }
    if let Some(rest) = after("CHECK constraint failed:") {
        // `status IN ('a', 'b')` → column `status`, allowed `'a', 'b'`.
        let (column, allowed) = match rest.split_once(" IN (") {
            Some((col, list)) if col.chars().all(|c| c.is_alphanumeric() || c == '_') => (
                Some(col.to_string()),
                list.strip_suffix(')').map(str::to_string),
            ),
            _ => (None, None),
        };
        return Ok(InsertError::Check {
            column,
            allowed,
            constraint: rest.to_string(),
        });
    }
    Ok(InsertError::Other(msg))
}

/// Name of the temp database an import builds before renaming it into place.
pub const IMPORT_TEMP_FILE: &str = ".happyx.db.import";

/// A fresh database in a temp file inside the data dir, schema applied, one
/// write transaction open. Dropped without [`ImportTarget::install`], the temp
/// file is removed and the data dir is as before.
pub struct ImportTarget {
    conn: Option<SqliteConnection>,
    tmp: PathBuf,
    dest: PathBuf,
    tables: HashMap<String, (TableInfo, String)>,
    installed: bool,
}

impl ImportTarget {
    /// Creates the temp database (replacing a stale one) and opens the transaction.
    pub async fn create(data_dir: &Path) -> Result<ImportTarget> {
        let tmp = data_dir.join(IMPORT_TEMP_FILE);
        remove_db_files(&tmp);
        let opts = connect_options(&tmp)?
            .create_if_missing(true)
            // The file is discarded on failure, so a memory journal is enough;
            // durability comes from the fsync before the rename.
            .journal_mode(SqliteJournalMode::Memory)
            .synchronous(SqliteSynchronous::Off);
        let mut target = ImportTarget {
            conn: None,
            tmp: tmp.clone(),
            dest: data_dir.join(DB_FILE),
            tables: HashMap::new(),
            installed: false,
        };
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        migrate::run(&pool).await?;
        pool.close().await;
        let mut conn = SqliteConnection::connect_with(&opts).await?;
        let tables = discover(&mut conn).await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await?;
        // Rows arrive in any table order; references are checked before commit.
        sqlx::query("PRAGMA defer_foreign_keys = ON")
            .execute(&mut conn)
            .await?;
        target.tables = tables
            .into_iter()
            .map(|t| {
                let cols: Vec<String> = t.columns.iter().map(|c| ident(&c.name)).collect();
                let marks = vec!["?"; cols.len()].join(", ");
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES ({marks})",
                    ident(&t.name),
                    cols.join(", ")
                );
                (t.name.clone(), (t, sql))
            })
            .collect();
        target.conn = Some(conn);
        Ok(target)
    }

    /// The table named `name`, if the schema has it.
    pub fn table(&self, name: &str) -> Option<&TableInfo> {
        self.tables.get(name).map(|(t, _)| t)
    }

    /// Inserts one row (values in the table's column order). The outer error
    /// is a storage failure; the inner one a refused row.
    pub async fn insert(
        &mut self,
        table: &str,
        values: Vec<Cell>,
    ) -> Result<std::result::Result<(), InsertError>> {
        let (Some((_, sql)), Some(conn)) = (self.tables.get(table), self.conn.as_mut()) else {
            return Err(StoreError::NotFound);
        };
        let mut args = SqliteArguments::default();
        for v in values {
            let r = match v {
                Cell::Null => args.add(None::<i64>),
                Cell::Integer(i) => args.add(i),
                Cell::Real(f) => args.add(f),
                Cell::Text(s) => args.add(s),
                Cell::Blob(b) => args.add(b),
            };
            r.map_err(sqlx::Error::Encode)?;
        }
        match sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), args)
            .execute(&mut *conn)
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(e) => classify(e).map(Err),
        }
    }

    /// The first row whose foreign key points at a missing row, if any.
    pub async fn dangling_reference(&mut self) -> Result<Option<DanglingReference>> {
        let conn = self.conn.as_mut().ok_or(StoreError::NotFound)?;
        let row: Option<(String, Option<i64>, String, i64)> =
            sqlx::query_as("SELECT \"table\", rowid, parent, fkid FROM pragma_foreign_key_check")
                .fetch_optional(&mut *conn)
                .await?;
        let Some((table, rowid, parent, fkid)) = row else {
            return Ok(None);
        };
        let column: Option<(String,)> =
            sqlx::query_as("SELECT \"from\" FROM pragma_foreign_key_list($1) WHERE id = $2")
                .bind(&table)
                .bind(fkid)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(Some(DanglingReference {
            table,
            // Into a fresh table, rowids are assigned 1, 2, … in insertion order.
            index: rowid.unwrap_or(1).saturating_sub(1) as u64,
            column: column.map(|c| c.0).unwrap_or_default(),
            parent,
        }))
    }

    /// The first output or transcript chunk that overlaps the one before it in its
    /// stream (or a terminal output chunk past its session's `persisted_offset`).
    pub async fn chunk_overlap(&mut self) -> Result<Option<ChunkProblem>> {
        let conn = self.conn.as_mut().ok_or(StoreError::NotFound)?;
        let checks: [(&str, &str, &str, &str); 3] = [
            (
                "agent_run_outputs",
                "byte_offset",
                "overlaps or precedes the previous chunk of its run's stream (in chunk_index order)",
                "SELECT rowid FROM (SELECT rowid, byte_offset, LAG(byte_offset + length) OVER                  (PARTITION BY run_id, stream ORDER BY chunk_index) AS prev_end FROM agent_run_outputs)                  WHERE byte_offset < prev_end ORDER BY rowid LIMIT 1",
            ),
            (
                "transcript_chunks",
                "byte_offset",
                "overlaps the previous chunk of its terminal's stream",
                "SELECT rowid FROM (SELECT rowid, byte_offset, LAG(byte_offset + length) OVER                  (PARTITION BY pty_id, stream ORDER BY byte_offset) AS prev_end FROM transcript_chunks)                  WHERE byte_offset < prev_end ORDER BY rowid LIMIT 1",
            ),
            (
                "transcript_chunks",
                "length",
                "ends past its terminal's persisted_offset",
                "SELECT c.rowid FROM transcript_chunks c JOIN pty_sessions p ON p.id = c.pty_id                  WHERE c.stream = 'output' AND c.byte_offset + c.length > p.persisted_offset                  ORDER BY c.rowid LIMIT 1",
            ),
        ];
        for (table, column, message, q) in checks {
            if !self.tables.contains_key(table) {
                continue;
            }
            let row: Option<(i64,)> = sqlx::query_as(q).fetch_optional(&mut *conn).await?;
            if let Some((rowid,)) = row {
                return Ok(Some(ChunkProblem {
                    table: table.into(),
                    index: rowid.saturating_sub(1) as u64,
                    column: column.into(),
                    message,
                }));
            }
        }
        Ok(None)
    }

    /// The first break in the events table's `seq` (which must be 1, 2, … n).
    pub async fn event_seq_gap(&mut self) -> Result<Option<SeqGap>> {
        if !self.tables.contains_key("events") {
            return Ok(None);
        }
        let conn = self.conn.as_mut().ok_or(StoreError::NotFound)?;
        let row: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT rowid, seq, rn FROM (SELECT rowid, seq, ROW_NUMBER() OVER (ORDER BY seq) \
             + COALESCE((SELECT seq FROM event_anchor WHERE id = 1), 0) AS rn FROM events) \
             WHERE seq <> rn ORDER BY rn LIMIT 1",
        )
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.map(|(rowid, seq, rn)| SeqGap {
            index: rowid.saturating_sub(1) as u64,
            seq,
            expected: rn,
        }))
    }

    /// Checks the restored event chain ([`crate::audit`]) as imported: nothing is re-hashed
    /// or re-based. The outer error is a storage failure; the inner one the first bad `seq`.
    pub async fn verify_chain(
        &mut self,
    ) -> Result<std::result::Result<crate::audit::ChainSummary, crate::audit::ChainError>> {
        let conn = self.conn.as_mut().ok_or(StoreError::NotFound)?;
        super::verify_chain_on(conn, &happyx_core::progress::Progress::hidden()).await
    }

    /// The stored chain hash of the restored event at `seq`, if that event exists.
    pub async fn event_hash_at(&mut self, seq: i64) -> Result<Option<String>> {
        let conn = self.conn.as_mut().ok_or(StoreError::NotFound)?;
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT hash FROM events WHERE seq = $1")
                .bind(seq)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(row.and_then(|(h,)| h))
    }

    /// Drops the marker that asks the first open to hash events that have none: an export's
    /// events carry their hashes (a legacy state, which has none, keeps the marker).
    pub async fn chain_is_restored(&mut self) -> Result<()> {
        let conn = self.conn.as_mut().ok_or(StoreError::NotFound)?;
        sqlx::query("DELETE FROM event_hash_backfill")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Commits, makes the file durable and renames it over the data dir's
    /// database (whose leftover WAL files, from an empty database, are removed).
    pub async fn install(mut self) -> Result<()> {
        let mut conn = self.conn.take().ok_or(StoreError::NotFound)?;
        sqlx::query("COMMIT").execute(&mut conn).await?;
        sqlx::query("PRAGMA journal_mode = DELETE")
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let io = |e: std::io::Error| StoreError::Db(sqlx::Error::Io(e));
        std::fs::File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut p = self.dest.clone().into_os_string();
            p.push(suffix);
            match std::fs::remove_file(PathBuf::from(p)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(io)?;
        if let Some(dir) = self.dest.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        self.installed = true;
        Ok(())
    }
}

/// Why a checked import could not be copied into PostgreSQL; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresRefusal {
    /// The database holds rows (written by a host since the import began).
    NotEmpty { table: String, rows: i64 },
    /// A text value PostgreSQL cannot store (it holds a NUL character, which SQLite keeps).
    Unstorable {
        table: String,
        /// Zero-based position of the row in the imported table.
        index: u64,
        column: String,
    },
}

/// Rows per multi-row `INSERT` of the copy, bounded by PostgreSQL's 65,535 parameters.
const COPY_BATCH_ROWS: usize = 256;

impl ImportTarget {
    /// Commits the checked scratch database and copies it into the PostgreSQL database `url`
    /// names (migrating its schema first, as a host's start would): one transaction under the
    /// write lock, refused if the database holds rows. The scratch file goes either way.
    pub async fn install_postgres(
        mut self,
        url: &DatabaseUrl,
    ) -> Result<std::result::Result<(), PostgresRefusal>> {
        let mut scratch = self.conn.take().ok_or(StoreError::NotFound)?;
        sqlx::query("COMMIT").execute(&mut scratch).await?;
        let order = copy_order(&mut scratch, &self.tables).await?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_with(postgres_options(url)?)
            .await?;
        let result = copy_into(&mut scratch, &pool, &order).await;
        pool.close().await;
        let _ = scratch.close().await;
        result
    }
}

/// The tables of `tables` ordered parents first (every table after the tables its foreign
/// keys reference), so a copy never inserts a row before the row it references.
async fn copy_order(
    conn: &mut SqliteConnection,
    tables: &HashMap<String, (TableInfo, String)>,
) -> Result<Vec<TableInfo>> {
    let mut parents: HashMap<String, Vec<String>> = HashMap::new();
    for name in tables.keys() {
        let refs: Vec<(String,)> =
            sqlx::query_as("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list($1)")
                .bind(name)
                .fetch_all(&mut *conn)
                .await?;
        parents.insert(
            name.clone(),
            refs.into_iter()
                .map(|r| r.0)
                .filter(|p| p != name)
                .collect(),
        );
    }
    let mut names: Vec<&String> = tables.keys().collect();
    names.sort();
    let mut order: Vec<TableInfo> = Vec::with_capacity(names.len());
    while order.len() < names.len() {
        let placed = order.len();
        for name in &names {
            let done = |n: &String| order.iter().any(|t| &t.name == n);
            if done(name) {
                continue;
            }
            if parents
                .get(*name)
                .is_none_or(|ps| ps.iter().all(|p| done(p) || !tables.contains_key(p)))
            {
                order.push(tables[*name].0.clone());
            }
        }
        if order.len() == placed {
            return Err(StoreError::Corrupt("foreign keys form a cycle"));
        }
    }
    Ok(order)
}

/// The PostgreSQL half of [`ImportTarget::install_postgres`].
async fn copy_into(
    scratch: &mut SqliteConnection,
    pool: &sqlx::PgPool,
    order: &[TableInfo],
) -> Result<std::result::Result<(), PostgresRefusal>> {
    migrate::run_postgres(pool).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(super::engine::WRITE_LOCK)
        .execute(&mut *tx)
        .await?;
    if let Some((table, rows)) = postgres_first_nonempty(&mut tx, order).await? {
        return Ok(Err(PostgresRefusal::NotEmpty { table, rows }));
    }
    // The scratch database's markers replace the ones the migration seeded.
    for marker in MARKER_TABLES {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {}",
            ident(marker)
        )))
        .execute(&mut *tx)
        .await?;
    }
    for t in order {
        let select = format!(
            "SELECT {} FROM {} ORDER BY rowid",
            t.column_list(),
            ident(&t.name)
        );
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&mut *scratch);
        let width = t.columns.len();
        let mut batch: Vec<Vec<Cell>> = Vec::with_capacity(COPY_BATCH_ROWS);
        let mut index = 0u64;
        loop {
            let row = rows.next().await.transpose()?;
            if let Some(row) = &row {
                let cells: Vec<Cell> =
                    (0..width).map(|i| cell_at(row, i)).collect::<Result<_>>()?;
                if let Some(c) = cells
                    .iter()
                    .position(|c| matches!(c, Cell::Text(s) if s.contains('\0')))
                {
                    return Ok(Err(PostgresRefusal::Unstorable {
                        table: t.name.clone(),
                        index,
                        column: t.columns[c].name.clone(),
                    }));
                }
                batch.push(cells);
                index += 1;
            }
            if batch.len() == COPY_BATCH_ROWS || (row.is_none() && !batch.is_empty()) {
                insert_batch(&mut tx, t, std::mem::take(&mut batch)).await?;
            }
            if row.is_none() {
                break;
            }
        }
    }
    tx.commit().await?;
    Ok(Ok(()))
}

/// One multi-row `INSERT` of `rows` into `t`. NULLs are bound with their column's type, as
/// PostgreSQL wants (an untyped NULL would not cast to `BYTEA`).
async fn insert_batch(conn: &mut PgConnection, t: &TableInfo, rows: Vec<Vec<Cell>>) -> Result<()> {
    let width = t.columns.len();
    let mut args = PgArguments::default();
    let mut values = Vec::with_capacity(rows.len());
    for (r, row) in rows.into_iter().enumerate() {
        let marks: Vec<String> = (1..=width).map(|i| format!("${}", r * width + i)).collect();
        values.push(format!("({})", marks.join(", ")));
        for (cell, col) in row.into_iter().zip(&t.columns) {
            let added = match (cell, col.affinity) {
                (Cell::Null, Affinity::Integer) => args.add(None::<i64>),
                (Cell::Null, Affinity::Blob) => args.add(None::<Vec<u8>>),
                (Cell::Null, Affinity::Real | Affinity::Numeric) => args.add(None::<f64>),
                (Cell::Null, Affinity::Text | Affinity::Any) => args.add(None::<String>),
                (Cell::Integer(i), _) => args.add(i),
                (Cell::Real(f), _) => args.add(f),
                (Cell::Text(s), _) => args.add(s),
                (Cell::Blob(b), _) => args.add(b),
            };
            added.map_err(sqlx::Error::Encode)?;
        }
    }
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        ident(&t.name),
        t.column_list(),
        values.join(", ")
    );
    sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn remove_db_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.to_path_buf().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

impl Drop for ImportTarget {
    fn drop(&mut self) {
        if !self.installed {
            // Closing the connection discards the open transaction; the file
            // goes either way. (A dropped SqliteConnection closes in the background,
            // and removing an open file on Unix is safe.)
            drop(self.conn.take());
            remove_db_files(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_rules() {
        assert_eq!(Affinity::of("BIGINT"), Affinity::Integer);
        assert_eq!(Affinity::of("INTEGER"), Affinity::Integer);
        assert_eq!(Affinity::of("TEXT"), Affinity::Text);
        assert_eq!(Affinity::of("VARCHAR(10)"), Affinity::Text);
        assert_eq!(Affinity::of("BLOB"), Affinity::Blob);
        assert_eq!(Affinity::of(""), Affinity::Any);
        assert_eq!(Affinity::of("DOUBLE"), Affinity::Real);
        assert_eq!(Affinity::of("DECIMAL"), Affinity::Numeric);
        assert!(Affinity::Integer.accepts(&Cell::Integer(1)));
        assert!(!Affinity::Integer.accepts(&Cell::Text("1".into())));
        assert!(Affinity::Text.accepts(&Cell::Null));
        assert!(!Affinity::Blob.accepts(&Cell::Text("x".into())));
    }
}
