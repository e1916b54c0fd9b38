//! Host configuration: a TOML file, then `HAPPYX_*` environment overrides, then
//! command-line flags, in that order of precedence. Every key is documented in
//! `examples/happyx.toml`; unknown or mistyped keys are refused with the key named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plugins::PluginsConfig;
pub use happyx_store::config::{StorageConfig, Synchronous};

/// Environment variables with the `HAPPYX_` prefix that are not configuration keys: the log
/// filter, the config file, and the client side's URL and token (operator commands and API
/// clients), which are never server configuration.
const NON_CONFIG_ENV: &[&str] = &[
    "HAPPYX_LOG",
    "HAPPYX_CONFIG",
    "HAPPYX_URL",
    "HAPPYX_TOKEN",
    "HAPPYX_TOKEN_FILE",
];

/// A configuration problem, named precisely enough to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Read { .. } => "config_unreadable",
            Self::Invalid(_) => "config_invalid",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the database, the lock file and the plugin compile cache live.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    pub log: LogConfig,
    pub tls: TlsConfig,
    pub api: ApiConfig,
    pub storage: StorageConfig,
    pub runs: RunsConfig,
    pub approvals: ApprovalsConfig,
    pub public: PublicConfig,
    pub retention: RetentionConfig,
    pub audit: AuditConfig,
    pub pty: PtyConfig,
    pub envelopes: EnvelopesConfig,
    pub devices: DevicesConfig,
    pub plugins: PluginsConfig,
    pub cluster: ClusterConfig,
    /// The file this configuration was read from (re-read by plugin reloads).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./happyx-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            log: LogConfig::default(),
            tls: TlsConfig::default(),
            api: ApiConfig::default(),
            storage: StorageConfig::default(),
            runs: RunsConfig::default(),
            approvals: ApprovalsConfig::default(),
            public: PublicConfig::default(),
            retention: RetentionConfig::default(),
            audit: AuditConfig::default(),
            pty: PtyConfig::default(),
            envelopes: EnvelopesConfig::default(),
            devices: DevicesConfig::default(),
            plugins: PluginsConfig::default(),
            cluster: ClusterConfig::default(),
            source: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `happyx=debug,info`. `HAPPYX_LOG` overrides it.
    pub filter: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain. TLS is on when both `cert` and `key` are set.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish after SIGINT/SIGTERM.
    pub shutdown_grace_ms: u64,
    /// A connection that has not sent a complete request head within this time (new, or idle
    /// between keep-alive requests) is closed.
    pub header_read_timeout_ms: u64,
    /// Connections held at once; further ones are closed at accept. Lowered at start to fit
    /// the open-file limit.
    pub max_connections: usize,
    /// Connections one peer address may hold at once (raise it behind a reverse proxy).
    pub max_connections_per_address: usize,
    /// Requests per second one address may make to the unauthenticated routes (`/public/*`,
    /// console sign-in); beyond it (after a burst of twice as many) `429 rate_limited`.
    pub public_requests_per_second: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            shutdown_grace_ms: 10_000,
            header_read_timeout_ms: 10_000,
            max_connections: 4096,
            max_connections_per_address: 256,
            public_requests_per_second: 50,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunsConfig {
    /// How identities' children are kept apart when the host runs as root: `per-identity`
    /// (each identity its own uid from `uid_range` and its own workspace directory) or
    /// `shared` (every child runs as `run_as`).
    pub isolation: Isolation,
    /// `[first, last]` uids (and gids) given to identities' children, one per identity, with
    /// `isolation = "per-identity"`. No existing user may own them.
    pub uid_range: [u32; 2],
    /// Unprivileged user children run as with `isolation = "shared"`.
    pub run_as: String,
    /// Workspace roots children may run in; the first is the default.
    pub workspaces: Vec<PathBuf>,
    /// Timeout for a run whose recipe names none.
    pub default_timeout_ms: u64,
    /// Output beyond this many bytes per run is not kept (the run is marked truncated).
    pub max_output_bytes: u64,
    /// Runs executing at once; further runs wait in `queued`.
    pub max_concurrent: usize,
    /// Minimum risk per recipe, e.g. `{ echo = "medium" }`.
    pub risk_floor: BTreeMap<String, String>,
}

