//! Resource samples: the host's RSS, open descriptors and threads (from `/proc/PID`), the
//! `happyx pty-holder` processes of the same binary (count, summed RSS, the sentinel's own),
//! the database and WAL file sizes, and the bytes held in the kinds the retention pass governs
//! (read from the database read-only). Latency figures per operation come from [`Stats`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::stats::OpFigures;

/// One sample.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the workload started.
    pub t: f64,
    /// Host lifetime (1 = first start); 0 when the host is not ours.
    pub epoch: u64,
    pub host_up: bool,
    pub host_rss: Option<u64>,
    pub host_fds: Option<u64>,
    pub host_threads: Option<u64>,
    pub holders: u64,
    pub holders_rss: u64,
    pub sentinel_holder_rss: Option<u64>,
    pub db_bytes: Option<u64>,
    pub wal_bytes: Option<u64>,
    /// Bytes held per retention kind (`run-output`, `transcript-chunk`, `envelope`, `event`).
    pub retained: BTreeMap<String, u64>,
    pub ops: BTreeMap<String, OpFigures>,
    pub errors_total: u64,
    pub acknowledged: u64,
}

/// Fields of `/proc/PID/status` we read.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcStatus {
    pub rss: u64,
    pub threads: u64,
}

pub fn proc_status(pid: u32) -> Option<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse_status(&text))
}

/// Parses `VmRSS` (kB) and `Threads` from a `/proc/PID/status` text.
pub fn parse_status(text: &str) -> ProcStatus {
    let mut s = ProcStatus::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            s.rss = kb * 1024;
        } else if let Some(v) = line.strip_prefix("Threads:") {
            s.threads = v.trim().parse().unwrap_or(0);
        }
    }
    s
}

pub fn open_fds(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64)
}

/// The parent pid from `/proc/PID/stat`.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Pids of `pty-holder` processes running `bin`.
pub fn holder_pids(bin: &Path) -> Vec<u32> {
    let want = std::fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let is_holder = cmdline.split(|b| *b == 0).nth(1) == Some(b"pty-holder".as_slice());
        if !is_holder {
            continue;
        }
        let exe: Option<PathBuf> = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.as_deref() == Some(want.as_path()) {
            out.push(pid);
        }
    }
    out
}

/// Size of a file, `None` when it does not exist.
pub fn file_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// Bytes per retention kind, read from the database file read-only.
pub async fn retained(db: &Path) -> BTreeMap<String, u64> {
    use sqlx::Connection;
    let mut out = BTreeMap::new();
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .busy_timeout(std::time::Duration::from_secs(2));
    let Ok(mut conn) = sqlx::sqlite::SqliteConnection::connect_with(&opts).await else {
        return out;
    };
    let queries = [
        (
            "run-output",
            "SELECT COALESCE(SUM(length), 0) FROM agent_run_outputs",
        ),
        (
            "transcript-chunk",
            "SELECT COALESCE(SUM(length), 0) FROM transcript_chunks",
        ),
        (
            "envelope",
            "SELECT COALESCE(SUM(LENGTH(ciphertext)), 0) FROM envelopes",
        ),
        ("event", "SELECT COALESCE(SUM(LENGTH(data)), 0) FROM events"),
    ];
    for (kind, q) in queries {
        if let Ok(v) = sqlx::query_scalar::<_, i64>(q).fetch_one(&mut conn).await {
            out.insert(kind.to_string(), v.max(0) as u64);
        }
    }
    let _ = conn.close().await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_parse() {
        let s = parse_status("Name:\thappyx\nVmRSS:\t  12345 kB\nThreads:\t17\n");
        assert_eq!(s.rss, 12345 * 1024);
        assert_eq!(s.threads, 17);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(proc_status(me).is_some_and(|s| s.rss > 0 && s.threads > 0));
        assert!(open_fds(me).is_some_and(|n| n > 0));
        assert!(parent_pid(me).is_some());
    }
}
