//! `happyx status`: `GET /v1/status` — what an operator on call looks at first.

use std::io::Write;

use anyhow::Result;
use serde_json::Value;

use super::Conn;
use super::table::{json_line, relative, safe};

pub async fn run(conn: &Conn) -> Result<()> {
    let client = conn.client()?;
    let s: Value = client.get("/v1/status", &[]).await?;
    let mut out = std::io::stdout().lock();
    if conn.json {
        return json_line(&mut out, &s);
    }
    let text = |v: &Value| safe(v.as_str().unwrap_or("-"));
    let num = |v: &Value| v.as_i64().map_or("-".to_string(), |n| n.to_string());
    let yes = |v: &Value| {
        if v.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    let iso = &s["isolation"];
    let mut lines: Vec<(&str, String)> = vec![
        ("version", text(&s["version"])),
        ("address", text(&s["address"])),
        (
            "isolation",
            format!(
                "{} (host closed to children: {}, identities apart: {})",
                text(&iso["isolation"]),
                yes(&iso["host_closed"]),
                yes(&iso["identities_apart"])
            ),
        ),
    ];
    for off in iso["off"].as_array().into_iter().flatten() {
        lines.push(("  off", text(off)));
    }
    for p in s["plugins"].as_array().into_iter().flatten() {
        let mut line = format!(
            "{:<9} {} {} ({}, sha256 {}…) calls {} failures {}",
            text(&p["kind"]),
            text(&p["name"]),
            text(&p["version"]),
            text(&p["source"]),
            safe(
                &p["sha256"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(12)
                    .collect::<String>()
            ),
            num(&p["calls"]),
            num(&p["failures"]),
        );
        if let Some(e) = p["last_error"].as_str() {
            line.push_str(&format!("; last error: {}", safe(e)));
        }
        lines.push(("plugin", line));
    }
    lines.push(("pending approvals", num(&s["pending_approvals"])));
    lines.push(("live runs", num(&s["live_runs"])));
    lines.push(("live terminals", num(&s["live_terminals"])));
    let prune = &s["last_prune"];
    let prune_line = match prune["at"].as_i64() {
        Some(at) => {
            let counts = prune["counts"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, v)| v.as_i64().unwrap_or(0) != 0)
                        .map(|(k, v)| format!("{} {}", safe(k), v))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let counts = if counts.is_empty() {
                "nothing removed".to_string()
            } else {
                format!("removed {counts}")
            };
            format!("{} ({counts})", relative(at))
        }
        None => "never".into(),
    };
    lines.push(("last prune", prune_line));
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in lines {
        writeln!(out, "{k:<width$}  {v}")?;
    }
    Ok(())
}
