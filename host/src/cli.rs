//! The `happyx` command line. Results go to stdout (one value, or one JSON
//! object, per line); logs and progress go to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::io::Write as _;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::auth::{self, Role};
use crate::config::{Config, LogFormat, Overrides};
use crate::progress::Progress;
use crate::store::{Store, StoreError};

#[derive(Debug, Parser)]
#[command(
    name = "happyx",
    version,
    about = "Self-hosted server for operating remote AI coding agents and terminals"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host.
    Serve(ServeArgs),
    /// Create, list and revoke bearer tokens (works while the server runs).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the retention pruner once and report what it removed (one JSON line).
    Prune {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Policy plugin tools for operators and policy authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Internal: the detached process that holds one PTY (started by the host).
    #[command(hide = true)]
    PtyHolder,
    /// Write the whole state as versioned JSON (a private file: it holds raw
    /// outputs and ciphertext), signed with the host's key (`happyx host-key`).
    /// Prints a one-line JSON summary.
    Export {
        #[command(flatten)]
        dir: DataDirArg,
        /// The file to write (mode 0600, replaced atomically).
        #[arg(long)]
        out: PathBuf,
    },
    /// Load an export, or a legacy state directory, into a new or empty data
    /// dir (or, with storage.url, an empty PostgreSQL database), all or nothing.
    /// Prints a one-line JSON summary.
    Import {
        #[command(flatten)]
        dir: DataDirArg,
        /// An export file, or a legacy state directory (see examples/legacy-state).
        file: PathBuf,
        /// Trust exports signed by this public key: a file holding it, or the
        /// base64 itself (`happyx host-key` on the exporting data dir prints it).
        /// Repeatable. The importing data dir's own host key is always trusted.
        #[arg(long = "trusted-key", value_name = "FILE|BASE64")]
        trusted_keys: Vec<String>,
        /// Also accept an unsigned file, a legacy state directory, or a file
        /// signed by an untrusted key (never one whose signature does not
        /// verify). Prints a warning.
        #[arg(long)]
        allow_unsigned: bool,
    },
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the host's export signing public key (base64), creating the key
    /// (DATA/host-signing.key, 0600) if the data dir has none yet.
    HostKey {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Fetch every public surface of a running host and fail, naming the
    /// surface and the kind of material, if any secret material is found.
    VerifyPublic(crate::public::verify::VerifyArgs),
    /// The device side of encrypted sessions.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Operator commands: clients of a running host (`--url`, `HAPPYX_TOKEN` or `--token-file`).
    #[command(flatten)]
    Ops(crate::ops::OpsCommand),
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run the contract checks for the component's world (and its fixtures)
    /// against FILE; prints one JSON line per check, exits non-zero on failure.
    Check {
        file: PathBuf,
        /// Fixture directory (`<interface>/<case>/…`, see tests/conformance).
        #[arg(long)]
        fixtures: Option<PathBuf>,
    },
    /// Write the built-in sample components into DIR as .wasm files.
    ExportBuiltin { dir: PathBuf },
    /// Create a plugin project in DIR (new or empty) that builds as created: the WIT
    /// vendored, a working sample of the world and its fixtures. Prints DIR; the build and
    /// check commands go to stderr.
    New {
        #[arg(long, value_enum)]
        world: crate::plugins::scaffold::World,
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the event hash chain offline, of a data dir (works while the server runs) or
    /// of an export file. Prints one JSON line (events checked, head seq and hash, prune
    /// anchor); exits 1 naming the first bad `seq` when the chain is broken.
    Verify {
        #[command(flatten)]
        dir: DataDirArg,
        /// Check this export file instead of a data dir.
        #[arg(long, value_name = "FILE", conflicts_with = "data_dir")]
        export: Option<PathBuf>,
        /// Also hold the log to a signed checkpoint (the JSON `/public/evidence` publishes
        /// under `checkpoint`): its signature must verify under a trusted key, and the chain
        /// must still hold its (seq, hash), or have been pruned past it (said so). Prints a
        /// checkpoint report instead of the chain summary.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Trust checkpoints signed by this public key: a file holding it, or the base64
        /// itself (`happyx host-key`). Repeatable. Default: the data dir's own host key (an
        /// export needs one; with --url, the key the checkpoint names is pinned).
        #[arg(
            long = "trusted-key",
            value_name = "FILE|BASE64",
            requires = "checkpoint"
        )]
        trusted_keys: Vec<String>,
        /// Check a running host's latest checkpoint against the one in --checkpoint instead
        /// of a log: the same key, a seq not older, and the same hash where the host still
        /// publishes that seq.
        #[arg(long, value_name = "URL", requires = "checkpoint",
              conflicts_with_all = ["data_dir", "export"])]
        url: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct DeviceDirArg {
    /// The device's private folder (0700; key files 0600).
    #[arg(long)]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct HostArgs {
    #[command(flatten)]
    pub dir: DeviceDirArg,
    /// Base URL of the host, e.g. http://127.0.0.1:7878.
    #[arg(long)]
    pub url: String,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Create DIR (0700) and the device's keys (0600); print the fingerprint.
    Keygen {
        #[command(flatten)]
        dir: DeviceDirArg,
        /// Key version (a re-enrollment needs one above every earlier version).
        #[arg(long, default_value_t = 1)]
        key_version: u64,
    },
    /// Enroll with a single-use code (proof of possession); print the device id.
    Enroll {
        #[command(flatten)]
        host: HostArgs,
        #[arg(long)]
        code: String,
        /// A name for the device.
        #[arg(long)]
        name: Option<String>,
    },
    /// Open an encrypted session with this device and peers; print the session id.
    OpenSession {
        #[command(flatten)]
        host: HostArgs,
        /// A peer: DEVICE_ID or DEVICE_ID=FINGERPRINT (pinned); repeatable.
        #[arg(long = "with")]
        with: Vec<String>,
    },
    /// Send each stdin line as one message; print each envelope (wire form) per line. Rotates
    /// first when a member was revoked, and on `rotation_required`/`stale_epoch` moves to the
    /// new epoch and sends the refused lines again, once.
    Send {
        #[command(flatten)]
        host: HostArgs,
        #[arg(long)]
        session: String,
        /// Print the envelopes without posting them (the sequence counter still advances).
        #[arg(long)]
        dry_run: bool,
        /// Post up to N lines' envelopes per request (`/envelopes/batch`, 1 to 256): waits for N
        /// lines or the end of stdin before posting. 1 (default) posts each line as it is read.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        batch: u16,
        /// Print nothing when the messages were sent (errors still go to stderr).
        #[arg(long, conflicts_with = "dry_run")]
        quiet: bool,
    },
    /// Verify and decrypt every readable message; print each plaintext on its own line.
    Read {
        #[command(flatten)]
        host: HostArgs,
        #[arg(long)]
        session: String,
        /// Pin a peer before reading: DEVICE_ID=FINGERPRINT; repeatable.
        #[arg(long = "with")]
        with: Vec<String>,
        /// Keep reading until interrupted, showing each message as `TIME SENDER: TEXT` (the
        /// sender's signed time in UTC, its device id, control characters made visible).
        #[arg(long)]
        follow: bool,
        /// How often to ask the host for new messages when following, in milliseconds.
        #[arg(long, default_value_t = 1000, requires = "follow",
              value_parser = clap::value_parser!(u64).range(50..=60_000))]
        poll_ms: u64,
    },
    /// Move the session to a new epoch wrapped to the remaining devices; print the epoch (if
    /// another member rotates at the same moment and wins, adopt and print its epoch).
    Rotate {
        #[command(flatten)]
        host: HostArgs,
        #[arg(long)]
        session: String,
    },
    /// Print this device's id, key version and fingerprint (and its state at the host).
    Status {
        #[command(flatten)]
        dir: DeviceDirArg,
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file (see examples/happyx.toml).
    #[arg(long, env = "HAPPYX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (default ./happyx-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:7878).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// The data dir of a command that works on a host's storage: the same configuration and
/// default as `serve`.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Data directory of the host (default: data_dir of --config, else ./happyx-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The host's TOML configuration file (see examples/happyx.toml).
    #[arg(long, env = "HAPPYX_CONFIG")]
    pub config: Option<PathBuf>,
}

