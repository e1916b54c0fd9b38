//! End-to-end: the real binary over real HTTP — tokens and roles, tasks,
//! sessions and permissions, the gap-free event log, bad input, concurrency,
//! kill -9 durability, migrations, the serve lock and graceful shutdown.

use std::time::{Duration, Instant};

use happyx_tests::{Server, ServerOptions, call, cli, client, json, temp_data_dir};
use serde_json::{Value, json};

fn assert_gap_free(events: &[Value]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["seq"].as_i64(),
            Some(i as i64 + 1),
            "gap or duplicate at {i}: {e}"
        );
    }
}

#[test]
fn roles_resources_events_and_kill9_durability() {
    let (_tmp, data) = temp_data_dir();
    let mut server = Server::start(&data);
    let op = server.token("operator");
    let agent = server.token("agent");
    let agent2 = server.token("agent");
    let viewer = server.token("viewer");

    // Tasks: agent creates, viewer reads, agent2 cannot see agent's task.
    let (st, task) = call(server.post(
        "/v1/tasks",
        &agent,
        &json!({"title": "fix the build", "description": "ci is red"}),
    ));
    assert_eq!(st, 201, "{task}");
    assert_eq!(task["status"], "open");
    let tid = task["id"].as_str().expect("id").to_string();
    let (st, _) = call(server.get(&format!("/v1/tasks/{tid}"), &viewer));
    assert_eq!(st, 200);
    let (st, body) = call(server.get(&format!("/v1/tasks/{tid}"), &agent2));
    assert_eq!((st, body["code"].as_str()), (404, Some("not_found")));
    let (st, body) = call(server.post("/v1/tasks", &viewer, &json!({"title": "nope"})));
    assert_eq!((st, body["code"].as_str()), (403, Some("forbidden")));
    let (st, t) = call(server.patch(
        &format!("/v1/tasks/{tid}"),
        &agent,
        &json!({"status": "in_progress"}),
    ));
    assert_eq!((st, t["status"].as_str()), (200, Some("in_progress")));
    let (st, _) = call(server.patch(
        &format!("/v1/tasks/{tid}"),
        &agent2,
        &json!({"status": "done"}),
    ));
    assert_eq!(st, 404);

    // Sessions linked to the task.
    let (st, s) = call(server.post(
        "/v1/sessions",
        &agent,
        &json!({"name": "pairing", "task_id": tid}),
    ));
    assert_eq!(st, 201, "{s}");
    let sid = s["id"].as_str().expect("id").to_string();
    let (st, s) = call(server.patch(
        &format!("/v1/sessions/{sid}"),
        &op,
        &json!({"status": "closed"}),
    ));
    assert_eq!((st, s["status"].as_str()), (200, Some("closed")));

    // Permissions: operator only.
    let grant =
        json!({"subject": "dev123", "action": "pty.drive", "scope": format!("session:{sid}")});
    let (st, _) = call(server.post("/v1/permissions", &agent, &grant));
    assert_eq!(st, 403);
    let (st, p) = call(server.post("/v1/permissions", &op, &grant));
    assert_eq!(st, 201, "{p}");
    let pid = p["id"].as_str().expect("id").to_string();
    let (st, p) = call(server.patch(
        &format!("/v1/permissions/{pid}"),
        &op,
        &json!({"status": "revoked"}),
    ));
    assert_eq!((st, p["status"].as_str()), (200, Some("revoked")));
    let (st, _) = call(server.get("/v1/permissions", &agent));
    assert_eq!(st, 403);

    // Paging through tasks.
    for i in 0..7 {
        let (st, _) = call(server.post("/v1/tasks", &op, &json!({"title": format!("t{i}")})));
        assert_eq!(st, 201);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("/v1/tasks?limit=3&after={a}"),
            None => "/v1/tasks?limit=3".to_string(),
        };
        let page = json(server.get(&q, &viewer).send());
        for t in page["items"].as_array().expect("items") {
            seen.push(t["id"].as_str().expect("id").to_string());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages are in id order without repeats");
    // An agent lists only its own.
    let page = json(server.get("/v1/tasks", &agent).send());
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));

    // Events: in order, gap-free, agents may not read the log.
    let (st, _) = call(server.get("/v1/events", &agent));
    assert_eq!(st, 403);
    let events = server.events(&op);
    assert_gap_free(&events);
    let codes: Vec<&str> = events.iter().filter_map(|e| e["code"].as_str()).collect();
    for want in [
        "host.started",
        "token.created",
        "task.created",
        "task.status_changed",
        "session.created",
        "permission.granted",
        "permission.status_changed",
    ] {
        assert!(codes.contains(&want), "missing {want} in {codes:?}");
    }
    let last = events.len();

    // kill -9 and restart: every acknowledged write is still there.
    server.kill9();
    let server = Server::start(&data);
    let (st, t) = call(server.get(&format!("/v1/tasks/{tid}"), &op));
    assert_eq!((st, t["status"].as_str()), (200, Some("in_progress")));
    let (st, s) = call(server.get(&format!("/v1/sessions/{sid}"), &op));
    assert_eq!((st, s["status"].as_str()), (200, Some("closed")));
    let events = server.events(&op);
    assert_gap_free(&events);
    assert_eq!(
        events.len(),
        last + 1,
        "only the new host.started was added"
    );
    assert_eq!(events[last]["code"], "host.started");
}

