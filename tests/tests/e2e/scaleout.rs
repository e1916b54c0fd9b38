//! End-to-end: several real hosts on one real PostgreSQL database (`storage.url`), each with
//! its own data dir, as behind a load balancer. What SQLite gets from its single writer must
//! hold across hosts: an approval token is spent once among all of them, and the event log
//! stays gap-free and hash-chained under writers on every host. The database comes from the
//! test cluster (`TEST_POSTGRES_URL`, see `happyx_store::test_support`); without one
//! these tests skip, except under CI.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use happyx_tests::{Server, ServerOptions, call, cli_env, client, eventually, json, temp_data_dir};
use serde_json::{Value, json};

/// A fresh database on the test cluster, or `None` (skipped).
fn database() -> Option<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(happyx_store::test_support::postgres_database())
}

/// `n` hosts on the database `url`, each on its own data dir.
fn hosts(url: &str, n: usize) -> Vec<(tempfile::TempDir, Server)> {
    hosts_with(url, n, None)
}

/// [`hosts`], each with the configuration `config`.
fn hosts_with(url: &str, n: usize, config: Option<&str>) -> Vec<(tempfile::TempDir, Server)> {
    (0..n)
        .map(|_| {
            let (tmp, data) = temp_data_dir();
            let server = host(url, &data, config);
            (tmp, server)
        })
        .collect()
}

/// A host on the database `url` with the data dir `data`.
fn host(url: &str, data: &std::path::Path, config: Option<&str>) -> Server {
    let opts = ServerOptions {
        env: vec![("HAPPYX_STORAGE__URL".into(), url.into())],
        config: config.map(str::to_string),
        ..ServerOptions::default()
    };
    Server::start_with(data, opts).expect("a host on PostgreSQL starts")
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

const CLUSTER: &str =
    "[approvals]\nallow_self_approval = true\n[cluster]\nsweep_interval_ms = 200\n";

/// GETs `path` on `url` with `token`: (status, body).
fn get(url: &str, token: &str, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{url}{path}"))
        .bearer_auth(token)
        .send()
        .expect("send");
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

/// The output bytes of a live attach opened through `url` until `needle` shows (or 20 s).
fn attach_until(url: &str, op: &str, id: &str, needle: &str) -> String {
    use futures::StreamExt;
    let (st, t) = post(
        url,
        op,
        &format!("/v1/pty/{id}/attach"),
        &json!({"mode": "observe"}),
    );
    assert_eq!(st, 201, "{t}");
    let ticket = t["ticket"].as_str().expect("ticket").to_string();
    let ws_url = format!(
        "{}/v1/pty/{id}/ws?ticket={ticket}&offset=0",
        url.replace("http://", "ws://")
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("attach through this host");
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !String::from_utf8_lossy(&seen).contains(needle) {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b)))) => {
                    seen.extend_from_slice(&b[12..]);
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    })
}

