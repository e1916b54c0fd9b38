//! `happyx enroll create`: a single-use device enrollment code (`POST /v1/enrollments`).
//!
//! The code alone goes to stdout, so `happyx device enroll --code "$(happyx enroll create)"`
//! works; when it expires is said on stderr.

use std::io::Write;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::Conn;
use super::client::check_id;
use super::table::{json_line, relative, utc};

#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub cmd: EnrollCmd,
}

#[derive(Debug, Subcommand)]
pub enum EnrollCmd {
    /// Print a single-use enrollment code (operator).
    Create {
        /// A name for the device that enrolls with it.
        #[arg(long)]
        name: Option<String>,
        /// How long the code stays valid: e.g. 90s, 15m, 2h, 7d (default: the host's, 15m).
        #[arg(long, value_parser = parse_duration_ms)]
        ttl: Option<i64>,
        /// A re-enrollment code: a new key version for this existing device.
        #[arg(long, value_name = "DEVICE_ID")]
        reenroll: Option<String>,
    },
}

/// `90s`, `15m`, `2h`, `7d` (or plain seconds) as milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 2h or 7d"))?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?} is not a duration like 90s, 15m, 2h or 7d")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too long"))
}

pub async fn run(a: EnrollArgs) -> Result<()> {
    let client = a.conn.client()?;
    let mut out = std::io::stdout().lock();
    match a.cmd {
        EnrollCmd::Create {
            name,
            ttl,
            reenroll,
        } => {
            let mut body = Map::new();
            if let Some(n) = name {
                body.insert("name".into(), json!(n));
            }
            if let Some(t) = ttl {
                body.insert("ttl_ms".into(), json!(t));
            }
            if let Some(d) = reenroll {
                let d = check_id("device", &d)?;
                body.insert("kind".into(), json!("reenroll"));
                body.insert("device_id".into(), json!(d));
            }
            let issued: Value = client.post("/v1/enrollments", &Value::Object(body)).await?;
            let Some(code) = issued["code"].as_str() else {
                bail!("the host's answer holds no enrollment code");
            };
            if a.conn.json {
                return json_line(&mut out, &issued);
            }
            writeln!(out, "{code}")?;
            if let Some(at) = issued["expires_at"].as_i64() {
                eprintln!("single use; expires {} ({})", relative(at), utc(at));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(super::parse_duration_ms("15m"), Ok(900_000));
        assert_eq!(super::parse_duration_ms("2"), Ok(2000));
        assert!(super::parse_duration_ms("2w").is_err());
    }
}
