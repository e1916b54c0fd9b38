//! End-to-end: signed checkpoints of the event chain through the real binary. The host signs
//! its chain head with its host key and publishes it; `happyx audit verify --checkpoint` holds a
//! data dir, an export and a running host to it, detects a log truncated behind it (with
//! `sqlite3`, which a plain chain check cannot see), refuses forged and foreign checkpoints and
//! says so when the checkpoint was pruned past. Runs and terminals name the recipe plugin that
//! rendered them, and `/public/state` counts terminal redactions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use happyx_tests::{
    Server, audit_verify, call, cli, copy_data_files, eventually, json, sqlite3, temp_data_dir,
};
use serde_json::{Value, json};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn evidence(server: &Server) -> Value {
    json(
        happyx_tests::client()
            .get(format!("{}/public/evidence", server.url))
            .send(),
    )
}

/// Waits until the published checkpoint covers `seq`; returns it.
fn checkpoint_at_least(server: &Server, seq: i64) -> Value {
    eventually(Duration::from_secs(20), || {
        let cp = evidence(server)["checkpoint"].clone();
        (cp["seq"].as_i64() >= Some(seq)).then_some(cp)
    })
    .unwrap_or_else(|| panic!("no checkpoint reached seq {seq}: {}", evidence(server)))
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).expect("write");
    p
}

const FAST: &str = "[audit]\ncheckpoint_interval_ms = 200\n";

