//! End-to-end: revoking a device rotates session keys, through the real binary and real device
//! keystores. After C's revocation nothing A sends can be opened with C's keys (the device CLI
//! rotates by itself first); the old epoch is accepted during the configured grace and refused
//! `rotation_required` after it, on the single and the batch route, and a `send` already running
//! rotates and sends again when refused; of two survivors rotating at once, one wins and the
//! other adopts its epoch (made deterministic with a proxy that holds the loser's rotation).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use happyx::devices::DeviceDir;
use happyx::envelope::{Envelope, open};
use happyx_tests::{Server, binary, call, eventually, temp_data_dir};
use serde_json::{Value, json};

use super::envelopes::{
    Dev, batch_of, craft, enroll, envelope_count, now_ms, open_session, post_batch, post_raw, read,
    s, send, session_cli,
};

const GRACE_MS: i64 = 4_000;

fn start(data: &std::path::Path, grace_ms: i64) -> Server {
    Server::with_config(
        data,
        format!("[envelopes]\nwindow_ms = 600000\nrotation_grace_ms = {grace_ms}\n"),
    )
}

/// An operator token, three enrolled devices A, B and C, and a session A opened with B and C.
fn three_in_a_session(server: &Server, dir: &std::path::Path) -> (String, [Dev; 3], String) {
    let op = server.token("operator");
    let [a, b, c] = ["a", "b", "c"].map(|n| enroll(server, &op, dir.join(n)));
    let session = open_session(server, &a, &[&b, &c]);
    (op, [a, b, c], session)
}

fn session_view(server: &Server, op: &str, id: &str) -> Value {
    let (st, v) = call(server.get(&format!("/v1/sessions/{id}"), op));
    assert_eq!(st, 200, "{v}");
    v
}

/// Revokes `d`; returns the host's `revoked_at`.
fn revoke(server: &Server, op: &str, d: &Dev) -> i64 {
    let (st, v) = call(server.post(
        &format!("/v1/devices/{}/revoke", d.id),
        op,
        &json!({"reason": "lost phone"}),
    ));
    assert_eq!((st, v["status"].as_str()), (200, Some("revoked")), "{v}");
    v["revoked_at"].as_i64().expect("revoked_at")
}

fn rotations(server: &Server, op: &str, session: &str) -> Vec<Value> {
    server
        .events(op)
        .into_iter()
        .filter(|e| e["code"] == "session.rotated" && e["subject"] == session)
        .collect()
}

fn epochs(wires: &[String]) -> Vec<u64> {
    wires
        .iter()
        .map(|w| Envelope::parse(w.as_bytes()).expect("wire").epoch)
        .collect()
}

