//! End-to-end: `happyx export` / `happyx import` through the real binary —
//! the round trip over every table, a rollback rehearsal, every refusal with
//! the data dir left unchanged, the legacy state, and `happyx verify-public`
//! against the real host and against fake public APIs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use happyx_tests::{Server, call, cli, json, temp_data_dir};
use serde_json::{Value, json};

const CANARY: &str = "CANARY-7d1e5f0b-import-export-9a8c";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn export(data: &Path, out: &Path) -> Value {
    let (st, o, e) = cli(&["export", "--data-dir", s(data), "--out", s(out)]);
    assert!(st.success(), "export failed: {e}");
    assert_eq!(o.lines().count(), 1, "one summary line: {o}");
    assert!(!o.contains(CANARY) && !e.contains(CANARY), "canary leaked");
    assert!(!o.contains("hpx_") && !e.contains("hpx_"), "token leaked");
    serde_json::from_str(&o).expect("summary is JSON")
}

fn import(data: &Path, file: &Path) -> (bool, String, String) {
    let (st, o, e) = cli(&["import", "--data-dir", s(data), s(file)]);
    assert!(
        !o.contains(CANARY) && !e.contains(CANARY),
        "canary leaked: {e}"
    );
    assert!(!e.contains("hpx_"), "token leaked: {e}");
    (st.success(), o, e)
}

/// The file without its last line (`"meta":{…}}`), which holds everything that varies.
fn state_part(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("read export");
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.pop().expect("non-empty");
    assert!(
        last.starts_with("\"meta\":"),
        "meta is the last line: {last}"
    );
    lines.join("\n")
}

fn doc(file: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(file).expect("read")).expect("export is JSON")
}

/// Every file under `dir` with its bytes (None when the dir does not exist).
fn snapshot(dir: &Path) -> Option<BTreeMap<PathBuf, Vec<u8>>> {
    if !dir.exists() {
        return None;
    }
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        let bytes = if p.is_file() {
            std::fs::read(&p).expect("read")
        } else {
            b"<dir>".to_vec()
        };
        out.insert(p, bytes);
    }
    Some(out)
}

fn sql(data: &Path, statement: &str) {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let url = format!("sqlite://{}", data.join("happyx.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
        sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&pool)
            .await
            .expect("statement");
        pool.close().await;
    })
}

/// A host with a row in every table: tokens (one revoked), tasks, sessions,
/// permissions, an echo run with output (holding the canary), a high-risk run
/// through the approval flow (a used approval), a pending approval, events
/// and a deployment. Returns (server, operator token).
fn populated(data: &Path) -> (Server, String) {
    let server = Server::start(data);
    let op = server.token("operator");
    let agent = server.token("agent");
    let viewer = server.token("viewer");
    let (st, _, _) = cli(&["token", "revoke", "--data-dir", s(data), &viewer[4..16]]);
    assert!(st.success());
    let (st, task) = call(server.post("/v1/tasks", &agent, &json!({"title": "fix ci"})));
    assert_eq!(st, 201, "{task}");
    let (st, sess) = call(server.post(
        "/v1/sessions",
        &agent,
        &json!({"name": "pairing", "task_id": task["id"]}),
    ));
    assert_eq!(st, 201, "{sess}");
    let (st, _) = call(server.post(
        "/v1/permissions",
        &op,
        &json!({"subject": "dev1", "action": "pty.drive", "scope": format!("session:{}", sess["id"].as_str().unwrap_or(""))}),
    ));
    assert_eq!(st, 201);
    let (st, run) = call(server.post(
        "/v1/runs",
        &agent,
        &json!({"recipe": "echo", "args": {"text": format!("hello {CANARY}")}, "session_id": sess["id"]}),
    ));
    assert_eq!(st, 201, "{run}");
    server.wait_run(&agent, run["id"].as_str().expect("id"));
    // High risk: approval required → approve → use.
    let body = json!({"recipe": "shell", "args": {"command": "echo approved"}});
    let (st, run2) = server.post_approved("/v1/runs", &agent, &op, &body);
    assert_eq!(st, 201, "{run2}");
    server.wait_run(&agent, run2["id"].as_str().expect("id"));
    // A pending approval.
    let (st, b) = call(server.post(
        "/v1/runs",
        &agent,
        &json!({"recipe": "shell", "args": {"command": "echo later"}}),
    ));
    assert_eq!(st, 403, "{b}");
    (server, op)
}

