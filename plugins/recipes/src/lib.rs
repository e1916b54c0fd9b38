//! Sample recipe book (world `recipe-book`).
//!
//! | recipe        | risk   | params      | renders                           | timeout |
//! | ------------- | ------ | ----------- | --------------------------------- | ------- |
//! | `echo`        | low    | `text`      | `echo <text>`                     | 10 s    |
//! | `git-status`  | low    | —           | `git <safe -c…> status --short --branch` | 60 s |
//! | `list-files`  | medium | `path`      | `ls -la -- <path>`                | 30 s    |
//! | `shell`       | high   | `command`   | `sh -c <command>`                 | 10 min  |
//! | `agent-cli`   | high   | `agent`, `prompt`? | `<allowlisted program> [prompt]` | run default |
//!
//! Arguments are validated here: an unknown, missing or invalid argument is a
//! typed `render-error` naming it. No value may contain NUL or exceed 16 KiB.
//! `list-files` takes a relative path with no `..` component and no leading
//! `-`. Settings: `shell.timeout_ms` (decimal) overrides the shell timeout;
//! `agent_cli.programs` is the operator's allowlist of coding agent CLIs that
//! `agent-cli` may start, as `name=/absolute/path` pairs separated by commas
//! (e.g. `claude=/usr/local/bin/claude,aider=/usr/bin/aider`); without it
//! `agent-cli` starts nothing. `agent` must be one of those names; the optional
//! `prompt` (no control characters but newline and tab, not starting with `-`)
//! is passed as the program's one argument. Open it as a terminal
//! (`POST /v1/pty`) to watch and drive the agent after an operator approves.
//!
//! A low-risk recipe must never run code that workspace content chose: an approved
//! command may have written the repository's own `.git/config`. The host gives git no
//! system or global configuration (and an empty, unwritable `HOME`); `git-status` also
//! overrides, on its command line (which outranks every configuration file), each key
//! that makes `git status` execute a program: `core.fsmonitor`, `core.hooksPath`,
//! `core.pager`, `diff.external`, and it never reads the global attributes file.

use std::cell::Cell;

use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo as Info};
use exports::happyx::policy::recipes::{
    Command, Guest as RecipesGuest, Param, Recipe, RenderError, Risk,
};

wit_bindgen::generate!({
    world: "recipe-book",
    path: "../../wit",
});

const MAX_ARG: usize = 16 * 1024;

/// `git -c` settings that switch off every program `git status` would run because a
/// configuration file (the repository's own included) names it. `-c` outranks all files.
const GIT_NEUTRAL: [&str; 6] = [
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.pager=cat",
    "diff.external=true",
    "core.attributesFile=/dev/null",
    "core.untrackedCache=false",
];

thread_local! {
    static SHELL_TIMEOUT_MS: Cell<u64> = const { Cell::new(600_000) };
    /// `agent-cli`'s allowlist: (name, absolute program path).
    static AGENT_PROGRAMS: std::cell::RefCell<Vec<(String, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Parses `agent_cli.programs`: `name=/absolute/path` pairs separated by commas.
fn parse_programs(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, path)) = entry.split_once('=') else {
            return Err("agent_cli.programs: expected name=/absolute/path pairs".to_string());
        };
        let (name, path) = (name.trim(), path.trim());
        let good_name = !name.is_empty()
            && name.len() <= 32
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !good_name {
            return Err("agent_cli.programs: names are 1-32 of a-z, 0-9 and -".to_string());
        }
        if !path.starts_with('/') || path.chars().any(|c| c.is_control()) || path.split('/').any(|c| c == "..") {
            return Err("agent_cli.programs: each program is an absolute path without ..".to_string());
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err("agent_cli.programs: a name is listed twice".to_string());
        }
        out.push((name.to_string(), path.to_string()));
    }
    Ok(out)
}

fn param(name: &str, description: &str) -> Param {
    Param { name: name.to_string(), description: description.to_string(), required: true }
}

fn recipe(name: &str, description: &str, risk: Risk, params: Vec<Param>) -> Recipe {
    Recipe { name: name.to_string(), description: description.to_string(), risk, params }
}

/// Checks `args` against the names in `params` (all required) and returns the
/// values in `params` order.
fn take<'a>(args: &'a [(String, String)], params: &[&str]) -> Result<Vec<&'a str>, RenderError> {
    for (k, v) in args {
        if !params.contains(&k.as_str()) {
            return Err(RenderError::UnknownArg(k.clone()));
        }
        if v.contains('\0') {
            return Err(RenderError::InvalidArg((k.clone(), "contains a NUL byte".to_string())));
        }
        if v.len() > MAX_ARG {
            return Err(RenderError::InvalidArg((k.clone(), format!("longer than {MAX_ARG} bytes"))));
        }
    }
    let mut out = Vec::with_capacity(params.len());
    for p in params {
        let mut found = args.iter().filter(|(k, _)| k == p);
        let Some((_, v)) = found.next() else {
            return Err(RenderError::MissingArg((*p).to_string()));
        };
        if found.next().is_some() {
            return Err(RenderError::InvalidArg(((*p).to_string(), "given twice".to_string())));
        }
        out.push(v.as_str());
    }
    Ok(out)
}

