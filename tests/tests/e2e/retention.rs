//! End-to-end: the retention pass over every kind of stored data with the real binary and
//! the built-in sample policy configured through its settings — run output, transcript
//! chunks, envelopes, events and leftovers (used approvals' tokens, used enrollment codes,
//! spent attach tickets) pruned exactly as the policy says, a keep-everything policy keeping
//! everything, and `kill -9` of `happyx prune` mid-pass: the rerun reaches the policy's end
//! state and every deletion has its per-batch audit event.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use happyx_tests::{Server, binary, call, cli, eventually, json, temp_data_dir};
use serde_json::{Value, json};

use super::envelopes::{enroll, open_session, send};

const KINDS: [&str; 5] = [
    "run-output",
    "transcript-chunk",
    "envelope",
    "event",
    "leftover",
];

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// One integer from `sqlite3 DB SQL` (the real command-line shell, reading beside the host),
/// or from the data dir's PostgreSQL database when the suites run there.
fn count(data: &Path, sql: &str) -> i64 {
    if happyx_tests::on_postgres() {
        return happyx_tests::count(data, sql);
    }
    let text = happyx_tests::sqlite3(data, sql);
    let text = text.trim();
    if text.is_empty() {
        return 0;
    }
    text.parse()
        .unwrap_or_else(|_| panic!("not an integer: {text:?}"))
}

/// What is stored, per table (and the approvals that still hold a token).
fn stored(data: &Path) -> BTreeMap<&'static str, i64> {
    let mut m = BTreeMap::new();
    for (name, sql) in [
        ("run-output", "SELECT COUNT(*) FROM agent_run_outputs"),
        ("transcript-chunk", "SELECT COUNT(*) FROM transcript_chunks"),
        ("envelope", "SELECT COUNT(*) FROM envelopes"),
        ("event", "SELECT COUNT(*) FROM events"),
        ("approvals", "SELECT COUNT(*) FROM approvals"),
        (
            "approval-tokens",
            "SELECT COUNT(*) FROM approvals WHERE token_hash NOT LIKE 'pruned:%'",
        ),
        ("enrollments", "SELECT COUNT(*) FROM enrollments"),
        ("tickets", "SELECT COUNT(*) FROM pty_attach_tickets"),
    ] {
        m.insert(name, count(data, sql));
    }
    m
}

/// The event data field `field` in SQL, as text (`int`: as an integer), in the dialect of the
/// engine the suites run on.
fn json_field(field: &str, int: bool) -> String {
    match (happyx_tests::on_postgres(), int) {
        (false, _) => format!("json_extract(data, '$.{field}')"),
        (true, false) => format!("(data::json->>'{field}')"),
        (true, true) => format!("CAST(data::json->>'{field}' AS BIGINT)"),
    }
}

/// Sum of the `retention.batch_pruned` events' counts for `kind`.
fn batch_events(data: &Path, kind: &str) -> i64 {
    count(
        data,
        &format!(
            "SELECT CAST(COALESCE(SUM({}), 0) AS BIGINT) FROM events \
             WHERE code = 'retention.batch_pruned' AND {} = '{kind}'",
            json_field("count", true),
            json_field("kind", false),
        ),
    )
}