/// kill -9 of one host while the others serve: no acknowledged write is lost, its terminal is
/// reached through the other hosts while it lives (control and live attach forwarded to it),
/// answers `owner_unavailable` while it is gone, and is adopted when it comes back; its run
/// is marked `lost` by a surviving host.
#[test]
fn kill_9_one_host_while_the_others_serve() {
    let Some(url) = database() else { return };
    let mut hosts = hosts_with(&url, 3, Some(CLUSTER));
    let op = hosts[0].1.token("operator");
    let (a_url, b_url, c_url) = (
        hosts[0].1.url.clone(),
        hosts[1].1.url.clone(),
        hosts[2].1.url.clone(),
    );
    // Every host sees every host, alive.
    let (st, listed) = get(&b_url, &op, "/v1/hosts");
    assert_eq!(st, 200, "{listed}");
    let listed = listed.as_array().expect("hosts").clone();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|h| h["alive"] == true), "{listed:?}");
    assert_eq!(listed.iter().filter(|h| h["this"] == true).count(), 1);

    // A terminal and a run on host A.
    let body = json!({"recipe": "shell", "args": {"command": "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.2; done"}});
    let (st, pty) = hosts[0].1.post_approved("/v1/pty", &op, &op, &body);
    assert_eq!(st, 201, "{pty}");
    let pty_id = pty["id"].as_str().expect("id").to_string();
    let pid = pty["pid"].as_i64().expect("pid");
    let run_body = json!({"recipe": "shell", "args": {"command": "sleep 60"}});
    let (st, run) = hosts[0].1.post_approved("/v1/runs", &op, &op, &run_body);
    assert_eq!(st, 201, "{run}");
    let run_id = run["id"].as_str().expect("id").to_string();

    // Through B: resize is forwarded to A; through C: live attach is relayed from A.
    let (st, resized) = post(
        &b_url,
        &op,
        &format!("/v1/pty/{pty_id}/resize"),
        &json!({"rows": 30, "cols": 100}),
    );
    assert_eq!(st, 200, "{resized}");
    assert_eq!(resized["id"], pty_id.as_str());
    // A console session signed in on B: its cookie, CSRF proof and origin reach A too.
    let signed_in = client()
        .post(format!("{b_url}/v1/console/session"))
        .header("Origin", &b_url)
        .json(&json!({ "token": op }))
        .send()
        .expect("sign in");
    assert_eq!(signed_in.status().as_u16(), 201);
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let csrf: Value = signed_in.json().expect("json");
    let resized = client()
        .post(format!("{b_url}/v1/pty/{pty_id}/resize"))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", csrf["csrf_token"].as_str().expect("csrf"))
        .header("Origin", &b_url)
        .json(&json!({"rows": 32, "cols": 110}))
        .send()
        .expect("resize");
    assert_eq!(
        resized.status().as_u16(),
        200,
        "a console resize through another host: {}",
        resized.text().unwrap_or_default()
    );
    let seen = attach_until(&c_url, &op, &pty_id, "tick3");
    assert!(
        seen.contains("tick3"),
        "attach through another host: {seen:?}"
    );
    let events = hosts[2].1.events(&op);
    assert!(
        events
            .iter()
            .any(|e| e["code"] == "pty.resize" && e["subject"] == pty_id.as_str()),
        "the owner ran the forwarded resize"
    );

    // Writers on B and C throughout; A dies in the middle.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = [b_url.clone(), c_url.clone(), b_url.clone(), c_url.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, target)| {
            let (op, stop) = (op.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (st, t) = post(
                        &target,
                        &op,
                        "/v1/tasks",
                        &json!({"title": format!("w{w}-{i}")}),
                    );
                    assert_eq!(st, 201, "a surviving host failed a write: {t}");
                    acked.push(t["id"].as_str().expect("id").to_string());
                    i += 1;
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (a_tmp, mut a) = hosts.remove(0);
    let a_data = a.data_dir.clone();
    a.kill9();
    std::thread::sleep(Duration::from_millis(500));

    // A is gone: its run is lost (marked by a survivor), its terminal waits for it.
    let lost = eventually(Duration::from_secs(20), || {
        let (_, r) = get(&b_url, &op, &format!("/v1/runs/{run_id}"));
        (r["status"] == "lost").then_some(r)
    });
    assert!(lost.is_some(), "the dead host's run was never marked lost");
    let (st, refused) = post(
        &c_url,
        &op,
        &format!("/v1/pty/{pty_id}/resize"),
        &json!({"rows": 20, "cols": 80}),
    );
    assert_eq!(
        (st, refused["code"].as_str()),
        (503, Some("owner_unavailable")),
        "{refused}"
    );
    let (_, p) = get(&b_url, &op, &format!("/v1/pty/{pty_id}"));
    assert_eq!(p["state"], "running", "a terminal waits for its host: {p}");
    let (_, listed) = get(&c_url, &op, "/v1/hosts");
    let a_row = listed
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["advertise_url"] == a_url.as_str())
        .cloned()
        .expect("A is listed");
    assert_eq!(a_row["alive"], false, "{a_row}");
    // Run and terminal views name their owner: A, as the host list gives its id.
    let a_id = a_row["id"].as_str().expect("host id");
    assert!(a_id.starts_with("h-"), "{a_row}");
    assert_eq!(
        lost.as_ref().map(|r| r["host_id"].clone()),
        Some(json!(a_id))
    );
    assert_eq!(p["host_id"], a_id, "{p}");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    assert!(acked.len() > 8, "writes went on: {}", acked.len());

    // A comes back on its data dir: it adopts its terminal (same child), which is reachable
    // through the other hosts again.
    let a = host(&url, &a_data, Some(CLUSTER));
    let (_, p) = get(&a.url, &op, &format!("/v1/pty/{pty_id}"));
    assert_eq!(
        (p["state"].as_str(), p["pid"].as_i64()),
        (Some("running"), Some(pid)),
        "{p}"
    );
    let events = a.events(&op);
    assert!(
        events
            .iter()
            .any(|e| e["code"] == "pty.adopt" && e["subject"] == pty_id.as_str()),
        "the terminal was adopted"
    );
    let (st, resized) = post(
        &b_url,
        &op,
        &format!("/v1/pty/{pty_id}/resize"),
        &json!({"rows": 40, "cols": 120}),
    );
    assert_eq!(st, 200, "{resized}");

    // No acknowledged write is lost.
    let tasks: Vec<String> = {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/tasks?limit=50&after={c}"),
                None => "/v1/tasks?limit=50".to_string(),
            };
            let page = json(a.get(&path, &op).send());
            let items = page["items"].as_array();
            for t in items.unwrap_or_else(|| panic!("no items: {page}")) {
                all.push(t["id"].as_str().expect("id").to_string());
            }
            match page["next"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        all
    };
    // Read page by page (`after` = the previous page's `next`): a listing that stopped at its
    // first page would miss writes once there are more than one page of them.
    let missing: Vec<&String> = acked.iter().filter(|id| !tasks.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    // The terminal ends with its host's kill, forwarded from C.
    let (st, _) = post(&c_url, &op, &format!("/v1/pty/{pty_id}/kill"), &json!({}));
    assert_eq!(st, 200);
    drop(a);
    drop(a_tmp);
}

