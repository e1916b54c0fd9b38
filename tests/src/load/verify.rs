//! The final check of the ledger against the host.
//!
//! With a spawned host: stop it, `happyx export` the data dir, and look every acknowledged id up
//! in its table (tasks, sessions, runs, approvals, terminals, devices, envelopes — none of
//! which the retention pass prunes); count rows beyond the acknowledged ones (each must be
//! explained by a create whose answer was lost); look for the markers of refused writes; and
//! run `happyx audit verify --export` on the export. Against a `--url` host: read each
//! acknowledged record back through the API, and each device's envelopes through the device
//! library (which also verifies their signatures and decrypts them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::ledger::{Kind, Snapshot};
use crate::workload::{Ctx, Device};

/// What the check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    /// `export` or `api`.
    pub method: String,
    /// Acknowledged ids looked up, per kind.
    pub checked: BTreeMap<String, u64>,
    /// Acknowledged ids missing, per kind (must be 0).
    pub lost: BTreeMap<String, u64>,
    /// A few missing ids, for the report.
    pub lost_examples: Vec<String>,
    /// Rows beyond the acknowledged ones, per kind, and how many unanswered creates could
    /// explain them.
    pub extra_rows: BTreeMap<String, i64>,
    pub ambiguous: BTreeMap<String, u64>,
    /// Rows no acknowledged or unanswered write explains (must be 0).
    pub unexpected_extra: u64,
    /// Refused writes checked, and found present (must be 0).
    pub refused_checked: u64,
    pub refused_present: u64,
    /// `happyx audit verify` on the export.
    pub audit_ok: Option<bool>,
    pub audit_output: Option<String>,
    pub export_bytes: Option<u64>,
}

impl Verification {
    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }
}

#[derive(Deserialize)]
struct Export {
    tables: HashMap<String, Vec<Row>>,
}

#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// Tables every row of which the workload wrote (so extra rows must be explained).
const FULLY_OURS: [Kind; 4] = [Kind::Task, Kind::Run, Kind::Approval, Kind::Envelope];

