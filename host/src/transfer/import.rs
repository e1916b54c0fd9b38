//! Reading an export into an empty data dir: the parser thread feeds rows to one import
//! transaction, which checks every row against the schema, the references and the event chain,
//! and the signature against the trusted keys, and commits only if all of it holds.

use super::*;

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
/// With `storage.url` set, the rows go into that PostgreSQL database instead (which must hold
/// none); the data dir then provides the lock and the host key.
pub async fn import(
    data_dir: &Path,
    storage: &StorageConfig,
    src: &Path,
    opts: &ImportOptions,
) -> Result<ImportSummary> {
    let existed = data_dir.exists();
    let dir = datadir::ensure(data_dir)?;
    let lock_existed = dir.join(datadir::LOCK_FILE).exists();
    let result = import_locked(&dir, storage, src, opts).await;
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

pub(super) async fn import_locked(
    dir: &Path,
    storage: &StorageConfig,
    src: &Path,
    opts: &ImportOptions,
) -> Result<ImportSummary> {
    let _lock = datadir::lock_quiet(dir)?;
    let not_empty = |(table, rows)| TransferError::NotEmpty {
        target: match &storage.url {
            Some(url) => format!("the PostgreSQL database {url}"),
            None => format!("data dir {}", dir.display()),
        },
        table,
        rows,
    };
    if let Some(found) = crate::store::transfer::first_nonempty_table(dir, storage).await? {
        return Err(not_empty(found));
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
    match &storage.url {
        None => target.install().await?,
        Some(url) => match target.install_postgres(url).await? {
            Ok(()) => {}
            Err(PostgresRefusal::NotEmpty { table, rows }) => {
                return Err(not_empty((table, rows)));
            }
            Err(PostgresRefusal::Unstorable {
                table,
                index,
                column,
            }) => {
                return Err(TransferError::Unstorable {
                    source_name: src.display().to_string(),
                    table,
                    index,
                    column,
                });
            }
        },
    }
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
pub(super) type Trust = (&'static str, Option<String>);

pub(super) async fn load_export(
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

pub(super) async fn consume(
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
pub(super) fn check_signature(
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
