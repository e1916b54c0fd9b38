//! End-to-end: the policy plugins through the real binary — export and check
//! the built-in components, secrets masked in run output (also one split
//! across a chunk boundary, also to live followers of the run), plugin status
//! and hot reload over HTTP, and the retention pruner (`happyx prune`),
//! including a rerun.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use happyx_tests::{Server, binary, call, cli, json, temp_data_dir};
use serde_json::{Value, json};

fn run_shell(server: &Server, op: &str, cmd: &str) -> Value {
    let body = json!({"recipe": "shell", "args": {"command": cmd}});
    let (st, r) = server.post_approved("/v1/runs", op, op, &body);
    assert_eq!(st, 201, "{r}");
    server.wait_run(op, r["id"].as_str().expect("id"))
}

#[test]
fn export_builtin_and_check() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("plugins");
    let (st, out, err) = cli(&["plugin", "export-builtin", dir.to_str().expect("p")]);
    assert!(st.success(), "{err}");
    let files: Vec<&str> = out.lines().collect();
    assert_eq!(files.len(), 3, "{out}");
    for f in &files {
        let (st, out, err) = cli(&["plugin", "check", f]);
        assert!(st.success(), "{f}: {err}");
        assert!(out.lines().count() >= 3, "one JSON line per check: {out}");
        for line in out.lines() {
            let c: Value = serde_json::from_str(line).expect("json line");
            assert_eq!(c["passed"], true, "{line}");
        }
    }
    // A corrupted component fails, naming the failing check.
    let bad = tmp.path().join("bad.wasm");
    let mut bytes = std::fs::read(files[0]).expect("read");
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&bad, &bytes).expect("write");
    let (st, _, err) = cli(&["plugin", "check", bad.to_str().expect("p")]);
    assert!(!st.success());
    assert!(err.contains("failed"), "{err}");
}

#[test]
fn planted_secrets_are_masked_in_run_output() {
    let (_tmp, data) = temp_data_dir();
    let cfg = "[approvals]\nallow_self_approval = true\n";
    let server = Server::with_config(&data, cfg);
    let op = server.token("operator");
    let aws = "AKIAQ4XAMPLEK3YS7QZP";
    let gh = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
    // The first half of a second AWS key, a pause long enough for the chunk to
    // be stored, then its second half: the secret straddles two chunks.
    let split_a = "AKIAZ7QPL2";
    let split_b = "XW4RTY6UMN";
    let cmd = format!(
        "echo \"aws={aws}\"; echo \"token {gh}\"; echo \"Authorization: Bearer {op}\"; printf 'key={split_a}'; sleep 0.5; printf '{split_b} done\\n'"
    );
    let run = run_shell(&server, &op, &cmd);
    assert_eq!(run["status"], "succeeded", "{run}");
    let id = run["id"].as_str().expect("id");
    let out = server
        .get(&format!("/v1/runs/{id}/output"), &op)
        .send()
        .expect("send")
        .text()
        .expect("text");
    for secret in [aws, gh.as_str(), &op[16..], split_a, split_b] {
        assert!(
            !out.contains(secret),
            "`{secret}` leaked into the output view:\n{out}"
        );
    }
    assert!(out.contains("done"), "non-secret text survives: {out}");
    assert!(out.contains("aws="), "{out}");
    assert!(
        run["findings"].as_i64().unwrap_or(0) >= 4,
        "findings counted: {run}"
    );
    // Offsets count raw bytes: masks keep lengths.
    let raw_len = run["stdout_bytes"].as_i64().expect("bytes") as usize;
    assert_eq!(out.len(), raw_len);
}

