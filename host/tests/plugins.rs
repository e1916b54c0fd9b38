//! Plugin runtime tests against real components: the built-in samples, the
//! conformance fixtures, and hostile components compiled from
//! `tests/hostile-plugins/` (once per test run).

// The helpers of a test suite fail the test when they cannot do their part.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use happyx::plugins::{
    Item, PluginError, PluginHost, PluginSpec, PluginsConfig, RenderError, RetentionKind, Risk,
    Totals, apply_masks, builtin_components, check_component,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the hostile plugins once and returns their output directory.
fn hostile_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let ws = repo().join("tests/hostile-plugins");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&ws)
            .args(["build", "--target", "wasm32-wasip2", "--release"]);
        for (k, _) in std::env::vars_os() {
            let Some(k) = k.to_str() else { continue };
            if (k.starts_with("CARGO_") && k != "CARGO_HOME")
                || ["RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"].contains(&k)
            {
                cmd.env_remove(k);
            }
        }
        let out = cmd.output().expect("run cargo for hostile plugins");
        assert!(
            out.status.success(),
            "building hostile plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ws.join("target/wasm32-wasip2/release")
    })
}

fn hostile(name: &str) -> PathBuf {
    hostile_dir().join(format!("hostile_{name}.wasm"))
}

fn spec(path: PathBuf) -> PluginSpec {
    PluginSpec {
        path: Some(path),
        ..PluginSpec::default()
    }
}

fn redactor_cfg(path: PathBuf) -> PluginsConfig {
    PluginsConfig {
        redactor: Some(PluginSpec {
            timeout_ms: Some(300),
            memory_mib: Some(32),
            ..spec(path)
        }),
        ..PluginsConfig::default()
    }
}

fn load(cfg: &PluginsConfig) -> Result<PluginHost, PluginError> {
    PluginHost::load(cfg, None)
}

/// [`load`] on the blocking pool, as the server loads plugins (compiling takes a while).
async fn load_pooled(cfg: PluginsConfig) -> Result<PluginHost, PluginError> {
    tokio::task::spawn_blocking(move || load(&cfg))
        .await
        .expect("the load task ran")
}

const AWS: &str = "AKIAIOSFODNN7EXAMPLE";

async fn assert_serves(host: &PluginHost) {
    let data = format!("key={AWS} done");
    let r = host
        .redact("stdout", data.as_bytes())
        .await
        .expect("next call works");
    let masked = apply_masks(data.as_bytes(), &r.findings);
    assert!(!String::from_utf8_lossy(&masked).contains(AWS));
}

#[test]
fn builtin_components_pass_their_contract_and_fixtures() {
    for (file, bytes) in builtin_components() {
        let report = check_component(bytes, Some(&repo().join("tests/conformance")));
        let failed: Vec<_> = report.checks.iter().filter(|c| !c.passed).collect();
        assert!(report.passed, "{file}: failed checks {failed:?}");
        assert!(
            report.checks.iter().any(|c| c.name.starts_with("fixture:")),
            "{file}: no fixtures ran"
        );
        assert!(report.world.is_some());
    }
}

#[test]
fn check_component_reports_garbage_and_wrong_fixtures() {
    let report = check_component(b"\0asm garbage", None);
    assert!(!report.passed);
    assert_eq!(report.checks[0].name, "component");
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("redaction/impossible");
    std::fs::create_dir_all(&case).unwrap();
    std::fs::write(case.join("input.bin"), b"nothing secret here").unwrap();
    std::fs::write(
        case.join("expected.json"),
        br#"{"findings":[{"rule":"jwt","start":0,"end":7}]}"#,
    )
    .unwrap();
    let report = check_component(builtin_components()[0].1, Some(dir.path()));
    assert!(!report.passed);
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.name == "fixture:redaction/impossible" && !c.passed)
    );
}