#[test]
fn round_trip_covers_every_table_and_appends_nothing() {
    let (tmp, data) = temp_data_dir();
    let (mut server, op) = populated(&data);
    let seq_before = server.last_seq(&op);
    let canaries = tmp.path().join("canaries.txt");
    std::fs::write(&canaries, format!("{CANARY}\n")).expect("write canaries");
    // The real host's public surfaces are clean, with the canary in run output.
    let (st, o, e) = cli(&[
        "verify-public",
        "--url",
        &server.url,
        "--canaries",
        s(&canaries),
    ]);
    assert!(st.success(), "verify-public on the real host: {o} {e}");
    assert!(!o.contains(CANARY) && !e.contains(CANARY));
    let summary: Value = serde_json::from_str(&o).expect("json summary");
    assert_eq!(summary["clean"], true);
    server
        .sigterm(Duration::from_secs(20))
        .expect("graceful stop");
    // The pruner has no trigger yet: one row written directly, so every table is covered.
    sql(
        &data,
        "INSERT INTO prunes (id, at, policy_hash, counts) VALUES ('p1', 1, 'h', '{}')",
    );

    let e1 = tmp.path().join("e1.json");
    let sum1 = export(&data, &e1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&e1).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the export is a private file");
    let d = doc(&e1);
    let tables = d["tables"].as_object().expect("tables");
    for t in [
        "events",
        "tokens",
        "tasks",
        "sessions",
        "permissions",
        "nonces",
        "approvals",
        "approval_uses",
        "agent_runs",
        "agent_run_outputs",
        "deployments",
        "prunes",
    ] {
        let rows = tables[t].as_array().map(Vec::len).unwrap_or(0);
        assert!(rows > 0, "table {t} is exported with rows");
    }
    let statuses: Vec<&str> = tables["approvals"]
        .as_array()
        .expect("approvals")
        .iter()
        .filter_map(|a| a["status"].as_str())
        .collect();
    assert!(
        statuses.contains(&"pending") && statuses.contains(&"used"),
        "{statuses:?}"
    );
    assert!(
        tables["agent_run_outputs"][0]["data"]["$base64"].is_string(),
        "blobs are base64"
    );
    assert!(
        std::fs::read_to_string(&e1)
            .expect("read")
            .contains("\"revoked_at\":1"),
        "the revoked token keeps its revocation time"
    );
    assert_eq!(
        sum1["rows"]["events"].as_u64(),
        Some(seq_before as u64),
        "every event exported"
    );

    let (_tmp2, data2) = temp_data_dir();
    let (ok, o, e) = import(&data2, &e1);
    assert!(ok, "import failed: {e}");
    let imported: Value = serde_json::from_str(&o).expect("summary");
    assert_eq!(imported["rows"], sum1["rows"]);
    let mode = std::fs::metadata(&data2)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    let e2 = tmp.path().join("e2.json");
    let sum2 = export(&data2, &e2);
    assert_eq!(
        state_part(&e1),
        state_part(&e2),
        "identical apart from meta"
    );
    assert_eq!(sum1["checksum"], sum2["checksum"]);
    assert_eq!(sum2["rows"]["events"].as_u64(), Some(seq_before as u64));
}

