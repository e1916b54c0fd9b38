//! `happyx pty-holder`: the small detached process that owns one PTY master
//! and its child, and outlives host restarts.
//!
//! The host execs it (`current_exe() pty-holder`) after `setsid`, with stdin a
//! pipe carrying the [`HolderSpec`] (the secret travels only there), stdout a
//! pipe for one readiness line, stderr on /dev/null. The holder first closes
//! every inherited descriptor above 2, reads the spec, puts /dev/null on stdin
//! and (after the readiness line) stdout, opens the PTY, starts the child as the
//! spec's user in its workspace with its environment, and serves the protocol of
//! [`super::protocol`] on a 0600 Unix socket to peers of its own uid.
//!
//! Output waits in a bounded ring until the host acknowledges it as persisted;
//! when the ring is full the holder stops reading the PTY, so the child blocks
//! on write and no byte is dropped. A terminal gives at most 4 KiB per read, so output
//! is sent in frames of at least [`COALESCE_BYTES`], or whatever is there once the first
//! unsent byte has waited [`COALESCE_WAIT`]: a stream costs the holder and the host one
//! frame per 32 KiB instead of one per read, and a keystroke's echo waits at most 2 ms. When the child has exited, the PTY is
//! drained and the host has acknowledged every byte after the `exited` frame,
//! the holder removes its socket and exits.
//!
//! A holder that can no longer be reached ends its program: hosts find it only through its
//! socket (`DATA/pty/<id>.sock`), so once that path is gone or names another file (the data
//! dir was deleted or moved) no host can ever adopt it again. Checked every
//! [`REACHABLE_CHECK`]; the program's groups get SIGHUP, then SIGKILL after [`KILL_GRACE`],
//! and the holder exits. Without this, such a holder and its program ran forever.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use happyx_core::vocab::PtyState;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::protocol::{
    ExitInfo, Frame, HelloOk, MAX_OUTPUT, SignalKind, VERSION, proof, read_frame, write_frame,
};

/// Largest spec accepted on stdin.
const MAX_SPEC: u64 = 1024 * 1024;
/// Grace between SIGHUP and SIGKILL on a kill request.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How often a holder checks that its socket path still names its socket.
pub const REACHABLE_CHECK: Duration = Duration::from_secs(2);
/// How long a child's exit waits for the PTY to drain before the group is killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// Unsent output that makes a frame at once.
const COALESCE_BYTES: u64 = (MAX_OUTPUT / 2) as u64;
/// Longest a byte of output waits for more to join its frame.
const COALESCE_WAIT: Duration = Duration::from_millis(2);
/// Input messages (each at most 64 KiB) queued for a program that is not reading; past this,
/// input is dropped and reported to the host (`input dropped` frame).
const INPUT_QUEUE: usize = 256;

/// What the host hands a new holder on stdin (one JSON document).
#[derive(Clone, Serialize, Deserialize)]
pub struct HolderSpec {
    pub version: u32,
    pub pty_id: String,
    pub boot_id: String,
    /// Hex of the 32-byte holder secret.
    pub secret: String,
    pub socket_path: String,
    pub program: String,
    pub args: Vec<String>,
    pub cwd: String,
    /// `(uid, gid)` to run the child as; `None` keeps the holder's.
    pub ids: Option<(u32, u32)>,
    /// The Landlock confinement of the child (a host that is not root); the holder builds
    /// the ruleset itself and the child enters it before exec.
    #[serde(default)]
    pub confinement: Option<crate::sandbox::Confinement>,
    pub env: Vec<(String, String)>,
    pub rows: u16,
    pub cols: u16,
    pub ring_bytes: usize,
}

crate::util::debug_fields!(HolderSpec {
    pty_id,
    socket_path,
    rows,
    cols
});

struct State {
    ring: VecDeque<u8>,
    /// Raw offset of `ring[0]`: everything below it is acknowledged.
    ring_start: u64,
    cap: usize,
    eof: bool,
    exit: Option<(Option<i64>, Option<i64>)>,
    /// Generation of the current host connection.
    conn: u64,
    /// Next offset to send on the current connection.
    sent: u64,
    exited_sent: Option<u64>,
    /// Input bytes discarded (the program was not reading) not yet reported to the host.
    input_dropped: u64,
}