impl RunsConfig {
    /// The operator's minimum risk for `recipe` (`low` when none is set).
    pub fn risk_floor(&self, recipe: &str) -> crate::plugins::Risk {
        use crate::plugins::Risk;
        match self.risk_floor.get(recipe).map(String::as_str) {
            Some("high") => Risk::High,
            Some("medium") => Risk::Medium,
            _ => Risk::Low,
        }
    }
}

impl Default for RunsConfig {
    fn default() -> Self {
        Self {
            isolation: Isolation::PerIdentity,
            uid_range: [3_000_000, 3_099_999],
            run_as: "nobody".into(),
            workspaces: vec![PathBuf::from("./happyx-workspace")],
            default_timeout_ms: 60_000,
            max_output_bytes: 16 * 1024 * 1024,
            max_concurrent: 8,
            risk_floor: BTreeMap::new(),
        }
    }
}

/// How identities' children are kept apart (see [`crate::children`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    PerIdentity,
    Shared,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// How long an approval (pending or approved) stays usable.
    pub ttl_ms: u64,
    /// Pending approvals one identity may have at once.
    pub max_pending_per_requester: u32,
    /// Let the identity that requested an approval decide it (one-person installs).
    pub allow_self_approval: bool,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            ttl_ms: 60 * 60 * 1000,
            max_pending_per_requester: 16,
            allow_self_approval: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublicConfig {
    /// Serve `/public/runs`.
    pub runs: bool,
    /// Serve `/public/sessions/{id}`.
    pub sessions: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How often `serve` runs the pruner; 0 disables the schedule.
    pub interval_ms: u64,
    /// Items per plugin call and per delete transaction.
    pub batch: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval_ms: 60 * 60 * 1000,
            batch: 500,
        }
    }
}

/// Several hosts on one PostgreSQL database (`storage.url`); see docs/scale-out.md. A single
/// host needs none of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Where the other hosts reach this one (`http://10.0.0.5:7878`): they forward to it what
    /// only it can do (its terminals' resize, interrupt, kill and live attach). Default: the
    /// address it listens on, which is right only when that address is reachable from the other
    /// hosts (not `0.0.0.0`, not loopback across machines). At most [`MAX_ADVERTISE_URL`] bytes.
    pub advertise_url: Option<String>,
    /// How often a host looks for hosts that stopped serving, to mark their unfinished runs
    /// `lost`. [`MIN_SWEEP_INTERVAL_MS`] ..= [`MAX_SWEEP_INTERVAL_MS`].
    pub sweep_interval_ms: u64,
}

/// Longest `cluster.advertise_url`, in bytes.
pub const MAX_ADVERTISE_URL: usize = 2048;
pub const MIN_SWEEP_INTERVAL_MS: u64 = 100;
pub const MAX_SWEEP_INTERVAL_MS: u64 = 10 * 60 * 1000;

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            advertise_url: None,
            sweep_interval_ms: 5_000,
        }
    }
}

