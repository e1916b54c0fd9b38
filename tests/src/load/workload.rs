//! The actors of the mixed workload and the HTTP plumbing they share.
//!
//! - agents create tasks and sessions, start low-risk runs (`echo`, with an `Idempotency-Key`),
//!   ask for high-risk runs (`shell`) and terminals through approvals, read their own records,
//!   and now and then send a write the host must refuse (the refusal is recorded);
//! - operators approve the queue and observe live terminals over the WebSocket, attaching and
//!   detaching, checking that the byte offsets they receive have no gap or overlap;
//! - devices seal envelopes with the `happyx` device library and post them alone or batched,
//!   and replay an old one now and then (it must be refused);
//! - viewers read the public views and lists.
//!
//! Every request is retried while the host is unreachable (a chaos restart), with the same
//! idempotency key where the API has one; creates retried without one are counted as
//! ambiguous in the ledger.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::ledger::{Kind, Ledger, Refused, SentEnvelope};
use crate::stats::Stats;

/// How long a request is retried while the host does not answer.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// What every actor shares.
pub struct Ctx {
    pub base: String,
    pub http: reqwest::Client,
    pub stats: Stats,
    pub ledger: Ledger,
    /// When actors stop starting new actions.
    deadline: Mutex<Instant>,
    /// A tag unique to this run, in markers and idempotency keys.
    pub tag: String,
    /// Live terminals other than the sentinel (ids).
    pub terminals: Mutex<Vec<String>>,
    pub sentinel: Mutex<Option<String>>,
    counter: AtomicU64,
    /// Offset gaps or overlaps seen by observers.
    pub stream_gaps: AtomicU64,
    /// Bytes observers received.
    pub observed_bytes: AtomicU64,
    /// Agents still working (operators keep approving until every agent is done).
    pub active_agents: AtomicU64,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The request was sent more than once (its first answer was lost).
    pub retried: bool,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    pub fn id(&self) -> Option<&str> {
        self.body["id"].as_str()
    }
}

/// Rates and sizes of the workload.
#[derive(Debug, Clone)]
pub struct Rates {
    pub agent_think: Duration,
    pub device_think: Duration,
    pub viewer_think: Duration,
    pub terminals: usize,
    pub terminal_life: Duration,
}

