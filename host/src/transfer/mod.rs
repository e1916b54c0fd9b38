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
//! transaction committed. The file is parsed as a stream (one row in memory at
//! a time) on a blocking thread, which hands rows through a bounded channel to
//! the inserter. Nothing is appended to the restored event log.

pub mod legacy;
pub use happyx_store::signing;
pub mod validate;

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
use crate::store::transfer::{Cell, ImportTarget, InsertError, Snapshot, TableInfo};
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
    #[error(
        "data dir {path} is not empty (table {table} holds {rows} rows); import only into a new or empty data dir"
    )]
    NotEmpty {
        path: PathBuf,
        table: String,
        rows: i64,
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

/// One typed value as it appears in the file.
struct CellJson<'a>(&'a Cell);

impl Serialize for CellJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Cell::Null => s.serialize_unit(),
            Cell::Integer(i) => s.serialize_i64(*i),
            Cell::Real(f) => s.serialize_f64(*f),
            Cell::Text(t) => s.serialize_str(t),
            Cell::Blob(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(BLOB_KEY, &STANDARD.encode(b))?;
                m.end()
            }
        }
    }
}

/// Key of the one-entry object that encodes a BLOB.
pub const BLOB_KEY: &str = "$base64";

/// A row as an object with keys in `order` (indices into `names`/`cells`).
struct RowJson<'a> {
    names: &'a [&'a str],
    order: &'a [usize],
    cells: &'a [Cell],
}

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.order.len()))?;
        for &i in self.order {
            m.serialize_entry(self.names[i], &CellJson(&self.cells[i]))?;
        }
        m.end()
    }
}

/// Column names of a table and the permutation that sorts them.
struct Layout<'a> {
    names: Vec<&'a str>,
    sorted: Vec<usize>,
}

impl<'a> Layout<'a> {
    fn of(t: &'a TableInfo) -> Self {
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        let mut sorted: Vec<usize> = (0..names.len()).collect();
        sorted.sort_by_key(|&i| names[i]);
        Layout { names, sorted }
    }

    /// The canonical bytes of a row (see the module docs).
    fn canonical(&self, cells: &[Cell], buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        buf.clear();
        serde_json::to_writer(
            &mut *buf,
            &RowJson {
                names: &self.names,
                order: &self.sorted,
                cells,
            },
        )
    }
}

/// The running checksum (see the module docs).
struct Checksum(Sha256);

impl Checksum {
    fn new(schema_version: i64) -> Self {
        let mut h = Sha256::new();
        h.update(format!("{FORMAT}\n{VERSION}\n{schema_version}\n"));
        Checksum(h)
    }
    fn table(&mut self, name: &str) {
        self.0.update(format!("table {name}\n"));
    }
    fn row(&mut self, canonical: &[u8]) {
        self.0.update(canonical);
        self.0.update(b"\n");
    }
    fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub schema_version: i64,
    pub checksum: String,
    /// The host's public key the export is signed with (base64).
    pub public_key: String,
    pub rows: BTreeMap<String, u64>,
}

/// Writes the whole state of `data_dir` to `out` (mode 0600, atomically:
/// a temp file beside it, fsync, rename). Streams: memory does not grow with
/// the database.
pub async fn export(data_dir: &Path, out: &Path) -> Result<ExportSummary> {
    let mut snap = match Snapshot::open(data_dir).await {
        Ok(s) => s,
        Err(StoreError::NotFound) => return Err(TransferError::NoDatabase(data_dir.into())),
        Err(e) => return Err(e.into()),
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export.json".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let werr = |error| TransferError::Write {
        path: out.to_path_buf(),
        error,
    };
    // A stale temp file of a crashed export with our pid is ours to replace;
    // `create_new` refuses to follow anything planted in its place meanwhile.
    let _ = std::fs::remove_file(&tmp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(werr)?;
    let key = match HostKey::load_or_create(data_dir) {
        Ok(k) => k,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    let result = write_export(&mut snap, file, out, &key).await;
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    snap.close().await?;
    let finish = || -> std::io::Result<u64> {
        let bytes = std::fs::metadata(&tmp)?.len();
        std::fs::rename(&tmp, out)?;
        File::open(&dir)?.sync_all()?;
        Ok(bytes)
    };
    let bytes = finish().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        werr(e)
    })?;
    Ok(ExportSummary {
        path: out.to_path_buf(),
        bytes,
        ..summary
    })
}