#[tokio::test]
async fn builtin_host_serves_all_three_worlds() {
    let host = load_pooled(PluginsConfig::default())
        .await
        .expect("load builtins");
    assert_serves(&host).await;

    let token = format!("hpx_ab12cd34ef56_{}", "A".repeat(43));
    let r = host.redact("text", token.as_bytes()).await.unwrap();
    assert!(
        r.findings
            .iter()
            .any(|f| f.rule == "happyx-token" && f.start == 0 && f.end == token.len())
    );

    let recipes = host.catalog().await.unwrap();
    let names: Vec<_> = recipes.iter().map(|r| r.name.as_str()).collect();
    assert!(names.contains(&"echo") && names.contains(&"shell") && names.contains(&"list-files"));

    let mut args = BTreeMap::new();
    args.insert("command".to_string(), "echo hi".to_string());
    let shell = host.render("shell", &args).await.unwrap();
    assert_eq!(shell.program, "sh");
    assert_eq!(shell.args, vec!["-c", "echo hi"]);
    assert_eq!(shell.risk, Risk::High);
    assert!(shell.timeout.is_some());

    let err = host.render("echo", &BTreeMap::new()).await.unwrap_err();
    assert!(
        matches!(&err, RenderError::MissingArg(a) if a == "text"),
        "{err}"
    );
    let err = host.render("nope", &BTreeMap::new()).await.unwrap_err();
    assert_eq!(err.code(), "unknown_recipe");
    let mut bad = BTreeMap::new();
    bad.insert("path".to_string(), "-rf".to_string());
    let err = host.render("list-files", &bad).await.unwrap_err();
    assert!(
        matches!(&err, RenderError::InvalidArg { name, .. } if name == "path"),
        "{err}"
    );

    let item = happyx::plugins::Item {
        kind: RetentionKind::Event,
        id: "e".into(),
        created_at: 0,
        bytes: 1,
        session_id: None,
    };
    let d = host.decide_retention(1_000, &[], &[item]).await.unwrap();
    assert_eq!(d.prune, vec![false]);
    assert_eq!(d.policy_hash.len(), 64);

    let status = host.status();
    assert_eq!(status.len(), 3);
    assert!(
        status
            .iter()
            .all(|s| s.last_error.is_none() && s.sha256.len() == 64)
    );
    assert!(status[0].calls >= 2);
}

// A redaction's guest call runs on the calling worker of a multi-threaded runtime (in
// `block_in_place`), and through the blocking pool on a current-thread runtime: the hostile
// plugins get both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_get_typed_errors_and_the_host_keeps_serving() {
    hostile_plugins_get_typed_errors().await;
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_plugins_get_typed_errors_on_a_current_thread_runtime_too() {
    hostile_plugins_get_typed_errors().await;
}

async fn hostile_plugins_get_typed_errors() {
    for (name, code) in [
        ("looper", "plugin_timeout"),
        ("membomb", "plugin_memory"),
        ("panicker", "plugin_trap"),
        ("badrange", "plugin_bad_result"),
    ] {
        let cfg = redactor_cfg(hostile(name));
        let host = load_pooled(cfg)
            .await
            .unwrap_or_else(|e| panic!("{name} loads: {e}"));
        let started = std::time::Instant::now();
        let err = host.redact("attack", b"some input").await.unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err}");
        assert!(
            err.to_string().contains("hostile-"),
            "error names the plugin: {err}"
        );
        assert!(
            err.to_string().contains(&err.plugin().sha256[..12]),
            "error names the hash: {err}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // A runtime failure is the plugin's last error, as a refused reload would be.
        let st = &host.status()[0];
        let last = st.last_error.as_deref().unwrap_or_default();
        assert!(
            last.starts_with("redact failed: ") && last.contains("hostile-"),
            "{name}: {st:?}"
        );
        assert!(st.last_error_at.is_some(), "{name}: {st:?}");
        // The next call works on a fresh instance (and keeps the last error on record).
        assert_serves(&host).await;
        let st = &host.status()[0];
        assert!(st.failures >= 1 && st.calls > st.failures, "{name}: {st:?}");
        assert!(st.last_error.is_some(), "{name}: {st:?}");
    }
}