#[test]
fn bad_input_is_typed_and_writes_nothing() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let op = server.token("operator");
    let viewer = server.token("viewer");
    let before = server.last_seq(&op);
    let url = |p: &str| format!("{}{p}", server.url);
    let raw = |body: &str| {
        client()
            .post(url("/v1/tasks"))
            .bearer_auth(&op)
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    let cases: Vec<(reqwest::blocking::RequestBuilder, u16, &str)> = vec![
        (raw("{\"title\": "), 400, "invalid_json"),
        (raw("not json"), 400, "invalid_json"),
        (raw("{\"title\": 7}"), 422, "invalid_field"),
        (
            raw("{\"title\": \"x\", \"owner\": \"me\"}"),
            422,
            "invalid_field",
        ),
        (raw("{}"), 422, "invalid_field"),
        (raw("{\"title\": \"\"}"), 422, "invalid_field"),
        (
            raw(&format!("{{\"title\": \"{}\"}}", "a".repeat(300 * 1024))),
            413,
            "body_too_large",
        ),
        (
            client()
                .post(url("/v1/tasks"))
                .bearer_auth(&op)
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "unsupported_media_type",
        ),
        (
            client().get(url("/v1/nope")).bearer_auth(&op),
            404,
            "not_found",
        ),
        (
            client().delete(url("/v1/tasks")).bearer_auth(&op),
            405,
            "method_not_allowed",
        ),
        (
            client().post(url("/v1/tasks")).json(&json!({"title": "x"})),
            401,
            "unauthorized",
        ),
        (
            client()
                .post(url("/v1/tasks"))
                .bearer_auth("hpx_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
                .json(&json!({"title": "x"})),
            401,
            "unauthorized",
        ),
        (
            client()
                .post(url("/v1/tasks"))
                .bearer_auth("garbage")
                .json(&json!({"title": "x"})),
            401,
            "unauthorized",
        ),
        (
            client()
                .post(url("/v1/tasks"))
                .bearer_auth(&viewer)
                .json(&json!({"title": "x"})),
            403,
            "forbidden",
        ),
        (
            client().get(url("/v1/tasks?limit=0")).bearer_auth(&op),
            400,
            "invalid_query",
        ),
        (
            client().get(url("/v1/tasks?limit=abc")).bearer_auth(&op),
            400,
            "invalid_query",
        ),
        (
            client().get(url("/v1/events?limit=1001")).bearer_auth(&op),
            400,
            "invalid_query",
        ),
        (
            client()
                .get(url("/v1/tasks/..%2F..%2Fetc"))
                .bearer_auth(&op),
            404,
            "not_found",
        ),
        (
            client()
                .patch(url("/v1/tasks/does-not-exist"))
                .bearer_auth(&op)
                .json(&json!({"status": "done"})),
            404,
            "not_found",
        ),
        (
            client()
                .post(url("/v1/sessions"))
                .bearer_auth(&op)
                .json(&json!({"name": "s", "kind": "bogus"})),
            422,
            "invalid_field",
        ),
        (
            client()
                .post(url("/v1/permissions"))
                .bearer_auth(&op)
                .json(&json!({"subject": "d", "action": "a", "scope": "*", "expires_at": 1})),
            422,
            "invalid_field",
        ),
    ];
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let (st, body) = call(req);
        assert_eq!(st, status, "case {i}: {body}");
        assert_eq!(body["code"].as_str(), Some(code), "case {i}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "case {i}: {body}"
        );
    }
    // The field is named in the message.
    let (_, body) = call(raw("{\"title\": 7}"));
    assert!(
        body["message"].as_str().unwrap_or("").contains("title"),
        "{body}"
    );
    let (_, body) = call(raw("{\"title\": \"x\", \"owner\": \"me\"}"));
    assert!(
        body["message"].as_str().unwrap_or("").contains("owner"),
        "{body}"
    );

    // Revoked token: 401 from then on.
    let agent = server.token("agent");
    let id = &agent[4..16];
    let (st, out, _) = cli(&[
        "token",
        "revoke",
        "--data-dir",
        data.to_str().expect("path"),
        id,
    ]);
    assert!(st.success());
    assert_eq!(out.trim(), id);
    let before_revoke = server.last_seq(&op);
    let (st, _) = call(server.post("/v1/tasks", &agent, &json!({"title": "x"})));
    assert_eq!(st, 401);
    assert_eq!(
        server.last_seq(&op),
        before_revoke,
        "a refused request wrote an event"
    );
    // Only token events (create + revoke) moved the sequence.
    assert_eq!(before_revoke, before + 2);
    let page = json(server.get("/v1/tasks", &op).send());
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(0),
        "nothing was written"
    );
    // Tokens never appear in the server's log.
    let log = server.stderr();
    assert!(
        !log.contains(&op[16..]) && !log.contains(&agent[16..]),
        "a token secret reached the log"
    );
}

