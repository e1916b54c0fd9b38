//! End-to-end: real terminals through the real binary — input, output,
//! resize, interrupt, kill escalation, holder hygiene and child isolation,
//! adoption after `kill -9` of the host with gap-free WebSocket resume, the
//! attach approval gate, and end-to-end backpressure under a 400 MB burst.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use happyx_tests::{Server, call, eventually, json, temp_data_dir};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = "[approvals]\nallow_self_approval = true\n[public]\nsessions = true\n";

fn start(data: &Path) -> Server {
    Server::with_config(data, CONFIG)
}

/// Opens a `shell` PTY (high risk) through the approval flow; returns its JSON.
fn open(server: &Server, requester: &str, op: &str, command: &str) -> Value {
    let body = json!({"recipe": "shell", "args": {"command": command}});
    let (st, p) = server.post_approved("/v1/pty", requester, op, &body);
    assert_eq!(st, 201, "{p}");
    assert_eq!(p["state"], "running", "{p}");
    p
}

fn get(server: &Server, tok: &str, id: &str) -> Value {
    json(server.get(&format!("/v1/pty/{id}"), tok).send())
}

fn transcript(server: &Server, op: &str, id: &str, from: u64) -> Vec<u8> {
    server
        .get(&format!("/v1/pty/{id}/transcript?from={from}"), op)
        .send()
        .expect("send")
        .bytes()
        .expect("bytes")
        .to_vec()
}

fn wait_transcript(server: &Server, op: &str, id: &str, needle: &str) -> String {
    eventually(Duration::from_secs(20), || {
        let t = String::from_utf8_lossy(&transcript(server, op, id, 0)).into_owned();
        t.contains(needle).then_some(t)
    })
    .unwrap_or_else(|| {
        panic!(
            "transcript never showed {needle:?}: {:?}",
            String::from_utf8_lossy(&transcript(server, op, id, 0))
        )
    })
}

fn wait_state(server: &Server, op: &str, id: &str, states: &[&str]) -> Value {
    eventually(Duration::from_secs(20), || {
        let p = get(server, op, id);
        states
            .contains(&p["state"].as_str().unwrap_or(""))
            .then_some(p)
    })
    .unwrap_or_else(|| panic!("pty never reached {states:?}: {}", get(server, op, id)))
}

fn ticket(server: &Server, tok: &str, id: &str, mode: &str) -> String {
    let (st, b) = call(server.post(
        &format!("/v1/pty/{id}/attach"),
        tok,
        &json!({ "mode": mode }),
    ));
    assert_eq!(st, 201, "{b}");
    b["ticket"].as_str().expect("ticket").to_string()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_open(url: &str, id: &str, ticket: &str, offset: u64) -> Ws {
    let url = format!(
        "{}/v1/pty/{id}/ws?ticket={ticket}",
        url.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    let resume = json!({"type": "resume", "offset": offset}).to_string();
    ws.send(Message::Text(resume.into())).await.expect("resume");
    ws
}

/// Output collected from a WebSocket: the raw offset of its first byte and the bytes.
struct Collected {
    start: Option<u64>,
    next: u64,
    bytes: Vec<u8>,
    exit: Option<Value>,
    close: Option<(u16, String)>,
}

/// Reads frames until `done` holds for the collected bytes, the socket closes or `limit` passes.
async fn collect(
    ws: &mut Ws,
    from: u64,
    limit: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Collected {
    let mut c = Collected {
        start: None,
        next: from,
        bytes: Vec::new(),
        exit: None,
        close: None,
    };
    let deadline = tokio::time::Instant::now() + limit;
    while !done(&c.bytes) {
        let m = match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            _ => break,
        };
        match m {
            Message::Binary(b) => {
                assert!(b.len() >= 12, "short output frame");
                let off = u64::from_be_bytes(b[..8].try_into().expect("8"));
                let len = u32::from_be_bytes(b[8..12].try_into().expect("4")) as u64;
                assert_eq!(off, c.next, "gap or duplicate in the live stream");
                c.start.get_or_insert(off);
                c.next = off + len;
                c.bytes.extend_from_slice(&b[12..]);
            }
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("json frame");
                if v["type"] == "exit" {
                    c.exit = Some(v);
                }
            }
            Message::Close(f) => {
                c.close = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                break;
            }
            _ => {}
        }
    }
    c
}

async fn input(ws: &mut Ws, s: &str) {
    let m = json!({"type": "input", "data": s}).to_string();
    ws.send(Message::Text(m.into())).await.expect("input");
}

fn contains(hay: &[u8], needle: &str) -> bool {
    String::from_utf8_lossy(hay).contains(needle)
}

fn events(server: &Server, op: &str, id: &str) -> Vec<String> {
    server
        .events(op)
        .into_iter()
        .filter(|e| e["subject"] == id)
        .filter_map(|e| e["code"].as_str().map(String::from))
        .collect()
}

fn holder_pid(child_pid: i64) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{child_pid}/stat")).expect("child alive");
    let after = stat.rsplit_once(')').expect("stat").1;
    after
        .split_whitespace()
        .nth(1)
        .expect("ppid")
        .parse()
        .expect("int")
}

