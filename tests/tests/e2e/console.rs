//! The operator console's HTTP side: the page and its security headers, console
//! sessions (cookie flags, agents refused, CSRF proof and origin on state
//! changes, sign-out, token revocation), the SSE event stream with resume, and
//! the browser suite in `tests/browser` (Chromium through playwright-core).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use happyx_tests::*;
use serde_json::{Value, json};

/// A signed-in browser: its cookie and CSRF proof.
struct Browser {
    cookie: String,
    csrf: String,
}

fn sign_in(s: &Server, token: &str) -> (u16, Value, Option<String>) {
    let resp = client()
        .post(format!("{}/v1/console/session", s.url))
        .header("Origin", &s.url)
        .json(&json!({ "token": token }))
        .send()
        .expect("sign-in sent");
    let status = resp.status().as_u16();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = resp.json().unwrap_or(Value::Null);
    (status, body, cookie)
}

fn browser(s: &Server, token: &str) -> Browser {
    let (st, body, cookie) = sign_in(s, token);
    assert_eq!(st, 201, "{body}");
    let cookie = cookie.expect("a Set-Cookie header");
    let pair = cookie.split(';').next().expect("name=value").to_string();
    Browser {
        cookie: pair,
        csrf: body["csrf_token"].as_str().expect("csrf_token").to_string(),
    }
}

fn get_with(s: &Server, b: &Browser, path: &str) -> (u16, Value) {
    call(
        client()
            .get(format!("{}{path}", s.url))
            .header("Cookie", &b.cookie),
    )
}

fn post_with(
    s: &Server,
    b: &Browser,
    path: &str,
    csrf: Option<&str>,
    origin: Option<&str>,
) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}{path}", s.url))
        .header("Cookie", &b.cookie)
        .header("Content-Type", "application/json")
        .body("{}");
    if let Some(c) = csrf {
        req = req.header("X-CSRF-Token", c);
    }
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    call(req)
}

fn token_id(token: &str) -> &str {
    &token[4..16]
}

/// An agent's high-risk run: the pending approval's id.
fn pending_approval(s: &Server, agent: &str, command: &str) -> String {
    let (st, b) = call(s.post(
        "/v1/runs",
        agent,
        &json!({ "recipe": "shell", "args": { "command": command } }),
    ));
    assert_eq!(
        (st, b["code"].as_str()),
        (403, Some("approval_required")),
        "{b}"
    );
    b["approval_id"].as_str().expect("approval_id").to_string()
}

fn approval_status(s: &Server, operator: &str, id: &str) -> String {
    let list = json(s.get("/v1/approvals?limit=500", operator).send());
    list["items"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == id))
        .and_then(|x| x["status"].as_str())
        .unwrap_or("missing")
        .to_string()
}

