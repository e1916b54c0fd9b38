//! `happyx pty ls|attach`: terminals over `/v1/pty`, and a terminal client for them.
//!
//! `attach` asks for a single-use ticket (`POST /v1/pty/{id}/attach`), opens the WebSocket
//! with `?offset=N` and prints the output frames (`u64-BE offset || u32-BE raw length ||
//! bytes`) to stdout, tracking the raw offset. When the connection drops without an `exit`
//! frame it takes a new ticket and resumes from that offset: no gap, no duplicate. On a
//! terminal it puts the local tty in raw mode (restored on every way out: detach, the end of
//! the terminal, errors, SIGTERM/SIGHUP/SIGINT/SIGQUIT, panics), forwards keystrokes as
//! binary input frames (`drive`), sends the window size at start and on SIGWINCH, and
//! detaches on the detach key (Ctrl-\ by default). Without a terminal on stdin there is no
//! raw mode and no detach key: stdin is forwarded as is (`drive`) or not read (`--observe`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use happyx_core::vocab::AttachMode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::client::{Client, ClientError, check_id};
use super::table::{bytes, opt, opt_relative, print_listing, safe};
use super::{Conn, Exit};

#[derive(Debug, Args)]
pub struct PtyArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub cmd: PtyCmd,
}

#[derive(Debug, Subcommand)]
pub enum PtyCmd {
    /// The most recent terminals, oldest first (agents see their own).
    #[command(alias = "list")]
    Ls {
        /// At most N.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=500))]
        limit: i64,
    },
    /// Attach to a terminal: its output on stdout, your keystrokes to it. Exits with the
    /// terminal's exit status when it ends, 0 on detach.
    Attach {
        id: String,
        /// Watch only: nothing you type is sent (Ctrl-C detaches too).
        #[arg(long)]
        observe: bool,
        /// The key that detaches (the terminal keeps running): ctrl-\ (default), ctrl-], ctrl-a … ctrl-z,
        /// or `none`.
        #[arg(long, default_value = "ctrl-\\", value_parser = parse_detach_key)]
        detach_key: DetachKey,
        /// Start the output at this raw byte offset (default 0: the whole transcript).
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
}

/// The byte that detaches, if any.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetachKey(Option<u8>);

/// `ctrl-\`, `ctrl-]`, `ctrl-a`…`ctrl-z`, `^X`, or `none`.
pub fn parse_detach_key(s: &str) -> Result<DetachKey, String> {
    let lower = s.to_ascii_lowercase();
    if lower == "none" {
        return Ok(DetachKey(None));
    }
    let key = lower
        .strip_prefix("ctrl-")
        .or_else(|| lower.strip_prefix("ctrl+"))
        .or_else(|| lower.strip_prefix('^'))
        .filter(|k| k.len() == 1)
        .and_then(|k| k.bytes().next());
    match key {
        Some(b @ b'a'..=b'z') => Ok(DetachKey(Some(b - b'a' + 1))),
        Some(b @ (b'[' | b'\\' | b']' | b'^' | b'_')) => Ok(DetachKey(Some(b - b'@'))),
        _ => Err(format!(
            "{s:?} is not a detach key: use ctrl-\\, ctrl-], ctrl-a … ctrl-z, or none"
        )),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => safe(s),
        Value::Null => "-".into(),
        other => safe(&other.to_string()),
    }
}

pub async fn run(a: PtyArgs) -> Result<()> {
    let client = a.conn.client()?;
    match a.cmd {
        PtyCmd::Ls { limit } => {
            // `GET /v1/pty` answers the newest terminals (up to 500) in one page.
            let items = super::runs::newest(&client, "/v1/pty", limit, None).await?;
            let mut out = std::io::stdout().lock();
            print_listing(
                &mut out,
                a.conn.json,
                &items,
                &[
                    "ID",
                    "RECIPE",
                    "RISK",
                    "STATE",
                    "PID",
                    "EXIT",
                    "SIZE",
                    "OUTPUT",
                    "REQUESTER",
                    "CREATED",
                ],
                "no terminals",
                |p| {
                    let exit = match (p["exit_code"].as_i64(), p["exit_signal"].as_i64()) {
                        (_, Some(sig)) => format!("signal {sig}"),
                        (c, None) => opt(c),
                    };
                    vec![
                        s(&p["id"]),
                        s(&p["recipe"]),
                        s(&p["risk"]),
                        s(&p["state"]),
                        opt(p["pid"].as_i64()),
                        exit,
                        format!("{}x{}", s(&p["rows"]), s(&p["cols"])),
                        if p["truncated"].as_bool() == Some(true) {
                            format!(
                                "{} (truncated)",
                                bytes(p["output_bytes"].as_i64().unwrap_or(0))
                            )
                        } else {
                            bytes(p["output_bytes"].as_i64().unwrap_or(0))
                        },
                        s(&p["requested_by"]),
                        opt_relative(p["created_at"].as_i64()),
                    ]
                },
            )?;
            Ok(())
        }
        PtyCmd::Attach {
            id,
            observe,
            detach_key,
            offset,
        } => {
            let id = check_id("terminal", &id)?.to_string();
            attach(&client, &id, observe, detach_key, offset).await
        }
    }
}

/// The local terminal in raw mode; restored when dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enable() -> Result<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).map_err(|e| anyhow!("cannot read the terminal mode: {e}"))?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw)
            .map_err(|e| anyhow!("cannot put the terminal in raw mode: {e}"))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// The window size of the local terminal (rows, cols), if there is one.
fn window_size() -> Option<(u16, u16)> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO, libc::STDERR_FILENO] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which is valid and
        // exclusively borrowed for the call.
        let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            return Some((ws.ws_row.min(1000), ws.ws_col.min(1000)));
        }
    }
    None
}