/// A redaction's guest call runs on the calling worker thread, but a slow one does not hold
/// that worker's other tasks: `block_in_place` hands them to another thread for the call's
/// duration. With one worker, a call made on it without that would stop a ticking task for
/// each call's whole 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_slow_redaction_does_not_hold_the_other_tasks_of_its_worker() {
    use std::time::{Duration, Instant};
    let cfg = PluginsConfig {
        redactor: Some(PluginSpec {
            timeout_ms: Some(10_000),
            memory_mib: Some(32),
            ..spec(hostile("slowpoke"))
        }),
        ..PluginsConfig::default()
    };
    let host = load_pooled(cfg).await.unwrap();
    // How often a ticking task ran while the redactions worked, and its longest wait.
    let seen = Arc::new(Mutex::new((Duration::ZERO, 0u32)));
    let ticker = tokio::spawn({
        let seen = seen.clone();
        async move {
            loop {
                let t = Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                let mut s = seen.lock().unwrap();
                s.0 = s.0.max(t.elapsed());
                s.1 += 1;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    *seen.lock().unwrap() = (Duration::ZERO, 0);
    let redactions = tokio::spawn(async move {
        for _ in 0..3 {
            let t = Instant::now();
            let r = host.redact("attack", b"a slow input").await.unwrap();
            assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
            assert_eq!((r.findings[0].start, r.findings[0].end), (0, 12));
            assert!(
                t.elapsed() >= Duration::from_millis(100),
                "{:?}",
                t.elapsed()
            );
        }
    });
    redactions.await.unwrap();
    ticker.abort();
    // Held by the calls, the ticker would run at most once or twice in their 300 ms, between
    // two calls; free, it runs every millisecond or so (20 leaves room for a loaded machine).
    let (longest, ticks) = *seen.lock().unwrap();
    assert!(
        ticks >= 20,
        "the ticker ran {ticks} times in 300 ms, its longest wait {longest:?}"
    );
}

/// Components built against `happyx:policy@0.1.0`, one per world, still load and serve
/// through the adapter; a 0.1.0 retention policy never sees a kind 0.1.0 cannot name, and
/// items of such kinds are kept.
#[tokio::test]
async fn components_built_against_wit_0_1_0_still_load_and_serve() {
    let cfg = PluginsConfig {
        redactor: Some(spec(hostile("legacy_redactor"))),
        retention: Some(spec(hostile("legacy_retention"))),
        recipes: Some(spec(hostile("legacy_recipes"))),
        ..PluginsConfig::default()
    };
    let host = load_pooled(cfg).await.expect("0.1.0 components load");
    let status = host.status();
    assert!(
        status.iter().all(|s| s.wit_version == "0.1.0"),
        "{status:?}"
    );
    assert!(
        status.iter().all(|s| s.name.starts_with("legacy-")),
        "{status:?}"
    );

    let r = host.redact("stdout", b"key=AKIA").await.unwrap();
    assert_eq!(r.findings.len(), 1);
    assert_eq!((r.findings[0].start, r.findings[0].end), (0, 8));

    let mut args = BTreeMap::new();
    args.insert("text".to_string(), "hi".to_string());
    let cmd = host.render("echo", &args).await.unwrap();
    assert_eq!(
        (cmd.program.as_str(), cmd.args.clone()),
        ("echo", vec!["v2".to_string(), "hi".to_string()])
    );
    assert_eq!(cmd.risk, Risk::Low);
    assert_eq!(
        host.render("nope", &BTreeMap::new())
            .await
            .unwrap_err()
            .code(),
        "unknown_recipe"
    );

    let item = |kind, id: &str| Item {
        kind,
        id: id.into(),
        created_at: 0,
        bytes: 1,
        session_id: None,
    };
    let items = [
        item(RetentionKind::RunOutput, "a"),
        item(RetentionKind::Leftover, "approval:b"),
        item(RetentionKind::Event, "c"),
    ];
    let totals: Vec<Totals> = RetentionKind::ALL
        .into_iter()
        .map(|kind| Totals {
            kind,
            count: 1,
            bytes: 1,
        })
        .collect();
    // The 0.1.0 plugin prunes everything it is shown and refuses kinds it cannot name.
    let d = host.decide_retention(1_000, &totals, &items).await.unwrap();
    assert_eq!(d.prune, vec![true, false, true]);
    let d = host
        .decide_retention(1_000, &totals, &items[1..2])
        .await
        .unwrap();
    assert_eq!(
        d.prune,
        vec![false],
        "a leftover alone is kept without a call"
    );
}

/// A redactor built against `happyx:policy@0.2.0` (no prefilter) still loads and is given
/// whole chunks: it masks all of an input that holds no trigger of any kind.
#[tokio::test]
async fn a_redactor_built_against_wit_0_2_0_still_loads_and_redacts_whole_chunks() {
    let cfg = redactor_cfg(hostile("redactor_v2"));
    let host = load_pooled(cfg).await.expect("a 0.2.0 redactor loads");
    let st = &host.status()[0];
    assert_eq!(
        (st.wit_version.as_str(), st.name.as_str()),
        ("0.2.0", "redactor-v2")
    );
    assert!(!host.redactor_has_prefilter());
    let data = vec![b'q'; 64 * 1024];
    let r = host.redact("stdout", &data).await.unwrap();
    assert_eq!(r.findings.len(), 1);
    assert_eq!((r.findings[0].start, r.findings[0].end), (0, data.len()));
}

/// A redactor built against `happyx:policy@0.3.0` (a prefilter without groups, no
/// `redact-windows`) still loads, and each of its windows is a `redact` call of its own.
#[tokio::test]
async fn a_redactor_built_against_wit_0_3_0_still_loads_and_gets_a_call_per_window() {
    let cfg = redactor_cfg(hostile("redactor_v3"));
    let host = load_pooled(cfg).await.expect("a 0.3.0 redactor loads");
    let st = &host.status()[0];
    assert_eq!(
        (st.wit_version.as_str(), st.name.as_str()),
        ("0.3.0", "redactor-v3")
    );
    assert!(host.redactor_has_prefilter());
    let calls = st.calls;
    let filler = "x".repeat(4000);
    let data = format!("{filler}SECRET1234{filler}SECRET5678{filler}");
    let r = host.redact("stdout", data.as_bytes()).await.unwrap();
    let at: Vec<usize> = data.match_indices("SECRET").map(|(i, _)| i).collect();
    let got: Vec<(usize, usize)> = r.findings.iter().map(|f| (f.start, f.end)).collect();
    assert_eq!(got, vec![(at[0], at[0] + 10), (at[1], at[1] + 10)]);
    assert_eq!(host.status()[0].calls, calls + 2, "a call per window");
}

/// A 0.4.0 redactor that answers a finding outside the windows it was asked to scan (past a
/// window's end, still inside the chunk) is refused: `plugin_bad_result`, nothing masked on
/// its word, and it serves again when it answers within its windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_outside_its_windows_is_refused() {
    let cfg = redactor_cfg(hostile("window_escaper"));
    let host = load_pooled(cfg)
        .await
        .expect("the window escaper passes the load's checks");
    assert!(host.redactor_has_prefilter());
    let filler = "x".repeat(2000);
    let data = format!("{filler} ghp_abc {filler}");
    let err = host.redact("attack", data.as_bytes()).await.unwrap_err();
    assert_eq!(err.code(), "plugin_bad_result", "{err}");
    assert!(err.to_string().contains("outside the windows"), "{err}");
    let last = host.status()[0].last_error.clone().unwrap_or_default();
    assert!(last.contains("outside the windows"), "{last}");
    // The same chunk from another source: the finding its window holds, and nothing else.
    let r = host.redact("stdout", data.as_bytes()).await.unwrap();
    let at = data.find("ghp_").unwrap();
    let got: Vec<(usize, usize)> = r.findings.iter().map(|f| (f.start, f.end)).collect();
    assert_eq!(got, vec![(at, at + "ghp_abc".len())]);
}

/// The built-in redactor (0.4.0) gets every window of a chunk in one `redact-windows` call,
/// however many secrets the chunk holds and however far apart, and finds what a whole scan
/// finds.
#[tokio::test]
async fn the_built_in_redactor_scans_every_window_of_a_chunk_in_one_call() {
    let host = load_pooled(PluginsConfig::default())
        .await
        .expect("load builtins");
    assert_eq!(host.status()[0].wit_version, "0.4.0");
    let filler = "   Compiling crate v0.1.0 (/src/crate)\n".repeat(100);
    let data = format!(
        "{filler}key={AWS}\n{filler}password=hunter2hunter2\n{filler}\
         Authorization: Bearer abcdefghijklmnop0123456789\n{filler}ghp_0123456789abcdefghijklmnopqrstuvwxyzAB\n{filler}"
    );
    let calls = host.status()[0].calls;
    let r = host.redact("stdout", data.as_bytes()).await.unwrap();
    assert_eq!(host.status()[0].calls, calls + 1, "one guest call");
    let whole = host.redact_whole("stdout", data.as_bytes()).await.unwrap();
    assert_eq!(r.findings, whole.findings);
    let rules: Vec<&str> = r.findings.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "aws-access-key",
            "password-assignment",
            "auth-header",
            "bearer-token",
            "github-token"
        ]
    );
}