async fn write_export(
    snap: &mut Snapshot,
    file: File,
    out: &Path,
    key: &HostKey,
) -> Result<ExportSummary> {
    let schema_version = snap.schema_version();
    let tables: Vec<TableInfo> = snap.tables().to_vec();
    let io = |error| TransferError::Write {
        path: out.to_path_buf(),
        error,
    };
    let mut w = BufWriter::with_capacity(1 << 16, file);
    let mut sum = Checksum::new(schema_version);
    let mut rows = BTreeMap::new();
    let progress = Progress::counter("export", "rows");
    write!(
        w,
        "{{\"format\":\"{FORMAT}\",\"version\":{VERSION},\"schema_version\":{schema_version},\"tables\":{{"
    )
    .map_err(io)?;
    let mut buf = Vec::with_capacity(4096);
    for (ti, t) in tables.iter().enumerate() {
        let layout = Layout::of(t);
        let name = serde_json::to_string(&t.name).map_err(|e| io(e.into()))?;
        write!(w, "{}\n{name}:[", if ti == 0 { "" } else { "," }).map_err(io)?;
        sum.table(&t.name);
        let mut n = 0u64;
        let mut stream = snap.rows(ti);
        while let Some(cells) = stream.next().await {
            let cells = cells?;
            layout
                .canonical(&cells, &mut buf)
                .map_err(|e| io(e.into()))?;
            w.write_all(if n == 0 { b"\n" } else { b",\n" })
                .map_err(io)?;
            w.write_all(&buf).map_err(io)?;
            sum.row(&buf);
            n += 1;
            progress.tick_in(&t.name);
        }
        if n > 0 {
            w.write_all(b"\n").map_err(io)?;
        }
        w.write_all(b"]").map_err(io)?;
        rows.insert(t.name.clone(), n);
    }
    drop(progress);
    let checksum = sum.finish();
    let public_key = key.public().to_string();
    let meta = serde_json::json!({
        "format": FORMAT,
        "exported_at": crate::util::now_ms(),
        "host_version": env!("CARGO_PKG_VERSION"),
        "schema_version": schema_version,
        "checksum": checksum,
        "counts": rows,
        "signature": {
            "algorithm": signing::ALGORITHM,
            "public_key": public_key,
            "value": key.sign(&checksum),
        },
    });
    write!(w, "\n}},\n\"meta\":{meta}}}\n").map_err(io)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(ExportSummary {
        path: PathBuf::new(),
        bytes: 0,
        schema_version,
        checksum,
        public_key,
        rows,
    })
}

/// What an import restored.
#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    pub data_dir: PathBuf,
    /// `happyx-export` or `legacy-state`.
    pub source_format: &'static str,
    pub schema_version: i64,
    pub rows: BTreeMap<String, u64>,
    /// `verified` (signed by a trusted key), or, with `--allow-unsigned`,
    /// `unsigned_accepted`, `untrusted_accepted` or `legacy_unsigned_accepted`.
    pub signature: &'static str,
    /// The public key that signed the file (base64), if it was signed.
    pub signed_by: Option<String>,
}

/// Whom an import trusts.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Keys trusted besides the importing data dir's own host key.
    pub trusted_keys: Vec<PublicKey>,
    /// Accept an unsigned file, a legacy state directory, or a file signed by an
    /// untrusted key (never one whose signature does not verify).
    pub allow_unsigned: bool,
}

/// Parses a `--trusted-key` argument: a file holding the base64 public key, or
/// the base64 itself. Never echoes the content (it might be a private key).
pub fn parse_trusted_key(arg: &str) -> Result<PublicKey> {
    let path = Path::new(arg);
    if path.is_file() {
        let what = || format!("the file {}", path.display());
        let meta = std::fs::metadata(path).map_err(|error| TransferError::Read {
            path: path.into(),
            error,
        })?;
        if meta.len() > 1024 {
            return Err(TransferError::TrustedKey { what: what() });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|_| TransferError::TrustedKey { what: what() })?;
        return PublicKey::parse(&text).ok_or_else(|| TransferError::TrustedKey { what: what() });
    }
    PublicKey::parse(arg).ok_or_else(|| TransferError::TrustedKey {
        what: "the value (neither an existing file nor base64 of 32 key bytes)".into(),
    })
}