#[test]
fn checkpoints_are_signed_published_and_hold_data_dirs_exports_and_hosts() {
    let (tmp, data) = temp_data_dir();
    let cfg = format!(
        "{FAST}[retention]\ninterval_ms = 0\n[plugins.retention.settings]\n\
         \"event.max_age_ms\" = \"off\"\n\"event.max_count\" = \"3\"\n"
    );
    let mut server = Server::with_config(&data, cfg.as_str());
    let op = server.token("operator");

    // One at start, signed by the host key `happyx host-key` prints.
    let first = checkpoint_at_least(&server, 1);
    let (st, key, err) = cli(&["host-key", "--data-dir", s(&data)]);
    assert!(st.success(), "host-key: {err}");
    let key = key.trim().to_string();
    assert_eq!(first["public_key"], key.as_str(), "{first}");
    assert_eq!(first["version"], 1);
    assert!(first["signature"].as_str().is_some_and(|v| !v.is_empty()));

    // The head moves: a newer checkpoint follows it, listed by /public/checkpoints.
    for _ in 0..4 {
        server.token("viewer");
    }
    let head = server.last_seq(&op);
    let held = checkpoint_at_least(&server, head);
    let ev = evidence(&server);
    assert_eq!(held["head_sha256"], ev["chain_head_sha256"], "{ev}");
    let (st, list) = call(happyx_tests::client().get(format!(
        "{}/public/checkpoints?from_seq={}&limit=1",
        server.url, held["seq"]
    )));
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["items"][0], held, "{list}");
    for bad in ["limit=0", "limit=1001", "from_seq=-1"] {
        let (st, b) =
            call(happyx_tests::client().get(format!("{}/public/checkpoints?{bad}", server.url)));
        assert_eq!(
            (st, b["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {b}"
        );
    }
    let (st, b) =
        call(happyx_tests::client().get(format!("{}/public/checkpoints?limit=1000", server.url)));
    assert_eq!(st, 200, "the largest page: {b}");
    let held_file = write(tmp.path(), "held.json", &held);

    // A running host is held to it: same key, not older, the same hash where still listed.
    // (Enough newer events that the prune below, which keeps 3, passes the held seq.)
    for _ in 0..5 {
        server.token("viewer");
    }
    checkpoint_at_least(&server, held["seq"].as_i64().expect("seq") + 1);
    let (live, _) = audit_verify(&["--url", &server.url, "--checkpoint", s(&held_file)])
        .expect("the live host keeps the held checkpoint");
    assert_eq!(live["standing"], "contained", "{live}");
    assert!(
        live["latest"]["seq"].as_i64() > held["seq"].as_i64(),
        "{live}"
    );
    let mut other_history = held.clone();
    other_history["head_sha256"] = json!("00".repeat(32));
    let (code, err) = audit_verify(&[
        "--url",
        &server.url,
        "--checkpoint",
        s(&write(tmp.path(), "other.json", &other_history)),
        "--trusted-key",
        &key,
    ])
    .expect_err("an altered checkpoint");
    assert_eq!(code, Some(1));
    assert!(err.contains("signature does not verify"), "{err}");
    server.sigterm(Duration::from_secs(20)).expect("stop");

    // Offline, against the data dir (its own key is trusted) and an export (--trusted-key).
    let (dir_report, _) =
        audit_verify(&["--data-dir", s(&data), "--checkpoint", s(&held_file)]).expect("data dir");
    assert_eq!(dir_report["standing"], "contained", "{dir_report}");
    assert_eq!(dir_report["checkpoint_seq"], held["seq"]);
    assert_eq!(dir_report["signed_by"], key.as_str());
    let export = tmp.path().join("export.json");
    let (st, _, err) = cli(&["export", "--data-dir", s(&data), "--out", s(&export)]);
    assert!(st.success(), "export: {err}");
    let (exp_report, _) = audit_verify(&[
        "--export",
        s(&export),
        "--checkpoint",
        s(&held_file),
        "--trusted-key",
        &key,
    ])
    .expect("export");
    assert_eq!(exp_report["standing"], "contained", "{exp_report}");
    let (_, err) = audit_verify(&["--export", s(&export), "--checkpoint", s(&held_file)])
        .expect_err("an export needs a trusted key");
    assert!(err.contains("--trusted-key"), "{err}");

    // Forged, unsigned and foreign checkpoints are refused.
    let mut forged = held.clone();
    forged["seq"] = json!(held["seq"].as_i64().expect("seq") - 1);
    let mut unsigned = held.clone();
    unsigned.as_object_mut().expect("obj").remove("signature");
    for (name, cp, says) in [
        ("forged.json", &forged, "signature does not verify"),
        ("unsigned.json", &unsigned, "malformed"),
    ] {
        let (code, err) = audit_verify(&[
            "--data-dir",
            s(&data),
            "--checkpoint",
            s(&write(tmp.path(), name, cp)),
        ])
        .expect_err(name);
        assert_eq!(code, Some(1), "{name}");
        assert!(err.contains(says), "{name}: {err}");
    }
    let (_other_tmp, other_data) = temp_data_dir();
    let mut other = Server::with_config(&other_data, FAST);
    let foreign = checkpoint_at_least(&other, 1);
    other.sigterm(Duration::from_secs(20)).expect("stop");
    let (_, err) = audit_verify(&[
        "--data-dir",
        s(&data),
        "--checkpoint",
        s(&write(tmp.path(), "foreign.json", &foreign)),
    ])
    .expect_err("another host's checkpoint");
    assert!(err.contains("not a trusted key"), "{err}");

    // The newest events removed behind the checkpoint: the chain alone still verifies, the
    // checkpoint names the first missing seq.
    let cut = held["seq"].as_i64().expect("seq") - 2;
    let truncated = tmp.path().join("truncated");
    copy_data_files(&data, &truncated);
    sqlite3(
        &truncated,
        &format!("DELETE FROM events WHERE seq > {cut};"),
    );
    let (plain, _) =
        audit_verify(&["--data-dir", s(&truncated)]).expect("the chain alone verifies");
    assert_eq!(plain["head_seq"], cut, "{plain}");
    let (code, err) = audit_verify(&["--data-dir", s(&truncated), "--checkpoint", s(&held_file)])
        .expect_err("truncated behind the checkpoint");
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("events from seq {} on were removed", cut + 1)),
        "{err}"
    );
    // An event before the checkpoint changed: the first bad seq is named.
    let changed = tmp.path().join("changed");
    copy_data_files(&data, &changed);
    sqlite3(
        &changed,
        &format!(
            "UPDATE events SET data = '{{\"x\":1}}' WHERE seq = {};",
            cut
        ),
    );
    let (_, err) = audit_verify(&["--data-dir", s(&changed), "--checkpoint", s(&held_file)])
        .expect_err("changed");
    assert!(err.contains(&format!("broken at seq {cut}:")), "{err}");

    // Pruned past the checkpoint: reported as such, on stdout and stderr.
    let cfg_path = data.parent().expect("parent").join("happyx.toml");
    let (st, _, err) = cli(&["prune", "--data-dir", s(&data), "--config", s(&cfg_path)]);
    assert!(st.success(), "prune: {err}");
    let (plain, _) = audit_verify(&["--data-dir", s(&data)]).expect("verifies after the prune");
    assert!(
        plain["anchor_seq"].as_i64() > held["seq"].as_i64(),
        "{plain}"
    );
    let (pruned, note) = audit_verify(&["--data-dir", s(&data), "--checkpoint", s(&held_file)])
        .expect("pruned past is not a failure");
    assert_eq!(pruned["standing"], "pruned", "{pruned}");
    assert!(note.contains("was pruned"), "{note}");
    // The first checkpoint's seq is older still: the same.
    let (first_report, _) = audit_verify(&[
        "--data-dir",
        s(&data),
        "--checkpoint",
        s(&write(tmp.path(), "first.json", &first)),
    ])
    .expect("first");
    assert_eq!(first_report["standing"], "pruned");

    // Evidence counts the events present; the digest's last seq keeps its own name.
    let server = Server::with_config(&data, cfg.as_str());
    let ev = evidence(&server);
    let present = ev["chain_head_seq"].as_i64().expect("head")
        - ev["chain_anchor_seq"].as_i64().expect("anchor");
    assert_eq!(ev["event_count"].as_i64(), Some(present), "{ev}");
    assert_eq!(ev["event_log_last_seq"], ev["chain_head_seq"], "{ev}");
    assert!(
        ev["event_count"].as_i64() < ev["chain_head_seq"].as_i64(),
        "{ev}"
    );
    // verify-public accepts the published checkpoint (its key and signature verify).
    let (st, out, err) = cli(&["verify-public", "--url", &server.url]);
    assert!(st.success(), "verify-public: {out} {err}");
}