/// A plugin reload on one host reaches the others: each reads its own configuration again
/// (as a deploy that edited every host's file), records a `peer` reload, and `GET /v1/plugins`
/// on any host shows what every host serves.
#[test]
fn a_plugin_reload_on_one_host_is_seen_by_the_others() {
    let Some(url) = database() else { return };
    let hosts = hosts_with(&url, 3, Some(CLUSTER));
    let op = hosts[0].1.token("operator");
    let dir = hosts[0].0.path().join("plugins");
    let (st, _, err) =
        happyx_tests::cli(&["plugin", "export-builtin", dir.to_str().expect("utf-8")]);
    assert!(st.success(), "{err}");
    let redactor = dir.join("redactor.wasm");
    for (tmp, _) in &hosts {
        std::fs::write(
            tmp.path().join("happyx.toml"),
            format!(
                "{CLUSTER}[plugins.redactor]\npath = \"{}\"\n",
                redactor.display()
            ),
        )
        .expect("edit the host's config");
    }
    let (st, b) = post(&hosts[1].1.url, &op, "/v1/plugins/reload", &json!({}));
    assert_eq!(st, 200, "{b}");
    let source_on = |h: &Server| -> String {
        let (_, list) = get(&h.url, &op, "/v1/plugins");
        list.as_array()
            .expect("plugins")
            .iter()
            .find(|p| p["kind"] == "redactor")
            .map(|p| p["source"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    for (i, (_, h)) in hosts.iter().enumerate() {
        let reached = eventually(Duration::from_secs(15), || {
            (source_on(h) == redactor.display().to_string()).then_some(())
        });
        assert!(
            reached.is_some(),
            "host {i} never reloaded: {}",
            source_on(h)
        );
    }
    let peers = hosts[0]
        .1
        .events(&op)
        .into_iter()
        .filter(|e| e["code"] == "plugins.reloaded" && e["data"]["trigger"] == "peer")
        .count();
    assert_eq!(peers, 2, "the two other hosts each reloaded once");
    let (_, list) = get(&hosts[2].1.url, &op, "/v1/plugins");
    let redactor_row = list
        .as_array()
        .expect("plugins")
        .iter()
        .find(|p| p["kind"] == "redactor")
        .cloned()
        .expect("redactor");
    let per_host = redactor_row["hosts"].as_object().expect("hosts");
    assert_eq!(per_host.len(), 3, "{redactor_row}");
    assert!(
        per_host.values().all(|v| v == &redactor_row["sha256"]),
        "{redactor_row}"
    );
}

/// A copy of a host's data dir (its signing key, so its host id) cannot serve beside it: two
/// processes as one host would adopt each other's terminals. The copy is refused with the fix.
#[test]
fn a_copy_of_a_data_dir_cannot_serve_as_a_second_host() {
    let Some(url) = database() else { return };
    let hosts = hosts(&url, 1);
    let (copy_tmp, copy) = temp_data_dir();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&copy)
            .expect("mkdir");
    }
    std::fs::copy(
        hosts[0].1.data_dir.join("host-signing.key"),
        copy.join("host-signing.key"),
    )
    .expect("copy the key");
    let opts = ServerOptions {
        env: vec![("HAPPYX_STORAGE__URL".into(), url.clone())],
        ..ServerOptions::default()
    };
    let started = std::time::Instant::now();
    let refused = Server::start_with(&copy, opts);
    let stderr = match refused {
        Ok(_) => panic!("a second process served as the same host"),
        Err(e) => e.to_string(),
    };
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refused at once, not after a timeout: {:?}",
        started.elapsed()
    );
    drop(copy_tmp);
    assert!(
        stderr.contains("another process serves as host") && stderr.contains("data dir of its own"),
        "{stderr}"
    );
}

