//! One loaded plugin: its `InstancePre`, its pool of warm instances and the
//! guarded call path (deadline, memory limit, trap classification). Components
//! of `happyx:policy` 0.4.0, 0.3.0, 0.2.0 and 0.1.0 load, each world bound
//! through its version's generated types; a redactor's prefilter (0.3.0 and
//! later) is asked once, after the first instance is configured, and `redact`
//! goes through it (see [`super::prefilter`]): a 0.4.0 redactor gets every
//! window of a chunk in one `redact-windows` call, a 0.3.0 one a `redact` call
//! per window.
//!
//! **Instance recycling.** A fresh instance is created from the plugin's
//! `InstancePre` in a new `Store`, `configure`d once with the operator's
//! settings, and then reused: after a successful call it goes back to a small
//! per-plugin pool ([`POOL_IDLE`] idle instances at most). Reuse matters for
//! guests that build state in `configure` (the redactor compiles its regexes
//! there, ~ms) and it is safe because the WIT contract makes calls
//! stateless. An instance that trapped, timed out or hit its memory limit is
//! dropped, never reused (wasmtime poisons it anyway), as is one whose output
//! pipes are half full. Memory grown by earlier calls stays with the instance
//! and counts against its limit, so a leaking guest ends up with a memory
//! error and a fresh instance.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, Trap};

use super::bindings::v0_1::{recipes as rb1, redactor as rd1, retention as rt1};
use super::bindings::v0_2::{recipes as rb2, redactor as rd2, retention as rt2};
use super::bindings::v0_3::{recipes as rb3, redactor as rd3, retention as rt3};
use super::bindings::{
    WIT_PACKAGE, WIT_VERSION, WIT_VERSION_V0_1, WIT_VERSION_V0_2, WIT_VERSION_V0_3, recipes as rb,
    redactor as rd, retention as rt,
};
use super::config::{Kind, Limits};
use super::engine;
use super::error::{PluginError, PluginRef};
use super::prefilter::{self as pf, Prefilter, TriggerSpec, Window};
use super::store::{StoreState, new_store};
use super::types::{Finding, Item, Param, Recipe, RetentionKind, Risk, Totals};
use super::validate;

/// Idle warm instances kept per plugin.
pub const POOL_IDLE: usize = 8;

/// A prepared component for one world, at the current WIT version, 0.3.0, 0.2.0 or 0.1.0.
enum Pre {
    Redactor(rd::RedactorPre<StoreState>),
    Retention(rt::RetentionPolicyPre<StoreState>),
    Recipes(rb::RecipeBookPre<StoreState>),
    RedactorV03(rd3::RedactorPre<StoreState>),
    RetentionV03(rt3::RetentionPolicyPre<StoreState>),
    RecipesV03(rb3::RecipeBookPre<StoreState>),
    RedactorV02(rd2::RedactorPre<StoreState>),
    RetentionV02(rt2::RetentionPolicyPre<StoreState>),
    RecipesV02(rb2::RecipeBookPre<StoreState>),
    RedactorV01(rd1::RedactorPre<StoreState>),
    RetentionV01(rt1::RetentionPolicyPre<StoreState>),
    RecipesV01(rb1::RecipeBookPre<StoreState>),
}

/// A live instance bound to its world's exports.
enum Bound {
    Redactor(rd::Redactor),
    Retention(rt::RetentionPolicy),
    Recipes(rb::RecipeBook),
    RedactorV03(rd3::Redactor),
    RetentionV03(rt3::RetentionPolicy),
    RecipesV03(rb3::RecipeBook),
    RedactorV02(rd2::Redactor),
    RetentionV02(rt2::RetentionPolicy),
    RecipesV02(rb2::RecipeBook),
    RedactorV01(rd1::Redactor),
    RetentionV01(rt1::RetentionPolicy),
    RecipesV01(rb1::RecipeBook),
}

/// Evaluates `$body` with `$b` bound to whichever world (and version) `$bound` holds; every
/// arm is type-checked on its own, so `$body` may use the world's own generated types.
macro_rules! each_bound {
    ($bound:expr, $b:ident => $body:expr) => {
        match $bound {
            Bound::Redactor($b) => $body,
            Bound::Retention($b) => $body,
            Bound::Recipes($b) => $body,
            Bound::RedactorV03($b) => $body,
            Bound::RetentionV03($b) => $body,
            Bound::RecipesV03($b) => $body,
            Bound::RedactorV02($b) => $body,
            Bound::RetentionV02($b) => $body,
            Bound::RecipesV02($b) => $body,
            Bound::RedactorV01($b) => $body,
            Bound::RetentionV01($b) => $body,
            Bound::RecipesV01($b) => $body,
        }
    };
}

