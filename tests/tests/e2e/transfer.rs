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

/// The exporting data dir's public key, as `happyx host-key` prints it.
fn host_key(data: &Path) -> String {
    let (st, o, e) = cli(&["host-key", "--data-dir", s(data)]);
    assert!(st.success(), "host-key failed: {e}");
    assert_eq!(o.lines().count(), 1, "one key: {o}");
    o.trim().to_string()
}

fn import(data: &Path, file: &Path) -> (bool, String, String) {
    import_with(data, file, &[])
}

fn import_with(data: &Path, file: &Path, flags: &[&str]) -> (bool, String, String) {
    let mut args = vec!["import", "--data-dir", s(data)];
    args.extend_from_slice(flags);
    args.push(s(file));
    let (st, o, e) = cli(&args);
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

/// Whether `data`'s database is as no import touched it: on PostgreSQL (`E2E_ENGINE`), a
/// refused import leaves the data dir's database without a single table; a SQLite data dir's
/// file is compared by [`snapshot`].
fn database_untouched(data: &Path) -> bool {
    !happyx_tests::on_postgres()
        || happyx_tests::count(
            data,
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
        ) == 0
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
    happyx_tests::execute(
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

    let key = host_key(&data);
    assert_eq!(sum1["public_key"], key.as_str(), "signed with the host key");
    assert_eq!(d["meta"]["signature"]["public_key"], key.as_str());
    let (_tmp2, data2) = temp_data_dir();
    let (ok, o, e) = import_with(&data2, &e1, &["--trusted-key", &key]);
    assert!(ok, "import failed: {e}");
    let imported: Value = serde_json::from_str(&o).expect("summary");
    assert_eq!(imported["rows"], sum1["rows"]);
    assert_eq!(imported["signature"], "verified");
    assert!(!e.contains("WARNING"), "{e}");
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

/// A fresh PostgreSQL database for a test that puts SQLite and PostgreSQL side by side, in the
/// SQLite run (under `E2E_ENGINE=postgres` every data dir is already PostgreSQL); `None`: skip.
fn postgres_beside_sqlite() -> Option<String> {
    if happyx_tests::on_postgres() {
        eprintln!(
            "SKIPPED under E2E_ENGINE=postgres: the SQLite run puts both engines side by side"
        );
        return None;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(happyx_store::test_support::postgres_database())
}

/// Moving between engines: a SQLite data dir exported, imported into PostgreSQL, exported
/// again, and back into SQLite: the same state at every step, and served from PostgreSQL.
#[test]
fn moving_from_sqlite_to_postgres_and_back_keeps_the_state() {
    let Some(url) = postgres_beside_sqlite() else {
        return;
    };
    let pg = [("HAPPYX_STORAGE__URL", url.as_str())];
    let (tmp, lite) = temp_data_dir();
    let (mut server, op) = populated(&lite);
    server
        .sigterm(Duration::from_secs(20))
        .expect("graceful stop");
    let from_sqlite = tmp.path().join("from-sqlite.json");
    let sum1 = export(&lite, &from_sqlite);

    // Into PostgreSQL, through a data dir of its own (its lock and host key).
    let moved = tmp.path().join("moved");
    let (st, o, e) = happyx_tests::cli_env(
        &[
            "import",
            "--data-dir",
            s(&moved),
            "--trusted-key",
            &host_key(&lite),
            s(&from_sqlite),
        ],
        &pg,
    );
    assert!(st.success(), "import into PostgreSQL: {e}");
    let summary: Value = serde_json::from_str(&o).expect("summary");
    assert_eq!(summary["rows"], sum1["rows"]);
    assert!(
        !moved.join("happyx.db").exists(),
        "no SQLite database beside PostgreSQL"
    );
    assert!(
        !o.contains(&url) && !e.contains(&url),
        "the URL's password is never printed"
    );

    // A second import is refused: the database holds rows.
    let (st, _, e) = happyx_tests::cli_env(
        &[
            "import",
            "--data-dir",
            s(&tmp.path().join("again")),
            "--allow-unsigned",
            s(&from_sqlite),
        ],
        &pg,
    );
    assert!(!st.success());
    assert!(
        e.contains("the PostgreSQL database") && e.contains("is not empty"),
        "{e}"
    );
    assert!(!e.contains(&url), "{e}");

    let from_postgres = tmp.path().join("from-postgres.json");
    let (st, o, e) = happyx_tests::cli_env(
        &[
            "export",
            "--data-dir",
            s(&moved),
            "--out",
            s(&from_postgres),
        ],
        &pg,
    );
    assert!(st.success(), "export from PostgreSQL: {e}");
    let sum2: Value = serde_json::from_str(&o).expect("summary");
    assert_eq!(
        state_part(&from_sqlite),
        state_part(&from_postgres),
        "PostgreSQL holds exactly the state SQLite held"
    );
    assert_eq!(sum1["checksum"], sum2["checksum"]);

    // And back into SQLite.
    let (_tmp3, back) = temp_data_dir();
    let (st, moved_key, e) = happyx_tests::cli_env(&["host-key", "--data-dir", s(&moved)], &pg);
    assert!(st.success(), "host-key on a PostgreSQL data dir: {e}");
    let (ok, _, e) = import_with(&back, &from_postgres, &["--trusted-key", moved_key.trim()]);
    assert!(ok, "import back into SQLite: {e}");
    let round = tmp.path().join("round.json");
    export(&back, &round);
    assert_eq!(
        state_part(&from_sqlite),
        state_part(&round),
        "and back, the same"
    );

    // A host on the PostgreSQL database serves the moved state to the old tokens.
    let opts = happyx_tests::ServerOptions {
        env: vec![("HAPPYX_STORAGE__URL".into(), url.clone())],
        ..happyx_tests::ServerOptions::default()
    };
    let server = Server::start_with(&moved, opts).expect("a host on the moved database");
    let tasks = json(server.get("/v1/tasks", &op).send());
    assert_eq!(tasks["items"][0]["title"], "fix ci", "{tasks}");
    let runs = json(server.get("/v1/runs", &op).send());
    assert!(
        runs["items"].as_array().is_some_and(|r| r.len() >= 2),
        "the runs moved: {runs}"
    );
}

/// A value SQLite keeps and PostgreSQL cannot (text with a NUL character) is refused by its
/// position when the import goes into PostgreSQL, and nothing is written.
#[test]
fn text_postgres_cannot_store_is_refused_by_its_position() {
    let Some(url) = postgres_beside_sqlite() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let mut d = doc(&small_export(tmp.path()));
    d["tables"]["tokens"][1]["name"] = json!("ci\u{0}bot");
    unsigned(&mut d);
    let file = tmp.path().join("nul.json");
    std::fs::write(&file, recompute(&mut d)).expect("write");
    let target = tmp.path().join("pg");
    let (st, o, e) = happyx_tests::cli_env(
        &[
            "import",
            "--data-dir",
            s(&target),
            "--allow-unsigned",
            s(&file),
        ],
        &[("HAPPYX_STORAGE__URL", url.as_str())],
    );
    assert!(!st.success() && o.is_empty(), "{o}");
    assert!(
        e.contains("tables.tokens[1].name") && e.contains("NUL character"),
        "{e}"
    );
    assert!(
        !e.contains("ci\u{0}bot") && !e.contains("bot"),
        "the value is never echoed: {e}"
    );
    assert!(
        !target.exists(),
        "a refused import leaves no data dir behind"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let rows: i64 = rt.block_on(async {
        let pool = sqlx::PgPool::connect(&url).await.expect("connect");
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        n
    });
    assert_eq!(rows, 0, "the copy rolled back whole");
    // Without the value, the same file imports.
    d["tables"]["tokens"][1]["name"] = json!("ci-bot");
    std::fs::write(&file, recompute(&mut d)).expect("write");
    let (st, _, e) = happyx_tests::cli_env(
        &[
            "import",
            "--data-dir",
            s(&target),
            "--allow-unsigned",
            s(&file),
        ],
        &[("HAPPYX_STORAGE__URL", url.as_str())],
    );
    assert!(st.success(), "{e}");
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

    // A key file as an operator keeps it: the base64 public key in a file.
    let key_file = tmp.path().join("old-host.pub");
    std::fs::write(&key_file, format!("{}\n", host_key(&data))).expect("write key");
    let (tmp2, restored) = temp_data_dir();
    let (ok, _, e) = import_with(&restored, &old, &["--trusted-key", s(&key_file)]);
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
    expect_refusal_with(file_text, dir, needles, &[]);
}

fn expect_refusal_with(file_text: &str, dir: &Path, needles: &[&str], flags: &[&str]) {
    let file = dir.join("bad.json");
    std::fs::write(&file, file_text).expect("write");
    // Into an existing empty data dir: unchanged afterwards.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let before = snapshot(&empty);
    let (ok, o, e) = import_with(&empty, &file, flags);
    assert!(!ok, "must refuse ({needles:?}); stdout {o}");
    for n in needles {
        assert!(e.contains(n), "error should contain {n:?}: {e}");
    }
    assert!(o.is_empty(), "nothing on stdout: {o}");
    assert_eq!(snapshot(&empty), before, "data dir unchanged: {e}");
    assert!(database_untouched(&empty), "database unchanged: {e}");
    // Into a data dir that does not exist: still does not exist.
    let fresh = dir.join("fresh");
    let (ok, _, _) = import_with(&fresh, &file, flags);
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

    // And the good file still imports (trusting its host's key).
    let key = host_key(&tmp.path().join("src"));
    let (ok, _, e) = import_with(&tmp.path().join("ok"), &good, &["--trusted-key", &key]);
    assert!(ok, "{e}");
}

#[test]
fn legacy_state_imports_and_unmappable_records_are_refused() {
    let legacy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/legacy-state");
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    // A legacy state carries no signature: refused unless the operator says so.
    let (ok, o, e) = import(&data, &legacy);
    assert!(!ok && o.is_empty(), "{o}");
    assert!(
        e.contains("legacy state directory carries no signature") && e.contains("--allow-unsigned"),
        "{e}"
    );
    assert!(!data.exists());
    let (ok, o, e) = import_with(&data, &legacy, &["--allow-unsigned"]);
    assert!(ok, "{e}");
    assert!(e.contains("WARNING") && e.contains("NOT SIGNED"), "{e}");
    let summary: Value = serde_json::from_str(&o).expect("summary");
    assert_eq!(summary["source_format"], "legacy-state");
    assert_eq!(summary["signature"], "legacy_unsigned_accepted");
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
    let (ok, _, e) = import_with(&target, &bad, &["--allow-unsigned"]);
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

/// Writes `d` back in the export's field order (header, tables, meta) after
/// recomputing `meta.checksum` and `meta.counts` as the format documents them:
/// what anyone who edits a file can do.
fn recompute(d: &mut Value) -> String {
    use sha2::{Digest, Sha256};
    let sv = d["schema_version"].as_i64().expect("schema_version");
    let mut h = Sha256::new();
    h.update(format!("happyx-export\n1\n{sv}\n"));
    let mut counts = serde_json::Map::new();
    for (name, rows) in d["tables"].as_object().expect("tables") {
        h.update(format!("table {name}\n"));
        let rows = rows.as_array().expect("rows");
        for r in rows {
            h.update(serde_json::to_string(r).expect("row"));
            h.update(b"\n");
        }
        counts.insert(name.clone(), json!(rows.len()));
    }
    d["meta"]["checksum"] = json!(format!("sha256:{}", hex::encode(h.finalize())));
    d["meta"]["counts"] = Value::Object(counts);
    format!(
        "{{\"format\":{},\"version\":{},\"schema_version\":{},\"tables\":{},\"meta\":{}}}\n",
        d["format"], d["version"], d["schema_version"], d["tables"], d["meta"]
    )
}

fn unsigned(d: &mut Value) {
    d["meta"]
        .as_object_mut()
        .expect("meta")
        .remove("signature")
        .expect("signed");
}

#[test]
fn a_tampered_export_with_a_recomputed_checksum_is_refused() {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let tmp = tempfile::tempdir().expect("tmp");
    let good = small_export(tmp.path());
    let key = host_key(&tmp.path().join("src"));
    // The attack: a well-formed extra operator token whose secret the editor knows.
    let token = format!(
        "hpx_attacker0001_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32])
    );
    let mut d = doc(&good);
    d["tables"]["tokens"]
        .as_array_mut()
        .expect("tokens")
        .push(json!({
            "created_at": 1,
            "id": "attacker0001",
            "name": "backdoor",
            "revoked_at": null,
            "role": "operator",
            "secret_hash": hex::encode(Sha256::digest(token.as_bytes())),
        }));
    let tampered = recompute(&mut d);
    for flags in [
        &["--trusted-key", key.as_str()][..],
        &[],
        &["--allow-unsigned"],
    ] {
        expect_refusal_with(
            &tampered,
            tmp.path(),
            &["meta.signature", "does not verify", "altered"],
            flags,
        );
    }
    // Dropping the signature instead: refused by default.
    unsigned(&mut d);
    expect_refusal_with(
        &recompute(&mut d),
        tmp.path(),
        &["meta.signature", "not signed", "--allow-unsigned"],
        &["--trusted-key", &key],
    );
}

#[test]
fn unsigned_exports_need_the_flag_and_say_so_loudly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = small_export(tmp.path());
    let mut d = doc(&good);
    unsigned(&mut d);
    let text = recompute(&mut d);
    expect_refusal(&text, tmp.path(), &["meta.signature", "not signed"]);
    let file = tmp.path().join("unsigned.json");
    std::fs::write(&file, &text).expect("write");
    let data = tmp.path().join("restored");
    let (ok, o, e) = import_with(&data, &file, &["--allow-unsigned"]);
    assert!(ok, "{e}");
    assert!(e.contains("WARNING") && e.contains("NOT SIGNED"), "{e}");
    let summary: Value = serde_json::from_str(&o).expect("summary");
    assert_eq!(summary["signature"], "unsigned_accepted");
    assert_eq!(summary["signed_by"], Value::Null);
    // The state is exactly what was in the file.
    let again = tmp.path().join("again.json");
    export(&data, &again);
    assert_eq!(state_part(&good), state_part(&again));
}

#[test]
fn foreign_keys_are_refused_and_the_own_key_is_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let good = small_export(tmp.path());
    let text = std::fs::read_to_string(&good).expect("read");
    let signer = host_key(&tmp.path().join("src"));
    // No key trusted at all (a fresh data dir, no --trusted-key).
    expect_refusal(
        &text,
        tmp.path(),
        &["no key is trusted here", &signer, "--trusted-key"],
    );
    // Another host's key trusted: still foreign.
    let other = tmp.path().join("other");
    happyx_tests::init_data_dir(&other);
    let other_key = host_key(&other);
    assert_ne!(other_key, signer);
    expect_refusal_with(
        &text,
        tmp.path(),
        &["not trusted here", &signer],
        &["--trusted-key", &other_key],
    );
    // A --trusted-key that is not a key is a clear error (and does not echo it).
    let (ok, o, e) = import_with(
        &tmp.path().join("x"),
        &good,
        &["--trusted-key", "c2VjcmV0LXNoYXBlZA=="],
    );
    assert!(!ok && o.is_empty());
    assert!(e.contains("not an Ed25519 public key"), "{e}");
    assert!(!e.contains("c2VjcmV0LXNoYXBlZA"), "{e}");
    assert!(!tmp.path().join("x").exists());
    // Accepted with the flag, naming the untrusted key.
    let (ok, o, e) = import_with(&tmp.path().join("y"), &good, &["--allow-unsigned"]);
    assert!(ok, "{e}");
    assert!(
        e.contains("WARNING") && e.contains("NOT TRUST") && e.contains(&signer),
        "{e}"
    );
    let summary: Value = serde_json::from_str(&o).expect("summary");
    assert_eq!(summary["signature"], "untrusted_accepted");
    assert_eq!(summary["signed_by"], signer.as_str());
    // Restoring on the same host: its key file, copied into the new data dir, is trusted.
    let restored = tmp.path().join("restored");
    std::fs::create_dir(&restored).expect("mkdir");
    let copied = restored.join("host-signing.key");
    std::fs::copy(tmp.path().join("src/host-signing.key"), &copied).expect("copy key");
    std::fs::set_permissions(&copied, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (ok, o, e) = import(&restored, &good);
    assert!(ok, "{e}");
    assert!(!e.contains("WARNING"), "{e}");
    let summary: Value = serde_json::from_str(&o).expect("summary");
    assert_eq!(summary["signature"], "verified");
    assert_eq!(
        host_key(&restored),
        signer,
        "the restored host keeps its key"
    );
}

/// A finished echo run with `recipe`, created at `created_at`.
fn run_row(recipe: &str, created_at: i64) -> Value {
    json!({
        "action_hash": HEX64, "approval_id": null, "created_at": created_at, "error": null,
        "exit_code": 0, "finished_at": 3, "findings": 0, "host_id": null, "id": "run-1", "idempotency_key": null,
        "recipe": recipe, "requested_by": "token:abc", "risk": "low", "session_id": null,
        "recipe_plugin_sha256": null, "started_at": 2, "status": "succeeded", "stderr_bytes": 0,
        "stdout_bytes": 4, "truncated": 0, "unredacted_chunks": 0, "updated_at": 3
    })
}

fn output_row(id: &str, chunk_index: i64, byte_offset: i64, length: i64) -> Value {
    json!({
        "byte_offset": byte_offset, "chunk_index": chunk_index, "created_at": 2,
        "data": {"$base64": "aGk="}, "findings": 0, "id": id, "length": length,
        "policy_hash": null, "redacted": null, "run_id": "run-1", "stream": "stdout"
    })
}

/// The small export with one run and its output chunks, unsigned, checksum recomputed.
fn with_run(good: &Path, run: Value, outputs: Vec<Value>) -> String {
    let mut d = doc(good);
    d["tables"]["agent_runs"] = json!([run]);
    d["tables"]["agent_run_outputs"] = Value::Array(outputs);
    unsigned(&mut d);
    recompute(&mut d)
}

#[test]
fn negative_or_inconsistent_lengths_and_offsets_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = small_export(tmp.path());
    let flags = &["--allow-unsigned"][..];
    // The well-formed variant imports (a time at the last accepted millisecond included).
    let max_time = 253_402_300_799_999i64;
    let ok_text = with_run(
        &good,
        run_row("echo", max_time),
        vec![output_row("o1", 0, 0, 2), output_row("o2", 1, 2, 2)],
    );
    let file = tmp.path().join("ok-run.json");
    std::fs::write(&file, &ok_text).expect("write");
    let (ok, _, e) = import_with(&tmp.path().join("ok"), &file, flags);
    assert!(ok, "{e}");

    let out = "tables.agent_run_outputs";
    let cases: Vec<(Vec<Value>, Value, String, &str)> = vec![
        (
            vec![output_row("o1", 0, 0, -1)],
            run_row("echo", 1),
            format!("{out}[0].length"),
            "must not be negative",
        ),
        (
            vec![output_row("o1", 0, -2, 2)],
            run_row("echo", 1),
            format!("{out}[0].byte_offset"),
            "must not be negative",
        ),
        (
            vec![output_row("o1", -1, 0, 2)],
            run_row("echo", 1),
            format!("{out}[0].chunk_index"),
            "must not be negative",
        ),
        (
            vec![output_row("o1", 0, 0, 3)],
            run_row("echo", 1),
            format!("{out}[0].length"),
            "must equal the number of bytes in data",
        ),
        (
            vec![output_row("o1", 0, 0, 2), output_row("o2", 1, 1, 2)],
            run_row("echo", 1),
            format!("{out}[1].byte_offset"),
            "overlaps",
        ),
        (
            vec![output_row("o1", 1, 0, 2), output_row("o2", 0, 2, 2)],
            run_row("echo", 1),
            format!("{out}[0].byte_offset"),
            "precedes",
        ),
        (
            vec![],
            run_row("echo", -1),
            "tables.agent_runs[0].created_at".into(),
            "Unix milliseconds",
        ),
        (
            vec![],
            run_row("echo", max_time + 1),
            "tables.agent_runs[0].created_at".into(),
            "Unix milliseconds",
        ),
    ];
    for (outputs, run, path, message) in cases {
        let text = with_run(&good, run, outputs);
        expect_refusal_with(&text, tmp.path(), &[&path, message], flags);
    }
}

#[test]
fn secret_shaped_recipe_names_are_refused() {
    use base64::Engine as _;
    let tmp = tempfile::tempdir().expect("tmp");
    let good = small_export(tmp.path());
    let token = format!(
        "hpx_abcdefghij12_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32])
    );
    for recipe in [
        token.as_str(),
        "AKIAIOSFODNN7EXAMPLEwJalrXUtnFEMIK7MDENGbPxRfiCY",
        "two words",
        "",
    ] {
        let text = with_run(&good, run_row(recipe, 1), vec![]);
        expect_refusal_with(
            &text,
            tmp.path(),
            &["tables.agent_runs[0].recipe"],
            &["--allow-unsigned"],
        );
    }
}

#[test]
fn racing_processes_create_one_host_key_and_a_damaged_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    happyx_tests::init_data_dir(&data);
    let children: Vec<_> = (0..12)
        .map(|_| {
            let mut cmd = Command::new(happyx_tests::binary());
            if let Some(url) = happyx_tests::storage_url(&data) {
                cmd.env("HAPPYX_STORAGE__URL", url);
            }
            cmd.args(["host-key", "--data-dir", s(&data)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let keys: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout)
                .expect("utf-8")
                .trim()
                .to_string()
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
    let path = data.join("host-signing.key");
    let meta = std::fs::metadata(&path).expect("key file");
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Short: refused, never regenerated; export refuses too.
    std::fs::write(&path, [1u8; 16]).expect("truncate");
    let (st, o, e) = cli(&["host-key", "--data-dir", s(&data)]);
    assert!(!st.success() && o.is_empty());
    assert!(e.contains("holds 16 bytes") && e.contains(s(&path)), "{e}");
    let (st, _, e) = cli(&[
        "export",
        "--data-dir",
        s(&data),
        "--out",
        s(&tmp.path().join("x.json")),
    ]);
    assert!(!st.success() && e.contains("holds 16 bytes"), "{e}");
    assert!(!tmp.path().join("x.json").exists());
    assert_eq!(std::fs::read(&path).expect("read"), [1u8; 16]);
    // Readable by others: refused with the fix.
    std::fs::write(&path, [1u8; 32]).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (st, _, e) = cli(&["host-key", "--data-dir", s(&data)]);
    assert!(!st.success() && e.contains("chmod 600"), "{e}");
}