fn status_kib(pid: i64, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn input_output_resize_interrupt_and_kill() {
    let (_tmp, data) = temp_data_dir();
    let server = start(&data);
    let op = server.token("operator");
    let p = open(&server, &op, &op, "exec bash --norc --noprofile");
    let id = p["id"].as_str().expect("id").to_string();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let t = ticket(&server, &op, &id, "drive");
    let mut ws = rt.block_on(ws_open(&server.url, &id, &t, 0));
    rt.block_on(input(&mut ws, "stty size; echo sum-$((40+2))\r"));
    let c = rt.block_on(collect(&mut ws, 0, Duration::from_secs(20), |b| {
        contains(b, "sum-42")
    }));
    assert!(
        contains(&c.bytes, "24 80"),
        "{:?}",
        String::from_utf8_lossy(&c.bytes)
    );

    let (st, b) = call(server.post(
        &format!("/v1/pty/{id}/resize"),
        &op,
        &json!({"rows": 40, "cols": 100}),
    ));
    assert_eq!(
        (st, b["rows"].as_i64(), b["cols"].as_i64()),
        (200, Some(40), Some(100)),
        "{b}"
    );
    rt.block_on(input(&mut ws, "stty size\r"));
    let c2 = rt.block_on(collect(&mut ws, c.next, Duration::from_secs(20), |b| {
        contains(b, "40 100")
    }));
    assert!(
        contains(&c2.bytes, "40 100"),
        "{:?}",
        String::from_utf8_lossy(&c2.bytes)
    );

    // Interrupt a sleep: the shell comes back and runs the next command.
    rt.block_on(input(&mut ws, "sleep 1000\r"));
    std::thread::sleep(Duration::from_millis(500));
    let (st, b) = call(server.post(&format!("/v1/pty/{id}/interrupt"), &op, &json!({})));
    assert_eq!(st, 200, "{b}");
    rt.block_on(input(&mut ws, "echo back-$((1+1))\r"));
    let c3 = rt.block_on(collect(&mut ws, c2.next, Duration::from_secs(20), |b| {
        contains(b, "back-2\r\n")
    }));
    assert!(
        contains(&c3.bytes, "back-2\r\n"),
        "{:?}",
        String::from_utf8_lossy(&c3.bytes)
    );

    // Exit with a status.
    rt.block_on(input(&mut ws, "exit 7\r"));
    let end = rt.block_on(collect(&mut ws, c3.next, Duration::from_secs(20), |_| {
        false
    }));
    assert_eq!(
        end.exit.as_ref().map(|e| e["exit_code"].clone()),
        Some(json!(7)),
        "{:?}",
        end.exit
    );
    assert_eq!(end.close.as_ref().map(|c| c.0), Some(1000));
    let done = wait_state(&server, &op, &id, &["exited"]);
    assert_eq!(done["exit_code"], 7);
    // The live stream and the stored transcript are the same bytes.
    let all: Vec<u8> = [c.bytes, c2.bytes, c3.bytes, end.bytes].concat();
    assert_eq!(all, transcript(&server, &op, &id, 0));

    // Kill a program that ignores SIGHUP: SIGKILL after the grace.
    let p = open(
        &server,
        &op,
        &op,
        "trap '' HUP; echo ready; sleep 1000; echo survived",
    );
    let kid = p["id"].as_str().expect("id").to_string();
    wait_transcript(&server, &op, &kid, "ready");
    let t0 = Instant::now();
    let (st, b) = call(server.post(&format!("/v1/pty/{kid}/kill"), &op, &json!({})));
    assert_eq!(st, 200, "{b}");
    let k = wait_state(&server, &op, &kid, &["killed"]);
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "SIGKILL came before the grace"
    );
    assert!(
        k["exit_signal"].as_i64().is_some() || k["exit_code"].as_i64().is_some(),
        "{k}"
    );
    assert!(!contains(&transcript(&server, &op, &kid, 0), "survived"));
    let (st, b) = call(server.post(&format!("/v1/pty/{kid}/kill"), &op, &json!({})));
    assert_eq!(
        (st, b["code"].as_str()),
        (409, Some("pty_not_running")),
        "{b}"
    );

    let ev = events(&server, &op, &id);
    for code in [
        "pty.created",
        "pty.spawn",
        "pty.attach",
        "pty.resize",
        "pty.interrupt",
        "pty.exit",
    ] {
        assert!(ev.iter().any(|e| e == code), "missing {code} in {ev:?}");
    }
    let kev = events(&server, &op, &kid);
    assert!(
        kev.iter().any(|e| e == "pty.kill") && kev.iter().any(|e| e == "pty.exit"),
        "{kev:?}"
    );
}

/// Input messages of 64 KiB [`flood_input`] sends (20 MiB): more than the holder queues (256)
/// plus what the terminal and the sockets buffer.
const FLOOD_MESSAGES: u64 = 320;