impl Ctx {
    pub fn new(base: String, tag: String) -> anyhow::Result<Self> {
        let deadline = Mutex::new(Instant::now() + Duration::from_secs(365 * 24 * 3600));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            base,
            http,
            stats: Stats::default(),
            ledger: Ledger::default(),
            deadline,
            tag,
            terminals: Mutex::new(Vec::new()),
            sentinel: Mutex::new(None),
            counter: AtomicU64::new(0),
            stream_gaps: AtomicU64::new(0),
            observed_bytes: AtomicU64::new(0),
            active_agents: AtomicU64::new(0),
        })
    }

    pub fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_deadline(&self, at: Instant) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    pub fn running(&self) -> bool {
        Instant::now() < self.deadline()
    }

    /// A number unique within the run.
    pub fn seq(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a JSON request; `None` when the host never answered within [`RETRY_FOR`].
    pub async fn call(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        idem: Option<&str>,
    ) -> Option<Answer> {
        let raw = body.map(|b| b.to_string().into_bytes());
        self.call_raw(op, method, path, token, raw, idem).await
    }

    /// Sends a request with a raw JSON body, retrying while the host does not answer.
    pub async fn call_raw(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        idem: Option<&str>,
    ) -> Option<Answer> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(k) = idem {
                req = req.header("Idempotency-Key", k);
            }
            if let Some(b) = &body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.clone());
            }
            let t0 = Instant::now();
            let sent = req.send().await;
            let answer = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.bytes().await {
                        Ok(bytes) => Some((status, bytes)),
                        Err(_) => None,
                    }
                }
                Err(_) => None,
            };
            match answer {
                Some((status, bytes)) => {
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let micros = t0.elapsed().as_micros() as u64;
                    self.stats
                        .answered(op, micros, status, body["code"].as_str());
                    return Some(Answer {
                        status,
                        body,
                        retried: attempts > 1,
                    });
                }
                None => {
                    self.stats.transport_error();
                    if started.elapsed() > RETRY_FOR {
                        return None;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Records a create: acknowledged with its id, or ambiguous if it was retried without a
    /// key and not acknowledged.
    fn record_create(&self, kind: Kind, a: &Option<Answer>, keyed: bool) -> Option<String> {
        match a {
            Some(a) if (200..300).contains(&a.status) => {
                let id = a.id().map(str::to_string);
                if let Some(id) = &id {
                    self.ledger.acked(kind, id);
                }
                if a.retried && !keyed {
                    // The lost first attempt may have created a row too.
                    self.ledger.ambiguous(kind);
                }
                id
            }
            Some(a) => {
                if a.retried && !keyed {
                    self.ledger.ambiguous(kind);
                }
                None
            }
            None => {
                self.ledger.ambiguous(kind);
                None
            }
        }
    }
}

/// A small xorshift generator: the workload needs variety, not cryptographic randomness.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    /// `d` scaled by a factor in [0.5, 1.5).
    pub fn jitter(&mut self, d: Duration) -> Duration {
        d.mul_f64(0.5 + self.below(1000) as f64 / 1000.0)
    }
}

async fn pause(ctx: &Ctx, d: Duration) {
    let left = ctx.deadline().saturating_duration_since(Instant::now());
    tokio::time::sleep(d.min(left)).await;
}

/// The high-risk flow from the requester's side: ask, wait for an operator's approval, present
/// the token (with `idem` as the idempotency key for runs). Returns the final answer.
async fn approved(
    ctx: &Ctx,
    op: &'static str,
    path: &str,
    token: &str,
    body: &Value,
    idem: Option<&str>,
    presented: &mut Option<Value>,
) -> Option<Answer> {
    let Some(first) = ctx
        .call(op, Method::POST, path, Some(token), Some(body), None)
        .await
    else {
        // The request may have created a pending approval nobody will hear of.
        ctx.ledger.ambiguous(Kind::Approval);
        return None;
    };
    if first.retried {
        // A lost first answer may have created an approval besides the one answered.
        ctx.ledger.ambiguous(Kind::Approval);
    }
    if first.status != 403 || first.code() != "approval_required" {
        return Some(first);
    }
    let approval_id = first.body["approval_id"].as_str()?.to_string();
    let approval_token = first.body["approval_token"].as_str()?.to_string();
    ctx.ledger.acked(Kind::Approval, &approval_id);
    let mut used = body.clone();
    used["approval_token"] = Value::from(approval_token);
    *presented = Some(used.clone());
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let a = ctx
            .call(op, Method::POST, path, Some(token), Some(&used), idem)
            .await?;
        if a.status == 403 && a.code() == "approval_pending" && Instant::now() < give_up {
            continue;
        }
        return Some(a);
    }
}

/// One agent: the bulk of the writes.
pub async fn agent(ctx: Arc<Ctx>, idx: usize, token: String, rates: Rates) {
    ctx.active_agents.fetch_add(1, Ordering::SeqCst);
    let mut rng = Rng::new(idx as u64 + 1);
    let mut tasks: Vec<String> = Vec::new();
    let mut sessions: Vec<String> = Vec::new();
    let mut runs: Vec<String> = Vec::new();
    let mut terminal: Option<(String, Instant)> = None;
    let mut spent_token: Option<Value> = None;
    while ctx.running() {
        let n = ctx.seq();
        let roll = rng.below(100);
        match roll {
            0..=11 => {
                let body = json!({"title": format!("soak task {n}"), "description": "load"});
                let a = ctx
                    .call(
                        "task.create",
                        Method::POST,
                        "/v1/tasks",
                        Some(&token),
                        Some(&body),
                        None,
                    )
                    .await;
                if let Some(id) = ctx.record_create(Kind::Task, &a, false) {
                    keep(&mut tasks, id);
                }
            }
            12..=23 => {
                let mut body = json!({"name": format!("soak session {n}")});
                if let Some(t) = pick(&mut rng, &tasks) {
                    body["task_id"] = Value::from(t);
                }
                let a = ctx
                    .call(
                        "session.create",
                        Method::POST,
                        "/v1/sessions",
                        Some(&token),
                        Some(&body),
                        None,
                    )
                    .await;
                if let Some(id) = ctx.record_create(Kind::Session, &a, false) {
                    keep(&mut sessions, id);
                }
            }
            24..=63 => {
                let mut body = json!({"recipe": "echo", "args": {"text": format!("soak run {n}")}});
                if let Some(s) = pick(&mut rng, &sessions) {
                    body["session_id"] = Value::from(s);
                }
                let key = format!("{}-run-{n}", ctx.tag);
                let a = ctx
                    .call(
                        "run.create",
                        Method::POST,
                        "/v1/runs",
                        Some(&token),
                        Some(&body),
                        Some(&key),
                    )
                    .await;
                if let Some(id) = ctx.record_create(Kind::Run, &a, true) {
                    keep(&mut runs, id);
                }
            }
            64..=69 => {
                let body =
                    json!({"recipe": "shell", "args": {"command": format!("echo approved {n}")}});
                let key = format!("{}-shell-{n}", ctx.tag);
                let mut used = None;
                let a = approved(
                    &ctx,
                    "run.high_risk",
                    "/v1/runs",
                    &token,
                    &body,
                    Some(&key),
                    &mut used,
                )
                .await;
                if let Some(id) = ctx.record_create(Kind::Run, &a, true) {
                    keep(&mut runs, id);
                    // Keep the spent token to present it again later (it must be refused).
                    spent_token = used;
                }
            }
            70..=73 => refused_probe(&ctx, &mut rng, &token, n, &mut spent_token).await,
            74..=79 => {
                terminal = terminal_step(&ctx, &token, terminal, &rates, n).await;
            }
            80..=89 => {
                if let Some(r) = pick(&mut rng, &runs) {
                    ctx.call(
                        "run.get",
                        Method::GET,
                        &format!("/v1/runs/{r}"),
                        Some(&token),
                        None,
                        None,
                    )
                    .await;
                }
            }
            _ => {
                ctx.call(
                    "task.list",
                    Method::GET,
                    "/v1/tasks?limit=20",
                    Some(&token),
                    None,
                    None,
                )
                .await;
            }
        }
        pause(&ctx, rng.jitter(rates.agent_think)).await;
    }
    if let Some((id, _)) = terminal {
        kill_terminal(&ctx, &token, &id).await;
    }
    ctx.active_agents.fetch_sub(1, Ordering::SeqCst);
}

