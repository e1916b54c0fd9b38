//! End-to-end: what an outside attack found, each shown closed through the real binary —
//! identities' children kept apart (terminals, processes, workspace files), code planted in
//! the workspace not run by a low-risk recipe, approval tokens bound to their requester and
//! checked before their decision, descriptors not inherited by runs, private database files,
//! strict JSON bodies, error bodies that echo no input names, coalesced input-drop events,
//! and the connection limits that keep `/healthz` answering under idle and slowloris floods.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use happyx_tests::{Server, ServerOptions, call, client, eventually, json, temp_data_dir};
use serde_json::{Value, json};

const CONFIG: &str = "[public]\nsessions = true\n";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs an approved `shell` run as `agent` (approved by `op`) and returns its redacted output.
fn shell(server: &Server, agent: &str, op: &str, command: &str) -> (Value, String) {
    let body = json!({"recipe": "shell", "args": {"command": command}});
    let (st, run) = server.post_approved("/v1/runs", agent, op, &body);
    assert_eq!(st, 201, "{run}");
    let id = run["id"].as_str().expect("id");
    let done = server.wait_run(op, id);
    let out = server
        .get(&format!("/v1/runs/{id}/output"), op)
        .send()
        .expect("send")
        .text()
        .expect("text");
    (done, out)
}

/// Opens an approved `shell` terminal as `agent`; returns it.
fn terminal(server: &Server, agent: &str, op: &str, command: &str) -> Value {
    let body = json!({"recipe": "shell", "args": {"command": command}});
    let (st, p) = server.post_approved("/v1/pty", agent, op, &body);
    assert_eq!(st, 201, "{p}");
    p
}

fn transcript(server: &Server, op: &str, id: &str) -> String {
    let bytes = server
        .get(&format!("/v1/pty/{id}/transcript?from=0"), op)
        .send()
        .expect("send")
        .bytes()
        .expect("bytes");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn one_identitys_children_cannot_reach_anothers_terminal_processes_or_files() {
    if !is_root() {
        eprintln!("skipped: per-identity uids need a host running as root");
        return;
    }
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(&data, CONFIG);
    let op = server.token("operator");
    let a = server.token("agent");
    let b = server.token("agent");

    // A: a terminal whose program waits for a line, and a file in A's workspace.
    let (_, out) = shell(
        &server,
        &a,
        &op,
        "echo secret-of-a > mine.txt; chmod 644 mine.txt; pwd; id -u",
    );
    let lines: Vec<&str> = out.lines().collect();
    let (a_dir, a_uid) = (lines[0].to_string(), lines[1].to_string());
    let t = terminal(
        &server,
        &a,
        &op,
        "echo ready-a; read line; echo got:$line; sleep 1000",
    );
    let tid = t["id"].as_str().expect("id").to_string();
    let a_pid = t["pid"].as_i64().expect("pid");
    eventually(Duration::from_secs(20), || {
        transcript(&server, &op, &tid)
            .contains("ready-a")
            .then_some(())
    })
    .expect("A's terminal started");

    // B tries to write into every terminal, signal A's program and read A's file.
    let script = format!(
        "id -u; pwd; for p in /dev/pts/[0-9]*; do (printf 'FROM-B\\n' > $p) 2>/dev/null && echo WROTE:$p; \
         (head -c 1 < $p) 2>/dev/null >/dev/null && echo READ:$p; done; \
         kill -0 {a_pid} 2>/dev/null && echo SIGNALLED; \
         cat {a_dir}/mine.txt 2>/dev/null; ls {a_dir} 2>/dev/null && echo LISTED; \
         touch {a_dir}/planted 2>/dev/null && echo PLANTED; echo b-done"
    );
    let (done, out) = shell(&server, &b, &op, &script);
    assert_eq!(done["status"], "succeeded", "{done} {out}");
    let b_lines: Vec<&str> = out.lines().collect();
    assert_ne!(b_lines[0], a_uid, "A and B ran as one uid: {out}");
    assert_ne!(b_lines[1], a_dir, "A and B share a workspace: {out}");
    for bad in [
        "WROTE",
        "READ:",
        "SIGNALLED",
        "secret-of-a",
        "LISTED",
        "PLANTED",
    ] {
        assert!(!out.contains(bad), "B's child could {bad}: {out}");
    }
    assert!(out.contains("b-done"), "{out}");
    assert!(
        !transcript(&server, &op, &tid).contains("FROM-B"),
        "B's bytes reached A's terminal"
    );
    // A's terminal device belongs to A alone.
    let tty = std::fs::read_link(format!("/proc/{a_pid}/fd/0")).expect("tty of A");
    let meta = std::fs::metadata(&tty).expect("tty meta");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{}",
        tty.display()
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.uid().to_string(), a_uid);

    // The same identity keeps its uid and workspace across runs and restarts.
    drop(server);
    let server = Server::with_config(&data, CONFIG);
    let (_, again) = shell(&server, &a, &op, "pwd; id -u");
    assert_eq!(
        again.lines().collect::<Vec<_>>(),
        vec![a_dir.as_str(), a_uid.as_str()]
    );
    // Status says the guarantees hold.
    let st = json(server.get("/v1/status", &op).send());
    assert_eq!(st["isolation"]["isolation"], "per-identity", "{st}");
    assert_eq!(st["isolation"]["identities_apart"], true, "{st}");
}