/// Instantiates whichever world (and version) `$pre` holds, as the same [`Bound`] variant.
macro_rules! instantiate_pre {
    ($pre:expr, $store:expr, $($variant:ident),* $(,)?) => {
        match $pre {
            $(Pre::$variant(p) => p.instantiate($store).map(Bound::$variant),)*
        }
    };
}

/// `redaction.redact` on a redactor of any version, as `(rule, start, end)` triples.
macro_rules! call_redact {
    ($bound:expr, $store:expr, $source:expr, $data:expr, $wrong:expr, $($variant:ident),* $(,)?) => {
        match $bound {
            $(Bound::$variant(b) => b
                .happyx_policy_redaction()
                .call_redact($store, $source, $data)
                .map(|r| r.map(|v| v.into_iter().map(|f| (f.rule, f.start, f.end)).collect())),)*
            _ => Err($wrong),
        }
    };
}

/// `retention.decide` on a retention policy whose kinds are the WIT `kind` enum (0.2.0 and
/// later), given the generated bindings module and the [`Bound`] variant.
macro_rules! decide_enum {
    ($this:expr, $m:ident, $variant:ident, $now:expr, $totals:expr, $items:expr) => {{
        use $m::exports::happyx::policy::retention as g;
        let kind = |k: RetentionKind| match k {
            RetentionKind::RunOutput => g::Kind::RunOutput,
            RetentionKind::TranscriptChunk => g::Kind::TranscriptChunk,
            RetentionKind::Envelope => g::Kind::Envelope,
            RetentionKind::Event => g::Kind::Event,
            RetentionKind::Leftover => g::Kind::Leftover,
        };
        let totals: Vec<g::Totals> = $totals
            .iter()
            .map(|t| g::Totals {
                kind: kind(t.kind),
                count: t.count,
                bytes: t.bytes,
            })
            .collect();
        let items: Vec<g::Item> = $items
            .iter()
            .map(|i| g::Item {
                kind: kind(i.kind),
                id: i.id.clone(),
                created_at: i.created_at,
                bytes: i.bytes,
                session_id: i.session_id.clone(),
            })
            .collect();
        let answer = $this.call(|store, bound| match bound {
            Bound::$variant(b) => b
                .happyx_policy_retention()
                .call_decide(store, $now, &totals, &items),
            _ => Err($this.wrong_world()),
        })?;
        (vec![true; items.len()], answer)
    }};
}

/// A recipe-book answer of either version, mapped to host types.
macro_rules! host_recipe {
    ($r:expr, $m:path) => {{
        use $m as g;
        let r = $r;
        Recipe {
            name: r.name,
            description: r.description,
            risk: match r.risk {
                g::Risk::Low => Risk::Low,
                g::Risk::Medium => Risk::Medium,
                g::Risk::High => Risk::High,
            },
            params: r
                .params
                .into_iter()
                .map(|p| Param {
                    name: p.name,
                    description: p.description,
                    required: p.required,
                })
                .collect(),
        }
    }};
}

/// A `render` answer of either version, mapped to [`Rendering`].
macro_rules! host_render {
    ($a:expr, $m:path) => {{
        use $m as g;
        match $a {
            Ok(cmd) => Rendering::Ok {
                program: cmd.program,
                args: cmd.args,
                risk: match cmd.risk {
                    g::Risk::Low => Risk::Low,
                    g::Risk::Medium => Risk::Medium,
                    g::Risk::High => Risk::High,
                },
                timeout_ms: cmd.timeout_ms,
            },
            Err(g::RenderError::UnknownRecipe(_)) => Rendering::UnknownRecipe,
            Err(g::RenderError::MissingArg(a)) => Rendering::MissingArg(a),
            Err(g::RenderError::UnknownArg(a)) => Rendering::UnknownArg(a),
            Err(g::RenderError::InvalidArg((a, reason))) => Rendering::InvalidArg(a, reason),
        }
    }};
}

/// A guest's `render` answer in host types, before validation.
enum Rendering {
    Ok {
        program: String,
        args: Vec<String>,
        risk: Risk,
        timeout_ms: Option<u64>,
    },
    UnknownRecipe,
    MissingArg(String),
    UnknownArg(String),
    InvalidArg(String, String),
}

struct Instance {
    store: Store<StoreState>,
    bound: Bound,
}

