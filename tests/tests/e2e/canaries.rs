//! The canary harness: plants unique canary values in every input the host
//! accepts (task titles and descriptions, session names, permission scopes,
//! run args and output, token names, bad request bodies, query strings,
//! config values), drives the API including its error paths, then scans every
//! sink — all public responses, `/metrics`, the log at TRACE level, every
//! error body, and `verify-public` — in every encoding (raw, hex, base64
//! std/url with and without padding, JSON-escaped, percent-encoded).
//! Bearer tokens are planted too: they must not reach any sink either.

use std::time::Duration;

use happyx::public::scan::{Canaries, Kind, ScanContext, scan};
use happyx_tests::{
    Server, ServerOptions, call, cli, cli_env, client, eventually, json, temp_data_dir,
};
use serde_json::{Value, json};

fn canary(n: usize) -> String {
    format!("CANARY{n}x{}", std::process::id())
}

/// Canary findings (every encoding) in `hay`.
fn hits(canaries: &Canaries, surface: &str, hay: &[u8]) -> Vec<String> {
    let ctx = ScanContext {
        surface,
        hash_fields: None,
        canaries: Some(canaries),
        extra: None,
        strings: false,
    };
    scan(hay, &ctx)
        .into_iter()
        .filter(|f| f.kind == Kind::Canary)
        .map(|f| f.to_string())
        .collect()
}