impl ClusterConfig {
    /// Checks `advertise_url`: `http` or `https`, a host, no user, query or fragment, within
    /// [`MAX_ADVERTISE_URL`]. Returns it without a trailing `/`.
    pub fn checked_advertise_url(&self) -> Result<Option<String>, String> {
        let Some(raw) = &self.advertise_url else {
            return Ok(None);
        };
        if raw.len() > MAX_ADVERTISE_URL {
            return Err(format!(
                "cluster.advertise_url is longer than {MAX_ADVERTISE_URL} bytes"
            ));
        }
        let u = url::Url::parse(raw)
            .map_err(|e| format!("cluster.advertise_url is not a URL ({e})"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err("cluster.advertise_url must start with http:// or https://".into());
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err("cluster.advertise_url must name a host".into());
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err("cluster.advertise_url must not hold credentials".into());
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err("cluster.advertise_url must not have a query or fragment".into());
        }
        Ok(Some(u.as_str().trim_end_matches('/').to_string()))
    }
}

/// Signed checkpoints of the event chain (see `happyx audit verify --checkpoint`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How often `serve` signs a checkpoint of the chain's head when it moved (one is also
    /// taken at start). [`MIN_CHECKPOINT_INTERVAL_MS`] ..= [`MAX_CHECKPOINT_INTERVAL_MS`].
    pub checkpoint_interval_ms: u64,
    /// Newest checkpoints kept in the database, 1 ..= [`MAX_CHECKPOINT_KEEP`].
    pub checkpoint_keep: u32,
}

/// Shortest checkpoint interval: 100 ms.
pub const MIN_CHECKPOINT_INTERVAL_MS: u64 = 100;
/// Longest checkpoint interval: one day.
pub const MAX_CHECKPOINT_INTERVAL_MS: u64 = 24 * 60 * 60 * 1000;
/// Most checkpoints kept.
pub const MAX_CHECKPOINT_KEEP: u32 = 1_000_000;

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval_ms: 60_000,
            checkpoint_keep: 10_000,
        }
    }
}

/// Terminals.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PtyConfig {
    /// Transcript bytes stored per terminal, [`MIN_TRANSCRIPT_CAP`] ..= [`MAX_TRANSCRIPT_CAP`].
    /// Past it the terminal keeps running and live viewers keep seeing its output, but
    /// nothing more is stored; the terminal is marked `truncated` (one event).
    pub max_transcript_bytes: u64,
}

/// Smallest accepted `[pty] max_transcript_bytes`.
pub const MIN_TRANSCRIPT_CAP: u64 = 1;
/// Largest accepted `[pty] max_transcript_bytes` (1 TiB).
pub const MAX_TRANSCRIPT_CAP: u64 = 1 << 40;

impl Default for PtyConfig {
    fn default() -> Self {
        Self {
            max_transcript_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvelopesConfig {
    /// Accepted distance between an envelope's `createdAt` and the host clock.
    pub window_ms: u64,
    /// How long after a member device's revocation envelopes under a session's current epoch
    /// are still accepted; from then on they are refused `rotation_required` until a surviving
    /// member rotates. 0 to `MAX_ROTATION_GRACE_MS`.
    pub rotation_grace_ms: u64,
}

impl Default for EnvelopesConfig {
    fn default() -> Self {
        Self {
            window_ms: 300_000,
            rotation_grace_ms: crate::devices::ingest::DEFAULT_ROTATION_GRACE_MS,
        }
    }
}

/// Limits on device enrollment: token buckets per client address and for the whole host,
/// shared by code checks and enrollment attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesConfig {
    /// Attempts one client address may make at once.
    pub enroll_burst: u32,
    /// Attempts per minute one client address regains.
    pub enroll_per_minute: u32,
    /// Attempts all clients together may make at once.
    pub enroll_global_burst: u32,
    /// Attempts per minute all clients together regain.
    pub enroll_global_per_minute: u32,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        Self {
            enroll_burst: 20,
            enroll_per_minute: 30,
            enroll_global_burst: 200,
            enroll_global_per_minute: 1_200,
        }
    }
}

/// Flags that override the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
}

#[derive(Serialize)]
struct OverrideValues {
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
}