#[test]
fn console_page_is_served_with_strict_security_headers() {
    let (_tmp, dir) = temp_data_dir();
    let s = Server::start(&dir);
    let resp = client().get(format!("{}/", s.url)).send().expect("GET /");
    assert_eq!(resp.status().as_u16(), 200);
    let h = resp.headers().clone();
    let header = |n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert!(header("content-type").starts_with("text/html"));
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    let html = resp.text().expect("body");
    assert!(
        html.contains("/console/app.js"),
        "the page loads its script"
    );
    assert!(!html.contains("<script>"), "no inline script");

    let js = client()
        .get(format!("{}/console/app.js", s.url))
        .send()
        .expect("GET app.js");
    assert_eq!(js.status().as_u16(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/javascript")
    );
    for bad in [
        "/console/nope.js",
        "/console/..%2fCargo.toml",
        "/console/vendor/",
    ] {
        let st = client()
            .get(format!("{}{bad}", s.url))
            .send()
            .expect("GET")
            .status()
            .as_u16();
        assert_eq!(st, 404, "{bad}");
    }
    let doc = json(client().get(format!("{}/v1/openapi.json", s.url)).send());
    for path in ["/v1/events/stream", "/v1/console/session", "/v1/pty"] {
        assert!(doc["paths"][path].is_object(), "OpenAPI lacks {path}");
    }
}

#[test]
fn sign_in_issues_a_strict_cookie_and_refuses_agents_and_other_origins() {
    let (_tmp, dir) = temp_data_dir();
    let s = Server::start(&dir);
    let operator = s.token("operator");
    let (st, body, cookie) = sign_in(&s, &operator);
    assert_eq!(st, 201, "{body}");
    let cookie = cookie.expect("Set-Cookie");
    for flag in [
        "hpx_console=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(flag), "cookie lacks {flag}");
    }
    assert!(!cookie.contains("Secure"), "no Secure flag without TLS");
    assert_eq!(body["role"], "operator");
    assert!(
        !body.to_string().contains(&operator),
        "the token is never echoed"
    );
    let session_id = cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .expect("cookie value");
    assert!(
        !s.stderr().contains(&session_id),
        "the session id is never logged"
    );

    let agent = s.token("agent");
    let (st, body, cookie) = sign_in(&s, &agent);
    assert_eq!(
        (st, body["code"].as_str()),
        (403, Some("console_forbidden"))
    );
    assert!(cookie.is_none(), "no session for an agent");

    let (st, body, _) = sign_in(
        &s,
        "hpx_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    );
    assert_eq!((st, body["code"].as_str()), (401, Some("unauthorized")));

    // Login CSRF: a sign-in posted from another origin is refused.
    let (st, body) = call(
        client()
            .post(format!("{}/v1/console/session", s.url))
            .header("Origin", "http://evil.example")
            .json(&json!({ "token": operator })),
    );
    assert_eq!((st, body["code"].as_str()), (403, Some("csrf_failed")));

    let viewer = s.token("viewer");
    let b = browser(&s, &viewer);
    let (st, me) = get_with(&s, &b, "/v1/console/session");
    assert_eq!((st, me["role"].as_str()), (200, Some("viewer")), "{me}");
    assert_eq!(me["csrf_token"].as_str(), Some(b.csrf.as_str()));
}

#[test]
fn cookie_requests_that_change_state_need_the_csrf_proof_and_same_origin() {
    let (_tmp, dir) = temp_data_dir();
    let s = Server::start(&dir);
    let operator = s.token("operator");
    let agent = s.token("agent");
    let b = browser(&s, &operator);
    let id = pending_approval(&s, &agent, "echo csrf");
    let path = format!("/v1/approvals/{id}/approve");

    // Reads need no proof.
    let (st, _) = get_with(&s, &b, "/v1/approvals?status=pending");
    assert_eq!(st, 200);

    for (csrf, origin) in [
        (None, Some(s.url.as_str())),
        (Some("not-the-proof"), Some(s.url.as_str())),
        (Some(b.csrf.as_str()), Some("http://evil.example")),
        (Some(b.csrf.as_str()), None),
    ] {
        let (st, body) = post_with(&s, &b, &path, csrf, origin);
        assert_eq!(
            (st, body["code"].as_str()),
            (403, Some("csrf_failed")),
            "{csrf:?} {origin:?}"
        );
        assert_eq!(
            approval_status(&s, &operator, &id),
            "pending",
            "a refused request changes nothing"
        );
    }
    let (st, body) = post_with(&s, &b, &path, Some(&b.csrf), Some(&s.url));
    assert_eq!(
        (st, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    // The decision is the operator token's, as with a bearer.
    let evs = s.events(&operator);
    let approved = evs
        .iter()
        .find(|e| e["code"] == "approval.approved" && e["subject"] == id.as_str());
    assert_eq!(
        approved.map(|e| e["actor"].clone()),
        Some(json!(format!("token:{}", token_id(&operator))))
    );

    // Bearer clients are unchanged: no CSRF proof, no Origin.
    let id2 = pending_approval(&s, &agent, "echo bearer");
    let (st, _) = call(s.post(&format!("/v1/approvals/{id2}/deny"), &operator, &json!({})));
    assert_eq!(st, 200);
}

#[test]
fn a_viewer_session_cannot_decide_even_with_its_csrf_proof() {
    let (_tmp, dir) = temp_data_dir();
    let s = Server::start(&dir);
    let operator = s.token("operator");
    let agent = s.token("agent");
    let viewer = s.token("viewer");
    let b = browser(&s, &viewer);
    let id = pending_approval(&s, &agent, "echo viewer");
    let (st, body) = post_with(
        &s,
        &b,
        &format!("/v1/approvals/{id}/approve"),
        Some(&b.csrf),
        Some(&s.url),
    );
    assert_eq!(
        (st, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert_eq!(approval_status(&s, &operator, &id), "pending");
}

#[test]
fn sign_out_and_token_revocation_end_console_sessions() {
    let (_tmp, dir) = temp_data_dir();
    let s = Server::start(&dir);
    let operator = s.token("operator");
    let a = browser(&s, &operator);
    let b = browser(&s, &operator);

    // Sign-out needs the proof too, then the session is gone.
    let resp = client()
        .delete(format!("{}/v1/console/session", s.url))
        .header("Cookie", &a.cookie)
        .header("X-CSRF-Token", &a.csrf)
        .header("Origin", &s.url)
        .send()
        .expect("sign out");
    assert_eq!(resp.status().as_u16(), 204);
    let cleared = resp.headers()["set-cookie"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let (st, _) = get_with(&s, &a, "/v1/console/session");
    assert_eq!(st, 401);
    let (st, _) = get_with(&s, &a, "/v1/approvals");
    assert_eq!(st, 401);
    // The other session of the same token is untouched.
    let (st, _) = get_with(&s, &b, "/v1/approvals");
    assert_eq!(st, 200);

    // Revoking the token (CLI, while the server runs) ends its sessions at once.
    let dir_s = dir.to_str().expect("utf-8");
    let (ok, _, err) = cli(&["token", "revoke", token_id(&operator), "--data-dir", dir_s]);
    assert!(ok.success(), "{err}");
    let (st, body) = get_with(&s, &b, "/v1/approvals");
    assert_eq!((st, body["code"].as_str()), (401, Some("unauthorized")));
    let (st, _) = get_with(&s, &b, "/v1/console/session");
    assert_eq!(st, 401);
}

/// Reads SSE messages (`id`, `data`) until `n` have arrived or `limit` passes.
fn read_sse(resp: reqwest::blocking::Response, n: usize, limit: Duration) -> Vec<(i64, Value)> {
    let mut out = Vec::new();
    let mut reader = BufReader::new(resp);
    let deadline = Instant::now() + limit;
    let mut id = None;
    let mut line = String::new();
    while out.len() < n && Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let l = line.trim_end();
        if let Some(v) = l.strip_prefix("id:") {
            id = v.trim().parse::<i64>().ok();
        } else if let Some(v) = l.strip_prefix("data:") {
            let data: Value = serde_json::from_str(v.trim()).expect("event JSON");
            out.push((id.take().expect("id before data"), data));
        }
    }
    out
}

#[test]
fn event_stream_resumes_from_last_event_id_without_gap_or_duplicate() {
    let (_tmp, dir) = temp_data_dir();
    let s = Server::start(&dir);
    let operator = s.token("operator");
    let agent = s.token("agent");
    for i in 0..3 {
        pending_approval(&s, &agent, &format!("echo {i}"));
    }
    let last = s.last_seq(&operator);
    assert!(last >= 6, "setup wrote events");

    // Resume by header: everything after seq 2, in order, ids = seq.
    let resp = client()
        .get(format!("{}/v1/events/stream", s.url))
        .bearer_auth(&operator)
        .header("Last-Event-ID", "2")
        .send()
        .expect("stream");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let want = (last - 2) as usize;
    let got = read_sse(resp, want, Duration::from_secs(10));
    let ids: Vec<i64> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, (3..=last).collect::<Vec<_>>());
    assert!(got.iter().all(|(i, d)| d["seq"] == *i));

    // `?after=` works the same, and new events arrive live.
    let resp = client()
        .get(format!("{}/v1/events/stream?after={last}", s.url))
        .bearer_auth(&operator)
        .send()
        .expect("stream");
    let s2 = std::thread::scope(|scope| {
        let h = scope.spawn(|| read_sse(resp, 1, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
        pending_approval(&s, &agent, "echo live");
        h.join().expect("reader")
    });
    let ids: Vec<i64> = s2.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, vec![last + 1], "{s2:?}");
    assert_eq!(s2[0].1["code"], "approval.requested");

    // Agents have no stream; a malformed Last-Event-ID is a typed 400.
    let (st, _) = call(s.get("/v1/events/stream", &agent));
    assert_eq!(st, 403);
    let (st, body) = call(
        s.get("/v1/events/stream", &operator)
            .header("Last-Event-ID", "x"),
    );
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("invalid_last_event_id"))
    );
}

#[test]
fn listings_filter_runs_events_and_list_terminals() {
    let (_tmp, dir) = temp_data_dir();
    let s = Server::start(&dir);
    let operator = s.token("operator");
    let agent = s.token("agent");
    for text in ["one", "two"] {
        let (st, r) = call(s.post(
            "/v1/runs",
            &agent,
            &json!({ "recipe": "echo", "args": { "text": text } }),
        ));
        assert_eq!(st, 201, "{r}");
        s.wait_run(&agent, r["id"].as_str().expect("id"));
    }
    pending_approval(&s, &agent, "echo x");
    let runs = json(
        s.get("/v1/runs?recipe=echo&status=succeeded", &operator)
            .send(),
    );
    let items = runs["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert!(
        items[0]["id"].as_str() > items[1]["id"].as_str(),
        "newest first"
    );
    let none = json(s.get("/v1/runs?risk=high", &operator).send());
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));
    let (st, _) = call(s.get("/v1/runs?risk=extreme", &operator));
    assert_eq!(st, 400);

    let evs = json(
        s.get("/v1/events?order=desc&code=run.&limit=1000", &operator)
            .send(),
    );
    let evs = evs["events"].as_array().expect("events");
    assert!(!evs.is_empty());
    assert!(
        evs.iter()
            .all(|e| e["code"].as_str().is_some_and(|c| c.starts_with("run.")))
    );
    assert!(
        evs.windows(2)
            .all(|w| w[0]["seq"].as_i64() > w[1]["seq"].as_i64())
    );
    let by_actor = json(
        s.get(
            &format!("/v1/events?order=desc&actor=token:{}", token_id(&agent)),
            &operator,
        )
        .send(),
    );
    assert!(by_actor["events"].as_array().is_some_and(|a| {
        a.iter()
            .all(|e| e["actor"] == format!("token:{}", token_id(&agent)))
    }));

    let ptys = json(s.get("/v1/pty", &operator).send());
    assert_eq!(ptys["items"].as_array().map(Vec::len), Some(0));
    let (st, _) = call(s.get("/v1/pty?state=bogus", &operator));
    assert_eq!(st, 400);
}

/// The browser suite (tests/browser): Chromium driven by playwright-core
/// against the real binary. Skipped, loudly, only where Chromium or the suite's
/// node_modules are missing; `.ci/run` installs both, so CI always runs it.
#[test]
fn browser_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let chromium = Path::new("/usr/bin/chromium");
    let modules = root.join("node_modules").join("playwright-core");
    if !chromium.exists() || !modules.exists() {
        let msg = format!(
            "SKIPPED: the console browser suite needs /usr/bin/chromium and {} (run `npm ci` in tests/browser); .ci/run installs both",
            modules.display()
        );
        eprintln!("\n\n!!!!!!!! {msg} !!!!!!!!\n");
        assert!(
            std::env::var("CI").is_err(),
            "{msg}; under CI this is a failure"
        );
        return;
    }
    let bin = binary();
    let out = Command::new("node")
        .arg("--test")
        .arg("--test-concurrency=1")
        .arg("suite.test.js")
        .current_dir(&root)
        .env("CONSOLE_TEST_BIN", bin)
        .env("CONSOLE_TEST_PLUGIN_CACHE", shared_plugin_cache())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the browser suite failed:\n{stdout}\n{stderr}"
    );
}
