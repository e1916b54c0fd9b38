//! End-to-end: the operator commands (`happyx status|approvals|runs|pty|enroll|devices|events`,
//! `completions`, `man`) run as the real binary against a real host over HTTP — tables,
//! `--json`, error messages and exit statuses, the approval flow driven from the CLI,
//! `runs logs --follow` and `events tail --follow` while things happen, and `pty attach`
//! driven through a real PTY (type, see the output, detach; the terminal lives on).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use happyx_tests::{Server, ServerOptions, binary, call, cli_env, eventually, json, temp_data_dir};
use serde_json::{Value, json};

/// Runs `happyx args…` as a client of `server` with `token` in `HAPPYX_TOKEN`.
fn ops(server: &Server, token: &str, args: &[&str]) -> (bool, String, String) {
    let (st, out, err) = cli_env(
        args,
        &[("HAPPYX_URL", server.url.as_str()), ("HAPPYX_TOKEN", token)],
    );
    (st.success(), out, err)
}

/// Like [`ops`], expecting success; returns stdout.
fn ok(server: &Server, token: &str, args: &[&str]) -> String {
    let (success, out, err) = ops(server, token, args);
    assert!(success, "happyx {args:?} failed: {err}");
    out
}

/// Like [`ops`], expecting failure; returns stderr.
fn fails(server: &Server, token: &str, args: &[&str]) -> String {
    let (success, out, err) = ops(server, token, args);
    assert!(!success, "happyx {args:?} should fail; stdout {out:?}");
    assert!(
        out.is_empty(),
        "a failure prints nothing on stdout: {out:?}"
    );
    assert!(err.starts_with("happyx: "), "{err:?}");
    err
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l:?}")))
        .collect()
}

/// A high-risk run requested by `agent`: the approval id and token.
fn request_shell(server: &Server, agent: &str, command: &str) -> (String, String, Value) {
    let body = json!({"recipe": "shell", "args": {"command": command}});
    let (st, b) = call(server.post("/v1/runs", agent, &body));
    assert_eq!(
        (st, b["code"].as_str()),
        (403, Some("approval_required")),
        "{b}"
    );
    (
        b["approval_id"].as_str().expect("id").to_string(),
        b["approval_token"].as_str().expect("token").to_string(),
        body,
    )
}

fn spawn_ops(server: &Server, token: &str, args: &[&str]) -> Child {
    Command::new(binary())
        .args(args)
        .env("HAPPYX_URL", &server.url)
        .env("HAPPYX_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn happyx")
}

