//! End-to-end: one-time approvals and high-risk runs through the real binary —
//! the 64-way race, every refusal code, restarts, kill -9 after a use,
//! idempotent retries, and children that cannot reach the host's authority.

use std::time::Duration;

use happyx_tests::{Server, ServerOptions, call, client, json, temp_data_dir};
use serde_json::{Value, json};

/// Requests a high-risk run; returns (approval_id, approval_token).
fn request(server: &Server, agent: &str, body: &Value) -> (String, String) {
    let (st, b) = call(server.post("/v1/runs", agent, body));
    assert_eq!(st, 403, "{b}");
    assert_eq!(b["code"], "approval_required", "{b}");
    (
        b["approval_id"].as_str().expect("approval_id").to_string(),
        b["approval_token"]
            .as_str()
            .expect("approval_token")
            .to_string(),
    )
}

fn approve(server: &Server, op: &str, id: &str) {
    let (st, b) = call(server.post(&format!("/v1/approvals/{id}/approve"), op, &json!({})));
    assert_eq!((st, b["status"].as_str()), (200, Some("approved")), "{b}");
}

fn with_token(body: &Value, token: &str) -> Value {
    let mut b = body.clone();
    b["approval_token"] = json!(token);
    b
}

fn output(server: &Server, op: &str, id: &str) -> String {
    server
        .get(&format!("/v1/runs/{id}/output"), op)
        .send()
        .expect("send")
        .text()
        .expect("text")
}

#[test]
fn sixty_four_contenders_one_use() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let op = server.token("operator");
    let agent = server.token("agent");
    for round in 0..5 {
        let body = json!({"recipe": "shell", "args": {"command": format!("echo round {round}")}});
        let (aid, tok) = request(&server, &agent, &body);
        approve(&server, &op, &aid);
        let used = with_token(&body, &tok);
        let handles: Vec<_> = (0..64)
            .map(|_| {
                let (url, agent, used) = (server.url.clone(), agent.clone(), used.clone());
                std::thread::spawn(move || {
                    let r = client()
                        .post(format!("{url}/v1/runs"))
                        .bearer_auth(agent)
                        .json(&used)
                        .send()
                        .expect("send");
                    (r.status().as_u16(), r.text().expect("body"))
                })
            })
            .collect();
        let results: Vec<(u16, String)> = handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect();
        let created: Vec<&(u16, String)> = results.iter().filter(|(s, _)| *s == 201).collect();
        let refused: Vec<&(u16, String)> = results.iter().filter(|(s, _)| *s == 403).collect();
        assert_eq!(created.len(), 1, "round {round}: {results:?}");
        assert_eq!(refused.len(), 63);
        let bodies: std::collections::BTreeSet<&str> =
            refused.iter().map(|(_, b)| b.as_str()).collect();
        assert_eq!(bodies.len(), 1, "refusals are one identical body");
        let b: Value = serde_json::from_str(bodies.iter().next().expect("one")).expect("json");
        assert_eq!(b["code"], "approval_invalid");
        assert_eq!(
            happyx_tests::count(
                &data,
                &format!("SELECT COUNT(*) FROM approval_uses WHERE approval_id = '{aid}'")
            ),
            1
        );
        assert_eq!(
            happyx_tests::count(
                &data,
                &format!("SELECT COUNT(*) FROM agent_runs WHERE approval_id = '{aid}'")
            ),
            1
        );
    }
}