impl State {
    fn end(&self) -> u64 {
        self.ring_start + self.ring.len() as u64
    }
    fn finished(&self) -> bool {
        self.exit.is_some() && self.eof
    }
}

struct Shared {
    st: Mutex<State>,
    cv: Condvar,
    spec: HolderSpec,
    secret: Vec<u8>,
    master: OwnedFd,
    pid: i32,
    input: SyncSender<Vec<u8>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.st.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// Entry point of `happyx pty-holder`; runs before any async runtime exists.
pub fn main() -> ExitCode {
    close_inherited_fds();
    // fd 1 is the readiness pipe; keep a duplicate so /dev/null can replace it.
    let mut ready: Option<File> = nix::unistd::dup(std::io::stdout()).ok().map(File::from);
    if let Some(r) = &ready {
        set_cloexec(r.as_raw_fd());
    }
    to_dev_null(1);
    let line = match start() {
        Ok(shared) => {
            if let Some(r) = ready.as_mut() {
                let _ = writeln!(r, "ok {}", shared.pid);
            }
            drop(ready);
            return serve(shared);
        }
        Err(code) => format!("err {code}"),
    };
    if let Some(r) = ready.as_mut() {
        let _ = writeln!(r, "{line}");
    }
    ExitCode::FAILURE
}

/// Closes every descriptor above 2 the holder may have inherited.
fn close_inherited_fds() {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => d
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd > 2)
            .collect(),
        Err(_) => (3..1024).collect(),
    };
    for fd in fds {
        // SAFETY: nothing in this process owns these descriptors yet.
        unsafe {
            libc::close(fd);
        }
    }
}

fn to_dev_null(fd: RawFd) {
    if let Ok(f) = File::options().read(true).write(true).open("/dev/null") {
        // SAFETY: dup2 onto a standard descriptor we own.
        unsafe {
            libc::dup2(f.as_raw_fd(), fd);
        }
    }
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

fn start() -> Result<Arc<Shared>, &'static str> {
    let mut raw = Vec::new();
    std::io::stdin()
        .take(MAX_SPEC)
        .read_to_end(&mut raw)
        .map_err(|_| "spec_unreadable")?;
    to_dev_null(0);
    let spec: HolderSpec = serde_json::from_slice(&raw).map_err(|_| "spec_invalid")?;
    raw.fill(0);
    if spec.version != VERSION {
        return Err("version_mismatch");
    }
    let secret = hex::decode(&spec.secret).map_err(|_| "spec_invalid")?;
    // SAFETY: umask and setsid have no memory-safety preconditions.
    unsafe {
        libc::umask(0o077);
        libc::setsid();
    }
    let ws = nix::pty::Winsize {
        ws_row: spec.rows,
        ws_col: spec.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).map_err(|_| "openpty_failed")?;
    set_cloexec(pty.master.as_raw_fd());
    set_cloexec(pty.slave.as_raw_fd());
    if let Some((uid, gid)) = spec.ids {
        // The child must be able to reopen its own terminal (/dev/fd/N, /dev/tty); nobody
        // else may open it: owner only, not the `tty` group (another identity's children
        // must not write into this terminal or read what is typed into it).
        let _ = nix::unistd::fchown(&pty.slave, Some(uid.into()), Some(gid.into()));
        let _ = nix::sys::stat::fchmod(&pty.slave, nix::sys::stat::Mode::from_bits_truncate(0o600));
    }
    let slave = File::from(pty.slave);
    let stdio = |f: &File| f.try_clone().map(Stdio::from).map_err(|_| "dup_failed");
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(stdio(&slave)?)
        .stdout(stdio(&slave)?)
        .stderr(stdio(&slave)?);
    if let Some((uid, gid)) = spec.ids {
        cmd.uid(uid).gid(gid);
    }
    let ruleset = match &spec.confinement {
        Some(c) => c.ruleset().map_err(|_| "sandbox_unavailable")?,
        None => None,
    };
    let landlock = crate::sandbox::raw(&ruleset);
    // SAFETY: only async-signal-safe calls (setsid, ioctl, prctl, landlock_restrict_self)
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = landlock {
                crate::sandbox::enter(fd)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|_| "spawn_failed")?;
    drop(cmd);
    drop(ruleset);
    drop(slave);
    let pid = child.id() as i32;

    let _ = std::fs::remove_file(&spec.socket_path);
    let listener = UnixListener::bind(&spec.socket_path).map_err(|_| "socket_bind_failed")?;
    let _ = std::fs::set_permissions(&spec.socket_path, std::fs::Permissions::from_mode(0o600));
    let bound = socket_identity(&spec.socket_path).ok_or("socket_bind_failed")?;

    let (input_tx, input_rx) = sync_channel::<Vec<u8>>(INPUT_QUEUE);
    let shared = Arc::new(Shared {
        st: Mutex::new(State {
            ring: VecDeque::with_capacity(spec.ring_bytes.min(1 << 20)),
            ring_start: 0,
            cap: spec.ring_bytes.max(MAX_OUTPUT),
            eof: false,
            exit: None,
            conn: 0,
            sent: 0,
            exited_sent: None,
            input_dropped: 0,
        }),
        cv: Condvar::new(),
        secret,
        master: pty.master,
        pid,
        input: input_tx,
        spec,
    });

    let s = shared.clone();
    let reader = File::from(s.master.try_clone().map_err(|_| "dup_failed")?);
    std::thread::spawn(move || pty_reader(s, reader));
    let mut writer = File::from(shared.master.try_clone().map_err(|_| "dup_failed")?);
    std::thread::spawn(move || {
        while let Ok(bytes) = input_rx.recv() {
            if writer.write_all(&bytes).is_err() {
                break;
            }
        }
    });
    let s = shared.clone();
    std::thread::spawn(move || {
        let status = child.wait();
        let exit = match status {
            Ok(st) => (st.code().map(i64::from), st.signal().map(i64::from)),
            Err(_) => (None, None),
        };
        s.lock().exit = Some(exit);
        s.cv.notify_all();
        after_exit(&s);
    });
    let _ = SHARED.set(shared.clone());
    std::thread::spawn(move || accept_loop(listener));
    let s = shared.clone();
    std::thread::spawn(move || watch_reachable(s, bound));
    Ok(shared)
}