#[test]
fn concurrent_writers_make_a_gap_free_log() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let op = server.token("operator");
    let before = server.last_seq(&op);
    let url = server.url.clone();
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let (url, op) = (url.clone(), op.clone());
            std::thread::spawn(move || {
                let c = client();
                let mut ok = 0;
                for j in 0..5 {
                    let r = c
                        .post(format!("{url}/v1/tasks"))
                        .bearer_auth(&op)
                        .json(&json!({"title": format!("w{i}-{j}")}))
                        .send()
                        .expect("send");
                    assert_eq!(r.status().as_u16(), 201);
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let total: i32 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    assert_eq!(total, 320);
    let events = server.events(&op);
    assert_gap_free(&events);
    let created = events
        .iter()
        .filter(|e| e["code"] == "task.created")
        .count();
    assert_eq!(created, 320);
    assert_eq!(events.len() as i64, before + 320);
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "duplicate event ids");
}

/// Tokens are checked through a cache, yet a revocation takes effect at once: 16 clients read
/// with a token while `happyx token revoke` (another process) revokes it, and every request
/// that starts after the command returned is refused.
#[test]
fn a_revocation_by_another_process_refuses_every_request_that_starts_after_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let (_tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let viewer = server.token("viewer");
    let id = viewer[4..16].to_string();
    let stop = Arc::new(AtomicBool::new(false));
    // (start, status) of every request, by every client.
    let seen: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (url, token, stop, seen) = (
                server.url.clone(),
                viewer.clone(),
                stop.clone(),
                seen.clone(),
            );
            std::thread::spawn(move || {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let r = c.get(format!("{url}/v1/tasks")).bearer_auth(&token).send();
                    if let Ok(r) = r {
                        seen.lock()
                            .expect("lock")
                            .push((start, r.status().as_u16()));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let dir = data.to_str().expect("path");
    let (st, _, err) = cli(&["token", "revoke", "--data-dir", dir, &id]);
    assert!(st.success(), "{err}");
    let returned = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    let seen = seen.lock().expect("lock");
    let before = seen.iter().filter(|(t, _)| *t < returned).count();
    let ok_before = seen
        .iter()
        .filter(|(t, st)| *t < returned && *st == 200)
        .count();
    let after: Vec<u16> = seen
        .iter()
        .filter(|(t, _)| *t > returned)
        .map(|(_, st)| *st)
        .collect();
    assert!(
        ok_before > 100,
        "the token worked before: {ok_before} of {before}"
    );
    assert!(
        after.len() > 100,
        "requests after the revocation: {}",
        after.len()
    );
    assert!(
        after.iter().all(|st| *st == 401),
        "{} of {} requests after the revocation were not refused",
        after.iter().filter(|st| **st != 401).count(),
        after.len()
    );
}

#[test]
fn token_cli_works_while_serving_and_never_prints_secrets_twice() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let op = server.token("operator");
    let dir = data.to_str().expect("path");
    let (st, out, _) = cli(&[
        "token",
        "create",
        "--data-dir",
        dir,
        "--role",
        "viewer",
        "--name",
        "dash",
    ]);
    assert!(st.success());
    let viewer = out.trim().to_string();
    assert!(viewer.starts_with("hpx_"));
    let (st, _) = call(server.get("/v1/tasks", &viewer));
    assert_eq!(st, 200, "a token created while serving works at once");
    let (st, out, _) = cli(&["token", "list", "--data-dir", dir]);
    assert!(st.success());
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .any(|r| r["name"] == "dash" && r["role"] == "viewer")
    );
    assert!(
        !out.contains(&op[16..]) && !out.contains(&viewer[16..]),
        "list leaked a secret"
    );
    let (st, _, err) = cli(&["token", "create", "--data-dir", dir, "--role", "root"]);
    assert!(!st.success());
    assert!(err.contains("root"), "{err}");
}

#[test]
fn migrations_lock_and_newer_schema() {
    let (_tmp, data) = temp_data_dir();
    let mut server = Server::start(&data);
    let op = server.token("operator");
    // A second serve on the same data dir is refused with a clear message.
    let second = Server::start_with(&data, ServerOptions::default());
    let err = second.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("already served"), "{err}");
    let (st, _) = call(server.get("/v1/tasks", &op));
    assert_eq!(st, 200, "the first server keeps serving");
    server.sigterm(Duration::from_secs(10)).expect("stops");

    // A second start is a no-op for the schema.
    let migrations = || happyx_tests::count(&data, "SELECT COUNT(*) FROM _sqlx_migrations");
    let n1 = migrations();
    let server = Server::start(&data);
    drop(server);
    assert_eq!(migrations(), n1);

    if happyx_tests::sqlite_only(
        "a newer schema is written into happyx.db here; the store's tests refuse one on PostgreSQL",
    ) {
        return;
    }
    let db = data.join("happyx.db");
    // A newer schema is refused, naming both versions.
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.expect("open");
        sqlx::query("INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) VALUES (9999, 'future', CURRENT_TIMESTAMP, 1, x'00', 0)")
            .execute(&pool)
            .await
            .expect("insert");
        pool.close().await;
    });
    let refused = Server::start_with(&data, ServerOptions::default());
    let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("newer") && err.contains("9999"), "{err}");
}

