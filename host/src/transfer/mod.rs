//! `happyx export` and `happyx import`: the whole state as versioned JSON, for
//! backups and rollbacks, and the legacy JSON state of the old deployment.
//!
//! # Export format (version 1)
//!
//! ```text
//! {"format":"happyx-export","version":1,"schema_version":1,"tables":{
//! "agent_run_outputs":[
//! {"byte_offset":0,"chunk_index":0,"data":{"$base64":"aGk="},…},
//! …
//! ],
//! "agent_runs":[…],
//! …
//! },
//! "meta":{"format":"happyx-export","exported_at":…,"host_version":"…","schema_version":1,
//!         "checksum":"sha256:<64 hex>","counts":{"agent_runs":3,…},
//!         "signature":{"algorithm":"ed25519","public_key":"<base64, 32 bytes>",
//!                      "value":"<base64, 64 bytes>"}}}
//! ```
//!
//! - `tables` holds every table of the database (SQLite's own and the
//!   migration bookkeeping excepted), sorted by name; each is an array of
//!   rows ordered by primary key (rowid for tables without one), one row per
//!   line. A row is an object of every column, keys sorted by name.
//! - Values: SQL `NULL` → `null`, INTEGER → a JSON integer, REAL → a JSON
//!   number, TEXT → a JSON string, BLOB → `{"$base64": "<standard base64,
//!   padded>"}` (the only object that appears as a value).
//! - `meta` holds everything that may differ between two exports of the same
//!   state; export → import → export gives byte-identical files apart from it.
//!   It is written last, because the checksum is known only at the end.
//!
//! # Checksum
//!
//! `meta.checksum` is `"sha256:"` + lowercase hex SHA-256 over:
//!
//! ```text
//! "happyx-export\n" "1\n" <schema_version in decimal> "\n"
//! for each table, in document order:
//!     "table " <name> "\n"
//!     for each row, in document order:
//!         <canonical row> "\n"
//! ```
//!
//! where the canonical row is the compact JSON (serde_json's escaping) of the
//! row's values, typed as above, as an object with keys sorted by name — the
//! exact bytes `export` writes for that row. `import` recomputes it from the
//! values it parsed, so whitespace and escaping choices of another writer do
//! not matter, but every value does.
//!
//! # Signature
//!
//! `meta.signature.value` is the Ed25519 signature, by the exporting host's key
//! (`DATA/host-signing.key`, see [`signing`]), of
//! `"happyx-export-signature\n1\n" <meta.checksum>`; `public_key` is that
//! key's public half. The checksum covers every value, so the signature does
//! too; the rest of `meta` (time, version, counts) is informational (counts are
//! checked against the rows).
//!
//! `import` trusts the importing data dir's own host key (if it has one) and
//! every `--trusted-key`. After the rows and the checksum are checked, it
//! refuses a file without `meta.signature` (`export_unsigned`), one whose
//! signature does not verify (`bad_signature`, always), and one signed by a key
//! it does not trust (`untrusted_signer`, or `no_trusted_key` when it trusts
//! none). `--allow-unsigned` accepts the unsigned and untrusted cases (the CLI
//! prints a warning and the summary's `signature` says which). A legacy state
//! directory is unsigned by nature: it is imported only with
//! `--allow-unsigned`, and its rows get the same validation.
//!
//! # Validation
//!
//! Every row is checked as the API would have written it before it is
//! inserted ([`validate`]); the database checks types, vocabularies,
//! uniqueness and, after the last row, references, chunk positions and the
//! event sequence. A refusal names the table, row position and column, never
//! the value.
//!
//! # Import
//!
//! All-or-nothing into a new or empty data dir: the rows go into a fresh
//! database in a temp file inside the data dir, in one transaction; the file
//! is renamed over `happyx.db` only after every check passed and the
//! transaction committed. With `storage.url` set, the checked temp database is
//! copied into that PostgreSQL database instead, in one transaction that first
//! checks the database holds no rows (`happyx_store::transfer`); export reads
//! PostgreSQL in one snapshot and writes the same bytes SQLite would for the
//! same state. The file is parsed as a stream (one row in memory at
//! a time) on a blocking thread, which hands rows through a bounded channel to
//! the inserter. Nothing is appended to the restored event log.
//!
//! # Files
//!
//! [`format`] the cells, rows and checksum both directions share; [`export`] writing;
//! [`parse`] the streaming reader; [`import`] checking and committing; [`legacy`] the old
//! deployment's state; [`validate`] the checks an imported row must pass; the signing key is
//! the store's ([`signing`]).

mod export;
mod format;
mod import;
pub mod legacy;
mod parse;
pub use happyx_store::signing;
pub mod validate;

pub use export::{ExportSummary, export};
pub(crate) use format::*;
pub use import::{
    ImportOptions, ImportSummary, import, parse_trusted_key, verify_export, verify_export_at,
};
pub(crate) use import::{final_checks, insert_error_message};
use parse::*;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::datadir::{self, DataDirError};
use crate::keyfile::KeyFileError;
use crate::progress::Progress;
use crate::store::config::StorageConfig;
use crate::store::transfer::{
    Cell, ImportTarget, InsertError, PostgresRefusal, Snapshot, TableInfo,
};
use crate::store::{SCHEMA_VERSION, StoreError};
use signing::{HostKey, PublicKey};