fn keep(v: &mut Vec<String>, id: String) {
    v.push(id);
    if v.len() > 32 {
        v.remove(0);
    }
}

fn pick(rng: &mut Rng, v: &[String]) -> Option<String> {
    (!v.is_empty()).then(|| v[rng.below(v.len() as u64) as usize].clone())
}

/// A write the host must refuse; its marker (or, for a spent approval token, the run count)
/// must show that nothing was written.
async fn refused_probe(ctx: &Ctx, rng: &mut Rng, token: &str, n: u64, spent: &mut Option<Value>) {
    let marker = format!("refused-{}-{n}", ctx.tag);
    match rng.below(3) {
        0 => {
            // A description beyond the 10 000-character limit.
            let body = json!({"title": marker, "description": "x".repeat(10_001)});
            let target = ("tasks", "title");
            expect_refusal(
                ctx,
                "task.refused",
                "/v1/tasks",
                token,
                &body,
                None,
                target,
                marker,
            )
            .await;
        }
        1 => {
            let body = json!({"name": marker, "task_id": format!("no-such-task-{n}")});
            let target = ("sessions", "name");
            expect_refusal(
                ctx,
                "session.refused",
                "/v1/sessions",
                token,
                &body,
                None,
                target,
                marker,
            )
            .await;
        }
        _ => {
            let Some(used) = spent.take() else {
                return;
            };
            // The same approved action with its spent token under a new key: refused, and no
            // run may appear (checked by the run count).
            let key = format!("{}-reuse-{n}", ctx.tag);
            let target = ("agent_runs", "");
            expect_refusal(
                ctx,
                "run.token_reuse",
                "/v1/runs",
                token,
                &used,
                Some(&key),
                target,
                marker,
            )
            .await;
        }
    }
}

/// Posts `body` to `path`; a 4xx answer is recorded in the ledger as a refusal whose `marker`
/// must never appear in `target` (table, column).
#[allow(clippy::too_many_arguments)]
async fn expect_refusal(
    ctx: &Ctx,
    op: &'static str,
    path: &str,
    token: &str,
    body: &Value,
    idempotency_key: Option<&str>,
    target: (&'static str, &'static str),
    marker: String,
) {
    let a = ctx
        .call(
            op,
            Method::POST,
            path,
            Some(token),
            Some(body),
            idempotency_key,
        )
        .await;
    if let Some(a) = a
        && (400..500).contains(&a.status)
    {
        ctx.ledger.refused(Refused {
            table: target.0,
            column: target.1,
            marker,
            code: a.code().to_string(),
        });
    }
}