/// Call counters of one loaded plugin.
#[derive(Debug, Default)]
pub struct Stats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    pub total_us: AtomicU64,
}

/// The plugin's answer to `render` before the host maps it.
pub enum RawRender {
    Ok {
        program: String,
        args: Vec<String>,
        risk: Risk,
        timeout_ms: Option<u64>,
    },
    UnknownRecipe,
    MissingArg(String),
    UnknownArg(String),
    InvalidArg(String, String),
}

/// One loaded, checked plugin.
pub struct Plugin {
    pub plugin: PluginRef,
    pub kind: Kind,
    pub description: String,
    pub limits: Limits,
    pub loaded_at_ms: u64,
    pub stats: Stats,
    settings: Vec<(String, String)>,
    pre: Pre,
    pool: Mutex<Vec<Instance>>,
    /// The recipe catalog, read once at load (recipe plugins only).
    catalog: Vec<Recipe>,
    /// The `happyx:policy` version the component was built against.
    pub wit_version: &'static str,
    /// The redactor's prefilter, asked once at load (redactors of 0.3.0 and later that
    /// declare one).
    prefilter: Option<Prefilter>,
}

/// What a redaction of some data takes, found by the host's native search before any guest
/// call ([`Plugin::plan`]), so that the search can run on one thread and the calls on another.
#[derive(Debug)]
pub enum Plan {
    /// The prefilter finds no trigger: nothing to find, no guest call.
    Clear,
    /// A 0.4.0 redactor's windows and their groups, scanned in one `redact-windows` call
    /// (more if a finding cuts a window).
    Windows(Vec<Window>),
    /// Calls without groups: the windows of a 0.3.0 prefilter, each in a `redact` call, or
    /// the whole data.
    Calls,
}

/// What the component's exports say about it.
pub struct Exports {
    pub kind: Option<Kind>,
    /// The `happyx:policy` version of its exports, if any.
    pub version: Option<String>,
}

