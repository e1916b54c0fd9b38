//! `happyx approvals ls|show|approve|deny|withdraw`: the approval queue over
//! `/v1/approvals`.
//!
//! Listings mask the byte ranges the host marked as secrets (`secrets`, operators only) so a
//! queue on a shared screen shows no credentials; `show` prints the exact action, with each
//! secret's place named, because that is what an operator decides on.

use std::io::Write;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::Conn;
use super::client::{Client, ClientError, check_id};
use super::table::{cut, json_line, opt_relative, print_listing, relative, safe};

#[derive(Debug, Args)]
pub struct ApprovalsArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub cmd: ApprovalsCmd,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCmd {
    /// List approvals, newest first (default: pending ones).
    #[command(alias = "list")]
    Ls {
        /// pending, approved, denied, used or all.
        #[arg(long, default_value = "pending", value_parser = ["pending", "approved", "denied", "used", "all"])]
        status: String,
        /// At most N (1 to 500).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=500))]
        limit: i64,
    },
    /// One approval with its exact action.
    Show { id: String },
    /// Approve a pending request (operator; not the identity that asked).
    Approve {
        id: String,
        /// Why (recorded by hosts that keep decision reasons).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a pending request (operator; not the identity that asked).
    Deny {
        id: String,
        /// Why (recorded by hosts that keep decision reasons).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Withdraw one's own pending request (the identity that asked).
    Withdraw { id: String },
}

pub async fn run(a: ApprovalsArgs) -> Result<()> {
    let client = a.conn.client()?;
    let json_out = a.conn.json;
    let mut out = std::io::stdout().lock();
    match a.cmd {
        ApprovalsCmd::Ls { status, limit } => {
            let mut q = vec![("limit", limit.to_string())];
            if status != "all" {
                q.push(("status", status));
            }
            let list: Value = client.get("/v1/approvals", &q).await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            print_listing(
                &mut out,
                json_out,
                &items,
                &[
                    "ID",
                    "KIND",
                    "STATUS",
                    "RISK",
                    "REQUESTER",
                    "CREATED",
                    "EXPIRES",
                    "ACTION",
                ],
                "no approvals",
                |i| {
                    let masked = masked_action(i);
                    vec![
                        str_of(&i["id"]),
                        str_of(&i["kind"]),
                        str_of(&i["status"]),
                        str_of(&masked["action"]["risk"]),
                        str_of(&i["requester"]),
                        opt_relative(i["created_at"].as_i64()),
                        opt_relative(i["expires_at"].as_i64()),
                        cut(&describe(&masked), 80),
                    ]
                },
            )?;
        }
        ApprovalsCmd::Show { id } => {
            let id = check_id("approval", &id)?;
            let a: Value = client.get(&format!("/v1/approvals/{id}"), &[]).await?;
            if json_out {
                return json_line(&mut out, &a);
            }
            show(&mut out, &a)?;
        }
        ApprovalsCmd::Approve { id, reason } => {
            decide(
                &client,
                json_out,
                &id,
                "approve",
                reason.as_deref(),
                &mut out,
            )
            .await?;
        }
        ApprovalsCmd::Deny { id, reason } => {
            decide(&client, json_out, &id, "deny", reason.as_deref(), &mut out).await?;
        }
        ApprovalsCmd::Withdraw { id } => {
            let id = check_id("approval", &id)?;
            let d: Value = client
                .post(&format!("/v1/approvals/{id}/withdraw"), &json!({}))
                .await?;
            print_decision(&mut out, json_out, &d)?;
        }
    }
    Ok(())
}

/// Whether the host's API document says the decision routes take a body (and so a reason).
async fn host_takes_reasons(client: &Client, verb: &str) -> bool {
    match client.get_public("/v1/openapi.json").await {
        Ok(doc) => {
            !doc["paths"][format!("/v1/approvals/{{id}}/{verb}")]["post"]["requestBody"].is_null()
        }
        // Cannot tell: send the reason and let the host answer.
        Err(_) => true,
    }
}

async fn decide(
    client: &Client,
    json_out: bool,
    id: &str,
    verb: &str,
    reason: Option<&str>,
    out: &mut impl Write,
) -> Result<()> {
    let id = check_id("approval", id)?;
    let path = format!("/v1/approvals/{id}/{verb}");
    const NO_REASONS: &str = "happyx: warning: this host does not record decision reasons; the decision was sent without it";
    let body = match reason {
        Some(r) if host_takes_reasons(client, verb).await => json!({ "reason": r }),
        Some(_) => {
            eprintln!("{NO_REASONS}");
            json!({})
        }
        None => json!({}),
    };
    let d: Value = match client.post(&path, &body).await {
        Err(ClientError::Api {
            status, message, ..
        }) if reason.is_some()
            && status.as_u16() == 422
            && message.starts_with("unknown field") =>
        {
            eprintln!("{NO_REASONS}");
            client.post(&path, &json!({})).await?
        }
        other => other?,
    };
    print_decision(out, json_out, &d)
}

fn print_decision(out: &mut impl Write, json_out: bool, d: &Value) -> Result<()> {
    if json_out {
        json_line(out, d)
    } else {
        writeln!(out, "{} {}", str_of(&d["id"]), str_of(&d["status"]))?;
        Ok(())
    }
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => safe(s),
        Value::Null => "-".into(),
        other => safe(&other.to_string()),
    }
}

/// A word shell-quoted when it needs it.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The action in one line: the rendered command, or what an attach asks for.
pub fn describe(action_holder: &Value) -> String {
    let a = &action_holder["action"];
    if let Some(att) = a.get("attach") {
        return format!(
            "attach {} to terminal {} ({})",
            att["mode"].as_str().unwrap_or("?"),
            att["pty_id"].as_str().unwrap_or("?"),
            a["recipe"].as_str().unwrap_or("?")
        );
    }
    let cmd = &a["command"];
    let mut words = vec![quote(cmd["program"].as_str().unwrap_or("?"))];
    for w in cmd["args"].as_array().into_iter().flatten() {
        words.push(quote(w.as_str().unwrap_or("?")));
    }
    let prefix = if a["pty"].as_bool() == Some(true) {
        "terminal: "
    } else {
        ""
    };
    format!("{prefix}{}", words.join(" "))
}

/// The approval with every byte range marked in `secrets` masked with `*`.
fn masked_action(item: &Value) -> Value {
    let mut v = item.clone();
    for m in item["secrets"].as_array().into_iter().flatten() {
        let (Some(path), Some(start), Some(end)) = (
            m["path"].as_str(),
            m["start"].as_u64().map(|n| n as usize),
            m["end"].as_u64().map(|n| n as usize),
        ) else {
            continue;
        };
        if let Some(Value::String(s)) = v["action"].pointer_mut(path) {
            let mut b = s.clone().into_bytes();
            let end = end.min(b.len());
            if start < end {
                b[start..end].fill(b'*');
                *s = String::from_utf8_lossy(&b).into_owned();
            }
        }
    }
    v
}

fn show(out: &mut impl Write, a: &Value) -> Result<()> {
    let act = &a["action"];
    let mut lines: Vec<(&str, String)> = vec![
        ("id", str_of(&a["id"])),
        ("kind", str_of(&a["kind"])),
        ("status", str_of(&a["status"])),
        ("risk", str_of(&act["risk"])),
        ("recipe", str_of(&act["recipe"])),
    ];
    if let Some(args) = act["args"].as_object() {
        for (k, v) in args {
            lines.push(("arg", format!("{}={}", safe(k), str_of(v))));
        }
    }
    lines.push(("action", safe(&describe(a))));
    if let Some(s) = act["session_id"].as_str() {
        lines.push(("session", safe(s)));
    }
    lines.push(("requester", str_of(&a["requester"])));
    lines.push(("created", opt_relative(a["created_at"].as_i64())));
    lines.push(("expires", opt_relative(a["expires_at"].as_i64())));
    if let Some(d) = a["decided_at"].as_i64() {
        lines.push((
            "decided",
            format!("{} by {}", relative(d), str_of(&a["decider"])),
        ));
    }
    for m in a["secrets"].as_array().into_iter().flatten() {
        lines.push((
            "secret",
            format!(
                "{} bytes {}..{} ({})",
                str_of(&m["path"]),
                m["start"],
                m["end"],
                str_of(&m["rule"])
            ),
        ));
    }
    if a["redaction"].as_str() == Some("failed") {
        lines.push((
            "redaction",
            "failed: the redactor could not check this action".into(),
        ));
    }
    lines.push(("action hash", str_of(&a["action_hash"])));
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in lines {
        writeln!(out, "{k:<width$}  {v}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_described_and_masked() {
        let item = json!({
            "action": {"recipe": "shell", "risk": "high",
                       "command": {"program": "sh", "args": ["-c", "echo AKIA1234 it's"]}},
            "secrets": [{"path": "/command/args/1", "start": 5, "end": 13, "rule": "aws"}]
        });
        assert_eq!(describe(&item), r#"sh -c 'echo AKIA1234 it'\''s'"#);
        assert_eq!(
            describe(&masked_action(&item)),
            r#"sh -c 'echo ******** it'\''s'"#
        );
    }
}
