//! Plugin reloads, whatever asks for one — `POST /v1/plugins/reload`, `SIGHUP`, or the file
//! watcher (`plugins.watch = true`): the `[plugins]` section of the configuration is read
//! again (the config file, then `HAPPYX_*` variables, as at start), so a path, sha256 pin,
//! settings or limits added after start take effect without a restart; each changed plugin
//! goes through the contract checks of its world; a refused candidate leaves the last good
//! version serving. Every reload appends one `plugins.reloaded` event naming its trigger.
//!
//! On a shared database a reload is announced to the other hosts, which reload from their
//! own configuration (trigger `peer`) and record the plugins they then serve on their `hosts`
//! row (`crate::cluster`).
//!
//! The watcher polls, once a second, the configured plugin files and the config file itself
//! (modification time and length).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, ConfigError, Overrides};
use crate::plugins::{PluginError, PluginHost, PluginStatus, file_stamp};
use crate::store::{NewEvent, Store, StoreError};

/// How often the watcher looks at the files.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Why a reload was refused (the last good plugins keep serving).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the configuration cannot be read again: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}; the previous version keeps serving")]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReloadError {
    /// Stable, snake_case error code.
    pub fn code(&self) -> &'static str {
        match self {
            ReloadError::Config(_) => "config_invalid",
            ReloadError::Plugin(e) => e.code(),
            ReloadError::Store(e) => e.code(),
        }
    }
}

/// Reloads the plugins of one host from its configuration; cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    store: Store,
    plugins: PluginHost,
    source: Option<PathBuf>,
}

impl Reloader {
    pub fn new(store: Store, plugins: PluginHost, source: Option<PathBuf>) -> Self {
        Self {
            store,
            plugins,
            source,
        }
    }

    /// Reads `[plugins]` again and reloads; records the outcome as a `plugins.reloaded` event
    /// by `actor`, naming `trigger` (`api`, `sighup`, `watch`).
    pub async fn reload(
        &self,
        actor: &str,
        trigger: &str,
    ) -> Result<Vec<PluginStatus>, ReloadError> {
        let outcome = match Config::load(self.source.as_deref(), &Overrides::default()) {
            Ok(cfg) => self
                .plugins
                .reload_with(Some(cfg.plugins))
                .await
                .map_err(ReloadError::from),
            Err(e) => Err(ReloadError::from(e)),
        };
        let statuses = self.plugins.status();
        let data = serde_json::json!({
            "ok": outcome.is_ok(),
            "trigger": trigger,
            "code": outcome.as_ref().err().map(ReloadError::code),
            "plugins": statuses.iter().map(|p| serde_json::json!({"kind": p.kind, "sha256": p.sha256})).collect::<Vec<_>>(),
        });
        let event = NewEvent::new("plugins.reloaded", actor, "plugins", data);
        match self.store.host_id() {
            // Recorded on this host's row too; a reload of its own (not one that follows
            // another host's) is announced to the other hosts.
            Some(host) => {
                self.store
                    .record_plugin_reload(
                        host,
                        &plugin_hashes(&statuses),
                        &event,
                        trigger != "peer",
                    )
                    .await?
            }
            None => {
                self.store.append_event(&event).await?;
            }
        }
        match &outcome {
            Ok(_) => tracing::info!(trigger, "plugins reloaded"),
            Err(e) => tracing::warn!(trigger, code = e.code(), error = %e, "plugin reload refused"),
        }
        outcome
    }

    /// Reloads on SIGHUP, for as long as the host runs.
    pub fn spawn_sighup(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; reload plugins through the API");
                return;
            };
            while hup.recv().await.is_some() {
                let _ = this.reload("host", "sighup").await;
            }
        });
    }

    /// Polls the plugin files and the config file while `plugins.watch` is on (as configured
    /// now: a reload may turn it on or off) and reloads on change.
    pub fn spawn_watcher(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let stamps = |r: &Reloader| {
                let mut s = r.plugins.file_stamps();
                if let Some(src) = &r.source {
                    s.push((src.clone(), file_stamp(src)));
                }
                s
            };
            let mut seen = stamps(&this);
            loop {
                tokio::time::sleep(WATCH_INTERVAL).await;
                let now = stamps(&this);
                if now != seen {
                    seen = now;
                    if this.plugins.config().watch {
                        let _ = this.reload("host", "watch").await;
                        seen = stamps(&this);
                    }
                }
            }
        });
    }
}

/// Each loaded plugin's SHA-256 by kind, as `hosts.plugins` and `deployments.plugin_hashes`
/// record them.
pub fn plugin_hashes(statuses: &[PluginStatus]) -> serde_json::Value {
    serde_json::json!(
        statuses
            .iter()
            .map(|p| (p.kind.clone(), p.sha256.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    )
}