/// Reads the world and WIT version off a compiled component's exports.
pub fn inspect_exports(engine: &Engine, component: &Component) -> Exports {
    let ty = component.component_type();
    let mut kind = None;
    let mut version = None;
    for (name, _) in ty.exports(engine) {
        let Some(rest) = name
            .strip_prefix(WIT_PACKAGE)
            .and_then(|r| r.strip_prefix('/'))
        else {
            continue;
        };
        let (iface, ver) = match rest.split_once('@') {
            Some((i, v)) => (i, Some(v)),
            None => (rest, None),
        };
        if let Some(v) = ver {
            version = Some(validate::clean_text(v, 32));
        }
        match iface {
            "redaction" => kind = Some(Kind::Redactor),
            "retention" => kind = Some(Kind::Retention),
            "recipes" => kind = Some(Kind::Recipes),
            _ => {}
        }
    }
    Exports { kind, version }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn err_text(e: &wasmtime::Error) -> String {
    validate::clean_text(&e.root_cause().to_string(), 300)
}

impl Plugin {
    /// Links a compiled component for `kind`, creates a first instance
    /// (asking its `info` and `configure`-ing it) and, for recipe plugins,
    /// reads the catalog.
    pub fn prepare(
        kind: Kind,
        component: &Component,
        sha256: String,
        limits: Limits,
        settings: Vec<(String, String)>,
    ) -> Result<Plugin, PluginError> {
        let engine = engine::engine().map_err(|reason| PluginError::Host {
            plugin: Box::new(PluginRef {
                kind: kind.as_str().into(),
                sha256: sha256.clone(),
                ..PluginRef::default()
            }),
            reason,
        })?;
        let mut plugin = PluginRef {
            kind: kind.as_str().into(),
            name: String::new(),
            version: String::new(),
            sha256,
        };

        let exports = inspect_exports(engine, component);
        let wit_version = match exports.version.as_deref() {
            None => WIT_VERSION,
            Some(v) if v == WIT_VERSION => WIT_VERSION,
            Some(v) if v == WIT_VERSION_V0_3 => WIT_VERSION_V0_3,
            Some(v) if v == WIT_VERSION_V0_2 => WIT_VERSION_V0_2,
            Some(v) if v == WIT_VERSION_V0_1 => WIT_VERSION_V0_1,
            Some(found) => {
                return Err(PluginError::WitVersion {
                    plugin: Box::new(plugin),
                    found: found.to_string(),
                    host: WIT_VERSION.into(),
                });
            }
        };
        let legacy = wit_version == WIT_VERSION_V0_1;
        match exports.kind {
            Some(k) if k == kind => {}
            other => {
                return Err(PluginError::WrongWorld {
                    plugin: Box::new(plugin),
                    expected: kind.world().into(),
                    found: other.map_or_else(
                        || "no happyx:policy world".to_string(),
                        |k| format!("world {}", k.world()),
                    ),
                });
            }
        }

        let mut linker: Linker<StoreState> = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| PluginError::Host {
            plugin: Box::new(plugin.clone()),
            reason: err_text(&e),
        })?;
        let instance_pre = linker.instantiate_pre(component).map_err(|e| {
            let ty = component.component_type();
            let import = ty
                .imports(engine)
                .map(|(name, _)| name.to_string())
                .find(|name| !name.starts_with("wasi:"))
                .unwrap_or_else(|| err_text(&e));
            PluginError::UnknownImport {
                plugin: Box::new(plugin.clone()),
                import: validate::clean_text(&import, 200),
            }
        })?;
        let invalid = |e: wasmtime::Error, plugin: &PluginRef| PluginError::Invalid {
            plugin: Box::new(plugin.clone()),
            reason: err_text(&e),
        };
        macro_rules! pre {
            ($variant:ident, $ty:ty) => {
                Pre::$variant(<$ty>::new(instance_pre).map_err(|e| invalid(e, &plugin))?)
            };
        }
        let pre = match (kind, wit_version) {
            (Kind::Redactor, WIT_VERSION_V0_1) => pre!(RedactorV01, rd1::RedactorPre<StoreState>),
            (Kind::Retention, WIT_VERSION_V0_1) => {
                pre!(RetentionV01, rt1::RetentionPolicyPre<StoreState>)
            }
            (Kind::Recipes, WIT_VERSION_V0_1) => pre!(RecipesV01, rb1::RecipeBookPre<StoreState>),
            (Kind::Redactor, WIT_VERSION_V0_2) => pre!(RedactorV02, rd2::RedactorPre<StoreState>),
            (Kind::Retention, WIT_VERSION_V0_2) => {
                pre!(RetentionV02, rt2::RetentionPolicyPre<StoreState>)
            }
            (Kind::Recipes, WIT_VERSION_V0_2) => pre!(RecipesV02, rb2::RecipeBookPre<StoreState>),
            (Kind::Redactor, WIT_VERSION_V0_3) => pre!(RedactorV03, rd3::RedactorPre<StoreState>),
            (Kind::Retention, WIT_VERSION_V0_3) => {
                pre!(RetentionV03, rt3::RetentionPolicyPre<StoreState>)
            }
            (Kind::Recipes, WIT_VERSION_V0_3) => pre!(RecipesV03, rb3::RecipeBookPre<StoreState>),
            (Kind::Redactor, _) => pre!(Redactor, rd::RedactorPre<StoreState>),
            (Kind::Retention, _) => pre!(Retention, rt::RetentionPolicyPre<StoreState>),
            (Kind::Recipes, _) => pre!(Recipes, rb::RecipeBookPre<StoreState>),
        };

        let mut this = Plugin {
            plugin: plugin.clone(),
            kind,
            description: String::new(),
            limits,
            loaded_at_ms: now_ms(),
            stats: Stats::default(),
            settings,
            pre,
            pool: Mutex::new(Vec::new()),
            catalog: Vec::new(),
            wit_version,
            prefilter: None,
        };

        // The first instance tells us who the plugin is, before its settings are applied, so
        // that a plugin refusing its settings is named in the error.
        let (mut store, bound) = this.instantiate()?;
        let info = each_bound!(&bound, b => b
            .happyx_policy_config()
            .call_info(&mut store)
            .map(|i| (i.name, i.version, i.description)))
        .map_err(|e| this.classify(&e, &store))?;
        let (name, version, description) = info;
        if !validate::is_name(&name) || version.is_empty() || version.len() > validate::MAX_NAME {
            return Err(PluginError::BadResult {
                plugin: Box::new(this.plugin.clone()),
                reason: "info() returned an invalid name or version".into(),
            });
        }
        plugin.name = name;
        plugin.version = validate::clean_text(&version, validate::MAX_NAME);
        this.plugin = plugin;
        this.description = validate::clean_text(&description, validate::MAX_DESCRIPTION);
        if legacy {
            tracing::warn!(
                plugin = %this.plugin,
                wit = %format!("{WIT_PACKAGE}@{WIT_VERSION_V0_1}"),
                "plugin built against {WIT_PACKAGE}@{WIT_VERSION_V0_1}, loaded through the 0.1.0 adapter (host speaks {WIT_VERSION}; retention items of kinds 0.1.0 cannot name are kept)"
            );
        }
        if wit_version == WIT_VERSION_V0_2 {
            tracing::info!(
                plugin = %this.plugin,
                "plugin built against {WIT_PACKAGE}@{WIT_VERSION_V0_2}: no redaction prefilter, chunks are scanned whole"
            );
        }
        if wit_version == WIT_VERSION_V0_3 && kind == Kind::Redactor {
            tracing::info!(
                plugin = %this.plugin,
                "plugin built against {WIT_PACKAGE}@{WIT_VERSION_V0_3}: no trigger groups, each prefilter window is scanned with every rule in a call of its own"
            );
        }
        let mut first = this.configure(store, bound)?;
        this.prefilter = this.read_prefilter(&mut first)?;
        if let Ok(mut pool) = this.pool.lock() {
            pool.push(first);
        }
        if kind == Kind::Recipes {
            this.catalog = this.catalog_raw()?;
        }
        Ok(this)
    }

    /// Asks a configured redactor of 0.3.0 or later for its prefilter and compiles it; a
    /// prefilter outside the limits refuses the plugin (`plugin_invalid`). Other worlds and
    /// versions have none. A 0.3.0 trigger has no group: all are group 0.
    fn read_prefilter(&self, inst: &mut Instance) -> Result<Option<Prefilter>, PluginError> {
        // The same record in each version's generated types; `$group` reads the trigger's
        // group (evaluated first, before the trigger's fields move).
        macro_rules! declared {
            ($b:expr, |$t:ident| $group:expr) => {
                $b.happyx_policy_redaction()
                    .call_prefilter(&mut inst.store)
                    .map(|spec| {
                        spec.map(|spec| {
                            spec.triggers
                                .into_iter()
                                .map(|$t| TriggerSpec {
                                    group: $group,
                                    literal: $t.literal,
                                    ascii_case_insensitive: $t.ascii_case_insensitive,
                                    before: $t.before,
                                    after: $t.after,
                                })
                                .collect::<Vec<_>>()
                        })
                    })
            };
        }
        let declared = match &inst.bound {
            Bound::Redactor(b) => declared!(b, |t| t.group),
            Bound::RedactorV03(b) => declared!(b, |t| 0),
            _ => return Ok(None),
        }
        .map_err(|e| self.classify(&e, &inst.store))?;
        let Some(specs) = declared else {
            return Ok(None);
        };
        let prefilter = Prefilter::build(&specs).map_err(|reason| PluginError::Invalid {
            plugin: Box::new(self.plugin.clone()),
            reason,
        })?;
        tracing::debug!(plugin = %self.plugin, triggers = specs.len(), "redaction prefilter loaded");
        Ok(Some(prefilter))
    }

    /// Whether `redact` goes through a prefilter.
    pub fn has_prefilter(&self) -> bool {
        self.prefilter.is_some()
    }

    /// A configured instance: instantiated, then given its settings.
    fn new_instance(&self) -> Result<Instance, PluginError> {
        let (store, bound) = self.instantiate()?;
        self.configure(store, bound)
    }

    /// A fresh instance under the memory limit and deadline, not yet configured.
    fn instantiate(&self) -> Result<(Store<StoreState>, Bound), PluginError> {
        let engine = engine::engine().map_err(|reason| PluginError::Host {
            plugin: Box::new(self.plugin.clone()),
            reason,
        })?;
        let mut store = new_store(engine, self.limits.memory_bytes);
        store.set_epoch_deadline(engine::ticks_for(self.limits.timeout_ms));
        let bound = instantiate_pre!(
            &self.pre,
            &mut store,
            Redactor,
            Retention,
            Recipes,
            RedactorV03,
            RetentionV03,
            RecipesV03,
            RedactorV02,
            RetentionV02,
            RecipesV02,
            RedactorV01,
            RetentionV01,
            RecipesV01,
        );
        match bound {
            Ok(b) => Ok((store, b)),
            Err(e) => Err(self.classify(&e, &store)),
        }
    }

    /// Gives an instance the operator's settings (`configure`); a refusal names the plugin.
    fn configure(
        &self,
        mut store: Store<StoreState>,
        bound: Bound,
    ) -> Result<Instance, PluginError> {
        let configured = each_bound!(&bound, b => b
            .happyx_policy_config()
            .call_configure(&mut store, &self.settings));
        match configured {
            Ok(Ok(())) => Ok(Instance { store, bound }),
            Ok(Err(reason)) => Err(PluginError::Config {
                plugin: Box::new(self.plugin.clone()),
                reason: validate::clean_text(&reason, 300),
            }),
            Err(e) => Err(self.classify(&e, &store)),
        }
    }

    /// Maps a wasmtime error from a guest call to a typed error.
    fn classify(&self, e: &wasmtime::Error, store: &Store<StoreState>) -> PluginError {
        if store.data().limiter.exceeded {
            return PluginError::Memory {
                plugin: Box::new(self.plugin.clone()),
                limit_bytes: self.limits.memory_bytes,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginError::Timeout {
                plugin: Box::new(self.plugin.clone()),
                timeout_ms: self.limits.timeout_ms,
            },
            Some(_) => PluginError::Trap {
                plugin: Box::new(self.plugin.clone()),
            },
            None => {
                tracing::debug!(plugin = %self.plugin, error = %err_text(e), "guest call failed");
                PluginError::Trap {
                    plugin: Box::new(self.plugin.clone()),
                }
            }
        }
    }

    /// Runs `f` on a warm (or fresh) instance under the deadline and memory
    /// limit. The instance goes back to the pool only if the call succeeded.
    fn call<R>(
        &self,
        f: impl FnOnce(&mut Store<StoreState>, &Bound) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let start = Instant::now();
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let result = match pooled.map_or_else(|| self.new_instance(), Ok) {
            Ok(mut inst) => {
                inst.store.data_mut().limiter.exceeded = false;
                inst.store
                    .set_epoch_deadline(engine::ticks_for(self.limits.timeout_ms));
                let r = f(&mut inst.store, &inst.bound);
                let (out, err) = inst.store.data_mut().take_output_counts();
                if out > 0 || err > 0 {
                    // Counts only: guest output may echo secrets it was given.
                    tracing::debug!(plugin = %self.plugin, stdout_bytes = out, stderr_bytes = err, "plugin wrote output (discarded)");
                }
                match r {
                    Ok(v) => {
                        if !inst.store.data().output_nearly_full()
                            && let Ok(mut pool) = self.pool.lock()
                            && pool.len() < POOL_IDLE
                        {
                            pool.push(inst);
                        }
                        Ok(v)
                    }
                    Err(e) => Err(self.classify(&e, &inst.store)),
                }
            }
            Err(e) => Err(e),
        };
        let us = start.elapsed().as_micros() as u64;
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.total_us.fetch_add(us, Ordering::Relaxed);
        if let Err(e) = &result {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            // The caller logs it with what the call was for (run, terminal, approval).
            tracing::debug!(plugin = %self.plugin, code = e.code(), "plugin call failed");
        }
        result
    }

    /// Creates instances until `n` are idle in the pool (best effort).
    pub fn prewarm(&self, n: usize) {
        for _ in 0..n.min(POOL_IDLE) {
            let idle = self.pool.lock().map(|p| p.len()).unwrap_or(POOL_IDLE);
            if idle >= n {
                break;
            }
            match self.new_instance() {
                Ok(inst) => {
                    if let Ok(mut pool) = self.pool.lock() {
                        pool.push(inst);
                    }
                }
                Err(_) => break,
            }
        }
    }

    /// Instantiates a fresh instance without configuring it and drops it
    /// (benchmarks of instantiation cost).
    pub fn instantiate_only(&self) -> Result<(), PluginError> {
        self.instantiate().map(drop)
    }

    /// Drops all idle instances.
    pub fn drain_pool(&self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.clear();
        }
    }

    fn wrong_world(&self) -> wasmtime::Error {
        wasmtime::format_err!("plugin {} called through the wrong world", self.plugin)
    }

    fn bad(&self, reason: impl Into<String>) -> PluginError {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        PluginError::BadResult {
            plugin: Box::new(self.plugin.clone()),
            reason: reason.into(),
        }
    }

    /// The native part of a redaction of `data`, done before any guest call (see [`Plan`]).
    pub fn plan(&self, data: &[u8]) -> Plan {
        match &self.prefilter {
            Some(prefilter) if matches!(self.pre, Pre::Redactor(_)) => {
                let windows = prefilter.grouped_windows(data);
                if windows.is_empty() {
                    Plan::Clear
                } else {
                    Plan::Windows(windows)
                }
            }
            Some(prefilter) if !prefilter.occurs_in(data) => Plan::Clear,
            _ => Plan::Calls,
        }
    }

    /// [`Plugin::redact`] by a plan this plugin made for `data` ([`Plugin::plan`]).
    pub fn redact_planned(
        &self,
        source: &str,
        data: &[u8],
        plan: Plan,
    ) -> Result<Vec<Finding>, PluginError> {
        match plan {
            Plan::Clear => Ok(Vec::new()),
            Plan::Windows(windows) => pf::scan_grouped_from(data, windows, |windows| {
                self.redact_windows(source, data, windows)
            }),
            Plan::Calls => match &self.prefilter {
                Some(prefilter) => prefilter.scan(data, |window| self.redact_whole(source, window)),
                None => self.redact_whole(source, data),
            },
        }
    }

    /// Redaction of `data`, validated: through the prefilter when the plugin declared one
    /// (the guest sees only windows around trigger occurrences, none when there is none):
    /// all of them in one `redact-windows` call for a 0.4.0 redactor, one `redact` call per
    /// window for a 0.3.0 one; else `redact` on the whole of `data`.
    pub fn redact(&self, source: &str, data: &[u8]) -> Result<Vec<Finding>, PluginError> {
        self.redact_planned(source, data, self.plan(data))
    }

    /// `redaction.redact-windows` on a 0.4.0 redactor, validated: findings in data offsets,
    /// each inside one of `windows`.
    fn redact_windows(
        &self,
        source: &str,
        data: &[u8],
        windows: &mut [Window],
    ) -> Result<Vec<Finding>, PluginError> {
        use rd::exports::happyx::policy::redaction as g;
        // The groups are lent to the call, not copied, and given back after it: a window cut
        // by a finding is scanned again with them.
        let sent: Vec<g::Window> = windows
            .iter_mut()
            .map(|w| g::Window {
                start: w.range.start as u64,
                end: w.range.end as u64,
                groups: std::mem::take(&mut w.groups),
            })
            .collect();
        let answer = self.call(|store, bound| match bound {
            Bound::Redactor(b) => b
                .happyx_policy_redaction()
                .call_redact_windows(store, source, data, &sent)
                .map(|r| r.map(|v| v.into_iter().map(|f| (f.rule, f.start, f.end)))),
            _ => Err(self.wrong_world()),
        });
        for (w, s) in windows.iter_mut().zip(sent) {
            w.groups = s.groups;
        }
        let raw = answer?.map_err(|_| PluginError::Failed {
            plugin: Box::new(self.plugin.clone()),
        })?;
        let found = validate::findings(raw, data.len()).map_err(|r| self.bad(r))?;
        if !pf::inside(&found, windows) {
            return Err(self.bad("a finding lies outside the windows it was asked to scan"));
        }
        Ok(found)
    }

    /// `redaction.redact` on the whole of `data`, validated, whatever the prefilter.
    pub fn redact_whole(&self, source: &str, data: &[u8]) -> Result<Vec<Finding>, PluginError> {
        let answer = self.call(|store, bound| {
            call_redact!(
                bound,
                store,
                source,
                data,
                self.wrong_world(),
                Redactor,
                RedactorV03,
                RedactorV02,
                RedactorV01,
            )
        })?;
        let raw: Vec<(String, u64, u64)> = answer.map_err(|_| PluginError::Failed {
            plugin: Box::new(self.plugin.clone()),
        })?;
        validate::findings(raw, data.len()).map_err(|r| self.bad(r))
    }

    /// `retention.decide`, validated (one answer per item).
    ///
    /// A 0.1.0 component sees kinds as strings, and only the items and totals of kinds it
    /// can name ([`RetentionKind::known_to_v0_1`]); every other item is kept (`false`).
    pub fn decide(
        &self,
        now: u64,
        totals: &[Totals],
        items: &[Item],
    ) -> Result<Vec<bool>, PluginError> {
        let (sent, prune) = if matches!(self.pre, Pre::Retention(_)) {
            decide_enum!(self, rt, Retention, now, totals, items)
        } else if matches!(self.pre, Pre::RetentionV03(_)) {
            decide_enum!(self, rt3, RetentionV03, now, totals, items)
        } else if matches!(self.pre, Pre::RetentionV02(_)) {
            decide_enum!(self, rt2, RetentionV02, now, totals, items)
        } else {
            use rt1::exports::happyx::policy::retention as g;
            let totals: Vec<g::Totals> = totals
                .iter()
                .filter(|t| t.kind.known_to_v0_1())
                .map(|t| g::Totals {
                    kind: t.kind.as_str().to_string(),
                    count: t.count,
                    bytes: t.bytes,
                })
                .collect();
            let sent: Vec<bool> = items.iter().map(|i| i.kind.known_to_v0_1()).collect();
            let items: Vec<g::Item> = items
                .iter()
                .filter(|i| i.kind.known_to_v0_1())
                .map(|i| g::Item {
                    kind: i.kind.as_str().to_string(),
                    id: i.id.clone(),
                    created_at: i.created_at,
                    bytes: i.bytes,
                    session_id: i.session_id.clone(),
                })
                .collect();
            let answer = if items.is_empty() && !sent.is_empty() {
                Ok(Vec::new())
            } else {
                self.call(|store, bound| match bound {
                    Bound::RetentionV01(b) => b
                        .happyx_policy_retention()
                        .call_decide(store, now, &totals, &items),
                    _ => Err(self.wrong_world()),
                })?
            };
            (sent, answer)
        };
        let prune = prune.map_err(|_| PluginError::Failed {
            plugin: Box::new(self.plugin.clone()),
        })?;
        let want = sent.iter().filter(|s| **s).count();
        if prune.len() != want {
            return Err(self.bad(format!("{} answers for {want} items", prune.len())));
        }
        let mut answers = prune.into_iter();
        Ok(sent
            .into_iter()
            .map(|s| s && answers.next().unwrap_or(false))
            .collect())
    }

    /// The catalog read at load.
    pub fn catalog(&self) -> &[Recipe] {
        &self.catalog
    }

    fn catalog_raw(&self) -> Result<Vec<Recipe>, PluginError> {
        let recipes: Vec<Recipe> = self.call(|store, bound| match bound {
            Bound::Recipes(b) => b.happyx_policy_recipes().call_catalog(store).map(|v| {
                v.into_iter()
                    .map(|r| host_recipe!(r, rb::exports::happyx::policy::recipes))
                    .collect()
            }),
            Bound::RecipesV03(b) => b.happyx_policy_recipes().call_catalog(store).map(|v| {
                v.into_iter()
                    .map(|r| host_recipe!(r, rb3::exports::happyx::policy::recipes))
                    .collect()
            }),
            Bound::RecipesV02(b) => b.happyx_policy_recipes().call_catalog(store).map(|v| {
                v.into_iter()
                    .map(|r| host_recipe!(r, rb2::exports::happyx::policy::recipes))
                    .collect()
            }),
            Bound::RecipesV01(b) => b.happyx_policy_recipes().call_catalog(store).map(|v| {
                v.into_iter()
                    .map(|r| host_recipe!(r, rb1::exports::happyx::policy::recipes))
                    .collect()
            }),
            _ => Err(self.wrong_world()),
        })?;
        validate::catalog(&recipes).map_err(|r| self.bad(r))?;
        Ok(recipes)
    }

    /// `recipes.render`, with the command validated (the name is not checked
    /// against the catalog here).
    pub fn render_raw(
        &self,
        name: &str,
        args: &[(String, String)],
    ) -> Result<RawRender, PluginError> {
        let answer = self.call(|store, bound| match bound {
            Bound::Recipes(b) => b
                .happyx_policy_recipes()
                .call_render(store, name, args)
                .map(|a| host_render!(a, rb::exports::happyx::policy::recipes)),
            Bound::RecipesV03(b) => b
                .happyx_policy_recipes()
                .call_render(store, name, args)
                .map(|a| host_render!(a, rb3::exports::happyx::policy::recipes)),
            Bound::RecipesV02(b) => b
                .happyx_policy_recipes()
                .call_render(store, name, args)
                .map(|a| host_render!(a, rb2::exports::happyx::policy::recipes)),
            Bound::RecipesV01(b) => b
                .happyx_policy_recipes()
                .call_render(store, name, args)
                .map(|a| host_render!(a, rb1::exports::happyx::policy::recipes)),
            _ => Err(self.wrong_world()),
        })?;
        let text = |s: &str| validate::clean_text(s, 200);
        Ok(match answer {
            Rendering::Ok {
                program,
                args,
                risk,
                timeout_ms,
            } => {
                validate::command(&program, &args, timeout_ms).map_err(|r| self.bad(r))?;
                RawRender::Ok {
                    program,
                    args,
                    risk,
                    timeout_ms,
                }
            }
            Rendering::UnknownRecipe => RawRender::UnknownRecipe,
            Rendering::MissingArg(a) => RawRender::MissingArg(text(&a)),
            Rendering::UnknownArg(a) => RawRender::UnknownArg(text(&a)),
            Rendering::InvalidArg(a, reason) => RawRender::InvalidArg(text(&a), text(&reason)),
        })
    }
}
