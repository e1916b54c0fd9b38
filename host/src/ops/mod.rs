//! Operator commands: `happyx status|approvals|runs|pty|enroll|devices|events` are clients of a
//! running host over its HTTP API (like `tctl`/`tsh`), plus `completions` and `man`.
//!
//! Every one takes `--url` (default `HAPPYX_URL`, else `http://127.0.0.1:7878`) and a bearer
//! token from `HAPPYX_TOKEN` or `--token-file FILE` — never from argv, where `ps` would show
//! it. People get aligned tables; `--json` prints one JSON object per line. Results go to
//! stdout; errors to stderr as `happyx: code: message` with a non-zero exit.

pub mod approvals;
pub use happyx_client::http as client;
pub mod completions;
pub mod devices;
pub mod enroll;
pub mod events;
pub mod pty;
pub mod runs;
pub mod status;
pub mod table;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use client::{Client, Token};

/// How to reach the host; shared by every operator command.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// Base URL of the host.
    #[arg(
        long,
        env = "HAPPYX_URL",
        default_value = "http://127.0.0.1:7878",
        global = true
    )]
    pub url: String,
    /// Read the bearer token from FILE (default: the HAPPYX_TOKEN environment variable).
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// One JSON object per line instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Conn {
    pub fn client(&self) -> Result<Client> {
        let token = Token::load(self.token_file.as_deref())?;
        Ok(Client::new(&self.url, token)?)
    }
}

/// The operator commands, flattened into the top-level `happyx` command.
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// The host at a glance: version, address, isolation, plugins, pending approvals, live
    /// runs and terminals, last prune.
    Status(Conn),
    /// The approval queue: list, show, approve, deny, withdraw.
    Approvals(approvals::ApprovalsArgs),
    /// Runs and their redacted output.
    Runs(runs::RunsArgs),
    /// Terminals: list them, attach to one as a terminal client.
    Pty(pty::PtyArgs),
    /// Device enrollment codes.
    Enroll(enroll::EnrollArgs),
    /// Enrolled devices: list, revoke.
    Devices(devices::DevicesArgs),
    /// The audit log.
    Events(events::EventsArgs),
    /// Print shell completions for SHELL (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write man pages for happyx and every subcommand into DIR (created if missing).
    Man { dir: PathBuf },
}

/// The exit status a command asks for without an error message (e.g. `pty attach` passing on
/// the terminal's exit code).
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Exit {}

pub async fn run(cmd: OpsCommand) -> Result<()> {
    let r = dispatch(cmd).await;
    // A reader that went away (`happyx events tail | head`) ends the command quietly, as
    // SIGPIPE would.
    if let Err(e) = &r
        && e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        })
    {
        return Err(Exit(141).into());
    }
    r
}

async fn dispatch(cmd: OpsCommand) -> Result<()> {
    match cmd {
        OpsCommand::Status(conn) => status::run(&conn).await,
        OpsCommand::Approvals(a) => approvals::run(a).await,
        OpsCommand::Runs(a) => runs::run(a).await,
        OpsCommand::Pty(a) => pty::run(a).await,
        OpsCommand::Enroll(a) => enroll::run(a).await,
        OpsCommand::Devices(a) => devices::run(a).await,
        OpsCommand::Events(a) => events::run(a).await,
        OpsCommand::Completions { shell } => completions::completions(shell),
        OpsCommand::Man { dir } => completions::man(&dir),
    }
}