/// Loads an export file, or a legacy state directory, into `data_dir`
/// (created 0700 if missing; refused unless it is new or empty and unserved).
/// All or nothing: on any error the data dir is as it was.
pub async fn import(data_dir: &Path, src: &Path, opts: &ImportOptions) -> Result<ImportSummary> {
    let existed = data_dir.exists();
    let dir = datadir::ensure(data_dir)?;
    let lock_existed = dir.join(datadir::LOCK_FILE).exists();
    let result = import_locked(&dir, src, opts).await;
    if result.is_err() {
        if !lock_existed {
            let _ = std::fs::remove_file(dir.join(datadir::LOCK_FILE));
        }
        if !existed {
            let _ = std::fs::remove_dir(&dir);
        }
    }
    result
}

async fn import_locked(dir: &Path, src: &Path, opts: &ImportOptions) -> Result<ImportSummary> {
    let _lock = datadir::lock_quiet(dir)?;
    if let Some((table, rows)) = crate::store::transfer::first_nonempty_table(dir).await? {
        return Err(TransferError::NotEmpty {
            path: dir.to_path_buf(),
            table,
            rows,
        });
    }
    let mut trusted = opts.trusted_keys.clone();
    if let Some(own) = HostKey::load_existing(dir)? {
        trusted.push(own.public());
    }
    if src.is_dir() && !opts.allow_unsigned {
        return Err(TransferError::LegacyUnsigned { dir: src.into() });
    }
    let mut target = ImportTarget::create(dir).await?;
    let (source_format, rows, signature, signed_by) = if src.is_dir() {
        let rows = legacy::load(src, &mut target).await?;
        ("legacy-state", rows, "legacy_unsigned_accepted", None)
    } else {
        let (rows, trust) = load_export(src, &mut target, &trusted, opts.allow_unsigned).await?;
        (FORMAT, rows, trust.0, trust.1)
    };
    target.install().await?;
    Ok(ImportSummary {
        data_dir: dir.to_path_buf(),
        source_format,
        schema_version: SCHEMA_VERSION,
        rows,
        signature,
        signed_by,
    })
}

/// Checks the event chain of an export file offline (`happyx audit verify --export`): loads it
/// into a scratch database in a temp dir (removed afterwards) with every import check but the
/// signer's trust, and walks the chain as stored.
pub async fn verify_export(src: &Path) -> Result<crate::audit::ChainSummary> {
    Ok(verify_export_at(src, None).await?.0)
}

/// [`verify_export`], also reading the stored chain hash of the event at `seq` (for
/// `--checkpoint`).
pub async fn verify_export_at(
    src: &Path,
    seq: Option<i64>,
) -> Result<(crate::audit::ChainSummary, Option<String>)> {
    let scratch = tempfile::Builder::new()
        .prefix("happyx-audit-")
        .tempdir()
        .map_err(|error| TransferError::Write {
            path: std::env::temp_dir(),
            error,
        })?;
    let mut target = ImportTarget::create(scratch.path()).await?;
    load_export(src, &mut target, &[], true).await?;
    let summary = target.verify_chain().await?;
    let hash = match seq {
        Some(seq) => target.event_hash_at(seq).await?,
        None => None,
    };
    drop(target);
    let summary = summary.map_err(|error| TransferError::Chain {
        source_name: src.display().to_string(),
        error,
    })?;
    Ok((summary, hash))
}

/// What the parser thread hands to the inserter.
enum Item {
    /// Sent when `tables` starts (the header fields must come before it).
    Header {
        format: Option<Value>,
        version: Option<Value>,
        schema_version: Option<Value>,
    },
    Table(String),
    Row(u64, Value),
    Meta(Value),
    End,
    Fail(TransferError),
}

/// Where the parser is, for error messages.
#[derive(Default)]
struct Pos {
    key: Option<String>,
    table: Option<String>,
    row: Option<u64>,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.key, &self.table, self.row) {
            (_, Some(t), Some(i)) => write!(f, "tables.{t}[{i}]"),
            (_, Some(t), None) => write!(f, "tables.{t}"),
            (Some(k), None, _) => f.write_str(k),
            (None, None, _) => f.write_str("(top level)"),
        }
    }
}