/// A private key longer than its trigger's window is cut by it: the host widens the window
/// and the guest scans it again, with the window's groups (lent to the first call and given
/// back), until the finding covers the whole key, as a whole scan's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_longer_than_its_window_is_found_whole_through_the_prefilter() {
    let host = load_pooled(PluginsConfig::default())
        .await
        .expect("load builtins");
    let filler = "   Compiling crate v0.1.0 (/src/crate)\n".repeat(200);
    let body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n".repeat(200);
    let key = format!("-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----");
    let data = format!("{filler}{key}\n{filler}");
    assert!(key.len() > 4096 * 2, "longer than the trigger's window");
    let calls = host.status()[0].calls;
    let r = host.redact("stdout", data.as_bytes()).await.unwrap();
    assert!(
        host.status()[0].calls > calls + 1,
        "the window was scanned again"
    );
    let at = data.find("-----BEGIN").unwrap();
    let got: Vec<(&str, usize, usize)> = r
        .findings
        .iter()
        .map(|f| (f.rule.as_str(), f.start, f.end))
        .collect();
    assert_eq!(got, vec![("private-key", at, at + key.len())]);
    let whole = host.redact_whole("stdout", data.as_bytes()).await.unwrap();
    assert_eq!(r.findings, whole.findings);
}