/// A message on stderr that reads right whether or not the tty is in raw mode.
fn note(raw: bool, msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = if raw {
        write!(err, "\r\nhappyx: {msg}\r\n")
    } else {
        writeln!(err, "happyx: {msg}")
    };
    let _ = err.flush();
}

/// Reads stdin on its own thread (a blocking read must not hold the async runtime at exit);
/// the channel closes at end of input.
fn stdin_reader() -> mpsc::UnboundedReceiver<Vec<u8>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// How an attach ended.
enum Outcome {
    Detached,
    /// The terminal ended; the `exit` frame, if one came.
    Ended(Option<Value>),
    /// A signal asked the client to stop.
    Signaled(i32),
}

/// Why a connection ended.
enum Ending {
    /// The connection broke (or the host closed it early, e.g. `slow_consumer`): resume.
    Lost(String),
    Done(Outcome),
}

struct Session<'a> {
    client: &'a Client,
    id: &'a str,
    mode: AttachMode,
    raw: bool,
    detach: Option<u8>,
    /// Also detach on Ctrl-C (observe on a tty: nothing is sent anyway).
    detach_on_ctrl_c: bool,
    /// The next raw output offset to print.
    next: u64,
    /// Input read while disconnected, sent after the reconnect.
    pending: Vec<u8>,
    stdin: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    exit: Option<Value>,
    /// Set when a connection is up; cleared before each attempt.
    connected: bool,
    /// The last connection was lost; say so when the next one is up.
    reconnecting: bool,
}

struct Signals {
    winch: tokio::signal::unix::Signal,
    stops: Stops,
}

/// The signals that stop the client (the tty is restored on the way out).
struct Stops {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        let s = |k: SignalKind| signal(k).map_err(|e| anyhow!("cannot handle signals: {e}"));
        Ok(Signals {
            winch: s(SignalKind::window_change())?,
            stops: Stops {
                term: s(SignalKind::terminate())?,
                hup: s(SignalKind::hangup())?,
                int: s(SignalKind::interrupt())?,
                quit: s(SignalKind::quit())?,
            },
        })
    }
}

impl Stops {
    /// The next stopping signal's number.
    async fn stop(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
            _ = self.int.recv() => libc::SIGINT,
            _ = self.quit.recv() => libc::SIGQUIT,
        }
    }
}