#[test]
fn config_errors_are_clear() {
    let (tmp, data) = temp_data_dir();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[storage]\nsynchronus = \"full\"\n").expect("write");
    let (st, out, err) = cli(&[
        "serve",
        "--data-dir",
        data.to_str().expect("p"),
        "--config",
        cfg.to_str().expect("p"),
    ]);
    assert!(!st.success());
    assert!(out.is_empty(), "nothing on stdout on failure: {out}");
    assert!(err.contains("synchronus"), "{err}");
    let (st, _, err) = cli(&[
        "serve",
        "--data-dir",
        data.to_str().expect("p"),
        "--config",
        "/nonexistent/happyx.toml",
    ]);
    assert!(!st.success());
    assert!(err.contains("/nonexistent/happyx.toml"), "{err}");
    let (st, _, err) = happyx_tests::cli_env(
        &["serve", "--data-dir", data.to_str().expect("p")],
        &[("HAPPYX_API__MAX_BODY_BYTES", "lots")],
    );
    assert!(!st.success());
    assert!(err.contains("max_body_bytes"), "{err}");
    // Port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let (st, _, err) = cli(&[
        "serve",
        "--data-dir",
        data.to_str().expect("p"),
        "--listen",
        &addr,
    ]);
    assert!(!st.success());
    assert!(err.contains(&addr), "{err}");
    // A data dir that is a file.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").expect("write");
    let (st, _, err) = cli(&["serve", "--data-dir", file.to_str().expect("p")]);
    assert!(!st.success());
    assert!(err.contains("file"), "{err}");
}