/// Lines of a child's stdout, read on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_approvals_runs_and_errors() {
    let (tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let op = server.token("operator");
    let agent = server.token("agent");
    let viewer = server.token("viewer");

    // status: a table for people, one JSON object for scripts.
    let out = ok(&server, &op, &["status"]);
    assert!(
        out.contains("pending approvals") && out.contains("live terminals"),
        "{out}"
    );
    let s = json_lines(&ok(&server, &viewer, &["status", "--json"]));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0]["address"].as_str(), server.url.strip_prefix("http://"));

    // The token from a file (never argv); a bad or missing token is a clear error.
    let tok_file = tmp.path().join("op.token");
    std::fs::write(&tok_file, format!("{op}\n")).expect("write token file");
    let (st, out, err) = cli_env(
        &[
            "status",
            "--json",
            "--token-file",
            tok_file.to_str().expect("utf-8"),
        ],
        &[("HAPPYX_URL", server.url.as_str())],
    );
    assert!(st.success(), "{err}");
    assert_eq!(json_lines(&out).len(), 1);
    let err = fails(&server, "hpx_bad_token", &["status"]);
    assert!(
        err.contains("unauthorized:") && err.contains("HAPPYX_TOKEN"),
        "{err}"
    );
    assert!(
        !err.contains("hpx_bad_token"),
        "the token is never echoed: {err}"
    );
    let (st, _, err) = cli_env(&["status"], &[("HAPPYX_URL", server.url.as_str())]);
    assert!(!st.success() && err.contains("no token"), "{err}");
    let err = fails(
        &server,
        &op,
        &["approvals", "show", "01a00000-0000-7000-8000-000000000000"],
    );
    assert!(err.contains("not_found: no such approval"), "{err}");
    let (st, _, err) = cli_env(
        &["status"],
        &[("HAPPYX_URL", "http://127.0.0.1:9"), ("HAPPYX_TOKEN", &op)],
    );
    assert!(
        !st.success() && err.contains("cannot reach the host"),
        "{err}"
    );
    assert!(!err.contains(&op), "{err}");

    // The agent asks; the operator approves from the CLI; the agent's retry runs once.
    let (id, token, body) = request_shell(&server, &agent, "echo approved-$((40+2))");
    let table = ok(&server, &op, &["approvals", "ls"]);
    assert!(table.starts_with("ID ") && table.contains(&id), "{table}");
    assert!(
        table.contains("sh -c"),
        "the rendered command is shown: {table}"
    );
    let listed = json_lines(&ok(&server, &op, &["approvals", "ls", "--json"]));
    assert!(listed.iter().any(|a| a["id"] == id.as_str()), "{listed:?}");
    let shown = ok(&server, &op, &["approvals", "show", &id]);
    assert!(
        shown.contains("approved-$((40+2))") && shown.contains("pending"),
        "{shown}"
    );
    let err = fails(&server, &viewer, &["approvals", "approve", &id]);
    assert!(err.contains("forbidden:"), "{err}");
    assert_eq!(
        ok(&server, &op, &["approvals", "approve", &id]).trim(),
        format!("{id} approved")
    );
    let mut retry = body.clone();
    retry["approval_token"] = Value::from(token.as_str());
    let (st, run) = call(server.post("/v1/runs", &agent, &retry));
    assert_eq!(st, 201, "{run}");
    let run_id = run["id"].as_str().expect("run id").to_string();
    server.wait_run(&op, &run_id);
    let runs = ok(&server, &op, &["runs", "ls"]);
    assert!(
        runs.contains(&run_id) && runs.contains("succeeded"),
        "{runs}"
    );
    let shown = json_lines(&ok(&server, &op, &["runs", "show", &run_id, "--json"]));
    assert_eq!(shown[0]["status"], "succeeded");
    assert_eq!(
        ok(&server, &op, &["runs", "logs", &run_id]),
        "approved-42\n"
    );
    let err = fails(&server, &op, &["runs", "show", "no-such-run"]);
    assert!(err.contains("not_found: no such run"), "{err}");

    // Deny with a reason: the agent's token is then worthless.
    let (id, token, body) = request_shell(&server, &agent, "echo never");
    let out = ok(
        &server,
        &op,
        &["approvals", "deny", &id, "--reason", "not today"],
    );
    assert_eq!(out.trim(), format!("{id} denied"));
    let mut retry = body;
    retry["approval_token"] = Value::from(token.as_str());
    let (st, b) = call(server.post("/v1/runs", &agent, &retry));
    assert_eq!(
        (st, b["code"].as_str()),
        (403, Some("approval_invalid")),
        "{b}"
    );
    let denied = json_lines(&ok(
        &server,
        &op,
        &["approvals", "ls", "--status", "denied", "--json"],
    ));
    assert!(denied.iter().any(|a| a["id"] == id.as_str()), "{denied:?}");

    // The requester withdraws its own pending approval.
    let (id, _, _) = request_shell(&server, &agent, "echo withdrawn");
    let out = json_lines(&ok(
        &server,
        &agent,
        &["approvals", "withdraw", &id, "--json"],
    ));
    assert_eq!(out[0]["status"], "denied", "{out:?}");
    let err = fails(&server, &op, &["approvals", "approve", &id]);
    assert!(err.contains("approval_not_pending"), "{err}");
}