enum Input {
    /// Bytes to send.
    Data(Vec<u8>),
    /// Bytes to send, then detach.
    Detach(Vec<u8>),
    Eof,
}

impl Session<'_> {
    /// Splits `data` at the detach key (only on a terminal).
    fn scan(&self, mut data: Vec<u8>) -> Input {
        if !self.raw {
            return Input::Data(data);
        }
        let hit = data
            .iter()
            .position(|&b| Some(b) == self.detach || (self.detach_on_ctrl_c && b == 0x03));
        match hit {
            Some(i) => {
                data.truncate(i);
                Input::Detach(data)
            }
            None => Input::Data(data),
        }
    }

    async fn next_input(&mut self) -> Input {
        match self.stdin.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(d) => self.scan(d),
                None => Input::Eof,
            },
            None => std::future::pending().await,
        }
    }

    /// A new ticket for this terminal.
    async fn ticket(&self) -> Result<String, ClientError> {
        let path = format!("/v1/pty/{}/attach", self.id);
        let t: Value = self
            .client
            .post(&path, &json!({ "mode": self.mode }))
            .await?;
        t["ticket"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Decode {
                path,
                cause: "no ticket in the answer".into(),
            })
    }

    /// One WebSocket connection, from `self.next` until it ends.
    async fn connect_once(&mut self, sig: &mut Signals) -> Result<Ending> {
        let ticket = match self.ticket().await {
            Ok(t) => t,
            Err(e @ ClientError::Api { .. }) if e.status().is_some_and(|s| s.is_client_error()) => {
                if e.code() == Some("approval_required") {
                    bail!(
                        "{e}; an operator must approve attaching to this high-risk terminal (approval {})",
                        match &e {
                            ClientError::Api { body, .. } => s(&body["approval_id"]),
                            _ => "-".into(),
                        }
                    );
                }
                return Err(e.into());
            }
            Err(e) => return Ok(Ending::Lost(e.to_string())),
        };
        let url = self.client.ws_url(
            &format!("/v1/pty/{}/ws", self.id),
            &format!("ticket={ticket}&offset={}", self.next),
        );
        let mut ws = match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                use tokio_tungstenite::tungstenite::Error as W;
                // Never the URL: it holds the ticket.
                let why = match e {
                    W::Http(r) => format!("the host answered {} to the WebSocket", r.status()),
                    W::Io(io) => io.to_string(),
                    other => other.to_string(),
                };
                return Ok(Ending::Lost(why));
            }
        };
        self.connected = true;
        if self.reconnecting {
            self.reconnecting = false;
            note(
                self.raw,
                &format!("reconnected; resuming at offset {}", self.next),
            );
        }
        if self.mode == AttachMode::Drive
            && self.raw
            && let Some((rows, cols)) = window_size()
        {
            let m = json!({ "type": "resize", "rows": rows, "cols": cols }).to_string();
            if ws.send(Message::Text(m.into())).await.is_err() {
                return Ok(Ending::Lost("the connection closed".into()));
            }
        }
        if !self.pending.is_empty() && self.mode == AttachMode::Drive {
            let data = std::mem::take(&mut self.pending);
            if ws.send(Message::Binary(data.into())).await.is_err() {
                return Ok(Ending::Lost("the connection closed".into()));
            }
        }
        loop {
            tokio::select! {
                msg = ws.next() => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            if self.exit.is_some() {
                                return Ok(Ending::Done(Outcome::Ended(self.exit.take())));
                            }
                            return Ok(Ending::Lost(e.to_string()));
                        }
                        None => {
                            if self.exit.is_some() {
                                return Ok(Ending::Done(Outcome::Ended(self.exit.take())));
                            }
                            return Ok(Ending::Lost("the connection closed".into()));
                        }
                    };
                    match msg {
                        Message::Binary(b) => self.output(&b)?,
                        Message::Text(t) => self.control(t.as_str()),
                        Message::Close(f) => {
                            let normal = f.as_ref().is_none_or(|f| f.code == CloseCode::Normal);
                            if self.exit.is_some() || normal {
                                return Ok(Ending::Done(Outcome::Ended(self.exit.take())));
                            }
                            let why = f.map(|f| f.reason.to_string()).unwrap_or_default();
                            return Ok(Ending::Lost(format!("the host closed the connection ({})", safe(&why))));
                        }
                        _ => {}
                    }
                }
                input = self.next_input() => match input {
                    Input::Data(d) => {
                        if self.mode == AttachMode::Drive && !d.is_empty()
                            && ws.send(Message::Binary(d.clone().into())).await.is_err()
                        {
                            self.pending.extend_from_slice(&d);
                            return Ok(Ending::Lost("the connection closed".into()));
                        }
                    }
                    Input::Detach(d) => {
                        if self.mode == AttachMode::Drive && !d.is_empty() {
                            let _ = ws.send(Message::Binary(d.into())).await;
                        }
                        let _ = ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "detach".into() })).await;
                        return Ok(Ending::Done(Outcome::Detached));
                    }
                    Input::Eof => self.stdin = None,
                },
                _ = sig.winch.recv() => {
                    if self.mode == AttachMode::Drive && self.raw
                        && let Some((rows, cols)) = window_size()
                    {
                        let m = json!({ "type": "resize", "rows": rows, "cols": cols }).to_string();
                        if ws.send(Message::Text(m.into())).await.is_err() {
                            return Ok(Ending::Lost("the connection closed".into()));
                        }
                    }
                }
                n = sig.stops.stop() => {
                    let _ = ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "client stopped".into() })).await;
                    return Ok(Ending::Done(Outcome::Signaled(n)));
                }
            }
        }
    }

    /// Prints one output frame, skipping what was already printed.
    fn output(&mut self, b: &[u8]) -> Result<()> {
        if b.len() < 12 {
            return Ok(());
        }
        let mut o = [0u8; 8];
        o.copy_from_slice(&b[..8]);
        let mut l = [0u8; 4];
        l.copy_from_slice(&b[8..12]);
        let (offset, len) = (u64::from_be_bytes(o), u64::from(u32::from_be_bytes(l)));
        if offset + len <= self.next {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&b[12..])?;
        out.flush()?;
        self.next = offset + len;
        Ok(())
    }

    /// A text frame from the host.
    fn control(&mut self, t: &str) {
        let Ok(v) = serde_json::from_str::<Value>(t) else {
            return;
        };
        match v["type"].as_str() {
            Some("exit") => self.exit = Some(v),
            Some("error") => {
                let code = v["code"].as_str().unwrap_or("error");
                let msg = match code {
                    "input_dropped" => format!(
                        "the terminal's program is not reading: {} bytes of input were dropped",
                        v["bytes"]
                    ),
                    "observe_only" => "this attach may only observe".into(),
                    _ => safe(v["message"].as_str().unwrap_or("")),
                };
                note(self.raw, &format!("{code}: {msg}"));
            }
            _ => {}
        }
    }

    /// Waits `d` between reconnects, still honouring the detach key and stopping signals.
    async fn pause(&mut self, d: Duration, sig: &mut Signals) -> Option<Outcome> {
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return None,
                input = self.next_input() => match input {
                    Input::Data(b) => self.pending.extend_from_slice(&b),
                    Input::Detach(_) => return Some(Outcome::Detached),
                    Input::Eof => self.stdin = None,
                },
                _ = sig.winch.recv() => {}
                n = sig.stops.stop() => return Some(Outcome::Signaled(n)),
            }
        }
    }
}

