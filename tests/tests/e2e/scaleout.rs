//! End-to-end: several real hosts on one real PostgreSQL database (`storage.url`), each with
//! its own data dir, as behind a load balancer. What SQLite gets from its single writer must
//! hold across hosts: an approval token is spent once among all of them, and the event log
//! stays gap-free and hash-chained under writers on every host. The database comes from the
//! test cluster (`TEST_POSTGRES_URL`, see `happyx_store::test_support`); without one
//! these tests skip, except under CI.

use std::collections::BTreeMap;
use std::path::PathBuf;

use happyx_tests::{Server, ServerOptions, call, cli_env, client, temp_data_dir};
use serde_json::{Value, json};

/// A fresh database on the test cluster, or `None` (skipped).
fn database() -> Option<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(happyx_store::test_support::postgres_database())
}

/// `n` hosts on the database `url`, each on its own data dir.
fn hosts(url: &str, n: usize) -> Vec<(tempfile::TempDir, Server)> {
    (0..n)
        .map(|_| {
            let (tmp, data) = temp_data_dir();
            let opts = ServerOptions {
                env: vec![("HAPPYX_STORAGE__URL".into(), url.into())],
                ..ServerOptions::default()
            };
            let server = Server::start_with(&data, opts).expect("a host on PostgreSQL starts");
            (tmp, server)
        })
        .collect()
}

/// POSTs `body` to `path` on `url` with `token`: (status, body).
fn post(url: &str, token: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .expect("send");
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

#[test]
fn two_hosts_spend_each_approval_token_once_among_them() {
    let Some(url) = database() else { return };
    let hosts = hosts(&url, 2);
    let (a, b) = (&hosts[0].1, &hosts[1].1);
    // Tokens live in the shared database: minted through one host's CLI, valid on both.
    let op = a.token("operator");
    let agent = b.token("agent");
    for round in 0..8 {
        let body = json!({"recipe": "shell", "args": {"command": format!("echo round {round}")}});
        let (st, asked) = call(a.post("/v1/runs", &agent, &body));
        assert_eq!(
            (st, asked["code"].as_str()),
            (403, Some("approval_required"))
        );
        let id = asked["approval_id"].as_str().expect("approval_id");
        // Approved on the other host.
        let (st, decided) = call(b.post(&format!("/v1/approvals/{id}/approve"), &op, &json!({})));
        assert_eq!((st, decided["status"].as_str()), (200, Some("approved")));
        let mut used = body.clone();
        used["approval_token"] = asked["approval_token"].clone();
        // 32 contenders per host, all at once.
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let (target, agent, used) =
                    (hosts[i % 2].1.url.clone(), agent.clone(), used.clone());
                std::thread::spawn(move || post(&target, &agent, "/v1/runs", &used))
            })
            .collect();
        let results: Vec<(u16, Value)> = handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect();
        let created: Vec<&Value> = results
            .iter()
            .filter(|(s, _)| *s == 201)
            .map(|(_, b)| b)
            .collect();
        let refused: Vec<&Value> = results
            .iter()
            .filter(|(s, _)| *s == 403)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(created.len(), 1, "round {round}: {results:?}");
        assert_eq!(refused.len(), 63, "round {round}: {results:?}");
        assert!(refused.iter().all(|b| b["code"] == "approval_invalid"));
        // Either host reports the one run of this approval.
        for h in [a, b] {
            let (st, runs) = call(h.get("/v1/runs?limit=100", &op));
            assert_eq!(st, 200);
            let of_this = runs["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter(|r| r["approval_id"].as_str() == Some(id))
                .count();
            assert_eq!(of_this, 1, "round {round}");
        }
        // The one run ran, and its output was stored, whichever host started it.
        let run_id = created[0]["id"].as_str().expect("run id");
        let done = b.wait_run(&op, run_id);
        assert_eq!(done["status"], "succeeded", "{done}");
        let out = a
            .get(&format!("/v1/runs/{run_id}/output"), &op)
            .send()
            .expect("send")
            .text()
            .expect("text");
        assert!(out.contains(&format!("round {round}")), "{out}");
    }
}

