//! End-to-end: devices and encrypted sessions through the real binary — two devices exchange
//! messages, the host never holds plaintext, every refusal code with nothing stored, revocation
//! and rotation, re-enrollment codes, kill -9 during ingest, and a host that swaps a key.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use happyx::devices::DeviceDir;
use happyx::devices::protocol::envelope_batch_body;
use happyx::envelope::{ENVELOPE_VERSION, Envelope, EnvelopeHeader, seal};
use happyx_tests::{Server, binary, call, cli, client, eventually, temp_data_dir};
use serde_json::{Value, json};

const WINDOW_MS: i64 = 5_000;

fn start(data: &Path) -> Server {
    Server::with_config(
        data,
        format!("[envelopes]\nwindow_ms = {WINDOW_MS}\n[public]\nsessions = true\n"),
    )
}

/// A host whose window is wide enough for a stream sealed up front to stay inside it however
/// long sealing and posting take on a loaded machine.
fn start_wide_window(data: &Path) -> Server {
    Server::with_config(
        data,
        "[envelopes]\nwindow_ms = 600000\n[public]\nsessions = true\n",
    )
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(super) fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs `happyx device …` with `stdin`; returns (success, stdout, stderr).
pub(super) fn device_cli(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(binary())
        .arg("device")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn happyx device");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(super) struct Dev {
    pub(super) dir: PathBuf,
    pub(super) id: String,
    pub(super) fp: String,
}

fn issue_code(server: &Server, op: &str, body: &Value) -> (u16, Value) {
    call(server.post("/v1/enrollments", op, body))
}

/// keygen + operator code + enroll, all through the CLI.
pub(super) fn enroll(server: &Server, op: &str, dir: PathBuf) -> Dev {
    let (ok, fp, err) = device_cli(&["keygen", "--dir", s(&dir)], "");
    assert!(ok, "keygen: {err}");
    let (st, code) = issue_code(server, op, &json!({}));
    assert_eq!(st, 201, "{code}");
    let code = code["code"].as_str().expect("code").to_string();
    let (ok, id, err) = device_cli(
        &[
            "enroll",
            "--dir",
            s(&dir),
            "--url",
            &server.url,
            "--code",
            &code,
        ],
        "",
    );
    assert!(ok, "enroll: {err}");
    Dev {
        dir,
        id: id.trim().to_string(),
        fp: fp.trim().to_string(),
    }
}

/// An operator token, two enrolled devices A and B, and a session A opened with B.
fn two_in_a_session(server: &Server, dir: &Path) -> (String, Dev, Dev, String) {
    let op = server.token("operator");
    let a = enroll(server, &op, dir.join("dev-a"));
    let b = enroll(server, &op, dir.join("dev-b"));
    let session = open_session(server, &a, &[&b]);
    (op, a, b, session)
}

pub(super) fn open_session(server: &Server, a: &Dev, peers: &[&Dev]) -> String {
    let mut args = vec![
        "open-session".to_string(),
        "--dir".into(),
        s(&a.dir).into(),
        "--url".into(),
        server.url.clone(),
    ];
    for p in peers {
        args.push("--with".into());
        args.push(format!("{}={}", p.id, p.fp));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = device_cli(&refs, "");
    assert!(ok, "open-session: {err}");
    assert!(!err.contains("warning"), "fingerprints were given: {err}");
    out.trim().to_string()
}

pub(super) fn send(server: &Server, d: &Dev, session: &str, lines: &str) -> Vec<String> {
    send_with(server, d, session, lines, &[])
}

/// `happyx device send` with `extra` flags; returns the printed envelopes.
fn send_with(server: &Server, d: &Dev, session: &str, lines: &str, extra: &[&str]) -> Vec<String> {
    let (ok, out, err) = session_cli("send", server, d, session, extra, lines);
    assert!(ok, "send: {err}");
    out.lines().map(str::to_string).collect()
}

/// `happyx device CMD --dir … --url … --session SESSION EXTRA…` with `stdin`.
pub(super) fn session_cli(
    cmd: &str,
    server: &Server,
    d: &Dev,
    session: &str,
    extra: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    let mut args = vec![
        cmd,
        "--dir",
        s(&d.dir),
        "--url",
        &server.url,
        "--session",
        session,
    ];
    args.extend_from_slice(extra);
    device_cli(&args, stdin)
}

pub(super) fn read(
    server: &Server,
    d: &Dev,
    session: &str,
    with: &[&Dev],
) -> (bool, String, String) {
    let pins: Vec<String> = with.iter().map(|p| format!("{}={}", p.id, p.fp)).collect();
    let extra: Vec<&str> = pins.iter().flat_map(|p| ["--with", p.as_str()]).collect();
    session_cli("read", server, d, session, &extra, "")
}

pub(super) fn post_raw(server: &Server, session: &str, body: &str) -> (u16, Value) {
    call(
        client()
            .post(format!("{}/v1/sessions/{session}/envelopes", server.url))
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
}

pub(super) fn envelope_count(server: &Server, op: &str, session: &str) -> i64 {
    let (st, v) = call(server.get(&format!("/v1/sessions/{session}/envelopes/meta"), op));
    assert_eq!(st, 200, "{v}");
    v["envelopes"].as_i64().expect("count")
}

/// Seals `text` as device `d` with full control over the header.
pub(super) fn craft(
    d: &Dev,
    session: &str,
    epoch: u64,
    sequence: u64,
    created_at: i64,
    text: &str,
) -> Envelope {
    let dir = DeviceDir::open(&d.dir).expect("open dir");
    let key = dir
        .content_key(session, epoch)
        .expect("read key")
        .expect("holds the epoch key");
    let header = EnvelopeHeader {
        v: ENVELOPE_VERSION,
        session_id: session.into(),
        sender_device_id: d.id.clone(),
        key_version: dir.keys().key_version(),
        epoch,
        sequence,
        created_at: created_at as u64,
    };
    seal(&key, dir.keys(), &header, text.as_bytes()).expect("seal")
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn two_devices_exchange_and_every_refusal_stores_nothing() {
    let (tmp, data) = temp_data_dir();
    let server = start(&data);
    let (op, a, b, session) = two_in_a_session(&server, tmp.path());

    let secret_a = "plaintext-canary-from-A-7f3a9c";
    let secret_b = "plaintext-canary-from-B-2d8e41";
    let mut wires = send(
        &server,
        &a,
        &session,
        &format!("{secret_a}\nsecond line from A\n"),
    );
    assert_eq!(wires.len(), 2);
    for w in &wires {
        let env = Envelope::parse(w.as_bytes()).expect("wire form");
        assert_eq!(env.session_id, session);
    }
    wires.extend(send(&server, &b, &session, &format!("{secret_b}\n")));

    let (ok, out, err) = read(&server, &b, &session, &[&a]);
    assert!(ok, "B reads: {err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [secret_a, "second line from A", secret_b]
    );
    let (ok, out, err) = read(&server, &a, &session, &[]);
    assert!(ok, "A reads: {err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(envelope_count(&server, &op, &session), 3);

    // The public view shows counts, sequence ranges and bytes; nothing of any envelope.
    let (st, v) = call(client().get(format!("{}/public/sessions/{session}", server.url)));
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["kind"].as_str(), &v["envelopes"]["count"]),
        (Some("encrypted"), &json!(3))
    );
    let mut ranges: Vec<(String, i64, i64, i64)> = v["envelopes"]["senders"]
        .as_array()
        .expect("senders")
        .iter()
        .map(|x| {
            (
                x["sender_device_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                x["count"].as_i64().unwrap_or_default(),
                x["first_sequence"].as_i64().unwrap_or_default(),
                x["last_sequence"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    ranges.sort();
    let mut expected = vec![(a.id.clone(), 2, 1, 2), (b.id.clone(), 1, 1, 1)];
    expected.sort();
    assert_eq!(ranges, expected);
    let public = v.to_string();
    for w in &wires {
        let env = Envelope::parse(w.as_bytes()).expect("wire form");
        for field in [
            STANDARD.encode(&env.ciphertext),
            STANDARD.encode(env.nonce),
            STANDARD.encode(env.signature),
        ] {
            assert!(
                !public.contains(&field),
                "public view copies envelope material"
            );
        }
    }

    // No file of the host's data dir (database, WAL, anything) holds a plaintext.
    let mut files = Vec::new();
    all_files(&data, &mut files);
    // (On SQLite that includes the write-ahead log; on PostgreSQL the database is not in the
    // data dir at all.)
    assert!(
        happyx_tests::on_postgres() || files.iter().any(|f| f.to_string_lossy().ends_with("-wal"))
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        for canary in [secret_a, secret_b] {
            assert!(
                !contains(&bytes, canary.as_bytes()),
                "{} holds plaintext",
                f.display()
            );
        }
    }

    // Replaying every accepted envelope: replayed, nothing stored.
    for w in &wires {
        let (st, v) = post_raw(&server, &session, w);
        assert_eq!(v["code"], "replayed", "{st} {v}");
    }
    // A sequence at the cursor (A's cursor is 2), whatever its createdAt.
    let at_cursor = craft(&a, &session, 0, 2, now_ms(), "at cursor");
    assert_eq!(
        post_raw(&server, &session, &at_cursor.to_json()).1["code"],
        "replayed"
    );
    let old_and_replayed = craft(&a, &session, 0, 1, now_ms() - 10 * WINDOW_MS, "x");
    assert_eq!(
        post_raw(&server, &session, &old_and_replayed.to_json()).1["code"],
        "replayed"
    );
    // Reordered delivery: 11 arrives before 10; 10 is then at or below the cursor.
    let e10 = craft(&a, &session, 0, 10, now_ms(), "ten");
    let e11 = craft(&a, &session, 0, 11, now_ms(), "eleven");
    assert_eq!(post_raw(&server, &session, &e11.to_json()).0, 201);
    assert_eq!(
        post_raw(&server, &session, &e10.to_json()).1["code"],
        "replayed"
    );
    assert_eq!(envelope_count(&server, &op, &session), 4);

    // The window edge, ±1 s.
    let now = now_ms();
    let inside_past = craft(&a, &session, 0, 20, now - WINDOW_MS + 1_000, "inside past");
    let inside_future = craft(
        &a,
        &session,
        0,
        21,
        now + WINDOW_MS - 1_000,
        "inside future",
    );
    let outside_past = craft(&a, &session, 0, 22, now - WINDOW_MS - 1_000, "outside past");
    let outside_future = craft(
        &a,
        &session,
        0,
        23,
        now + WINDOW_MS + 1_000,
        "outside future",
    );
    assert_eq!(
        post_raw(&server, &session, &outside_past.to_json()).1["code"],
        "expired"
    );
    assert_eq!(
        post_raw(&server, &session, &outside_future.to_json()).1["code"],
        "expired"
    );
    assert_eq!(post_raw(&server, &session, &inside_past.to_json()).0, 201);
    assert_eq!(post_raw(&server, &session, &inside_future.to_json()).0, 201);
    let mut count = envelope_count(&server, &op, &session);
    assert_eq!(count, 6);

    // A flipped bit in each field of a never-posted envelope.
    let fresh = craft(&a, &session, 0, 100, now_ms(), "never posted");
    let wire: Value = serde_json::from_str(&fresh.to_json()).expect("json");
    let flip_b64 = |v: &Value| {
        let mut bytes = STANDARD.decode(v.as_str().expect("str")).expect("b64");
        bytes[0] ^= 1;
        json!(STANDARD.encode(bytes))
    };
    let flip_str = |v: &Value| {
        let mut t = v.as_str().expect("str").to_string().into_bytes();
        t[0] ^= 1;
        json!(String::from_utf8(t).expect("ascii"))
    };
    for field in [
        "v",
        "sessionId",
        "senderDeviceId",
        "keyVersion",
        "epoch",
        "sequence",
        "createdAt",
        "nonce",
        "ciphertext",
        "signature",
    ] {
        let mut bad = wire.clone();
        bad[field] = match field {
            "sessionId" | "senderDeviceId" => flip_str(&wire[field]),
            "nonce" | "ciphertext" | "signature" => flip_b64(&wire[field]),
            _ => json!(wire[field].as_u64().expect("int") ^ 1),
        };
        let (st, v) = post_raw(&server, &session, &bad.to_string());
        let code = v["code"].as_str().unwrap_or("");
        assert!(
            ["bad_signature", "invalid_envelope", "unknown_device"].contains(&code),
            "{field}: {st} {v}"
        );
        assert!((400..500).contains(&st), "{field}: {st}");
    }
    // A signature by another device (B signs as A).
    let mut forged = craft(&b, &session, 0, 101, now_ms(), "forged");
    forged.sender_device_id = a.id.clone();
    assert_eq!(
        post_raw(&server, &session, &forged.to_json()).1["code"],
        "bad_signature"
    );
    // Non-canonical base64 (non-zero trailing bits in the signature's last character).
    let mut nc = wire.clone();
    let sig = wire["signature"].as_str().expect("sig").to_string();
    let last = sig.len() - 3;
    let mut chars: Vec<char> = sig.chars().collect();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let idx = alphabet.find(chars[last]).expect("b64 char");
    chars[last] = alphabet.chars().nth(idx ^ 1).expect("char");
    nc["signature"] = json!(chars.into_iter().collect::<String>());
    assert_eq!(
        post_raw(&server, &session, &nc.to_string()).1["code"],
        "invalid_envelope"
    );
    // Garbage and an oversize body.
    assert_eq!(
        post_raw(&server, &session, "{").1["code"],
        "invalid_envelope"
    );
    let big = "x".repeat(300 * 1024);
    let (st, _) = post_raw(&server, &session, &big);
    assert!((400..500).contains(&st));
    assert_eq!(envelope_count(&server, &op, &session), count);

    // The genuine envelope is still accepted afterwards.
    assert_eq!(post_raw(&server, &session, &fresh.to_json()).0, 201);
    count += 1;
    assert_eq!(envelope_count(&server, &op, &session), count);

    // A weak key at enrollment.
    let (_, code) = issue_code(&server, &op, &json!({}));
    let zero = STANDARD.encode([0u8; 32]);
    let dir = DeviceDir::open(&a.dir).expect("dir");
    let pk = dir.public_keys();
    let body = json!({
        "code": code["code"],
        "keys": {"keyVersion": 1, "signingPublic": STANDARD.encode(pk.signing_public), "hpkePublic": zero},
        "proof": {"signature": STANDARD.encode([7u8; 64]), "hpkeEnc": STANDARD.encode([9u8; 32]),
                  "hpkeTag": STANDARD.encode([1u8; 16])},
    });
    let (st, v) = call(
        client()
            .post(format!("{}/v1/enrollments/complete", server.url))
            .json(&body),
    );
    assert_eq!((st, v["code"].as_str()), (422, Some("weak_key")), "{v}");

    // Authenticated refusals are events without payload; no event holds ciphertext.
    let events = server.events(&op);
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|e| e["code"] == "envelope.rejected")
        .collect();
    assert!(!rejected.is_empty());
    let all = serde_json::to_string(&events).expect("json");
    assert!(!all.contains(wire["ciphertext"].as_str().expect("ct")));

    // Device reads need a fresh device signature, not a bearer token.
    let (st, v) = call(server.get(&format!("/v1/sessions/{session}/envelopes"), &op));
    assert_eq!(
        (st, v["code"].as_str()),
        (401, Some("device_unauthorized")),
        "{v}"
    );
}

#[test]
fn enrollment_attempts_are_rate_limited_at_the_configured_burst() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(
        &data,
        "[devices]\nenroll_burst = 3\nenroll_per_minute = 1\n",
    );
    let attempt = || {
        call(
            client()
                .post(format!("{}/v1/enrollments/challenge", server.url))
                .json(&json!({"code": "hpx_guess"})),
        )
    };
    // The burst: three attempts are judged on their merits (an unknown code)...
    for i in 1..=3 {
        let (st, v) = attempt();
        assert_ne!(st, 429, "attempt {i} is within the burst: {v}");
    }
    // ...the fourth is refused before the code is looked at (one token a minute refills).
    let (st, v) = attempt();
    assert_eq!((st, v["code"].as_str()), (429, Some("rate_limited")), "{v}");
}

#[test]
fn revocation_rotation_and_reenrollment() {
    let (tmp, data) = temp_data_dir();
    let server = start(&data);
    let op = server.token("operator");
    let a = enroll(&server, &op, tmp.path().join("a"));
    let b = enroll(&server, &op, tmp.path().join("b"));
    let c = enroll(&server, &op, tmp.path().join("c"));
    let session = open_session(&server, &a, &[&b, &c]);
    send(&server, &c, &session, "from C before revocation\n");
    send(&server, &b, &session, "B under epoch 0\n");
    let c_pending = craft(&c, &session, 0, 50, now_ms(), "C after revocation");
    let b_epoch0 = craft(&b, &session, 0, 50, now_ms(), "B under the old epoch");

    let (st, v) = call(server.post(
        &format!("/v1/devices/{}/revoke", c.id),
        &op,
        &json!({"reason": "lost phone"}),
    ));
    assert_eq!((st, v["status"].as_str()), (200, Some("revoked")), "{v}");
    assert_eq!(v["revoke_reason"], "lost phone");
    assert!(v["keys"][0]["revoked_at"].is_i64(), "{v}");
    assert_eq!(
        post_raw(&server, &session, &c_pending.to_json()).1["code"],
        "revoked_key"
    );

    let (ok, out, err) = session_cli("rotate", &server, &a, &session, &[], "");
    assert!(ok, "rotate: {err}");
    assert_eq!(out.trim(), "1");
    assert_eq!(
        post_raw(&server, &session, &b_epoch0.to_json()).1["code"],
        "stale_epoch"
    );
    send(&server, &a, &session, "after rotation\n");
    send(&server, &b, &session, "B after rotation\n");
    let (ok, out, err) = read(&server, &b, &session, &[&a, &c]);
    assert!(ok, "B reads: {err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "from C before revocation",
            "B under epoch 0",
            "after rotation",
            "B after rotation"
        ]
    );
    // C can neither read nor obtain the new epoch's key.
    let (ok, _, err) = read(&server, &c, &session, &[]);
    assert!(!ok);
    assert!(err.contains("device_unauthorized"), "{err}");
    let c_dir = DeviceDir::open(&c.dir).expect("dir");
    assert!(c_dir.content_key(&session, 1).expect("keys").is_none());

    // Re-enrollment: an operator code gives C a new key version, once.
    let (st, code) = issue_code(
        &server,
        &op,
        &json!({"kind": "reenroll", "device_id": c.id}),
    );
    assert_eq!(st, 201, "{code}");
    let code = code["code"].as_str().expect("code").to_string();
    let c2 = tmp.path().join("c2");
    let (ok, _, err) = device_cli(&["keygen", "--dir", s(&c2), "--key-version", "2"], "");
    assert!(ok, "{err}");
    let (ok, out, err) = device_cli(
        &[
            "enroll",
            "--dir",
            s(&c2),
            "--url",
            &server.url,
            "--code",
            &code,
        ],
        "",
    );
    assert!(ok, "re-enroll: {err}");
    assert_eq!(out.trim(), c.id);
    let (_, v) = call(server.get(&format!("/v1/devices/{}", c.id), &op));
    assert_eq!(v["keys"].as_array().map(Vec::len), Some(2), "{v}");
    // The used code fails, also for a fresh key.
    let c3 = tmp.path().join("c3");
    device_cli(&["keygen", "--dir", s(&c3), "--key-version", "3"], "");
    let (ok, _, err) = device_cli(
        &[
            "enroll",
            "--dir",
            s(&c3),
            "--url",
            &server.url,
            "--code",
            &code,
        ],
        "",
    );
    assert!(!ok && err.contains("enrollment_invalid"), "{err}");
    // An expired code fails.
    let (_, code) = issue_code(
        &server,
        &op,
        &json!({"kind": "reenroll", "device_id": c.id, "ttl_ms": 1000}),
    );
    std::thread::sleep(Duration::from_millis(1_500));
    let (ok, _, err) = device_cli(
        &[
            "enroll",
            "--dir",
            s(&c3),
            "--url",
            &server.url,
            "--code",
            code["code"].as_str().expect("code"),
        ],
        "",
    );
    assert!(!ok && err.contains("enrollment_invalid"), "{err}");
}

#[test]
fn kill9_during_ingest_then_replay_accepts_nothing() {
    kill9_during_ingest(1);
}

#[test]
fn kill9_during_batched_ingest_then_replay_accepts_nothing() {
    kill9_during_ingest(16);
}

/// Posts `per_request` envelopes per request (1: the single route, more: batches) in a stream,
/// kills the host with SIGKILL mid-stream, restarts it and replays everything it stored.
fn kill9_during_ingest(per_request: usize) {
    let (tmp, data) = temp_data_dir();
    let mut server = start_wide_window(&data);
    let op = server.token("operator");
    let a = enroll(&server, &op, tmp.path().join("a"));
    let session = open_session(&server, &a, &[]);
    // enough requests that the kill lands mid-stream on a fast machine too
    let total = 400 * per_request.min(8);
    let lines: String = (0..total).map(|i| format!("message {i}\n")).collect();
    let stream = send_with(&server, &a, &session, &lines, &["--dry-run"]);
    assert_eq!(stream.len(), total);
    // Posts `wires` as one request; returns those acknowledged as accepted, or None when the
    // host is gone.
    let post = |http: &reqwest::blocking::Client, url: &str, wires: &[String]| {
        let sid = &session;
        if let [w] = wires {
            let r = http
                .post(format!("{url}/v1/sessions/{sid}/envelopes"))
                .header("content-type", "application/json")
                .body(w.clone())
                .send()
                .ok()?;
            return Some(if r.status().as_u16() == 201 {
                vec![w.clone()]
            } else {
                Vec::new()
            });
        }
        let r = http
            .post(format!("{url}/v1/sessions/{sid}/envelopes/batch"))
            .header("content-type", "application/json")
            .body(envelope_batch_body(wires))
            .send()
            .ok()?;
        let v: Value = r.json().ok()?;
        let results = v["results"].as_array()?;
        Some(
            wires
                .iter()
                .zip(results)
                .filter(|(_, r)| r["status"] == 201)
                .map(|(w, _)| w.clone())
                .collect(),
        )
    };
    let url = server.url.clone();
    // The kill lands right after the first acknowledgement, however slow the machine is.
    let first_ack = std::sync::atomic::AtomicBool::new(false);
    let acked = std::thread::scope(|scope| {
        let poster = scope.spawn(|| {
            let http = client();
            let mut acked = Vec::new();
            for chunk in stream.chunks(per_request) {
                match post(&http, &url, chunk) {
                    Some(ok) => {
                        acked.extend(ok);
                        if !acked.is_empty() {
                            first_ack.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    None => break,
                }
            }
            acked
        });
        let acknowledged = eventually(Duration::from_secs(120), || {
            first_ack
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(())
        });
        server.kill9();
        let acked = poster.join().expect("poster");
        assert!(
            acknowledged.is_some(),
            "nothing was acknowledged within 120 s (acked after the kill: {})",
            acked.len()
        );
        acked
    });
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the kill"
    );
    let server = start_wide_window(&data);
    let stored = envelope_count(&server, &op, &session);
    assert!(stored >= acked.len() as i64, "{stored} < {}", acked.len());
    assert!(
        (stored as usize) < stream.len(),
        "the kill came after the whole stream"
    );
    let http = client();
    let mut accepted_again = 0;
    for chunk in stream[..stored as usize].chunks(per_request) {
        accepted_again += post(&http, &server.url, chunk).expect("host answers").len();
    }
    assert_eq!(accepted_again, 0, "replay after kill -9 accepted envelopes");
    for w in &acked {
        assert_eq!(post_raw(&server, &session, w).1["code"], "replayed");
    }
    assert_eq!(envelope_count(&server, &op, &session), stored);
}

#[test]
fn a_host_that_swaps_a_peer_key_is_caught() {
    if happyx_tests::sqlite_only("the test swaps a key inside happyx.db as a hostile host would") {
        return;
    }
    let (tmp, data) = temp_data_dir();
    let mut server = start(&data);
    let op = server.token("operator");
    let a = enroll(&server, &op, tmp.path().join("a"));
    let b = enroll(&server, &op, tmp.path().join("b"));
    let session = open_session(&server, &a, &[&b]);
    send(&server, &b, &session, "hello from B\n");
    let (ok, out, err) = read(&server, &a, &session, &[]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "hello from B");
    server.sigterm(Duration::from_secs(20));

    // The "host" replaces B's keys with an attacker's.
    let evil = tmp.path().join("evil");
    device_cli(&["keygen", "--dir", s(&evil)], "");
    let evil_keys = DeviceDir::open(&evil).expect("dir").public_keys();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let url = format!("sqlite://{}", data.join("happyx.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
        sqlx::query(
            "UPDATE device_keys SET signing_public = ?, hpke_public = ?, fingerprint = ? WHERE device_id = ?",
        )
        .bind(STANDARD.encode(evil_keys.signing_public))
        .bind(STANDARD.encode(evil_keys.hpke_public))
        .bind(evil_keys.fingerprint().to_string())
        .bind(&b.id)
        .execute(&pool)
        .await
        .expect("update");
        pool.close().await;
    });
    let server = start(&data);
    let (ok, _, err) = read(&server, &a, &session, &[]);
    assert!(!ok, "a swapped key must fail the read");
    assert!(err.contains("fingerprint"), "{err}");
    let _ = cli(&["--version"]);
}

pub(super) fn post_batch(server: &Server, session: &str, body: String) -> (u16, Value) {
    call(
        client()
            .post(format!(
                "{}/v1/sessions/{session}/envelopes/batch",
                server.url
            ))
            .header("content-type", "application/json")
            .body(body),
    )
}

pub(super) fn batch_of(wires: &[&str]) -> String {
    String::from_utf8(envelope_batch_body(wires)).expect("utf-8")
}

/// `body` with spaces before its final byte so it is exactly `len` bytes long.
fn padded(body: &str, len: usize) -> String {
    let (head, last) = body.split_at(body.len() - 1);
    format!("{head}{}{last}", " ".repeat(len - body.len()))
}

#[test]
fn batches_are_judged_in_order_and_refused_whole_at_their_limits() {
    let (tmp, data) = temp_data_dir();
    let server = start_wide_window(&data);
    let op = server.token("operator");
    let a = enroll(&server, &op, tmp.path().join("a"));
    let b = enroll(&server, &op, tmp.path().join("b"));
    let session = open_session(&server, &a, &[&b]);
    let other = open_session(&server, &b, &[&a]);
    let lines: String = (1..=300).map(|i| format!("line {i}\n")).collect();
    let stream = send_with(&server, &a, &session, &lines, &["--dry-run"]);
    let w: Vec<&str> = stream.iter().map(String::as_str).collect();
    assert_eq!(w.len(), 300);

    // One batch, judged envelope by envelope in its order, as the single route would.
    let mut forged: Value = serde_json::from_str(w[5]).expect("wire");
    let sig = forged["signature"].as_str().expect("sig").to_string();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    forged["signature"] = Value::String(format!("{flipped}{}", &sig[1..]));
    let elsewhere = craft(&b, &other, 0, 1, now_ms(), "other session").to_json();
    let forged = forged.to_string();
    let (st, v) = post_batch(
        &server,
        &session,
        batch_of(&[
            w[0],
            w[1],
            w[1],
            w[3],
            w[2],
            "{\"v\":1}",
            &forged,
            &elsewhere,
            w[4],
        ]),
    );
    assert_eq!(st, 200, "{v}");
    let codes: Vec<(u64, &str)> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["status"].as_u64().expect("status"),
                r["code"].as_str().unwrap_or("accepted"),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (201, "accepted"),
            (201, "accepted"),
            (409, "replayed"),
            (201, "accepted"),
            (409, "replayed"),
            (400, "invalid_envelope"),
            (401, "bad_signature"),
            (400, "invalid_envelope"),
            (201, "accepted"),
        ]
    );
    assert_eq!(v["accepted"], 4);
    assert_eq!(v["results"][3]["sequence"], 4);
    assert_eq!(envelope_count(&server, &op, &session), 4);
    assert_eq!(envelope_count(&server, &op, &other), 0);

    // At the limit: 256 envelopes in one request, all accepted.
    let (st, v) = post_batch(&server, &session, batch_of(&w[5..261]));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["accepted"], 256, "{v}");
    assert_eq!(envelope_count(&server, &op, &session), 260);

    // Refused whole, storing nothing: one envelope over the limit, empty, not a batch.
    let over: Vec<&str> = std::iter::repeat_n(w[261], 257).collect();
    for (body, why) in [
        (batch_of(&over), "257 envelopes"),
        (batch_of(&[]), "empty"),
        (format!("[{}]", w[261]), "a bare list"),
        (
            format!("{{\"envelopes\":[{}],\"extra\":1}}", w[261]),
            "unknown field",
        ),
        (format!("{{\"envelopes\":[{}]", w[261]), "truncated"),
    ] {
        let (st, v) = post_batch(&server, &session, body);
        assert_eq!(st, 400, "{why}: {v}");
        assert_eq!(v["code"], "invalid_envelope", "{why}: {v}");
    }
    assert_eq!(envelope_count(&server, &op, &session), 260);

    // The body limit, at its edge: exactly 1 MiB is read, one byte more is 413.
    let one = batch_of(&[w[261]]);
    let (st, v) = post_batch(&server, &session, padded(&one, 1024 * 1024 + 1));
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["code"], "body_too_large");
    assert_eq!(envelope_count(&server, &op, &session), 260);
    let (st, v) = post_batch(&server, &session, padded(&one, 1024 * 1024));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["accepted"], 1, "{v}");

    // The single route's limit answers in JSON too.
    let (st, v) = post_raw(&server, &session, &padded(w[262], 256 * 1024 + 1));
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["code"], "body_too_large");
    let (st, v) = post_raw(&server, &session, &padded(w[262], 256 * 1024));
    assert_eq!(st, 201, "{v}");

    // The CLI posts batches of --batch lines; the reader sees every message once, in order.
    let more: String = (1..=70).map(|i| format!("batched {i}\n")).collect();
    let printed = send_with(&server, &a, &session, &more, &["--batch", "32"]);
    assert_eq!(printed.len(), 70);
    assert_eq!(envelope_count(&server, &op, &session), 262 + 70);
    let (ok, text, err) = read(&server, &b, &session, &[&a]);
    assert!(ok, "{err}");
    let got: Vec<&str> = text.lines().collect();
    // line 3 was refused as a replay when it came after line 4
    let mut want: Vec<String> = (1..=263)
        .filter(|i| *i != 3)
        .map(|i| format!("line {i}"))
        .collect();
    want.extend((1..=70).map(|i| format!("batched {i}")));
    assert_eq!(got, want);
    let (ok, _, err) = session_cli("send", &server, &a, &session, &["--batch", "257"], "x\n");
    assert!(!ok && err.contains("257"), "{err}");
}