#[test]
fn refusal_codes_and_binding_to_the_exact_action() {
    let (_tmp, data) = temp_data_dir();
    // The TTL leaves a loaded machine time to request, approve and use; the expiry step waits it out.
    let cfg = "[approvals]\nttl_ms = 10000\nmax_pending_per_requester = 4\n";
    let server = Server::with_config(&data, cfg);
    let op = server.token("operator");
    let agent = server.token("agent");
    let body = json!({"recipe": "shell", "args": {"command": "echo A"}});

    // Pending.
    let (aid, tok) = request(&server, &agent, &body);
    let (st, b) = call(server.post("/v1/runs", &agent, &with_token(&body, &tok)));
    assert_eq!((st, b["code"].as_str()), (403, Some("approval_pending")));
    // The operator sees the rendered command.
    let list = json(server.get("/v1/approvals?status=pending", &op).send());
    let item = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|a| a["id"] == aid.as_str())
        .cloned()
        .expect("listed");
    assert_eq!(item["action"]["command"]["program"], "sh");
    assert_eq!(item["action"]["command"]["args"], json!(["-c", "echo A"]));
    // Self-approval is refused.
    let (st, b) = call(server.post(&format!("/v1/approvals/{aid}/approve"), &agent, &json!({})));
    assert_eq!(st, 403, "{b}");
    let op_self = server.token("operator");
    let (aid_self, _) = request(
        &server,
        &op_self,
        &json!({"recipe": "shell", "args": {"command": "echo self"}}),
    );
    let (st, b) = call(server.post(
        &format!("/v1/approvals/{aid_self}/approve"),
        &op_self,
        &json!({}),
    ));
    assert_eq!(
        (st, b["code"].as_str()),
        (403, Some("self_approval_forbidden"))
    );
    approve(&server, &op, &aid);

    let seq = server.last_seq(&op);
    let runs_before = happyx_tests::count(&data, "SELECT COUNT(*) FROM agent_runs");
    // Another action with the same token: other args, other recipe, other session.
    for other in [
        json!({"recipe": "shell", "args": {"command": "echo B"}}),
        json!({"recipe": "echo", "args": {"text": "echo A"}}),
    ] {
        let (st, b) = call(server.post("/v1/runs", &agent, &with_token(&other, &tok)));
        assert_eq!(
            (st, b["code"].as_str()),
            (403, Some("approval_invalid")),
            "{b}"
        );
    }
    // Unknown token (right shape, never issued) and garbage.
    let unknown = "hpx_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let (st, b1) = call(server.post("/v1/runs", &agent, &with_token(&body, unknown)));
    assert_eq!((st, b1["code"].as_str()), (403, Some("approval_invalid")));
    let (_, b2) = call(server.post("/v1/runs", &agent, &with_token(&body, "x")));
    assert_eq!(b1, b2, "the answer is no oracle");
    assert_eq!(server.last_seq(&op), seq, "refusals wrote events");
    assert_eq!(
        happyx_tests::count(&data, "SELECT COUNT(*) FROM agent_runs"),
        runs_before,
        "refusals created runs"
    );

    // The right action: once.
    let (st, run) = call(server.post("/v1/runs", &agent, &with_token(&body, &tok)));
    assert_eq!(st, 201, "{run}");
    assert_eq!(run["approval_id"], aid.as_str());
    let (st, b) = call(server.post("/v1/runs", &agent, &with_token(&body, &tok)));
    assert_eq!((st, &b), (403, &b1), "reuse gives the same body as unknown");
    let done = server.wait_run(&agent, run["id"].as_str().expect("id"));
    assert_eq!(done["status"], "succeeded");
    assert_eq!(output(&server, &op, run["id"].as_str().expect("id")), "A\n");

    // Denied.
    let (aid2, tok2) = request(
        &server,
        &agent,
        &json!({"recipe": "shell", "args": {"command": "echo D"}}),
    );
    let (st, _) = call(server.post(&format!("/v1/approvals/{aid2}/deny"), &op, &json!({})));
    assert_eq!(st, 200);
    let (st, b) = call(server.post(
        "/v1/runs",
        &agent,
        &with_token(
            &json!({"recipe": "shell", "args": {"command": "echo D"}}),
            &tok2,
        ),
    ));
    assert_eq!((st, &b), (403, &b1));
    let (st, b) = call(server.post(&format!("/v1/approvals/{aid2}/approve"), &op, &json!({})));
    assert_eq!(
        (st, b["code"].as_str()),
        (409, Some("approval_not_pending"))
    );

    // Expired (ttl 10 s).
    let exp_body = json!({"recipe": "shell", "args": {"command": "echo E"}});
    let (aid3, tok3) = request(&server, &agent, &exp_body);
    approve(&server, &op, &aid3);
    std::thread::sleep(Duration::from_millis(10_500));
    let (st, b) = call(server.post("/v1/runs", &agent, &with_token(&exp_body, &tok3)));
    assert_eq!((st, &b), (403, &b1));

    // Cap on pending approvals per requester (4), then 429.
    let mut codes = Vec::new();
    for i in 0..6 {
        let (st, b) = call(server.post(
            "/v1/runs",
            &agent,
            &json!({"recipe": "shell", "args": {"command": format!("echo cap{i}")}}),
        ));
        codes.push((st, b["code"].as_str().unwrap_or("").to_string()));
    }
    assert!(
        codes
            .iter()
            .any(|(s, c)| *s == 429 && c == "too_many_pending_approvals"),
        "{codes:?}"
    );
}

