//! `happyx-load datadir`: writes a large data dir for the performance figures of
//! `happyx audit verify` and `happyx prune` (`docs/storage.md`, "Large logs").
//!
//! Everything goes through the store API, as the host writes it (so the event log is a real,
//! verifying hash chain), in large transactions so that a million events take seconds, not
//! hours: events with `Store::append_events`, transcript chunks of one terminal with
//! `Store::append_transcript`, envelopes of one enrolled device in one encrypted session with
//! `Store::ingest_batch`. Beside the database it writes `prune.toml`, a configuration whose
//! retention policy keeps half of each kind, so one `happyx prune` pass has real work.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Args;
use happyx::config::StorageConfig;
use happyx::envelope::DeviceKeys;
use happyx::store::{
    IngestItem, IngestLimits, IngestVerdict, NewEvent, NewPty, PtySession, Session, Store,
    TranscriptChunk, WrappedKeyRow,
};
use happyx::util::{new_id, now_ms};
use happyx::vocab::{PtyState, Risk};
use serde_json::json;

/// Events per transaction.
const EVENT_TX: usize = 10_000;
/// Transcript chunks per transaction.
const CHUNK_TX: usize = 2_000;
/// Envelopes per ingest batch (one transaction).
const ENVELOPE_TX: usize = 1_000;
/// Raw bytes per transcript chunk (the masked copy is as long).
const CHUNK_BYTES: usize = 256;
/// Ciphertext bytes per envelope.
const CIPHERTEXT_BYTES: usize = 256;

#[derive(Debug, Clone, Args)]
pub struct DataDirArgs {
    /// The data dir to create (must not exist, or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Events to append (besides the few the setup itself records).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Transcript chunks to write, of one terminal.
    #[arg(long, default_value_t = 100_000)]
    pub chunks: usize,
    /// Envelopes to accept, of one device in one encrypted session.
    #[arg(long, default_value_t = 100_000)]
    pub envelopes: usize,
}

/// Writes the data dir; prints one JSON line (counts, seconds, the prune config) on stdout.
pub async fn run(args: DataDirArgs) -> Result<()> {
    let dir = &args.data_dir;
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir =
        &std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let store = Store::open(dir, &StorageConfig::default())
        .await
        .context("opening the store")?;
    let t0 = Instant::now();
    events(&store, args.events).await?;
    let events_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    chunks(&store, args.chunks).await?;
    let chunks_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    envelopes(&store, args.envelopes).await?;
    let envelopes_s = t2.elapsed().as_secs_f64();
    let total_events = store.last_event_seq().await?;
    store.close().await;
    let config = write_prune_config(dir, &args, total_events)?;
    println!(
        "{}",
        json!({
            "data_dir": dir,
            "events": total_events,
            "chunks": args.chunks,
            "envelopes": args.envelopes,
            "seconds": { "events": events_s, "chunks": chunks_s, "envelopes": envelopes_s },
            "prune_config": config,
        })
    );
    Ok(())
}

async fn events(store: &Store, n: usize) -> Result<()> {
    let mut done = 0;
    while done < n {
        let take = EVENT_TX.min(n - done);
        let batch: Vec<NewEvent> = (done..done + take)
            .map(|i| {
                NewEvent::new(
                    "load.generated",
                    "load:datadir",
                    "bench",
                    json!({ "i": i, "kind": "bench" }),
                )
            })
            .collect();
        store.append_events(&batch).await?;
        done += take;
        eprint!("\rhappyx-load datadir: events {done}/{n}");
    }
    eprintln!();
    Ok(())
}

