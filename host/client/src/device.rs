//! The device side of encrypted sessions (`happyx device …`): enrollment with a proof of
//! possession, opening and rotating sessions, sending and reading envelopes.
//!
//! Nothing the host returns is trusted on its word: every peer key is checked against the
//! fingerprint pinned for the session (given at `open-session`, or pinned on first use with a
//! warning), every envelope's signature, sender sequence order and epoch are checked, and every
//! wrapped key must open under the pinned wrapper's key. Results go to the `out` writer
//! (stdout); warnings to `warn` (stderr).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use crate::keystore::{DeviceDir, KeystoreError};
use crate::protocol::{
    ChallengeRequest, ChallengeResponse, CompleteEnrollment, Enrolled, EnvelopeAccepted,
    EnvelopeBatchResult, EnvelopePage, OpenSession, PeerKeys, RotateSession, SessionEpoch,
    SessionKeys, envelope_batch_body,
};
use happyx_core::util::{new_id, now_ms};
use happyx_envelope::limits::MAX_BATCH_ENVELOPES;
use happyx_envelope::request::sign_request;
use happyx_envelope::{
    ContentKey, CryptoError, ENVELOPE_VERSION, Envelope, EnvelopeError, EnvelopeHeader,
    Fingerprint, WrapContext, WrappedKey, enrollment_code_hash, open, seal, unwrap_content_key,
    wrap_content_key,
};
use zeroize::Zeroizing;

/// Why a device command failed. Messages name files, devices and codes, never key material.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    #[error("the host refused: {code}: {message} (HTTP {status})")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the host: {0}")]
    Transport(String),
    #[error("this device is not enrolled; run `happyx device enroll` first")]
    NotEnrolled,
    #[error("{0}")]
    Usage(String),
    #[error("the host's answer is not acceptable: {0}")]
    Untrusted(String),
}

impl ClientError {
    /// A stable code for scripts and logs.
    pub fn code(&self) -> &str {
        match self {
            Self::Keystore(e) => e.code(),
            Self::Crypto(e) => e.code(),
            Self::Envelope(e) => e.code(),
            Self::Refused { code, .. } => code,
            Self::Transport(_) => "transport_error",
            Self::NotEnrolled => "not_enrolled",
            Self::Usage(_) => "usage",
            Self::Untrusted(_) => "untrusted_host",
        }
    }
}

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A small blocking HTTP client for one host.
///
/// It drives reqwest's async client on a current-thread runtime of its own rather than using
/// `reqwest::blocking`: that client waits for its helper thread with `thread::park`, whose
/// single wake-up token anything else on the thread may consume first (its own `log::trace!`
/// between the poll and the park waits on a lazily initialised static that parks too), which
/// left about one command in ten thousand waiting forever at `HAPPYX_LOG=trace`. The
/// runtime's own parker cannot be taken that way, and no helper thread is needed.
struct Host {
    base: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

/// How long one request may take, connection and body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Host {
    fn new(url: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Transport(format!("cannot start the I/O runtime: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            http,
            rt,
        })
    }

    fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        signer: Option<&DeviceDir>,
    ) -> Result<T> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        let body = body.unwrap_or_default();
        if let Some(dir) = signer {
            let id = dir.device_id().ok_or(ClientError::NotEnrolled)?;
            let ts = now_ms().unsigned_abs();
            for (k, v) in sign_request(dir.keys(), id, ts, method.as_str(), path, &body) {
                req = req.header(k, v);
            }
        }
        if !body.is_empty() {
            req = req.header("content-type", "application/json").body(body);
        }
        let transport = |e: reqwest::Error| ClientError::Transport(e.without_url().to_string());
        let (status, bytes) = self.rt.block_on(async {
            let resp = req.send().await.map_err(transport)?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(transport)?;
            Ok::<_, ClientError>((status, bytes))
        })?;
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(ClientError::Refused {
                status: status.as_u16(),
                code: v["code"].as_str().unwrap_or("http_error").to_owned(),
                message: v["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Untrusted(format!("malformed response body: {e}")))
    }
}

fn json_body<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ClientError::Usage(e.to_string()))
}

