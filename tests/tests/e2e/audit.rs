//! End-to-end: the tamper-evident event chain through the real binary. A data dir
//! tampered with `sqlite3` (a payload changed, a row deleted, two rows swapped, one
//! inserted, a hash removed) fails `happyx audit verify` naming the first bad `seq`;
//! pruning, a restart, an export and an import each keep the chain verifying, and an
//! import refuses an export whose chain is broken.

use std::path::{Path, PathBuf};
use std::time::Duration;

use happyx_tests::{
    Server, audit_verify, cli, copy_data_files, json, sqlite3, temp_data_dir, token,
};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `happyx audit verify ARGS`: the summary on success, else (exit code, stderr).
fn verify(args: &[&str]) -> Result<Value, (Option<i32>, String)> {
    audit_verify(args).map(|(summary, _)| summary)
}

fn verify_dir(data: &Path) -> Result<Value, (Option<i32>, String)> {
    verify(&["--data-dir", s(data)])
}

/// A stopped data dir whose log holds at least `n` events, and its head `seq`.
fn data_dir_with_events(root: &Path, n: usize) -> (PathBuf, i64) {
    let data = root.join("data");
    happyx_tests::init_data_dir(&data);
    for _ in 0..n {
        token(&data, "viewer");
    }
    let sum = verify_dir(&data).expect("a fresh log verifies");
    let head = sum["head_seq"].as_i64().expect("head");
    assert!(head >= n as i64, "{sum}");
    assert_eq!(sum["events"].as_i64(), Some(head), "{sum}");
    assert_eq!(sum["anchor_seq"], 0, "{sum}");
    (data, head)
}

#[test]
fn tampering_with_sqlite3_names_the_first_bad_seq() {
    let (tmp, _) = temp_data_dir();
    let (data, head) = data_dir_with_events(tmp.path(), 6);
    let append = format!(
        "INSERT INTO events (id, seq, at, code, actor, subject, data, hash) \
         SELECT 'forged', {}, at, code, actor, subject, data, hash FROM events WHERE seq = {head};",
        head + 1
    );
    let cases: &[(&str, &str, i64)] = &[
        (
            "payload changed",
            "UPDATE events SET data = '{\"role\":\"operator\"}' WHERE seq = 3;",
            3,
        ),
        ("row deleted", "DELETE FROM events WHERE seq = 2;", 2),
        (
            "two rows swapped",
            "UPDATE events SET seq = -2 WHERE seq = 2; UPDATE events SET seq = 2 WHERE seq = 4; \
             UPDATE events SET seq = 4 WHERE seq = -2;",
            2,
        ),
        (
            "one inserted in the middle",
            "UPDATE events SET seq = seq + 100 WHERE seq >= 4; UPDATE events SET seq = seq - 99 WHERE seq >= 100; \
             INSERT INTO events (id, seq, at, code, actor, subject, data, hash) \
             SELECT 'forged', 4, at, code, actor, subject, data, hash FROM events WHERE seq = 3;",
            4,
        ),
        ("one appended with a copied hash", &append, head + 1),
        (
            "a hash removed (never refilled by a later open)",
            "UPDATE events SET hash = NULL WHERE seq = 5;",
            5,
        ),
    ];
    for (i, (what, statements, bad)) in cases.iter().enumerate() {
        let copy = tmp.path().join(format!("tampered-{i}"));
        copy_data_files(&data, &copy);
        sqlite3(&copy, statements);
        let (code, err) = verify_dir(&copy).expect_err(what);
        assert_eq!(code, Some(1), "{what}: exit status 1: {err}");
        assert!(
            err.contains(&format!("broken at seq {bad}:")),
            "{what}: names seq {bad}: {err}"
        );
        // A restart (the host opening the database again) repairs nothing.
        let mut server = Server::start(&copy);
        server.sigterm(Duration::from_secs(20)).expect("stop");
        let (_, err) = verify_dir(&copy).expect_err(what);
        assert!(
            err.contains(&format!("broken at seq {bad}:")),
            "{what}: still seq {bad} after a restart: {err}"
        );
    }
    // The untouched original still verifies.
    verify_dir(&data).expect("original verifies");
}

