//! End-to-end: what stopped or confused new operators, policy authors and API client authors
//! in their first hour — each through the real binary: a spawn failure recorded in the run,
//! an unreachable workspace refused at start with the directory to fix, client variables
//! that are not server configuration, a mistyped data dir refused instead of created, and the
//! opening of the PTY WebSocket (no 2 s wait, no dropped first input).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use happyx_tests::{Server, ServerOptions, call, cli_env, json, temp_data_dir};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[test]
fn a_run_that_cannot_start_says_why_in_the_run_its_event_and_the_api() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: uid allocation needs a host running as root");
        return;
    }
    let (_tmp, data) = temp_data_dir();
    // One uid in the range: the second identity's child cannot be placed.
    let server = Server::with_config(&data, "[runs]\nuid_range = [3900000, 3900000]\n");
    let op = server.token("operator");
    let first = server.token("agent");
    let second = server.token("agent");
    let echo = json!({"recipe": "echo", "args": {"text": "hi"}});
    let (st, r) = call(server.post("/v1/runs", &first, &echo));
    assert_eq!(st, 201, "{r}");
    let done = server.wait_run(&op, r["id"].as_str().expect("id"));
    assert_eq!(done["status"], "succeeded", "{done}");
    let (st, r) = call(server.post("/v1/runs", &second, &echo));
    assert_eq!(st, 201, "{r}");
    let id = r["id"].as_str().expect("id");
    let done = server.wait_run(&second, id);
    assert_eq!(done["status"], "spawn_failed", "{done}");
    let error = done["error"].as_str().expect("error message");
    assert!(error.contains("uid_range"), "{error}");
    let event = server
        .events(&op)
        .into_iter()
        .find(|e| e["code"] == "run.finished" && e["subject"] == id)
        .expect("run.finished event");
    assert_eq!(event["data"]["status"], "spawn_failed", "{event}");
    assert_eq!(event["data"]["error"], error, "{event}");
}

#[test]
fn a_workspace_the_children_cannot_reach_is_refused_at_start_naming_the_directory() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: children run as another user only when the host is root");
        return;
    }
    let (tmp, data) = temp_data_dir();
    let closed = tmp.path().join("closed");
    std::fs::create_dir(&closed).expect("mkdir");
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let ws = closed.join("ws");
    let config = format!("[runs]\nworkspaces = [\"{}\"]\n", ws.display());
    let err = Server::start_with(
        &data,
        ServerOptions {
            config: Some(config),
            ..Default::default()
        },
    )
    .err()
    .expect("the host refuses to start");
    let text = format!("{err:#}");
    assert!(text.contains(&closed.display().to_string()), "{text}");
    assert!(text.contains("chmod o+x"), "{text}");
    assert!(text.contains("0700"), "{text}");
}

#[test]
fn client_variables_are_not_server_configuration() {
    let (_tmp, data) = temp_data_dir();
    let env = [
        ("HAPPYX_URL", "http://127.0.0.1:1"),
        ("HAPPYX_TOKEN", "hpx_notarealtoken"),
        ("HAPPYX_TOKEN_FILE", "/nonexistent"),
    ];
    let server = Server::start_with(
        &data,
        ServerOptions {
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            ..Default::default()
        },
    )
    .expect("serve starts with client variables set");
    let dir = data.to_str().expect("utf-8");
    let (st, out, err) = cli_env(
        &["token", "create", "--data-dir", dir, "--role", "viewer"],
        &env,
    );
    assert!(st.success(), "{err}");
    assert!(out.trim().starts_with("hpx_"), "{out}");
    drop(server);
}

