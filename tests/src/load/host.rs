//! The host under load: either one given by `--url`, or one `happyx serve` this tool spawns on a
//! temporary data dir with a scaled-down retention policy, and (for chaos) kills with SIGKILL
//! and restarts on the same data dir and port. Also mints tokens through `happyx token create`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `happyx` binary to run: `explicit`, else the one beside this executable, else PATH.
pub fn locate_binary(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        // The host runs in its own working dir: a relative path must not depend on it (a bare
        // name is still looked up on PATH).
        if p.components().count() > 1 {
            return std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        }
        return p.to_path_buf();
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let sibling = dir.join("happyx");
        if sibling.exists() {
            return sibling;
        }
    }
    PathBuf::from("happyx")
}

/// Creates a bearer token with the CLI (works while the host runs); `config` is the host's
/// configuration file when its storage is not the data dir's own (PostgreSQL).
pub async fn create_token(
    bin: &Path,
    data_dir: &Path,
    config: Option<&Path>,
    role: &str,
    name: &str,
) -> Result<String> {
    let mut cmd = Command::new(bin);
    cmd.args(["token", "create", "--data-dir"]).arg(data_dir);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let out = cmd
        .args(["--role", role, "--name", name])
        .stdin(Stdio::null())
        .output()
        .await
        .context("run happyx token create")?;
    if !out.status.success() {
        bail!(
            "happyx token create --role {role} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text.trim();
    if token.is_empty() || token.contains('\n') {
        bail!("happyx token create printed no single token");
    }
    Ok(token.to_string())
}

/// Settings of a spawned host.
#[derive(Debug, Clone)]
pub struct SpawnConfig {
    pub retention_interval: Duration,
    pub retention_window: Duration,
    pub retention_events: u64,
}

/// A `happyx serve` this tool owns.
pub struct Spawned {
    bin: PathBuf,
    /// Parent of the data dir; the host's working dir (its default workspace is inside).
    pub base: PathBuf,
    pub data_dir: PathBuf,
    config: PathBuf,
    listen: String,
    pub url: String,
    child: Option<Child>,
    log: PathBuf,
    /// The live host's pid, 0 while it is down (read by the sampler).
    pub pid: Arc<AtomicU32>,
    /// Starts so far (the first included): the current host lifetime's number.
    pub epoch: Arc<AtomicU64>,
}

impl Spawned {
    /// Writes the config and picks a fixed loopback port, so the URL survives restarts.
    pub fn prepare(bin: PathBuf, base: &Path, cfg: &SpawnConfig) -> Result<Self> {
        Self::prepare_with(bin, base, &config_text(cfg))
    }

    /// [`Self::prepare`] with the configuration file's text given.
    pub fn prepare_with(bin: PathBuf, base: &Path, config_text: &str) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(base)?;
        // Children run as an unprivileged user in ./happyx-workspace: let them traverse.
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let config = base.join("happyx.toml");
        std::fs::write(&config, config_text)?;
        Ok(Self {
            bin,
            base: base.to_path_buf(),
            data_dir: base.join("data"),
            config,
            url: format!("http://{listen}"),
            listen,
            child: None,
            log: base.join("serve.log"),
            pid: Arc::new(AtomicU32::new(0)),
            epoch: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Starts the host and waits until `/healthz` answers.
    pub async fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(&self.listen)
            .current_dir(&self.base)
            .env_remove("HAPPYX_URL")
            .env_remove("HAPPYX_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let deadline = Instant::now() + Duration::from_secs(120);
        // The port may still be held for a moment by the killed host's socket.
        let mut child = loop {
            let mut child = cmd.spawn().context("spawn happyx serve")?;
            let stdout = child.stdout.take().context("no stdout")?;
            let mut lines = BufReader::new(stdout).lines();
            match tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await {
                Ok(Ok(Some(line))) if !line.trim().is_empty() => {
                    // Keep draining stdout so the host never writes into a closed pipe.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    break child;
                }
                _ => {
                    let _ = child.kill().await;
                    if Instant::now() > deadline {
                        bail!(
                            "happyx serve did not start; see {} (last lines: {})",
                            self.log.display(),
                            tail(&self.log, 5)
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http
                .get(format!("{}/healthz", self.url))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill().await;
                bail!("the host at {} never became healthy", self.url);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        self.child = Some(child);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// SIGKILL, and wait until the process is gone.
    pub async fn kill9(&mut self) {
        self.pid.store(0, Ordering::SeqCst);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        self.pid.store(0, Ordering::SeqCst);
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(grace, c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
    }

    /// The configuration file the host reads.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// The spawned host's configuration: public views on, retention scaled down.
fn config_text(cfg: &SpawnConfig) -> String {
    let window = cfg.retention_window.as_millis();
    format!(
        r#"# Written by happyx-load for a soak run.
[log]
filter = "warn"

[public]
runs = true
sessions = true

[approvals]
max_pending_per_requester = 64

[retention]
interval_ms = {interval}
batch = 500

[plugins.retention.settings]
"run-output.max_age_ms" = "{window}"
"transcript-chunk.max_age_ms" = "{window}"
"event.max_count" = "{events}"
"#,
        interval = cfg.retention_interval.as_millis().max(1000),
        events = cfg.retention_events,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_binary_path_does_not_depend_on_the_hosts_working_dir() {
        // Tests run in the package's directory; the host runs in its own base dir.
        let found = locate_binary(Some(Path::new("src/load/host.rs")));
        assert!(found.is_absolute(), "{}", found.display());
        assert!(
            found.ends_with("tests/src/load/host.rs"),
            "{}",
            found.display()
        );
        // A bare name is still looked up on PATH.
        assert_eq!(
            locate_binary(Some(Path::new("happyx"))),
            PathBuf::from("happyx")
        );
    }
}