/// The shell loop every terminal runs: a line of output ten times a second.
pub const TERMINAL_SCRIPT: &str =
    "i=0; while :; do i=$((i+1)); echo \"tick $i $(date +%s%N)\"; sleep 0.1; done";

/// Opens, keeps or kills the agent's terminal.
async fn terminal_step(
    ctx: &Ctx,
    token: &str,
    current: Option<(String, Instant)>,
    rates: &Rates,
    n: u64,
) -> Option<(String, Instant)> {
    if let Some((id, since)) = current {
        if since.elapsed() < rates.terminal_life {
            return Some((id, since));
        }
        kill_terminal(ctx, token, &id).await;
        return None;
    }
    {
        let live = ctx.terminals.lock().unwrap_or_else(|p| p.into_inner());
        if live.len() >= rates.terminals {
            return None;
        }
    }
    let id = open_terminal(ctx, token, n).await?;
    ctx.terminals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(id.clone());
    Some((id, Instant::now()))
}

/// `POST /v1/pty` with the approval flow; the id of the new terminal.
pub async fn open_terminal(ctx: &Ctx, token: &str, n: u64) -> Option<String> {
    let body = json!({"recipe": "shell", "args": {"command": format!("{TERMINAL_SCRIPT} # {n}")}});
    let a = approved(ctx, "pty.open", "/v1/pty", token, &body, None, &mut None).await;
    ctx.record_create(Kind::Pty, &a, false)
}

async fn kill_terminal(ctx: &Ctx, token: &str, id: &str) {
    ctx.terminals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|t| t != id);
    ctx.call(
        "pty.kill",
        Method::POST,
        &format!("/v1/pty/{id}/kill"),
        Some(token),
        Some(&json!({})),
        None,
    )
    .await;
}