/// Drives terminal `id` and sends it [`FLOOD_MESSAGES`] of input at once; returns the bytes the
/// first `input_dropped` notice reports (0 when none came within 60 s).
fn flood_input(server: &Server, op: &str, id: &str) -> u64 {
    let t = ticket(server, op, id, "drive");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let mut ws = ws_open(&server.url, id, &t, 0).await;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..FLOOD_MESSAGES {
            ws.send(Message::Binary(chunk.clone().into()))
                .await
                .expect("input");
        }
        let mut dropped = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while dropped == 0 {
            let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await else {
                break;
            };
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).expect("json frame");
                if v["code"] == "input_dropped" {
                    dropped += v["bytes"].as_u64().expect("bytes");
                }
            }
        }
        dropped
    })
}

#[test]
fn input_a_program_does_not_read_is_dropped_and_the_driver_told() {
    let (_tmp, data) = temp_data_dir();
    let server = start(&data);
    let op = server.token("operator");
    let p = open(&server, &op, &op, "stty raw -echo; echo ready; sleep 1000");
    let id = p["id"].as_str().expect("id").to_string();
    wait_transcript(&server, &op, &id, "ready");
    let dropped = flood_input(&server, &op, &id);
    assert!(dropped > 0, "the driver was not told of dropped input");
    assert!(dropped <= FLOOD_MESSAGES * 64 * 1024, "{dropped}");
    assert_eq!(dropped % (64 * 1024), 0, "whole messages are dropped");
    // Control frames still reach the holder of a program that does not read.
    let (st, b) = call(server.post(&format!("/v1/pty/{id}/kill"), &op, &json!({})));
    assert_eq!(st, 200, "{b}");
    wait_state(&server, &op, &id, &["killed", "exited"]);
    let ev = events(&server, &op, &id);
    assert!(ev.iter().any(|e| e == "pty.input_dropped"), "{ev:?}");
}

/// Input dropped while the program streams output: the drop is recorded while transcript
/// batches are being stored (one writer), and neither waits for the other — the transcript
/// keeps growing, the driver is told, and a kill still lands.
#[test]
fn input_dropped_while_output_streams_is_recorded_and_capture_goes_on() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(
        &data,
        format!("{CONFIG}[pty]\nmax_transcript_bytes = 4000000000\n"),
    );
    let op = server.token("operator");
    let p = open(
        &server,
        &op,
        &op,
        "stty raw -echo; echo ready; yes 'output while input is dropped' | head -c 4000000000",
    );
    let id = p["id"].as_str().expect("id").to_string();
    wait_transcript(&server, &op, &id, "ready");
    let dropped = flood_input(&server, &op, &id);
    assert!(dropped > 0, "the driver was not told of dropped input");
    let stored = |server: &Server| get(server, &op, &id)["output_bytes"].as_u64().unwrap_or(0);
    let before = stored(&server);
    let grew = eventually(Duration::from_secs(30), || {
        (stored(&server) >= before + 8 * 1024 * 1024).then_some(())
    });
    assert!(
        grew.is_some(),
        "the transcript stopped at {} bytes after input was dropped",
        stored(&server)
    );
    let (st, b) = call(server.post(&format!("/v1/pty/{id}/kill"), &op, &json!({})));
    assert_eq!(st, 200, "{b}");
    wait_state(&server, &op, &id, &["killed", "exited"]);
    let ev = events(&server, &op, &id);
    assert!(ev.iter().any(|e| e == "pty.input_dropped"), "{ev:?}");
}

#[test]
fn holder_hygiene_and_child_isolation() {
    let (_tmp, data) = temp_data_dir();
    let server = start(&data);
    let op = server.token("operator");
    let a = open(&server, &op, &op, "exec sleep 1000");
    let child = a["pid"].as_i64().expect("pid");
    let holder = holder_pid(child);
    // Holder descriptors: stdio on /dev/null, the PTY master, its sockets; nothing else.
    let mut seen = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{holder}/fd")).expect("fd dir") {
        let e = e.expect("entry");
        let target = std::fs::read_link(e.path()).expect("link");
        let fd: i32 = e.file_name().to_string_lossy().parse().expect("fd");
        let t = target.to_string_lossy().into_owned();
        if fd <= 2 {
            assert_eq!(t, "/dev/null", "fd {fd}");
        } else {
            assert!(
                t == "/dev/ptmx" || t.starts_with("socket:"),
                "fd {fd} -> {t}"
            );
        }
        seen.push((fd, t));
    }
    assert!(
        !seen
            .iter()
            .any(|(_, t)| t.contains("happyx.db") || t.contains("lock")),
        "{seen:?}"
    );
    // The holder is in its own session, not the host's.
    let sid = |pid: i64| -> String {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        stat.rsplit_once(')')
            .expect("stat")
            .1
            .split_whitespace()
            .nth(3)
            .expect("sid")
            .to_string()
    };
    assert_ne!(sid(holder), sid(i64::from(server.pid())));

    let sockets: Vec<_> = std::fs::read_dir(data.join("pty"))
        .expect("pty dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    assert_eq!(sockets.len(), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sockets[0])
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let sock = sockets[0].display().to_string();
    let d = data.display().to_string();
    let script = format!(
        "id -u; ls {d} >/dev/null 2>&1 && echo LISTED; cat {d}/happyx.db >/dev/null 2>&1 && echo READDB; \
         cat {d}/pty/holder.key >/dev/null 2>&1 && echo READKEY; \
         perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Peer => shift) and print qq(CONNECTED\\n)' {sock}; \
         env; echo done-$((2+3))"
    );
    let b = open(&server, &op, &op, &script);
    let bid = b["id"].as_str().expect("id");
    let out = wait_transcript(&server, &op, bid, "done-5");
    if nix::unistd::geteuid().is_root() {
        assert!(!out.starts_with("0\r\n"), "the child ran as root: {out}");
        for bad in ["LISTED", "READDB", "READKEY", "CONNECTED"] {
            assert!(!out.contains(bad), "the child could {bad}: {out}");
        }
    }
    assert!(
        !out.contains("HAPPYX") && !out.contains("CARGO"),
        "host env leaked: {out}"
    );
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, a)| !a.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// A holder outlives its host on purpose (adoption), but once its data dir is gone no host
/// can ever reach it again: it ends its program and exits instead of running forever.
#[test]
fn a_holder_whose_data_dir_is_gone_ends_its_program_and_exits() {
    let (tmp, data) = temp_data_dir();
    let mut server = start(&data);
    let op = server.token("operator");
    let p = open(&server, &op, &op, "sleep 600");
    let pid = p["pid"].as_i64().expect("pid");
    let holder = holder_pid(pid);
    server.kill9();
    // While its socket is in place, the holder waits for a host to adopt it.
    std::thread::sleep(Duration::from_secs(3));
    assert!(alive(holder) && alive(pid), "gave up while still reachable");
    drop(tmp);
    let gone = eventually(Duration::from_secs(20), || {
        (!alive(holder) && !alive(pid)).then_some(())
    });
    assert!(
        gone.is_some(),
        "holder {holder} or program {pid} still running after its data dir was removed"
    );
}