/// Exports the stopped host's data dir and checks the ledger against it.
pub async fn by_export(
    bin: &Path,
    data_dir: &Path,
    out: &Path,
    ledger: &Snapshot,
) -> Result<Verification> {
    let status = tokio::process::Command::new(bin)
        .args(["export", "--data-dir"])
        .arg(data_dir)
        .arg("--out")
        .arg(out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("run happyx export")?;
    anyhow::ensure!(status.success(), "happyx export failed ({status})");
    let path = out.to_path_buf();
    let export: Export = tokio::task::spawn_blocking(move || -> Result<Export> {
        let f = std::fs::File::open(&path)?;
        Ok(serde_json::from_reader(std::io::BufReader::new(f))?)
    })
    .await??;
    let mut v = Verification {
        method: "export".into(),
        export_bytes: std::fs::metadata(out).ok().map(|m| m.len()),
        ..Verification::default()
    };
    for kind in Kind::ALL {
        let rows = export
            .tables
            .get(kind.table())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let ids: HashSet<&str> = rows
            .iter()
            .filter_map(|r| r.id.as_ref().and_then(|i| i.as_str()))
            .collect();
        let acked = ledger.acked.get(&kind).map(Vec::as_slice).unwrap_or(&[]);
        let mut lost = 0;
        for id in acked {
            if !ids.contains(id.as_str()) {
                lost += 1;
                if v.lost_examples.len() < 10 {
                    v.lost_examples.push(format!("{} {id}", kind.name()));
                }
            }
        }
        v.checked.insert(kind.name().into(), acked.len() as u64);
        v.lost.insert(kind.name().into(), lost);
        let ambiguous = ledger.ambiguous.get(&kind).copied().unwrap_or(0)
            + if kind == Kind::Envelope {
                ledger.envelopes_stored_on_retry
            } else {
                0
            };
        let extra = ids.len() as i64 - acked.len() as i64;
        v.extra_rows.insert(kind.name().into(), extra);
        v.ambiguous.insert(kind.name().into(), ambiguous);
        if FULLY_OURS.contains(&kind) && extra > ambiguous as i64 {
            v.unexpected_extra += (extra - ambiguous as i64) as u64;
        }
    }
    for r in &ledger.refused {
        v.refused_checked += 1;
        if r.column.is_empty() {
            continue; // checked by the row count of its table
        }
        let rows = export.tables.get(r.table).map(Vec::as_slice).unwrap_or(&[]);
        let present = rows.iter().any(|row| {
            let text = match r.column {
                "title" => row.title.as_deref(),
                _ => row.name.as_deref(),
            };
            text.is_some_and(|t| t.contains(&r.marker))
        });
        if present {
            v.refused_present += 1;
        }
    }
    let audit = tokio::process::Command::new(bin)
        .args(["audit", "verify", "--export"])
        .arg(out)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("run happyx audit verify")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
    // A host without the `audit` command has no chain to check: not a failure, but said.
    v.audit_ok = if text.contains("unrecognized subcommand") {
        None
    } else {
        Some(audit.status.success())
    };
    v.audit_output = Some(text.trim().chars().take(400).collect());
    Ok(v)
}

/// Reads every acknowledged record back through the API (a running host).
pub async fn by_api(
    ctx: &Ctx,
    operator: &str,
    devices: &[Device],
    ledger: &Snapshot,
) -> Result<Verification> {
    let mut v = Verification {
        method: "api".into(),
        ..Verification::default()
    };
    for kind in Kind::ALL {
        let prefix = match kind {
            Kind::Task => "/v1/tasks",
            Kind::Session => "/v1/sessions",
            Kind::Run => "/v1/runs",
            Kind::Pty => "/v1/pty",
            _ => continue,
        };
        let acked = ledger.acked.get(&kind).map(Vec::as_slice).unwrap_or(&[]);
        let mut lost = 0;
        for id in acked {
            let a = ctx
                .call(
                    "verify.get",
                    Method::GET,
                    &format!("{prefix}/{id}"),
                    Some(operator),
                    None,
                    None,
                )
                .await;
            if a.is_none_or(|a| a.status != 200) {
                lost += 1;
                if v.lost_examples.len() < 10 {
                    v.lost_examples.push(format!("{} {id}", kind.name()));
                }
            }
        }
        v.checked.insert(kind.name().into(), acked.len() as u64);
        v.lost.insert(kind.name().into(), lost);
    }
    // Envelopes: each device reads its session back (verifying and decrypting every one).
    let mut want: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in &ledger.envelopes {
        want.entry(e.session.as_str())
            .or_default()
            .push(e.plaintext.as_str());
    }
    let (mut lost, mut checked, mut duplicated) = (0u64, 0u64, 0u64);
    for dev in devices {
        let d = dev.clone();
        let url = ctx.base.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let mut out = Vec::new();
            let mut warn = std::io::sink();
            happyx::devices::client::read(
                &d.dir,
                &url,
                &d.session,
                &[],
                happyx::devices::client::ReadMode::default(),
                &mut out,
                &mut warn,
            )?;
            Ok(out)
        })
        .await??;
        let text = String::from_utf8_lossy(&read);
        let mut seen: HashMap<&str, u64> = HashMap::new();
        for line in text.lines() {
            *seen.entry(line).or_default() += 1;
        }
        duplicated += seen.values().filter(|n| **n > 1).count() as u64;
        for p in want
            .get(dev.session.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            checked += 1;
            if !seen.contains_key(p) {
                lost += 1;
            }
        }
    }
    v.checked.insert("envelope".into(), checked);
    v.lost.insert("envelope".into(), lost);
    v.unexpected_extra = duplicated;
    v.refused_checked = ledger.refused.len() as u64;
    Ok(v)
}