/// How long the client keeps trying to reconnect after losing the host.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

async fn attach(
    client: &Client,
    id: &str,
    observe: bool,
    detach: DetachKey,
    offset: u64,
) -> Result<()> {
    let p: Value = client.get(&format!("/v1/pty/{id}"), &[]).await?;
    let tty = std::io::stdin().is_terminal();
    let mode = if observe {
        AttachMode::Observe
    } else {
        AttachMode::Drive
    };
    let mut sig = Signals::new()?;
    let raw_guard = if tty { Some(RawMode::enable()?) } else { None };
    let mut session = Session {
        client,
        id,
        mode,
        raw: tty,
        detach: detach.0,
        detach_on_ctrl_c: observe,
        next: offset,
        pending: Vec::new(),
        // Observing from a pipe reads nothing; on a terminal stdin is read for the detach key.
        stdin: (tty || !observe).then(stdin_reader),
        exit: None,
        connected: false,
        reconnecting: false,
    };
    if tty {
        let key = match detach.0 {
            Some(28) => " (detach: Ctrl-\\)".to_string(),
            Some(b) => format!(" (detach: Ctrl-{})", char::from(b + b'@')),
            None => String::new(),
        };
        note(
            true,
            &format!(
                "attached to terminal {id} ({}, {mode}){key}",
                s(&p["state"])
            ),
        );
    }
    let result = run_session(&mut session, &mut sig).await;
    drop(raw_guard);
    if tty {
        // The terminal's cursor may sit after a prompt: start the last words on a line of
        // their own.
        eprintln!();
    }
    let outcome = result?;
    match outcome {
        Outcome::Detached => {
            eprintln!(
                "happyx: detached from terminal {id}; it keeps running (attach again: happyx pty attach {id})"
            );
            Ok(())
        }
        Outcome::Signaled(n) => Err(Exit(128 + n as u8).into()),
        Outcome::Ended(exit) => {
            let p: Value = client
                .get(&format!("/v1/pty/{id}"), &[])
                .await
                .unwrap_or(Value::Null);
            let exit = exit.unwrap_or(Value::Null);
            let state = exit["state"]
                .as_str()
                .or(p["state"].as_str())
                .unwrap_or("ended")
                .to_string();
            let code = exit["exit_code"].as_i64().or(p["exit_code"].as_i64());
            let signal = exit["signal"].as_i64().or(p["exit_signal"].as_i64());
            let how = match (code, signal) {
                (_, Some(sig)) => format!("killed by signal {sig}"),
                (Some(c), None) => format!("exit code {c}"),
                (None, None) => "no exit status".into(),
            };
            eprintln!("happyx: terminal {id} {} ({how})", safe(&state));
            let status = match (code, signal) {
                (_, Some(sig)) => 128u8.saturating_add(sig.clamp(0, 127) as u8),
                (Some(c), None) => c.clamp(0, 255) as u8,
                (None, None) => 1,
            };
            if status == 0 {
                Ok(())
            } else {
                Err(Exit(status).into())
            }
        }
    }
}