#[test]
fn rollback_rehearsal_restores_the_old_state_and_serves_it() {
    let (tmp, data) = temp_data_dir();
    let (mut server, op) = populated(&data);
    let old = tmp.path().join("old.json");
    export(&data, &old);
    // Changes after the export: a new task and a new token.
    let (st, _) = call(server.post("/v1/tasks", &op, &json!({"title": "after export"})));
    assert_eq!(st, 201);
    let late = server.token("operator");
    server.kill9();

    let (tmp2, restored) = temp_data_dir();
    let (ok, _, e) = import(&restored, &old);
    assert!(ok, "{e}");
    let again = tmp2.path().join("again.json");
    export(&restored, &again);
    assert_eq!(
        state_part(&old),
        state_part(&again),
        "the old state, exactly"
    );

    let server = Server::start(&restored);
    let tasks = json(server.get("/v1/tasks", &op).send());
    let titles: Vec<&str> = tasks["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["title"].as_str())
        .collect();
    assert_eq!(
        titles,
        ["fix ci"],
        "the old token works and sees the old state"
    );
    let (st, _) = call(server.get("/v1/tasks", &late));
    assert_eq!(st, 401, "a token minted after the export does not exist");
}

/// A small valid export made with the CLI only (tokens and their events).
fn small_export(dir: &Path) -> PathBuf {
    let data = dir.join("src");
    happyx_tests::init_data_dir(&data);
    for role in ["operator", "agent", "viewer"] {
        happyx_tests::token(&data, role);
    }
    let out = dir.join("small.json");
    export(&data, &out);
    out
}

fn expect_refusal(file_text: &str, dir: &Path, needles: &[&str]) {
    let file = dir.join("bad.json");
    std::fs::write(&file, file_text).expect("write");
    // Into an existing empty data dir: unchanged afterwards.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let before = snapshot(&empty);
    let (ok, o, e) = import(&empty, &file);
    assert!(!ok, "must refuse ({needles:?}); stdout {o}");
    for n in needles {
        assert!(e.contains(n), "error should contain {n:?}: {e}");
    }
    assert!(o.is_empty(), "nothing on stdout: {o}");
    assert_eq!(snapshot(&empty), before, "data dir unchanged: {e}");
    // Into a data dir that does not exist: still does not exist.
    let fresh = dir.join("fresh");
    let (ok, _, _) = import(&fresh, &file);
    assert!(!ok);
    assert!(
        !fresh.exists(),
        "a refused import leaves no data dir behind"
    );
}

#[test]
fn bad_imports_name_the_record_and_change_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = small_export(tmp.path());
    let text = std::fs::read_to_string(&good).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let first_event = lines
        .iter()
        .position(|l| l.starts_with("\"events\":"))
        .expect("events")
        + 1;

    // Corrupted value (a canary as seq): the type error names the field, not the value.
    let bad = text.replacen("\"seq\":2", &format!("\"seq\":\"{CANARY}\""), 1);
    expect_refusal(
        &bad,
        tmp.path(),
        &["tables.events[1].seq", "BIGINT", "a string"],
    );

    // Corrupted JSON syntax.
    let bad = text.replacen("\"seq\":2,", "\"seq\":2,,", 1);
    expect_refusal(
        &bad,
        tmp.path(),
        &["tables.events[1]", "invalid JSON at line"],
    );

    // A check constraint: names the allowed values.
    let bad = text.replacen("\"role\":\"agent\"", &format!("\"role\":\"{CANARY}\""), 1);
    expect_refusal(
        &bad,
        tmp.path(),
        &["tables.tokens[", "].role", "expected one of"],
    );

    // Truncated.
    expect_refusal(
        &text[..text.len() / 2],
        tmp.path(),
        &["ends early", "tables."],
    );

    // Wrong schema version.
    let current = happyx::store::SCHEMA_VERSION;
    let bad = text.replacen(
        &format!("\"schema_version\":{current},"),
        "\"schema_version\":99,",
        1,
    );
    expect_refusal(
        &bad,
        tmp.path(),
        &["schema version 99", &format!("schema version {current}")],
    );

    // Duplicate id: the first event repeated.
    let mut dup = lines.clone();
    let row = format!("{},", lines[first_event].trim_end_matches(','));
    dup.insert(first_event + 1, &row);
    expect_refusal(
        &dup.join("\n"),
        tmp.path(),
        &["tables.events[1].", "duplicate"],
    );

    // A gap in the event log at its last event (the checksum is checked after the records).
    let n = doc(&good)["tables"]["events"]
        .as_array()
        .expect("events")
        .len();
    let bad = text.replacen(&format!("\"seq\":{n},"), &format!("\"seq\":{},", n + 1), 1);
    expect_refusal(
        &bad,
        tmp.path(),
        &[
            &format!("tables.events[{}].seq", n - 1),
            "gap-free",
            &format!("found seq {} where {n}", n + 1),
        ],
    );

    // A wrong checksum.
    let d = doc(&good);
    let sum = d["meta"]["checksum"].as_str().expect("checksum");
    let bad = text.replace(sum, &format!("sha256:{}", "0".repeat(64)));
    expect_refusal(&bad, tmp.path(), &["meta.checksum", "does not match"]);

    // A changed value with the old checksum.
    let bad = text.replacen("\"role\":\"viewer\"", "\"role\":\"operator\"", 1);
    expect_refusal(&bad, tmp.path(), &["meta.checksum"]);

    // Unknown table and unknown column.
    let bad = text.replacen("\"prunes\":[]", "\"prunes\":[],\n\"secrets\":[]", 1);
    expect_refusal(&bad, tmp.path(), &["tables.secrets", "unknown table"]);
    let bad = text.replacen("\"seq\":2,", "\"seq\":2,\"extra\":1,", 1);
    expect_refusal(
        &bad,
        tmp.path(),
        &["tables.events[1].extra", "unknown column"],
    );

    // A dangling reference.
    let bad = text.replacen(
        "\"agent_run_outputs\":[]",
        "\"agent_run_outputs\":[\n{\"byte_offset\":0,\"chunk_index\":0,\"created_at\":1,\"data\":{\"$base64\":\"aGk=\"},\"findings\":0,\"id\":\"o1\",\"length\":2,\"policy_hash\":null,\"redacted\":null,\"run_id\":\"nope\",\"stream\":\"stdout\"}\n]",
        1,
    );
    expect_refusal(
        &bad,
        tmp.path(),
        &["tables.agent_run_outputs[0].run_id", "agent_runs"],
    );

    // Into a non-empty data dir.
    let src = tmp.path().join("src");
    let before = snapshot(&src);
    let (ok, _, e) = import(&src, &good);
    assert!(!ok);
    assert!(e.contains("is not empty"), "{e}");
    assert_eq!(snapshot(&src), before, "non-empty data dir unchanged");

    // Into a served data dir.
    let (_t, served) = temp_data_dir();
    let server = Server::start(&served);
    let (ok, _, e) = import(&served, &good);
    assert!(!ok);
    assert!(e.contains("already served"), "{e}");
    drop(server);

    // And the good file still imports.
    let (ok, _, e) = import(&tmp.path().join("ok"), &good);
    assert!(ok, "{e}");
}