#[test]
fn prune_restart_export_and_import_keep_the_chain_verifying() {
    let (tmp, data) = temp_data_dir();
    let cfg = "[retention]\ninterval_ms = 0\n[plugins.retention.settings]\n\
               \"event.max_age_ms\" = \"off\"\n\"event.max_count\" = \"3\"\n";
    let mut server = Server::with_config(&data, cfg);
    for _ in 0..7 {
        server.token("viewer");
    }
    server.sigterm(Duration::from_secs(20)).expect("stop");
    let before = verify_dir(&data).expect("verifies before the prune");
    let cfg_path = data.parent().expect("parent").join("happyx.toml");
    let (st, out, err) = cli(&["prune", "--data-dir", s(&data), "--config", s(&cfg_path)]);
    assert!(st.success(), "prune: {err}");
    let report: Value = serde_json::from_str(out.trim()).expect("report");
    let pruned = report["pruned"]["event"].as_i64().expect("events pruned");
    assert!(pruned > 0, "{report}");

    // Pruned: the anchor is the last pruned event; the rest (and the prune's own event)
    // still verify.
    let after = verify_dir(&data).expect("verifies after the prune");
    assert_eq!(after["anchor_seq"], pruned, "{after}");
    assert_ne!(after["anchor_hash"], before["anchor_hash"], "{after}");
    assert_eq!(
        after["head_seq"].as_i64(),
        before["head_seq"].as_i64().map(|h| h + 2),
        "one retention.batch_pruned and one retention.pruned event: {after}"
    );

    // Restarted: new events chain on, and the head is published.
    let server = Server::with_config(&data, cfg);
    server.token("viewer");
    let evidence = json(
        happyx_tests::client()
            .get(format!("{}/public/evidence", server.url))
            .send(),
    );
    let mut server = server;
    server.sigterm(Duration::from_secs(20)).expect("stop");
    let restarted = verify_dir(&data).expect("verifies after a restart");
    assert_eq!(
        evidence["chain_head_seq"], restarted["head_seq"],
        "{evidence}"
    );
    assert_eq!(evidence["chain_head_sha256"], restarted["head_hash"]);
    assert_eq!(evidence["chain_anchor_seq"], restarted["anchor_seq"]);
    assert_eq!(evidence["chain_anchor_sha256"], restarted["anchor_hash"]);

    // Exported: the file carries the chain and verifies offline.
    let file = tmp.path().join("export.json");
    let (st, _, err) = cli(&["export", "--data-dir", s(&data), "--out", s(&file)]);
    assert!(st.success(), "export: {err}");
    let exported = verify(&["--export", s(&file)]).expect("export verifies");
    assert_eq!(exported, restarted);

    // Imported: as exported, not re-hashed or re-based.
    let restored = tmp.path().join("restored");
    let (st, key, err) = cli(&["host-key", "--data-dir", s(&data)]);
    assert!(st.success(), "host-key: {err}");
    let key = key.trim();
    let (st, _, err) = cli(&[
        "import",
        "--data-dir",
        s(&restored),
        "--trusted-key",
        key,
        s(&file),
    ]);
    assert!(st.success(), "import: {err}");
    assert_eq!(verify_dir(&restored).expect("import verifies"), restarted);

    // An export whose chain was altered is refused by both, naming the seq.
    let first = restarted["anchor_seq"].as_i64().expect("anchor") + 2;
    let text = std::fs::read_to_string(&file).expect("read");
    let needle = format!("\"seq\":{first},");
    let tampered: String = text
        .lines()
        .map(|l| {
            if l.contains(&needle) {
                l.replacen("\"data\":\"{", "\"data\":\"{\\\"x\\\":1,", 1)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(tampered, text, "the row was found");
    let bad = tmp.path().join("tampered.json");
    std::fs::write(&bad, tampered).expect("write");
    let (code, err) = verify(&["--export", s(&bad)]).expect_err("tampered export");
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("broken at seq {first}:")), "{err}");
    let refused = tmp.path().join("refused");
    let (st, _, err) = cli(&[
        "import",
        "--data-dir",
        s(&refused),
        "--trusted-key",
        key,
        s(&bad),
    ]);
    assert!(!st.success());
    assert!(err.contains(&format!("broken at seq {first}:")), "{err}");
    assert!(!refused.exists(), "a refused import leaves nothing");
}