/// POSTs the envelope JSON `body` to session `session` on the host at `url`: (status, body).
fn post_envelope(url: &str, session: &str, body: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{url}/v1/sessions/{session}/envelopes"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("send");
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

/// One sender posting to two hosts by turns: every sequence number is accepted once, in
/// order; a replay on the other host is refused; one envelope raced to both hosts at once is
/// accepted once; and the reader sees every message once, in order, through either host.
#[test]
fn one_sender_alternating_hosts_is_accepted_once_and_in_order() {
    use crate::envelopes::{craft, enroll, envelope_count, now_ms, open_session, read};
    let Some(url) = database() else { return };
    let hosts = hosts(&url, 2);
    let (a, b) = (&hosts[0].1, &hosts[1].1);
    let op = a.token("operator");
    let tmp = tempfile::tempdir().expect("tmp");
    // Enrolled through different hosts; the session opened through a third path.
    let sender = enroll(a, &op, tmp.path().join("sender"));
    let reader = enroll(b, &op, tmp.path().join("reader"));
    let session = open_session(b, &sender, &[&reader]);
    const N: u64 = 40;
    let now = now_ms();
    let wires: Vec<String> = (1..=N + 1)
        .map(|seq| craft(&sender, &session, 0, seq, now, &format!("m{seq}")).to_json())
        .collect();
    for (i, w) in wires[..N as usize].iter().enumerate() {
        let (here, there) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let (st, v) = post_envelope(&here.url, &session, w);
        assert_eq!(st, 201, "sequence {} on one host: {v}", i + 1);
        let (st, v) = post_envelope(&there.url, &session, w);
        assert_eq!(
            (st, v["code"].as_str()),
            (409, Some("replayed")),
            "sequence {} replayed on the other host: {v}",
            i + 1
        );
    }
    // An older sequence number with new content is refused on either host.
    let late = craft(&sender, &session, 0, N / 2, now, "rewritten").to_json();
    for h in [a, b] {
        let (st, v) = post_envelope(&h.url, &session, &late);
        assert_eq!(st, 409, "{v}");
    }
    // The next envelope raced to both hosts at once: accepted once.
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let (target, session, wire) = (
                hosts[i % 2].1.url.clone(),
                session.clone(),
                wires[N as usize].clone(),
            );
            std::thread::spawn(move || post_envelope(&target, &session, &wire).0)
        })
        .collect();
    let statuses: Vec<u16> = racers
        .into_iter()
        .map(|r| r.join().expect("join"))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    for h in [a, b] {
        assert_eq!(envelope_count(h, &op, &session), (N + 1) as i64);
    }
    // Read back through each host: every message once, in sequence order.
    for h in [a, b] {
        let (ok, out, err) = read(h, &reader, &session, &[&sender]);
        assert!(ok, "read: {err}");
        let texts: Vec<u64> = out
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter_map(|w| w.strip_prefix('m')?.parse().ok())
            .collect();
        assert_eq!(texts, (1..=N + 1).collect::<Vec<_>>(), "{out}");
    }
}