#[test]
fn restart_adopts_the_same_child_and_resumes_without_gap_or_duplicate() {
    let (_tmp, data) = temp_data_dir();
    let mut server = start(&data);
    let op = server.token("operator");
    let n = 1500;
    let p = open(
        &server,
        &op,
        &op,
        &format!(
            "i=0; while [ $i -lt {n} ]; do echo c$i; i=$((i+1)); sleep 0.004; done; echo counted"
        ),
    );
    let id = p["id"].as_str().expect("id").to_string();
    let pid = p["pid"].as_i64().expect("pid");
    let holder = holder_pid(pid);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let t = ticket(&server, &op, &id, "observe");
    let mut ws = rt.block_on(ws_open(&server.url, &id, &t, 0));
    let first = rt.block_on(collect(&mut ws, 0, Duration::from_secs(20), |b| {
        contains(b, "c200\r\n")
    }));
    assert_eq!(first.start, Some(0));
    drop(ws);
    server.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        Path::new(&format!("/proc/{holder}")).exists(),
        "the holder died with the host"
    );
    let server = start(&data);
    let again = get(&server, &op, &id);
    assert_eq!(again["pid"].as_i64(), Some(pid), "{again}");
    assert_eq!(again["state"], "running", "{again}");
    assert_eq!(holder_pid(pid), holder, "a different holder");
    let t = ticket(&server, &op, &id, "observe");
    let mut ws = rt.block_on(ws_open(&server.url, &id, &t, first.next));
    let rest = rt.block_on(collect(&mut ws, first.next, Duration::from_secs(60), |b| {
        contains(b, "counted")
    }));
    assert_eq!(
        rest.start,
        Some(first.next),
        "resume did not start at the last offset"
    );
    wait_state(&server, &op, &id, &["exited"]);
    let whole = transcript(&server, &op, &id, 0);
    let mut joined = first.bytes.clone();
    joined.extend_from_slice(&rest.bytes);
    assert_eq!(
        joined,
        whole[..joined.len()],
        "WebSocket bytes differ from the transcript"
    );
    let text = String::from_utf8_lossy(&whole);
    let nums: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with('c') && *l != "counted")
        .collect();
    for (i, l) in nums.iter().enumerate() {
        assert_eq!(*l, format!("c{i}"), "line {i}");
    }
    assert_eq!(nums.len(), n, "every counter value exactly once");
    assert_eq!(transcript(&server, &op, &id, first.next), rest.bytes[..]);
    let ev = events(&server, &op, &id);
    assert!(ev.iter().any(|e| e == "pty.adopt"), "{ev:?}");
    // The holder left after the host took everything.
    assert!(
        eventually(Duration::from_secs(10), || (!Path::new(&format!(
            "/proc/{holder}/fd"
        ))
        .exists())
        .then_some(()))
        .is_some(),
        "the holder did not exit after its session was finalized"
    );
}

