//! Shared harness for the HappyX end-to-end suites: builds and locates the real
//! `happyx` binary, starts it on a temp data dir and a free loopback port,
//! creates tokens through its CLI, and talks to it over real HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

/// Path of the `happyx` binary, built once per test process.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test-exe> -> target/<profile>/happyx, built with the
        // profile the tests were built with (`cargo test --release` measures a release host).
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        // `--workspace`: the features of the workspace build `cargo test --workspace` made, so
        // the binary it built is fresh and nothing is rebuilt (`-p happyx` alone resolves other
        // features and rebuilds the host).
        build.args(["build", "-q", "--workspace", "--bin", "happyx"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cannot run cargo to build happyx");
        assert!(status.success(), "building happyx failed");
        let bin = profile_dir.join("happyx");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
}

/// The plugin compile cache shared by the test servers of one build: `target/<profile>/test-plugin-cache`.
pub fn shared_plugin_cache() -> PathBuf {
    binary()
        .parent()
        .unwrap_or(Path::new("."))
        .join("test-plugin-cache")
}

/// The variable that runs the end-to-end suites on PostgreSQL: with `E2E_ENGINE=postgres`
/// (and a test cluster in `TEST_POSTGRES_URL`), every data dir a test uses gets a fresh
/// database of its own, which its hosts and CLI commands use through `HAPPYX_STORAGE__URL`:
/// the same tests, on the other engine. Unset or `sqlite`: SQLite in the data dir.
pub const ENGINE_VAR: &str = "E2E_ENGINE";

/// Whether this run puts every data dir's database on PostgreSQL ([`ENGINE_VAR`]).
pub fn on_postgres() -> bool {
    match std::env::var(ENGINE_VAR).as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("{ENGINE_VAR}={other}: expected postgres or sqlite"),
    }
}

/// The database URL of `data_dir` when the suites run on PostgreSQL (a fresh database the
/// first time a data dir is seen, the same one after), else `None`.
pub fn storage_url(data_dir: &Path) -> Option<String> {
    static URLS: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    if !on_postgres() {
        return None;
    }
    let mut urls = URLS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, url)) = urls.iter().find(|(d, _)| d == data_dir) {
        return Some(url.clone());
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = rt
        .block_on(happyx_store::test_support::postgres_database())
        .expect("E2E_ENGINE=postgres needs a test cluster in TEST_POSTGRES_URL");
    urls.push((data_dir.to_path_buf(), url.clone()));
    Some(url)
}

/// The integer `sql` answers (NULL and no row read as 0) over `data_dir`'s database, read
/// beside the host: the SQLite file, read-only, or the data dir's PostgreSQL database when the
/// suites run there ([`ENGINE_VAR`]). `sql` must be valid on that engine.
pub fn count(data_dir: &Path, sql: &str) -> i64 {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    rt.block_on(async {
        let n: Option<Option<i64>> = match storage_url(data_dir) {
            Some(url) => {
                let pool = sqlx::PgPool::connect(&url)
                    .await
                    .expect("open the database");
                let n = sqlx::query_scalar(sql).fetch_optional(&pool).await;
                pool.close().await;
                n
            }
            None => {
                let url = format!("sqlite://{}?mode=ro", data_dir.join("happyx.db").display());
                let pool = sqlx::SqlitePool::connect(&url)
                    .await
                    .expect("open the database");
                let n = sqlx::query_scalar(sql).fetch_optional(&pool).await;
                pool.close().await;
                n
            }
        }
        .expect("count");
        n.flatten().unwrap_or(0)
    })
}

