//! The envelope half of `happyx-load bench`: the senders and their envelopes, on both sides of
//! the comparison.
//!
//! - Over HTTP: devices enrolled on the spawned host for real (operator code, keygen,
//!   challenge, `open-session` through `happyx::devices::client`), one encrypted session each;
//!   every envelope is sealed and signed with the device's own keys and the session's content
//!   key, and posted alone to `POST /v1/sessions/{id}/envelopes`.
//! - In process: the host library's ingest path (`happyx::devices::ingest::Ingestor` over a
//!   `happyx::store::Store`, as `host/benches/envelope.rs` measures it) on a temporary data dir
//!   opened with the spawned host's own storage and envelope settings; its devices and sessions
//!   are written through the store API, as the host's enrollment would write them.
//!
//! Envelopes are sealed before a timed span starts (a client has its message ready before it
//! sends it), on every core, with fresh `createdAt` stamps; a sender whose supply runs out
//! seals inline, on the clock, and the report counts it (`sealed_late`). Sequences are kept in
//! memory from the device folder's last persisted one: the folders are the bench's own,
//! thrown away at the end, and the host only needs them to increase.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use happyx::config::Config;
use happyx::devices::DeviceDir;
use happyx::devices::ingest::Ingestor;
use happyx::envelope::{ContentKey, DeviceKeys, ENVELOPE_VERSION, EnvelopeHeader, seal};
use happyx::metrics::Metrics;
use happyx::store::{Session, Store, WrappedKeyRow};
use hyper::body::Bytes;

use crate::bench_http::{Conn, Outcome, Prepared, WorkerTally};
use crate::workload::{self, Ctx};

/// The signing keys of a sender.
enum Keys {
    /// A device folder made by `happyx::devices::client` (HTTP side).
    Dir(Box<DeviceDir>),
    /// Keys held in memory (in-process side).
    Own(Box<DeviceKeys>),
}

/// One sender: its keys, its session and its next sequence.
pub struct Sealer {
    keys: Keys,
    content: ContentKey,
    session: String,
    device: String,
    next: u64,
}

impl Sealer {
    fn keys(&self) -> &DeviceKeys {
        match &self.keys {
            Keys::Dir(d) => d.keys(),
            Keys::Own(k) => k,
        }
    }

    pub fn session(&self) -> &str {
        &self.session
    }

    /// Seals and signs `plaintext` as this sender's next envelope; the wire JSON.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Bytes> {
        let header = EnvelopeHeader {
            v: ENVELOPE_VERSION,
            session_id: self.session.clone(),
            sender_device_id: self.device.clone(),
            key_version: self.keys().key_version(),
            epoch: 0,
            sequence: self.next,
            created_at: happyx::util::now_ms().unsigned_abs(),
        };
        self.next += 1;
        let env = seal(&self.content, self.keys(), &header, plaintext)?;
        Ok(Bytes::from(env.to_json()))
    }
}

/// Seals `per_sender` envelopes for every sender, on every core; one supply per sender.
pub fn seal_supplies(
    sealers: &mut [Sealer],
    per_sender: usize,
    plaintext: &[u8],
) -> Result<Vec<VecDeque<Bytes>>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = sealers.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = sealers
            .chunks_mut(chunk)
            .map(|part| {
                s.spawn(move || -> Result<Vec<VecDeque<Bytes>>> {
                    part.iter_mut()
                        .map(|sealer| {
                            (0..per_sender)
                                .map(|_| sealer.seal(plaintext))
                                .collect::<Result<VecDeque<_>>>()
                        })
                        .collect()
                })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| anyhow!("a sealing thread panicked"))??,
            );
        }
        Ok(out)
    })
}

/// Enrolls `n` devices on the host at `ctx.base` with codes issued by `operator`, each with
/// its own encrypted session; their folders go under `scratch`.
pub async fn enroll_http(
    ctx: &Ctx,
    operator: &str,
    scratch: &Path,
    n: usize,
) -> Result<Vec<Sealer>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let dir = scratch.join(format!("bench-device-{i}"));
        let dev = workload::enroll_device(ctx, operator, dir, format!("bench-device-{i}"))
            .await
            .with_context(|| format!("enroll device {i}"))?;
        let folder = DeviceDir::open(&dev.dir)?;
        let content = folder
            .content_key(&dev.session, 0)?
            .context("the device's session has no content key")?;
        let next = folder.last_sequence(&dev.session)? + 1;
        out.push(Sealer {
            keys: Keys::Dir(Box::new(folder)),
            content,
            session: dev.session,
            device: dev.id,
            next,
        });
    }
    Ok(out)
}

/// The host library's ingest path on a temporary data dir, with `n` enrolled senders, each
/// the only member of its own encrypted session (as on the HTTP side).
pub struct InProcess {
    pub ingestor: Ingestor,
    pub sealers: Vec<Sealer>,
    pub store: Store,
    _dir: tempfile::TempDir,
}

