//! `happyx events tail [--follow]`: the audit log over `GET /v1/events`.
//!
//! The log is paged forward only (`after`, `next_after`), so the tail's start is found with a
//! few probes (`after=2^k`, then bisection) instead of reading the whole log; `--follow` then
//! polls for new events.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::Conn;
use super::client::Client;
use super::table::{cut, json_line, safe, utc};

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub cmd: EventsCmd,
}

#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// The last events of the audit log (operator, viewer).
    Tail {
        /// How many of the last events to print first.
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: u64,
        /// Start after this sequence number instead.
        #[arg(long)]
        after: Option<i64>,
        /// Keep printing new events as they are written.
        #[arg(long, short = 'f')]
        follow: bool,
        /// How often --follow asks for new events, in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        interval_ms: u64,
    },
}

async fn page(client: &Client, after: i64, limit: i64) -> Result<(Vec<Value>, i64)> {
    let v: Value = client
        .get(
            "/v1/events",
            &[("after", after.to_string()), ("limit", limit.to_string())],
        )
        .await?;
    let events = v["events"].as_array().cloned().unwrap_or_default();
    let next = v["next_after"].as_i64().unwrap_or(after);
    Ok((events, next))
}

/// The highest `seq` in the log (0 when empty), in O(log n) requests.
async fn last_seq(client: &Client) -> Result<i64> {
    let has_after = |a: i64| async move { page(client, a, 1).await.map(|(e, _)| !e.is_empty()) };
    if !has_after(0).await? {
        return Ok(0);
    }
    // lo: some event lies after it; hi: none does.
    let (mut lo, mut hi) = (0i64, 1i64);
    while has_after(hi).await? {
        lo = hi;
        hi = hi.saturating_mul(2);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if has_after(mid).await? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let (events, _) = page(client, lo, 1).await?;
    Ok(events.last().and_then(|e| e["seq"].as_i64()).unwrap_or(hi))
}

fn print(out: &mut impl Write, json_out: bool, events: &[Value]) -> Result<()> {
    if json_out {
        for e in events {
            json_line(out, e)?;
        }
        out.flush()?;
        return Ok(());
    }
    for e in events {
        let data = match &e["data"] {
            Value::Null => String::new(),
            Value::Object(m) if m.is_empty() => String::new(),
            d => cut(&safe(&d.to_string()), 120),
        };
        // Fixed widths: one event per line, aligned while following.
        let line = format!(
            "{:>6}  {}  {:<22}  {} -> {}  {data}",
            e["seq"].as_i64().map_or("-".into(), |s| s.to_string()),
            e["at"].as_i64().map_or("-".into(), utc),
            safe(e["code"].as_str().unwrap_or("-")),
            safe(e["actor"].as_str().unwrap_or("-")),
            safe(e["subject"].as_str().unwrap_or("-")),
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    out.flush()?;
    Ok(())
}

pub async fn run(a: EventsArgs) -> Result<()> {
    let client = a.conn.client()?;
    let json_out = a.conn.json;
    let EventsCmd::Tail {
        lines,
        after,
        follow,
        interval_ms,
    } = a.cmd;
    let mut after = match after {
        Some(a) => a.max(0),
        None => (last_seq(&client).await? - lines.min(i64::MAX as u64) as i64).max(0),
    };
    loop {
        let (events, next) = page(&client, after, 1000).await?;
        {
            let mut out = std::io::stdout().lock();
            print(&mut out, json_out, &events)?;
        }
        after = next;
        if events.len() == 1000 {
            continue;
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
}