async fn run_session(session: &mut Session<'_>, sig: &mut Signals) -> Result<Outcome> {
    let mut lost_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        session.connected = false;
        let ending = session.connect_once(sig).await?;
        if session.connected {
            lost_since = None;
            backoff = Duration::from_millis(200);
        }
        match ending {
            Ending::Done(o) => return Ok(o),
            Ending::Lost(why) => {
                session.reconnecting = true;
                let since = *lost_since.get_or_insert_with(|| {
                    note(
                        session.raw,
                        &format!(
                            "connection lost ({}); reconnecting from offset {}",
                            safe(&why),
                            session.next
                        ),
                    );
                    Instant::now()
                });
                if since.elapsed() > RECONNECT_FOR {
                    bail!(
                        "lost the connection to terminal {} and could not reconnect for {} s: {}",
                        session.id,
                        RECONNECT_FOR.as_secs(),
                        safe(&why)
                    );
                }
                if let Some(o) = session.pause(backoff, sig).await {
                    return Ok(o);
                }
                backoff = (backoff * 2).min(Duration::from_secs(3));
                continue;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys() {
        assert_eq!(parse_detach_key("ctrl-\\"), Ok(DetachKey(Some(0x1c))));
        assert_eq!(parse_detach_key("ctrl-]"), Ok(DetachKey(Some(0x1d))));
        assert_eq!(parse_detach_key("Ctrl-A"), Ok(DetachKey(Some(1))));
        assert_eq!(parse_detach_key("^q"), Ok(DetachKey(Some(17))));
        assert_eq!(parse_detach_key("none"), Ok(DetachKey(None)));
        assert!(parse_detach_key("ctrl-1").is_err());
        assert!(parse_detach_key("x").is_err());
    }
}