impl Config {
    /// Loads the configuration: defaults < `file` < `HAPPYX_*` environment < flags.
    ///
    /// Nested keys are reached in the environment with `__`, e.g.
    /// `HAPPYX_STORAGE__SYNCHRONOUS=normal`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            // Read it ourselves so an unreadable file is an error, not a silent default.
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            fig = fig.merge(Toml::string(&text));
        }
        let env = Env::prefixed("HAPPYX_").split("__").filter(|k| {
            !NON_CONFIG_ENV
                .iter()
                .any(|n| n[7..].eq_ignore_ascii_case(k.as_str()))
        });
        fig = fig.merge(env);
        fig = fig.merge(Serialized::defaults(OverrideValues {
            data_dir: overrides.data_dir.clone(),
            listen: overrides.listen,
        }));
        let mut cfg: Config = fig.extract().map_err(|e| {
            let source = file.map(|p| p.display().to_string());
            ConfigError::Invalid(describe(e, source.as_deref()))
        })?;
        cfg.validate()?;
        cfg.source = file.map(Path::to_path_buf);
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key must be set together".into());
        }
        if self.api.max_body_bytes < 1024 {
            return bad("api.max_body_bytes must be at least 1024".into());
        }
        if self.runs.workspaces.is_empty() {
            return bad("runs.workspaces must name at least one directory".into());
        }
        if self.runs.max_concurrent == 0 {
            return bad("runs.max_concurrent must be at least 1".into());
        }
        if self.storage.read_connections == 0 {
            return bad("storage.read_connections must be at least 1".into());
        }
        let max_grace = crate::devices::ingest::MAX_ROTATION_GRACE_MS;
        if self.envelopes.rotation_grace_ms > max_grace {
            return bad(format!(
                "envelopes.rotation_grace_ms must be between 0 and {max_grace}"
            ));
        }
        if !(MIN_TRANSCRIPT_CAP..=MAX_TRANSCRIPT_CAP).contains(&self.pty.max_transcript_bytes) {
            return bad(format!(
                "pty.max_transcript_bytes must be between {MIN_TRANSCRIPT_CAP} and {MAX_TRANSCRIPT_CAP}"
            ));
        }
        self.cluster
            .checked_advertise_url()
            .map_err(ConfigError::Invalid)?;
        if !(MIN_SWEEP_INTERVAL_MS..=MAX_SWEEP_INTERVAL_MS)
            .contains(&self.cluster.sweep_interval_ms)
        {
            return bad(format!(
                "cluster.sweep_interval_ms must be between {MIN_SWEEP_INTERVAL_MS} and {MAX_SWEEP_INTERVAL_MS}"
            ));
        }
        if self.retention.batch == 0 || self.retention.batch > 10_000 {
            return bad("retention.batch must be between 1 and 10000".into());
        }
        if !(MIN_CHECKPOINT_INTERVAL_MS..=MAX_CHECKPOINT_INTERVAL_MS)
            .contains(&self.audit.checkpoint_interval_ms)
        {
            return bad(format!(
                "audit.checkpoint_interval_ms must be between {MIN_CHECKPOINT_INTERVAL_MS} and \
                 {MAX_CHECKPOINT_INTERVAL_MS}"
            ));
        }
        if !(1..=MAX_CHECKPOINT_KEEP).contains(&self.audit.checkpoint_keep) {
            return bad(format!(
                "audit.checkpoint_keep must be between 1 and {MAX_CHECKPOINT_KEEP}"
            ));
        }
        let d = &self.devices;
        for (key, value) in [
            ("enroll_burst", d.enroll_burst),
            ("enroll_per_minute", d.enroll_per_minute),
            ("enroll_global_burst", d.enroll_global_burst),
            ("enroll_global_per_minute", d.enroll_global_per_minute),
        ] {
            if value == 0 {
                return bad(format!("devices.{key} must be at least 1"));
            }
        }
        for (recipe, risk) in &self.runs.risk_floor {
            if !matches!(risk.as_str(), "low" | "medium" | "high") {
                return bad(format!(
                    "runs.risk_floor.{recipe}: `{risk}` is not one of low, medium, high"
                ));
            }
        }
        Ok(())
    }

    /// SHA-256 over the effective configuration, recorded with each deployment.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&json))
    }
}

