//! Writing an export: a read snapshot of every table streamed to a temporary file beside the
//! destination, checksummed and signed with the host key, then renamed into place.

use super::*;

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

/// Writes the whole state of `data_dir` (or of the PostgreSQL database `storage.url` names)
/// to `out` (mode 0600, atomically: a temp file beside it, fsync, rename), signed with the data
/// dir's host key. Streams: memory does not grow with the database.
pub async fn export(data_dir: &Path, storage: &StorageConfig, out: &Path) -> Result<ExportSummary> {
    let mut snap = match Snapshot::open(data_dir, storage).await {
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

pub(super) async fn write_export(
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
