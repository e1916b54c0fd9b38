//! `happyx devices ls|revoke`: enrolled devices over `/v1/devices`.

use std::io::Write;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::Conn;
use super::client::check_id;
use super::table::{Table, json_line, opt_relative, safe};

#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub cmd: DevicesCmd,
}

#[derive(Debug, Subcommand)]
pub enum DevicesCmd {
    /// Every device with its state and key versions (operator, viewer).
    #[command(alias = "list")]
    Ls,
    /// Revoke a device and all its key versions (operator).
    Revoke {
        id: String,
        /// Why (kept with the device and in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => safe(s),
        Value::Null => "-".into(),
        other => safe(&other.to_string()),
    }
}

pub async fn run(a: DevicesArgs) -> Result<()> {
    let client = a.conn.client()?;
    let mut out = std::io::stdout().lock();
    match a.cmd {
        DevicesCmd::Ls => {
            let list: Value = client.get("/v1/devices", &[]).await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            if a.conn.json {
                for i in &items {
                    json_line(&mut out, i)?;
                }
                return Ok(());
            }
            let mut t = Table::new(&[
                "ID", "NAME", "STATUS", "KEYS", "CREATED", "REVOKED", "REASON",
            ]);
            for d in &items {
                let keys = d["keys"].as_array().cloned().unwrap_or_default();
                let live = keys.iter().filter(|k| k["revoked_at"].is_null()).count();
                let latest = keys
                    .iter()
                    .filter_map(|k| k["key_version"].as_i64())
                    .max()
                    .map(|v| format!(", latest v{v}"))
                    .unwrap_or_default();
                t.row(vec![
                    s(&d["id"]),
                    s(&d["name"]),
                    s(&d["status"]),
                    format!("{live}/{} live{latest}", keys.len()),
                    opt_relative(d["created_at"].as_i64()),
                    opt_relative(d["revoked_at"].as_i64()),
                    s(&d["revoke_reason"]),
                ]);
            }
            if t.is_empty() {
                eprintln!("no devices");
            } else {
                t.print(&mut out)?;
            }
        }
        DevicesCmd::Revoke { id, reason } => {
            let id = check_id("device", &id)?;
            let body = match reason {
                Some(r) => json!({ "reason": r }),
                None => json!({}),
            };
            let d: Value = client
                .post(&format!("/v1/devices/{id}/revoke"), &body)
                .await?;
            if a.conn.json {
                return json_line(&mut out, &d);
            }
            writeln!(out, "{} {}", s(&d["id"]), s(&d["status"]))?;
        }
    }
    Ok(())
}