/// Opens the store with `cfg`'s storage settings and starts the ingestor with its envelope
/// settings, as `happyx serve` does with the same file.
pub async fn in_process(cfg: &Config, n: usize) -> Result<InProcess> {
    let dir = tempfile::Builder::new()
        .prefix("happyx-bench-inproc-")
        .tempdir()?;
    let store = Store::open(dir.path(), &cfg.storage)
        .await
        .context("open the in-process store")?;
    let mut sealers = Vec::with_capacity(n);
    for i in 0..n {
        let keys = DeviceKeys::generate(1)?;
        let name = format!("bench-device-{i}");
        let device_id = happyx::devices::provision(&store, &keys.public(), Some(&name), "bench")
            .await
            .with_context(|| format!("the in-process store refused enrollment {i}"))?
            .device_id;
        let now = happyx::util::now_ms();
        let session_id = happyx::util::new_id();
        let session = Session {
            id: session_id.clone(),
            name: format!("bench-{i}"),
            kind: happyx::vocab::SessionKind::Encrypted,
            status: happyx::vocab::SessionStatus::Open,
            task_id: None,
            epoch: 0,
            rotation_required_since: None,
            created_by: format!("device:{device_id}"),
            created_at: now,
            updated_at: now,
        };
        // The wrapped key is never opened by the host: any well-formed row does.
        let row = WrappedKeyRow {
            session_id: session_id.clone(),
            epoch: 0,
            device_id: device_id.clone(),
            key_version: 1,
            sender_device_id: device_id.clone(),
            sender_key_version: 1,
            enc: B64.encode([1u8; 32]),
            ciphertext: B64.encode([2u8; 48]),
        };
        store.create_encrypted_session(&session, &[row]).await?;
        sealers.push(Sealer {
            keys: Keys::Own(Box::new(keys)),
            content: ContentKey::generate()?,
            session: session_id,
            device: device_id,
            next: 1,
        });
    }
    let ingestor = Ingestor::start_with(
        store.clone(),
        Arc::new(Metrics::default()),
        cfg.envelopes.window_ms,
        cfg.envelopes.rotation_grace_ms,
    )
    .context("start the in-process ingestor")?;
    Ok(InProcess {
        ingestor,
        sealers,
        store,
        _dir: dir,
    })
}

/// One HTTP sender for a timed span: its connection, keys and sealed supply.
pub struct HttpSender {
    pub conn: Conn,
    pub sealer: Sealer,
    pub supply: VecDeque<Bytes>,
    pub plaintext: Arc<Vec<u8>>,
}

impl HttpSender {
    /// One sender per sealer, with its supply and connection (in the same order).
    pub fn zip(
        sealers: Vec<Sealer>,
        supplies: Vec<VecDeque<Bytes>>,
        conns: Vec<Conn>,
        plaintext: &Arc<Vec<u8>>,
    ) -> Vec<Self> {
        sealers
            .into_iter()
            .zip(supplies)
            .zip(conns)
            .map(|((sealer, supply), conn)| HttpSender {
                conn,
                sealer,
                supply,
                plaintext: plaintext.clone(),
            })
            .collect()
    }
}

/// Posts one envelope per request until `until`, each after the previous one's answer.
pub async fn http_worker(mut s: HttpSender, until: Instant) -> (HttpSender, WorkerTally) {
    let mut tally = WorkerTally::default();
    let req = match Prepared::post_json(&format!("/v1/sessions/{}/envelopes", s.sealer.session())) {
        Ok(r) => r,
        Err(_) => {
            tally.fail("bad_request_path");
            return (s, tally);
        }
    };
    while Instant::now() < until {
        let Some(body) = next_body(&mut s.supply, &mut s.sealer, &s.plaintext, &mut tally) else {
            break;
        };
        let t0 = Instant::now();
        match s.conn.exchange(&req, body).await {
            Outcome::Status(201) => tally.record(t0),
            Outcome::Status(code) => tally.fail(&format!("http_{code}")),
            Outcome::Transport => {
                tally.fail("transport");
                if !s.conn.reopen().await {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    (s, tally)
}

/// One in-process sender for a timed span.
pub struct LocalSender {
    pub ingestor: Ingestor,
    pub sealer: Sealer,
    pub supply: VecDeque<Bytes>,
    pub plaintext: Arc<Vec<u8>>,
}

/// Ingests one envelope at a time until `until`, each after the previous one's verdict.
pub async fn local_worker(mut s: LocalSender, until: Instant) -> (LocalSender, WorkerTally) {
    let mut tally = WorkerTally::default();
    let session = s.sealer.session().to_string();
    while Instant::now() < until {
        let Some(body) = next_body(&mut s.supply, &mut s.sealer, &s.plaintext, &mut tally) else {
            break;
        };
        let t0 = Instant::now();
        match s.ingestor.ingest(&session, &body).await {
            Ok(_) => tally.record(t0),
            Err(e) => tally.fail(e.code()),
        }
    }
    (s, tally)
}

/// The next sealed envelope: from the supply, else sealed now (counted as late).
fn next_body(
    supply: &mut VecDeque<Bytes>,
    sealer: &mut Sealer,
    plaintext: &[u8],
    tally: &mut WorkerTally,
) -> Option<Bytes> {
    if let Some(b) = supply.pop_front() {
        return Some(b);
    }
    tally.sealed_late += 1;
    match sealer.seal(plaintext) {
        Ok(b) => Some(b),
        Err(_) => {
            tally.fail("seal_failed");
            None
        }
    }
}
