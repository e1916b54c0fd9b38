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
    let server = start_traced(&data, cfg).expect("start");
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

/// Every form a binary secret travels in: base64 std/url with and without padding, hex, and
/// a `Debug` byte list (what a careless `{:?}` of a key or buffer prints).
fn forms(raw: &[u8]) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    vec![
        STANDARD.encode(raw),
        STANDARD_NO_PAD.encode(raw),
        URL_SAFE.encode(raw),
        URL_SAFE_NO_PAD.encode(raw),
        hex::encode(raw),
        format!("{raw:?}"),
    ]
}

/// `forms` of a canonical standard-base64 value from the wire or a keystore file.
fn forms_b64(text: &str) -> Vec<String> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("standard base64");
    forms(&raw)
}

/// `happyx ARGS…` with `stdin`, logging at trace level; (success, stdout, stderr).
fn cli_in(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(happyx_tests::binary());
    cmd.current_dir(std::env::temp_dir())
        .args(args)
        .env("HAPPYX_LOG", "trace")
        .envs(env.iter().copied());
    let out = happyx_tests::run_bounded(&mut cmd, Some(stdin.as_bytes()), happyx_tests::CLI_LIMIT);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The body of a refused WebSocket upgrade (the host answers a bad ticket with an error body).
fn ws_refusal(url: &str) -> String {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let answer = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(60),
                tokio_tungstenite::connect_async(url),
            )
            .await
        })
        .expect("the host answers the upgrade within 60 s");
    match answer {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned()
        }
        Err(e) => panic!("unexpected ws error: {e}"),
    }
}

/// The public views of a host, scanned (body and headers); each must answer 2xx.
fn scan_public(canaries: &Canaries, url: &str, paths: &[String], found: &mut Vec<String>) {
    for path in paths {
        let r = client().get(format!("{url}{path}")).send().expect("send");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        let headers = format!("{:?}", r.headers());
        let body = r.bytes().expect("body");
        found.extend(hits(canaries, path, &body));
        found.extend(hits(
            canaries,
            &format!("{path} headers"),
            headers.as_bytes(),
        ));
    }
}

