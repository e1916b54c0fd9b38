//! The host side of PTYs: launches holders, talks to them, supervises one task
//! per live session (transcript capture, acknowledgements, commands), adopts
//! live holders after a host restart and marks unreachable ones `lost`.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::PtyError;
use super::holder::HolderSpec;
use super::protocol::{
    ExitInfo, Frame, Hello, HelloOk, ProtocolError, SignalKind, VERSION, proof, read_frame_async,
};
use super::transcript::{Batch, Live, Transcript};
use crate::children::Children;
use crate::metrics::Metrics;
use crate::plugins::{PluginHost, Rendered};
use crate::runs::CHUNK_BYTES;
use crate::store::{PtyHolderRow, PtySession, Store, StoreError};
use crate::util::{random_bytes, sha256_hex};
use happyx_core::vocab::PtyState;

/// Unacknowledged output a holder keeps (its ring).
pub const RING_BYTES: usize = 1024 * 1024;
/// How long a partial chunk waits for more output before it is persisted.
const FLUSH_AFTER: Duration = Duration::from_millis(15);
/// Chunks a live viewer may fall behind before it is closed (`slow_consumer`).
pub const LIVE_CAPACITY: usize = 64;
/// Longest Unix socket path (sun_path is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A command for a live session.
#[derive(Debug)]
pub enum Cmd {
    Input(Vec<u8>),
    Resize(u16, u16),
    Signal(SignalKind),
}

#[derive(Clone)]
struct Handle {
    cmd: mpsc::Sender<Cmd>,
    live: broadcast::Sender<Live>,
    /// Raw offset up to which live viewers have been sent output (see [`Transcript::released`]).
    released: Arc<std::sync::atomic::AtomicU64>,
}

/// Starts, adopts and drives PTY sessions. Cheap to clone.
#[derive(Clone)]
pub struct PtyManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    plugins: PluginHost,
    metrics: Arc<Metrics>,
    children: Children,
    pty_dir: PathBuf,
    exe: PathBuf,
    key: [u8; 32],
    boot_id: String,
    sessions: Mutex<HashMap<String, Handle>>,
    /// `[pty] max_transcript_bytes` for every terminal's stored transcript.
    max_transcript_bytes: std::sync::atomic::AtomicU64,
}

/// `DATA/pty/<16 hex>.sock` for a session id.
pub fn socket_path_for(pty_dir: &Path, id: &str) -> PathBuf {
    let short = &sha256_hex(id.as_bytes())[..16];
    pty_dir.join(format!("{short}.sock"))
}