#[test]
fn nothing_sent_after_a_revocation_opens_with_the_revoked_keys() {
    let (tmp, data) = temp_data_dir();
    let server = start(&data, 10_000);
    let (op, [a, b, c], session) = three_in_a_session(&server, tmp.path());
    send(&server, &c, &session, "C before\n");
    send(&server, &a, &session, "A before\n");
    let v = session_view(&server, &op, &session);
    assert_eq!(
        (v["epoch"].as_i64(), &v["rotation_required_since"]),
        (Some(0), &Value::Null)
    );

    let at = revoke(&server, &op, &c);
    let v = session_view(&server, &op, &session);
    assert_eq!(v["rotation_required_since"].as_i64(), Some(at), "{v}");
    assert_eq!(v["epoch"], 0);

    // A sends: the CLI sees the owed rotation and rotates before sealing anything.
    let (ok, out, err) = session_cli("send", &server, &a, &session, &[], "after 1\nafter 2\n");
    assert!(ok, "send: {err}");
    let wires: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(epochs(&wires), [1, 1], "{out}");
    assert!(err.contains("was revoked; rotating"), "{err}");
    let v = session_view(&server, &op, &session);
    assert_eq!(
        (v["epoch"].as_i64(), &v["rotation_required_since"]),
        (Some(1), &Value::Null)
    );
    // The new epoch's key went to A and B only.
    let rotated = rotations(&server, &op, &session);
    assert_eq!(rotated.len(), 1);
    let mut members: Vec<String> = rotated[0]["data"]["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d.as_str().expect("id").to_string())
        .collect();
    members.sort();
    let mut want = vec![a.id.clone(), b.id.clone()];
    want.sort();
    assert_eq!(members, want);

    // With everything C's keystore holds, nothing sent after the revocation opens.
    let c_dir = DeviceDir::open(&c.dir).expect("C's keystore");
    assert!(c_dir.content_key(&session, 1).expect("keys").is_none());
    let c_keys: Vec<_> = (0..4)
        .filter_map(|e| c_dir.content_key(&session, e).expect("keys"))
        .collect();
    assert_eq!(c_keys.len(), 1, "C holds epoch 0's key only");
    let a_public = DeviceDir::open(&a.dir).expect("A").public_keys();
    for wire in &wires {
        let env = Envelope::parse(wire.as_bytes()).expect("wire");
        for key in &c_keys {
            let got = open(key, &env, &a_public);
            assert_eq!(got.map_err(|e| e.code()), Err("invalid_envelope"));
        }
    }
    // Nor can C ask the host for anything.
    let (ok, _, err) = read(&server, &c, &session, &[]);
    assert!(!ok && err.contains("device_unauthorized"), "{err}");
    // B, a survivor, reads all of it.
    let (ok, out, err) = read(&server, &b, &session, &[&a]);
    assert!(ok, "B reads: {err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["C before", "A before", "after 1", "after 2"]
    );
}

#[test]
fn the_old_epoch_is_refused_after_the_grace_and_a_running_send_rotates_by_itself() {
    let (tmp, data) = temp_data_dir();
    let server = start(&data, GRACE_MS);
    let (op, [a, b, c], session) = three_in_a_session(&server, tmp.path());

    // B's `send` is already running (stdin open) and has sent one line under epoch 0.
    let mut b_send = Command::new(binary())
        .args(["device", "send", "--dir", s(&b.dir), "--url", &server.url])
        .args(["--session", &session])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn send");
    let mut b_in = b_send.stdin.take().expect("stdin");
    b_in.write_all(b"b1\n").expect("write");
    b_in.flush().expect("flush");
    eventually(Duration::from_secs(30), || {
        (envelope_count(&server, &op, &session) == 1).then_some(())
    })
    .expect("b1 accepted");

    let within = craft(&a, &session, 0, 100, now_ms(), "A within the grace");
    let late = craft(&a, &session, 0, 101, now_ms(), "A after the grace");
    let late_batch = [
        craft(&a, &session, 0, 102, now_ms(), "batched 1").to_json(),
        craft(&a, &session, 0, 103, now_ms(), "batched 2").to_json(),
    ];
    let at = revoke(&server, &op, &c);
    // Inside the grace the old epoch is still accepted.
    let (st, v) = post_raw(&server, &session, &within.to_json());
    assert!(
        now_ms() < at + GRACE_MS,
        "the machine is too slow for this test"
    );
    assert_eq!(st, 201, "{v}");

    // After it: refused `rotation_required` (409), single and batch alike; nothing stored.
    std::thread::sleep(Duration::from_millis(
        u64::try_from(at + GRACE_MS + 100 - now_ms()).unwrap_or(0),
    ));
    let stored = envelope_count(&server, &op, &session);
    let (st, v) = post_raw(&server, &session, &late.to_json());
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("rotation_required")),
        "{v}"
    );
    let msg = v["message"].as_str().expect("message");
    assert!(
        msg.contains("rotate") && !msg.contains(&late.to_json()[..40]),
        "{msg}"
    );
    let refs: Vec<&str> = late_batch.iter().map(String::as_str).collect();
    let (st, v) = post_batch(&server, &session, batch_of(&refs));
    assert_eq!((st, v["accepted"].as_i64()), (200, Some(0)), "{v}");
    for r in v["results"].as_array().expect("results") {
        assert_eq!(
            (r["status"].as_i64(), r["code"].as_str()),
            (Some(409), Some("rotation_required")),
            "{v}"
        );
    }
    assert_eq!(envelope_count(&server, &op, &session), stored);
    let view = session_view(&server, &op, &session);
    assert_eq!(view["rotation_required_since"].as_i64(), Some(at), "{view}");
    // B's running send is refused, rotates, and sends the line again under the new epoch.
    b_in.write_all(b"b2\n").expect("write");
    drop(b_in);
    let out = b_send.wait_with_output().expect("wait");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "send: {stderr}");
    let wires: Vec<String> = stdout.lines().map(str::to_string).collect();
    assert_eq!(
        epochs(&wires),
        [0, 0, 1],
        "b1, b2 refused, b2 again: {stdout}"
    );
    let view = session_view(&server, &op, &session);
    assert_eq!(
        (view["epoch"].as_i64(), &view["rotation_required_since"]),
        (Some(1), &Value::Null)
    );
    // Old-epoch envelopes are now `stale_epoch` (superseded), no longer `rotation_required`.
    let older = craft(&a, &session, 0, 104, now_ms(), "A old epoch");
    assert_eq!(
        post_raw(&server, &session, &older.to_json()).1["code"],
        "stale_epoch"
    );
    let (ok, out, err) = read(&server, &a, &session, &[&b]);
    assert!(ok, "A reads: {err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["b1", "A within the grace", "b2"]
    );
    // The refusals are in the audit log, without payload.
    let refusals = server
        .events(&op)
        .into_iter()
        .filter(|e| e["code"] == "envelope.rejected" && e["data"]["code"] == "rotation_required")
        .count();
    assert_eq!(refusals, 4, "late, the batch of two, and B's b2");
}