fn check_path(path: &str) -> Result<(), RenderError> {
    let bad = |reason: &str| Err(RenderError::InvalidArg(("path".to_string(), reason.to_string())));
    if path.is_empty() {
        return bad("must not be empty");
    }
    if path.starts_with('/') {
        return bad("must be relative");
    }
    if path.starts_with('-') {
        return bad("must not start with `-`");
    }
    if path.split('/').any(|c| c == "..") {
        return bad("must not contain `..`");
    }
    if path.chars().any(|c| c.is_control()) {
        return bad("must not contain control characters");
    }
    Ok(())
}

fn command(program: &str, args: Vec<String>, risk: Risk, timeout_ms: u64) -> Command {
    Command { program: program.to_string(), args, risk, timeout_ms: Some(timeout_ms) }
}

struct Component;

impl ConfigGuest for Component {
    fn info() -> Info {
        Info {
            name: "sample-recipes".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "echo, git-status, list-files, shell and agent-cli".to_string(),
        }
    }

    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        let mut shell_timeout = 600_000;
        let mut programs = Vec::new();
        for (key, value) in &settings {
            match key.as_str() {
                "agent_cli.programs" => programs = parse_programs(value)?,
                "shell.timeout_ms" => {
                    shell_timeout = value
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|v| *v > 0)
                        .ok_or_else(|| format!("{key}: expected a positive integer"))?;
                }
                other => return Err(format!("unknown setting `{other}`")),
            }
        }
        SHELL_TIMEOUT_MS.with(|t| t.set(shell_timeout));
        AGENT_PROGRAMS.with(|p| *p.borrow_mut() = programs);
        Ok(())
    }
}

impl RecipesGuest for Component {
    fn catalog() -> Vec<Recipe> {
        vec![
            recipe("echo", "Print the given text", Risk::Low, vec![param("text", "Text to print")]),
            recipe("git-status", "Show the working tree status", Risk::Low, vec![]),
            recipe(
                "list-files",
                "List a directory of the workspace",
                Risk::Medium,
                vec![param("path", "Relative path inside the workspace")],
            ),
            recipe(
                "shell",
                "Run a shell command with sh -c",
                Risk::High,
                vec![param("command", "The shell command line")],
            ),
            recipe(
                "agent-cli",
                "Start a coding agent's command-line tool from the operator's allowlist (open it as a terminal to watch and drive it)",
                Risk::High,
                vec![
                    param("agent", "A name from the agent_cli.programs setting"),
                    Param {
                        name: "prompt".to_string(),
                        description: "The first instruction, passed as the program's argument".to_string(),
                        required: false,
                    },
                ],
            ),
        ]
    }

    fn render(name: String, args: Vec<(String, String)>) -> Result<Command, RenderError> {
        match name.as_str() {
            "echo" => {
                let v = take(&args, &["text"])?;
                Ok(command("echo", vec![v[0].to_string()], Risk::Low, 10_000))
            }
            "git-status" => {
                take(&args, &[])?;
                let mut argv: Vec<String> = Vec::new();
                for setting in GIT_NEUTRAL {
                    argv.push("-c".to_string());
                    argv.push(setting.to_string());
                }
                argv.extend(["--no-pager", "status", "--short", "--branch"].map(String::from));
                Ok(command("git", argv, Risk::Low, 60_000))
            }
            "list-files" => {
                let v = take(&args, &["path"])?;
                check_path(v[0])?;
                let args = vec!["-la".to_string(), "--".to_string(), v[0].to_string()];
                Ok(command("ls", args, Risk::Medium, 30_000))
            }
            "shell" => {
                let v = take(&args, &["command"])?;
                if v[0].trim().is_empty() {
                    return Err(RenderError::InvalidArg((
                        "command".to_string(),
                        "must not be empty".to_string(),
                    )));
                }
                let timeout = SHELL_TIMEOUT_MS.with(|t| t.get());
                Ok(command("sh", vec!["-c".to_string(), v[0].to_string()], Risk::High, timeout))
            }
            "agent-cli" => render_agent_cli(&args),
            _ => Err(RenderError::UnknownRecipe(name)),
        }
    }
}

fn render_agent_cli(args: &[(String, String)]) -> Result<Command, RenderError> {
    let invalid = |name: &str, reason: &str| RenderError::InvalidArg((name.to_string(), reason.to_string()));
    for (k, v) in args {
        if k != "agent" && k != "prompt" {
            return Err(RenderError::UnknownArg(k.clone()));
        }
        if v.len() > MAX_ARG {
            return Err(invalid(k, &format!("longer than {MAX_ARG} bytes")));
        }
    }
    let one = |name: &str| -> Result<Option<&str>, RenderError> {
        let mut found = args.iter().filter(|(k, _)| k == name);
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(invalid(name, "given twice"));
        }
        Ok(first)
    };
    let agent = one("agent")?.ok_or_else(|| RenderError::MissingArg("agent".to_string()))?;
    let program = AGENT_PROGRAMS
        .with(|p| p.borrow().iter().find(|(n, _)| n == agent).map(|(_, path)| path.clone()))
        .ok_or_else(|| invalid("agent", "not in the operator's agent_cli.programs allowlist"))?;
    let mut argv = Vec::new();
    if let Some(prompt) = one("prompt")? {
        if prompt.starts_with('-') {
            return Err(invalid("prompt", "must not start with -"));
        }
        if prompt.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(invalid("prompt", "must not contain control characters"));
        }
        if !prompt.is_empty() {
            argv.push(prompt.to_string());
        }
    }
    Ok(Command { program, args: argv, risk: Risk::High, timeout_ms: None })
}

export!(Component);