#[test]
fn a_low_risk_recipe_does_not_run_code_planted_in_the_workspace() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(&data, CONFIG);
    let op = server.token("operator");
    let agent = server.token("agent");
    // An approved command plants a repository whose own config and the HOME the child sees
    // name programs git would run.
    let plant = "git init -q . && git config user.email a@b && git config user.name a && \
        echo x > f && git add f && git commit -qm init && \
        printf '#!/bin/sh\\necho PWNED-FSMONITOR > /tmp/happyx-pwned-$$\\n' > hook.sh && chmod +x hook.sh && \
        git config core.fsmonitor \"$PWD/hook.sh\" && git config core.pager \"$PWD/hook.sh\" && \
        mkdir -p hooks && cp hook.sh hooks/post-index-change && git config core.hooksPath \"$PWD/hooks\" && \
        git config diff.external \"$PWD/hook.sh\" && \
        (printf '[core]\\n\\tfsmonitor = %s/hook.sh\\n' \"$PWD\" > \"$HOME/.gitconfig\") 2>/dev/null; \
        echo HOME=$HOME; echo planted";
    let (done, out) = shell(&server, &agent, &op, plant);
    assert_eq!(done["status"], "succeeded", "{out}");
    let home = out
        .lines()
        .find_map(|l| l.strip_prefix("HOME="))
        .expect("HOME printed");
    let (_, pwd) = shell(&server, &agent, &op, "pwd");
    assert!(
        !home.starts_with(pwd.trim()),
        "HOME {home} is inside the workspace {}",
        pwd.trim()
    );
    let before: Vec<_> = pwned_files();
    let (st, run) = call(server.post(
        "/v1/runs",
        &agent,
        &json!({"recipe": "git-status", "args": {}}),
    ));
    assert_eq!(st, 201, "{run}");
    let done = server.wait_run(&op, run["id"].as_str().expect("id"));
    assert_eq!(done["status"], "succeeded", "{done}");
    let out = server
        .get(
            &format!("/v1/runs/{}/output", run["id"].as_str().expect("id")),
            &op,
        )
        .send()
        .expect("send")
        .text()
        .expect("text");
    assert!(!out.contains("PWNED"), "{out}");
    assert!(out.contains("##"), "git status ran: {out}");
    assert_eq!(pwned_files(), before, "planted code ran");
}