/// `device send --quiet` posts without printing; `device read --follow` keeps reading and shows
/// each message with its sender and time as it arrives, with a peer's escape sequences made
/// visible instead of reaching the reader's terminal.
#[test]
fn read_follow_shows_sender_and_time_as_messages_arrive_and_send_quiet_prints_nothing() {
    use std::io::{BufRead, BufReader};
    let (tmp, data) = temp_data_dir();
    let server = start(&data);
    let (_op, a, b, session) = two_in_a_session(&server, tmp.path());
    assert!(send(&server, &a, &session, "before the reader\n").len() == 1);

    let mut reader = Command::new(binary())
        .args(["device", "read", "--dir", s(&b.dir), "--url", &server.url])
        .args(["--session", &session, "--follow", "--poll-ms", "100"])
        .args(["--with", &format!("{}={}", a.id, a.fp)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn device read --follow");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = reader.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a followed line")
    };
    let first = next();
    assert!(
        first.ends_with(&format!(" {}: before the reader", a.id)),
        "{first}"
    );
    // `2026-12-01T19:10:03Z`: the sender's signed time, in UTC.
    let at = first.split(' ').next().expect("time");
    assert_eq!(
        (at.len(), &at[4..5], &at[10..11]),
        (20, "-", "T"),
        "{first}"
    );

    // Sent after the reader started, quietly: nothing printed, and the reader shows it.
    let printed = send_with(
        &server,
        &a,
        &session,
        "while following\n\u{1b}]0;pwned\u{7}title\n",
        &["--quiet"],
    );
    assert!(printed.is_empty(), "--quiet printed {printed:?}");
    assert!(next().ends_with(&format!(" {}: while following", a.id)));
    let hostile = next();
    assert!(
        hostile.ends_with("\\x1b]0;pwned\\x07title") && !hostile.contains('\u{1b}'),
        "{hostile:?}"
    );
    assert_eq!(
        reader.try_wait().expect("poll"),
        None,
        "--follow keeps reading"
    );
    reader.kill().expect("stop the reader");
    let _ = reader.wait();

    // Without --follow, the output is the plaintext lines as before (scripts read it).
    let (ok, out, err) = read(&server, &b, &session, &[&a]);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "before the reader",
            "while following",
            "\u{1b}]0;pwned\u{7}title"
        ]
    );
}