struct Parser {
    tx: mpsc::Sender<Item>,
    pos: RefCell<Pos>,
    header: RefCell<[Option<Value>; 3]>,
    saw_tables: std::cell::Cell<bool>,
    /// A structured error raised inside the visitor (the serde error is a marker).
    failure: RefCell<Option<TransferError>>,
    source_name: String,
}

impl Parser {
    fn send<E: serde::de::Error>(&self, item: Item) -> std::result::Result<(), E> {
        // A closed channel means the inserter already failed; stop quietly.
        self.tx
            .blocking_send(item)
            .map_err(|_| E::custom("import stopped"))
    }

    fn fail<E: serde::de::Error>(&self, path: String, message: &str) -> E {
        *self.failure.borrow_mut() = Some(TransferError::invalid(&self.source_name, path, message));
        E::custom("invalid")
    }
}

struct DocSeed<'p>(&'p Parser);

impl<'de> Visitor<'de> for DocSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an export object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let p = self.0;
        while let Some(key) = map.next_key::<String>()? {
            p.pos.borrow_mut().key = Some(key.clone());
            let slot = match key.as_str() {
                "format" => Some(0),
                "version" => Some(1),
                "schema_version" => Some(2),
                _ => None,
            };
            if let Some(i) = slot {
                let v: Value = map.next_value()?;
                p.header.borrow_mut()[i] = Some(v);
            } else if key == "meta" {
                let v: Value = map.next_value()?;
                p.send(Item::Meta(v))?;
            } else if key == "tables" {
                if p.saw_tables.replace(true) {
                    return Err(p.fail("tables".into(), "appears twice"));
                }
                let [format, version, schema_version] = p.header.borrow_mut().clone();
                p.send(Item::Header {
                    format,
                    version,
                    schema_version,
                })?;
                map.next_value_seed(TablesSeed(p))?;
            } else {
                return Err(p.fail(key, "unknown top-level field"));
            }
            p.pos.borrow_mut().key = None;
        }
        Ok(())
    }
}

struct TablesSeed<'p>(&'p Parser);

impl<'de> DeserializeSeed<'de> for TablesSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TablesSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of tables")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let p = self.0;
        while let Some(name) = map.next_key::<String>()? {
            {
                let mut pos = p.pos.borrow_mut();
                pos.table = Some(name.clone());
                pos.row = None;
            }
            p.send(Item::Table(name))?;
            map.next_value_seed(RowsSeed(p))?;
        }
        let mut pos = p.pos.borrow_mut();
        pos.table = None;
        pos.row = None;
        Ok(())
    }
}

struct RowsSeed<'p>(&'p Parser);

impl<'de> DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let p = self.0;
        let mut i = 0u64;
        loop {
            p.pos.borrow_mut().row = Some(i);
            let Some(v) = seq.next_element::<Value>()? else {
                break;
            };
            p.send(Item::Row(i, v))?;
            i += 1;
        }
        p.pos.borrow_mut().row = None;
        Ok(())
    }
}

