//! The legacy JSON state of the old single-process deployment — a directory
//! holding `approvals.json`, `runs.json` and `events.json` — and its mapping
//! to HappyX tables. The format and the mapping are documented in
//! `examples/legacy-state/README.md`; this module is that document in code.
//!
//! The legacy files of a single-process deployment are small, so each is read
//! whole into typed records; every record is checked before it is written,
//! and an error names the file, the record index and the field.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Result, TransferError, final_checks, insert_error_message};
use crate::approvals::{Action, ActionKind, action_hash};
use crate::runs::CHUNK_BYTES;
use crate::store::transfer::{Cell, ImportTarget};
use crate::util::sha256_hex;
use happyx_core::vocab::{ApprovalStatus, OutputStream};
use happyx_core::vocab::{Risk, RunStatus};

/// The plugin hash legacy actions are bound to: no recipe plugin has it, so a
/// legacy approval can be inspected and denied but never spent on this host.
pub const LEGACY_PLUGIN_HASH: &str = "legacy";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyApproval {
    id: String,
    recipe: String,
    #[serde(default)]
    args: BTreeMap<String, String>,
    /// The rendered command, program first.
    command: Vec<String>,
    requested_by: String,
    /// The plaintext one-time token: only its SHA-256 is imported.
    token: String,
    status: String,
    #[serde(default)]
    decided_by: Option<String>,
    #[serde(default)]
    decided_at: Option<i64>,
    expires_at: i64,
    created_at: i64,
    #[serde(default)]
    used_at: Option<i64>,
    #[serde(default)]
    run_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyRun {
    id: String,
    recipe: String,
    #[serde(default)]
    args: BTreeMap<String, String>,
    command: Vec<String>,
    risk: String,
    status: String,
    #[serde(default)]
    exit_code: Option<i64>,
    requested_by: String,
    #[serde(default)]
    approval_id: Option<String>,
    created_at: i64,
    #[serde(default)]
    started_at: Option<i64>,
    #[serde(default)]
    finished_at: Option<i64>,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyEvent {
    #[serde(default)]
    id: Option<String>,
    ts: i64,
    #[serde(rename = "type")]
    kind: String,
    actor: String,
    subject: String,
    #[serde(default)]
    data: Option<Value>,
}

/// Reads one legacy file: a JSON array of records.
fn read<T: for<'de> Deserialize<'de>>(dir: &Path, file: &str) -> Result<Vec<T>> {
    let path = dir.join(file);
    let name = path.display().to_string();
    let text = std::fs::read(&path).map_err(|error| TransferError::Read {
        path: path.clone(),
        error,
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        let msg = msg.split(" at line ").next().unwrap_or("").to_string();
        // Type errors can quote the value: keep only messages that name fields.
        let msg = if inner.classify() == serde_json::error::Category::Data
            && !(msg.starts_with("unknown field") || msg.starts_with("missing field"))
        {
            "unexpected kind of value".to_string()
        } else {
            msg
        };
        TransferError::invalid(
            &name,
            if at == "." { String::new() } else { at },
            format!("{msg} (line {} column {})", inner.line(), inner.column()),
        )
    })
}

/// Where a record is, for messages: `(file name, "[i].field")`.
struct At {
    file: String,
}

impl At {
    fn err(&self, i: usize, field: &str, msg: impl Into<String>) -> TransferError {
        let path = if field.is_empty() {
            format!("[{i}]")
        } else {
            format!("[{i}].{field}")
        };
        TransferError::invalid(&self.file, path, msg)
    }
}

fn check_id(at: &At, i: usize, field: &str, id: &str) -> Result<()> {
    if crate::util::is_valid_id(id) {
        Ok(())
    } else {
        Err(at.err(
            i,
            field,
            "not a valid id (1 to 64 characters of [A-Za-z0-9_-])",
        ))
    }
}

fn text(s: &str) -> Cell {
    Cell::Text(s.to_string())
}

fn opt_text(s: &Option<String>) -> Cell {
    s.as_deref().map(text).unwrap_or(Cell::Null)
}

fn opt_int(v: Option<i64>) -> Cell {
    v.map(Cell::Integer).unwrap_or(Cell::Null)
}

/// Inserts a row given by column name (absent columns are NULL).
async fn put(
    target: &mut ImportTarget,
    table: &str,
    values: Vec<(&str, Cell)>,
    at: &At,
    i: usize,
) -> Result<()> {
    let Some(t) = target.table(table) else {
        return Err(at.err(i, "", format!("this schema has no {table} table")));
    };
    let mut by_name: HashMap<&str, Cell> = values.into_iter().collect();
    let cells: Vec<Cell> = t
        .columns
        .iter()
        .map(|c| by_name.remove(c.name.as_str()).unwrap_or(Cell::Null))
        .collect();
    if let Some(name) = by_name.keys().next() {
        return Err(at.err(i, "", format!("{table} has no column {name}")));
    }
    if let Err((column, m)) = super::validate::row(t, &cells) {
        return Err(at.err(i, &column, format!("{table}: {m}")));
    }
    if let Err(e) = target.insert(table, cells).await? {
        let (p, m) = insert_error_message(e);
        return Err(at.err(i, p.trim_start_matches('.'), format!("{table}: {m}")));
    }
    Ok(())
}

fn action_for(recipe: &str, args: &BTreeMap<String, String>, command: &[String]) -> String {
    let (program, argv) = command
        .split_first()
        .map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
    action_hash(&Action {
        kind: ActionKind::Run,
        recipe,
        args: args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        program,
        argv,
        plugin_hash: LEGACY_PLUGIN_HASH,
        session_id: None,
        target: None,
    })
}

/// Loads a legacy state directory into `target`; returns rows per table.
pub async fn load(dir: &Path, target: &mut ImportTarget) -> Result<BTreeMap<String, u64>> {
    let approvals: Vec<LegacyApproval> = read(dir, "approvals.json")?;
    let runs: Vec<LegacyRun> = read(dir, "runs.json")?;
    let events: Vec<LegacyEvent> = read(dir, "events.json")?;
    let at_a = At {
        file: dir.join("approvals.json").display().to_string(),
    };
    let at_r = At {
        file: dir.join("runs.json").display().to_string(),
    };
    let at_e = At {
        file: dir.join("events.json").display().to_string(),
    };
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    let mut count = |t: &str, n: u64| *rows.entry(t.to_string()).or_default() += n;

    let run_ids: BTreeSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let approval_ids: BTreeSet<&str> = approvals.iter().map(|a| a.id.as_str()).collect();
    let mut action_hashes: HashMap<&str, String> = HashMap::new();

    for (i, a) in approvals.iter().enumerate() {
        check_id(&at_a, i, "id", &a.id)?;
        if a.command.is_empty() {
            return Err(at_a.err(i, "command", "must name the program"));
        }
        if a.token.len() < 16 {
            return Err(at_a.err(i, "token", "too short to be a one-time token"));
        }
        let Ok(status) = a.status.parse::<ApprovalStatus>() else {
            return Err(at_a.err(
                i,
                "status",
                "cannot be mapped (expected pending, approved, denied or used)",
            ));
        };
        if status != ApprovalStatus::Pending && (a.decided_by.is_none() || a.decided_at.is_none()) {
            return Err(at_a.err(
                i,
                "decided_by",
                "a decided approval needs decided_by and decided_at",
            ));
        }
        let hash = action_for(&a.recipe, &a.args, &a.command);
        action_hashes.insert(a.id.as_str(), hash.clone());
        let token_hash = sha256_hex(a.token.as_bytes());
        let scope = format!("approval:{}", a.id);
        let nonce = sha256_hex(format!("legacy-nonce:{}", a.id).as_bytes())[..32].to_string();
        let updated = [Some(a.created_at), a.decided_at, a.used_at]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(a.created_at);
        let (program, argv) = a
            .command
            .split_first()
            .map_or(("", &[][..]), |(p, r)| (p.as_str(), r));
        let action = json!({
            "recipe": a.recipe,
            "args": a.args,
            "session_id": null,
            "command": {"program": program, "args": argv},
            "risk": "high",
            "plugin_hash": LEGACY_PLUGIN_HASH,
        });
        put(
            target,
            "approvals",
            vec![
                ("id", text(&a.id)),
                ("kind", text("run")),
                ("action_hash", text(&hash)),
                ("action", Cell::Text(action.to_string())),
                ("token_hash", text(&token_hash)),
                ("requester", text(&a.requested_by)),
                ("status", text(&a.status)),
                ("decider", opt_text(&a.decided_by)),
                ("decided_at", opt_int(a.decided_at)),
                ("scope", text(&scope)),
                ("nonce", text(&nonce)),
                ("expires_at", Cell::Integer(a.expires_at)),
                ("created_at", Cell::Integer(a.created_at)),
                ("updated_at", Cell::Integer(updated)),
            ],
            &at_a,
            i,
        )
        .await?;
        count("approvals", 1);
        // A used approval's nonce has rotated.
        let used = a.status.parse() == Ok(ApprovalStatus::Used);
        let current = if used {
            sha256_hex(format!("legacy-nonce-rotated:{}", a.id).as_bytes())[..32].to_string()
        } else {
            nonce
        };
        put(
            target,
            "nonces",
            vec![
                ("scope", text(&scope)),
                ("value", text(&current)),
                ("updated_at", Cell::Integer(updated)),
            ],
            &at_a,
            i,
        )
        .await?;
        count("nonces", 1);
        if used {
            let (Some(used_at), Some(run_id)) = (a.used_at, a.run_id.as_deref()) else {
                return Err(at_a.err(i, "used_at", "a used approval needs used_at and run_id"));
            };
            if !run_ids.contains(run_id) {
                return Err(at_a.err(i, "run_id", "names no run in runs.json"));
            }
            put(
                target,
                "approval_uses",
                vec![
                    ("id", text(&format!("legacy-use-{}", a.id))),
                    ("use_hash", text(&token_hash)),
                    ("approval_id", text(&a.id)),
                    ("run_id", text(run_id)),
                    ("used_at", Cell::Integer(used_at)),
                ],
                &at_a,
                i,
            )
            .await?;
            count("approval_uses", 1);
        } else if a.used_at.is_some() || a.run_id.is_some() {
            return Err(at_a.err(i, "used_at", "only a used approval has used_at and run_id"));
        }
    }

    for (i, r) in runs.iter().enumerate() {
        check_id(&at_r, i, "id", &r.id)?;
        let status = match r.status.as_str() {
            "ok" => RunStatus::Succeeded.as_str(),
            "failed" => RunStatus::Failed.as_str(),
            "timeout" => RunStatus::TimedOut.as_str(),
            "interrupted" => RunStatus::Lost.as_str(),
            _ => {
                return Err(at_r.err(
                    i,
                    "status",
                    "cannot be mapped (expected ok, failed, timeout or interrupted)",
                ));
            }
        };
        if r.risk.parse::<Risk>().is_err() {
            return Err(at_r.err(i, "risk", "cannot be mapped (expected low, medium or high)"));
        }
        let hash = match &r.approval_id {
            Some(aid) if !approval_ids.contains(aid.as_str()) => {
                return Err(at_r.err(i, "approval_id", "names no approval in approvals.json"));
            }
            Some(aid) => action_hashes.get(aid.as_str()).cloned().unwrap_or_default(),
            None => action_for(&r.recipe, &r.args, &r.command),
        };
        let mut chunk_index = 0i64;
        let mut chunks = Vec::new();
        for (stream, data) in [
            (OutputStream::Stdout.as_str(), r.stdout.as_bytes()),
            (OutputStream::Stderr.as_str(), r.stderr.as_bytes()),
        ] {
            for (k, piece) in data.chunks(CHUNK_BYTES).enumerate() {
                chunks.push((stream, chunk_index, (k * CHUNK_BYTES) as i64, piece));
                chunk_index += 1;
            }
        }
        let at_time = r.finished_at.unwrap_or(r.created_at);
        put(
            target,
            "agent_runs",
            vec![
                ("id", text(&r.id)),
                ("recipe", text(&r.recipe)),
                ("risk", text(&r.risk)),
                ("status", text(status)),
                ("exit_code", opt_int(r.exit_code)),
                ("session_id", Cell::Null),
                ("requested_by", text(&r.requested_by)),
                ("approval_id", opt_text(&r.approval_id)),
                ("idempotency_key", Cell::Null),
                ("action_hash", text(&hash)),
                ("stdout_bytes", Cell::Integer(r.stdout.len() as i64)),
                ("stderr_bytes", Cell::Integer(r.stderr.len() as i64)),
                ("findings", Cell::Integer(0)),
                // Never redacted: withheld from derived views (fail closed).
                ("unredacted_chunks", Cell::Integer(chunks.len() as i64)),
                ("truncated", Cell::Integer(0)),
                ("created_at", Cell::Integer(r.created_at)),
                ("started_at", opt_int(r.started_at)),
                ("finished_at", opt_int(r.finished_at)),
                ("updated_at", Cell::Integer(at_time)),
            ],
            &at_r,
            i,
        )
        .await?;
        count("agent_runs", 1);
        for (stream, index, offset, piece) in chunks {
            put(
                target,
                "agent_run_outputs",
                vec![
                    ("id", text(&format!("{}-{index}", r.id))),
                    ("run_id", text(&r.id)),
                    ("stream", text(stream)),
                    ("chunk_index", Cell::Integer(index)),
                    ("byte_offset", Cell::Integer(offset)),
                    ("length", Cell::Integer(piece.len() as i64)),
                    ("data", Cell::Blob(piece.to_vec())),
                    ("redacted", Cell::Null),
                    ("findings", Cell::Integer(0)),
                    ("policy_hash", Cell::Null),
                    ("created_at", Cell::Integer(at_time)),
                ],
                &at_r,
                i,
            )
            .await?;
            count("agent_run_outputs", 1);
        }
    }

    // Gap-free seq in timestamp order (file order among equal timestamps).
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| (events[i].ts, i));
    for (n, &i) in order.iter().enumerate() {
        let e = &events[i];
        if e.kind.is_empty() || e.kind.len() > 100 {
            return Err(at_e.err(i, "type", "must be 1 to 100 characters"));
        }
        let data = match &e.data {
            None | Some(Value::Null) => "{}".to_string(),
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(_) => return Err(at_e.err(i, "data", "must be an object")),
        };
        if !crate::public::scan::token_offsets(data.as_bytes()).is_empty() {
            return Err(at_e.err(
                i,
                "data",
                "holds a bearer token; event data must be public-safe",
            ));
        }
        let id = match &e.id {
            Some(id) => {
                check_id(&at_e, i, "id", id)?;
                id.clone()
            }
            None => format!("legacy-event-{i}"),
        };
        put(
            target,
            "events",
            vec![
                ("id", text(&id)),
                ("seq", Cell::Integer(n as i64 + 1)),
                ("at", Cell::Integer(e.ts)),
                ("code", text(&e.kind)),
                ("actor", text(&e.actor)),
                ("subject", text(&e.subject)),
                ("data", Cell::Text(data)),
            ],
            &at_e,
            i,
        )
        .await?;
        count("events", 1);
    }
    final_checks(target, &dir.display().to_string()).await?;
    Ok(rows)
}