/// Runs the statement `sql` on `data_dir`'s database (as [`count`] reads it), as an intruder
/// or a missing feature would write it. `sql` must be valid on that engine.
pub fn execute(data_dir: &Path, sql: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    rt.block_on(async {
        match storage_url(data_dir) {
            Some(url) => {
                let pool = sqlx::PgPool::connect(&url)
                    .await
                    .expect("open the database");
                sqlx::query(sql).execute(&pool).await.expect("statement");
                pool.close().await;
            }
            None => {
                let url = format!("sqlite://{}", data_dir.join("happyx.db").display());
                let pool = sqlx::SqlitePool::connect(&url)
                    .await
                    .expect("open the database");
                sqlx::query(sql).execute(&pool).await.expect("statement");
                pool.close().await;
            }
        }
    })
}

/// `true` (after saying SKIPPED on stderr) when the suites run on PostgreSQL and the calling
/// test checks something only a SQLite data dir has (`why`): it returns at once.
pub fn sqlite_only(why: &str) -> bool {
    if !on_postgres() {
        return false;
    }
    eprintln!("SKIPPED on PostgreSQL: {why}");
    true
}

/// Runs a `happyx` CLI command; returns (status, stdout, stderr).
pub fn cli(args: &[&str]) -> (ExitStatus, String, String) {
    cli_env(args, &[])
}

pub fn cli_env(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    // Run from the system temp dir so defaults such as ./happyx-workspace never
    // land in the source tree.
    let mut cmd = Command::new(binary());
    cmd.current_dir(std::env::temp_dir())
        .args(args)
        .envs(env.iter().copied());
    // The data dir's database, when the suites run on PostgreSQL.
    if let Some(dir) = args
        .iter()
        .position(|a| *a == "--data-dir")
        .and_then(|i| args.get(i + 1))
        && !env.iter().any(|(k, _)| *k == "HAPPYX_STORAGE__URL")
        && let Some(url) = storage_url(Path::new(dir))
    {
        cmd.env("HAPPYX_STORAGE__URL", url);
    }
    let out = run_bounded(&mut cmd, None, CLI_LIMIT);
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Makes `data_dir` a HappyX data dir the way an operator does: `happyx serve` once (then
/// SIGTERM). Commands other than `serve` and `import` refuse a missing data dir.
pub fn init_data_dir(data_dir: &Path) {
    let mut server = Server::start(data_dir);
    let st = server.sigterm(Duration::from_secs(30));
    assert!(
        st.is_some_and(|s| s.success()),
        "serve stops cleanly: {st:?}"
    );
}

/// The workspace directory of `token`'s children under the workspace root `root`:
/// `token-<id>` when the host runs as root (one per identity), else `shared`.
pub fn workspace_of(root: &Path, token: &str) -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        let id = token
            .strip_prefix("hpx_")
            .and_then(|rest| rest.split('_').next())
            .unwrap_or("");
        root.join(format!("token-{id}"))
    } else {
        root.join("shared")
    }
}

/// Creates a token with the CLI and returns it.
pub fn token(data_dir: &Path, role: &str) -> String {
    token_env(data_dir, role, &[])
}

/// [`token`] with extra environment for the CLI (e.g. `HAPPYX_STORAGE__URL`).
pub fn token_env(data_dir: &Path, role: &str, env: &[(&str, &str)]) -> String {
    let dir = data_dir.to_str().expect("utf-8 path");
    let (st, out, err) = cli_env(&["token", "create", "--data-dir", dir, "--role", role], env);
    assert!(st.success(), "token create failed: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "token create prints exactly one line: {out:?}"
    );
    lines[0].to_string()
}

/// A running `happyx serve`.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    pub stderr_path: PathBuf,
    /// The `HAPPYX_STORAGE__URL` the host was started with (a PostgreSQL database), which the
    /// CLI calls made through this server use too.
    pub storage_url: Option<String>,
}