/// Through the built-in redactor's prefilter, a chunk without any trigger costs no guest
/// call, and a chunk with a secret still has it found.
#[tokio::test]
async fn a_chunk_without_a_trigger_makes_no_guest_call() {
    let host = load_pooled(PluginsConfig::default())
        .await
        .expect("load builtins");
    let calls = host.status()[0].calls;
    let clean = "   Compiling crate v0.1.0 (/src/crate)\ntest case ... ok\n".repeat(1500);
    let r = host.redact("pty-output", clean.as_bytes()).await.unwrap();
    assert!(r.findings.is_empty());
    assert_eq!(r.policy_hash, host.status()[0].sha256);
    assert_eq!(host.status()[0].calls, calls, "no guest call");
    let with_secret = format!("{clean}key={AWS}\n{clean}");
    let r = host
        .redact("pty-output", with_secret.as_bytes())
        .await
        .unwrap();
    let at = with_secret.find(AWS).unwrap();
    assert_eq!(
        r.findings
            .iter()
            .map(|f| (f.start, f.end))
            .collect::<Vec<_>>(),
        vec![(at, at + AWS.len())]
    );
    assert_eq!(host.status()[0].calls, calls + 1, "one call, on one window");
}

/// The built-in redactor declares a prefilter; a reload to a redactor whose prefilter is
/// invalid is refused, shown as the plugin's last error, and the previous one keeps serving.
#[tokio::test]
async fn an_invalid_prefilter_is_refused_at_reload_and_shown_as_the_last_error() {
    let host = load_pooled(PluginsConfig::default())
        .await
        .expect("load builtins");
    assert!(host.redactor_has_prefilter());
    let err = host
        .reload_with(Some(redactor_cfg(hostile("prefilter_invalid"))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "plugin_invalid", "{err}");
    let st = &host.status()[0];
    let last = st.last_error.as_deref().unwrap_or_default();
    assert!(
        last.starts_with("reload refused: ") && last.contains("prefilter trigger 0"),
        "{st:?}"
    );
    assert_eq!(st.name, "secrets-redactor");
    assert_serves(&host).await;
}

#[tokio::test]
async fn components_that_cannot_be_loaded_get_typed_errors() {
    let bad = |cfg: PluginsConfig| load(&cfg).err().expect("refused");
    let err = bad(redactor_cfg(hostile("unknown_import")));
    assert_eq!(err.code(), "plugin_unknown_import", "{err}");
    assert!(err.to_string().contains("steal"), "{err}");

    let err = bad(redactor_cfg(hostile("newer_wit")));
    assert_eq!(err.code(), "plugin_wit_version", "{err}");
    let msg = err.to_string();
    assert!(msg.contains("0.5.0") && msg.contains("0.4.0"), "{msg}");

    // A prefilter outside the limits (a 65-byte trigger) refuses the plugin at load.
    let err = bad(redactor_cfg(hostile("prefilter_invalid")));
    assert_eq!(err.code(), "plugin_invalid", "{err}");
    assert!(err.to_string().contains("trigger 0 is 65 bytes"), "{err}");
    // A prefilter that hides findings fails the contract checks.
    let err = bad(redactor_cfg(hostile("prefilter_liar")));
    assert_eq!(err.code(), "plugin_contract", "{err}");

    // The retention sample configured as the redactor.
    let dir = tempfile::tempdir().unwrap();
    let retention = dir.path().join("retention.wasm");
    std::fs::write(&retention, builtin_components()[1].1).unwrap();
    let err = bad(redactor_cfg(retention.clone()));
    assert_eq!(err.code(), "plugin_wrong_world", "{err}");

    let corrupt = dir.path().join("corrupt.wasm");
    let mut bytes = builtin_components()[0].1.to_vec();
    let mid = bytes.len() / 2;
    bytes.truncate(mid);
    std::fs::write(&corrupt, &bytes).unwrap();
    assert_eq!(bad(redactor_cfg(corrupt)).code(), "plugin_invalid");

    let redactor = dir.path().join("redactor.wasm");
    std::fs::write(&redactor, builtin_components()[0].1).unwrap();
    let mut cfg = redactor_cfg(redactor.clone());
    if let Some(s) = cfg.redactor.as_mut() {
        s.sha256 = Some("00".repeat(32));
    }
    assert_eq!(bad(cfg.clone()).code(), "plugin_hash_mismatch");
    if let Some(s) = cfg.redactor.as_mut() {
        s.sha256 = Some(happyx::plugins::sha256_hex(builtin_components()[0].1));
        s.settings.insert("no_such_key".into(), "1".into());
    }
    let err = bad(cfg.clone());
    assert_eq!(err.code(), "plugin_config");
    assert!(err.to_string().contains("no_such_key"), "{err}");
    // The plugin refusing its settings is named (it is asked who it is before it is
    // configured).
    assert!(err.to_string().contains("secrets-redactor"), "{err}");

    // Limits out of bounds name the configuration section that set them.
    if let Some(s) = cfg.redactor.as_mut() {
        s.settings.clear();
        s.memory_mib = Some(0);
    }
    let err = bad(cfg);
    assert_eq!(err.code(), "plugin_config");
    assert!(
        err.to_string().contains("[plugins.redactor] memory_mib"),
        "{err}"
    );

    // A file that is not WebAssembly at all says so, without the parser's byte dump.
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "root:x:0:0\n").unwrap();
    let err = bad(redactor_cfg(text));
    assert_eq!(err.code(), "plugin_invalid");
    assert!(err.to_string().contains("not a WebAssembly file"), "{err}");
    assert!(!err.to_string().contains("0x"), "{err}");
}