#[test]
fn sigterm_drains_in_flight_requests() {
    use std::io::Read;
    let (_tmp, data) = temp_data_dir();
    let mut server = Server::start(&data);
    let op = server.token("operator");
    // A request whose body trickles in over ~1.5 s is in flight when SIGTERM lands.
    struct Slow {
        parts: Vec<Vec<u8>>,
    }
    impl Read for Slow {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.parts.is_empty() {
                return Ok(0);
            }
            std::thread::sleep(Duration::from_millis(300));
            let p = self.parts.remove(0);
            buf[..p.len()].copy_from_slice(&p);
            Ok(p.len())
        }
    }
    let body = br#"{"title": "slow but acknowledged"}"#.to_vec();
    let parts: Vec<Vec<u8>> = body.chunks(7).map(<[u8]>::to_vec).collect();
    let url = format!("{}/v1/tasks", server.url);
    let tok = op.clone();
    let inflight = std::thread::spawn(move || {
        client()
            .post(url)
            .bearer_auth(tok)
            .header("content-type", "application/json")
            .body(reqwest::blocking::Body::new(Slow { parts }))
            .send()
            .map(|r| r.status().as_u16())
    });
    std::thread::sleep(Duration::from_millis(400));
    let started = std::time::Instant::now();
    let status = server
        .sigterm(Duration::from_secs(15))
        .expect("server exits");
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(inflight.join().expect("thread").expect("response"), 201);
    // The acknowledged task is there after a restart.
    let server = Server::start(&data);
    let page = json(server.get("/v1/tasks", &op).send());
    assert_eq!(page["items"][0]["title"], "slow but acknowledged");
}

#[test]
fn openapi_lists_every_route() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let doc = json(
        client()
            .get(format!("{}/v1/openapi.json", server.url))
            .send(),
    );
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/healthz",
        "/v1/openapi.json",
        "/metrics",
        "/v1/events",
        "/v1/tasks",
        "/v1/tasks/{id}",
        "/v1/sessions",
        "/v1/sessions/{id}",
        "/v1/permissions",
        "/v1/permissions/{id}",
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/output",
        "/v1/recipes",
        "/v1/approvals",
        "/v1/approvals/{id}/approve",
        "/v1/approvals/{id}/deny",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    // Path parameters are the template's own; query strings are declared as query.
    for (p, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            for param in operation["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().expect("name");
                let templated = p.contains(&format!("{{{name}}}"));
                assert_eq!(
                    param["in"] == "path",
                    templated,
                    "{method} {p}: parameter {name} is declared in {}",
                    param["in"]
                );
            }
        }
    }
    let transcript = &paths["/v1/pty/{id}/transcript"]["get"]["parameters"];
    assert!(
        transcript
            .as_array()
            .expect("params")
            .iter()
            .any(|p| p["name"] == "from" && p["in"] == "query" && p["required"] != true),
        "{transcript}"
    );
    // Every documented GET route without parameters answers (no 404/405).
    let op = server.token("operator");
    for (p, item) in paths {
        if item.get("get").is_some() && !p.contains('{') {
            let resp = client()
                .get(format!("{}{p}", server.url))
                .bearer_auth(&op)
                .send()
                .expect("send");
            let st = resp.status().as_u16();
            let body = resp.text().unwrap_or_default();
            // Optional public views answer 404 naming the switch that is off.
            let switched_off = st == 404 && body.contains("is off");
            assert!(
                switched_off || (st != 404 && st != 405),
                "{p} documented but answered {st}: {body}"
            );
        }
    }
    let health = json(client().get(format!("{}/healthz", server.url)).send());
    assert_eq!(health["status"], "ok");
}

#[test]
fn the_example_api_client_runs_against_a_real_host() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let op = server.token("operator");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/api-client/client.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .env("HAPPYX_URL", &server.url)
        .env("HAPPYX_TOKEN", &op)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let mut lines = stdout.lines();
    let task: Value = serde_json::from_str(lines.next().unwrap_or("")).expect("task JSON");
    assert_eq!(task["status"], "open");
    let session: Value = serde_json::from_str(lines.next().unwrap_or("")).expect("session JSON");
    assert_eq!(session["task_id"], task["id"]);
    let events: Vec<&str> = lines.collect();
    assert!(
        events.iter().any(|l| l.contains("task.created")),
        "{stdout}"
    );
    assert!(
        events.iter().any(|l| l.contains("session.created")),
        "{stdout}"
    );
    assert!(stderr.contains("invalid_field"), "{stderr}");
    assert!(!stdout.contains(&op[16..]) && !stderr.contains(&op[16..]));
}