#[test]
fn runs_and_terminals_name_their_recipe_plugin_and_terminal_redactions_are_counted() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(
        &data,
        "[approvals]\nallow_self_approval = true\n[public]\nruns = true\n",
    );
    let op = server.token("operator");
    let plugins = json(server.get("/v1/plugins", &op).send());
    let recipes = plugins
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["kind"] == "recipes")
        .expect("recipes plugin")["sha256"]
        .clone();
    assert!(recipes.as_str().is_some_and(|h| h.len() == 64), "{plugins}");

    let (st, run) = call(server.post(
        "/v1/runs",
        &op,
        &json!({"recipe": "echo", "args": {"text": "hi"}}),
    ));
    assert_eq!(st, 201, "{run}");
    assert_eq!(run["recipe_plugin_sha256"], recipes, "{run}");
    let id = run["id"].as_str().expect("id");
    let done = server.wait_run(&op, id);
    assert_eq!(done["recipe_plugin_sha256"], recipes, "{done}");
    let (st, shown, err) = happyx_tests::cli_env(
        &["runs", "show", id],
        &[("HAPPYX_URL", &server.url), ("HAPPYX_TOKEN", &op)],
    );
    assert!(st.success(), "runs show: {err}");
    let line = shown
        .lines()
        .find(|l| l.starts_with("recipe plugin"))
        .unwrap_or_else(|| panic!("no recipe plugin line: {shown}"));
    assert!(line.ends_with(recipes.as_str().expect("hex")), "{line}");
    let public = json(
        happyx_tests::client()
            .get(format!("{}/public/runs", server.url))
            .send(),
    );
    let listed = public["items"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"] == id))
        .unwrap_or_else(|| panic!("run not listed: {public}"));
    assert_eq!(listed["recipe_plugin_sha256"], recipes, "{listed}");

    let state = |server: &Server| {
        json(
            happyx_tests::client()
                .get(format!("{}/public/state", server.url))
                .send(),
        )
    };
    let before = state(&server);
    assert_eq!(before["redaction"]["terminals"]["findings"], 0, "{before}");
    let secret = "AKIAIOSFODNN7EXAMPLE";
    let (st, p) = server.post_approved(
        "/v1/pty",
        &op,
        &op,
        &json!({"recipe": "shell", "args": {"command": format!("echo key={secret}; echo end-$((1+1))")}}),
    );
    assert_eq!(st, 201, "{p}");
    assert_eq!(p["recipe_plugin_sha256"], recipes, "{p}");
    let pty_id = p["id"].as_str().expect("id").to_string();
    let got = json(server.get(&format!("/v1/pty/{pty_id}"), &op).send());
    assert_eq!(got["recipe_plugin_sha256"], recipes, "{got}");
    let after = eventually(Duration::from_secs(20), || {
        let v = state(&server);
        (v["redaction"]["terminals"]["findings"].as_i64() >= Some(1)).then_some(v)
    })
    .unwrap_or_else(|| panic!("terminal findings never counted: {}", state(&server)));
    let runs = &after["redaction"]["runs"];
    let terminals = &after["redaction"]["terminals"];
    assert_eq!(
        after["redacted_findings"].as_i64(),
        Some(runs["findings"].as_i64().expect("n") + terminals["findings"].as_i64().expect("n")),
        "{after}"
    );
    assert_eq!(
        after["withheld_chunks"].as_i64(),
        Some(
            runs["withheld_chunks"].as_i64().expect("n")
                + terminals["withheld_chunks"].as_i64().expect("n")
        ),
        "{after}"
    );
    assert!(
        after["redacted_findings"].as_i64() > before["redacted_findings"].as_i64(),
        "{before} -> {after}"
    );
}
