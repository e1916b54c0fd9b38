//! Policy plugins: WASM components implementing `wit/happyx-policy.wit`,
//! run under wasmtime with deadlines, memory limits and no capabilities.
//!
//! [`PluginHost`] is the face the rest of the host uses: it loads the three
//! plugins (configured files or the built-in samples), checks them against
//! their contract, serves calls (redactions in `block_in_place` on the calling worker, the
//! rest on the blocking pool: never on a thread that must keep polling), and hot-reloads them
//! (swap after checks; the last good version keeps serving on failure).
//!
//! This crate knows nothing of the database or HTTP (no sqlx, no axum: `cargo tree -p
//! happyx-policy` shows it); the server hands it configuration and calls it.

mod bindings;
mod builtin;
mod cache;
mod config;
mod contract;
mod engine;
mod error;
mod masks;
pub mod metrics;
pub mod prefilter;
mod runtime;
pub mod scaffold;
mod store;
mod types;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::Semaphore;

pub use builtin::builtin_components;

/// The `source` names the host passes to `redaction.redact`, as the WIT's doc comment for
/// `redact` lists them (run output passes its stream name, `stdout` or `stderr`).
pub mod source {
    /// Run output on standard output.
    pub const STDOUT: &str = "stdout";
    /// Run output on standard error.
    pub const STDERR: &str = "stderr";
    /// A terminal's output (its transcript).
    pub const PTY_OUTPUT: &str = "pty-output";
    /// Any other text: an approval's shown action, a public response `verify-public` scans.
    pub const TEXT: &str = "text";
    /// Every name above.
    pub const ALL: [&str; 4] = [STDOUT, STDERR, PTY_OUTPUT, TEXT];
}
pub use cache::{Origin as CacheOrigin, sha256_hex};
pub use config::{Kind, Limits, PluginSpec, PluginsConfig};
pub use contract::Check;
pub use error::{PluginError, PluginRef, RenderError};
pub use masks::{MASK_BYTE, apply_masks};
pub use types::{
    Decision, Finding, Item, Param, PluginStatus, Recipe, Redaction, Rendered, RetentionKind, Risk,
    Totals,
};

use cache::DiskCache;
use runtime::{Plan, Plugin, RawRender};

/// Whether the calling thread may block in `tokio::task::block_in_place`: it is a worker (or
/// in `block_on`) of a multi-threaded runtime, or in no runtime at all.
fn can_block_in_place() -> bool {
    tokio::runtime::Handle::try_current().map_or(true, |h| {
        h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
    })
}

/// The error of a call the host could not make on `plugin` (no call slot, a failed task).
fn host_error(plugin: &Plugin, reason: String) -> PluginError {
    PluginError::Host {
        plugin: Box::new(plugin.plugin.clone()),
        reason,
    }
}

/// Guest calls running at once, over all plugins (each holds an instance).
const MAX_CONCURRENT_CALLS: usize = 48;
/// Largest accepted component file.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// The plugin runtime. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

struct Inner {
    /// The `[plugins]` configuration serving now; a reload may bring a new one.
    cfg: RwLock<PluginsConfig>,
    cache: Option<DiskCache>,
    slots: [Slot; 3],
    calls: Semaphore,
    reload_lock: tokio::sync::Mutex<()>,
    /// Latency of guest calls by plugin, call and outcome, once the server registered it.
    call_metrics: std::sync::OnceLock<crate::metrics::PluginCalls>,
}

struct Slot {
    current: RwLock<Arc<Plugin>>,
    /// The configuration the serving version was built with (path, pin, settings, limits).
    spec: Mutex<Option<PluginSpec>>,
    /// The last failure of this plugin — a refused load or reload, or a failed call — with
    /// when it happened (Unix ms). A successful reload clears it; a successful call does not.
    last_error: Mutex<Option<(String, u64)>>,
}

impl Slot {
    fn set_error(&self, error: Option<String>) {
        if let Ok(mut le) = self.last_error.lock() {
            *le = error.map(|e| (e, happyx_core::util::now_ms().max(0) as u64));
        }
    }
}

/// Result of [`check_component`].
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The world detected from the component's exports.
    pub world: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub sha256: String,
    pub checks: Vec<Check>,
    /// Every check passed.
    pub passed: bool,
}