/// Parses `file` on the current (blocking) thread, sending items to `tx`.
fn parse(file: File, source_name: String, tx: mpsc::Sender<Item>) {
    let p = Parser {
        tx,
        pos: RefCell::default(),
        header: RefCell::default(),
        saw_tables: std::cell::Cell::new(false),
        failure: RefCell::default(),
        source_name,
    };
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(1 << 16, file));
    let result = de.deserialize_map(DocSeed(&p)).and_then(|()| de.end());
    let item = match result {
        Ok(()) => Item::End,
        Err(e) => {
            if let Some(f) = p.failure.borrow_mut().take() {
                Item::Fail(f)
            } else {
                let path = p.pos.borrow().to_string();
                let (line, col) = (e.line(), e.column());
                let message = match e.classify() {
                    serde_json::error::Category::Eof => {
                        format!("the file ends early (truncated?) at line {line} column {col}")
                    }
                    serde_json::error::Category::Syntax => {
                        // serde_json's syntax messages name the expected token, not content.
                        let m = e.to_string();
                        let m = m.split(" at line ").next().unwrap_or("syntax error");
                        format!("invalid JSON at line {line} column {col}: {m}")
                    }
                    // Type errors may quote the offending value: say where, not what.
                    serde_json::error::Category::Data => {
                        format!("unexpected kind of value at line {line} column {col}")
                    }
                    serde_json::error::Category::Io => format!("read error: {e}"),
                };
                Item::Fail(TransferError::invalid(&p.source_name, path, message))
            }
        }
    };
    let _ = p.tx.blocking_send(item);
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Converts one JSON value of the file into a typed cell, or says what is wrong.
pub(crate) fn cell_from_json(v: Value) -> std::result::Result<Cell, String> {
    Ok(match v {
        Value::Null => Cell::Null,
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Cell::Integer(i)
            } else if n.is_u64() {
                return Err("integer out of range (64-bit signed)".into());
            } else {
                Cell::Real(n.as_f64().ok_or("not a finite number")?)
            }
        }
        Value::String(s) => Cell::Text(s),
        Value::Object(mut m) if m.len() == 1 && m.contains_key(BLOB_KEY) => {
            match m.remove(BLOB_KEY) {
                Some(Value::String(b)) => Cell::Blob(
                    STANDARD
                        .decode(b.as_bytes())
                        .map_err(|_| format!("{BLOB_KEY} is not valid padded standard base64"))?,
                ),
                _ => return Err(format!("{BLOB_KEY} must be a string")),
            }
        }
        other => {
            return Err(format!(
                "{} is not a value this format uses",
                json_kind(&other)
            ));
        }
    })
}

fn cell_kind(c: &Cell) -> &'static str {
    match c {
        Cell::Null => "null",
        Cell::Integer(_) => "an integer",
        Cell::Real(_) => "a real number",
        Cell::Text(_) => "a string",
        Cell::Blob(_) => "a blob",
    }
}

/// Builds a row (values in column order) from an object, checking column
/// names and value kinds against the schema. Errors are `(path suffix, message)`.
pub(crate) fn row_from_object(
    t: &TableInfo,
    v: Value,
) -> std::result::Result<Vec<Cell>, (String, String)> {
    let Value::Object(obj) = v else {
        return Err((
            String::new(),
            format!("expected a row object, found {}", json_kind(&v)),
        ));
    };
    let mut cells: Vec<Option<Cell>> = vec![None; t.columns.len()];
    for (k, val) in obj {
        let Some(i) = t.columns.iter().position(|c| c.name == k) else {
            return Err((
                format!(".{k}"),
                format!("unknown column (table {} has no such column)", t.name),
            ));
        };
        let col = &t.columns[i];
        let cell = cell_from_json(val).map_err(|m| (format!(".{k}"), m))?;
        if !col.affinity.accepts(&cell) {
            return Err((
                format!(".{k}"),
                format!(
                    "expected a value for a {} column, found {}",
                    if col.decl_type.is_empty() {
                        "untyped"
                    } else {
                        &col.decl_type
                    },
                    cell_kind(&cell)
                ),
            ));
        }
        cells[i] = Some(cell);
    }
    cells
        .into_iter()
        .zip(&t.columns)
        .map(|(c, col)| c.ok_or_else(|| (format!(".{}", col.name), "missing column".to_string())))
        .collect()
}

/// Explains a refused insert in terms of the record.
pub(crate) fn insert_error_message(e: InsertError) -> (String, String) {
    match e {
        InsertError::Duplicate { column: Some(c) } => (
            format!(".{c}"),
            format!("duplicate {c}: an earlier row already has this value"),
        ),
        InsertError::Duplicate { column: None } => (
            String::new(),
            "duplicate: an earlier row already has the same key".into(),
        ),
        InsertError::Check {
            column: Some(c),
            allowed: Some(list),
            ..
        } => (format!(".{c}"), format!("expected one of {list}")),
        InsertError::Check {
            column, constraint, ..
        } => (
            column.map(|c| format!(".{c}")).unwrap_or_default(),
            format!("violates the check `{constraint}`"),
        ),
        InsertError::NotNull { column } => (format!(".{column}"), "must not be null".into()),
        InsertError::Other(m) => (String::new(), format!("refused by the database: {m}")),
    }
}