#[test]
fn a_mistyped_data_dir_is_refused_and_data_dir_commands_take_the_config() {
    let (tmp, data) = temp_data_dir();
    happyx_tests::init_data_dir(&data);
    let typo = tmp.path().join("typo");
    for args in [
        vec!["token", "create", "--role", "operator"],
        vec!["token", "list"],
        vec!["prune"],
    ] {
        let mut full: Vec<&str> = args.clone();
        full.extend(["--data-dir", typo.to_str().expect("utf-8")]);
        let (st, out, err) = cli_env(&full, &[]);
        assert!(!st.success(), "{args:?} accepted a missing data dir: {out}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains("no HappyX data dir"), "{err}");
        assert!(!typo.exists(), "{args:?} created the mistyped data dir");
    }
    let out_file = tmp.path().join("x.json");
    let (st, _, err) = cli_env(
        &[
            "export",
            "--data-dir",
            typo.to_str().expect("utf-8"),
            "--out",
            out_file.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(!st.success() && err.contains("no HappyX data dir"), "{err}");
    // --config names the data dir, as for serve.
    let config = tmp.path().join("ops.toml");
    std::fs::write(&config, format!("data_dir = \"{}\"\n", data.display())).expect("write");
    let (st, out, err) = cli_env(
        &[
            "token",
            "create",
            "--config",
            config.to_str().expect("utf-8"),
            "--role",
            "viewer",
        ],
        &[],
    );
    assert!(st.success(), "{err}");
    assert!(out.trim().starts_with("hpx_"), "{out}");
    let (st, out, err) = cli_env(
        &["token", "list"],
        &[("HAPPYX_CONFIG", config.to_str().expect("utf-8"))],
    );
    assert!(st.success(), "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn the_pty_websocket_says_hello_at_once_and_keeps_a_first_input() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(&data, "[approvals]\nallow_self_approval = true\n");
    let op = server.token("operator");
    let body = json!({"recipe": "shell", "args": {"command": "echo ready; read line; echo got-$line; sleep 100"}});
    let (st, p) = server.post_approved("/v1/pty", &op, &op, &body);
    assert_eq!(st, 201, "{p}");
    let id = p["id"].as_str().expect("id").to_string();
    let ticket = |mode: &str| -> String {
        let (st, t) =
            call(server.post(&format!("/v1/pty/{id}/attach"), &op, &json!({"mode": mode})));
        assert_eq!(st, 201, "{t}");
        t["ticket"].as_str().expect("ticket").to_string()
    };
    let base = server.url.replace("http://", "ws://");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    // With ?offset: hello at once.
    let url = format!(
        "{base}/v1/pty/{id}/ws?ticket={}&offset=0",
        ticket("observe")
    );
    let took = rt.block_on(async {
        let started = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("\"hello\"") => break started.elapsed(),
                Some(Ok(_)) => continue,
                other => panic!("no hello: {other:?}"),
            }
        }
    });
    assert!(took < Duration::from_millis(500), "hello took {took:?}");
    // Without ?offset, the first frame is an input: it reaches the program.
    let url = format!("{base}/v1/pty/{id}/ws?ticket={}", ticket("drive"));
    let seen = rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
        let input = json!({"type": "input", "data": "first\r"}).to_string();
        ws.send(Message::Text(input.into())).await.expect("send");
        let mut bytes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) if b.len() >= 12 => {
                    bytes.extend_from_slice(&b[12..])
                }
                Ok(Some(Ok(_))) | Err(_) => {}
                _ => break,
            }
            if String::from_utf8_lossy(&bytes).contains("got-first") {
                break;
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    });
    assert!(
        seen.contains("got-first"),
        "the first input was dropped: {seen:?}"
    );
    let events = json(server.get(&format!("/v1/pty/{id}"), &op).send());
    assert_eq!(events["state"], "running", "{events}");
}

#[test]
fn the_access_log_and_metrics_name_routes_identities_and_codes_never_tokens() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let op = server.token("operator");
    let id = op.split('_').nth(1).expect("token id").to_string();
    let (st, _) = call(server.get("/v1/runs/0123456789abcdef0123456789abcdef", &op));
    assert_eq!(st, 404);
    let (st, _) = call(server.get("/v1/tasks", &op));
    assert_eq!(st, 200);
    // A run calls the recipe plugin (render) and the redactor (its output).
    let agent = server.token("agent");
    let (st, run) = call(server.post(
        "/v1/runs",
        &agent,
        &json!({"recipe": "echo", "args": {"text": "hi"}}),
    ));
    assert_eq!(st, 201, "{run}");
    server.wait_run(&agent, run["id"].as_str().expect("run id"));
    let metrics = happyx_tests::client()
        .get(format!("{}/metrics", server.url))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    for needle in [
        "happyx_http_request_duration_seconds_bucket{le=\"0.008\",method=\"GET\",route=\"/v1/runs/{id}\",status=\"4xx\"}",
        "happyx_failures_total{code=\"not_found\"} 1",
        "happyx_build_info{version=",
        "happyx_pending_approvals 0",
        "happyx_pty_holders 0",
        "happyx_envelope_queue 0",
        "happyx_plugin_calls_total{kind=\"recipes\"}",
        "happyx_plugin_call_duration_seconds_count{plugin=\"recipes\",call=\"render\",outcome=\"ok\"} 1",
        "happyx_plugin_call_duration_seconds_count{plugin=\"redactor\",call=\"redact\",outcome=\"ok\"}",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("0123456789abcdef0123456789abcdef"),
        "an id reached a label"
    );
    let log = happyx_tests::eventually(Duration::from_secs(5), || {
        let log = server.stderr();
        log.contains("route=/v1/tasks").then_some(log)
    })
    .expect("the access log names the route");
    let line = log
        .lines()
        .find(|l| l.contains("happyx::access") && l.contains("route=/v1/runs/{id}"))
        .expect("an access line for the 404");
    assert!(line.contains("status=404"), "{line}");
    assert!(line.contains(&format!("identity=\"{id}\"")), "{line}");
    assert!(line.contains("code=\"not_found\""), "{line}");
    assert!(!log.contains(&op), "a token reached the log");
}