/// Key material, envelopes and one-time credentials — device private keys, envelope
/// ciphertext, nonces and signatures, request signatures, HPKE-wrapped content keys,
/// enrollment codes, PTY attach tickets, approval tokens, message plaintext — planted through
/// the real device CLI and API, then looked for in every sink: the public views (including the
/// session and terminal listings), every error body the test provokes, the host's log at
/// TRACE, `/metrics`, the stdout/stderr of every CLI command used (except the one value a
/// command exists to print), `verify-public`, and the public views of an imported export.
#[test]
fn planted_key_material_codes_and_tickets_never_reach_a_sink() {
    use happyx::devices::DeviceDir;
    use happyx::devices::auth::sign_request;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let (tmp, data) = temp_data_dir();
    let cfg = "[approvals]\nallow_self_approval = true\n[public]\nruns = true\nsessions = true\n[envelopes]\nwindow_ms = 600000\n";
    let server = start_traced(&data, cfg).expect("start");
    let op = server.token("operator");
    let url = server.url.clone();
    let op_env = [("HAPPYX_TOKEN", op.as_str()), ("HAPPYX_URL", url.as_str())];
    // (what, text) of every sink but the public views and the log.
    let mut sinks: Vec<(String, String)> = Vec::new();
    let mut secrets: Vec<String> = vec![op.clone()];
    let p = |d: &std::path::Path| d.to_str().expect("utf-8 path").to_string();

    // Two devices: keygen and enrollment through the CLI, one with an operator's code from the
    // API, one with a code from `happyx enroll create`.
    let (da, db) = (tmp.path().join("dev-a"), tmp.path().join("dev-b"));
    let mut codes = Vec::new();
    for (n, dir) in [&da, &db].into_iter().enumerate() {
        let (ok, out, err) = cli_in(&["device", "keygen", "--dir", &p(dir)], &[], "");
        assert!(ok, "keygen: {err}");
        sinks.push((format!("device keygen {n}"), out + &err));
        let code = if n == 0 {
            let (st, c) = call(server.post("/v1/enrollments", &op, &json!({})));
            assert_eq!(st, 201, "{c}");
            c["code"].as_str().expect("code").to_string()
        } else {
            let (ok, out, err) = cli_in(&["enroll", "create"], &op_env, "");
            assert!(ok, "enroll create: {err}");
            sinks.push(("enroll create (stderr)".into(), err));
            out.trim().to_string()
        };
        let (ok, out, err) = cli_in(
            &[
                "device",
                "enroll",
                "--dir",
                &p(dir),
                "--url",
                &url,
                "--code",
                &code,
            ],
            &[],
            "",
        );
        assert!(ok, "enroll: {err}");
        sinks.push((format!("device enroll {n}"), out + &err));
        // A spent code presented again: refused, without echoing it.
        let again = tmp.path().join(format!("dev-again-{n}"));
        cli_in(&["device", "keygen", "--dir", &p(&again)], &[], "");
        let (ok, out, err) = cli_in(
            &[
                "device",
                "enroll",
                "--dir",
                &p(&again),
                "--url",
                &url,
                "--code",
                &code,
            ],
            &[],
            "",
        );
        assert!(!ok, "a spent code enrolls nothing");
        sinks.push((format!("device enroll with a spent code {n}"), out + &err));
        codes.push(code);
    }
    // An unspent code, and a wrong one sent to the enrollment routes.
    let (st, c) = call(server.post("/v1/enrollments", &op, &json!({})));
    assert_eq!(st, 201, "{c}");
    codes.push(c["code"].as_str().expect("code").to_string());
    secrets.extend(codes.iter().cloned());
    for (route, body) in [
        ("/v1/enrollments/challenge", json!({"code": codes[0]})),
        (
            "/v1/enrollments/complete",
            json!({"code": codes[2], "junk": codes[1]}),
        ),
    ] {
        // (A challenge is answered whatever the code, so as not to tell codes apart.)
        let r = client()
            .post(format!("{url}{route}"))
            .json(&body)
            .send()
            .expect("send");
        sinks.push((format!("answer to {route}"), r.text().expect("body")));
    }
    // The devices' private keys, from their keystore files.
    for dir in [&da, &db] {
        let keys: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("device.json")).expect("device.json"),
        )
        .expect("json");
        for field in ["signingSeed", "hpkeSecret"] {
            let v = keys[field].as_str().expect("key field");
            secrets.push(v.to_string());
            secrets.extend(forms_b64(v));
        }
    }

    // An encrypted session from a to b, two messages, read back by b.
    let dev_id = |dir: &std::path::Path| {
        DeviceDir::open(dir)
            .expect("device dir")
            .device_id()
            .expect("enrolled")
            .to_string()
    };
    let (ida, idb) = (dev_id(&da), dev_id(&db));
    let (ok, out, err) = cli_in(
        &[
            "device",
            "open-session",
            "--dir",
            &p(&da),
            "--url",
            &url,
            "--with",
            &idb,
        ],
        &[],
        "",
    );
    assert!(ok, "open-session: {err}");
    sinks.push(("device open-session".into(), out.clone() + &err));
    let sid = out.trim().to_string();
    let plain = [canary(100), canary(101)];
    let (ok, wires, err) = cli_in(
        &[
            "device",
            "send",
            "--dir",
            &p(&da),
            "--url",
            &url,
            "--session",
            &sid,
        ],
        &[],
        &format!("{}\n{}\n", plain[0], plain[1]),
    );
    assert!(ok, "send: {err}");
    sinks.push(("device send (stderr)".into(), err));
    let wires: Vec<Value> = wires
        .lines()
        .map(|l| serde_json::from_str(l).expect("wire json"))
        .collect();
    assert_eq!(wires.len(), 2);
    for w in &wires {
        for field in ["nonce", "ciphertext", "signature"] {
            let v = w[field].as_str().expect("wire field");
            secrets.push(v.to_string());
            secrets.extend(forms_b64(v));
        }
    }
    let (ok, out, err) = cli_in(
        &[
            "device",
            "read",
            "--dir",
            &p(&db),
            "--url",
            &url,
            "--session",
            &sid,
        ],
        &[],
        "",
    );
    assert!(ok, "read: {err}");
    assert!(out.contains(&plain[1]), "b reads the plaintext: {out}");
    sinks.push(("device read (stderr)".into(), err));
    secrets.extend(plain.iter().cloned());
    // The content key wrapped to b, from the session key route (signed as b); the request's
    // own signature is planted too.
    let bdir = DeviceDir::open(&db).expect("device dir");
    let path = format!("/v1/sessions/{sid}/keys");
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut req = client().get(format!("{url}{path}"));
    for (k, v) in sign_request(bdir.keys(), &idb, ts, "GET", &path, b"") {
        if k.to_ascii_lowercase().contains("signature") {
            secrets.push(v.clone());
            secrets.extend(forms_b64(&v));
        }
        req = req.header(k, v);
    }
    let (st, keys) = call(req);
    assert_eq!(st, 200, "{keys}");
    let wrapped = keys["wrapped_keys"].as_array().expect("wrapped keys");
    assert!(!wrapped.is_empty(), "{keys}");
    for w in wrapped {
        for field in ["enc", "ciphertext"] {
            let v = w[field].as_str().expect("wrapped field");
            secrets.push(v.to_string());
            secrets.extend(forms_b64(v));
        }
    }
    // Envelope refusals carrying the planted material: a replay, a signature from another
    // envelope, another session, a batch, a bad key-route signature.
    let post_env = |session: &str, body: String| {
        client()
            .post(format!("{url}/v1/sessions/{session}/envelopes"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("send")
    };
    let mut swapped = wires[0].clone();
    swapped["signature"] = wires[1]["signature"].clone();
    let mut other = wires[1].clone();
    other["sessionId"] = json!(idb);
    for (what, session, body) in [
        ("replayed envelope", sid.as_str(), wires[0].to_string()),
        ("swapped signature", sid.as_str(), swapped.to_string()),
        ("other session", idb.as_str(), other.to_string()),
        (
            "envelope with junk",
            sid.as_str(),
            format!("{{\"x\":{}}}", wires[1]),
        ),
    ] {
        let r = post_env(session, body);
        assert!(r.status().is_client_error(), "{what}: {}", r.status());
        sinks.push((format!("error body of {what}"), r.text().expect("body")));
    }
    let r = client()
        .post(format!("{url}/v1/sessions/{sid}/envelopes/batch"))
        .header("content-type", "application/json")
        .body(json!({"envelopes": [wires[0], swapped]}).to_string())
        .send()
        .expect("send");
    sinks.push(("batch outcomes".into(), r.text().expect("body")));
    let mut req = client().get(format!("{url}/v1/sessions/{sid}/keys?x=1"));
    for (k, v) in sign_request(bdir.keys(), &ida, ts, "GET", &path, b"") {
        req = req.header(k, v);
    }
    let r = req.send().expect("send");
    assert!(r.status().is_client_error(), "{}", r.status());
    sinks.push((
        "error body of a mis-signed key read".into(),
        r.text().expect("body"),
    ));

    // A terminal through the approval flow (its approval token planted), an attach ticket
    // spent over a real WebSocket, the same ticket again, and an unspent one.
    // It outlives the test however loaded the machine is; the test kills it.
    let body = json!({"recipe": "shell", "args": {"command": "sleep 3600"}});
    let (st, b) = call(server.post("/v1/pty", &op, &body));
    assert_eq!(st, 403, "{b}");
    let aid = b["approval_id"].as_str().expect("aid").to_string();
    let atok = b["approval_token"]
        .as_str()
        .expect("approval token")
        .to_string();
    secrets.push(atok.clone());
    let (st, a) = call(server.post(&format!("/v1/approvals/{aid}/approve"), &op, &json!({})));
    assert_eq!(st, 200, "{a}");
    let mut used = body.clone();
    used["approval_token"] = json!(atok);
    let (st, pty) = call(server.post("/v1/pty", &op, &used));
    assert_eq!(st, 201, "{pty}");
    let pid = pty["id"].as_str().expect("pty id").to_string();
    let r = server.post("/v1/pty", &op, &used).send().expect("send");
    assert_eq!(r.status().as_u16(), 403);
    sinks.push((
        "error body of a spent approval token".into(),
        r.text().expect("body"),
    ));
    let mut tickets = Vec::new();
    for _ in 0..2 {
        let (st, t) = call(server.post(
            &format!("/v1/pty/{pid}/attach"),
            &op,
            &json!({"mode": "observe"}),
        ));
        assert_eq!(st, 201, "{t}");
        tickets.push(t["ticket"].as_str().expect("ticket").to_string());
    }
    secrets.extend(tickets.iter().cloned());
    let ws_url = format!(
        "{}/v1/pty/{pid}/ws?ticket={}",
        url.replace("http://", "ws://"),
        tickets[0]
    );
    {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let req = ws_url.as_str().into_client_request().expect("request");
        let (mut ws, _) = rt
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(60),
                    tokio_tungstenite::connect_async(req),
                )
                .await
            })
            .expect("the host answers the upgrade within 60 s")
            .expect("attach");
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), ws.close(None)).await })
            .ok();
    }
    sinks.push(("error body of a spent ticket".into(), ws_refusal(&ws_url)));
    let wrong = format!(
        "{}/v1/pty/{}/ws?ticket={}",
        url.replace("http://", "ws://"),
        sid,
        tickets[1]
    );
    sinks.push((
        "error body of a ticket for another terminal".into(),
        ws_refusal(&wrong),
    ));

    // Operator commands, as an operator uses them.
    for args in [
        vec!["status"],
        vec!["approvals", "ls"],
        vec!["approvals", "show", aid.as_str()],
        vec!["devices", "ls"],
        vec!["pty", "ls", "--json"],
        vec!["runs", "ls"],
        vec!["events", "tail"],
        vec!["events", "tail", "--json"],
    ] {
        let (ok, out, err) = cli_in(&args, &op_env, "");
        assert!(ok, "{args:?}: {err}");
        sinks.push((format!("happyx {}", args.join(" ")), out + &err));
    }
    let canaries = Canaries::new(&secrets);
    let cfile = tmp.path().join("canaries.txt");
    std::fs::write(&cfile, secrets.join("\n")).expect("write");
    let (ok, out, err) = cli_in(
        &["verify-public", "--url", &url, "--canaries", &p(&cfile)],
        &[],
        "",
    );
    assert!(ok, "verify-public found something:\n{out}\n{err}");
    let report: Value = serde_json::from_str(out.trim()).expect("summary");
    for view in ["/public/sessions/{id}", "/public/terminals/{id}"] {
        assert!(
            report["views"][view].as_u64() >= Some(1),
            "{view} not reached: {report}"
        );
    }
    sinks.push(("verify-public".into(), out + &err));

    let mut found = Vec::new();
    let public = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "/public/state",
            "/public/evidence",
            "/public/runs",
            "/public/sessions",
            "/public/terminals",
            "/metrics",
            "/healthz",
            "/v1/openapi.json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let views = public(&[
        &format!("/public/sessions/{sid}"),
        &format!("/public/sessions/{pid}"),
        &format!("/public/terminals/{pid}"),
    ]);
    scan_public(&canaries, &url, &views, &mut found);
    let (st, _) = call(server.post(&format!("/v1/pty/{pid}/kill"), &op, &json!({})));
    assert!(st < 300, "kill: {st}");

    // The export is a private file (it must hold the material, so the scan can find it); its
    // command output and the public views of an imported copy must not.
    let export = tmp.path().join("export.json");
    let (ok, out, err) = cli_in(
        &["export", "--data-dir", &p(&data), "--out", &p(&export)],
        &[],
        "",
    );
    assert!(ok, "export: {err}");
    sinks.push(("export command".into(), out + &err));
    let bytes = std::fs::read(&export).expect("export");
    assert!(
        !hits(&canaries, "export", &bytes).is_empty(),
        "the export holds ciphertext: the scan can find it"
    );
    let copy = tmp.path().join("copy");
    // Trusting the exporting host's public key, as a restore does.
    let (ok, key, err) = cli_in(&["host-key", "--data-dir", &p(&data)], &[], "");
    assert!(ok, "host-key: {err}");
    sinks.push(("host-key command".into(), key.clone() + &err));
    let (ok, out, err) = cli_in(
        &[
            "import",
            "--data-dir",
            &p(&copy),
            "--trusted-key",
            key.trim(),
            &p(&export),
        ],
        &[],
        "",
    );
    assert!(ok, "import: {err}");
    sinks.push(("import command".into(), out + &err));
    let imported = start_traced(&copy, cfg).expect("start the imported copy");
    scan_public(&canaries, &imported.url, &views, &mut found);
    found.extend(hits(
        &canaries,
        "imported host log",
        imported.stderr().as_bytes(),
    ));

    for (what, text) in &sinks {
        found.extend(hits(&canaries, what, text.as_bytes()));
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = server.stderr();
    assert!(log.contains("TRACE"), "the log ran at trace level");
    found.extend(hits(&canaries, "server log", log.as_bytes()));
    assert!(
        found.is_empty(),
        "planted material reached a sink:\n{found:#?}"
    );
}

/// A host on `data` with config `cfg` logging at trace level (every log line is a sink).
fn start_traced(data: &std::path::Path, cfg: impl Into<String>) -> anyhow::Result<Server> {
    Server::start_with(
        data,
        ServerOptions {
            config: Some(cfg.into()),
            env: vec![("HAPPYX_LOG".into(), "trace".into())],
            ..Default::default()
        },
    )
}