/// A device command never waits forever on its own HTTP client. The client once used
/// `reqwest::blocking`, which parks the calling thread for its helper thread's answer; at
/// `HAPPYX_LOG=trace` its own trace line between the poll and the park could consume the
/// wake-up, and about one command in ten thousand hung until killed. Each process gets one
/// chance at that race (it is the first trace event of the process), so this runs thousands of
/// fresh processes against a port nothing listens on, eight at a time; any that outlives
/// its limit fails the test with gdb's backtrace of every thread.
///
/// cargo test -p happyx-tests --test e2e envelopes::device_commands -- --ignored --nocapture
/// (`HAPPYX_STRESS_RUNS` sets the number of processes; 16,000 by default.)
#[test]
#[ignore = "minutes of process churn; run by hand"]
fn device_commands_never_wait_forever_on_their_client() {
    let (tmp, _data) = temp_data_dir();
    let dir = tmp.path().join("device");
    let (st, _, err) = cli(&["device", "keygen", "--dir", dir.to_str().expect("utf-8")]);
    assert!(st.success(), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let runs: usize = std::env::var("HAPPYX_STRESS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16_000);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < runs {
                    let mut cmd = Command::new(binary());
                    cmd.args(["device", "enroll", "--dir"])
                        .arg(&dir)
                        .args(["--url", &url, "--code", "hpx_x"])
                        .env("HAPPYX_LOG", "trace");
                    let out = happyx_tests::run_bounded(&mut cmd, None, Duration::from_secs(30));
                    let err = String::from_utf8_lossy(&out.stderr);
                    assert!(
                        !out.status.success() && err.contains("cannot reach the host"),
                        "{err}"
                    );
                }
            });
        }
    });
}