/// Once the child is gone: give the PTY time to drain, then kill stragglers of
/// its group, then stop waiting for end of file.
fn after_exit(s: &Arc<Shared>) {
    let wait_eof = |limit: Duration| {
        let deadline = Instant::now() + limit;
        let mut st = s.lock();
        while !st.eof && Instant::now() < deadline {
            st = match s.cv.wait_timeout(st, Duration::from_millis(50)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        st.eof
    };
    if wait_eof(DRAIN_AFTER_EXIT) {
        return;
    }
    signal_group(s.pid, libc::SIGKILL);
    if let Some(fg) = foreground(s) {
        signal_group(fg, libc::SIGKILL);
    }
    if !wait_eof(Duration::from_secs(3)) {
        s.lock().eof = true;
        s.cv.notify_all();
    }
}

fn pty_reader(s: Arc<Shared>, mut master: File) {
    let mut buf = vec![0u8; MAX_OUTPUT];
    loop {
        let room = {
            let mut st = s.lock();
            while st.ring.len() >= st.cap && !st.eof {
                st = match s.cv.wait(st) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
            if st.eof {
                return;
            }
            (st.cap - st.ring.len()).min(MAX_OUTPUT)
        };
        let n = master.read(&mut buf[..room]);
        let mut st = s.lock();
        let wake = match n {
            Ok(n) if n > 0 && !st.eof => {
                let unsent = st.end().saturating_sub(st.sent);
                st.ring.extend(&buf[..n]);
                // The writer waits for the first unsent byte (it starts the frame's clock) and
                // for a full frame; the bytes in between need no wake-up.
                unsent == 0 || (unsent < COALESCE_BYTES && unsent + n as u64 >= COALESCE_BYTES)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => {
                st.eof = true;
                true
            }
        };
        drop(st);
        if wake {
            s.cv.notify_all();
        }
    }
}

/// (device, inode) of the file at `path`, not following a symlink.
fn socket_identity(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Ends the program and the holder once the socket path no longer names the socket this
/// holder listens on (see the module docs).
fn watch_reachable(s: Arc<Shared>, bound: (u64, u64)) {
    loop {
        std::thread::sleep(REACHABLE_CHECK);
        if socket_identity(&s.spec.socket_path) == Some(bound) {
            continue;
        }
        signal(&s, SignalKind::Kill);
        // Give the kill its grace, and the child's exit its drain, then leave.
        let deadline = Instant::now() + KILL_GRACE + DRAIN_AFTER_EXIT + Duration::from_secs(1);
        while Instant::now() < deadline && s.lock().exit.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::process::exit(0);
    }
}

fn accept_loop(listener: UnixListener) {
    // The shared state is reached through the global set in `serve`.
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Some(s) = SHARED.get() {
            let s = s.clone();
            std::thread::spawn(move || connection(s, stream));
        }
    }
}

static SHARED: std::sync::OnceLock<Arc<Shared>> = std::sync::OnceLock::new();

/// Waits until the session is finished and fully acknowledged, then cleans up.
fn serve(shared: Arc<Shared>) -> ExitCode {
    let mut st = shared.lock();
    loop {
        let done = st.finished()
            && st.ring.is_empty()
            && RELEASED.load(std::sync::atomic::Ordering::SeqCst);
        if done {
            break;
        }
        st = match shared.cv.wait(st) {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
    }
    drop(st);
    let _ = std::fs::remove_file(&shared.spec.socket_path);
    ExitCode::SUCCESS
}

/// Set when the host released the holder after an `exited` frame and every acknowledgement.
static RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn connection(s: Arc<Shared>, stream: UnixStream) {
    let own = nix::unistd::getuid().as_raw();
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials);
    if !matches!(peer, Ok(c) if c.uid() == own) {
        return;
    }
    let mut rd = stream;
    let _ = rd.set_read_timeout(Some(Duration::from_secs(5)));
    let refuse = |mut w: &UnixStream, code: &str| {
        let _ = write_frame(&mut w, &Frame::Refused(code.into()));
    };
    let hello = match read_frame(&mut rd) {
        Ok(Frame::Hello(h)) => h,
        _ => return refuse(&rd, "hello_expected"),
    };
    if hello.version != VERSION {
        return refuse(&rd, "version_mismatch");
    }
    let presented = hex::decode(&hello.secret).unwrap_or_default();
    let secret_ok: bool = presented.ct_eq(&s.secret).into();
    if !secret_ok || hello.session != s.spec.pty_id {
        return refuse(&rd, "unauthorized");
    }
    if hello.boot_id != s.spec.boot_id {
        return refuse(&rd, "boot_mismatch");
    }
    let _ = rd.set_read_timeout(None);
    let (generation, ok) = {
        let mut st = s.lock();
        st.conn += 1;
        st.sent = st.ring_start;
        let (state, code, sig) = match st.exit {
            Some((c, g)) if st.eof => (PtyState::Exited.as_str(), c, g),
            _ => (PtyState::Running.as_str(), None, None),
        };
        let ok = HelloOk {
            version: VERSION,
            pid: i64::from(s.pid),
            state: state.into(),
            exit_code: code,
            signal: sig,
            ring_start: st.ring_start,
            ring_end: st.end(),
            proof: proof(&s.secret, &hello.nonce),
        };
        (st.conn, ok)
    };
    s.cv.notify_all();
    let Ok(mut wr) = rd.try_clone() else { return };
    if write_frame(&mut wr, &Frame::Ok(ok)).is_err() {
        return;
    }
    let s2 = s.clone();
    std::thread::spawn(move || conn_writer(s2, wr, generation));
    conn_reader(&s, rd, generation);
    let mut st = s.lock();
    if st.conn == generation {
        st.conn += 1;
    }
    drop(st);
    s.cv.notify_all();
}

fn conn_writer(s: Arc<Shared>, mut w: UnixStream, generation: u64) {
    loop {
        let frame = {
            let mut st = s.lock();
            // When the oldest unsent byte was first seen: it leaves by COALESCE_WAIT after.
            let mut since: Option<Instant> = None;
            loop {
                if st.conn != generation {
                    return;
                }
                if st.sent < st.ring_start {
                    st.sent = st.ring_start;
                }
                let unsent = st.end() - st.sent;
                let due = since.get_or_insert_with(Instant::now).elapsed() >= COALESCE_WAIT;
                if unsent >= COALESCE_BYTES
                    // Nothing more comes: the PTY is drained or the ring is full.
                    || (unsent > 0 && (due || st.eof || st.ring.len() >= st.cap))
                    || st.input_dropped > 0
                    || (st.finished() && st.exited_sent != Some(generation))
                {
                    break;
                }
                if unsent == 0 {
                    since = None;
                    st = match s.cv.wait(st) {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                } else {
                    let left =
                        COALESCE_WAIT.saturating_sub(since.map_or(Duration::ZERO, |t| t.elapsed()));
                    st = match s.cv.wait_timeout(st, left) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
            }
            if st.input_dropped > 0 {
                Frame::InputDropped(std::mem::take(&mut st.input_dropped))
            } else if st.sent < st.end() {
                let from = (st.sent - st.ring_start) as usize;
                let n = (st.ring.len() - from).min(MAX_OUTPUT);
                let data: Vec<u8> = st.ring.range(from..from + n).copied().collect();
                let offset = st.sent;
                st.sent += n as u64;
                Frame::Output { offset, data }
            } else {
                st.exited_sent = Some(generation);
                let (exit_code, signal) = st.exit.unwrap_or((None, None));
                Frame::Exited(ExitInfo {
                    exit_code,
                    signal,
                    end_offset: st.end(),
                })
            }
        };
        if write_frame(&mut w, &frame).is_err() {
            let mut st = s.lock();
            if st.conn == generation {
                st.conn += 1;
            }
            drop(st);
            s.cv.notify_all();
            return;
        }
    }
}

fn conn_reader(s: &Arc<Shared>, mut r: UnixStream, generation: u64) {
    loop {
        let frame = match read_frame(&mut r) {
            Ok(f) => f,
            Err(_) => return,
        };
        if s.lock().conn != generation {
            return;
        }
        match frame {
            Frame::Ack(o) => {
                let mut st = s.lock();
                if o > st.ring_start && o <= st.end() {
                    let n = (o - st.ring_start) as usize;
                    st.ring.drain(..n);
                    st.ring_start = o;
                }
                drop(st);
                s.cv.notify_all();
            }
            Frame::Release => {
                let st = s.lock();
                if st.exited_sent == Some(generation) && st.finished() && st.ring.is_empty() {
                    RELEASED.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                drop(st);
                s.cv.notify_all();
            }
            Frame::Input(bytes) => match s.input.try_send(bytes) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                // The program is not reading its input: drop it (control frames such as a
                // kill must still get through) and tell the host, which tells the driver.
                Err(TrySendError::Full(bytes)) => {
                    let mut st = s.lock();
                    st.input_dropped = st.input_dropped.saturating_add(bytes.len() as u64);
                    drop(st);
                    s.cv.notify_all();
                }
            },
            Frame::Resize { rows, cols } => {
                let ws = libc::winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
                unsafe {
                    libc::ioctl(s.master.as_raw_fd(), libc::TIOCSWINSZ as _, &ws);
                }
            }
            Frame::Signal(kind) => signal(s, kind),
            _ => return,
        }
    }
}

fn foreground(s: &Shared) -> Option<i32> {
    // SAFETY: tcgetpgrp on the master we own.
    let pg = unsafe { libc::tcgetpgrp(s.master.as_raw_fd()) };
    (pg > 0).then_some(pg)
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

fn signal(s: &Arc<Shared>, kind: SignalKind) {
    let fg = foreground(s);
    match kind {
        SignalKind::Interrupt => signal_group(fg.unwrap_or(s.pid), libc::SIGINT),
        SignalKind::Hangup => {
            signal_group(s.pid, libc::SIGHUP);
            if let Some(fg) = fg {
                signal_group(fg, libc::SIGHUP);
            }
        }
        SignalKind::Kill => {
            signal(s, SignalKind::Hangup);
            let s = s.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + KILL_GRACE;
                while Instant::now() < deadline {
                    if s.lock().exit.is_some() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                if let Some(fg) = foreground(&s) {
                    signal_group(fg, libc::SIGKILL);
                }
                signal_group(s.pid, libc::SIGKILL);
            });
        }
    }
}