#[test]
fn planted_canaries_never_reach_a_public_or_log_sink() {
    let values: Vec<String> = (0..16).map(canary).collect();
    let (tmp, data) = temp_data_dir();
    // A config value: a risk floor keyed by a canary recipe name.
    let cfg = format!(
        "[approvals]\nallow_self_approval = true\n[public]\nruns = true\nsessions = true\n[runs.risk_floor]\n{} = \"high\"\n",
        values[0]
    );
    let server = Server::start_with(
        &data,
        ServerOptions {
            config: Some(cfg),
            env: vec![("HAPPYX_LOG".into(), "trace".into())],
            ..Default::default()
        },
    )
    .expect("start");
    let dir = data.to_str().expect("path");
    let (st, op, _) = cli(&[
        "token",
        "create",
        "--data-dir",
        dir,
        "--role",
        "operator",
        "--name",
        &values[1],
    ]);
    assert!(st.success());
    let op = op.trim().to_string();
    let agent = server.token("agent");
    let mut error_bodies: Vec<(String, String)> = Vec::new();
    let mut record = |what: &str, req: reqwest::blocking::RequestBuilder| -> (u16, Value) {
        let r = req.send().expect("send");
        let st = r.status().as_u16();
        let text = r.text().expect("body");
        if st >= 400 {
            error_bodies.push((what.to_string(), text.clone()));
        }
        (st, serde_json::from_str(&text).unwrap_or(Value::Null))
    };

    // Inputs, happy paths.
    let (st, task) = record(
        "task",
        server.post(
            "/v1/tasks",
            &agent,
            &json!({"title": values[2], "description": values[3]}),
        ),
    );
    assert_eq!(st, 201);
    let (st, session) = record(
        "session",
        server.post(
            "/v1/sessions",
            &agent,
            &json!({"name": values[4], "task_id": task["id"]}),
        ),
    );
    assert_eq!(st, 201);
    let sid = session["id"].as_str().expect("id").to_string();
    let (st, _) = record(
        "permission",
        server.post(
            "/v1/permissions",
            &op,
            &json!({"subject": "dev1", "action": values[5], "scope": values[6]}),
        ),
    );
    assert_eq!(st, 201);
    let (st, run) = record(
        "run",
        server.post(
            "/v1/runs",
            &agent,
            &json!({"recipe": "echo", "args": {"text": values[7]}, "session_id": sid}),
        ),
    );
    assert_eq!(st, 201, "{run}");
    let rid = run["id"].as_str().expect("id").to_string();
    // A high-risk run whose output prints a canary and the operator's token.
    let cmd = format!("echo {}; echo {}", values[8], op);
    // (The approval_required answer is where the requester receives its one-time
    // token, so it is not recorded as an error sink.)
    let (st, b) = call(server.post(
        "/v1/runs",
        &op,
        &json!({"recipe": "shell", "args": {"command": cmd}}),
    ));
    assert_eq!(st, 403);
    let aid = b["approval_id"].as_str().expect("aid").to_string();
    let tok = b["approval_token"].as_str().expect("tok").to_string();
    record(
        "approve",
        server.post(&format!("/v1/approvals/{aid}/approve"), &op, &json!({})),
    );
    let (st, run2) = record(
        "shell-use",
        server.post(
            "/v1/runs",
            &op,
            &json!({"recipe": "shell", "args": {"command": cmd}, "approval_token": tok}),
        ),
    );
    assert_eq!(st, 201, "{run2}");
    let rid2 = run2["id"].as_str().expect("id").to_string();
    for id in [&rid, &rid2] {
        eventually(Duration::from_secs(30), || {
            let r = json(server.get(&format!("/v1/runs/{id}"), &op).send());
            matches!(r["status"].as_str(), Some("succeeded" | "failed")).then_some(())
        })
        .expect("run finishes");
    }

    // Inputs, error paths: each body carries a canary.
    let raw = |body: String| {
        client()
            .post(format!("{}/v1/tasks", server.url))
            .bearer_auth(&agent)
            .header("content-type", "application/json")
            .body(body)
    };
    record("bad-json", raw(format!("{{\"title\": \"{}", values[9])));
    record(
        "wrong-type",
        raw(format!("{{\"title\": [\"{}\"]}}", values[10])),
    );
    record(
        "bad-enum",
        server.patch(
            &format!("/v1/tasks/{}", task["id"].as_str().unwrap_or("")),
            &agent,
            &json!({"status": values[11]}),
        ),
    );
    record(
        "bad-recipe",
        server.post("/v1/runs", &agent, &json!({"recipe": values[12]})),
    );
    record(
        "bad-arg",
        server.post(
            "/v1/runs",
            &agent,
            &json!({"recipe": "list-files", "args": {"path": format!("../{}", values[13])}}),
        ),
    );
    record(
        "bad-query",
        server.get(&format!("/v1/tasks?after={}&limit=x", values[14]), &agent),
    );
    record(
        "bad-token",
        client()
            .get(format!("{}/v1/tasks", server.url))
            .bearer_auth(&values[15]),
    );
    record(
        "bad-approval-token",
        server.post(
            "/v1/runs",
            &agent,
            &json!({"recipe": "echo", "args": {"text": "x"}, "approval_token": values[15]}),
        ),
    );

    let batch = |body: String| {
        client()
            .post(format!("{}/v1/sessions/{sid}/envelopes/batch", server.url))
            .header("content-type", "application/json")
            .body(body)
    };
    record(
        "bad-envelope-batch",
        batch(format!("{{\"envelopes\":[{{}}],\"{}\":1}}", values[13])),
    );
    // A batch refused per envelope answers 200: its outcomes must not echo the input either.
    let (st, outcomes) = record(
        "bad-envelope-in-batch",
        batch(format!(
            "{{\"envelopes\":[{{\"v\":1,\"sessionId\":\"{}\",\"{}\":2}}]}}",
            values[14], values[12]
        )),
    );
    assert_eq!(st, 200, "{outcomes}");
    assert_eq!(outcomes["results"][0]["code"], "invalid_envelope");
    error_bodies.push(("bad-envelope-in-batch".into(), outcomes.to_string()));

    // The private views do hold the inputs (so the test could fail).
    let t = json(
        server
            .get(
                &format!("/v1/tasks/{}", task["id"].as_str().unwrap_or("")),
                &agent,
            )
            .send(),
    );
    assert_eq!(t["title"], values[2].as_str());
    let out = server
        .get(&format!("/v1/runs/{rid}/output"), &op)
        .send()
        .expect("send")
        .text()
        .expect("text");
    assert!(
        out.contains(&values[7]),
        "run output is private, not redacted of plain text"
    );

    // Sinks.
    let mut secrets = values.clone();
    secrets.push(op.clone());
    secrets.push(agent.clone());
    secrets.push(tok.clone());
    let canaries = Canaries::new(&secrets);
    let mut found = Vec::new();
    for path in [
        "/public/state".to_string(),
        "/public/evidence".to_string(),
        "/public/runs".to_string(),
        format!("/public/sessions/{sid}"),
        "/metrics".to_string(),
        "/healthz".to_string(),
        "/v1/openapi.json".to_string(),
    ] {
        let r = client()
            .get(format!("{}{path}", server.url))
            .send()
            .expect("send");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        let headers = format!("{:?}", r.headers());
        let body = r.bytes().expect("body");
        found.extend(hits(&canaries, &path, &body));
        found.extend(hits(
            &canaries,
            &format!("{path} headers"),
            headers.as_bytes(),
        ));
    }
    assert!(!error_bodies.is_empty());
    for (what, body) in &error_bodies {
        found.extend(hits(
            &canaries,
            &format!("error body of {what}"),
            body.as_bytes(),
        ));
    }
    // verify-public, with the canaries file.
    let cfile = tmp.path().join("canaries.txt");
    std::fs::write(&cfile, values.join("\n")).expect("write");
    let (st, out, err) = cli(&[
        "verify-public",
        "--url",
        &server.url,
        "--canaries",
        cfile.to_str().expect("p"),
    ]);
    assert!(st.success(), "verify-public failed:\n{out}\n{err}");
    found.extend(hits(
        &canaries,
        "verify-public output",
        format!("{out}{err}").as_bytes(),
    ));
    // The log at TRACE level (read after the requests above).
    std::thread::sleep(Duration::from_millis(300));
    let log = server.stderr();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log ran at trace level"
    );
    found.extend(hits(&canaries, "server log", log.as_bytes()));
    // An export is a private file: it must hold the inputs; a CLI run's own
    // output must not echo them.
    let export = tmp.path().join("export.json");
    let (st, out, err) = cli_env(
        &[
            "export",
            "--data-dir",
            dir,
            "--out",
            export.to_str().expect("p"),
        ],
        &[("HAPPYX_LOG", "trace")],
    );
    assert!(st.success(), "{err}");
    found.extend(hits(
        &canaries,
        "export command output",
        format!("{out}{err}").as_bytes(),
    ));
    let export_bytes = std::fs::read(&export).expect("export");
    assert!(
        !hits(&canaries, "export", &export_bytes).is_empty(),
        "the export (a private file) holds the planted values: the scan can find them"
    );
    let leaks: Vec<&String> = found.iter().collect();
    assert!(
        leaks.is_empty(),
        "canaries or tokens reached a sink:\n{leaks:#?}"
    );
}