/// HMAC-SHA256(key, "happyx-holder-secret" || id): the holder secret is
/// re-derivable by the host after a restart, and only its hash is stored.
fn hmac(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(b"happyx-holder-secret")
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The holder key (`DATA/pty/holder.key`); a damaged one is refused, never
/// replaced: every live holder proves itself with secrets derived from it.
fn load_key(pty_dir: &Path) -> Result<[u8; 32], PtyError> {
    Ok(*crate::keyfile::load_or_create(pty_dir, "holder.key")?)
}

impl PtyManager {
    /// Prepares `DATA/pty` (0700) and the holder key (0600).
    pub fn new(
        store: Store,
        plugins: PluginHost,
        metrics: Arc<Metrics>,
        children: Children,
        data_dir: &Path,
    ) -> Result<Self, PtyError> {
        let pty_dir = data_dir.canonicalize()?.join("pty");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&pty_dir)?;
        let key = load_key(&pty_dir)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                plugins,
                metrics,
                children,
                exe: std::env::current_exe()?,
                pty_dir,
                key,
                boot_id: crate::datadir::boot_id(),
                sessions: Mutex::new(HashMap::new()),
                max_transcript_bytes: std::sync::atomic::AtomicU64::new(
                    crate::config::PtyConfig::default().max_transcript_bytes,
                ),
            }),
        })
    }

    /// Sets `[pty] max_transcript_bytes` for terminals opened or adopted from now on.
    pub fn set_max_transcript_bytes(&self, cap: u64) {
        self.inner
            .max_transcript_bytes
            .store(cap, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn plugins(&self) -> &PluginHost {
        &self.inner.plugins
    }

    pub fn boot_id(&self) -> &str {
        &self.inner.boot_id
    }

    /// Socket path and secret hash for a new session id.
    pub fn holder_paths(&self, id: &str) -> Result<(String, String), PtyError> {
        let path = socket_path_for(&self.inner.pty_dir, id);
        let path = path
            .to_str()
            .ok_or(PtyError::SocketPathTooLong)?
            .to_string();
        if path.len() > MAX_SOCKET_PATH {
            return Err(PtyError::SocketPathTooLong);
        }
        Ok((path, sha256_hex(&hmac(&self.inner.key, id.as_bytes()))))
    }

    /// Terminals this host supervises now (one holder each).
    pub fn live_holders(&self) -> usize {
        match self.inner.sessions.lock() {
            Ok(s) => s.len(),
            Err(p) => p.into_inner().len(),
        }
    }

    fn handle(&self, id: &str) -> Option<Handle> {
        self.inner
            .sessions
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned())
    }

    /// A receiver of the session's redacted live stream, if it is live.
    pub fn subscribe(&self, id: &str) -> Option<broadcast::Receiver<Live>> {
        self.handle(id).map(|h| h.live.subscribe())
    }

    /// How far a viewer of the live session `id` may read the stored transcript: the newest
    /// chunk's overlap window is held back until it can no longer be re-masked. `None` when
    /// the session is not live (everything stored is final).
    pub fn released(&self, id: &str) -> Option<u64> {
        self.handle(id)
            .map(|h| h.released.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Sends a command to a live session.
    pub async fn send(&self, id: &str, cmd: Cmd) -> Result<(), PtyError> {
        let h = self.handle(id).ok_or(PtyError::NotRunning)?;
        h.cmd.send(cmd).await.map_err(|_| PtyError::NotRunning)
    }

    /// Records a lifecycle event and sends its command (resize, interrupt, kill).
    pub async fn control(
        &self,
        id: &str,
        actor: &str,
        kind: &str,
        data: serde_json::Value,
        cmd: Cmd,
    ) -> Result<(), PtyError> {
        let h = self.handle(id).ok_or(PtyError::NotRunning)?;
        self.inner
            .store
            .record_pty_event(id, kind, actor, data)
            .await?;
        h.cmd.send(cmd).await.map_err(|_| PtyError::NotRunning)
    }

    /// Launches the holder for a `starting` session and begins supervising it.
    /// A program that cannot start ends the session as `exited` with code 127.
    pub async fn start(&self, s: &PtySession, cmd: &Rendered) -> Result<PtySession, PtyError> {
        let (socket_path, _) = self.holder_paths(&s.id)?;
        let secret = hmac(&self.inner.key, s.id.as_bytes());
        let ctx = match self.inner.children.for_actor(&s.requested_by).await {
            Ok(ctx) => ctx,
            Err(e) => {
                tracing::warn!(pty = %s.id, code = e.code(), error = %e, "cannot place the terminal's program");
                self.inner
                    .store
                    .fail_pty_spawn(&s.id, &e.to_string())
                    .await?;
                return self
                    .inner
                    .store
                    .pty(&s.id)
                    .await?
                    .ok_or(PtyError::Store(StoreError::NotFound));
            }
        };
        let mut env = ctx.env();
        env.push(("TERM".into(), "xterm-256color".into()));
        let spec = HolderSpec {
            version: VERSION,
            pty_id: s.id.clone(),
            boot_id: self.inner.boot_id.clone(),
            secret: hex::encode(secret),
            socket_path: socket_path.clone(),
            program: cmd.program.clone(),
            args: cmd.args.clone(),
            cwd: ctx.workspace.to_string_lossy().into_owned(),
            ids: ctx.ids,
            confinement: ctx.confinement.clone(),
            env,
            rows: s.rows.clamp(1, 1000) as u16,
            cols: s.cols.clamp(1, 1000) as u16,
            ring_bytes: RING_BYTES,
        };
        match self.launch(&spec).await {
            Ok(pid) => {
                let conn = connect(&socket_path, &s.id, &secret, &self.inner.boot_id).await?;
                self.inner.store.mark_pty_running(&s.id, pid).await?;
                self.supervise(s.id.clone(), conn, 0);
            }
            Err(e) => {
                tracing::warn!(pty = %s.id, code = e.code(), error = %e, "cannot start the terminal");
                let message = match &e {
                    PtyError::Launch(code) => format!("cannot start {}: {code}", cmd.program),
                    other => format!("cannot start {}: {other}", cmd.program),
                };
                self.inner.store.fail_pty_spawn(&s.id, &message).await?;
            }
        }
        self.inner
            .store
            .pty(&s.id)
            .await?
            .ok_or(PtyError::Store(StoreError::NotFound))
    }

    async fn launch(&self, spec: &HolderSpec) -> Result<i64, PtyError> {
        use std::process::Stdio;
        let mut cmd = tokio::process::Command::new(&self.inner.exe);
        cmd.arg("pty-holder")
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| PtyError::Launch(e.to_string()))?;
        let launch_err = |m: &str| PtyError::Launch(m.to_string());
        let mut stdin = child.stdin.take().ok_or_else(|| launch_err("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| launch_err("no stdout"))?;
        let body = serde_json::to_vec(spec).map_err(|_| launch_err("spec"))?;
        stdin.write_all(&body).await?;
        drop(stdin);
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let r = tokio::time::timeout(Duration::from_secs(15), reader.read_line(&mut line)).await;
        // Reap the holder's launcher process whenever it exits (the holder
        // itself keeps running; it is this child).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        match r {
            Ok(Ok(_)) => {}
            _ => return Err(launch_err("the holder did not report readiness")),
        }
        let line = line.trim();
        if let Some(pid) = line.strip_prefix("ok ") {
            pid.parse().map_err(|_| launch_err("bad readiness line"))
        } else {
            let code: String = line
                .strip_prefix("err ")
                .unwrap_or("unknown")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(40)
                .collect();
            Err(PtyError::Launch(code))
        }
    }

    fn supervise(&self, id: String, conn: (UnixStream, HelloOk), persisted: u64) {
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let released = Arc::new(std::sync::atomic::AtomicU64::new(persisted));
        if let Ok(mut m) = self.inner.sessions.lock() {
            m.insert(
                id.clone(),
                Handle {
                    cmd: cmd_tx,
                    live: live.clone(),
                    released: released.clone(),
                },
            );
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.run(&id, conn, persisted, cmd_rx, live, released).await {
                tracing::error!(pty = %id, code = e.code(), error = %e, "terminal supervision failed");
            }
            if let Ok(mut m) = this.inner.sessions.lock() {
                m.remove(&id);
            }
        });
    }

    async fn run(
        &self,
        id: &str,
        mut conn: (UnixStream, HelloOk),
        persisted: u64,
        mut cmd_rx: mpsc::Receiver<Cmd>,
        live: broadcast::Sender<Live>,
        released: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<(), PtyError> {
        let i = &self.inner;
        let mut t = Transcript::resume(
            id,
            i.store.clone(),
            i.plugins.clone(),
            i.metrics.clone(),
            persisted,
            live.clone(),
            released,
        )
        .await?
        .with_cap(
            i.max_transcript_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let secret = hmac(&i.key, id.as_bytes());
        let (socket_path, _) = self.holder_paths(id)?;
        loop {
            match drive(&mut t, conn, &mut cmd_rx).await {
                Ok((exit, mut wr)) => {
                    let state = i
                        .store
                        .finish_pty(id, None, exit.exit_code, exit.signal)
                        .await?;
                    let _ = wr.write_all(&Frame::Release.encode()).await;
                    let _ = live.send(Live::End {
                        end: t.persisted(),
                        state: state.unwrap_or(PtyState::Exited),
                        exit_code: exit.exit_code,
                        signal: exit.signal,
                    });
                    return Ok(());
                }
                Err((e, wr)) => {
                    drop(wr);
                    tracing::warn!(pty = %id, code = e.code(), error = %e, "lost the holder connection; reconnecting");
                    let mut again = None;
                    for _ in 0..5 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if let Ok(c) = connect(&socket_path, id, &secret, &i.boot_id).await {
                            again = Some(c);
                            break;
                        }
                    }
                    match again {
                        Some(c) => {
                            i.store
                                .record_pty_event(
                                    id,
                                    "reconnect",
                                    "host",
                                    json!({ "persisted": t.persisted(), "ring_start": c.1.ring_start }),
                                )
                                .await?;
                            conn = c;
                        }
                        None => {
                            t.flush(true).await?;
                            t.release_held();
                            i.store
                                .finish_pty(id, Some("holder_unreachable"), None, None)
                                .await?;
                            let _ = live.send(Live::End {
                                end: t.persisted(),
                                state: PtyState::Lost,
                                exit_code: None,
                                signal: None,
                            });
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// On host start: adopt live holders, finalize exited ones (they report
    /// their exit once drained), mark unreachable ones and those from another
    /// boot `lost`. Returns (adopted, lost).
    pub async fn recover(&self) -> Result<(usize, usize), PtyError> {
        let i = &self.inner;
        let (mut adopted, mut lost) = (0, 0);
        for row in i.store.unfinished_ptys().await? {
            if row.boot_id != i.boot_id {
                i.store
                    .finish_pty(&row.id, Some("reboot"), None, None)
                    .await?;
                lost += 1;
                continue;
            }
            match self.adopt(&row).await {
                Ok(()) => adopted += 1,
                Err(e) => {
                    tracing::warn!(pty = %row.id, code = e.code(), "holder unreachable; session lost");
                    i.store
                        .finish_pty(&row.id, Some("holder_unreachable"), None, None)
                        .await?;
                    lost += 1;
                }
            }
        }
        Ok((adopted, lost))
    }

    async fn adopt(&self, row: &PtyHolderRow) -> Result<(), PtyError> {
        let i = &self.inner;
        let secret = hmac(&i.key, row.id.as_bytes());
        if sha256_hex(&secret) != row.secret_hash {
            return Err(PtyError::Holder("secret_mismatch"));
        }
        let conn = connect(&row.socket_path, &row.id, &secret, &i.boot_id).await?;
        let persisted = row.persisted_offset.max(0) as u64;
        if conn.1.ring_start > persisted {
            return Err(PtyError::Holder("transcript_gap"));
        }
        if row.state == PtyState::Starting {
            i.store.mark_pty_running(&row.id, conn.1.pid).await?;
        }
        i.store
            .record_pty_event(
                &row.id,
                "adopt",
                "host",
                json!({
                    "pid": conn.1.pid,
                    "holder_state": conn.1.state,
                    "persisted": persisted,
                    "ring_start": conn.1.ring_start,
                    "ring_end": conn.1.ring_end,
                }),
            )
            .await?;
        self.supervise(row.id.clone(), conn, persisted);
        Ok(())
    }
}

fn refused(code: &str) -> PtyError {
    PtyError::Holder(match code {
        "version_mismatch" => "version_mismatch",
        "unauthorized" => "unauthorized",
        "boot_mismatch" => "boot_mismatch",
        _ => "refused",
    })
}

/// Connects to a holder: checks its uid, says hello, checks its proof.
async fn connect(
    path: &str,
    id: &str,
    secret: &[u8; 32],
    boot_id: &str,
) -> Result<(UnixStream, HelloOk), PtyError> {
    let limit = Duration::from_secs(5);
    let mut stream = tokio::time::timeout(limit, UnixStream::connect(path))
        .await
        .map_err(|_| PtyError::Holder("timeout"))??;
    let own = nix::unistd::getuid().as_raw();
    if stream.peer_cred()?.uid() != own {
        return Err(PtyError::Holder("wrong_peer"));
    }
    let nonce = hex::encode(random_bytes::<16>());
    let hello = Frame::Hello(Hello {
        version: VERSION,
        secret: hex::encode(secret),
        session: id.to_string(),
        boot_id: boot_id.to_string(),
        nonce: nonce.clone(),
    });
    stream.write_all(&hello.encode()).await?;
    let answer = tokio::time::timeout(limit, read_frame_async(&mut stream))
        .await
        .map_err(|_| PtyError::Holder("timeout"))??;
    match answer {
        Frame::Ok(ok) if ok.version == VERSION && ok.proof == proof(secret, &nonce) => {
            Ok((stream, ok))
        }
        Frame::Ok(_) => Err(PtyError::Holder("bad_proof")),
        Frame::Refused(code) => Err(refused(&code)),
        _ => Err(PtyError::Holder("unexpected_frame")),
    }
}

async fn ack(wr: &mut OwnedWriteHalf, t: &Transcript) -> Result<(), ProtocolError> {
    wr.write_all(&Frame::Ack(t.persisted()).encode()).await?;
    Ok(())
}

/// Drives one holder connection until the session ends (its exit info) or the
/// connection fails (the error, and the write half to drop).
async fn drive(
    t: &mut Transcript,
    conn: (UnixStream, HelloOk),
    cmd_rx: &mut mpsc::Receiver<Cmd>,
) -> Result<(ExitInfo, OwnedWriteHalf), (PtyError, Option<OwnedWriteHalf>)> {
    let (mut rd, mut wr) = conn.0.into_split();
    let (ftx, mut frx) = mpsc::channel::<Result<Frame, ProtocolError>>(32);
    let reader = tokio::spawn(async move {
        loop {
            let f = read_frame_async(&mut rd).await;
            let failed = f.is_err();
            if ftx.send(f).await.is_err() || failed {
                break;
            }
        }
    });
    let out = drive_inner(t, &mut wr, &mut frx, cmd_rx).await;
    reader.abort();
    match out {
        Ok(x) => Ok((x, wr)),
        Err(e) => Err((e, Some(wr))),
    }
}

/// A transcript batch being stored while the capture loop goes on reading the holder. It is a
/// task of its own, not a future the loop polls: the loop also writes (dropped-input events)
/// while a batch is under way, and on SQLite both need the one write connection, which the
/// batch's transaction would hold while the loop waited for it.
type Commit = tokio::task::JoinHandle<(Batch, Result<i64, StoreError>)>;

/// [`drive_loop`], then the batch it left being stored (if any) is waited for and applied
/// before the connection's fate is decided: the next connection resumes from what is stored,
/// so the transcript's offsets must say whether it landed.
async fn drive_inner(
    t: &mut Transcript,
    wr: &mut OwnedWriteHalf,
    frx: &mut mpsc::Receiver<Result<Frame, ProtocolError>>,
    cmd_rx: &mut mpsc::Receiver<Cmd>,
) -> Result<ExitInfo, PtyError> {
    let mut inflight: Option<Commit> = None;
    let out = drive_loop(t, wr, frx, cmd_rx, &mut inflight).await;
    if let Some(commit) = inflight.take() {
        let done = settle(t, commit).await;
        if out.is_ok() {
            done?;
        }
    }
    out
}

/// Waits for a batch's commit and applies its outcome to the transcript.
async fn settle(t: &mut Transcript, commit: Commit) -> Result<(), PtyError> {
    let (batch, end) = commit
        .await
        .map_err(|_| PtyError::Holder("commit_task_failed"))?;
    match end {
        Ok(end) => {
            t.committed(batch, end);
            Ok(())
        }
        Err(e) => {
            t.abandon(batch);
            Err(e.into())
        }
    }
}

/// The capture loop of one holder connection. Whole chunks are stored one batch at a time
/// while the loop goes on taking the holder's output (its ring, [`RING_BYTES`], bounds what
/// is pending and being stored together), so the holder keeps reading its PTY during a
/// commit; each commit is acknowledged as it lands.
async fn drive_loop(
    t: &mut Transcript,
    wr: &mut OwnedWriteHalf,
    frx: &mut mpsc::Receiver<Result<Frame, ProtocolError>>,
    cmd_rx: &mut mpsc::Receiver<Cmd>,
    inflight: &mut Option<Commit>,
) -> Result<ExitInfo, PtyError> {
    // The holder may still hold bytes a previous host persisted but never acknowledged.
    ack(wr, t).await?;
    let mut exit: Option<ExitInfo> = None;
    let mut flush_at: Option<Instant> = None;
    let mut cmds_open = true;
    loop {
        // While a batch is being stored, a due partial chunk waits for it to land.
        let wake = [
            flush_at.filter(|_| inflight.is_none()),
            t.dropped_due(),
            t.hold_due(),
        ]
        .into_iter()
        .flatten()
        .min();
        let sleep_until = wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            f = frx.recv() => {
                let mut next = f;
                loop {
                    match next {
                        Some(Ok(Frame::Output { offset, data })) => {
                            t.push(offset, &data).map_err(|_| PtyError::Holder("transcript_gap"))?;
                        }
                        Some(Ok(Frame::Exited(x))) => exit = Some(x),
                        Some(Ok(Frame::InputDropped(bytes))) => t.input_dropped(bytes).await?,
                        Some(Ok(_)) => return Err(PtyError::Holder("unexpected_frame")),
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err(PtyError::Protocol(ProtocolError::Closed)),
                    }
                    if t.pending() >= RING_BYTES {
                        break;
                    }
                    match frx.try_recv() {
                        Ok(f) => next = Some(f),
                        Err(_) => break,
                    }
                }
            }
            done = committing(inflight), if inflight.is_some() => {
                *inflight = None;
                let (batch, end) = done.map_err(|_| PtyError::Holder("commit_task_failed"))?;
                match end {
                    Ok(end) => t.committed(batch, end),
                    Err(e) => {
                        t.abandon(batch);
                        return Err(e.into());
                    }
                }
                ack(wr, t).await?;
            }
            c = cmd_rx.recv(), if cmds_open => {
                let frame = match c {
                    Some(Cmd::Input(b)) => Frame::Input(b),
                    Some(Cmd::Resize(r, c)) => Frame::Resize { rows: r, cols: c },
                    Some(Cmd::Signal(s)) => Frame::Signal(s),
                    None => { cmds_open = false; continue; }
                };
                wr.write_all(&frame.encode()).await.map_err(ProtocolError::from)?;
            }
            _ = tokio::time::sleep_until(sleep_until), if wake.is_some() => {
                if t.dropped_due().is_some_and(|at| at <= Instant::now()) {
                    t.report_dropped().await?;
                }
                if t.hold_due().is_some_and(|at| at <= Instant::now()) {
                    t.release_held();
                }
                if inflight.is_none() && flush_at.is_some_and(|at| at <= Instant::now()) {
                    // Pending for a while: all of it is stored, the partial chunk included.
                    t.flush(true).await?;
                    ack(wr, t).await?;
                }
            }
        }
        if inflight.is_none()
            && t.pending() >= CHUNK_BYTES
            && let Some(batch) = t.prepare(false).await
        {
            *inflight = Some(tokio::spawn(batch.commit()));
        }
        if let Some(x) = &exit
            && t.end() >= x.end_offset
        {
            if let Some(commit) = inflight.take() {
                settle(t, commit).await?;
            }
            t.flush(true).await?;
            t.release_held();
            t.report_dropped().await?;
            // Every byte is persisted: the caller records the exit, then
            // releases the holder.
            ack(wr, t).await?;
            return Ok(x.clone());
        }
        flush_at = match (t.pending(), flush_at) {
            (0, _) => None,
            (_, Some(at)) => Some(at),
            (_, None) => Some(Instant::now() + FLUSH_AFTER),
        };
    }
}

/// The commit under way (the branch that polls it runs only when there is one).
async fn committing(
    inflight: &mut Option<Commit>,
) -> Result<(Batch, Result<i64, StoreError>), tokio::task::JoinError> {
    match inflight.as_mut() {
        Some(commit) => commit.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_short_holder_key_is_refused_not_regenerated() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("holder.key");
        std::fs::write(&path, [9u8; 16]).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let e = load_key(tmp.path()).expect_err("refused");
        assert_eq!(e.code(), "key_file_wrong_size", "{e}");
        assert_eq!(std::fs::read(&path).expect("read"), [9u8; 16], "kept");
        let first = {
            let tmp = tempfile::tempdir().expect("tmp");
            let a = load_key(tmp.path()).expect("created");
            assert_eq!(load_key(tmp.path()).expect("loaded"), a);
            a
        };
        assert_ne!(first, [0u8; 32]);
    }
}