fn device_id(dir: &DeviceDir) -> Result<String> {
    dir.device_id()
        .map(str::to_owned)
        .ok_or(ClientError::NotEnrolled)
}

/// `keygen`: creates DIR (0700) and the device's keys (0600); returns the fingerprint.
pub fn keygen(dir: &Path, key_version: u64) -> Result<Fingerprint> {
    Ok(DeviceDir::keygen(dir, key_version)?.fingerprint())
}

/// `enroll`: proves possession of the keys for the code; records and returns the device id.
pub fn enroll(dir: &Path, url: &str, code: &str, name: Option<&str>) -> Result<String> {
    let mut dir = DeviceDir::open(dir)?;
    let host = Host::new(url)?;
    let challenge: ChallengeResponse = host.send(
        reqwest::Method::POST,
        "/v1/enrollments/challenge",
        Some(json_body(&ChallengeRequest {
            code: code.to_owned(),
        })?),
        None,
    )?;
    let challenge_public = happyx_envelope::b64_decode_32(&challenge.challenge_public)
        .ok_or_else(|| ClientError::Untrusted("challenge key is not 32 bytes".into()))?;
    let proof = dir
        .keys()
        .prove_enrollment(&enrollment_code_hash(code), &challenge_public)?;
    let enrolled: Enrolled = host.send(
        reqwest::Method::POST,
        "/v1/enrollments/complete",
        Some(json_body(&CompleteEnrollment {
            code: code.to_owned(),
            name: name.map(str::to_owned),
            keys: dir.public_keys(),
            proof,
        })?),
        None,
    )?;
    if enrolled.fingerprint != dir.fingerprint().to_string() {
        return Err(ClientError::Untrusted(
            "the host recorded another fingerprint than this device's".into(),
        ));
    }
    dir.set_device_id(&enrolled.device_id)?;
    Ok(enrolled.device_id)
}