fn describe(err: figment::Error, file: Option<&str>) -> String {
    let mut out = Vec::new();
    for e in err {
        let key = if e.path.is_empty() {
            String::new()
        } else {
            format!(" (key `{}`)", e.path.join("."))
        };
        let from = match &e.metadata {
            Some(m) if m.name.contains("environment") => {
                " from the HAPPYX_* environment".to_string()
            }
            Some(m) if m.name.contains("TOML") => match file {
                Some(f) => format!(" in {f}"),
                None => String::new(),
            },
            _ => String::new(),
        };
        out.push(format!("{}{key}{from}", describe_kind(&e.kind)));
    }
    out.join("; ")
}

/// The error itself, without serde's nested backticks (``expected `one of `a`, `b```).
fn describe_kind(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    let one_of = |names: &[&str]| match names {
        [] => "there are none".to_string(),
        names => format!("expected one of: {}", names.join(", ")),
    };
    match kind {
        Kind::UnknownField(name, expected) => {
            format!("unknown field `{name}`; {}", one_of(expected))
        }
        Kind::UnknownVariant(name, expected) => {
            format!("unknown value `{name}`; {}", one_of(expected))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let path = dir.path().join("happyx.toml");
        std::fs::write(&path, text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Config::load(Some(&path), &Overrides::default())
    }

    #[test]
    fn unknown_keys_are_named_once_without_nested_backticks() {
        let Err(e) = load_str("[plugins.nope]\n") else {
            panic!("an unknown plugin section must be refused");
        };
        let msg = e.to_string();
        assert!(!msg.contains("``") && !msg.contains("`one of"), "{msg}");
        assert!(msg.contains("unknown field `nope`"), "{msg}");
        assert!(
            msg.contains("expected one of: redactor, retention, recipes"),
            "{msg}"
        );
        assert_eq!(msg.matches("nope").count(), 2, "field and key path: {msg}");
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7878");
        assert_eq!(c.data_dir, PathBuf::from("./happyx-data"));
        assert_eq!(c.storage.synchronous, Synchronous::Full);
    }

    #[test]
    fn transcript_cap_is_validated_at_its_edges() {
        assert_eq!(Config::default().pty.max_transcript_bytes, 64 * 1024 * 1024);
        for ok in [MIN_TRANSCRIPT_CAP, MAX_TRANSCRIPT_CAP] {
            let c = load_str(&format!("[pty]\nmax_transcript_bytes = {ok}\n")).expect("accepted");
            assert_eq!(c.pty.max_transcript_bytes, ok);
        }
        for bad in [0, MAX_TRANSCRIPT_CAP + 1] {
            let err = load_str(&format!("[pty]\nmax_transcript_bytes = {bad}\n")).unwrap_err();
            assert!(
                err.to_string().contains("pty.max_transcript_bytes"),
                "{err}"
            );
        }
    }

    #[test]
    fn cluster_settings_are_validated_at_their_edges() {
        let c = load_str("[cluster]\nadvertise_url = \"http://10.0.0.5:7878/\"\n").expect("ok");
        assert_eq!(
            c.cluster.checked_advertise_url(),
            Ok(Some("http://10.0.0.5:7878".to_string()))
        );
        let longest = format!("https://h.example/{}", "a".repeat(MAX_ADVERTISE_URL - 18));
        assert_eq!(longest.len(), MAX_ADVERTISE_URL);
        assert!(load_str(&format!("[cluster]\nadvertise_url = \"{longest}\"\n")).is_ok());
        for (bad, why) in [
            (format!("{longest}a"), "longer than"),
            ("ftp://h:1".to_string(), "http:// or https://"),
            ("http://u:secret@h:1".to_string(), "credentials"),
            ("http://h:1/?a=1".to_string(), "query"),
            ("not a url".to_string(), "not a URL"),
        ] {
            let Err(e) = load_str(&format!("[cluster]\nadvertise_url = \"{bad}\"\n")) else {
                panic!("{bad} must be refused");
            };
            let msg = e.to_string();
            assert!(msg.contains(why), "{bad}: {msg}");
            assert!(!msg.contains("secret"), "{msg}");
        }
        for ok in [MIN_SWEEP_INTERVAL_MS, MAX_SWEEP_INTERVAL_MS] {
            assert!(load_str(&format!("[cluster]\nsweep_interval_ms = {ok}\n")).is_ok());
        }
        for bad in [MIN_SWEEP_INTERVAL_MS - 1, MAX_SWEEP_INTERVAL_MS + 1] {
            assert!(load_str(&format!("[cluster]\nsweep_interval_ms = {bad}\n")).is_err());
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_str("[storage]\nsynchronus = \"full\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("synchronus"), "{msg}");
    }

    #[test]
    fn mistyped_value_is_named() {
        let err = load_str("[api]\nmax_body_bytes = \"big\"\n").unwrap_err();
        assert!(err.to_string().contains("max_body_bytes"), "{err}");
    }

    #[test]
    fn enrollment_limits_must_be_positive() {
        let err = load_str("[devices]\nenroll_burst = 0\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("devices.enroll_burst must be at least 1"),
            "{err}"
        );
        let ok = load_str("[devices]\nenroll_burst = 1\n").expect("1 is allowed");
        assert_eq!(ok.devices.enroll_burst, 1);
    }

    #[test]
    fn checkpoint_limits_are_checked_at_their_edges() {
        assert_eq!(Config::default().audit.checkpoint_interval_ms, 60_000);
        assert_eq!(Config::default().audit.checkpoint_keep, 10_000);
        for ok in [
            "checkpoint_interval_ms = 100",
            "checkpoint_interval_ms = 86400000",
        ] {
            load_str(&format!("[audit]\n{ok}\n")).expect(ok);
        }
        for bad in [
            "checkpoint_interval_ms = 99",
            "checkpoint_interval_ms = 86400001",
        ] {
            let err = load_str(&format!("[audit]\n{bad}\n")).expect_err(bad);
            assert!(
                err.to_string()
                    .contains("audit.checkpoint_interval_ms must be between 100 and 86400000"),
                "{err}"
            );
        }
        load_str("[audit]\ncheckpoint_keep = 1\n").expect("1");
        load_str("[audit]\ncheckpoint_keep = 1000000\n").expect("max");
        for bad in ["checkpoint_keep = 0", "checkpoint_keep = 1000001"] {
            let err = load_str(&format!("[audit]\n{bad}\n")).expect_err(bad);
            assert!(
                err.to_string()
                    .contains("audit.checkpoint_keep must be between 1 and 1000000"),
                "{err}"
            );
        }
    }

    #[test]
    fn rotation_grace_is_bounded_at_five_minutes() {
        assert_eq!(Config::default().envelopes.rotation_grace_ms, 10_000);
        let ok = load_str("[envelopes]\nrotation_grace_ms = 300000\n").expect("the maximum");
        assert_eq!(ok.envelopes.rotation_grace_ms, 300_000);
        let zero = load_str("[envelopes]\nrotation_grace_ms = 0\n").expect("no grace");
        assert_eq!(zero.envelopes.rotation_grace_ms, 0);
        let err = load_str("[envelopes]\nrotation_grace_ms = 300001\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("envelopes.rotation_grace_ms must be between 0 and 300000"),
            "{err}"
        );
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../examples/happyx.toml");
        let cfg = load_str(text).expect("examples/happyx.toml must load");
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7878");
    }

    #[test]
    fn flags_win_over_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\n").expect("write");
        let o = Overrides {
            listen: Some("127.0.0.1:9001".parse().expect("addr")),
            data_dir: None,
        };
        let c = Config::load(Some(&path), &o).expect("load");
        assert_eq!(c.listen.port(), 9001);
    }
}