/// Collects all tracing output of this test binary.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Writer(writer.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct Writer(Arc<Mutex<Vec<u8>>>);
impl Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// A guest's output goes through WASI, whose host side blocks on the runtime: on a worker
// thread that is only possible inside `block_in_place`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_output_never_reaches_the_logs() {
    guest_output_is_discarded().await;
}

#[tokio::test(flavor = "current_thread")]
async fn guest_output_never_reaches_the_logs_on_a_current_thread_runtime_either() {
    guest_output_is_discarded().await;
}

async fn guest_output_is_discarded() {
    let logs = captured_logs();
    let cfg = redactor_cfg(hostile("chatty"));
    let host = load_pooled(cfg).await.unwrap();
    let canary = "CANARY-7f3a9c-SECRET";
    let r = host.redact("attack", canary.as_bytes()).await.unwrap();
    assert!(r.findings.is_empty());
    tracing::info!("marker: logging works");
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(text.contains("marker: logging works"), "capture is live");
    assert!(text.contains("stdout_bytes"), "output is counted");
    assert!(
        !text.contains(canary) && !text.contains("LEAK"),
        "guest output leaked into logs"
    );
    assert_serves(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_reload_under_load_swaps_atomically_and_keeps_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recipes.wasm");
    std::fs::write(&path, builtin_components()[2].1).unwrap();
    let cfg = PluginsConfig {
        recipes: Some(spec(path.clone())),
        ..PluginsConfig::default()
    };
    let host = load_pooled(cfg).await.unwrap();
    let old_sha = host.status()[2].sha256.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let host = host.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut args = BTreeMap::new();
            args.insert("text".to_string(), "hi".to_string());
            let (mut ok, mut v2) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = host.render("echo", &args).await.expect("no failed calls");
                ok += 1;
                if r.args.first().map(String::as_str) == Some("v2") {
                    v2 += 1;
                }
            }
            (ok, v2)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Broken candidate: the old version keeps serving.
    std::fs::write(&path, b"not a component").unwrap();
    let err = host.reload().await.unwrap_err();
    assert_eq!(err.code(), "plugin_invalid");
    assert_eq!(host.status()[2].sha256, old_sha);
    assert!(host.status()[2].last_error.is_some());
    // Good candidate.
    std::fs::copy(hostile("recipes_v2"), &path).unwrap();
    let status = host.reload().await.unwrap();
    assert_ne!(status[2].sha256, old_sha);
    assert_eq!(status[2].name, "recipes-v2");
    assert!(status[2].last_error.is_none());
    assert!(
        host.catalog()
            .await
            .unwrap()
            .iter()
            .any(|r| r.name == "hello")
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    let mut v2 = 0;
    for t in tasks {
        let (o, n) = t.await.unwrap();
        total += o;
        v2 += n;
    }
    assert!(total > 64, "callers made progress");
    assert!(v2 > 0, "new behaviour visible after swap");
}

#[test]
fn disk_cache_is_used_and_planted_files_are_not_deserialized() {
    let dir = tempfile::tempdir().unwrap();
    let open =
        || cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    let bytes = builtin_components()[1].1;
    use happyx::plugins::{CacheOrigin, bench_compile};
    assert_eq!(
        bench_compile(bytes, Some(open())).unwrap(),
        CacheOrigin::Compiled
    );
    assert_eq!(
        bench_compile(bytes, Some(open())).unwrap(),
        CacheOrigin::Disk
    );
    // Tamper with every cache file: it is ignored and recompiled.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "cwasm") {
            let mut b = std::fs::read(&p).unwrap();
            let n = b.len() - 1;
            b[n] ^= 1;
            std::fs::write(&p, b).unwrap();
        }
    }
    assert_eq!(
        bench_compile(bytes, Some(open())).unwrap(),
        CacheOrigin::Compiled
    );
    assert_eq!(
        bench_compile(bytes, Some(open())).unwrap(),
        CacheOrigin::Disk
    );
}