fn pwned_files() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/tmp")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("happyx-pwned-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn an_approval_token_is_spent_only_by_the_identity_that_asked() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(&data, CONFIG);
    let op = server.token("operator");
    let a = server.token("agent");
    let b = server.token("agent");
    for path in ["/v1/runs", "/v1/pty"] {
        let body = json!({"recipe": "shell", "args": {"command": "echo hi; sleep 1"}});
        let (st, req) = call(server.post(path, &a, &body));
        assert_eq!((st, req["code"].as_str()), (403, Some("approval_required")));
        let id = req["approval_id"].as_str().expect("id");
        let token = req["approval_token"].as_str().expect("token");
        let mut used = body.clone();
        used["approval_token"] = json!(token);
        // Still pending: another identity gets approval_invalid, not approval_pending.
        let (st, e) = call(server.post(path, &b, &used));
        assert_eq!(
            (st, e["code"].as_str()),
            (403, Some("approval_invalid")),
            "{e}"
        );
        let (st, e) = call(server.post(path, &a, &used));
        assert_eq!(
            (st, e["code"].as_str()),
            (403, Some("approval_pending")),
            "{e}"
        );
        let (st, _) = call(server.post(&format!("/v1/approvals/{id}/approve"), &op, &json!({})));
        assert_eq!(st, 200);
        // Approved: neither another agent nor the approving operator may spend it.
        for thief in [&b, &op] {
            let (st, e) = call(server.post(path, thief, &used));
            assert_eq!(
                (st, e["code"].as_str()),
                (403, Some("approval_invalid")),
                "{path}: {e}"
            );
        }
        let (st, ok) = call(server.post(path, &a, &used));
        assert_eq!(st, 201, "{path}: {ok}");
    }
}

#[test]
fn a_pending_token_presented_for_another_action_is_invalid() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(&data, CONFIG);
    let a = server.token("agent");
    let (_, req) = call(server.post(
        "/v1/runs",
        &a,
        &json!({"recipe": "shell", "args": {"command": "echo one"}}),
    ));
    let token = req["approval_token"].as_str().expect("token");
    let (st, e) = call(server.post(
        "/v1/runs",
        &a,
        &json!({"recipe": "shell", "args": {"command": "echo two"}, "approval_token": token}),
    ));
    assert_eq!(
        (st, e["code"].as_str()),
        (403, Some("approval_invalid")),
        "{e}"
    );
}