#[test]
fn attach_to_a_high_risk_pty_needs_an_approval_bound_to_pty_and_mode() {
    let (_tmp, data) = temp_data_dir();
    let server = start(&data);
    let op = server.token("operator");
    let agent = server.token("agent");
    let a = open(&server, &agent, &op, "exec sleep 1000");
    let b = open(&server, &agent, &op, "exec sleep 1000");
    let (aid, bid) = (a["id"].as_str().expect("id"), b["id"].as_str().expect("id"));
    let attach = |id: &str, mode: &str, tok: Option<&str>| {
        let mut body = json!({ "mode": mode });
        if let Some(t) = tok {
            body["approval_token"] = json!(t);
        }
        call(server.post(&format!("/v1/pty/{id}/attach"), &agent, &body))
    };
    let (st, r) = attach(aid, "drive", None);
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("approval_required")),
        "{r}"
    );
    let approval = r["approval_id"].as_str().expect("id").to_string();
    let tok = r["approval_token"].as_str().expect("token").to_string();
    let (st, r) = attach(aid, "drive", Some(&tok));
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("approval_pending")),
        "{r}"
    );
    let (st, _) = call(server.post(
        &format!("/v1/approvals/{approval}/approve"),
        &op,
        &json!({}),
    ));
    assert_eq!(st, 200);
    // Not for another PTY, not for another mode.
    let (st, r) = attach(bid, "drive", Some(&tok));
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("approval_invalid")),
        "{r}"
    );
    let (st, r) = attach(aid, "observe", Some(&tok));
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("approval_invalid")),
        "{r}"
    );
    let (st, r) = attach(aid, "drive", Some(&tok));
    assert_eq!(st, 201, "{r}");
    let t = r["ticket"].as_str().expect("ticket").to_string();
    assert!(t.starts_with("hpx_"));
    let (st, r) = attach(aid, "drive", Some(&tok));
    assert_eq!(
        (st, r["code"].as_str()),
        (403, Some("approval_invalid")),
        "used twice: {r}"
    );
    // The ticket is single use.
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let mut ws = rt.block_on(ws_open(&server.url, aid, &t, 0));
    let _ = rt.block_on(collect(&mut ws, 0, Duration::from_millis(300), |_| false));
    let url = format!(
        "{}/v1/pty/{aid}/ws?ticket={t}",
        server.url.replace("http://", "ws://")
    );
    assert!(
        rt.block_on(tokio_tungstenite::connect_async(url)).is_err(),
        "a ticket worked twice"
    );
    // An operator attaches without an approval; a viewer may only observe.
    let (st, r) = call(server.post(
        &format!("/v1/pty/{aid}/attach"),
        &op,
        &json!({"mode": "drive"}),
    ));
    assert_eq!(st, 201, "{r}");
    let viewer = server.token("viewer");
    let (st, _) = call(server.post(
        &format!("/v1/pty/{aid}/attach"),
        &viewer,
        &json!({"mode": "drive"}),
    ));
    assert_eq!(st, 403);
    for id in [aid, bid] {
        let _ = call(server.post(&format!("/v1/pty/{id}/kill"), &op, &json!({})));
    }
}

#[test]

fn planted_secrets_are_masked_in_every_non_private_view() {
    let (_tmp, data) = temp_data_dir();
    let server = start(&data);
    let op = server.token("operator");
    let secret = "AKIAIOSFODNN7EXAMPLE";
    let p = open(
        &server,
        &op,
        &op,
        &format!("echo key={secret}; echo end-$((1+1))"),
    );
    let id = p["id"].as_str().expect("id").to_string();
    let t = wait_transcript(&server, &op, &id, "end-2");
    assert!(!t.contains(secret), "transcript shows the secret: {t}");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let tk = ticket(&server, &op, &id, "observe");
    let mut ws = rt.block_on(ws_open(&server.url, &id, &tk, 0));
    let c = rt.block_on(collect(&mut ws, 0, Duration::from_secs(10), |b| {
        contains(b, "end-2")
    }));
    assert!(!contains(&c.bytes, secret), "live view shows the secret");
    for e in server.events(&op) {
        assert!(!e.to_string().contains(secret));
    }
    // The public view of the terminal: transcript metadata with the finding counted, no output.
    let (st, v) = call(happyx_tests::client().get(format!("{}/public/sessions/{id}", server.url)));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["kind"], "pty");
    assert!(v["transcript"]["findings"].as_i64() >= Some(1), "{v}");
    assert!(v["transcript"]["bytes"].as_i64() > Some(0), "{v}");
    assert_eq!(v["transcript"]["redaction"], "ok");
    assert!(!v.to_string().contains("end-2") && !v.to_string().contains(secret));
}