/// A secret split across two chunks of a live run: the first chunk's overlap window is held
/// back from `GET /v1/runs/{id}/output` until the next chunk re-masks it, so a follower
/// polling as fast as it can, and `happyx runs logs --follow`, never see a fragment of the
/// secret, and what they saw grows by prefixes into exactly the final stored output.
#[test]
fn live_followers_of_run_output_never_see_half_of_a_split_secret() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(&data, "[approvals]\nallow_self_approval = true\n");
    let op = server.token("operator");
    // The pause splits the key into two chunks (it exceeds the 100 ms a partial chunk waits)
    // and stays well inside the 500 ms hold.
    let cmd = "sleep 0.3; printf 'key=AKIAIOSF'; sleep 0.2; printf 'ODNN7EXAMPLE\\n'; \
               sleep 0.3; echo done-$((1+1)); sleep 1";
    let body = json!({"recipe": "shell", "args": {"command": cmd}});
    let (st, run) = server.post_approved("/v1/runs", &op, &op, &body);
    assert_eq!(st, 201, "{run}");
    let id = run["id"].as_str().expect("id").to_string();
    let follow = Command::new(binary())
        .args(["runs", "logs", &id, "--follow"])
        .env("HAPPYX_URL", &server.url)
        .env("HAPPYX_TOKEN", &op)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn happyx runs logs --follow");

    let http = happyx_tests::client();
    let get = |path: &str| {
        http.get(format!("{}{path}", server.url))
            .bearer_auth(&op)
            .send()
            .expect("send")
    };
    let fragments = ["AKIA", "IOSF", "ODNN", "EXAMPLE"];
    let mut seen: Vec<u8> = Vec::new();
    let (mut polls, mut live_polls) = (0u32, 0u32);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The status first: once it is final, the output read after it is complete.
        let status: Value = get(&format!("/v1/runs/{id}")).json().expect("run");
        let finished = !matches!(status["status"].as_str(), Some("queued" | "running"));
        let out = get(&format!("/v1/runs/{id}/output"))
            .bytes()
            .expect("output");
        polls += 1;
        let text = String::from_utf8_lossy(&out).into_owned();
        for f in fragments {
            assert!(!text.contains(f), "poll {polls} shows {f}: {text:?}");
        }
        assert!(
            out.starts_with(&seen),
            "poll {polls} is not a continuation: had {:?}, now {text:?}",
            String::from_utf8_lossy(&seen)
        );
        seen = out.to_vec();
        if finished {
            break;
        }
        if text.contains("key=") {
            live_polls += 1;
        }
        assert!(Instant::now() < deadline, "the run did not finish");
    }
    assert!(
        live_polls > 0,
        "the follower saw the output while the run ran ({polls} polls)"
    );
    eprintln!("{polls} polls, {live_polls} of them live after the first half");

    let stored = get(&format!("/v1/runs/{id}/output"))
        .bytes()
        .expect("output");
    let stored = String::from_utf8_lossy(&stored).into_owned();
    assert!(
        stored.starts_with("key=********************\ndone-2"),
        "{stored:?}"
    );
    assert_eq!(String::from_utf8_lossy(&seen), stored, "follower vs stored");

    let out = follow.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(printed, stored, "runs logs --follow vs stored");
}