fn io_err(kind: Kind, sha: &str, context: String, source: std::io::Error) -> PluginError {
    PluginError::Io {
        plugin: Box::new(PluginRef {
            kind: kind.as_str().into(),
            sha256: sha.into(),
            ..PluginRef::default()
        }),
        context,
        source,
    }
}

fn source_name(spec: Option<&PluginSpec>) -> String {
    spec.and_then(|s| s.path.as_ref())
        .map_or_else(|| "builtin".to_string(), |p| p.display().to_string())
}

/// Reads the component bytes for `kind` (file or built-in).
fn read_source(kind: Kind, spec: Option<&PluginSpec>) -> Result<Vec<u8>, PluginError> {
    match spec.and_then(|s| s.path.as_ref()) {
        None => Ok(builtin::builtin(kind).to_vec()),
        Some(path) => {
            let reading = |e| {
                let what = format!(
                    "reading [plugins.{}] path {}",
                    kind.as_str(),
                    path.display()
                );
                io_err(kind, "", what, e)
            };
            let meta = std::fs::metadata(path).map_err(reading)?;
            if meta.len() > MAX_COMPONENT_BYTES as u64 {
                return Err(PluginError::Invalid {
                    plugin: Box::new(PluginRef {
                        kind: kind.as_str().into(),
                        ..PluginRef::default()
                    }),
                    reason: format!("larger than {MAX_COMPONENT_BYTES} bytes"),
                });
            }
            std::fs::read(path).map_err(reading)
        }
    }
}

/// Compiles, links and checks one plugin (blocking).
fn build_plugin(
    kind: Kind,
    bytes: &[u8],
    spec: Option<&PluginSpec>,
    disk: Option<&DiskCache>,
) -> Result<Plugin, PluginError> {
    let sha = sha256_hex(bytes);
    let bare = PluginRef {
        kind: kind.as_str().into(),
        sha256: sha.clone(),
        ..PluginRef::default()
    };
    if let Some(pin) = spec.and_then(|s| s.sha256.as_ref())
        && !pin.trim().eq_ignore_ascii_case(&sha)
    {
        return Err(PluginError::HashMismatch {
            plugin: Box::new(bare),
            expected: validate::clean_text(pin.trim(), 64),
        });
    }
    let limits = spec
        .map(PluginSpec::limits)
        .transpose()
        .map_err(|reason| PluginError::Config {
            plugin: Box::new(bare.clone()),
            reason: format!("[plugins.{}] {reason}", kind.as_str()),
        })?
        .unwrap_or_default();
    let settings: Vec<(String, String)> = spec
        .map(|s| s.settings.clone().into_iter().collect())
        .unwrap_or_default();
    if !bytes.starts_with(b"\0asm") {
        return Err(PluginError::Invalid {
            plugin: Box::new(bare),
            reason: "not a WebAssembly file (it does not start with \\0asm)".into(),
        });
    }
    let engine = engine::engine().map_err(|reason| PluginError::Host {
        plugin: Box::new(bare.clone()),
        reason,
    })?;
    let (component, _) =
        cache::compile(engine, bytes, &sha, disk).map_err(|e| PluginError::Invalid {
            plugin: Box::new(bare.clone()),
            reason: validate::clean_text(&e.root_cause().to_string(), 300),
        })?;
    let plugin = Plugin::prepare(kind, &component, sha, limits, settings)?;
    let mut checks = contract::builtin_checks(&plugin);
    if let Some(dir) = spec.and_then(|s| s.fixtures.as_ref()) {
        checks.extend(contract::fixture_checks(&plugin, dir));
    }
    if let Some(failed) = checks.iter().find(|c| !c.passed) {
        tracing::warn!(plugin = %plugin.plugin, check = %failed.name, detail = %failed.detail, "plugin failed a contract check");
        return Err(PluginError::Contract {
            plugin: Box::new(plugin.plugin.clone()),
            check: failed.name.clone(),
        });
    }
    plugin.prewarm(2);
    Ok(plugin)
}