/// A real agent CLI in a terminal, through the approval model: the program comes from the
/// operator's allowlist in the recipe plugin's settings; the operator approves, watches and
/// drives it. A small stand-in plays the agent.
#[test]
fn an_allowlisted_agent_cli_runs_in_an_approved_terminal_and_is_driven() {
    let (tmp, data) = temp_data_dir();
    let agent_cli = tmp.path().join("fake-agent");
    std::fs::write(
        &agent_cli,
        "#!/bin/sh\necho \"fake-agent ready: $1\"\nwhile read line; do echo \"agent heard: $line\"; done\n",
    )
    .expect("write stand-in");
    std::fs::set_permissions(&agent_cli, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = format!(
        "[plugins.recipes.settings]\n\"agent_cli.programs\" = \"fake={}\"\n",
        agent_cli.display()
    );
    let server = Server::with_config(&data, config);
    let op = server.token("operator");
    let agent = server.token("agent");
    // Not on the allowlist: refused before any approval, naming the parameter.
    let (st, e) = call(server.post(
        "/v1/pty",
        &agent,
        &json!({"recipe": "agent-cli", "args": {"agent": "claude"}}),
    ));
    assert_eq!((st, e["code"].as_str()), (422, Some("invalid_arg")), "{e}");
    let body =
        json!({"recipe": "agent-cli", "args": {"agent": "fake", "prompt": "fix the flaky test"}});
    let (st, req) = call(server.post("/v1/pty", &agent, &body));
    assert_eq!(
        (st, req["code"].as_str()),
        (403, Some("approval_required")),
        "{req}"
    );
    // The operator sees exactly which program and argument would run.
    let pending = json(server.get("/v1/approvals?status=pending", &op).send());
    let action = &pending["items"][0]["action"];
    assert_eq!(
        action["command"]["program"],
        agent_cli.display().to_string().as_str(),
        "{action}"
    );
    assert_eq!(
        action["command"]["args"],
        json!(["fix the flaky test"]),
        "{action}"
    );
    let id = req["approval_id"].as_str().expect("id");
    let (st, _) = call(server.post(&format!("/v1/approvals/{id}/approve"), &op, &json!({})));
    assert_eq!(st, 200);
    let mut used = body.clone();
    used["approval_token"] = req["approval_token"].clone();
    let (st, p) = call(server.post("/v1/pty", &agent, &used));
    assert_eq!(st, 201, "{p}");
    let pid = p["id"].as_str().expect("id").to_string();
    let (st, t) = call(server.post(
        &format!("/v1/pty/{pid}/attach"),
        &op,
        &json!({"mode": "drive"}),
    ));
    assert_eq!(st, 201, "{t}");
    let url = format!(
        "{}/v1/pty/{pid}/ws?ticket={}&offset=0",
        server.url.replace("http://", "ws://"),
        t["ticket"].as_str().expect("ticket")
    );
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let seen = rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
        let mut bytes = Vec::new();
        let mut typed = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) if b.len() >= 12 => {
                    bytes.extend_from_slice(&b[12..])
                }
                Ok(Some(Ok(_))) | Err(_) => {}
                _ => break,
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if !typed && text.contains("fake-agent ready: fix the flaky test") {
                let input = json!({"type": "input", "data": "run the tests\r"}).to_string();
                ws.send(Message::Text(input.into())).await.expect("send");
                typed = true;
            }
            if text.contains("agent heard: run the tests") {
                break;
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    });
    assert!(
        seen.contains("fake-agent ready: fix the flaky test"),
        "{seen:?}"
    );
    assert!(seen.contains("agent heard: run the tests"), "{seen:?}");
}