/// Single-use things raced over two hosts: an enrollment code enrolls one device, an
/// idempotency key makes one run, an attach ticket opens one socket.
#[test]
fn single_use_codes_keys_and_tickets_are_used_once_across_hosts() {
    use crate::envelopes::{device_cli, s};
    let Some(url) = database() else { return };
    let hosts = hosts_with(&url, 2, Some(CLUSTER));
    let urls: Vec<String> = hosts.iter().map(|(_, h)| h.url.clone()).collect();
    let op = hosts[0].1.token("operator");
    let tmp = tempfile::tempdir().expect("tmp");

    // One enrollment code, eight devices enrolling with it through both hosts at once.
    let (st, code) = post(&urls[0], &op, "/v1/enrollments", &json!({}));
    assert_eq!(st, 201, "{code}");
    let code = code["code"].as_str().expect("code").to_string();
    let dirs: Vec<PathBuf> = (0..8).map(|i| tmp.path().join(format!("dev{i}"))).collect();
    for d in &dirs {
        let (ok, _, err) = device_cli(&["keygen", "--dir", s(d)], "");
        assert!(ok, "{err}");
    }
    let enrolls: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (d, url, code) = (d.clone(), urls[i % 2].clone(), code.clone());
            std::thread::spawn(move || {
                device_cli(
                    &["enroll", "--dir", s(&d), "--url", &url, "--code", &code],
                    "",
                )
                .0
            })
        })
        .collect();
    let enrolled = enrolls
        .into_iter()
        .map(|e| e.join().expect("join"))
        .filter(|ok| *ok)
        .count();
    assert_eq!(enrolled, 1, "one code, one device");

    // One idempotency key, sixteen requests over both hosts: one run, the same to all.
    let ids: Vec<_> = (0..16)
        .map(|i| {
            let (url, op) = (urls[i % 2].clone(), op.clone());
            std::thread::spawn(move || {
                let r = client()
                    .post(format!("{url}/v1/runs"))
                    .bearer_auth(&op)
                    .header("idempotency-key", "deploy-42")
                    .json(&json!({"recipe": "echo", "args": {"text": "once"}}))
                    .send()
                    .expect("send");
                let st = r.status().as_u16();
                let v: Value = r.json().unwrap_or(Value::Null);
                (st, v["id"].as_str().unwrap_or("").to_string())
            })
        })
        .collect();
    let ids: Vec<(u16, String)> = ids.into_iter().map(|h| h.join().expect("join")).collect();
    assert!(ids.iter().all(|(st, _)| *st == 201), "{ids:?}");
    assert!(
        ids.iter().all(|(_, id)| id == &ids[0].1),
        "one run for one key: {ids:?}"
    );

    // One attach ticket, opened through both hosts at once: one socket.
    let body = json!({"recipe": "shell", "args": {"command": "sleep 30"}});
    let (st, pty) = hosts[0].1.post_approved("/v1/pty", &op, &op, &body);
    assert_eq!(st, 201, "{pty}");
    let id = pty["id"].as_str().expect("id").to_string();
    let (st, t) = post(
        &urls[1],
        &op,
        &format!("/v1/pty/{id}/attach"),
        &json!({"mode": "observe"}),
    );
    assert_eq!(st, 201, "{t}");
    let ticket = t["ticket"].as_str().expect("ticket").to_string();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let opened = rt.block_on(async {
        let tries = urls.iter().flat_map(|u| [u.clone(), u.clone()]).map(|u| {
            let ws = format!(
                "{}/v1/pty/{id}/ws?ticket={ticket}",
                u.replace("http://", "ws://")
            );
            tokio::spawn(
                async move { tokio_tungstenite::connect_async(ws).await.map(|(ws, _)| ws) },
            )
        });
        let mut open = Vec::new();
        for t in tries.collect::<Vec<_>>() {
            if let Ok(ws) = t.await.expect("join") {
                open.push(ws);
            }
        }
        open.len()
    });
    assert_eq!(opened, 1, "one ticket, one socket");
    let (st, _) = post(&urls[1], &op, &format!("/v1/pty/{id}/kill"), &json!({}));
    assert_eq!(st, 200);
}