async fn chunks(store: &Store, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let now = now_ms();
    let pty_id = new_id();
    store
        .create_pty(&NewPty {
            session: PtySession {
                state: PtyState::Exited,
                exit_code: Some(0),
                exited_at: Some(now),
                ..PtySession::starting(
                    pty_id.clone(),
                    "shell".into(),
                    Risk::Low,
                    "load:datadir".into(),
                    now,
                )
            },
            action_hash: "0".repeat(64),
            socket_path: "/nonexistent".into(),
            secret_hash: "0".repeat(64),
            boot_id: "load".into(),
        })
        .await?;
    let mut done = 0;
    while done < n {
        let take = CHUNK_TX.min(n - done);
        let batch: Vec<TranscriptChunk> = (done..done + take)
            .map(|i| TranscriptChunk {
                byte_offset: (i * CHUNK_BYTES) as i64,
                data: vec![b'x'; CHUNK_BYTES],
                redacted: Some(vec![b'x'; CHUNK_BYTES]),
                findings: 0,
                policy_hash: None,
            })
            .collect();
        store
            .append_transcript(&pty_id, &batch, None, u64::MAX)
            .await?;
        done += take;
        eprint!("\rhappyx-load datadir: transcript chunks {done}/{n}");
    }
    eprintln!();
    Ok(())
}

async fn envelopes(store: &Store, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let device = enroll(store).await?;
    let now = now_ms();
    let session_id = new_id();
    store
        .create_encrypted_session(
            &Session {
                id: session_id.clone(),
                name: "load".into(),
                kind: happyx::vocab::SessionKind::Encrypted,
                status: happyx::vocab::SessionStatus::Open,
                task_id: None,
                epoch: 0,
                rotation_required_since: None,
                created_by: "load:datadir".into(),
                created_at: now,
                updated_at: now,
            },
            &[WrappedKeyRow {
                session_id: session_id.clone(),
                epoch: 0,
                device_id: device.clone(),
                key_version: 1,
                sender_device_id: device.clone(),
                sender_key_version: 1,
                enc: B64.encode([1u8; 32]),
                ciphertext: B64.encode([2u8; 48]),
            }],
        )
        .await?;
    let limits = IngestLimits {
        window_ms: 3_600_000,
        rotation_grace_ms: 0,
    };
    let mut done = 0;
    while done < n {
        let take = ENVELOPE_TX.min(n - done);
        let batch: Vec<IngestItem> = (done..done + take)
            .map(|i| IngestItem {
                v: 1,
                session_id: session_id.clone(),
                sender_device_id: device.clone(),
                key_version: 1,
                epoch: 0,
                sequence: i as i64 + 1,
                created_at: now_ms(),
                nonce: vec![0; 24],
                ciphertext: vec![7; CIPHERTEXT_BYTES],
                signature: vec![0; 64],
                size: (CIPHERTEXT_BYTES + 200) as i64,
            })
            .collect();
        let verdicts = store.ingest_batch(&batch, limits).await?;
        if let Some(v) = verdicts
            .iter()
            .find(|v| !matches!(v, IngestVerdict::Accepted { .. }))
        {
            bail!("an envelope was refused: {v:?}");
        }
        done += take;
        eprint!("\rhappyx-load datadir: envelopes {done}/{n}");
    }
    eprintln!();
    Ok(())
}

/// Enrolls one device (key version 1); returns its id.
async fn enroll(store: &Store) -> Result<String> {
    let keys = DeviceKeys::generate(1).context("device keys")?;
    let enrolled =
        happyx::devices::provision(store, &keys.public(), Some("load"), "load:datadir").await?;
    Ok(enrolled.device_id)
}

/// Writes `DIR/prune.toml`: the data dir, and a retention policy that keeps the newer half of
/// each generated kind (by count), so a pass prunes the older half.
fn write_prune_config(dir: &Path, args: &DataDirArgs, events: i64) -> Result<PathBuf> {
    let path = dir.join("prune.toml");
    let text = format!(
        r#"# Written by happyx-load datadir: `happyx prune --config {path}` prunes the older half.
data_dir = "{dir}"

[log]
filter = "warn"

[plugins.retention.settings]
"event.max_count" = "{events}"
"transcript-chunk.max_count" = "{chunks}"
"envelope.max_count" = "{envelopes}"
"#,
        path = path.display(),
        dir = dir.display(),
        events = (events / 2).max(1),
        chunks = (args.chunks / 2).max(1),
        envelopes = (args.envelopes / 2).max(1),
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