#[test]
fn approvals_survive_restarts_and_kill9_after_use() {
    let (_tmp, data) = temp_data_dir();
    let mut server = Server::start(&data);
    let op = server.token("operator");
    let agent = server.token("agent");
    let body = json!({"recipe": "shell", "args": {"command": "echo survived"}});
    let (aid, tok) = request(&server, &agent, &body);
    // Restart with the approval pending.
    server.kill9();
    server = Server::start(&data);
    let pending = json(server.get("/v1/approvals?status=pending", &op).send());
    assert!(
        pending["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|a| a["id"] == aid.as_str())
    );
    approve(&server, &op, &aid);
    let (st, run) = call(server.post("/v1/runs", &agent, &with_token(&body, &tok)));
    assert_eq!(st, 201, "{run}");
    // kill -9 right after the use; the token stays spent.
    server.kill9();
    let server = Server::start(&data);
    let (st, b) = call(server.post("/v1/runs", &agent, &with_token(&body, &tok)));
    assert_eq!((st, b["code"].as_str()), (403, Some("approval_invalid")));
    assert_eq!(
        happyx_tests::count(
            &data,
            &format!("SELECT COUNT(*) FROM agent_runs WHERE approval_id = '{aid}'")
        ),
        1
    );
    // The run interrupted by kill -9 is not left "running" forever.
    let r = json(
        server
            .get(
                &format!("/v1/runs/{}", run["id"].as_str().expect("id")),
                &op,
            )
            .send(),
    );
    assert!(
        matches!(r["status"].as_str(), Some("succeeded" | "lost")),
        "{r}"
    );
}

#[test]
fn idempotent_retries_return_the_same_run() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let op = server.token("operator");
    let agent = server.token("agent");
    let body = json!({"recipe": "echo", "args": {"text": "once"}});
    let send = |key: &str, b: &Value| {
        call(
            server
                .post("/v1/runs", &agent, b)
                .header("Idempotency-Key", key),
        )
    };
    let (st1, r1) = send("k-1", &body);
    let (st2, r2) = send("k-1", &body);
    assert_eq!((st1, st2), (201, 201));
    assert_eq!(r1["id"], r2["id"]);
    let (st, b) = send("k-1", &json!({"recipe": "echo", "args": {"text": "other"}}));
    assert_eq!(
        (st, b["code"].as_str()),
        (409, Some("idempotency_conflict"))
    );
    let (st, b) = send("", &body);
    assert_eq!(
        (st, b["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
    assert_eq!(
        happyx_tests::count(&data, "SELECT COUNT(*) FROM agent_runs"),
        1
    );
    // Concurrent retries with one key: one run.
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (url, agent) = (server.url.clone(), agent.clone());
            std::thread::spawn(move || {
                let r = client()
                    .post(format!("{url}/v1/runs"))
                    .bearer_auth(agent)
                    .header("Idempotency-Key", "k-2")
                    .json(&json!({"recipe": "echo", "args": {"text": "twice?"}}))
                    .send()
                    .expect("send");
                let st = r.status().as_u16();
                (
                    st,
                    r.json::<Value>().expect("json")["id"]
                        .as_str()
                        .map(str::to_string),
                )
            })
        })
        .collect();
    let ids: std::collections::BTreeSet<Option<String>> = handles
        .into_iter()
        .map(|h| {
            let (st, id) = h.join().expect("join");
            assert_eq!(st, 201);
            id
        })
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        happyx_tests::count(&data, "SELECT COUNT(*) FROM agent_runs"),
        2
    );
    // Idempotent replay of an approved high-risk run after the token was spent.
    let hb = json!({"recipe": "shell", "args": {"command": "echo hi"}});
    let (aid, tok) = request(&server, &agent, &hb);
    approve(&server, &op, &aid);
    let (st1, r1) = call(
        server
            .post("/v1/runs", &agent, &with_token(&hb, &tok))
            .header("Idempotency-Key", "k-3"),
    );
    let (st2, r2) = call(
        server
            .post("/v1/runs", &agent, &with_token(&hb, &tok))
            .header("Idempotency-Key", "k-3"),
    );
    assert_eq!((st1, st2), (201, 201), "{r2}");
    assert_eq!(r1["id"], r2["id"]);
}