/// Checks run after the last row: references and the event log's sequence.
pub(crate) async fn final_checks(target: &mut ImportTarget, source_name: &str) -> Result<()> {
    if let Some(d) = target.dangling_reference().await? {
        return Err(TransferError::invalid(
            source_name,
            format!("tables.{}[{}].{}", d.table, d.index, d.column),
            format!("references a {} row that does not exist", d.parent),
        ));
    }
    if let Some(c) = target.chunk_overlap().await? {
        return Err(TransferError::invalid(
            source_name,
            format!("tables.{}[{}].{}", c.table, c.index, c.column),
            c.message,
        ));
    }
    if let Some(g) = target.event_seq_gap().await? {
        return Err(TransferError::invalid(
            source_name,
            format!("tables.events[{}].seq", g.index),
            format!(
                "the event log must be gap-free from 1 (or from the prune anchor's seq + 1): found seq {} where {} was expected",
                g.seq, g.expected
            ),
        ));
    }
    Ok(())
}

/// How an export's origin was established: (`ImportSummary::signature`, signer).
type Trust = (&'static str, Option<String>);

async fn load_export(
    src: &Path,
    target: &mut ImportTarget,
    trusted: &[PublicKey],
    allow_unsigned: bool,
) -> Result<(BTreeMap<String, u64>, Trust)> {
    let source_name = src.display().to_string();
    let file = File::open(src).map_err(|error| TransferError::Read {
        path: src.into(),
        error,
    })?;
    let (tx, mut rx) = mpsc::channel::<Item>(256);
    let name = source_name.clone();
    let parser = tokio::task::spawn_blocking(move || parse(file, name, tx));
    let result = consume(&mut rx, target, &source_name, trusted, allow_unsigned).await;
    drop(rx);
    let _ = parser.await;
    result
}

async fn consume(
    rx: &mut mpsc::Receiver<Item>,
    target: &mut ImportTarget,
    source_name: &str,
    trusted: &[PublicKey],
    allow_unsigned: bool,
) -> Result<(BTreeMap<String, u64>, Trust)> {
    let invalid = |path: String, msg: String| TransferError::invalid(source_name, path, msg);
    let mut schema_version = None;
    let mut sum: Option<Checksum> = None;
    let mut current: Option<TableInfo> = None;
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    let mut meta: Option<Value> = None;
    let mut buf = Vec::with_capacity(4096);
    let progress = Progress::counter("import", "rows");
    loop {
        let Some(item) = rx.recv().await else {
            return Err(invalid(
                "(top level)".into(),
                "the parser stopped unexpectedly".into(),
            ));
        };
        match item {
            Item::Fail(e) => return Err(e),
            Item::Header {
                format,
                version,
                schema_version: sv,
            } => {
                match format {
                    Some(Value::String(f)) if f == FORMAT => {}
                    Some(_) => {
                        return Err(invalid(
                            "format".into(),
                            format!("expected \"{FORMAT}\" (or a legacy state directory)"),
                        ));
                    }
                    None => {
                        return Err(invalid(
                            "format".into(),
                            "missing (format, version and schema_version must come before tables)"
                                .into(),
                        ));
                    }
                }
                match version.as_ref().and_then(Value::as_i64) {
                    Some(VERSION) => {}
                    Some(v) => {
                        return Err(invalid(
                            "version".into(),
                            format!(
                                "export format version {v} is not supported (this happyx reads version {VERSION})"
                            ),
                        ));
                    }
                    None => {
                        return Err(invalid(
                            "version".into(),
                            "missing or not an integer (it must come before tables)".into(),
                        ));
                    }
                }
                let Some(found) = sv.as_ref().and_then(Value::as_i64) else {
                    return Err(invalid(
                        "schema_version".into(),
                        "missing or not an integer (it must come before tables)".into(),
                    ));
                };
                if found != SCHEMA_VERSION {
                    return Err(TransferError::SchemaMismatch {
                        source_name: source_name.into(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                schema_version = Some(found);
                sum = Some(Checksum::new(found));
            }
            Item::Table(name) => {
                let Some(t) = target.table(&name) else {
                    return Err(invalid(
                        format!("tables.{name}"),
                        "unknown table (not in this schema)".into(),
                    ));
                };
                if rows.contains_key(&name) {
                    return Err(invalid(
                        format!("tables.{name}"),
                        "table appears twice".into(),
                    ));
                }
                rows.insert(name.clone(), 0);
                if let Some(s) = sum.as_mut() {
                    s.table(&name);
                }
                current = Some(t.clone());
            }
            Item::Row(i, v) => {
                let (Some(t), Some(s)) = (current.as_ref(), sum.as_mut()) else {
                    return Err(invalid("tables".into(), "row outside a table".into()));
                };
                let at = |suffix: &str| format!("tables.{}[{i}]{suffix}", t.name);
                let cells = row_from_object(t, v).map_err(|(p, m)| invalid(at(&p), m))?;
                validate::row(t, &cells).map_err(|(c, m)| invalid(at(&format!(".{c}")), m))?;
                Layout::of(t)
                    .canonical(&cells, &mut buf)
                    .map_err(|e| invalid(at(""), e.to_string()))?;
                s.row(&buf);
                if let Err(e) = target.insert(&t.name, cells).await? {
                    let (p, m) = insert_error_message(e);
                    return Err(invalid(at(&p), m));
                }
                *rows.entry(t.name.clone()).or_default() += 1;
                progress.tick_in(&t.name);
            }
            Item::Meta(v) => meta = Some(v),
            Item::End => break,
        }
    }
    drop(progress);
    let (Some(_), Some(sum)) = (schema_version, sum) else {
        return Err(invalid("tables".into(), "missing".into()));
    };
    // Record-level checks first, so an error names the record.
    final_checks(target, source_name).await?;
    if let Err(error) = target.verify_chain().await? {
        return Err(TransferError::Chain {
            source_name: source_name.into(),
            error,
        });
    }
    target.chain_is_restored().await?;
    let computed = sum.finish();
    let Some(meta) = meta else {
        return Err(invalid("meta".into(), "missing".into()));
    };
    match meta.get("checksum").and_then(Value::as_str) {
        Some(c) if c == computed => {}
        Some(_) => {
            return Err(TransferError::Checksum {
                source_name: source_name.into(),
            });
        }
        None => return Err(invalid("meta.checksum".into(), "missing".into())),
    }
    if let Some(counts) = meta.get("counts").and_then(Value::as_object) {
        for (t, n) in counts {
            let have = rows.get(t).copied().unwrap_or(0);
            if n.as_u64() != Some(have) {
                return Err(invalid(
                    format!("meta.counts.{t}"),
                    format!("does not match the {have} rows in the file"),
                ));
            }
        }
    }
    let trust = check_signature(&meta, &computed, source_name, trusted, allow_unsigned)?;
    Ok((rows, trust))
}

/// Checks `meta.signature` against the checksum and the trusted keys (see the module docs).
fn check_signature(
    meta: &Value,
    checksum: &str,
    source_name: &str,
    trusted: &[PublicKey],
    allow_unsigned: bool,
) -> Result<Trust> {
    let invalid = |path: &str, msg: &str| TransferError::invalid(source_name, path, msg);
    let Some(sig) = meta.get("signature") else {
        if allow_unsigned {
            return Ok(("unsigned_accepted", None));
        }
        return Err(TransferError::Unsigned {
            source_name: source_name.into(),
        });
    };
    match sig.get("algorithm").and_then(Value::as_str) {
        Some(signing::ALGORITHM) => {}
        _ => {
            return Err(invalid("meta.signature.algorithm", "must be \"ed25519\""));
        }
    }
    let Some(signer) = sig
        .get("public_key")
        .and_then(Value::as_str)
        .and_then(PublicKey::parse)
    else {
        return Err(invalid(
            "meta.signature.public_key",
            "must be an Ed25519 public key in standard base64",
        ));
    };
    let Some(value) = sig.get("value").and_then(Value::as_str) else {
        return Err(invalid("meta.signature.value", "missing or not a string"));
    };
    if !signer.verifies(checksum, value) {
        return Err(TransferError::BadSignature {
            source_name: source_name.into(),
        });
    }
    let signer_b64 = signer.to_string();
    if trusted.contains(&signer) {
        return Ok(("verified", Some(signer_b64)));
    }
    if allow_unsigned {
        return Ok(("untrusted_accepted", Some(signer_b64)));
    }
    if trusted.is_empty() {
        return Err(TransferError::NoTrustedKey {
            source_name: source_name.into(),
            signer: signer_b64,
        });
    }
    Err(TransferError::UntrustedSigner {
        source_name: source_name.into(),
        signer: signer_b64,
    })
}

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