#[test]
fn runs_logs_follow_prints_output_as_it_arrives() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::with_config(&data, "[approvals]\nallow_self_approval = true\n");
    let op = server.token("operator");
    let body = json!({"recipe": "shell", "args": {"command": "echo first-line; sleep 3; echo second-line"}});
    let (st, run) = server.post_approved("/v1/runs", &op, &op, &body);
    assert_eq!(st, 201, "{run}");
    let id = run["id"].as_str().expect("id").to_string();
    let mut child = spawn_ops(&server, &op, &["runs", "logs", &id, "--follow"]);
    let lines = lines_of(&mut child);
    let first = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("first line");
    assert_eq!(first, "first-line");
    let r = json(server.get(&format!("/v1/runs/{id}"), &op).send());
    assert_eq!(
        r["status"], "running",
        "the first line came while the run ran: {r}"
    );
    let second = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("second line");
    assert_eq!(second, "second-line");
    let st = wait_exit(&mut child, Duration::from_secs(20));
    assert!(st.success(), "{st:?}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(
        err.contains("succeeded") && err.contains("exit code 0"),
        "{err}"
    );
    assert!(
        lines.recv_timeout(Duration::from_millis(200)).is_err(),
        "nothing printed twice"
    );
}

#[test]
fn events_enroll_and_devices() {
    let (tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let op = server.token("operator");

    let tail = json_lines(&ok(&server, &op, &["events", "tail", "-n", "2", "--json"]));
    assert_eq!(tail.len(), 2, "{tail:?}");
    assert!(tail[0]["seq"].as_i64() < tail[1]["seq"].as_i64());
    let last = server.last_seq(&op);
    assert_eq!(tail[1]["seq"].as_i64(), Some(last));

    let mut follow = spawn_ops(
        &server,
        &op,
        &[
            "events",
            "tail",
            "--follow",
            "--json",
            "-n",
            "0",
            "--interval-ms",
            "200",
        ],
    );
    let lines = lines_of(&mut follow);
    std::thread::sleep(Duration::from_millis(500));

    // An enrollment code alone on stdout; a device enrolls with it.
    let code = ok(&server, &op, &["enroll", "create", "--name", "laptop"]);
    let code = code.trim();
    assert!(!code.is_empty() && !code.contains(' '), "{code:?}");
    let seen = eventually(Duration::from_secs(15), || {
        let line = lines.recv_timeout(Duration::from_millis(200)).ok()?;
        let v: Value = serde_json::from_str(&line).expect("json event");
        v["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("enrollment"))
            .then_some(v)
    });
    assert!(
        seen.is_some(),
        "events tail --follow saw the new enrollment event"
    );
    let _ = follow.kill();
    let _ = follow.wait();
    let last = ok(&server, &op, &["events", "tail", "-n", "1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
    assert!(last.contains("enrollment.created"), "{last}");
    let issued = json_lines(&ok(
        &server,
        &op,
        &["enroll", "create", "--ttl", "90s", "--json"],
    ));
    let ttl = issued[0]["expires_at"].as_i64().expect("expires_at") - happyx::util::now_ms();
    assert!((60_000..=90_000).contains(&ttl), "{issued:?}");

    let dir = tmp.path().join("device");
    let dir_s = dir.to_str().expect("utf-8");
    let (st, _, err) = cli_env(&["device", "keygen", "--dir", dir_s], &[]);
    assert!(st.success(), "{err}");
    let (st, out, err) = cli_env(
        &[
            "device",
            "enroll",
            "--dir",
            dir_s,
            "--url",
            &server.url,
            "--code",
            code,
        ],
        &[],
    );
    assert!(st.success(), "{err}");
    let device = out.trim().to_string();
    let table = ok(&server, &op, &["devices", "ls"]);
    assert!(
        table.contains(&device) && table.contains("laptop") && table.contains("active"),
        "{table}"
    );
    let out = ok(
        &server,
        &op,
        &["devices", "revoke", &device, "--reason", "lost on a train"],
    );
    assert_eq!(out.trim(), format!("{device} revoked"));
    let listed = json_lines(&ok(&server, &op, &["devices", "ls", "--json"]));
    assert_eq!(listed[0]["revoke_reason"], "lost on a train", "{listed:?}");
    let err = fails(&server, &op, &["devices", "revoke", "no-such-device"]);
    assert!(err.contains("not_found"), "{err}");
}

/// Reads from a PTY master on a thread into a shared buffer.
fn pty_reader(mut r: Box<dyn Read + Send>) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                return;
            }
            b.lock().expect("lock").extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

#[test]
fn pty_ls_attach_drive_detach_and_observe() {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let (_tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let op = server.token("operator");
    let agent = server.token("agent");
    let other = server.token("agent");
    let body = json!({"recipe": "shell", "args": {"command": "exec sh -i"}});
    let (st, p) = server.post_approved("/v1/pty", &agent, &op, &body);
    assert_eq!(st, 201, "{p}");
    let id = p["id"].as_str().expect("id").to_string();

    // The listing: everyone's for operators, its own for an agent, paged.
    let table = ok(&server, &op, &["pty", "ls"]);
    assert!(table.contains(&id) && table.contains("running"), "{table}");
    assert_eq!(
        json_lines(&ok(&server, &agent, &["pty", "ls", "--json"])).len(),
        1
    );
    assert!(json_lines(&ok(&server, &other, &["pty", "ls", "--json"])).is_empty());
    let page = json(server.get("/v1/pty?limit=1", &op).send());
    assert_eq!(page["items"][0]["id"], id.as_str(), "{page}");
    assert!(page["next"].is_null(), "{page}");
    let (st, b) = call(server.get("/v1/pty?limit=0", &op));
    assert_eq!(
        (st, b["code"].as_str()),
        (400, Some("invalid_query")),
        "{b}"
    );

    // Drive it from a real terminal: type, see the output, detach with Ctrl-\.
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 30,
            cols: 100,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("openpty");
    let mut c = CommandBuilder::new(binary());
    c.args(["pty", "attach", &id]);
    c.env("HAPPYX_URL", &server.url);
    c.env("HAPPYX_TOKEN", &op);
    let mut client = pair
        .slave
        .spawn_command(c)
        .expect("spawn the client under a pty");
    drop(pair.slave);
    let screen = pty_reader(pair.master.try_clone_reader().expect("reader"));
    let mut keys = pair.master.take_writer().expect("writer");
    let shown = |needle: &str| {
        eventually(Duration::from_secs(20), || {
            let s = String::from_utf8_lossy(&screen.lock().expect("lock")).into_owned();
            s.contains(needle).then_some(s)
        })
    };
    shown("attached to terminal").expect("the client says it attached");
    keys.write_all(b"echo hi-$((1+1))\r").expect("type");
    shown("hi-2").expect("the terminal's output reaches the client's terminal");
    // The size of the client's terminal was sent at start.
    let sized = eventually(Duration::from_secs(10), || {
        let p = json(server.get(&format!("/v1/pty/{id}"), &op).send());
        (p["rows"] == 30 && p["cols"] == 100).then_some(p)
    });
    assert!(sized.is_some(), "the client sent its window size");
    // A window change (SIGWINCH to the client) reaches the terminal.
    pair.master
        .resize(PtySize {
            rows: 40,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("resize");
    let resized = eventually(Duration::from_secs(10), || {
        let p = json(server.get(&format!("/v1/pty/{id}"), &op).send());
        (p["rows"] == 40 && p["cols"] == 120).then_some(p)
    });
    assert!(resized.is_some(), "the client sent the new window size");
    keys.write_all(&[0x1c]).expect("detach key");
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        if let Ok(Some(st)) = client.try_wait() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the client did not exit on the detach key"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(st.success(), "{st:?}");
    shown("detached from terminal").expect("says it detached");
    let p = json(server.get(&format!("/v1/pty/{id}"), &op).send());
    assert_eq!(p["state"], "running", "the terminal lives on: {p}");

    // Observe from a pipe: the transcript from the start, then the end of the terminal.
    let mut observer = spawn_ops(&server, &op, &["pty", "attach", &id, "--observe"]);
    let mut out = observer.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = out.read(&mut chunk) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&chunk[..n]);
            let _ = tx.send(all.clone());
        }
    });
    let seen = eventually(Duration::from_secs(20), || {
        let all = rx.recv_timeout(Duration::from_millis(200)).ok()?;
        String::from_utf8_lossy(&all).contains("hi-2").then_some(())
    });
    assert!(seen.is_some(), "the observer replays the transcript");
    let (st, b) = call(server.post(&format!("/v1/pty/{id}/kill"), &op, &json!({})));
    assert_eq!(st, 200, "{b}");
    let st = wait_exit(&mut observer, Duration::from_secs(30));
    assert!(!st.success(), "a killed terminal is not a success: {st:?}");
    let mut err = String::new();
    observer
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(err.contains(&format!("terminal {id}")), "{err}");
    let err = fails(&server, &op, &["pty", "attach", "no-such-pty"]);
    assert!(err.contains("not_found: no such pty"), "{err}");
}

#[test]
fn client_variables_do_not_configure_the_server() {
    let (_tmp, data) = temp_data_dir();
    let env = [
        ("HAPPYX_URL", "http://127.0.0.1:9"),
        ("HAPPYX_TOKEN", "hpx_not_a_real_token"),
    ];
    let server = Server::start_with(
        &data,
        ServerOptions {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        },
    )
    .expect("serve starts with HAPPYX_URL and HAPPYX_TOKEN set");
    let dir = data.to_str().expect("utf-8");
    let (st, out, err) = cli_env(
        &["token", "create", "--data-dir", dir, "--role", "operator"],
        &env,
    );
    assert!(
        st.success(),
        "token create with client variables set: {err}"
    );
    let token = out.trim();
    let out = ok(&server, token, &["status", "--json"]);
    assert_eq!(json_lines(&out).len(), 1);
}

#[test]
fn completions_and_man_pages() {
    let (st, out, err) = cli_env(&["completions", "bash"], &[]);
    assert!(st.success(), "{err}");
    assert!(
        out.contains("approvals") && out.contains("attach"),
        "bash completions name the commands"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("man");
    let (st, out, err) = cli_env(&["man", dir.to_str().expect("utf-8")], &[]);
    assert!(st.success(), "{err}");
    assert!(out.lines().count() > 10, "{out}");
    let page = std::fs::read_to_string(dir.join("happyx-approvals-approve.1"))
        .expect("a page per subcommand");
    assert!(page.contains(".TH") && page.contains("reason"), "{page}");
    assert!(
        !dir.join("happyx-pty-holder.1").exists(),
        "hidden commands get no page"
    );
}

/// A TCP proxy in front of the host whose connections the test can cut.
struct Proxy {
    url: String,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(target_url: &str) -> Proxy {
        use std::net::{TcpListener, TcpStream};
        let target = target_url
            .strip_prefix("http://")
            .expect("http url")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let kept = conns.clone();
        std::thread::spawn(move || {
            for inc in listener.incoming() {
                let Ok(inc) = inc else { continue };
                let Ok(out) = TcpStream::connect(&target) else {
                    continue;
                };
                let (Ok(inc2), Ok(out2)) = (inc.try_clone(), out.try_clone()) else {
                    continue;
                };
                {
                    let mut k = kept.lock().expect("lock");
                    k.extend(inc.try_clone());
                    k.extend(out.try_clone());
                }
                for (mut from, mut to) in [(inc, out2), (out, inc2)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { url, conns }
    }

    /// Breaks every connection made so far.
    fn cut(&self) {
        for c in self.conns.lock().expect("lock").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn pty_attach_resumes_after_a_dropped_connection_without_gap_or_duplicate() {
    let (_tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let op = server.token("operator");
    let agent = server.token("agent");
    let command = "sleep 1; for i in $(seq 1 60); do echo line-$i; sleep 0.1; done";
    let body = json!({"recipe": "shell", "args": {"command": command}});
    let (st, p) = server.post_approved("/v1/pty", &agent, &op, &body);
    assert_eq!(st, 201, "{p}");
    let id = p["id"].as_str().expect("id").to_string();

    let proxy = Proxy::start(&server.url);
    let mut observer = Command::new(binary())
        .args(["pty", "attach", &id, "--observe"])
        .env("HAPPYX_URL", &proxy.url)
        .env("HAPPYX_TOKEN", &op)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = observer.stdout.take().expect("stdout");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = out.read(&mut chunk) {
            if n == 0 {
                break;
            }
            s2.lock().expect("lock").extend_from_slice(&chunk[..n]);
        }
    });
    let has = |needle: &str| {
        eventually(Duration::from_secs(20), || {
            String::from_utf8_lossy(&seen.lock().expect("lock"))
                .contains(needle)
                .then_some(())
        })
    };
    has("line-5\r\n").expect("output arrives through the proxy");
    proxy.cut();
    let st = wait_exit(&mut observer, Duration::from_secs(60));
    reader.join().expect("reader");
    let mut err = String::new();
    observer
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(st.success(), "the terminal exited 0: {st:?}; {err}");
    assert!(
        err.contains("connection lost") && err.contains("reconnected"),
        "{err}"
    );
    let text = String::from_utf8_lossy(&seen.lock().expect("lock")).into_owned();
    let lines: Vec<&str> = text
        .split("\r\n")
        .filter(|l| l.starts_with("line-"))
        .collect();
    let want: Vec<String> = (1..=60).map(|i| format!("line-{i}")).collect();
    assert_eq!(lines, want, "every line once, in order: {text:?}");
}

#[test]
fn pty_attach_restores_the_terminal_on_sigterm() {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let (_tmp, data) = temp_data_dir();
    let server = Server::start(&data);
    let op = server.token("operator");
    let agent = server.token("agent");
    let body = json!({"recipe": "shell", "args": {"command": "exec sh -i"}});
    let (st, p) = server.post_approved("/v1/pty", &agent, &op, &body);
    assert_eq!(st, 201, "{p}");
    let id = p["id"].as_str().expect("id").to_string();

    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("openpty");
    let canonical = || {
        let t = pair.master.get_termios().expect("termios");
        let lflag = t.local_flags.bits();
        (lflag & nix::libc::ICANON != 0, lflag & nix::libc::ECHO != 0)
    };
    assert_eq!(canonical(), (true, true), "a fresh terminal is cooked");
    let mut c = CommandBuilder::new(binary());
    c.args(["pty", "attach", &id]);
    c.env("HAPPYX_URL", &server.url);
    c.env("HAPPYX_TOKEN", &op);
    // The slave stays open here so its settings can be read after the client exits.
    let mut client = pair.slave.spawn_command(c).expect("spawn");
    let screen = pty_reader(pair.master.try_clone_reader().expect("reader"));
    eventually(Duration::from_secs(20), || {
        String::from_utf8_lossy(&screen.lock().expect("lock"))
            .contains("attached to terminal")
            .then_some(())
    })
    .expect("attached");
    assert_eq!(canonical(), (false, false), "raw mode while attached");
    let pid = client.process_id().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let st = client.wait().expect("wait");
    assert_eq!(st.exit_code(), 143, "128 + SIGTERM");
    assert_eq!(canonical(), (true, true), "the terminal is restored");
    let p = json(server.get(&format!("/v1/pty/{id}"), &op).send());
    assert_eq!(p["state"], "running", "{p}");
}

/// Runs the binary with `args` under a real terminal; returns everything it drew.
fn on_a_terminal(args: &[&str]) -> String {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 30,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("openpty");
    let mut c = CommandBuilder::new(binary());
    c.args(args);
    c.env_remove("HAPPYX_PROGRESS");
    let mut child = pair.slave.spawn_command(c).expect("spawn under a pty");
    drop(pair.slave);
    let screen = pty_reader(pair.master.try_clone_reader().expect("reader"));
    let status = child.wait().expect("exits");
    assert!(status.success(), "{args:?} failed");
    // The reader drains what is left once the child is gone.
    std::thread::sleep(Duration::from_millis(300));
    String::from_utf8_lossy(&screen.lock().expect("lock")).into_owned()
}

/// Runs the binary with `args`, stdout and stderr piped; returns (stdout, stderr).
fn piped(args: &[&str]) -> (String, String) {
    let out = Command::new(binary())
        .args(args)
        .env_remove("HAPPYX_PROGRESS")
        .output()
        .expect("run");
    assert!(out.status.success(), "{args:?}: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Long data-dir work (`prune`, `export`, `import`) draws its progress on stderr only when
/// stderr is a terminal: piped, stderr stays clean and stdout holds just the result.
#[test]
fn long_commands_draw_progress_only_on_a_terminal() {
    let (tmp, data) = temp_data_dir();
    let mut server = Server::start(&data);
    server.token("operator");
    server.sigterm(Duration::from_secs(10)).expect("stop");
    let dir = data.to_str().expect("utf-8 path");
    let backup = tmp.path().join("backup.json");
    let backup = backup.to_str().expect("utf-8 path");
    let key = tmp.path().join("host.pub");
    let (public, _) = piped(&["host-key", "--data-dir", dir]);
    std::fs::write(&key, public).expect("write key");
    let key = key.to_str().expect("utf-8 path");
    let restored = |n: u32| tmp.path().join(format!("restored-{n}"));
    let (r1, r2) = (restored(1), restored(2));

    let commands: [(&str, Vec<&str>); 3] = [
        ("prune: examined", vec!["prune", "--data-dir", dir]),
        ("export", vec!["export", "--data-dir", dir, "--out", backup]),
        (
            "import",
            vec![
                "import",
                "--data-dir",
                r1.to_str().expect("p"),
                "--trusted-key",
                key,
                backup,
            ],
        ),
    ];
    for (drawn, args) in &commands {
        // Piped: the result on stdout, nothing drawn on stderr.
        let (stdout, stderr) = piped(args);
        let result: Value = serde_json::from_str(stdout.trim()).expect("one JSON line on stdout");
        assert!(result.is_object(), "{result}");
        assert!(
            !stderr.contains(drawn) && !stderr.contains('\u{1b}'),
            "{args:?}: progress drawn into a pipe: {stderr:?}"
        );
    }
    // On a terminal: the progress line is drawn (and cleared), then the result.
    let _ = std::fs::remove_file(backup);
    let mut on_tty = commands;
    on_tty[2].1[2] = r2.to_str().expect("p");
    for (drawn, args) in &on_tty {
        let screen = on_a_terminal(args);
        assert!(
            screen.contains(drawn)
                && (screen.contains(" rows") || screen.contains(" items"))
                && screen.contains('{'),
            "{args:?}: no progress on a terminal: {screen:?}"
        );
    }

    // verify-public against the running host: the same, counting the responses it scans.
    let server = Server::start(&data);
    let verify = ["verify-public", "--url", server.url.as_str()];
    let (stdout, stderr) = piped(&verify);
    assert!(!stdout.trim().is_empty(), "a summary on stdout");
    assert!(
        !stderr.contains("scanned") && !stderr.contains('\u{1b}'),
        "progress drawn into a pipe: {stderr:?}"
    );
    let screen = on_a_terminal(&verify);
    assert!(
        screen.contains("verify-public: scanned") && screen.contains(" responses"),
        "no progress on a terminal: {screen:?}"
    );
}