/// One operator: approves the queue, observes terminals.
pub async fn operator(ctx: Arc<Ctx>, idx: usize, token: String) {
    let mut rng = Rng::new(1000 + idx as u64);
    let mut last_observe = Instant::now();
    // Past the deadline, approvals continue until the last agent has finished its action.
    while ctx.running() || ctx.active_agents.load(Ordering::SeqCst) > 0 {
        if let Some(a) = ctx
            .call(
                "approvals.list",
                Method::GET,
                "/v1/approvals?status=pending",
                Some(&token),
                None,
                None,
            )
            .await
            && let Some(items) = a.body["items"].as_array()
        {
            for item in items {
                let Some(id) = item["id"].as_str() else {
                    continue;
                };
                ctx.call(
                    "approval.approve",
                    Method::POST,
                    &format!("/v1/approvals/{id}/approve"),
                    Some(&token),
                    Some(&json!({})),
                    None,
                )
                .await;
            }
        }
        if ctx.running() && last_observe.elapsed() > Duration::from_secs(3) {
            last_observe = Instant::now();
            let target = {
                let live = ctx.terminals.lock().unwrap_or_else(|p| p.into_inner());
                let sentinel = ctx.sentinel.lock().unwrap_or_else(|p| p.into_inner());
                let mut all: Vec<String> = live.clone();
                all.extend(sentinel.iter().cloned());
                pick(&mut rng, &all)
            };
            if let Some(id) = target {
                let secs = 1 + rng.below(4);
                observe(&ctx, &token, &id, Duration::from_secs(secs)).await;
            }
        }
        let wait = rng.jitter(Duration::from_millis(400));
        if ctx.running() {
            pause(&ctx, wait).await;
        } else {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Attaches as an observer for `for_`, resuming a little behind the live end, and checks that
/// the frames' offsets follow each other exactly.
pub async fn observe(ctx: &Ctx, token: &str, id: &str, for_: Duration) {
    let Some(info) = ctx
        .call(
            "pty.get",
            Method::GET,
            &format!("/v1/pty/{id}"),
            Some(token),
            None,
            None,
        )
        .await
    else {
        return;
    };
    if info.body["state"].as_str() != Some("running") {
        return;
    }
    let from = info.body["output_bytes"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(2048);
    let Some(t) = ctx
        .call(
            "pty.attach",
            Method::POST,
            &format!("/v1/pty/{id}/attach"),
            Some(token),
            Some(&json!({"mode": "observe"})),
            None,
        )
        .await
    else {
        return;
    };
    let (Some(ticket), Some(ws_path)) = (t.body["ticket"].as_str(), t.body["ws_path"].as_str())
    else {
        return;
    };
    let ws_url = format!(
        "{}{ws_path}?ticket={ticket}&offset={from}",
        ctx.base.replacen("http", "ws", 1)
    );
    let t0 = Instant::now();
    let Ok(Ok((mut ws, _))) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(ws_url),
    )
    .await
    else {
        ctx.stats.transport_error();
        return;
    };
    let mut expected: Option<u64> = None;
    let mut first_frame = true;
    let end = Instant::now() + for_;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let msg = match tokio::time::timeout(left, ws.next()).await {
            Err(_) => break,
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(text) => {
                let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                if v["type"] == "hello" {
                    expected = v["offset"].as_u64();
                    ctx.stats
                        .answered("pty.ws_hello", t0.elapsed().as_micros() as u64, 101, None);
                } else if v["type"] == "exit" {
                    break;
                }
            }
            Message::Binary(data) => {
                if data.len() < 12 {
                    ctx.stats.failure("ws_short_frame");
                    continue;
                }
                let mut off = [0u8; 8];
                off.copy_from_slice(&data[..8]);
                let mut len = [0u8; 4];
                len.copy_from_slice(&data[8..12]);
                let offset = u64::from_be_bytes(off);
                let raw_len = u64::from(u32::from_be_bytes(len));
                if first_frame {
                    first_frame = false;
                    ctx.stats.answered(
                        "pty.ws_first_frame",
                        t0.elapsed().as_micros() as u64,
                        101,
                        None,
                    );
                }
                if let Some(e) = expected
                    && e != offset
                {
                    ctx.stream_gaps.fetch_add(1, Ordering::Relaxed);
                    ctx.stats.failure("ws_offset_gap");
                }
                expected = Some(offset + raw_len);
                ctx.observed_bytes.fetch_add(raw_len, Ordering::Relaxed);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
}

/// One viewer: public views and read-only lists.
pub async fn viewer(ctx: Arc<Ctx>, idx: usize, token: String, think: Duration) {
    let mut rng = Rng::new(2000 + idx as u64);
    let paths: [(&'static str, &str, bool); 5] = [
        ("public.state", "/public/state", false),
        ("public.evidence", "/public/evidence", false),
        ("public.runs", "/public/runs?limit=20", false),
        ("viewer.runs", "/v1/runs?limit=20", true),
        ("viewer.sessions", "/v1/sessions?limit=20", true),
    ];
    while ctx.running() {
        let (op, path, auth) = paths[rng.below(paths.len() as u64) as usize];
        let tok = auth.then_some(token.as_str());
        ctx.call(op, Method::GET, path, tok, None, None).await;
        pause(&ctx, rng.jitter(think)).await;
    }
}

/// A device enrolled for the run, with its own encrypted session.
#[derive(Debug, Clone)]
pub struct Device {
    pub dir: PathBuf,
    pub id: String,
    pub session: String,
}

/// Enrolls a device with a fresh operator-issued code and opens its encrypted session.
pub async fn enroll_device(
    ctx: &Ctx,
    operator_token: &str,
    dir: PathBuf,
    name: String,
) -> anyhow::Result<Device> {
    let a = ctx
        .call(
            "enrollment.create",
            Method::POST,
            "/v1/enrollments",
            Some(operator_token),
            Some(&json!({"name": name})),
            None,
        )
        .await
        .ok_or_else(|| anyhow::anyhow!("the host did not answer the enrollment"))?;
    let code = a.body["code"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no enrollment code (HTTP {})", a.status))?
        .to_string();
    let url = ctx.base.clone();
    let d = dir.clone();
    let (id, session) = tokio::task::spawn_blocking(move || -> anyhow::Result<(String, String)> {
        use happyx::devices::client;
        client::keygen(&d, 1)?;
        let id = client::enroll(&d, &url, &code, Some(&name))?;
        let mut warn = std::io::sink();
        let session = client::open_session(&d, &url, &[], &mut warn)?;
        Ok((id, session))
    })
    .await??;
    ctx.ledger.acked(Kind::Device, &id);
    ctx.ledger.acked(Kind::Session, &session);
    Ok(Device { dir, id, session })
}

/// Seals `texts` as the next envelopes of the device's session (sequences are persisted in the
/// device dir before each envelope exists).
fn seal_batch(dev: &Device, texts: &[String]) -> anyhow::Result<Vec<String>> {
    use happyx::devices::DeviceDir;
    use happyx::envelope::{ENVELOPE_VERSION, EnvelopeHeader, seal};
    let dir = DeviceDir::open(&dev.dir)?;
    let key = dir
        .content_key(&dev.session, 0)?
        .ok_or_else(|| anyhow::anyhow!("no content key for the device's session"))?;
    let mut out = Vec::with_capacity(texts.len());
    for t in texts {
        let sequence = dir.next_sequence(&dev.session)?;
        let header = EnvelopeHeader {
            v: ENVELOPE_VERSION,
            session_id: dev.session.clone(),
            sender_device_id: dev.id.clone(),
            key_version: dir.keys().key_version(),
            epoch: 0,
            sequence,
            created_at: happyx::util::now_ms().unsigned_abs(),
        };
        out.push(seal(&key, dir.keys(), &header, t.as_bytes())?.to_json());
    }
    Ok(out)
}

/// One device: single and batched envelopes, and now and then a replay that must be refused.
pub async fn device(ctx: Arc<Ctx>, idx: usize, dev: Device, think: Duration) {
    let mut rng = Rng::new(3000 + idx as u64);
    let mut last_wire: Option<String> = None;
    while ctx.running() {
        let roll = rng.below(100);
        if roll < 5 {
            if let Some(wire) = last_wire.clone() {
                let a = ctx
                    .call_raw(
                        "envelope.replay",
                        Method::POST,
                        &format!("/v1/sessions/{}/envelopes", dev.session),
                        None,
                        Some(wire.into_bytes()),
                        None,
                    )
                    .await;
                if let Some(a) = a
                    && a.status == 201
                {
                    ctx.stats.failure("replay_accepted");
                }
            }
        } else {
            let count = if roll < 70 {
                1
            } else {
                5 + rng.below(6) as usize
            };
            let texts: Vec<String> = (0..count)
                .map(|_| format!("soak {} device {idx} msg {}", ctx.tag, ctx.seq()))
                .collect();
            let d = dev.clone();
            let t = texts.clone();
            let sealed = tokio::task::spawn_blocking(move || seal_batch(&d, &t)).await;
            let wires = match sealed {
                Ok(Ok(w)) => w,
                _ => {
                    ctx.stats.failure("seal_failed");
                    pause(&ctx, think).await;
                    continue;
                }
            };
            if count == 1 {
                send_single(&ctx, &dev, &texts[0], &wires[0]).await;
            } else {
                send_batch(&ctx, &dev, &texts, &wires).await;
            }
            last_wire = wires.last().cloned();
        }
        pause(&ctx, rng.jitter(think)).await;
    }
}

async fn send_single(ctx: &Ctx, dev: &Device, text: &str, wire: &str) {
    let a = ctx
        .call_raw(
            "envelope.single",
            Method::POST,
            &format!("/v1/sessions/{}/envelopes", dev.session),
            None,
            Some(wire.as_bytes().to_vec()),
            None,
        )
        .await;
    match a {
        Some(a) if a.status == 201 => {
            if let Some(id) = a.id() {
                ctx.ledger.envelope(
                    id,
                    SentEnvelope {
                        session: dev.session.clone(),
                        plaintext: text.to_string(),
                    },
                );
            }
        }
        Some(a) if a.retried && a.code() == "replayed" => ctx.ledger.envelope_stored_on_retry(),
        Some(_) => ctx.stats.failure("envelope_refused"),
        None => ctx.ledger.ambiguous(Kind::Envelope),
    }
}

async fn send_batch(ctx: &Ctx, dev: &Device, texts: &[String], wires: &[String]) {
    let body = happyx::devices::protocol::envelope_batch_body(wires);
    let a = ctx
        .call_raw(
            "envelope.batch",
            Method::POST,
            &format!("/v1/sessions/{}/envelopes/batch", dev.session),
            None,
            Some(body),
            None,
        )
        .await;
    let Some(a) = a else {
        for _ in wires {
            ctx.ledger.ambiguous(Kind::Envelope);
        }
        return;
    };
    let Some(results) = a.body["results"].as_array() else {
        ctx.stats.failure("envelope_batch_refused");
        return;
    };
    for (r, text) in results.iter().zip(texts) {
        let status = r["status"].as_u64().unwrap_or(0);
        if status == 201
            && let Some(id) = r["id"].as_str()
        {
            ctx.ledger.envelope(
                id,
                SentEnvelope {
                    session: dev.session.clone(),
                    plaintext: text.clone(),
                },
            );
        } else if a.retried && r["code"] == "replayed" {
            ctx.ledger.envelope_stored_on_retry();
        } else {
            ctx.stats.failure("envelope_refused");
        }
    }
}