#[test]
fn writers_on_three_hosts_keep_the_event_log_gap_free_and_chained() {
    let Some(url) = database() else { return };
    let hosts = hosts(&url, 3);
    let op = hosts[0].1.token("operator");
    let before = hosts[0].1.last_seq(&op);
    const WRITERS: usize = 64;
    const EACH: usize = 5;
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (target, op) = (hosts[w % 3].1.url.clone(), op.clone());
            std::thread::spawn(move || {
                (0..EACH)
                    .map(|i| {
                        post(
                            &target,
                            &op,
                            "/v1/tasks",
                            &json!({"title": format!("w{w}-{i}")}),
                        )
                        .0
                    })
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().expect("join").iter().all(|s| *s == 201));
    }
    // Every host sees one log: the same events, numbered 1, 2, 3, … with no gap.
    let logs: Vec<Vec<Value>> = hosts.iter().map(|(_, h)| h.events(&op)).collect();
    let seqs: Vec<i64> = logs[0]
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert!(
        logs.iter().all(|l| l == &logs[0]),
        "hosts disagree on the log"
    );
    let created = logs[0]
        .iter()
        .filter(|e| e["seq"].as_i64() > Some(before) && e["code"] == "task.created")
        .count();
    assert_eq!(created, WRITERS * EACH);
    // The chain verifies from the database itself, through the CLI of any host.
    let dir: &PathBuf = &hosts[2].1.data_dir;
    let (st, out, err) = cli_env(
        &[
            "audit",
            "verify",
            "--data-dir",
            dir.to_str().expect("utf-8"),
        ],
        &[("HAPPYX_STORAGE__URL", &url)],
    );
    assert!(st.success(), "audit verify: {err}");
    let summary: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        summary["events"].as_i64(),
        Some(seqs.len() as i64),
        "{summary}"
    );
    // And the URL's password appears in nothing the CLI or the hosts printed.
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, p)| p.to_string())
        .expect("the test URL has a password");
    let mut printed: BTreeMap<String, String> = BTreeMap::new();
    printed.insert("audit verify".into(), format!("{out}{err}"));
    for (i, (_, h)) in hosts.iter().enumerate() {
        printed.insert(format!("host {i}"), h.stderr());
    }
    for (what, text) in printed {
        assert!(
            !text.contains(&password),
            "{what} printed the database password"
        );
    }
}

#[test]
fn the_retention_pass_runs_on_one_host_at_a_time() {
    let Some(url) = database() else { return };
    let hosts = hosts(&url, 1);
    let dir = hosts[0].1.data_dir.to_str().expect("utf-8").to_string();
    let env = [("HAPPYX_STORAGE__URL", url.as_str())];
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Another host's pass, as the lock it holds: `happyx prune` here refuses, writing nothing.
    let other = rt.block_on(async {
        let cfg = happyx_store::config::StorageConfig {
            url: Some(happyx_store::config::DatabaseUrl::parse(&url).expect("url")),
            ..Default::default()
        };
        let scratch = tempfile::tempdir().expect("tempdir");
        let store = happyx_store::Store::open(scratch.path(), &cfg)
            .await
            .expect("open");
        let guard = store
            .try_exclusive(happyx_store::Exclusive::Retention)
            .await
            .expect("try")
            .expect("nobody holds it yet");
        (store, guard)
    });
    let (st, out, err) = cli_env(&["prune", "--data-dir", &dir], &env);
    assert!(!st.success(), "prune ran beside another host's pass: {out}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("another host is running the retention pass"),
        "{err}"
    );
    // That host's pass ends (or the host dies and its connection with it): this one runs.
    let (store, guard) = other;
    rt.block_on(async {
        guard.release().await;
        store.close().await;
    });
    let (st, out, err) = cli_env(&["prune", "--data-dir", &dir], &env);
    assert!(st.success(), "prune after the other pass ended: {err}");
    let report: Value = serde_json::from_str(&out).expect("one JSON report");
    assert!(report["pruned"].is_object(), "{report}");
}