#[test]
fn children_do_not_hold_the_hosts_authority() {
    let is_root = nix::unistd::geteuid().is_root();
    let (_tmp, data) = temp_data_dir();
    let canary = "CANARY-host-env-7f3a9c";
    let server = Server::start_with(
        &data,
        ServerOptions {
            env: vec![
                ("HAPPYX_TEST_CANARY_SINK".into(), String::new()),
                ("SECRET_CANARY".into(), canary.into()),
            ],
            ..Default::default()
        },
    );
    // HAPPYX_TEST_CANARY_SINK is not a config key: the host refuses to start.
    assert!(server.is_err(), "unknown HAPPYX_* variables are refused");
    let server = Server::start_with(
        &data,
        ServerOptions {
            env: vec![("SECRET_CANARY".into(), canary.into())],
            ..Default::default()
        },
    )
    .expect("start");
    let op = server.token("operator");
    let agent = server.token("agent");
    let db = data.join("happyx.db");
    let cmd = format!(
        "id -u; env; cat {db} >/dev/null && echo READ-DB; touch {dir}/planted && echo WROTE-DATA; ls {dir} && echo LISTED-DATA; exit 0",
        db = db.display(),
        dir = data.display()
    );
    let body = json!({"recipe": "shell", "args": {"command": cmd}});
    let (st, run) = server.post_approved("/v1/runs", &agent, &op, &body);
    assert_eq!(st, 201);
    let id = run["id"].as_str().expect("id").to_string();
    server.wait_run(&op, &id);
    let out = output(&server, &op, &id);
    assert!(
        !out.contains(canary),
        "the child saw the host's environment:\n{out}"
    );
    assert!(out.contains("PATH=/usr/local/bin:/usr/bin:/bin"), "{out}");
    if is_root {
        assert!(!out.starts_with("0\n"), "the child ran as root:\n{out}");
        assert!(
            !out.contains("READ-DB"),
            "the child read the database:\n{out}"
        );
        assert!(
            !out.contains("WROTE-DATA"),
            "the child wrote into the data dir:\n{out}"
        );
        assert!(
            !out.contains("LISTED-DATA"),
            "the child listed the data dir:\n{out}"
        );
        assert!(!data.join("planted").exists());
    } else {
        eprintln!("not root: run_as cannot be applied; only the environment scrub is checked");
    }
    // The host keeps working.
    let (st, _) = call(server.post("/v1/tasks", &op, &json!({"title": "still here"})));
    assert_eq!(st, 201);
}

#[test]
fn run_timeout_exit_codes_and_stderr() {
    let (_tmp, data) = temp_data_dir();
    // The sample recipe book gives `shell` its own timeout; set it to 1 s.
    let cfg = "[approvals]\nallow_self_approval = true\n[plugins.recipes.settings]\n\"shell.timeout_ms\" = \"1000\"\n";
    let server = Server::with_config(&data, cfg);
    let op = server.token("operator");
    let run = |cmd: &str| {
        let body = json!({"recipe": "shell", "args": {"command": cmd}});
        let (st, r) = server.post_approved("/v1/runs", &op, &op, &body);
        assert_eq!(st, 201, "{r}");
        server.wait_run(&op, r["id"].as_str().expect("id"))
    };
    let r = run("echo out; echo err >&2; exit 3");
    assert_eq!(
        (r["status"].as_str(), r["exit_code"].as_i64()),
        (Some("failed"), Some(3))
    );
    assert_eq!(
        (r["stdout_bytes"].as_i64(), r["stderr_bytes"].as_i64()),
        (Some(4), Some(4))
    );
    let started = std::time::Instant::now();
    let r = run("sleep 30");
    assert_eq!(r["status"], "timed_out");
    assert!(started.elapsed() < Duration::from_secs(15));
    // Unknown recipe and bad args are typed.
    let (st, b) = call(server.post("/v1/runs", &op, &json!({"recipe": "nope"})));
    assert_eq!((st, b["code"].as_str()), (422, Some("unknown_recipe")));
    let (st, b) = call(server.post(
        "/v1/runs",
        &op,
        &json!({"recipe": "echo", "args": {"txt": "x"}}),
    ));
    assert_eq!(st, 422, "{b}");
    // The caller's argument is named by its position, never by its (caller-chosen) name.
    let message = b["message"].as_str().unwrap_or("");
    assert!(message.contains("argument #1"), "{b}");
    assert!(!message.contains("txt"), "{b}");
}

#[test]
fn an_operator_risk_floor_raises_a_recipe_to_high() {
    let (_tmp, data) = temp_data_dir();
    let cfg = "[runs.risk_floor]\necho = \"high\"\n";
    let server = Server::with_config(&data, cfg);
    let agent = server.token("agent");
    let (st, b) = call(server.post(
        "/v1/runs",
        &agent,
        &json!({"recipe": "echo", "args": {"text": "hi"}}),
    ));
    assert_eq!(
        (st, b["code"].as_str()),
        (403, Some("approval_required")),
        "{b}"
    );
    // Another low-risk recipe is unaffected.
    let (st, r) = call(server.post("/v1/runs", &agent, &json!({"recipe": "git-status"})));
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["risk"], "low");
}