#[test]
fn plugin_status_and_hot_reload_over_http() {
    let (tmp, data) = temp_data_dir();
    let pdir = tmp.path().join("plugins");
    let (st, _, err) = cli(&["plugin", "export-builtin", pdir.to_str().expect("p")]);
    assert!(st.success(), "{err}");
    let recipes = pdir.join("recipes.wasm");
    let cfg = format!(
        "[plugins.recipes]\npath = \"{}\"\n[plugins.redactor]\npath = \"{}\"\n",
        recipes.display(),
        pdir.join("redactor.wasm").display()
    );
    let server = Server::with_config(&data, cfg);
    let op = server.token("operator");
    let agent = server.token("agent");
    let list = json(server.get("/v1/plugins", &op).send());
    let items = list.as_array().expect("array");
    assert_eq!(items.len(), 3, "{list}");
    let before: Vec<String> = items
        .iter()
        .map(|p| p["sha256"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(before.iter().all(|h| h.len() == 64), "{list}");
    let (st, _) = call(server.post("/v1/plugins/reload", &agent, &json!({})));
    assert_eq!(st, 403, "agents may not reload");
    // A broken candidate (the retention component where the recipe book should be).
    std::fs::copy(pdir.join("retention.wasm"), &recipes).expect("swap");
    let (st, b) = call(server.post("/v1/plugins/reload", &op, &json!({})));
    assert_eq!(st, 422, "{b}");
    let list = json(server.get("/v1/plugins", &op).send());
    let rec = list
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["kind"] == "recipes")
        .cloned()
        .expect("recipes");
    assert!(rec["last_error"].is_string(), "{rec}");
    let after: Vec<String> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["sha256"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(before, after, "the last good versions keep serving");
    // And the host still renders recipes with the old version.
    let (st, recs) = call(server.get("/v1/recipes", &agent));
    assert_eq!(st, 200);
    assert!(
        recs.as_array()
            .expect("array")
            .iter()
            .any(|r| r["name"] == "echo")
    );
    let (st, r) = call(server.post(
        "/v1/runs",
        &agent,
        &json!({"recipe": "echo", "args": {"text": "still"}}),
    ));
    assert_eq!(st, 201, "{r}");
    // The events record the reload attempts.
    let events = server.events(&op);
    assert!(events.iter().any(|e| e["code"] == "plugins.reloaded"));
}

#[test]
fn prune_removes_what_the_policy_says_and_is_idempotent() {
    let (_tmp, data) = temp_data_dir();
    let cfg = "[approvals]\nallow_self_approval = true\n[retention]\ninterval_ms = 0\n\
               [plugins.retention.settings]\n\"run-output.max_age_ms\" = \"1\"\n\"event.max_age_ms\" = \"off\"\n\"event.max_count\" = \"off\"\n";
    let mut server = Server::with_config(&data, cfg);
    let op = server.token("operator");
    let run = run_shell(&server, &op, "echo keep-metadata");
    let id = run["id"].as_str().expect("id").to_string();
    let before_events = server.events(&op).len();
    server.sigterm(Duration::from_secs(10)).expect("stop");
    std::thread::sleep(Duration::from_millis(20));
    let cfg_path = data.parent().expect("parent").join("happyx.toml");
    let dir = data.to_str().expect("p");
    let (st, out, err) = cli(&[
        "prune",
        "--data-dir",
        dir,
        "--config",
        cfg_path.to_str().expect("p"),
    ]);
    assert!(st.success(), "{err}");
    let report: Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(report["pruned"]["run-output"], 1, "{report}");
    assert_eq!(report["pruned"]["event"], 0, "{report}");
    assert_eq!(report["policy_hash"].as_str().map(str::len), Some(64));
    // A rerun is idempotent: nothing more to remove.
    let (st, out, _) = cli(&[
        "prune",
        "--data-dir",
        dir,
        "--config",
        cfg_path.to_str().expect("p"),
    ]);
    assert!(st.success());
    let again: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(again["pruned"]["run-output"], 0, "{again}");
    let server = Server::with_config(&data, cfg);
    let r = json(server.get(&format!("/v1/runs/{id}"), &op).send());
    assert_eq!(r["status"], "succeeded", "run metadata stays");
    let out = server
        .get(&format!("/v1/runs/{id}/output"), &op)
        .send()
        .expect("send")
        .text()
        .expect("text");
    assert!(out.is_empty(), "output pruned: {out:?}");
    let events = server.events(&op);
    assert!(events.len() > before_events);
    assert!(events.iter().any(|e| e["code"] == "retention.pruned"));
    let evidence = json(
        happyx_tests::client()
            .get(format!("{}/public/evidence", server.url))
            .send(),
    );
    assert_eq!(
        evidence["last_prune"]["counts"]["run-output"], 0,
        "the last pass is the rerun: {evidence}"
    );
}

/// A policy swap needs no restart: the `[plugins]` section is read again on every reload
/// (API, SIGHUP, file watch); a bad candidate leaves the last good version serving.
#[test]
fn reload_reads_the_plugins_section_of_the_config_again() {
    let (tmp, data) = temp_data_dir();
    let base = "[approvals]\nallow_self_approval = true\n";
    let server = Server::with_config(&data, base);
    let op = server.token("operator");
    let config = tmp.path().join("happyx.toml");
    let dir = tmp.path().join("plugins");
    let (st, _, err) = cli(&["plugin", "export-builtin", dir.to_str().expect("p")]);
    assert!(st.success(), "{err}");
    let redactor = dir.join("redactor.wasm");
    let source = |statuses: &Value| -> String {
        statuses
            .as_array()
            .expect("statuses")
            .iter()
            .find(|p| p["kind"] == "redactor")
            .map(|p| p["source"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        source(&json(server.get("/v1/plugins", &op).send())),
        "builtin"
    );

    // Named after the host started: the API reload applies it.
    std::fs::write(
        &config,
        format!(
            "{base}[plugins.redactor]\npath = \"{}\"\n",
            redactor.display()
        ),
    )
    .expect("write config");
    let (st, b) = call(server.post("/v1/plugins/reload", &op, &json!({})));
    assert_eq!(st, 200, "{b}");
    assert_eq!(source(&b), redactor.display().to_string());

    // A wrong pin, by SIGHUP: refused, the last good version keeps serving, its error shown.
    std::fs::write(
        &config,
        format!(
            "{base}[plugins.redactor]\npath = \"{}\"\nsha256 = \"{}\"\n",
            redactor.display(),
            "0".repeat(64)
        ),
    )
    .expect("write config");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("sighup");
    let after = happyx_tests::eventually(Duration::from_secs(20), || {
        let s = json(server.get("/v1/plugins", &op).send());
        let r = s
            .as_array()?
            .iter()
            .find(|p| p["kind"] == "redactor")?
            .clone();
        r["last_error"].is_string().then_some(r)
    })
    .expect("the SIGHUP reload recorded its refusal");
    assert_eq!(after["source"], redactor.display().to_string().as_str());
    let triggers: Vec<String> = server
        .events(&op)
        .iter()
        .filter(|e| e["code"] == "plugins.reloaded")
        .map(|e| format!("{}:{}", e["data"]["trigger"], e["data"]["ok"]))
        .collect();
    assert_eq!(
        triggers,
        ["\"api\":true", "\"sighup\":false"],
        "{triggers:?}"
    );

    // Turned on by a reload, the watcher applies the next edit of the config file itself.
    std::fs::write(&config, format!("{base}[plugins]\nwatch = true\n")).expect("write config");
    let (st, b) = call(server.post("/v1/plugins/reload", &op, &json!({})));
    assert_eq!(st, 200, "{b}");
    assert_eq!(source(&b), "builtin");
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &config,
        format!(
            "{base}[plugins]\nwatch = true\n[plugins.redactor]\npath = \"{}\"\n",
            redactor.display()
        ),
    )
    .expect("write config");
    happyx_tests::eventually(Duration::from_secs(20), || {
        (source(&json(server.get("/v1/plugins", &op).send())) == redactor.display().to_string())
            .then_some(())
    })
    .expect("the watcher applied the edited config");
    assert!(
        server
            .events(&op)
            .iter()
            .any(|e| e["code"] == "plugins.reloaded" && e["data"]["trigger"] == "watch"),
        "the watcher's reload is recorded like the API's"
    );
}
