//! `happyx runs ls|show|logs [--follow]`: runs over `/v1/runs` and their redacted output.
//!
//! `logs --follow` re-reads `GET /v1/runs/{id}/output` and prints only the bytes beyond what
//! it printed, until the run has finished (the status is read before the output, so the last
//! read after a finished status holds everything). While the run is live the route serves only
//! a growing prefix of the final output (see [`crate::run_hold`]), so nothing printed is ever
//! corrected, duplicated or skipped.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::Conn;
use super::client::{Client, check_id};
use super::table::{bytes, json_line, opt, opt_relative, print_listing, safe};
use happyx_core::vocab::RunStatus;

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub cmd: RunsCmd,
}

#[derive(Debug, Subcommand)]
pub enum RunsCmd {
    /// The most recent runs, oldest first (agents see their own).
    #[command(alias = "list")]
    Ls {
        /// At most N.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=500))]
        limit: i64,
        /// Instead of the most recent: the runs after this id.
        #[arg(long)]
        after: Option<String>,
    },
    /// One run: status, exit code, byte counts, timings.
    Show { id: String },
    /// The run's redacted output (operator).
    Logs {
        id: String,
        /// Keep printing output as it arrives until the run finishes.
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

pub async fn run(a: RunsArgs) -> Result<()> {
    let client = a.conn.client()?;
    let json_out = a.conn.json;
    let mut out = std::io::stdout().lock();
    match a.cmd {
        RunsCmd::Ls { limit, after } => {
            let items = newest(&client, "/v1/runs", limit, after.as_deref()).await?;
            print_listing(
                &mut out,
                json_out,
                &items,
                &[
                    "ID",
                    "RECIPE",
                    "RISK",
                    "STATUS",
                    "EXIT",
                    "OUTPUT",
                    "REQUESTER",
                    "CREATED",
                ],
                "no runs",
                |r| {
                    vec![
                        s(&r["id"]),
                        s(&r["recipe"]),
                        s(&r["risk"]),
                        s(&r["status"]),
                        opt(r["exit_code"].as_i64()),
                        bytes(
                            r["stdout_bytes"].as_i64().unwrap_or(0)
                                + r["stderr_bytes"].as_i64().unwrap_or(0),
                        ),
                        s(&r["requested_by"]),
                        opt_relative(r["created_at"].as_i64()),
                    ]
                },
            )?;
        }
        RunsCmd::Show { id } => {
            let id = check_id("run", &id)?;
            let r: Value = client.get(&format!("/v1/runs/{id}"), &[]).await?;
            if json_out {
                return json_line(&mut out, &r);
            }
            let mut lines: Vec<(&str, String)> = vec![
                ("id", s(&r["id"])),
                ("recipe", s(&r["recipe"])),
                ("risk", s(&r["risk"])),
                ("recipe plugin", s(&r["recipe_plugin_sha256"])),
                ("status", s(&r["status"])),
                ("exit code", opt(r["exit_code"].as_i64())),
            ];
            if let Some(e) = r["error"].as_str() {
                lines.push(("error", safe(e)));
            }
            lines.extend([
                ("stdout", bytes(r["stdout_bytes"].as_i64().unwrap_or(0))),
                ("stderr", bytes(r["stderr_bytes"].as_i64().unwrap_or(0))),
                ("findings", opt(r["findings"].as_i64())),
                ("withheld", opt(r["unredacted_chunks"].as_i64())),
                (
                    "truncated",
                    if r["truncated"].as_bool() == Some(true) {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                ),
                ("requester", s(&r["requested_by"])),
                ("approval", s(&r["approval_id"])),
                ("session", s(&r["session_id"])),
                ("created", opt_relative(r["created_at"].as_i64())),
                ("started", opt_relative(r["started_at"].as_i64())),
                ("finished", opt_relative(r["finished_at"].as_i64())),
            ]);
            let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in lines {
                writeln!(out, "{k:<width$}  {v}")?;
            }
        }
        RunsCmd::Logs { id, follow } => {
            let id = check_id("run", &id)?;
            drop(out);
            logs(&client, id, follow).await?;
        }
    }
    Ok(())
}

async fn logs(client: &Client, id: &str, follow: bool) -> Result<()> {
    let mut printed = 0usize;
    loop {
        let status = if follow {
            let r: Value = client.get(&format!("/v1/runs/{id}"), &[]).await?;
            Some(r)
        } else {
            None
        };
        let output = client.get_bytes(&format!("/v1/runs/{id}/output")).await?;
        if output.len() > printed {
            let mut out = std::io::stdout().lock();
            out.write_all(&output[printed..])?;
            out.flush()?;
            printed = output.len();
        }
        let Some(r) = status else { return Ok(()) };
        let st = r["status"].as_str().unwrap_or("");
        if st.parse::<RunStatus>().is_ok_and(RunStatus::is_final) {
            let exit = r["exit_code"]
                .as_i64()
                .map(|c| format!(", exit code {c}"))
                .unwrap_or_default();
            let err = r["error"]
                .as_str()
                .map(|e| format!(": {}", safe(e)))
                .unwrap_or_default();
            eprintln!("happyx: run {id} {st}{exit}{err}");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => safe(s),
        Value::Null => "-".into(),
        other => safe(&other.to_string()),
    }
}

/// The `limit` most recent items of a listing paged by `after`/`next` (oldest first), or
/// the page after `after` when given. Hosts that list newest first without paging work too.
pub async fn newest(
    client: &Client,
    path: &str,
    limit: i64,
    after: Option<&str>,
) -> Result<Vec<Value>> {
    if let Some(a) = after {
        let a = check_id("item", a)?;
        let page: Value = client
            .get(
                path,
                &[("after", a.to_string()), ("limit", limit.to_string())],
            )
            .await?;
        return Ok(page["items"].as_array().cloned().unwrap_or_default());
    }
    let mut keep: VecDeque<Value> = VecDeque::new();
    let mut next: Option<String> = None;
    loop {
        let mut q = vec![("limit", "500".to_string())];
        if let Some(n) = &next {
            q.push(("after", n.clone()));
        }
        let page: Value = client.get(path, &q).await?;
        for i in page["items"].as_array().into_iter().flatten() {
            keep.push_back(i.clone());
        }
        let mut items: Vec<Value> = keep.drain(..).collect();
        items.sort_by(|a, b| {
            (a["created_at"].as_i64(), a["id"].as_str())
                .cmp(&(b["created_at"].as_i64(), b["id"].as_str()))
        });
        let skip = items.len().saturating_sub(limit as usize);
        keep.extend(items.into_iter().skip(skip));
        match page["next"].as_str() {
            Some(n) if Some(n) != next.as_deref() => next = Some(n.to_string()),
            _ => return Ok(keep.into_iter().collect()),
        }
    }
}