impl DataDirArg {
    /// The configuration `serve` would use with these flags.
    pub fn config(&self) -> Result<Config> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            listen: None,
        };
        Ok(Config::load(self.config.as_deref(), &overrides)?)
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print one new bearer token on stdout.
    Create {
        #[command(flatten)]
        dir: DataDirArg,
        /// operator, agent or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A name to recognise the token by.
        #[arg(long)]
        name: Option<String>,
    },
    /// One JSON object per token (never the secret).
    List {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Revoke a token by id.
    Revoke {
        #[command(flatten)]
        dir: DataDirArg,
        /// The token id (the 12 characters after `hpx_`).
        id: String,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse::<Role>()
        .map_err(|_| format!("`{s}` is not a role (operator, agent, viewer)"))
}

/// Sets up `tracing` to stderr. `HAPPYX_LOG` overrides the configured filter.
pub fn init_logging(filter: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let mut filter = std::env::var("HAPPYX_LOG")
        .ok()
        .unwrap_or_else(|| filter.to_string());
    // The compiler inside wasmtime logs every instruction at trace level, which
    // would stall plugin compilation; keep it at info unless named explicitly.
    for quiet in ["cranelift", "regalloc2", "wasmtime", "wasmparser"] {
        if !filter.contains(quiet) {
            filter.push_str(&format!(",{quiet}=info"));
        }
    }
    let env_filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Opens the store of an existing data dir for an operator command (no serve lock); a
/// missing one is refused, never created.
async fn open_store(cfg: &Config) -> Result<Store> {
    let dir = crate::datadir::existing(&cfg.data_dir, &cfg.storage)?;
    let place = match &cfg.storage.url {
        Some(url) => format!("the PostgreSQL database {url}"),
        None => format!("the database in {}", dir.display()),
    };
    Store::open(&dir, &cfg.storage)
        .await
        .with_context(|| format!("cannot open {place}"))
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(a) => {
            let overrides = Overrides {
                data_dir: a.data_dir,
                listen: a.listen,
            };
            let cfg = Config::load(a.config.as_deref(), &overrides)?;
            init_logging(&cfg.log.filter, cfg.log.format);
            crate::server::serve(cfg).await
        }
        Command::Token(t) => {
            init_logging("warn", LogFormat::Text);
            token(t).await
        }
        Command::Prune { dir } => {
            let cfg = dir.config()?;
            init_logging("warn", LogFormat::Text);
            let store = open_store(&cfg).await?;
            let data_dir = crate::datadir::existing(&cfg.data_dir, &cfg.storage)?;
            let plugins = crate::server::load_plugins(&cfg, &data_dir).await?;
            let progress = Progress::counter("prune: examined", "items");
            let report =
                crate::retention::prune_once(&store, &plugins, cfg.retention.batch, &progress)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            drop(progress);
            println!("{}", serde_json::to_string(&report)?);
            store.close().await;
            Ok(())
        }
        Command::Plugin(p) => {
            init_logging("warn", LogFormat::Text);
            // Guest calls are synchronous and WASI's output streams start a runtime of their
            // own: off the async workers, as the server runs them (a panicking guest's stderr
            // would otherwise abort the checker).
            tokio::task::spawn_blocking(move || plugin(p))
                .await
                .context("plugin command panicked")?
        }
        Command::PtyHolder => bail!("pty-holder runs before the async runtime starts"),
        Command::Export { dir, out } => {
            let cfg = dir.config()?;
            init_logging("warn", LogFormat::Text);
            let data_dir = crate::datadir::existing(&cfg.data_dir, &cfg.storage)?;
            let summary = crate::transfer::export(&data_dir, &cfg.storage, &out).await?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Import {
            dir,
            file,
            trusted_keys,
            allow_unsigned,
        } => {
            // The one data-dir command that may create its data dir (a new or empty one).
            let cfg = dir.config()?;
            init_logging("warn", LogFormat::Text);
            let opts = crate::transfer::ImportOptions {
                trusted_keys: trusted_keys
                    .iter()
                    .map(|k| crate::transfer::parse_trusted_key(k))
                    .collect::<Result<_, _>>()?,
                allow_unsigned,
            };
            let summary =
                crate::transfer::import(&cfg.data_dir, &cfg.storage, &file, &opts).await?;
            if summary.signature != "verified" {
                let why = match summary.signature {
                    "unsigned_accepted" => "the file is NOT SIGNED".to_string(),
                    "legacy_unsigned_accepted" => {
                        "a legacy state directory is NOT SIGNED".to_string()
                    }
                    _ => format!(
                        "the file is signed by {}, a key this data dir does NOT TRUST",
                        summary.signed_by.as_deref().unwrap_or("an unknown key")
                    ),
                };
                eprintln!(
                    "happyx: WARNING: --allow-unsigned: imported {} although {why}; \
                     its tokens, approvals and records are now live in {}. \
                     Revoke anything you do not recognise (`happyx token list`).",
                    file.display(),
                    summary.data_dir.display()
                );
            }
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Audit(AuditCommand::Verify {
            dir,
            export,
            checkpoint: Some(checkpoint),
            trusted_keys,
            url,
        }) => {
            init_logging("warn", LogFormat::Text);
            let held = read_checkpoint(&checkpoint)?;
            let trusted = trusted_keys
                .iter()
                .map(|k| crate::transfer::parse_trusted_key(k))
                .collect::<Result<Vec<_>, _>>()?;
            let line = match (url, export) {
                (Some(url), _) => serde_json::to_string(
                    &crate::checkpoint::check_url(&url, &held, trusted).await?,
                )?,
                (None, Some(file)) => {
                    let signer = held.verify(&trusted)?;
                    let (summary, hash) =
                        crate::transfer::verify_export_at(&file, Some(held.seq)).await?;
                    let report =
                        crate::checkpoint::check_against_chain(&held, &signer, summary, hash)?;
                    explain_standing(&report);
                    serde_json::to_string(&report)?
                }
                (None, None) => {
                    let cfg = dir.config()?;
                    let mut trusted = trusted;
                    if trusted.is_empty() {
                        let data_dir = crate::datadir::existing(&cfg.data_dir, &cfg.storage)?;
                        if let Some(own) =
                            crate::transfer::signing::HostKey::load_existing(&data_dir)?
                        {
                            trusted.push(own.public());
                        }
                    }
                    let signer = held.verify(&trusted)?;
                    let store = open_store(&cfg).await?;
                    let progress = Progress::bar("audit verify", 0);
                    let checked = store.verify_chain(&progress).await;
                    drop(progress);
                    let hash = store.event_hash_at(held.seq).await;
                    store.close().await;
                    let report =
                        crate::checkpoint::check_against_chain(&held, &signer, checked??, hash?)?;
                    explain_standing(&report);
                    serde_json::to_string(&report)?
                }
            };
            println!("{line}");
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { dir, export, .. }) => {
            init_logging("warn", LogFormat::Text);
            let summary = match export {
                Some(file) => crate::transfer::verify_export(&file).await?,
                None => {
                    let cfg = dir.config()?;
                    let store = open_store(&cfg).await?;
                    let progress = Progress::bar("audit verify", 0);
                    let checked = store.verify_chain(&progress).await;
                    drop(progress);
                    store.close().await;
                    checked??
                }
            };
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::HostKey { dir } => {
            let cfg = dir.config()?;
            init_logging("warn", LogFormat::Text);
            let data_dir = crate::datadir::existing(&cfg.data_dir, &cfg.storage)?;
            let key = crate::transfer::signing::HostKey::load_or_create(&data_dir)?;
            println!("{}", key.public());
            Ok(())
        }
        Command::VerifyPublic(args) => {
            init_logging("warn", LogFormat::Text);
            let report = crate::public::verify::run(&args).await?;
            println!("{}", report.summary_line());
            if report.findings.is_empty() {
                Ok(())
            } else {
                for f in &report.findings {
                    eprintln!("happyx: {f}");
                }
                bail!(
                    "{} finding(s) of secret material on public surfaces",
                    report.findings.len()
                )
            }
        }
        Command::Device(d) => {
            init_logging("warn", LogFormat::Text);
            tokio::task::spawn_blocking(move || device(d))
                .await
                .context("device command panicked")?
        }
        Command::Ops(c) => crate::ops::run(c).await,
    }
}

/// Reads a checkpoint file as published (at most [`crate::checkpoint::MAX_FILE_BYTES`]).
fn read_checkpoint(path: &std::path::Path) -> Result<crate::checkpoint::Checkpoint> {
    use std::io::Read as _;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut text = String::new();
    file.take(crate::checkpoint::MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
    if text.len() as u64 > crate::checkpoint::MAX_FILE_BYTES {
        bail!(
            "{} is larger than {} bytes: not a checkpoint",
            path.display(),
            crate::checkpoint::MAX_FILE_BYTES
        );
    }
    Ok(crate::checkpoint::Checkpoint::parse(&text)?)
}

/// Says on stderr when the checkpoint could only be checked as pruned past.
fn explain_standing(report: &crate::checkpoint::CheckpointReport) {
    if report.standing == crate::checkpoint::Standing::Pruned {
        eprintln!("happyx: note: {}", report.detail);
    }
}

fn plugin(cmd: PluginCommand) -> Result<()> {
    match cmd {
        PluginCommand::Check { file, fixtures } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let report = crate::plugins::check_component(&bytes, fixtures.as_deref());
            for c in &report.checks {
                println!("{}", serde_json::to_string(c)?);
            }
            if !report.passed {
                let failed: Vec<String> = report
                    .checks
                    .iter()
                    .filter(|c| !c.passed)
                    .map(|c| format!("{} ({})", c.name, c.detail))
                    .collect();
                bail!(
                    "{}: {} check(s) failed: {}",
                    file.display(),
                    failed.len(),
                    failed.join("; ")
                );
            }
            eprintln!(
                "{}: world {}, all {} checks passed",
                file.display(),
                report.world.as_deref().unwrap_or("?"),
                report.checks.len()
            );
        }
        PluginCommand::New { world, dir } => {
            crate::plugins::scaffold::new_project(world, &dir)?;
            println!("{}", dir.display());
            eprintln!(
                "created a {} plugin; build and check it with:\n{}",
                world.name(),
                crate::plugins::scaffold::next_steps(&dir)
            );
        }
        PluginCommand::ExportBuiltin { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, bytes) in crate::plugins::builtin_components() {
                let path = dir.join(name);
                std::fs::write(&path, bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}

fn device(cmd: DeviceCommand) -> Result<()> {
    use crate::devices::client;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut warn = std::io::stderr();
    let parse_with = |args: &[String]| -> Result<Vec<_>> {
        args.iter()
            .map(|a| client::parse_with(a).map_err(anyhow::Error::from))
            .collect()
    };
    match cmd {
        DeviceCommand::Keygen { dir, key_version } => {
            let fp = client::keygen(&dir.dir, key_version)?;
            writeln!(out, "{fp}")?;
        }
        DeviceCommand::Enroll { host, code, name } => {
            let id = client::enroll(&host.dir.dir, &host.url, &code, name.as_deref())?;
            writeln!(out, "{id}")?;
        }
        DeviceCommand::OpenSession { host, with } => {
            let with = parse_with(&with)?;
            let id = client::open_session(&host.dir.dir, &host.url, &with, &mut warn)?;
            writeln!(out, "{id}")?;
        }
        DeviceCommand::Send {
            host,
            session,
            dry_run,
            batch,
            quiet,
        } => {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            client::send(
                &host.dir.dir,
                &host.url,
                &session,
                client::SendMode {
                    dry_run,
                    batch: usize::from(batch),
                    quiet,
                },
                &mut input,
                &mut out,
                &mut warn,
            )?;
        }
        DeviceCommand::Read {
            host,
            session,
            with,
            follow,
            poll_ms,
        } => {
            let with = parse_with(&with)?;
            client::read(
                &host.dir.dir,
                &host.url,
                &session,
                &with,
                client::ReadMode {
                    follow,
                    poll: std::time::Duration::from_millis(poll_ms),
                },
                &mut out,
                &mut warn,
            )?;
        }
        DeviceCommand::Rotate { host, session } => {
            let epoch = client::rotate(&host.dir.dir, &host.url, &session, &mut warn)?;
            writeln!(out, "{epoch}")?;
        }
        DeviceCommand::Status { dir, url } => {
            let v = client::status(&dir.dir, url.as_deref())?;
            writeln!(out, "{v}")?;
        }
    }
    out.flush()?;
    Ok(())
}

async fn token(cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create { dir, role, name } => {
            if let Some(n) = &name
                && (n.is_empty() || n.len() > 100 || n.chars().any(char::is_control))
            {
                bail!("--name must be 1 to 100 printable characters");
            }
            let store = open_store(&dir.config()?).await?;
            let (secret, _row) = auth::create_token(&store, role, name, "cli").await?;
            println!("{}", secret.expose());
            store.close().await;
        }
        TokenCommand::List { dir } => {
            let store = open_store(&dir.config()?).await?;
            for t in store.tokens().await? {
                println!(
                    "{}",
                    json!({ "id": t.id, "name": t.name, "role": t.role, "created_at": t.created_at, "revoked_at": t.revoked_at })
                );
            }
            store.close().await;
        }
        TokenCommand::Revoke { dir, id } => {
            let store = open_store(&dir.config()?).await?;
            let id = id
                .strip_prefix(auth::TOKEN_PREFIX)
                .map(|s| s.split('_').next().unwrap_or(s))
                .unwrap_or(&id)
                .to_string();
            match store.revoke_token(&id, "cli").await {
                Ok(true) => println!("{id}"),
                Ok(false) => {
                    eprintln!("token {id} was already revoked");
                    println!("{id}");
                }
                Err(StoreError::NotFound) => bail!("no token with id {id}"),
                Err(e) => return Err(e.into()),
            }
            store.close().await;
        }
    }
    Ok(())
}