#[test]
fn backpressure_keeps_memory_bounded_and_bytes_exact() {
    let total: u64 = std::env::var("PTY_STREAM_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000_000);
    let (tmp, data) = temp_data_dir();
    // The whole stream is stored: a cap of exactly its size (at the edge: not truncated).
    let server = Server::with_config(
        &data,
        format!("{CONFIG}[pty]\nmax_transcript_bytes = {total}\n"),
    );
    let op = server.token("operator");
    let cmd = format!(
        "stty raw -echo; {{ head -c {total} /dev/urandom | tee /dev/fd/3 | sha256sum > emitted.sha256; }} 3>&1; sleep 1"
    );
    let t0 = Instant::now();
    let p = open(&server, &op, &op, &cmd);
    let id = p["id"].as_str().expect("id").to_string();
    let holder = holder_pid(p["pid"].as_i64().expect("pid"));
    let host = i64::from(server.pid());
    // Stall the consumer: stop the host for a while mid-stream.
    std::thread::sleep(Duration::from_secs(2));
    let stopped = get(&server, &op, &id)["output_bytes"].as_i64().unwrap_or(0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("stop");
    std::thread::sleep(Duration::from_secs(5));
    let holder_rss_stalled = status_kib(holder, "VmRSS");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .expect("cont");
    let mut holder_hwm = 0;
    let done = eventually(Duration::from_secs(900), || {
        holder_hwm = holder_hwm.max(status_kib(holder, "VmHWM"));
        let p = get(&server, &op, &id);
        (p["state"] == "exited").then_some(p)
    })
    .expect("the stream finished");
    let elapsed = t0.elapsed();
    let host_hwm = status_kib(host, "VmHWM");
    let host_rss = status_kib(host, "VmRSS");
    assert_eq!(done["output_bytes"].as_i64(), Some(total as i64), "{done}");
    assert_eq!(done["truncated"], false, "{done}");
    // Transcript byte for byte: sha256 of the stored stream vs what the program emitted.
    let mut resp = server
        .get(&format!("/v1/pty/{id}/transcript"), &op)
        .send()
        .expect("transcript");
    let mut sum = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    let n = std::io::copy(&mut resp, sum.stdin.as_mut().expect("stdin")).expect("copy");
    drop(sum.stdin.take());
    let out = sum.wait_with_output().expect("sha256sum output");
    let got = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let workspace = happyx_tests::workspace_of(&tmp.path().join("happyx-workspace"), &op);
    let emitted = std::fs::read_to_string(workspace.join("emitted.sha256")).expect("sum file");
    let emitted = emitted.split_whitespace().next().expect("sum");
    eprintln!(
        "backpressure: {total} bytes in {elapsed:?} ({:.1} MB/s incl. a 5 s stall); persisted when stopped: {stopped}; \
         host VmHWM {host_hwm} KiB VmRSS {host_rss} KiB; holder VmHWM {holder_hwm} KiB, VmRSS while stalled {holder_rss_stalled} KiB",
        total as f64 / elapsed.as_secs_f64() / 1e6
    );
    assert_eq!(n, total);
    assert_eq!(
        got, emitted,
        "the transcript differs from what the program emitted"
    );
    // Most of the holder's peak is the debug binary's own pages (it is `happyx pty-holder`);
    // a holder that kept the 400 MB stream would be far past this.
    assert!(holder_hwm < 48 * 1024, "holder RSS {holder_hwm} KiB");
    // This host's peak includes compiling the three plugins at its first start
    // (Cranelift's scratch memory; the binary is a debug build); the point here
    // is that it does not grow with the 400 MB stream. The steady-state figure
    // (< 64 MiB, release) is `capture_throughput_against_a_raw_pty_read`'s.
    assert!(host_hwm < 192 * 1024, "host RSS {host_hwm} KiB");
}

/// Reads everything `sh -c cmd` prints under a fresh PTY, as fast as it comes, counting bytes:
/// the baseline a capturing host is compared with. Returns (elapsed, bytes).
fn raw_pty_read(cmd: &str, dir: &Path) -> (Duration, u64) {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    use std::io::Read as _;
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("openpty");
    let mut c = CommandBuilder::new("/bin/sh");
    c.arg("-c");
    c.arg(cmd);
    c.cwd(dir);
    let t0 = Instant::now();
    let mut child = pair.slave.spawn_command(c).expect("spawn under a pty");
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().expect("reader");
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    // EOF, or EIO once the last process holding the slave is gone.
    while let Ok(k) = reader.read(&mut buf) {
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    let _ = child.wait();
    (t0.elapsed(), n)
}

/// SHA-256 (hex) of what `sh -c cmd` prints to a pipe.
fn sha256_of_output(cmd: &str) -> String {
    use sha2::{Digest as _, Sha256};
    use std::io::Read as _;
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", cmd])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    let mut out = child.stdout.take().expect("stdout");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(k) = out.read(&mut buf) {
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    let _ = child.wait();
    hex::encode(h.finalize())
}

/// The capture throughput figure: the same stream read raw from a PTY by this process, then
/// captured by the host (PTY read → holder → host → redaction → persisted chunks), alternating
/// over [`CAPTURE_ROUNDS`] rounds in the same run (a raw read on this machine varies by half
/// from one run to the next, so one pair says little); each transcript byte-exact; the host's
/// RSS sampled while it streams. A load command (the figure only means something in release),
/// not part of the default suite:
///
/// ```text
/// cargo test --release --workspace --test e2e pty::capture_throughput -- --ignored --nocapture
/// ```
#[test]
#[ignore = "load measurement; run by hand, in release"]
fn capture_throughput_against_a_raw_pty_read() {
    let total: u64 = std::env::var("PTY_STREAM_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000_000);
    let generator = format!(
        "yes 'HappyX transcript capture: build ok, 1287 tests passed in 41.2s (src/lib.rs:42)' | head -c {total}"
    );
    let cmd = format!("stty raw -echo; {generator}");
    let expected = sha256_of_output(&generator);
    let (tmp, data) = temp_data_dir();

    // A host as it runs between plugin changes: its plugins come from the compile cache the
    // first start wrote (compiling leaves ~30 MiB of allocator arenas behind). Each stream is
    // stored whole: a transcript cap of exactly its size (the default, 64 MiB, would
    // truncate it).
    let config = format!("{CONFIG}[pty]\nmax_transcript_bytes = {total}\n");
    let mut first = Server::with_config(&data, &config);
    first
        .sigterm(Duration::from_secs(30))
        .expect("first start stops");
    let server = Server::with_config(&data, &config);
    let op = server.token("operator");
    let host = i64::from(server.pid());
    let rss_before = status_kib(host, "VmRSS");
    // Most RSS a round's streaming added to what the host held when it began.
    let mut growth = 0;
    let mbps = |d: Duration| total as f64 / d.as_secs_f64() / 1e6;
    let mut rss_max = 0;
    // Anonymous memory: what the host allocated, without the mapped binary and libraries.
    let mut anon_max = 0;
    let mut ratios = Vec::new();
    for round in 1..=CAPTURE_ROUNDS {
        let round_start = status_kib(host, "VmRSS");
        let mut round_max = 0;
        let mut round_anon = 0;
        let (raw, raw_bytes) = raw_pty_read(&cmd, tmp.path());
        assert_eq!(raw_bytes, total, "a raw PTY passes every byte");
        let t0 = Instant::now();
        let p = open(&server, &op, &op, &cmd);
        let id = p["id"].as_str().expect("id").to_string();
        let done = eventually(Duration::from_secs(900), || {
            round_max = round_max.max(status_kib(host, "VmRSS"));
            round_anon = round_anon.max(status_kib(host, "RssAnon"));
            let p = get(&server, &op, &id);
            (p["state"] == "exited" && p["output_bytes"].as_u64() == Some(total)).then_some(p)
        })
        .expect("the stream finished");
        let captured = t0.elapsed();
        assert_eq!(done["output_bytes"].as_u64(), Some(total), "{done}");
        let mut resp = server
            .get(&format!("/v1/pty/{id}/transcript"), &op)
            .send()
            .expect("transcript");
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        loop {
            let k = std::io::Read::read(&mut resp, &mut buf).expect("read transcript");
            if k == 0 {
                break;
            }
            sha2::Digest::update(&mut h, &buf[..k]);
            n += k as u64;
        }
        assert_eq!(n, total);
        assert_eq!(
            hex::encode(sha2::Digest::finalize(h)),
            expected,
            "the transcript is not byte-exact"
        );
        let ratio = raw.as_secs_f64() / captured.as_secs_f64();
        ratios.push(ratio);
        rss_max = rss_max.max(round_max);
        anon_max = anon_max.max(round_anon);
        growth = growth.max(round_max.saturating_sub(round_start));
        println!(
            "pty capture round {round}: {total} bytes; raw PTY read {:.1} MB/s; captured {:.1} MB/s; \
             ratio {ratio:.2}; host VmRSS at most {round_max} KiB while streaming (anonymous \
             {round_anon} KiB), {} KiB after",
            mbps(raw),
            mbps(captured),
            status_kib(host, "VmRSS"),
        );
    }
    ratios.sort_by(f64::total_cmp);
    let host_hwm = status_kib(host, "VmHWM");
    println!(
        "pty capture: median ratio {:.2} of {CAPTURE_ROUNDS} rounds; host VmRSS {rss_before} KiB \
         before, at most {rss_max} KiB while streaming (at most {growth} KiB more than when its \
         round began), of it anonymous at most {anon_max} KiB; VmHWM {host_hwm} KiB",
        ratios[ratios.len() / 2],
    );
    // What streaming may add to the host: its share of the holder's ring and the batch being
    // stored (1 MiB each, with their masked copies), live-viewer buffers and SQLite's cache.
    // (The idle figure itself is mostly the mapped binary and plugin code; reading a whole
    // transcript back leaves its own buffers in the allocator, hence per round.)
    assert!(
        growth < 16 * 1024,
        "host RSS grew by {growth} KiB while a round streamed"
    );
}

/// Alternating raw and captured streams of [`capture_throughput_against_a_raw_pty_read`].
const CAPTURE_ROUNDS: usize = 3;

/// A secret split across two writes with a pause between them (so across two transcript
/// chunks): the newest chunk's overlap window is held back from live viewers until the next
/// chunk re-masks it, so a live viewer's stream equals the stored transcript and shows no
/// fragment of the secret. A single keystroke's echo (nothing follows it) is still released
/// once the hold passes.
#[test]
fn live_viewers_and_the_stored_transcript_mask_a_split_secret_the_same() {
    let (_tmp, data) = temp_data_dir();
    let server = start(&data);
    let op = server.token("operator");
    let p = open(
        &server,
        &op,
        &op,
        "read x; printf 'key=AKIAIOSF'; sleep 0.025; printf 'ODNN7EXAMPLE\\n'; echo done-$((1+1)); read y; echo bye-$((2+1))",
    );
    let id = p["id"].as_str().expect("id").to_string();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let tk = ticket(&server, &op, &id, "drive");
    let mut ws = rt.block_on(ws_open(&server.url, &id, &tk, 0));
    // A keystroke: the terminal echoes it, and nothing follows it.
    let sent = Instant::now();
    rt.block_on(input(&mut ws, "z"));
    let echo = rt.block_on(collect(&mut ws, 0, Duration::from_secs(5), |b| {
        contains(b, "z")
    }));
    assert!(
        contains(&echo.bytes, "z"),
        "the echo of a keystroke is held back for good"
    );
    eprintln!("keystroke echo after {:?}", sent.elapsed());
    rt.block_on(input(&mut ws, "\n"));
    let mut rest = rt.block_on(collect(&mut ws, echo.next, Duration::from_secs(20), |b| {
        contains(b, "done-2")
    }));
    assert!(
        contains(&rest.bytes, "done-2"),
        "{:?}",
        String::from_utf8_lossy(&rest.bytes)
    );
    rt.block_on(input(&mut ws, "q\n"));
    let end = rt.block_on(collect(&mut ws, rest.next, Duration::from_secs(20), |b| {
        contains(b, "bye-3")
    }));
    rest.bytes.extend_from_slice(&end.bytes);
    let mut live = echo.bytes;
    live.extend_from_slice(&rest.bytes);
    wait_state(&server, &op, &id, &["exited"]);
    let stored = transcript(&server, &op, &id, 0);
    let text = String::from_utf8_lossy(&live).into_owned();
    for fragment in ["AKIA", "IOSF", "ODNN", "EXAMPLE"] {
        assert!(
            !text.contains(fragment),
            "live view shows {fragment}: {text:?}"
        );
    }
    assert!(contains(&stored, "bye-3"));
    assert_eq!(
        text,
        String::from_utf8_lossy(&stored),
        "the live stream and the stored transcript differ"
    );
}

/// `[pty] max_transcript_bytes`: a terminal streaming past it keeps running and its live
/// viewer sees every byte, but exactly the first `CAP` bytes are stored (byte for byte what
/// the viewer saw), the terminal is marked `truncated` everywhere it is shown, and one event
/// says so.
#[test]
fn the_transcript_cap_holds_while_a_terminal_streams() {
    const CAP: usize = 100_000;
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(
        &data,
        format!("{CONFIG}[pty]\nmax_transcript_bytes = {CAP}\n"),
    );
    let op = server.token("operator");
    // Waits for a line, so the viewer is attached before the output starts.
    let p = open(
        &server,
        &op,
        &op,
        "read go; seq 1 60000; echo stream-done; sleep 120",
    );
    let id = p["id"].as_str().expect("id").to_string();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let t = ticket(&server, &op, &id, "drive");
    let mut ws = rt.block_on(ws_open(&server.url, &id, &t, 0));
    rt.block_on(input(&mut ws, "go\r"));
    let c = rt.block_on(collect(&mut ws, 0, Duration::from_secs(30), |b| {
        contains(b, "stream-done")
    }));
    assert_eq!(c.start, Some(0));
    assert!(
        contains(&c.bytes, "59999\r\n60000\r\nstream-done"),
        "the viewer saw it all"
    );
    assert!(c.bytes.len() > 3 * CAP, "{} bytes", c.bytes.len());

    let p = eventually(Duration::from_secs(10), || {
        let p = get(&server, &op, &id);
        (p["truncated"] == true).then_some(p)
    })
    .unwrap_or_else(|| panic!("never marked truncated: {}", get(&server, &op, &id)));
    assert_eq!(p["state"], "running", "the terminal keeps running: {p}");
    let stored = transcript(&server, &op, &id, 0);
    assert_eq!(stored.len(), CAP, "exactly the cap is stored");
    assert!(
        stored == c.bytes[..CAP],
        "the stored transcript is the exact prefix"
    );
    assert!(transcript(&server, &op, &id, CAP as u64).is_empty());

    // More output after the cap: still live, still not stored, still one event.
    rt.block_on(input(&mut ws, "more\r"));
    let more = rt.block_on(collect(&mut ws, c.next, Duration::from_secs(10), |b| {
        contains(b, "more")
    }));
    assert!(contains(&more.bytes, "more"), "the echo reaches the viewer");
    assert_eq!(transcript(&server, &op, &id, 0).len(), CAP);
    let truncs = events(&server, &op, &id)
        .into_iter()
        .filter(|c| c == "pty.transcript_truncated")
        .count();
    assert_eq!(truncs, 1, "one event");

    // The public view and `happyx pty ls` say so too.
    let (st, v) = call(happyx_tests::client().get(format!("{}/public/sessions/{id}", server.url)));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["transcript"]["truncated"], true, "{v}");
    let (st, out, err) = happyx_tests::cli_env(
        &["pty", "ls"],
        &[("HAPPYX_URL", server.url.as_str()), ("HAPPYX_TOKEN", &op)],
    );
    assert!(st.success(), "{err}");
    let line = out.lines().find(|l| l.contains(&id)).expect("listed");
    assert!(line.contains("(truncated)"), "{out}");
    let (st, _) = call(server.post(&format!("/v1/pty/{id}/kill"), &op, &json!({})));
    assert!(st < 300, "kill");
}