impl PluginHost {
    /// Loads and checks the three plugins. Blocking (compiles components):
    /// call it from `spawn_blocking` or before starting the runtime. `cache`
    /// is the compile-cache directory (see the `cache` module docs).
    pub fn load(cfg: &PluginsConfig, cache: Option<cap_std::fs::Dir>) -> Result<Self, PluginError> {
        let disk = match cache {
            Some(dir) => match DiskCache::open(dir) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "plugin compile cache unusable; compiling without it");
                    None
                }
            },
            None => None,
        };
        let mut plugins = Vec::with_capacity(3);
        for kind in Kind::ALL {
            let spec = cfg.spec(kind);
            let bytes = read_source(kind, spec)?;
            let plugin = build_plugin(kind, &bytes, spec, disk.as_ref())?;
            tracing::info!(plugin = %plugin.plugin, source = %source_name(spec), "plugin loaded");
            plugins.push(Arc::new(plugin));
        }
        let mut it = plugins.into_iter();
        let mut slot = |_kind: Kind| -> Result<Slot, PluginError> {
            let plugin = it.next().ok_or_else(|| PluginError::Host {
                plugin: Box::new(PluginRef::default()),
                reason: "plugin missing after load".into(),
            })?;
            Ok(Slot {
                current: RwLock::new(plugin),
                spec: Mutex::new(cfg.spec(_kind).cloned()),
                last_error: Mutex::new(None),
            })
        };
        let slots = [
            slot(Kind::Redactor)?,
            slot(Kind::Retention)?,
            slot(Kind::Recipes)?,
        ];
        Ok(PluginHost {
            inner: Arc::new(Inner {
                cfg: RwLock::new(cfg.clone()),
                cache: disk,
                slots,
                calls: Semaphore::new(MAX_CONCURRENT_CALLS),
                reload_lock: tokio::sync::Mutex::new(()),
                call_metrics: std::sync::OnceLock::new(),
            }),
        })
    }

    fn slot(&self, kind: Kind) -> &Slot {
        let i = match kind {
            Kind::Redactor => 0,
            Kind::Retention => 1,
            Kind::Recipes => 2,
        };
        &self.inner.slots[i]
    }

    /// The plugin serving `kind` now.
    fn current(&self, kind: Kind) -> Arc<Plugin> {
        let slot = self.slot(kind);
        match slot.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Runs `f` on the current plugin of `kind` on the blocking pool; `call` names the guest
    /// function for the latency histogram and `last_error`.
    async fn run<R: Send + 'static>(
        &self,
        kind: Kind,
        call: &'static str,
        f: impl FnOnce(&Plugin) -> Result<R, PluginError> + Send + 'static,
    ) -> Result<R, PluginError> {
        let start = std::time::Instant::now();
        self.run_on(self.current(kind), kind, call, start, f).await
    }

    /// [`PluginHost::run`] on `plugin`, a call begun at `start`.
    async fn run_on<R: Send + 'static>(
        &self,
        plugin: Arc<Plugin>,
        kind: Kind,
        call: &'static str,
        start: std::time::Instant,
        f: impl FnOnce(&Plugin) -> Result<R, PluginError> + Send + 'static,
    ) -> Result<R, PluginError> {
        let result = match self.inner.calls.acquire().await {
            Ok(_permit) => {
                let p = plugin.clone();
                tokio::task::spawn_blocking(move || f(&p))
                    .await
                    .map_err(|e| host_error(&plugin, format!("plugin call task failed: {e}")))
                    .and_then(|r| r)
            }
            Err(e) => Err(host_error(&plugin, e.to_string())),
        };
        self.finish(kind, call, start, &result);
        result
    }

    /// [`PluginHost::run_on`] on this thread, in `block_in_place` (see [`PluginHost::redact`]):
    /// `f` may borrow what it is given, nothing is copied for it.
    async fn run_here<R>(
        &self,
        plugin: &Plugin,
        kind: Kind,
        call: &'static str,
        start: std::time::Instant,
        f: impl FnOnce(&Plugin) -> Result<R, PluginError>,
    ) -> Result<R, PluginError> {
        let result = match self.inner.calls.acquire().await {
            Ok(_permit) => tokio::task::block_in_place(|| f(plugin)),
            Err(e) => Err(host_error(plugin, e.to_string())),
        };
        self.finish(kind, call, start, &result);
        result
    }

    /// Records the outcome of a call begun at `start`: its latency, and its error as the
    /// plugin's `last_error`.
    fn finish<R>(
        &self,
        kind: Kind,
        call: &'static str,
        start: std::time::Instant,
        result: &Result<R, PluginError>,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => {
                self.slot(kind)
                    .set_error(Some(format!("{call} failed: {e}")));
                e.code()
            }
        };
        self.observe(kind, call, outcome, start);
    }

    /// Records one call's latency, since `start`, in the latency histogram.
    fn observe(&self, kind: Kind, call: &'static str, outcome: &str, start: std::time::Instant) {
        if let Some(family) = self.inner.call_metrics.get() {
            family
                .get_or_create(&crate::metrics::PluginCallLabels {
                    plugin: kind.as_str().into(),
                    call: call.into(),
                    outcome: outcome.into(),
                })
                .observe(start.elapsed().as_secs_f64());
        }
    }

    /// Observe every guest call in `family` from now on (the server's metrics registry).
    pub fn observe_calls(&self, family: crate::metrics::PluginCalls) {
        let _ = self.inner.call_metrics.set(family);
    }

    /// Finds secrets in `data` (from stream `source`, one of [`source`]).
    ///
    /// The redactor's prefilter searches `data` first, natively, on this thread. When it
    /// finds no trigger (the common case) the answer is empty at once: no guest call.
    ///
    /// Otherwise the guest is called on this thread too when it is a worker of a
    /// multi-threaded runtime, inside `block_in_place`, which hands the thread's other tasks
    /// to another worker for the call's duration: a chunk takes the guest tens of
    /// microseconds, and a trip through the blocking pool (two thread wake-ups, a copy of
    /// the data) cost about as much again. On a current-thread runtime, whose only thread
    /// must not block, the call goes through the blocking pool.
    pub async fn redact(&self, source: &str, data: &[u8]) -> Result<Redaction, PluginError> {
        let start = std::time::Instant::now();
        let plugin = self.current(Kind::Redactor);
        let plan = plugin.plan(data);
        let redaction = |p: &Plugin, findings| Redaction {
            findings,
            policy_hash: p.plugin.sha256.clone(),
        };
        if matches!(plan, Plan::Clear) {
            self.observe(Kind::Redactor, "redact", "ok", start);
            return Ok(redaction(&plugin, Vec::new()));
        }
        if can_block_in_place() {
            return self
                .run_here(&plugin, Kind::Redactor, "redact", start, |p| {
                    Ok(redaction(p, p.redact_planned(source, data, plan)?))
                })
                .await;
        }
        let source = source.to_string();
        let data = data.to_vec();
        self.run_on(plugin, Kind::Redactor, "redact", start, move |p| {
            let findings = p.redact_planned(&source, &data, plan)?;
            Ok(redaction(p, findings))
        })
        .await
    }

    /// Finds secrets in `data` with one guest call on the whole of it, bypassing the
    /// redactor's prefilter. For tests and benchmarks that compare the two paths.
    #[doc(hidden)]
    pub async fn redact_whole(&self, source: &str, data: &[u8]) -> Result<Redaction, PluginError> {
        let source = source.to_string();
        let data = data.to_vec();
        self.run(Kind::Redactor, "redact", move |p| {
            let findings = p.redact_whole(&source, &data)?;
            Ok(Redaction {
                findings,
                policy_hash: p.plugin.sha256.clone(),
            })
        })
        .await
    }

    /// Whether the serving redactor declared a prefilter (a redactor of 0.3.0 or later that
    /// did not return `none`).
    pub fn redactor_has_prefilter(&self) -> bool {
        self.current(Kind::Redactor).has_prefilter()
    }

    /// The recipe catalog (read at load; no guest call).
    pub async fn catalog(&self) -> Result<Vec<Recipe>, PluginError> {
        Ok(self.current(Kind::Recipes).catalog().to_vec())
    }

    /// Renders recipe `name` with `args`. The effective risk is the higher
    /// of the listed and the rendered risk.
    pub async fn render(
        &self,
        name: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<Rendered, RenderError> {
        let plugin = self.current(Kind::Recipes);
        let Some(listed) = plugin.catalog().iter().find(|r| r.name == name) else {
            return Err(RenderError::UnknownRecipe(validate::clean_text(name, 200)));
        };
        let listed_risk = listed.risk;
        let name = name.to_string();
        let args: Vec<(String, String)> = args.clone().into_iter().collect();
        let raw = self
            .run(Kind::Recipes, "render", move |p| p.render_raw(&name, &args))
            .await?;
        match raw {
            RawRender::Ok {
                program,
                args,
                risk,
                timeout_ms,
            } => Ok(Rendered {
                program,
                args,
                risk: risk.max(listed_risk),
                listed_risk,
                timeout: timeout_ms.map(Duration::from_millis),
                plugin_hash: plugin.plugin.sha256.clone(),
            }),
            RawRender::UnknownRecipe => Err(RenderError::UnknownRecipe(listed.name.clone())),
            RawRender::MissingArg(a) => Err(RenderError::MissingArg(a)),
            RawRender::UnknownArg(a) => Err(RenderError::UnknownArg(a)),
            RawRender::InvalidArg(name, reason) => Err(RenderError::InvalidArg { name, reason }),
        }
    }

    /// Asks the retention plugin which `items` to prune.
    pub async fn decide_retention(
        &self,
        now_ms: u64,
        totals: &[Totals],
        items: &[Item],
    ) -> Result<Decision, PluginError> {
        let totals = totals.to_vec();
        let items = items.to_vec();
        self.run(Kind::Retention, "decide", move |p| {
            let prune = p.decide(now_ms, &totals, &items)?;
            Ok(Decision {
                prune,
                policy_hash: p.plugin.sha256.clone(),
            })
        })
        .await
    }

    /// Status of the three plugins.
    pub fn status(&self) -> Vec<PluginStatus> {
        Kind::ALL
            .iter()
            .map(|&kind| {
                let p = self.current(kind);
                let (last_error, last_error_at) = self
                    .slot(kind)
                    .last_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .unzip();
                use std::sync::atomic::Ordering::Relaxed;
                PluginStatus {
                    kind: kind.as_str().into(),
                    world: kind.world().into(),
                    wit_version: p.wit_version.into(),
                    name: p.plugin.name.clone(),
                    version: p.plugin.version.clone(),
                    sha256: p.plugin.sha256.clone(),
                    source: source_name(
                        self.slot(kind)
                            .spec
                            .lock()
                            .ok()
                            .and_then(|s| s.clone())
                            .as_ref(),
                    ),
                    loaded_at: p.loaded_at_ms,
                    last_error,
                    last_error_at,
                    calls: p.stats.calls.load(Relaxed),
                    failures: p.stats.failures.load(Relaxed),
                    total_call_us: p.stats.total_us.load(Relaxed),
                }
            })
            .collect()
    }

    /// The `[plugins]` configuration serving now.
    pub fn config(&self) -> PluginsConfig {
        match self.inner.cfg.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the configured plugin files; each changed one is compiled
    /// and checked off the request path, then swapped in atomically (calls
    /// in flight finish on the old version). A candidate that fails leaves
    /// the previous version serving and is recorded as `last_error`; the
    /// first such error is returned after all kinds were tried.
    pub async fn reload(&self) -> Result<Vec<PluginStatus>, PluginError> {
        self.reload_with(None).await
    }

    /// [`Self::reload`] under a new `[plugins]` configuration (re-read from the config file): a
    /// kind whose path, pin, settings or limits changed is rebuilt even when its bytes did
    /// not. The new configuration is kept once every kind was tried, so that a later reload
    /// retries a refused candidate.
    pub async fn reload_with(
        &self,
        cfg: Option<PluginsConfig>,
    ) -> Result<Vec<PluginStatus>, PluginError> {
        let _guard = self.inner.reload_lock.lock().await;
        if let Some(cfg) = cfg {
            let mut cur = match self.inner.cfg.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *cur = cfg;
        }
        let mut first_err = None;
        for kind in Kind::ALL {
            let this = self.clone();
            let outcome = tokio::task::spawn_blocking(move || this.reload_one(kind))
                .await
                .map_err(|e| host_error(&self.current(kind), format!("reload task failed: {e}")))
                .and_then(|r| r);
            let slot = self.slot(kind);
            match outcome {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(kind = kind.as_str(), code = e.code(), error = %e, "plugin reload refused; previous version keeps serving");
                    slot.set_error(Some(format!("reload refused: {e}")));
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(self.status()),
        }
    }

    /// Reloads one kind if its bytes or its configuration changed (blocking).
    fn reload_one(&self, kind: Kind) -> Result<(), PluginError> {
        let spec = self.config().spec(kind).cloned();
        let bytes = read_source(kind, spec.as_ref())?;
        let sha = sha256_hex(&bytes);
        let slot = self.slot(kind);
        let same_spec = slot.spec.lock().map(|s| *s == spec).unwrap_or(false);
        if self.current(kind).plugin.sha256 == sha && same_spec {
            slot.set_error(None);
            return Ok(());
        }
        let plugin = Arc::new(build_plugin(
            kind,
            &bytes,
            spec.as_ref(),
            self.inner.cache.as_ref(),
        )?);
        tracing::info!(plugin = %plugin.plugin, source = %source_name(spec.as_ref()), "plugin reloaded");
        let old = {
            let mut cur = match slot.current.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            std::mem::replace(&mut *cur, plugin)
        };
        if let Ok(mut s) = slot.spec.lock() {
            *s = spec;
        }
        // Idle instances of the old version are freed now; in-flight calls
        // keep their own `Arc` and finish on the old version.
        old.drain_pool();
        slot.set_error(None);
        Ok(())
    }

    /// Modification stamps of the configured plugin files (what a watcher compares).
    pub fn file_stamps(&self) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
        let cfg = self.config();
        Kind::ALL
            .iter()
            .filter_map(|k| cfg.spec(*k).and_then(|s| s.path.clone()))
            .map(|p| {
                let stamp = file_stamp(&p);
                (p, stamp)
            })
            .collect()
    }
}

/// `(modified, length)` of a file, if it can be read.
pub fn file_stamp(p: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(p)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

impl PluginHost {
    /// Instantiates (without configuring) a fresh instance of the plugin
    /// serving `kind` and drops it. Blocking; for benchmarks.
    #[doc(hidden)]
    pub fn bench_instantiate(&self, kind: Kind) -> Result<(), PluginError> {
        self.current(kind).instantiate_only()
    }
}

/// Runs the contract checks for the world the component exports (and the
/// fixtures in `fixtures`, if given) with default limits and no settings.
/// Blocking. Used by `happyx plugin check FILE.wasm`.
pub fn check_component(bytes: &[u8], fixtures: Option<&Path>) -> CheckReport {
    let sha = sha256_hex(bytes);
    let mut report = CheckReport {
        world: None,
        name: None,
        version: None,
        sha256: sha.clone(),
        checks: Vec::new(),
        passed: false,
    };
    let fail = |report: &mut CheckReport, name: &str, detail: String| {
        report.checks.push(Check {
            name: name.into(),
            passed: false,
            detail,
        });
    };
    let engine = match engine::engine() {
        Ok(e) => e,
        Err(reason) => {
            fail(&mut report, "engine", reason);
            return report;
        }
    };
    let component = match cache::compile(engine, bytes, &sha, None) {
        Ok((c, _)) => c,
        Err(e) => {
            let detail = format!(
                "not a valid component: {} (plugin_invalid)",
                validate::clean_text(&e.root_cause().to_string(), 300)
            );
            fail(&mut report, "component", detail);
            return report;
        }
    };
    report.checks.push(Check {
        name: "component".into(),
        passed: true,
        detail: String::new(),
    });
    let exports = runtime::inspect_exports(engine, &component);
    let Some(kind) = exports.kind else {
        let detail = match &exports.version {
            Some(v) => {
                format!("exports happyx:policy@{v} but no known interface (plugin_wrong_world)")
            }
            None => "exports no happyx:policy interface (plugin_wrong_world)".into(),
        };
        fail(&mut report, "world", detail);
        return report;
    };
    report.world = Some(kind.world().into());
    let spec = PluginSpec {
        fixtures: fixtures.map(Path::to_path_buf),
        ..PluginSpec::default()
    };
    let plugin = match Plugin::prepare(kind, &component, sha, Limits::default(), Vec::new()) {
        Ok(p) => p,
        Err(e) => {
            fail(&mut report, "load", format!("{e} ({})", e.code()));
            return report;
        }
    };
    report.checks.push(Check {
        name: "load".into(),
        passed: true,
        detail: String::new(),
    });
    report.name = Some(plugin.plugin.name.clone());
    report.version = Some(plugin.plugin.version.clone());
    report.checks.extend(contract::builtin_checks(&plugin));
    if let Some(dir) = spec.fixtures.as_deref() {
        report.checks.extend(contract::fixture_checks(&plugin, dir));
    }
    report.passed = report.checks.iter().all(|c| c.passed);
    report
}

/// Compiles `bytes` without the in-memory map, for benchmarks of the disk
/// cache and of cold compiles. Blocking.
#[doc(hidden)]
pub fn bench_compile(bytes: &[u8], cache: Option<cap_std::fs::Dir>) -> Result<CacheOrigin, String> {
    let engine = engine::engine()?;
    let disk = cache
        .map(DiskCache::open)
        .transpose()
        .map_err(|e| e.to_string())?;
    let sha = sha256_hex(bytes);
    cache::compile_uncached(engine, bytes, &sha, disk.as_ref())
        .map(|(_, o)| o)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod source_tests {
    /// Every `source` the host passes is one the WIT's doc comment for `redact` names.
    #[test]
    fn the_host_passes_only_sources_the_wit_documents() {
        let wit = include_str!("../../../wit/happyx-policy.wit");
        let start = wit
            .find("interface redaction")
            .expect("redaction interface");
        let doc_end = start + wit[start..].find("redact: func").expect("redact");
        let doc_start = start + wit[start..doc_end].find("`source`").expect("source doc");
        let doc = &wit[doc_start..doc_end];
        for name in super::source::ALL {
            assert!(
                doc.contains(&format!("\"{name}\"")),
                "the WIT does not document the source {name:?}: {doc}"
            );
        }
    }
}

#[cfg(test)]
mod prefilter_equivalence {
    //! The built-in redactor (the real WASM component) finds exactly the same through its
    //! prefilter as on whole chunks, on a corpus built to hit the prefilter's edges.

    use super::*;

    fn redactor(settings: &[(&str, &str)]) -> Plugin {
        let spec = PluginSpec {
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..PluginSpec::default()
        };
        let p = build_plugin(
            Kind::Redactor,
            builtin::builtin(Kind::Redactor),
            Some(&spec),
            None,
        )
        .expect("the built-in redactor loads");
        assert!(
            p.has_prefilter(),
            "the built-in redactor declares a prefilter"
        );
        p
    }

    /// Compares both paths on `data`; returns the findings.
    fn same(p: &Plugin, data: &[u8]) -> Vec<Finding> {
        let whole = p.redact_whole("stdout", data).expect("whole");
        let filtered = p.redact("stdout", data).expect("prefiltered");
        assert_eq!(
            filtered,
            whole,
            "prefiltered and whole findings differ on {:?}",
            String::from_utf8_lossy(&data[..data.len().min(300)])
        );
        whole
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// One positive sample per rule (and pieces of them), plus filler.
    const PIECES: &[&str] = &[
        "AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key = AbCdEfGh12345678/+=abcd",
        "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB",
        "github_pat_0123456789abcdefghijklmn_0123",
        "glpat-0123456789abcdefghij",
        "xoxb-0123456789-abcdef",
        "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "Authorization: Basic dXNlcjpwYXNz",
        "proxy-authorization=\"token abcdef\"",
        "Bearer abcdefghijklmnop0123456789",
        "DB_PASSWORD = \"hunter2\"",
        "x-api_key: abcdef",
        "credentials=abc&credential=def",
        "postgres://admin:s3cr3t@db.internal:5432/app",
        "hpx_ab12cd34ef56_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
        "canary-0123456789",
        "token",
        "TOKEN ",
        ":",
        "=",
        "://",
        "eyJ",
        "AKIA",
        "ghp_",
        "hpx_",
        "-----BEGIN",
        "   ",
        "\n",
        "\"",
        "abcdefghij",
        "0123456789",
        "[ok] compiling crate v0.1.0\n",
    ];

    #[test]
    fn the_prefiltered_scan_finds_exactly_what_the_whole_scan_finds() {
        let long_literal = "L".repeat(100);
        let literals = format!("canary-0123456789,{long_literal}");
        let p = redactor(&[("extra_literals", literals.as_str())]);

        // Every conformance fixture, and each probe at the very start and end of a chunk.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/redaction");
        for case in std::fs::read_dir(dir).expect("fixtures") {
            let input = std::fs::read(case.expect("case").path().join("input.bin")).expect("input");
            same(&p, &input);
        }
        // The first 18 pieces are secrets, one or more per rule.
        for (i, piece) in PIECES.iter().chain([&long_literal.as_str()]).enumerate() {
            let found = same(&p, piece.as_bytes());
            if i < 18 || i == PIECES.len() {
                assert!(!found.is_empty(), "{piece:?} alone is found");
            }
            same(&p, format!("{piece} and more text after it").as_bytes());
            same(&p, format!("text before it and {piece}").as_bytes());
        }

        // Random mixes of pieces and filler: secrets straddling window edges, triggers near
        // each other, and at both ends.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let total: usize = (0..400).map(|_| same(&p, &mix(&mut rng)).len()).sum();
        assert!(total > 400, "the corpus holds secrets: {total}");
    }

    /// A random mix of pieces and filler.
    fn mix(rng: &mut Rng) -> Vec<u8> {
        let mut data = Vec::new();
        for _ in 0..rng.below(24) {
            match rng.below(3) {
                0 => data.extend(std::iter::repeat_n(b'x', rng.below(700))),
                1 => data.extend(std::iter::repeat_n(b' ', rng.below(300))),
                _ => data.extend_from_slice(PIECES[rng.below(PIECES.len())].as_bytes()),
            }
        }
        data
    }

    /// Disabling rules renumbers the others, and the groups with them: a window's groups
    /// still name the rules its triggers stand for. (The rules the load's contract checks need,
    /// AWS, GitHub and HappyX tokens, stay enabled.)
    #[test]
    fn with_rules_disabled_each_group_still_names_its_rule() {
        let p = redactor(&[
            ("disable", "private-key,slack-token,jwt"),
            ("extra_literals", "canary-0123456789"),
        ]);
        let mut rng = Rng(7);
        let total: usize = (0..200).map(|_| same(&p, &mix(&mut rng)).len()).sum();
        assert!(total > 200, "the corpus holds secrets: {total}");
        assert!(
            same(&p, b"key xoxb-0123456789-abcdef").is_empty(),
            "disabled"
        );
        let found = same(
            &p,
            b"ghp_0123456789abcdefghijklmnopqrstuvwxyzAB canary-0123456789",
        );
        let rules: Vec<&str> = found.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(rules, ["github-token", "literal"]);
    }

    #[test]
    fn a_key_block_longer_than_its_bound_is_masked_whole() {
        let p = redactor(&[]);
        let body: String = (0..200).map(|i| format!("{i:063}\n")).collect();
        assert!(body.len() > 4096 * 2, "longer than the declared bound");
        let key = format!("-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----");
        let data = format!("{}\n{key}\n{}", "x".repeat(5000), "y".repeat(5000));
        let found = same(&p, data.as_bytes());
        let start = data.find("-----BEGIN").unwrap_or(0);
        assert!(
            found
                .iter()
                .any(|f| f.rule == "private-key" && f.start == start && f.end == start + key.len()),
            "{found:?}"
        );
        // Cut off by the end of the chunk: masked to the end.
        let cut = &data.as_bytes()[..start + 6000];
        let found = same(&p, cut);
        assert!(
            found
                .iter()
                .any(|f| f.rule == "private-key" && f.end == cut.len()),
            "{found:?}"
        );
        // A long unbounded run (a password value) longer than its bound.
        let value = "v".repeat(3000);
        let data = format!("{} password={value} {}", "x".repeat(900), "y".repeat(900));
        let found = same(&p, data.as_bytes());
        assert!(
            found.iter().any(|f| f.end - f.start == value.len()),
            "{found:?}"
        );
    }

    #[test]
    fn random_bytes_and_trigger_heavy_chunks_agree() {
        let p = redactor(&[]);
        let mut rng = Rng(42);
        let random: Vec<u8> = (0..64 * 1024).map(|_| rng.next() as u8).collect();
        same(&p, &random);
        let heavy = "token=ab Bearer x://eyJ AKIA ghp_ password: secret ".repeat(1300);
        same(&p, heavy.as_bytes());
        let spaced: String = (0..2000)
            .map(|i| format!("token{}= {}\n", " ".repeat(i % 300), "k".repeat(i % 7)))
            .collect();
        same(&p, spaced.as_bytes());
        // No trigger at all: no guest call.
        let calls = p.stats.calls.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            p.redact("stdout", &vec![b'q'; 64 * 1024])
                .expect("clean")
                .is_empty()
        );
        assert_eq!(
            p.stats.calls.load(std::sync::atomic::Ordering::Relaxed),
            calls
        );
    }
}