#[test]
fn runs_inherit_no_host_descriptor_and_database_files_are_private() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(&data, CONFIG);
    let op = server.token("operator");
    let agent = server.token("agent");
    let (_, out) = shell(
        &server,
        &agent,
        &op,
        "ls /proc/self/fd | sort -n | tr '\\n' ' '",
    );
    // 0, 1, 2 and the descriptor `ls` opened to read the directory.
    let fds: Vec<i32> = out
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(
        fds.iter().filter(|&&fd| fd > 2).count() <= 1,
        "a run inherited descriptors: {out}"
    );
    for entry in walk(&data) {
        let meta = std::fs::symlink_metadata(&entry).expect("meta");
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", entry.display());
        }
    }
    assert!(
        data.join("happyx.db-wal").exists(),
        "the WAL exists while serving"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn bodies_are_one_json_document_and_errors_echo_no_input_names() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(&data, CONFIG);
    let agent = server.token("agent");
    let secret_name = "AKIAIOSFODNN7EXAMPLE";
    let url = format!("{}/v1/tasks", server.url);
    for body in [r#"{"title":"x"} xyz"#, r#"{"title":"x"}{"title":"y"}"#] {
        let r = client()
            .post(&url)
            .bearer_auth(&agent)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("send");
        assert_eq!(r.status().as_u16(), 400, "{body}");
        assert_eq!(json(Ok(r))["code"], "invalid_json", "{body}");
    }
    // An unknown field, an unknown run argument and an unknown query parameter named like a
    // secret: the answer names a position, never the name.
    let r = client()
        .post(&url)
        .bearer_auth(&agent)
        .header("content-type", "application/json")
        .body(format!(r#"{{"title":"x","{secret_name}":1}}"#))
        .send()
        .expect("send");
    let (st, text) = (r.status().as_u16(), r.text().expect("text"));
    assert_eq!(st, 422, "{text}");
    assert!(!text.contains(secret_name), "{text}");
    assert!(text.contains("line 1, column"), "{text}");
    let (st, e) = call(server.post(
        "/v1/runs",
        &agent,
        &json!({"recipe": "echo", "args": {"text": "hi", secret_name: "x"}}),
    ));
    assert_eq!(st, 422, "{e}");
    assert!(!e.to_string().contains(secret_name), "{e}");
    assert!(
        e["message"].as_str().unwrap_or("").contains("argument #"),
        "{e}"
    );
    for path in [
        format!("/v1/tasks?{secret_name}=1"),
        format!("/public/runs?{secret_name}=1"),
    ] {
        let r = client()
            .get(format!("{}{path}", server.url))
            .bearer_auth(&agent)
            .send()
            .expect("send");
        let text = r.text().expect("text");
        assert!(!text.contains(secret_name), "{path}: {text}");
    }
}

#[test]
fn a_viewer_sees_pending_commands_redacted_and_an_operator_sees_them_marked() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(&data, CONFIG);
    let op = server.token("operator");
    let viewer = server.token("viewer");
    let agent = server.token("agent");
    let bearer = server.token("agent");
    let command = format!(
        "deploy --aws AKIAIOSFODNN7EXAMPLE --gh ghp_abcdefghijklmnopqrstuvwxyz0123456789 \
         --password=hunter2hunter2 --bearer {bearer}"
    );
    let (st, _) = call(server.post(
        "/v1/runs",
        &agent,
        &json!({"recipe": "shell", "args": {"command": command}}),
    ));
    assert_eq!(st, 403);
    let seen = json(server.get("/v1/approvals?status=pending", &viewer).send());
    let text = seen.to_string();
    for secret in [
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "hunter2hunter2",
        bearer.as_str(),
    ] {
        assert!(!text.contains(secret), "a viewer saw {secret}: {text}");
    }
    assert!(text.contains("deploy --aws"), "{text}");
    let exact = json(server.get("/v1/approvals?status=pending", &op).send());
    let item = &exact["items"][0];
    assert!(
        item.to_string().contains(&bearer),
        "operators see the exact action"
    );
    let marks = item["secrets"].as_array().expect("secrets marked");
    assert!(marks.len() >= 4, "{item}");
    assert!(
        marks
            .iter()
            .all(|m| m["path"].as_str().is_some_and(|p| p.starts_with('/'))),
        "{item}"
    );
}

#[test]
fn a_flood_of_dropped_input_is_one_event_per_second() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(&data, "[approvals]\nallow_self_approval = true\n");
    let op = server.token("operator");
    let t = terminal(&server, &op, &op, "exec sleep 1000");
    let id = t["id"].as_str().expect("id").to_string();
    let url = server.url.clone();
    let (st, tk) = call(server.post(
        &format!("/v1/pty/{id}/attach"),
        &op,
        &json!({"mode": "drive"}),
    ));
    assert_eq!(st, 201, "{tk}");
    let ticket = tk["ticket"].as_str().expect("ticket").to_string();
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async move {
        use futures::SinkExt;
        let ws_url = format!(
            "{}/v1/pty/{id}/ws?ticket={ticket}&offset=0",
            url.replace("http://", "ws://")
        );
        let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("ws");
        // Read what the host sends (the terminal's echo, the drop notices) as any client does:
        // a driver that never reads is closed as a slow consumer (docs/pty.md), which on a
        // loaded machine can happen before the flood is sent.
        let (mut ws, mut incoming) = futures::StreamExt::split(ws);
        let reader = tokio::spawn(async move {
            while futures::StreamExt::next(&mut incoming).await.is_some() {}
        });
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..640 {
            ws.send(tokio_tungstenite::tungstenite::Message::Binary(
                chunk.clone().into(),
            ))
            .await
            .expect("send");
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        reader.abort();
    });
    let elapsed = started.elapsed().as_secs_f64();
    let dropped: Vec<Value> = server
        .events(&op)
        .into_iter()
        .filter(|e| e["code"] == "pty.input_dropped")
        .collect();
    assert!(!dropped.is_empty(), "no drop was recorded");
    assert!(
        (dropped.len() as f64) <= elapsed.ceil() + 1.0,
        "{} events in {elapsed:.1} s",
        dropped.len()
    );
    let total: u64 = dropped
        .iter()
        .map(|e| e["data"]["bytes"].as_u64().unwrap_or(0))
        .sum();
    assert!(total >= 64 * 1024, "totals are kept: {total}");
}