/// Value of the top-level `format` field.
pub const FORMAT: &str = "happyx-export";
/// Version of the export format this binary writes and reads.
pub const VERSION: i64 = 1;

/// Why an export or import failed. Messages name files, paths in the document
/// and columns; never stored values.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A record (or field) of the input is wrong; `path` locates it, e.g.
    /// `tables.agent_runs[17].status`.
    #[error("{source_name}: {path}: {message}")]
    Invalid {
        source_name: String,
        path: String,
        message: String,
    },
    #[error(
        "{source_name}: schema_version: the export has schema version {found}, this happyx has schema version {supported}; \
         import it with the happyx version that wrote it"
    )]
    SchemaMismatch {
        source_name: String,
        found: i64,
        supported: i64,
    },
    #[error(
        "{source_name}: meta.checksum: does not match the content (the file was altered or damaged)"
    )]
    Checksum { source_name: String },
    /// `target` is `data dir <path>`, or the PostgreSQL database's URL without its password.
    #[error(
        "{target} is not empty (table {table} holds {rows} rows); import only into a new or empty data dir or database"
    )]
    NotEmpty {
        target: String,
        table: String,
        rows: i64,
    },
    /// A row the checks accept but PostgreSQL cannot store (text with a NUL character).
    #[error(
        "{source_name}: tables.{table}[{index}].{column}: holds a NUL character, which PostgreSQL cannot store in text"
    )]
    Unstorable {
        source_name: String,
        table: String,
        index: u64,
        column: String,
    },
    #[error(
        "{source_name}: meta.signature: missing; this file is not signed by a HappyX host. \
         Import it only if you know where it came from, with --allow-unsigned"
    )]
    Unsigned { source_name: String },
    #[error(
        "{source_name}: meta.signature: does not verify (the file was altered after it was signed, or the signature is damaged)"
    )]
    BadSignature { source_name: String },
    #[error(
        "{source_name}: meta.signature: signed by the key {signer}, which is not trusted here; \
         pass the exporting host's public key (`happyx host-key` on that data dir) with --trusted-key, \
         or --allow-unsigned to accept it anyway"
    )]
    UntrustedSigner { source_name: String, signer: String },
    #[error(
        "{source_name}: meta.signature: signed by the key {signer}, but no key is trusted here (the data dir has no \
         host-signing.key); pass the exporting host's public key (`happyx host-key` on that data dir) with --trusted-key, \
         or copy its host-signing.key into the data dir before the import"
    )]
    NoTrustedKey { source_name: String, signer: String },
    #[error(
        "{dir}: a legacy state directory carries no signature; import it with --allow-unsigned once you have checked where it came from"
    )]
    LegacyUnsigned { dir: PathBuf },
    #[error(
        "--trusted-key: {what} is not an Ed25519 public key in base64 (as `happyx host-key` prints it)"
    )]
    TrustedKey { what: String },
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("data dir {0} holds no database to export")]
    NoDatabase(PathBuf),
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The export's event chain does not verify; `error` names the first bad `seq`.
    #[error("{source_name}: tables.events: {error}")]
    Chain {
        source_name: String,
        error: crate::audit::ChainError,
    },
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TransferError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "import_invalid",
            Self::SchemaMismatch { .. } => "schema_mismatch",
            Self::Checksum { .. } => "checksum_mismatch",
            Self::NotEmpty { .. } => "data_dir_not_empty",
            Self::NoDatabase(_) => "no_database",
            Self::Unstorable { .. } => "import_unstorable",
            Self::Unsigned { .. } => "export_unsigned",
            Self::BadSignature { .. } => "bad_signature",
            Self::UntrustedSigner { .. } => "untrusted_signer",
            Self::NoTrustedKey { .. } => "no_trusted_key",
            Self::LegacyUnsigned { .. } => "legacy_unsigned",
            Self::TrustedKey { .. } => "invalid_trusted_key",
            Self::KeyFile(e) => e.code(),
            Self::Read { .. } => "read_failed",
            Self::Write { .. } => "write_failed",
            Self::Chain { error, .. } => error.code(),
            Self::DataDir(e) => e.code(),
            Self::Store(e) => e.code(),
        }
    }

    fn invalid(source_name: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            source_name: source_name.to_string(),
            path: path.into(),
            message: message.into(),
        }
    }
}

type Result<T, E = TransferError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_round_trip_through_json() {
        for c in [
            Cell::Null,
            Cell::Integer(-5),
            Cell::Integer(i64::MAX),
            Cell::Real(1.5),
            Cell::Text("a\"b\n".into()),
            Cell::Blob(vec![0, 1, 255]),
        ] {
            let v = serde_json::to_value(CellJson(&c)).expect("ser");
            assert_eq!(cell_from_json(v).expect("de"), c);
        }
        assert!(cell_from_json(serde_json::json!(true)).is_err());
        assert!(cell_from_json(serde_json::json!({"$base64": "!!"})).is_err());
        assert!(cell_from_json(serde_json::json!({"x": "1"})).is_err());
        assert!(cell_from_json(serde_json::json!(u64::MAX)).is_err());
    }

    #[test]
    fn positions_render_as_document_paths() {
        let p = Pos {
            key: Some("tables".into()),
            table: Some("events".into()),
            row: Some(3),
        };
        assert_eq!(p.to_string(), "tables.events[3]");
        let p = Pos {
            key: Some("meta".into()),
            ..Pos::default()
        };
        assert_eq!(p.to_string(), "meta");
    }
}