#[test]
fn legacy_state_imports_and_unmappable_records_are_refused() {
    let legacy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/legacy-state");
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let (ok, o, e) = import(&data, &legacy);
    assert!(ok, "{e}");
    let summary: Value = serde_json::from_str(&o).expect("summary");
    assert_eq!(summary["source_format"], "legacy-state");
    let out = tmp.path().join("legacy.json");
    export(&data, &out);
    let d = doc(&out);
    let text = std::fs::read_to_string(&out).expect("read");
    // Plaintext approval tokens are never stored, only their hashes.
    let legacy_text = std::fs::read_to_string(legacy.join("approvals.json")).expect("read");
    let v: Value = serde_json::from_str(&legacy_text).expect("json");
    for a in v.as_array().expect("array") {
        let t = a["token"].as_str().expect("token");
        assert!(!text.contains(t), "a plaintext legacy token was imported");
    }
    let events = d["tables"]["events"].as_array().expect("events");
    let mut seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    assert!(
        !d["tables"]["agent_run_outputs"]
            .as_array()
            .expect("outputs")
            .is_empty()
    );

    // An unmappable status is refused, naming file, index and field.
    let bad = tmp.path().join("bad-legacy");
    std::fs::create_dir_all(&bad).expect("mkdir");
    for f in ["approvals.json", "events.json", "runs.json"] {
        std::fs::copy(legacy.join(f), bad.join(f)).expect("copy");
    }
    let runs = std::fs::read_to_string(bad.join("runs.json")).expect("read");
    let mut v: Value = serde_json::from_str(&runs).expect("json");
    v[1]["status"] = json!("paused");
    std::fs::write(bad.join("runs.json"), v.to_string()).expect("write");
    let target = tmp.path().join("target");
    let (ok, _, e) = import(&target, &bad);
    assert!(!ok);
    assert!(e.contains("runs.json") && e.contains("[1].status"), "{e}");
    assert!(!target.exists());
}