#[test]
fn healthz_answers_within_a_second_under_idle_and_slowloris_floods() {
    // The host gets 1,024 descriptors; the flood comes from another loopback address.
    let (_tmp, data) = temp_data_dir();
    let server = Server::start_with(
        &data,
        ServerOptions {
            config: Some(CONFIG.into()),
            nofile: Some(1024),
            ..Default::default()
        },
    )
    .expect("server");
    raise_own_nofile();
    let addr: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let attacker: std::net::IpAddr = "127.0.0.2".parse().expect("ip");
    let mut held = Vec::new();
    for i in 0..2500 {
        let Ok(s) = connect_from(attacker, addr) else {
            continue;
        };
        if i >= 2000 {
            // Slowloris: a request head that never ends.
            let _ = (&s).write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ");
        }
        held.push(s);
    }
    assert!(held.len() > 1000, "the flood could not even connect");
    for round in 0..5 {
        let started = Instant::now();
        let r = client()
            .get(format!("{}/healthz", server.url))
            .timeout(Duration::from_secs(5))
            .send();
        let took = started.elapsed();
        assert!(
            matches!(&r, Ok(resp) if resp.status().is_success()),
            "round {round}: {r:?}"
        );
        assert!(took < Duration::from_secs(1), "round {round}: {took:?}");
        // Slowloris bytes keep trickling.
        for s in held.iter().skip(2000) {
            let _ = (&*s).write_all(b"a");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // Connections held past the header-read timeout are closed by the host.
    let cfg = "[public]\nsessions = true\n[api]\nheader_read_timeout_ms = 500\n";
    drop(held);
    drop(server);
    let server = Server::with_config(&data, cfg);
    let addr: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let mut idle = connect_from(attacker, addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "an idle connection got data");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the idle connection was not closed: {:?}",
        started.elapsed()
    );
}

fn connect_from(ip: std::net::IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

fn raise_own_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536), hard);
    }
}