/// How to start a server.
#[derive(Default, Clone)]
pub struct ServerOptions {
    /// TOML config text written next to the data dir.
    pub config: Option<String>,
    pub env: Vec<(String, String)>,
    /// Working directory (the default workspace `./happyx-workspace` is relative to it).
    pub cwd: Option<PathBuf>,
    /// The open-file limit (soft and hard) the host runs with.
    pub nofile: Option<u64>,
    /// Run the host as this uid and gid (a test running as root starts a host that is not).
    pub uid: Option<u32>,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, ServerOptions::default()).expect("server starts")
    }

    /// Starts `happyx serve` on `data_dir` with `config` as its TOML file; panics if it does not
    /// come up.
    pub fn with_config(data_dir: &Path, config: impl Into<String>) -> Server {
        Self::start_with(
            data_dir,
            ServerOptions {
                config: Some(config.into()),
                ..Default::default()
            },
        )
        .expect("the server starts with its config")
    }

    pub fn start_with(data_dir: &Path, opts: ServerOptions) -> Result<Server> {
        watch_this_test();
        let base = data_dir.parent().unwrap_or(data_dir).to_path_buf();
        let stderr_path = base.join(format!(
            "serve-{}.stderr",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let stderr = std::fs::File::create(&stderr_path)?;
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .current_dir(opts.cwd.clone().unwrap_or_else(|| base.clone()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(text) = &opts.config {
            let path = base.join("happyx.toml");
            std::fs::write(&path, text)?;
            cmd.arg("--config").arg(path);
        }
        // Every test server runs the same sample plugins: they share one compile cache next to
        // the binary, so only the first server of a run compiles them (a test may still set
        // its own `HAPPYX_PLUGINS__CACHE_DIR`).
        cmd.env("HAPPYX_PLUGINS__CACHE_DIR", shared_plugin_cache());
        let mut env = opts.env.clone();
        if !env.iter().any(|(k, _)| k == "HAPPYX_STORAGE__URL")
            && let Some(url) = storage_url(data_dir)
        {
            env.push(("HAPPYX_STORAGE__URL".into(), url));
        }
        for (k, v) in &env {
            cmd.env(k, v);
        }
        if let Some(n) = opts.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; it runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        if let Some(uid) = opts.uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().context("spawn happyx serve")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) if !l.trim().is_empty() => l,
            _ => {
                let _ = child.kill();
                let status = child.wait().ok();
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                bail!("happyx serve did not print its address (status {status:?}); stderr:\n{err}");
            }
        };
        let url = line.trim().to_string();
        let server = Server {
            child: Some(child),
            url,
            data_dir: data_dir.to_path_buf(),
            stderr_path,
            storage_url: env
                .iter()
                .find(|(k, _)| k == "HAPPYX_STORAGE__URL")
                .map(|(_, v)| v.clone()),
        };
        server.wait_healthy()?;
        Ok(server)
    }

    fn wait_healthy(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client().get(format!("{}/healthz", self.url)).send()
                && r.status().is_success()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("server at {} never became healthy", self.url)
    }

    pub fn token(&self, role: &str) -> String {
        match &self.storage_url {
            Some(url) => token_env(&self.data_dir, role, &[("HAPPYX_STORAGE__URL", url)]),
            None => token(&self.data_dir, role),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// kill -9, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; returns the exit status (waits up to `limit`).
    pub fn sigterm(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn get(&self, path: &str, token: &str) -> RequestBuilder {
        client()
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
    }

    pub fn post(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        client()
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(body)
    }

    pub fn patch(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        client()
            .patch(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(body)
    }

    /// The approval flow of a high-risk request: POST `body` to `path` as `requester` (expects
    /// `403 approval_required`), approve it as `operator`, POST again with the one-time token.
    /// Returns the final answer.
    pub fn post_approved(
        &self,
        path: &str,
        requester: &str,
        operator: &str,
        body: &Value,
    ) -> (u16, Value) {
        let (st, b) = call(self.post(path, requester, body));
        assert_eq!(
            (st, b["code"].as_str()),
            (403, Some("approval_required")),
            "{b}"
        );
        let id = b["approval_id"].as_str().expect("approval_id");
        let token = b["approval_token"].as_str().expect("approval_token");
        let (st, a) = call(self.post(
            &format!("/v1/approvals/{id}/approve"),
            operator,
            &serde_json::json!({}),
        ));
        assert_eq!((st, a["status"].as_str()), (200, Some("approved")), "{a}");
        let mut used = body.clone();
        used["approval_token"] = Value::from(token);
        call(self.post(path, requester, &used))
    }

    /// Waits (up to 30 s) until run `id` has finished; returns it.
    pub fn wait_run(&self, token: &str, id: &str) -> Value {
        eventually(Duration::from_secs(30), || {
            let r = json(self.get(&format!("/v1/runs/{id}"), token).send());
            matches!(
                r["status"].as_str(),
                Some("succeeded" | "failed" | "timed_out" | "spawn_failed" | "lost")
            )
            .then_some(r)
        })
        .expect("the run finishes within 30 s")
    }

    /// The highest event sequence number, read with an operator token.
    pub fn last_seq(&self, operator: &str) -> i64 {
        let mut after = 0;
        loop {
            let v = json(
                self.get(&format!("/v1/events?after={after}&limit=1000"), operator)
                    .send(),
            );
            let events = v["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                return after;
            }
            after = v["next_after"].as_i64().unwrap_or(after);
        }
    }

    /// All events, in order.
    pub fn events(&self, operator: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let v = json(
                self.get(&format!("/v1/events?after={after}&limit=1000"), operator)
                    .send(),
            );
            let events = v["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                return out;
            }
            after = v["next_after"].as_i64().unwrap_or(after);
            out.extend(events);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blocking HTTP client with sane timeouts.
pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// Sends and parses JSON, panicking with the body on a parse failure.
pub fn json(resp: reqwest::Result<Response>) -> Value {
    let resp = resp.expect("request sent");
    let text = resp.text().expect("body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// (status, JSON body).
pub fn call(req: RequestBuilder) -> (u16, Value) {
    let resp = req.send().expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The longest a CLI command of a test may take before it is killed and the test fails.
pub const CLI_LIMIT: Duration = Duration::from_secs(300);

/// Runs `cmd` to its end with `stdin` (or no stdin) and piped output, killing it and failing
/// the test, with what it printed so far, if it is still running after `limit`: a command that
/// hangs is a defect to name, not a suite that never ends.
pub fn run_bounded(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    limit: Duration,
) -> std::process::Output {
    use std::io::{Read, Write};
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let what = format!("{:?}", cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        // A writer thread: a child that does not read its stdin cannot block the test.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out_reader = child.stdout.take().map(|r| drain(Box::new(r)));
    let err_reader = child.stderr.take().map(|r| drain(Box::new(r)));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                // Where it hangs, before the evidence is gone.
                let stacks =
                    backtraces(child.id()).unwrap_or_else(|| "(gdb could not be run)".into());
                let _ = child.kill();
                let _ = child.wait();
                let err = err_reader.and_then(|h| h.join().ok()).unwrap_or_default();
                panic!(
                    "{what} still ran after {limit:?} and was killed; its stderr:\n{}\n\
                     its threads when it was killed:\n{stacks}",
                    String::from_utf8_lossy(&err)
                );
            }
        }
    };
    // The pipes close when the command exits, unless it left a process holding them: then
    // what it printed is all that is waited for.
    let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| {
            let until = Instant::now() + Duration::from_secs(10);
            while !h.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                h.join().unwrap_or_default()
            } else {
                panic!("{what} exited but left a process holding its output open")
            }
        })
        .unwrap_or_default()
    };
    std::process::Output {
        status,
        stdout: join(out_reader),
        stderr: join(err_reader),
    }
}

/// Fails the suite, with every thread's backtrace, when one test runs longer than
/// `HAPPYX_TEST_LIMIT_S` seconds (default 900): a hung test then names where it hangs, and
/// the run ends instead of waiting for its outer time limit. Started by the first test
/// that asks for a data dir or a server; each test thread is watched from its first call.
pub fn watch_this_test() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static STARTED: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);
    thread_local! {
        static WATCHED: std::cell::RefCell<Option<Unwatch>> = const { std::cell::RefCell::new(None) };
    }
    /// Removes the thread's entry when the test's thread ends.
    struct Unwatch(String);
    impl Drop for Unwatch {
        fn drop(&mut self) {
            if let Ok(mut m) = STARTED.lock()
                && let Some(m) = m.as_mut()
            {
                m.remove(&self.0);
            }
        }
    }
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string();
    if name == "main" {
        return;
    }
    let first = WATCHED.with(|w| {
        let mut w = w.borrow_mut();
        if w.is_some() {
            return false;
        }
        *w = Some(Unwatch(name.clone()));
        true
    });
    if !first {
        return;
    }
    let Ok(mut started) = STARTED.lock() else {
        return;
    };
    let spawn = started.is_none();
    started
        .get_or_insert_with(HashMap::new)
        .insert(name, Instant::now());
    drop(started);
    if spawn {
        let limit = std::env::var("HAPPYX_TEST_LIMIT_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(900));
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                let late: Vec<String> = STARTED
                    .lock()
                    .ok()
                    .and_then(|m| {
                        m.as_ref().map(|m| {
                            m.iter()
                                .filter(|(_, t)| t.elapsed() > limit)
                                .map(|(n, _)| n.clone())
                                .collect()
                        })
                    })
                    .unwrap_or_default();
                if late.is_empty() {
                    continue;
                }
                eprintln!(
                    "\nwatchdog: {late:?} still running after {limit:?}; backtraces of every thread follow"
                );
                eprintln!(
                    "{}",
                    backtraces(std::process::id())
                        .unwrap_or_else(|| "(gdb could not be run)".into())
                );
                eprintln!("watchdog: {late:?} hung; the suite fails");
                std::process::exit(101);
            }
        });
    }
}

/// Every thread's backtrace of process `pid`, by gdb (which CI installs); `None` when gdb
/// cannot be run.
fn backtraces(pid: u32) -> Option<String> {
    Command::new("gdb")
        .args(["-batch", "-nx", "-p", &pid.to_string()])
        .args(["-ex", "thread apply all bt 30"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Runs `sqlite3 DB SQL` on a data dir's database (the real command-line shell, as someone
/// reading or tampering beside the host would) and returns what it printed.
pub fn sqlite3(data_dir: &Path, statements: &str) -> String {
    let mut cmd = Command::new("sqlite3");
    cmd.arg(data_dir.join("happyx.db")).arg(statements);
    let out = run_bounded(&mut cmd, None, CLI_LIMIT);
    assert!(
        out.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `happyx audit verify ARGS`: (its one JSON line, stderr) on success, else (exit code,
/// stderr) with nothing on stdout.
pub fn audit_verify(args: &[&str]) -> Result<(Value, String), (Option<i32>, String)> {
    let mut all = vec!["audit", "verify"];
    all.extend_from_slice(args);
    let (st, out, err) = cli(&all);
    if st.success() {
        assert_eq!(out.lines().count(), 1, "one JSON line: {out:?}");
        Ok((serde_json::from_str(&out).expect("summary is JSON"), err))
    } else {
        assert!(out.is_empty(), "nothing on stdout on failure: {out:?}");
        Err((st.code(), err))
    }
}

/// Copies the files (not subdirectories) of a data dir — the database with its WAL and
/// keys — to `to`, e.g. to tamper with a copy.
pub fn copy_data_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().expect("name"))).expect("copy");
        }
    }
}

/// A fresh temp dir holding a `data` subdir path (not created).
pub fn temp_data_dir() -> (tempfile::TempDir, PathBuf) {
    watch_this_test();
    let tmp = tempfile::tempdir().expect("tempdir");
    // Children run as an unprivileged user in ./happyx-workspace beside the
    // data dir: they must be able to traverse the parent (the data dir stays 0700).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data = tmp.path().join("data");
    (tmp, data)
}

/// Polls `f` until it returns Some or `limit` passes.
pub fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