/// A config file with `[retention]` and the sample plugin's settings: every kind `off`
/// except those given.
fn policy(dir: &Path, name: &str, batch: u32, limits: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = format!(
        "[approvals]\nallow_self_approval = true\n[retention]\ninterval_ms = 0\nbatch = {batch}\n\
         [plugins.retention.settings]\n"
    );
    for kind in KINDS {
        for field in ["max_age_ms", "max_bytes", "max_count"] {
            let key = format!("{kind}.{field}");
            let value = limits
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("off", |(_, v)| v);
            text.push_str(&format!("\"{key}\" = \"{value}\"\n"));
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// `happyx prune` with `config`; its one-line JSON report.
fn prune(data: &Path, config: &Path) -> Value {
    let (st, out, err) = cli(&["prune", "--data-dir", s(data), "--config", s(config)]);
    assert!(st.success(), "prune: {err}");
    serde_json::from_str(out.trim()).expect("one JSON line")
}

/// Stores some of every kind: run output, a transcript, envelopes, events, and leftovers
/// next to material that is not (yet) a leftover: a pending approval, an unused enrollment
/// code, an unused attach ticket.
fn populate(server: &Server, dir: &Path) -> String {
    let op = server.token("operator");
    // Two used enrollment codes, one live one; envelopes in a session.
    let a = enroll(server, &op, dir.join("dev-a"));
    let b = enroll(server, &op, dir.join("dev-b"));
    let (st, code) = call(server.post("/v1/enrollments", &op, &json!({})));
    assert_eq!(st, 201, "{code}");
    let session = open_session(server, &a, &[&b]);
    send(server, &a, &session, "one\ntwo\nthree\n");
    // A run through a used approval; a pending approval.
    let body = json!({"recipe": "shell", "args": {"command": "echo run-out"}});
    let (st, r) = server.post_approved("/v1/runs", &op, &op, &body);
    assert_eq!(st, 201, "{r}");
    server.wait_run(&op, r["id"].as_str().expect("id"));
    let (st, pending) = call(server.post("/v1/runs", &op, &body));
    assert_eq!(st, 403, "{pending}");
    // A terminal through a used approval, with a transcript; a spent and an unused ticket.
    let body = json!({"recipe": "shell", "args": {"command": "echo pty-out; sleep 120"}});
    let (st, p) = server.post_approved("/v1/pty", &op, &op, &body);
    assert_eq!(st, 201, "{p}");
    let id = p["id"].as_str().expect("id").to_string();
    eventually(Duration::from_secs(20), || {
        let t = server
            .get(&format!("/v1/pty/{id}/transcript"), &op)
            .send()
            .ok()?
            .text()
            .ok()?;
        t.contains("pty-out").then_some(())
    })
    .expect("transcript stored");
    let mut tickets = Vec::new();
    for _ in 0..2 {
        let (st, t) = call(server.post(
            &format!("/v1/pty/{id}/attach"),
            &op,
            &json!({"mode": "observe"}),
        ));
        assert_eq!(st, 201, "{t}");
        tickets.push(t["ticket"].as_str().expect("ticket").to_string());
    }
    let url = format!(
        "{}/v1/pty/{id}/ws?ticket={}",
        server.url.replace("http://", "ws://"),
        tickets[0]
    );
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        drop(ws);
    });
    let (st, _) = call(server.post(&format!("/v1/pty/{id}/kill"), &op, &json!({})));
    assert!(st < 300);
    op
}

#[test]
fn every_kind_is_pruned_exactly_as_the_policy_says_and_keep_all_keeps_all() {
    let (tmp, data) = temp_data_dir();
    let cfg = policy(tmp.path(), "serve.toml", 500, &[]);
    let mut server =
        Server::with_config(&data, std::fs::read_to_string(&cfg).expect("read config"));
    let _op = populate(&server, tmp.path());
    server.sigterm(Duration::from_secs(20)).expect("stop");
    let before = stored(&data);
    for kind in ["run-output", "transcript-chunk", "envelope"] {
        assert!(before[kind] > 0, "{kind}: {before:?}");
    }
    let used_tokens = count(
        &data,
        "SELECT COUNT(*) FROM approvals WHERE status IN ('used', 'denied')",
    );
    let used_codes = count(
        &data,
        "SELECT COUNT(*) FROM enrollments WHERE used_at IS NOT NULL",
    );
    let spent_tickets = count(
        &data,
        "SELECT COUNT(*) FROM pty_attach_tickets WHERE used_at IS NOT NULL",
    );
    assert_eq!(used_tokens, 2, "{before:?}");
    assert_eq!(used_codes, 2, "{before:?}");
    assert_eq!(spent_tickets, 1, "{before:?}");

    // Keep everything: nothing goes, no batch event; the pass is recorded.
    let keep = policy(tmp.path(), "keep.toml", 500, &[]);
    let report = prune(&data, &keep);
    for kind in KINDS {
        assert_eq!(report["pruned"][kind], 0, "{kind}: {report}");
    }
    assert!(
        report["examined"]["leftover"].as_i64() >= Some(5),
        "{report}"
    );
    let mut after = stored(&data);
    assert_eq!(after.remove("event"), Some(before["event"] + 1));
    let mut want = before.clone();
    want.remove("event");
    assert_eq!(after, want, "a keep-everything policy keeps everything");

    // Every kind by age (0: anything older than now), events by count.
    let events_before = count(&data, "SELECT COUNT(*) FROM events");
    let short = policy(
        tmp.path(),
        "short.toml",
        500,
        &[
            ("run-output.max_age_ms", "0"),
            ("transcript-chunk.max_age_ms", "0"),
            ("envelope.max_age_ms", "0"),
            ("leftover.max_age_ms", "0"),
            ("event.max_count", "5"),
        ],
    );
    let report = prune(&data, &short);
    let after = stored(&data);
    assert_eq!(
        report["pruned"]["run-output"], before["run-output"],
        "{report}"
    );
    assert_eq!(
        report["pruned"]["transcript-chunk"], before["transcript-chunk"],
        "{report}"
    );
    assert_eq!(report["pruned"]["envelope"], before["envelope"], "{report}");
    assert_eq!(
        report["pruned"]["leftover"],
        used_tokens + used_codes + spent_tickets,
        "{report}"
    );
    for kind in ["run-output", "transcript-chunk", "envelope"] {
        assert_eq!(after[kind], 0, "{kind}: {after:?}");
    }
    // Leftovers: the approval records stay, without their tokens; the pending approval keeps
    // its token; the live code and the unused ticket stay.
    assert_eq!(after["approvals"], before["approvals"]);
    assert_eq!(
        after["approval-tokens"],
        before["approval-tokens"] - used_tokens
    );
    assert_eq!(
        count(
            &data,
            "SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND token_hash NOT LIKE 'pruned:%'"
        ),
        1
    );
    assert_eq!(after["enrollments"], before["enrollments"] - used_codes);
    assert_eq!(after["tickets"], before["tickets"] - spent_tickets);
    // Events: when the event kind was visited the log held the three batch events of the
    // kinds before it; 5 stayed, then two batch events (event, leftover) and the pass's own.
    assert_eq!(
        report["pruned"]["event"].as_i64(),
        Some(events_before + 3 - 5),
        "{report}"
    );
    assert_eq!(after["event"], 5 + 3, "{after:?}");
    // Every deletion has its per-batch event (kind, count, policy hash; no ids).
    for kind in ["run-output", "transcript-chunk", "envelope", "leftover"] {
        assert_eq!(
            batch_events(&data, kind),
            report["pruned"][kind].as_i64().unwrap_or(-1),
            "{kind}"
        );
    }
    let policy_hash = report["policy_hash"].as_str().expect("hash");
    assert_eq!(
        count(
            &data,
            &format!(
                "SELECT COUNT(*) FROM events WHERE code = 'retention.batch_pruned' \
                 AND {} = '{policy_hash}' AND {} IS NULL",
                json_field("policy_hash", false),
                json_field("ids", false),
            )
        ),
        4 + 1,
        "one batch event per kind that lost something (events' own included, then cut)"
    );
    // The chain still verifies, and a rerun removes nothing.
    let (st, _, err) = cli(&["audit", "verify", "--data-dir", s(&data)]);
    assert!(st.success(), "{err}");
    let again = prune(&data, &short);
    for kind in ["run-output", "transcript-chunk", "envelope", "leftover"] {
        assert_eq!(again["pruned"][kind], 0, "{kind}: {again}");
    }
    // The host still serves on the pruned store; pruned approvals stay readable.
    let server = Server::with_config(&data, std::fs::read_to_string(&cfg).expect("read"));
    let op = server.token("operator");
    let list = json(server.get("/v1/approvals", &op).send());
    assert!(!list.to_string().contains("pruned:"), "{list}");
}

#[test]
fn kill_9_mid_pass_then_rerun_reaches_the_same_end_state_with_every_deletion_recorded() {
    const KEEP: i64 = 20;
    let (tmp, data) = temp_data_dir();
    let cfg = policy(tmp.path(), "serve.toml", 1, &[]);
    let mut server = Server::with_config(&data, std::fs::read_to_string(&cfg).expect("read"));
    let op = server.token("operator");
    // ~190 output chunks of 64 KiB.
    let body = json!({"recipe": "shell", "args": {"command": "head -c 12500000 /dev/zero"}});
    let (st, r) = server.post_approved("/v1/runs", &op, &op, &body);
    assert_eq!(st, 201, "{r}");
    server.wait_run(&op, r["id"].as_str().expect("id"));
    server.sigterm(Duration::from_secs(20)).expect("stop");
    let total = count(&data, "SELECT COUNT(*) FROM agent_run_outputs");
    assert!(total > 150, "{total} chunks");
    let max_index = count(&data, "SELECT MAX(chunk_index) FROM agent_run_outputs");

    // Batches of one item: slow enough to be caught mid-way.
    let slow = policy(
        tmp.path(),
        "slow.toml",
        1,
        &[("run-output.max_count", "20")],
    );
    let mut caught = false;
    for _ in 0..3 {
        let mut child = Command::new(binary())
            .args(["prune", "--data-dir", s(&data), "--config", s(&slow)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prune");
        let started = Instant::now();
        let left = count(&data, "SELECT COUNT(*) FROM agent_run_outputs");
        loop {
            let now = count(&data, "SELECT COUNT(*) FROM agent_run_outputs");
            if now < left && now > KEEP {
                child.kill().expect("kill -9");
                caught = true;
                break;
            }
            if child.try_wait().expect("wait").is_some()
                || started.elapsed() > Duration::from_secs(60)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.wait();
        if caught {
            break;
        }
    }
    if !caught {
        eprintln!("note: no kill landed mid-pass on this machine");
    }
    let mid = count(&data, "SELECT COUNT(*) FROM agent_run_outputs");
    assert!(mid >= KEEP, "never more than the policy allows: {mid}");
    // What is gone so far has its batch events, and no more.
    assert_eq!(batch_events(&data, "run-output"), total - mid);

    let report = prune(&data, &slow);
    assert_eq!(report["pruned"]["run-output"], mid - KEEP, "{report}");
    // The end state of an uninterrupted pass: exactly the newest KEEP chunks.
    assert_eq!(count(&data, "SELECT COUNT(*) FROM agent_run_outputs"), KEEP);
    assert_eq!(
        count(&data, "SELECT MIN(chunk_index) FROM agent_run_outputs"),
        max_index - KEEP + 1
    );
    assert_eq!(batch_events(&data, "run-output"), total - KEEP);
    // Batches of one: one event per deletion.
    assert_eq!(
        count(
            &data,
            &format!(
                "SELECT COUNT(*) FROM events WHERE code = 'retention.batch_pruned' AND {} = 1",
                json_field("count", true)
            )
        ),
        total - KEEP
    );
    let (st, _, err) = cli(&["audit", "verify", "--data-dir", s(&data)]);
    assert!(st.success(), "{err}");
}