/// Checks a peer's keys against the session's pins; pins on first use (with a warning).
fn trust_peer(
    dir: &DeviceDir,
    session_id: &str,
    peer: &PeerKeys,
    warn: &mut dyn Write,
) -> Result<()> {
    peer.keys.validate()?;
    if Some(peer.device_id.as_str()) == dir.device_id() {
        if peer.keys != dir.public_keys() {
            return Err(ClientError::Untrusted(format!(
                "the host presents other keys (fingerprint {}) for this device",
                peer.keys.fingerprint()
            )));
        }
        return Ok(());
    }
    match dir.check_peer(session_id, &peer.device_id, &peer.keys) {
        Ok(()) => Ok(()),
        Err(KeystoreError::PeerNotPinned { .. }) => {
            let fp = peer.keys.fingerprint();
            let _ = writeln!(
                warn,
                "warning: device {} was not pinned for session {session_id}; pinning the fingerprint \
                 the host returned ({fp}); verify it out of band",
                peer.device_id
            );
            dir.pin_peers(session_id, &[(peer.device_id.clone(), fp)])?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Unwraps every content key wrapped to this device that it does not hold yet.
fn take_keys(
    dir: &DeviceDir,
    session_id: &str,
    wrapped: &[WrappedKey],
    wrappers: &[PeerKeys],
    warn: &mut dyn Write,
) -> Result<()> {
    let me = device_id(dir)?;
    for wk in wrapped {
        if dir.content_key(session_id, wk.epoch)?.is_some() {
            continue;
        }
        let sender = PeerKeys::find(wrappers, &wk.sender_device_id, wk.sender_key_version)
            .ok_or_else(|| {
                ClientError::Untrusted(format!(
                    "no keys given for the device that wrapped epoch {}",
                    wk.epoch
                ))
            })?;
        trust_peer(dir, session_id, sender, warn)?;
        let key = unwrap_content_key(wk, session_id, &me, dir.keys(), &sender.keys)?;
        dir.store_content_key(session_id, wk.epoch, &key)?;
    }
    Ok(())
}

/// Parses `DEVICE_ID[=FINGERPRINT]`.
pub fn parse_with(arg: &str) -> Result<(String, Option<Fingerprint>)> {
    match arg.split_once('=') {
        None => Ok((arg.to_owned(), None)),
        Some((id, fp)) => {
            let fp: Fingerprint = fp
                .parse()
                .map_err(|_| ClientError::Usage(format!("`{fp}` is not a fingerprint")))?;
            Ok((id.to_owned(), Some(fp)))
        }
    }
}

/// `open-session`: a new session whose epoch-0 key is wrapped to this device and `with`;
/// returns its id. Peers without a given fingerprint are pinned as the host presents them,
/// with a warning.
pub fn open_session(
    dir: &Path,
    url: &str,
    with: &[(String, Option<Fingerprint>)],
    warn: &mut dyn Write,
) -> Result<String> {
    let dir = DeviceDir::open(dir)?;
    let me = device_id(&dir)?;
    let host = Host::new(url)?;
    let session_id = new_id();
    let mut peers = Vec::new();
    for (id, expected) in with {
        if *id == me {
            continue;
        }
        let peer: PeerKeys = host.send(
            reqwest::Method::GET,
            &format!("/v1/devices/{id}/keys"),
            None,
            Some(&dir),
        )?;
        peer.keys.validate()?;
        let actual = peer.keys.fingerprint();
        if peer.device_id != *id {
            return Err(ClientError::Untrusted(format!(
                "asked for device {id}, got another"
            )));
        }
        match expected {
            Some(fp) if *fp != actual => {
                return Err(ClientError::Untrusted(format!(
                    "device {id} has fingerprint {actual} at the host, but {fp} was given"
                )));
            }
            Some(_) => {}
            None => {
                let _ = writeln!(
                    warn,
                    "warning: no fingerprint given for device {id}; pinning the one the host \
                     returned ({actual}); verify it out of band"
                );
            }
        }
        peers.push(peer);
    }
    let mut pins = vec![(me.clone(), dir.fingerprint())];
    pins.extend(
        peers
            .iter()
            .map(|p| (p.device_id.clone(), p.keys.fingerprint())),
    );
    dir.pin_peers(&session_id, &pins)?;
    let key = ContentKey::generate()?;
    let wrapped = wrap_all(&dir, &me, &session_id, 0, &key, &peers)?;
    dir.store_content_key(&session_id, 0, &key)?;
    let opened: SessionEpoch = host.send(
        reqwest::Method::POST,
        "/v1/encrypted-sessions",
        Some(json_body(&OpenSession {
            id: session_id.clone(),
            name: None,
            wrapped_keys: wrapped,
        })?),
        Some(&dir),
    )?;
    if opened.id != session_id || opened.epoch != 0 {
        return Err(ClientError::Untrusted(
            "unexpected session in the answer".into(),
        ));
    }
    Ok(session_id)
}

fn wrap_all(
    dir: &DeviceDir,
    me: &str,
    session_id: &str,
    epoch: u64,
    key: &ContentKey,
    peers: &[PeerKeys],
) -> Result<Vec<WrappedKey>> {
    let mut out = Vec::with_capacity(peers.len() + 1);
    let own = PeerKeys {
        device_id: me.to_owned(),
        keys: dir.public_keys(),
    };
    for p in std::iter::once(&own).chain(peers.iter().filter(|p| p.device_id != me)) {
        let ctx = WrapContext {
            session_id: session_id.to_owned(),
            epoch,
            sender_device_id: me.to_owned(),
            recipient_device_id: p.device_id.clone(),
        };
        out.push(wrap_content_key(key, &ctx, dir.keys(), &p.keys)?);
    }
    Ok(out)
}

/// The highest epoch this device holds a content key for.
fn newest_local_epoch(dir: &DeviceDir, session_id: &str) -> Result<Option<u64>> {
    let mut newest = None;
    let mut epoch = 0u64;
    while dir.content_key(session_id, epoch)?.is_some() {
        newest = Some(epoch);
        epoch += 1;
    }
    Ok(newest)
}

/// How `send` delivers its envelopes.
#[derive(Debug, Clone, Copy)]
pub struct SendMode {
    /// Print without posting (the sequence counter still advances).
    pub dry_run: bool,
    /// Envelopes per request: 1 posts each to `/envelopes`; more gathers up to this many lines
    /// and posts them to `/envelopes/batch`.
    pub batch: usize,
    /// Print nothing on success (the envelopes are still posted).
    pub quiet: bool,
}

/// `send`: each line of `input` becomes one envelope, printed in wire form on `out` and (unless
/// `dry_run`) posted, alone or `batch` at a time. Each sequence is persisted before the envelope
/// exists. A refused envelope stops the command with its code (envelopes printed before it
/// were posted).
pub fn send(
    dir: &Path,
    url: &str,
    session_id: &str,
    mode: SendMode,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> Result<u64> {
    let dir = DeviceDir::open(dir)?;
    let me = device_id(&dir)?;
    let host = Host::new(url)?;
    let mut epoch = if mode.dry_run {
        newest_local_epoch(&dir, session_id)?
            .ok_or_else(|| ClientError::Usage(format!("no content key for session {session_id}")))?
    } else {
        let keys = fetch_keys(&host, &dir, session_id, warn)?;
        if keys.rotation_required_since.is_some() {
            // A member was revoked: nothing new goes out under a key it holds.
            rotate_away_from(&host, &dir, &me, session_id, keys.epoch, warn)?
        } else {
            keys.epoch
        }
    };
    let mut key = epoch_key(&dir, session_id, epoch)?;
    let batch = mode.batch.clamp(1, MAX_BATCH_ENVELOPES);
    let mut sent = 0u64;
    let mut pending: Vec<String> = Vec::with_capacity(batch);
    // The plaintexts of `pending`, to seal again under a new epoch if the host asks for one.
    let mut lines: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(batch);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| ClientError::Usage(format!("cannot read stdin: {e}")))?;
        if n > 0 {
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            pending.push(seal_line(&dir, &me, session_id, epoch, &key, &line)?);
            lines.push(Zeroizing::new(std::mem::take(&mut line)));
        }
        if pending.len() >= batch || (n == 0 && !pending.is_empty()) {
            if !mode.quiet {
                print_wires(out, &pending)?;
            }
            if !mode.dry_run {
                let refused = post_envelopes(&host, session_id, &pending)?;
                if !refused.is_empty() {
                    // The epoch was rotated away (or must be): move to the new one and send
                    // the refused lines again, once, as new envelopes (printed as well).
                    epoch = rotate_away_from(&host, &dir, &me, session_id, epoch, warn)?;
                    key = epoch_key(&dir, session_id, epoch)?;
                    let again = refused
                        .iter()
                        .map(|&i| seal_line(&dir, &me, session_id, epoch, &key, &lines[i]))
                        .collect::<Result<Vec<_>>>()?;
                    if !mode.quiet {
                        print_wires(out, &again)?;
                    }
                    let still = post_envelopes(&host, session_id, &again)?;
                    if let Some(&i) = still.first() {
                        return Err(still_refused(&again[i], session_id));
                    }
                }
            }
            sent += pending.len() as u64;
            pending.clear();
            lines.clear();
        }
        if n == 0 {
            return Ok(sent);
        }
    }
}

/// Refusal codes after which `send` moves to the session's new epoch and sends again: the
/// epoch must be rotated (a member was revoked), or another member already rotated it.
const EPOCH_REFUSALS: [&str; 2] = ["rotation_required", "stale_epoch"];

fn is_epoch_refusal(code: Option<&str>) -> bool {
    code.is_some_and(|c| EPOCH_REFUSALS.contains(&c))
}

/// The error for an envelope the host refused again after the rotation.
fn still_refused(wire: &str, session_id: &str) -> ClientError {
    let sequence = serde_json::from_str::<serde_json::Value>(wire)
        .ok()
        .and_then(|v| v["sequence"].as_u64())
        .unwrap_or_default();
    ClientError::Usage(format!(
        "session {session_id}: envelope {sequence} was refused again under the new epoch; \
         run `happyx device rotate` and send it again"
    ))
}

fn print_wires(out: &mut dyn Write, wires: &[String]) -> Result<()> {
    for wire in wires {
        writeln!(out, "{wire}").map_err(|e| ClientError::Usage(e.to_string()))?;
    }
    out.flush().map_err(|e| ClientError::Usage(e.to_string()))
}

/// Seals one line under `epoch` with the session's next sequence (persisted first).
fn seal_line(
    dir: &DeviceDir,
    me: &str,
    session_id: &str,
    epoch: u64,
    key: &ContentKey,
    plaintext: &[u8],
) -> Result<String> {
    let sequence = dir.next_sequence(session_id)?;
    let header = EnvelopeHeader {
        v: ENVELOPE_VERSION,
        session_id: session_id.to_owned(),
        sender_device_id: me.to_owned(),
        key_version: dir.keys().key_version(),
        epoch,
        sequence,
        created_at: now_ms().unsigned_abs(),
    };
    Ok(seal(key, dir.keys(), &header, plaintext)?.to_json())
}

fn epoch_key(dir: &DeviceDir, session_id: &str, epoch: u64) -> Result<ContentKey> {
    dir.content_key(session_id, epoch)?.ok_or_else(|| {
        ClientError::Untrusted(format!(
            "no content key of epoch {epoch} was wrapped to this device"
        ))
    })
}

/// Posts envelopes in wire form: one alone to `/envelopes`, several to `/envelopes/batch`.
/// Returns the positions the host refused for their epoch (`rotation_required`,
/// `stale_epoch`), to send again under the new one; any other refusal is an error.
fn post_envelopes(host: &Host, session_id: &str, wires: &[String]) -> Result<Vec<usize>> {
    if let [wire] = wires {
        return match host.send::<EnvelopeAccepted>(
            reqwest::Method::POST,
            &format!("/v1/sessions/{session_id}/envelopes"),
            Some(wire.clone().into_bytes()),
            None,
        ) {
            Ok(_) => Ok(Vec::new()),
            Err(ClientError::Refused { code, .. }) if is_epoch_refusal(Some(&code)) => Ok(vec![0]),
            Err(e) => Err(e),
        };
    }
    let result: EnvelopeBatchResult = host.send(
        reqwest::Method::POST,
        &format!("/v1/sessions/{session_id}/envelopes/batch"),
        Some(envelope_batch_body(wires)),
        None,
    )?;
    if result.results.len() != wires.len() {
        return Err(ClientError::Untrusted(format!(
            "the host answered {} outcomes for {} envelopes",
            result.results.len(),
            wires.len()
        )));
    }
    let mut again = Vec::new();
    for (i, r) in result.results.iter().enumerate() {
        if r.status == 201 {
            continue;
        }
        if !is_epoch_refusal(r.code.as_deref()) {
            return Err(ClientError::Refused {
                status: r.status,
                code: r.code.clone().unwrap_or_default(),
                message: r.message.clone().unwrap_or_default(),
            });
        }
        again.push(i);
    }
    Ok(again)
}

/// How `read` shows what it reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadMode {
    /// Keep reading: after the last page, poll for new envelopes every `poll` until killed, and
    /// show each message as `TIME SENDER: TEXT` for people (control characters made visible).
    pub follow: bool,
    /// The pause between polls when following.
    pub poll: std::time::Duration,
}

/// One followed message as people read it: the sender's signed creation time (UTC), the
/// sender's device id, and the text with control characters (escape sequences a peer could
/// use to rewrite the reader's terminal) shown as `\xNN` escapes.
fn follow_line(env: &Envelope, plaintext: &[u8]) -> String {
    let mut text = String::new();
    for c in String::from_utf8_lossy(plaintext).chars() {
        if c.is_control() && c != '\t' {
            text.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            text.push(c);
        }
    }
    let at = happyx_core::util::utc(i64::try_from(env.created_at).unwrap_or(i64::MAX));
    format!("{at} {}: {text}", env.sender_device_id)
}

/// `read`: verifies and decrypts every envelope this device may read, printing each plaintext
/// on its own line (or, following, each as `follow_line` as it arrives). Fails on any
/// signature, order, epoch or pinning problem.
pub fn read(
    dir: &Path,
    url: &str,
    session_id: &str,
    with: &[(String, Option<Fingerprint>)],
    mode: ReadMode,
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> Result<u64> {
    let dir = DeviceDir::open(dir)?;
    let pins: Vec<(String, Fingerprint)> = with
        .iter()
        .filter_map(|(id, fp)| fp.map(|fp| (id.clone(), fp)))
        .collect();
    if !pins.is_empty() {
        dir.pin_peers(session_id, &pins)?;
    }
    let host = Host::new(url)?;
    let mut after = 0i64;
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut shown = 0u64;
    loop {
        let page: EnvelopePage = host.send(
            reqwest::Method::GET,
            &format!("/v1/sessions/{session_id}/envelopes?after={after}"),
            None,
            Some(&dir),
        )?;
        if page.session_id != session_id {
            return Err(ClientError::Untrusted("answer for another session".into()));
        }
        take_keys(&dir, session_id, &page.wrapped_keys, &page.devices, warn)?;
        for env in &page.envelopes {
            if env.session_id != session_id {
                return Err(ClientError::Untrusted(
                    "an envelope of another session".into(),
                ));
            }
            let sender = PeerKeys::find(&page.devices, &env.sender_device_id, env.key_version)
                .ok_or_else(|| {
                    ClientError::Untrusted(format!(
                        "no keys given for sender {} key version {}",
                        env.sender_device_id, env.key_version
                    ))
                })?;
            trust_peer(&dir, session_id, sender, warn)?;
            let last = last_seq.entry(env.sender_device_id.clone()).or_insert(0);
            if env.sequence <= *last {
                return Err(ClientError::Untrusted(format!(
                    "sender {} sequence {} does not follow {}",
                    env.sender_device_id, env.sequence, last
                )));
            }
            *last = env.sequence;
            if env.epoch > page.epoch {
                return Err(ClientError::Untrusted(format!(
                    "an envelope of epoch {} beyond the session's epoch {}",
                    env.epoch, page.epoch
                )));
            }
            let Some(key) = dir.content_key(session_id, env.epoch)? else {
                let _ = writeln!(
                    warn,
                    "warning: skipping envelope {} of {}: this device holds no key of epoch {}",
                    env.sequence, env.sender_device_id, env.epoch
                );
                continue;
            };
            let plaintext = open(&key, env, &sender.keys)?;
            let written = if mode.follow {
                writeln!(out, "{}", follow_line(env, &plaintext)).and_then(|()| out.flush())
            } else {
                out.write_all(&plaintext)
                    .and_then(|()| out.write_all(b"\n"))
            };
            written.map_err(|e| ClientError::Usage(e.to_string()))?;
            shown += 1;
        }
        if page.envelopes.is_empty() || page.next_after <= after {
            if !mode.follow {
                break;
            }
            std::thread::sleep(mode.poll);
            continue;
        }
        after = page.next_after;
    }
    Ok(shown)
}

/// The session's current keys as the host presents them, with every content key wrapped to
/// this device unwrapped and kept.
fn fetch_keys(
    host: &Host,
    dir: &DeviceDir,
    session_id: &str,
    warn: &mut dyn Write,
) -> Result<SessionKeys> {
    let keys: SessionKeys = host.send(
        reqwest::Method::GET,
        &format!("/v1/sessions/{session_id}/keys"),
        None,
        Some(dir),
    )?;
    if keys.session_id != session_id {
        return Err(ClientError::Untrusted("answer for another session".into()));
    }
    take_keys(dir, session_id, &keys.wrapped_keys, &keys.wrappers, warn)?;
    Ok(keys)
}

/// Tries of [`rotate_away_from`]: each lost race (`409 conflict`) reads the session again.
const ROTATE_ATTEMPTS: usize = 3;

/// Moves the session past epoch `from` and returns the epoch to send under: adopts a newer
/// epoch another member already rotated to (if it owes no rotation itself), else rotates to
/// a new one. Two members doing this at once is safe: the host accepts one rotation, the
/// other gets `409 conflict` and adopts the winner's epoch on its next read. Only a rotation
/// the host accepted is kept in the keystore, so a loser never seals under its own key.
fn rotate_away_from(
    host: &Host,
    dir: &DeviceDir,
    me: &str,
    session_id: &str,
    from: u64,
    warn: &mut dyn Write,
) -> Result<u64> {
    let mut last = None;
    for _ in 0..ROTATE_ATTEMPTS {
        let keys = fetch_keys(host, dir, session_id, warn)?;
        if keys.epoch > from && keys.rotation_required_since.is_none() {
            let _ = writeln!(
                warn,
                "note: session {session_id} is at epoch {} (rotated by another member); using it",
                keys.epoch
            );
            return Ok(keys.epoch);
        }
        if keys.rotation_required_since.is_some() {
            let _ = writeln!(
                warn,
                "note: a member of session {session_id} was revoked; rotating away from epoch {}",
                keys.epoch
            );
        }
        match post_rotation(host, dir, me, session_id, keys, warn) {
            Ok(epoch) => return Ok(epoch),
            Err(ClientError::Refused { code, .. }) if code == "conflict" => {
                last = Some(code);
            }
            Err(e) => return Err(e),
        }
    }
    Err(ClientError::Usage(format!(
        "session {session_id}: could not rotate after {ROTATE_ATTEMPTS} attempts ({})",
        last.unwrap_or_default()
    )))
}

/// Posts a rotation to `keys.epoch + 1`, the new key wrapped to this device and the live
/// members the host lists (each checked against the pins); keeps the key only once the host
/// accepted it. Returns the new epoch.
fn post_rotation(
    host: &Host,
    dir: &DeviceDir,
    me: &str,
    session_id: &str,
    keys: SessionKeys,
    warn: &mut dyn Write,
) -> Result<u64> {
    let peers: Vec<PeerKeys> = keys
        .members
        .into_iter()
        .filter(|p| p.device_id != me)
        .collect();
    for p in &peers {
        trust_peer(dir, session_id, p, warn)?;
    }
    let next = keys.epoch + 1;
    let key = ContentKey::generate()?;
    let wrapped = wrap_all(dir, me, session_id, next, &key, &peers)?;
    let rotated: SessionEpoch = host.send(
        reqwest::Method::POST,
        &format!("/v1/sessions/{session_id}/epochs"),
        Some(json_body(&RotateSession {
            epoch: next,
            wrapped_keys: wrapped,
        })?),
        Some(dir),
    )?;
    if rotated.epoch != next {
        return Err(ClientError::Untrusted(
            "unexpected epoch in the answer".into(),
        ));
    }
    // After the host's answer: a rotation that lost a race must not leave its key behind
    // (`take_keys` keeps the first key it holds per epoch). A crash in between loses
    // nothing: the key is wrapped to this device at the host.
    dir.store_content_key(session_id, next, &key)?;
    Ok(next)
}

/// `rotate`: a new epoch whose key is wrapped to this device and the remaining live members
/// (each checked against the pins); returns the new epoch. If another member rotates at the
/// same moment and wins, this device adopts that epoch and returns it.
pub fn rotate(dir: &Path, url: &str, session_id: &str, warn: &mut dyn Write) -> Result<u64> {
    let dir = DeviceDir::open(dir)?;
    let me = device_id(&dir)?;
    let host = Host::new(url)?;
    let keys = fetch_keys(&host, &dir, session_id, warn)?;
    rotate_away_from(&host, &dir, &me, session_id, keys.epoch, warn)
}

/// `status`: the device's id, key version and fingerprint; with a host, whether the host
/// knows this device with these keys.
pub fn status(dir: &Path, url: Option<&str>) -> Result<serde_json::Value> {
    let dir = DeviceDir::open(dir)?;
    let mut v = serde_json::json!({
        "device_id": dir.device_id(),
        "key_version": dir.keys().key_version(),
        "fingerprint": dir.fingerprint().to_string(),
    });
    if let (Some(url), Some(id)) = (url, dir.device_id()) {
        let host = Host::new(url)?;
        let state = match host.send::<PeerKeys>(
            reqwest::Method::GET,
            &format!("/v1/devices/{id}/keys"),
            None,
            Some(&dir),
        ) {
            Ok(p) if p.keys == dir.public_keys() => "active",
            Ok(_) => "key_mismatch",
            Err(ClientError::Refused { status: 401, .. }) => "unauthorized",
            Err(e) => return Err(e),
        };
        v["host"] = serde_json::json!(state);
    }
    Ok(v)
}