/// A host that is not root cannot give identities their own uids; Landlock still keeps each
/// child to its own workspace: not the data dir, not another identity's workspace, terminal
/// or processes, not the host, not /tmp (its TMPDIR is in its workspace).
#[test]
fn a_host_that_is_not_root_confines_children_with_landlock() {
    if !is_root() {
        eprintln!("skipped: starting a host as another user needs root");
        return;
    }
    if happyx::sandbox::abi() < 6 {
        eprintln!("skipped: this kernel's Landlock is older than ABI 6");
        return;
    }
    const NOBODY: u32 = 65534;
    let (tmp, data) = temp_data_dir();
    let cache = tmp.path().join("plugin-cache");
    std::fs::create_dir(&cache).expect("cache dir");
    for dir in [tmp.path(), cache.as_path()] {
        nix::unistd::chown(dir, Some(NOBODY.into()), Some(NOBODY.into())).expect("chown");
    }
    let server = Server::start_with(
        &data,
        ServerOptions {
            config: Some(CONFIG.into()),
            env: vec![(
                "HAPPYX_PLUGINS__CACHE_DIR".into(),
                cache.to_string_lossy().into_owned(),
            )],
            uid: Some(NOBODY),
            ..Default::default()
        },
    )
    .expect("a host running as nobody starts");
    let op = server.token("operator");
    let a = server.token("agent");
    let b = server.token("agent");
    let st = json(server.get("/v1/status", &op).send());
    assert_eq!(st["isolation"]["isolation"], "host-user", "{st}");
    assert!(st["isolation"]["landlock"].as_u64() >= Some(6), "{st}");
    assert_eq!(st["isolation"]["identities_apart"], true, "{st}");
    assert_eq!(st["isolation"]["host_closed"], true, "{st}");

    let (done, out) = shell(
        &server,
        &a,
        &op,
        "echo secret-of-a > mine.txt; pwd; echo t > \"$TMPDIR/t\" && echo TMP-OK",
    );
    assert_eq!(done["status"], "succeeded", "{done} {out}");
    let a_dir = out.lines().next().expect("pwd").to_string();
    assert!(out.contains("TMP-OK"), "TMPDIR is writable: {out}");
    let t = terminal(
        &server,
        &a,
        &op,
        "echo ready-a; echo via-tty > /dev/tty; sleep 1000",
    );
    let tid = t["id"].as_str().expect("id").to_string();
    let a_pid = t["pid"].as_i64().expect("pid");
    eventually(Duration::from_secs(20), || {
        transcript(&server, &op, &tid)
            .contains("via-tty")
            .then_some(())
    })
    .expect("A's terminal started");

    let host_pid = server.pid();
    let data = data.display();
    let script = format!(
        "echo UID:$(id -u); echo PWD:$(pwd); for p in /dev/pts/[0-9]*; do (printf 'FROM-B\\n' > $p) 2>/dev/null && echo WROTE:$p; done; \
         kill -0 {a_pid} 2>/dev/null && echo SIGNALLED-A; kill -0 {host_pid} 2>/dev/null && echo SIGNALLED-HOST; \
         head -c 16 {data}/happyx.db 2>/dev/null && echo READ-DB; ls {data} 2>/dev/null && echo LISTED-DATA; \
         cat {a_dir}/mine.txt 2>/dev/null; ls {a_dir} 2>/dev/null && echo LISTED-A; \
         touch {a_dir}/planted 2>/dev/null && echo PLANTED; \
         cat /proc/{host_pid}/environ 2>/dev/null && echo HOST-ENV; \
         (echo x > /tmp/happyx-landlock-probe) 2>/dev/null && echo WROTE-TMP; \
         cat /etc/hostname >/dev/null && echo SYSTEM-READ; echo b-done"
    );
    let (done, out) = shell(&server, &b, &op, &script);
    assert_eq!(done["status"], "succeeded", "{done} {out}");
    assert!(
        out.contains(&format!("UID:{NOBODY}\n")),
        "children run as the host's uid: {out}"
    );
    assert!(
        !out.contains(&format!("PWD:{a_dir}\n")),
        "A and B share a workspace: {out}"
    );
    for bad in [
        "WROTE:",
        "SIGNALLED",
        "READ-DB",
        "LISTED",
        "secret-of-a",
        "PLANTED",
        "HOST-ENV",
        "WROTE-TMP",
    ] {
        assert!(!out.contains(bad), "B's child could {bad}: {out}");
    }
    assert!(
        out.contains("SYSTEM-READ") && out.contains("b-done"),
        "{out}"
    );
    assert!(
        !transcript(&server, &op, &tid).contains("FROM-B"),
        "B's bytes reached A's terminal"
    );
    // A's own terminal still works under its confinement: reopened through /dev/tty.
    assert!(
        transcript(&server, &op, &tid).contains("via-tty"),
        "a confined terminal program cannot reach its own terminal"
    );
}