/// `happyx plugin check` on a guest that panics reports the trap as a failed check (exit 1),
/// as the server reports `plugin_trap`; it never crashes itself.
#[test]
fn plugin_check_reports_a_panicking_guest_instead_of_crashing() {
    // The panicker behaves under the built-in probes and panics on the source "attack": an
    // author's fixture is what reaches the panic.
    let fixtures = tempfile::tempdir().expect("tmp");
    let case = fixtures.path().join("redaction/attack");
    std::fs::create_dir_all(&case).expect("mkdir");
    std::fs::write(case.join("input.bin"), b"some output").expect("input");
    std::fs::write(
        case.join("expected.json"),
        br#"{"source": "attack", "clean": true}"#,
    )
    .expect("expected");
    let out = Command::new(env!("CARGO_BIN_EXE_happyx"))
        .args(["plugin", "check"])
        .arg(hostile("panicker"))
        .arg("--fixtures")
        .arg(fixtures.path())
        .output()
        .expect("run happyx plugin check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a clean failure; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("Cannot start a runtime") && !stderr.contains("panicked at"),
        "the checker itself crashed: {stderr}"
    );
    assert!(
        stdout.lines().any(|l| l.contains("\"passed\":false")),
        "no failed check reported: {stdout}"
    );
    assert!(stderr.contains("check(s) failed"), "{stderr}");
    assert!(stdout.contains("fixture:redaction/attack"), "{stdout}");
    assert!(
        stderr.contains("plugin_trap"),
        "the trap is named: {stderr}"
    );
}