const HEX64: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A fake host serving an OpenAPI document and three public views; `mode`
/// plants a token (`leaky`) or a base64 canary (`canary`) in one of them.
fn fake_public(mode: &'static str) -> String {
    use axum::extract::{Path as UrlPath, Query};
    use axum::routing::get;
    let token = format!(
        "hpx_abcdefghij12_{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [7u8; 32])
    );
    let doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "fake", "version": "1"},
        "paths": {
            "/public/state": {"get": {}},
            "/public/runs": {"get": {"parameters": [{"name": "after", "in": "query"}]}},
            "/public/sessions/{id}": {"get": {"parameters": [{"name": "id", "in": "path"}]}},
            "/v1/tasks": {"get": {}}
        },
        "components": {"schemas": {"State": {"properties": {
            "config": {"type": "string", "description": "SHA-256 of the configuration"}
        }}}}
    });
    let app = axum::Router::new()
        .route("/v1/openapi.json", get(move || async move { axum::Json(doc) }))
        .route(
            "/public/state",
            get(|| async {
                axum::Json(json!({"version": "0.1.0", "config": HEX64,
                    "deployments": [{"id": "01890a5d-ac96-774b-bcce-b302099a8057", "started_at": 1}]}))
            }),
        )
        .route(
            "/public/runs",
            get(move |Query(q): Query<BTreeMap<String, String>>| async move {
                let body = if q.get("after").map(String::as_str) == Some("run-1") {
                    let note = if mode == "canary" {
                        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, CANARY)
                    } else {
                        "fine".to_string()
                    };
                    json!({"items": [{"id": "run-2", "session_id": "sess-2", "status": "failed", "note": note}], "next": null})
                } else {
                    json!({"items": [{"id": "run-1", "session_id": "sess-1", "status": "succeeded", "action_hash": HEX64}], "next": "run-1"})
                };
                axum::Json(body)
            }),
        )
        .route(
            "/public/sessions/{id}",
            get(move |UrlPath(id): UrlPath<String>| {
                let token = token.clone();
                async move {
                    let owner = if mode == "leaky" && id == "sess-2" { token } else { "agent".to_string() };
                    axum::Json(json!({"id": id, "name": "pairing", "owner": owner}))
                }
            }),
        );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    format!("http://{}", rx.recv().expect("addr"))
}

#[test]
fn verify_public_against_fake_hosts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let canaries = tmp.path().join("canaries.txt");
    std::fs::write(&canaries, format!("{CANARY}\n\n")).expect("write");
    let run = |url: &str| {
        let (st, o, e) = cli(&["verify-public", "--url", url, "--canaries", s(&canaries)]);
        assert!(!o.contains(CANARY) && !e.contains(CANARY), "canary echoed");
        assert!(
            !o.contains("hpx_abc") && !e.contains("hpx_abc"),
            "token echoed"
        );
        (st.success(), o, e)
    };

    let (ok, o, e) = run(&fake_public("clean"));
    assert!(ok, "clean host: {o} {e}");
    let v: Value = serde_json::from_str(&o).expect("summary");
    assert_eq!(v["clean"], true);
    // openapi, state, two pages of runs, two sessions discovered from the runs.
    assert_eq!(v["surfaces"], 6, "{v}");

    let (ok, o, e) = run(&fake_public("leaky"));
    assert!(!ok, "a token must fail: {o}");
    assert!(
        e.contains("GET /public/sessions/sess-2: happyx_token"),
        "{e}"
    );
    let v: Value = serde_json::from_str(&o).expect("summary");
    assert_eq!(v["findings"][0]["kind"], "happyx_token");

    let (ok, _, e) = run(&fake_public("canary"));
    assert!(!ok);
    assert!(e.contains("GET /public/runs?after=run-1: canary"), "{e}");
}