/// A TCP proxy to `upstream` that holds every client chunk containing `pattern` until
/// released; reports each hold on the returned channel.
struct HoldingProxy {
    url: String,
    held: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

fn holding_proxy(upstream: &str, pattern: &'static [u8]) -> HoldingProxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let addr = upstream.trim_start_matches("http://").to_string();
    let (held_tx, held) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = std::sync::Arc::new(std::sync::Mutex::new(release_rx));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { return };
            let Ok(mut server) = TcpStream::connect(&addr) else {
                return;
            };
            let (mut c2, mut s2) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
            let (held_tx, release_rx) = (held_tx.clone(), release_rx.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if buf[..n].windows(pattern.len()).any(|w| w == pattern) {
                        let _ = held_tx.send(());
                        let _ = release_rx.lock().expect("lock").recv();
                    }
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    HoldingProxy { url, held, release }
}

#[test]
fn two_survivors_rotating_at_once_one_wins_and_the_other_adopts_its_epoch() {
    let (tmp, data) = temp_data_dir();
    let server = start(&data, 10_000);
    let (op, [a, b, c], session) = three_in_a_session(&server, tmp.path());
    revoke(&server, &op, &c);

    // A starts sending through a proxy that holds its rotation request on the wire…
    let proxy = holding_proxy(&server.url, b"/epochs HTTP/1.1");
    let a_send = Command::new(binary())
        .args(["device", "send", "--dir", s(&a.dir), "--url", &proxy.url])
        .args(["--session", &session])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn send");
    proxy
        .held
        .recv_timeout(Duration::from_secs(60))
        .expect("A's rotation reached the proxy");
    // …while B rotates (and sends) first.
    let (ok, out, err) = session_cli("send", &server, &b, &session, &[], "from B\n");
    assert!(ok, "B sends: {err}");
    let b_wires: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(epochs(&b_wires), [1]);
    // A's rotation now reaches the host and loses; A adopts epoch 1 and sends under it.
    proxy.release.send(()).expect("release");
    let mut a_send = a_send;
    a_send
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"from A\n")
        .expect("write");
    let out = a_send.wait_with_output().expect("wait");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "A sends: {stderr}");
    assert!(stderr.contains("rotated by another member"), "{stderr}");
    let a_wires: Vec<String> = stdout.lines().map(str::to_string).collect();
    assert_eq!(epochs(&a_wires), [1]);
    assert_eq!(
        rotations(&server, &op, &session).len(),
        1,
        "one rotation won"
    );
    let view = session_view(&server, &op, &session);
    assert_eq!(
        (view["epoch"].as_i64(), &view["rotation_required_since"]),
        (Some(1), &Value::Null)
    );
    // Each reads the other: A sealed under the winner's key, not its own losing one.
    for (reader, peer) in [(&a, &b), (&b, &a)] {
        let (ok, out, err) = read(&server, reader, &session, &[peer]);
        assert!(ok, "read: {err}");
        assert_eq!(out.lines().collect::<Vec<_>>(), ["from B", "from A"]);
    }
}
