//! Field checks for imported rows, beyond what the schema enforces: every
//! record of an export (or of a legacy state) must be a row the API could have
//! written. The database already checks types, `NOT NULL`, uniqueness, the
//! vocabularies of its `CHECK` constraints (roles, statuses, risks, streams)
//! and, after the last row, references; this module adds the rest:
//!
//! | what | rule |
//! | --- | --- |
//! | `id` (every table that has one) | 1..=64 characters of `[A-Za-z0-9_-]` |
//! | `tokens.id` | a token id: 12 characters of `[a-z0-9]` |
//! | `tokens.secret_hash` | 64 lowercase hex characters (SHA-256) |
//! | `agent_runs.recipe`, `pty_sessions.recipe` | a recipe name as the recipe catalog allows it (1..=64 of `[A-Za-z0-9._:-]`) that is not secret-shaped by the rules of `happyx verify-public` (a bearer token, key material, a high-entropy blob) |
//! | `agent_runs.recipe_plugin_sha256`, `pty_sessions.recipe_plugin_sha256`, `checkpoints.head_hash` | `null` (runs and terminals only) or 64 lowercase hex characters (SHA-256) |
//! | `agent_runs.host_id`, `pty_sessions.host_id`, `hosts.id` | `null` (runs and terminals only) or a host id as `crate::cluster::host_id` makes it: `h-` and 16 lowercase hex characters |
//! | `hosts.advertise_url` | what `cluster.advertise_url` accepts (`http`/`https`, a host, no credentials, query or fragment, at most 2,048 bytes) |
//! | `hosts.plugins` | a JSON object of plugin kind → SHA-256 (64 lowercase hex) |
//! | `at` and `*_at` | an integer time in Unix milliseconds, 0 ..= [`MAX_TIME_MS`] |
//! | counters and positions ([`NON_NEGATIVE`]) | ≥ 0 |
//! | `agent_run_outputs.length`, `transcript_chunks.length` | equal to the length of `data` |
//!
//! Across rows (after the last one, see `ImportTarget::chunk_overlap`): the
//! chunks of one run's stream, in `chunk_index` order, and of one terminal's
//! stream, in `byte_offset` order, never overlap or go backwards (a gap is
//! allowed: retention removes old chunks), and a terminal's output chunks end
//! at or before its `persisted_offset`.
//!
//! Errors name the column and the rule, never the value (values may be secrets).

use crate::store::transfer::{Cell, TableInfo};

/// Latest accepted time: 9999-12-31T23:59:59.999Z in Unix milliseconds.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Columns (in any table) that count or locate something and are never negative.
pub const NON_NEGATIVE: &[&str] = &[
    "byte_offset",
    "chunk_index",
    "cols",
    "epoch",
    "findings",
    "key_version",
    "last_sequence",
    "length",
    "ordinal",
    "persisted_offset",
    "rows",
    "schema_version",
    "sender_key_version",
    "seq",
    "sequence",
    "size",
    "stderr_bytes",
    "stdout_bytes",
    "uid",
    "unredacted_chunks",
    "withheld_chunks",
];

/// Checks one row (cells in the table's column order). `Err((column, message))`.
pub fn row(t: &TableInfo, cells: &[Cell]) -> Result<(), (String, String)> {
    let get = |name: &str| {
        t.columns
            .iter()
            .position(|c| c.name == name)
            .map(|i| &cells[i])
    };
    let fail = |col: &str, msg: &str| Err((col.to_string(), msg.to_string()));
    for (col, cell) in t.columns.iter().zip(cells) {
        let name = col.name.as_str();
        match cell {
            Cell::Integer(v)
                if (name == "at" || name.ends_with("_at")) && !(0..=MAX_TIME_MS).contains(v) =>
            {
                return fail(
                    name,
                    &format!("a time must be Unix milliseconds between 0 and {MAX_TIME_MS}"),
                );
            }
            Cell::Integer(v) if NON_NEGATIVE.contains(&name) && *v < 0 => {
                return fail(name, "must not be negative");
            }
            Cell::Text(id) if name == "id" && !crate::util::is_valid_id(id) => {
                return fail(
                    name,
                    "an id must be 1 to 64 characters of letters, digits, '-' and '_'",
                );
            }
            _ => {}
        }
    }
    match t.name.as_str() {
        "tokens" => {
            if let Some(Cell::Text(id)) = get("id")
                && !crate::auth::is_token_id(id)
            {
                return fail("id", "a token id is 12 characters of [a-z0-9]");
            }
            if let Some(Cell::Text(h)) = get("secret_hash")
                && !is_sha256_hex(h)
            {
                return fail(
                    "secret_hash",
                    "must be a SHA-256 in 64 lowercase hex characters",
                );
            }
        }
        "agent_runs" | "pty_sessions" => {
            if let Some(Cell::Text(h)) = get("host_id")
                && !is_host_id(h)
            {
                return fail("host_id", HOST_ID_RULE);
            }
            if let Some(Cell::Text(r)) = get("recipe") {
                recipe(r).map_err(|m| ("recipe".to_string(), m.to_string()))?;
            }
            if let Some(Cell::Text(h)) = get("recipe_plugin_sha256")
                && !is_sha256_hex(h)
            {
                return fail(
                    "recipe_plugin_sha256",
                    "must be a SHA-256 in 64 lowercase hex characters",
                );
            }
        }
        "hosts" => {
            if let Some(Cell::Text(h)) = get("id")
                && !is_host_id(h)
            {
                return fail("id", HOST_ID_RULE);
            }
            if let Some(Cell::Text(u)) = get("advertise_url") {
                let cluster = crate::config::ClusterConfig {
                    advertise_url: Some(u.clone()),
                    ..Default::default()
                };
                if cluster.checked_advertise_url().is_err() {
                    return fail(
                        "advertise_url",
                        "must be an http or https URL with a host and no credentials, query or fragment, at most 2048 bytes",
                    );
                }
            }
            if let Some(Cell::Text(p)) = get("plugins") {
                let ok = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(p)
                    .is_ok_and(|m| m.values().all(|v| v.as_str().is_some_and(is_sha256_hex)));
                if !ok {
                    return fail(
                        "plugins",
                        "must be a JSON object of plugin kind to SHA-256 (64 lowercase hex)",
                    );
                }
            }
        }
        "checkpoints" => {
            if let Some(Cell::Text(h)) = get("head_hash")
                && !is_sha256_hex(h)
            {
                return fail(
                    "head_hash",
                    "must be a SHA-256 in 64 lowercase hex characters",
                );
            }
        }
        "agent_run_outputs" | "transcript_chunks" => {
            if let (Some(Cell::Integer(len)), Some(Cell::Blob(data))) = (get("length"), get("data"))
                && usize::try_from(*len).ok() != Some(data.len())
            {
                return fail("length", "must equal the number of bytes in data");
            }
        }
        _ => {}
    }
    Ok(())
}

/// The recipe-name rule (see the module docs).
pub fn recipe(name: &str) -> Result<(), &'static str> {
    if !crate::plugins::validate::is_name(name) {
        return Err("a recipe name is 1 to 64 characters of [A-Za-z0-9._:-]");
    }
    if crate::public::scan::is_secret_shaped(name) {
        return Err(
            "looks like secret material (a token, key or high-entropy string), not a recipe name",
        );
    }
    Ok(())
}

const HOST_ID_RULE: &str = "a host id is 'h-' and 16 lowercase hex characters";

/// A host id as `crate::cluster::host_id` makes it.
fn is_host_id(s: &str) -> bool {
    s.strip_prefix("h-").is_some_and(|hex| {
        hex.len() == 16
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::transfer::{Affinity, ColumnInfo};

    #[test]
    fn recipe_names() {
        for ok in [
            "echo",
            "git-status",
            "list-files",
            "agent-cli",
            "shell",
            "a.b:c_d",
        ] {
            assert!(recipe(ok).is_ok(), "{ok}");
        }
        let token = format!(
            "hpx_abcdefghij12_{}",
            "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0uV-"
        );
        for bad in [
            "",
            "has space",
            &"x".repeat(65),
            &token,
            "AKIAIOSFODNN7EXAMPLEwJalrXUtnFEMIK7MDENG",
            &"ab".repeat(32),
        ] {
            assert!(recipe(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plugin_and_checkpoint_hashes_are_sha256_hex() {
        use crate::store::transfer::{Affinity, ColumnInfo};
        let col = |name: &str| ColumnInfo {
            name: name.into(),
            decl_type: "TEXT".into(),
            affinity: Affinity::of("TEXT"),
        };
        for (table, column) in [
            ("agent_runs", "recipe_plugin_sha256"),
            ("pty_sessions", "recipe_plugin_sha256"),
            ("checkpoints", "head_hash"),
        ] {
            let t = TableInfo::new(table, vec![col(column)]);
            assert!(row(&t, &[Cell::Text("ab".repeat(32))]).is_ok(), "{table}");
            for bad in ["AB".repeat(32), "ab".repeat(31), "secret".into()] {
                let err = row(&t, &[Cell::Text(bad)]).expect_err(table);
                assert_eq!(err.0, column);
                assert!(!err.1.contains("secret"), "the value is never echoed");
            }
        }
        let t = TableInfo::new("agent_runs", vec![col("recipe_plugin_sha256")]);
        assert!(
            row(&t, &[Cell::Null]).is_ok(),
            "runs from before the column"
        );
    }

    #[test]
    fn host_ids_urls_and_plugin_maps_are_checked() {
        let col = |n: &str| ColumnInfo {
            name: n.into(),
            decl_type: "TEXT".into(),
            affinity: Affinity::Text,
        };
        let hosts = TableInfo::new(
            "hosts",
            vec![col("id"), col("advertise_url"), col("plugins")],
        );
        let sha = "a".repeat(64);
        let good = |id: &str, url: &str, plugins: String| {
            row(
                &hosts,
                &[
                    Cell::Text(id.into()),
                    Cell::Text(url.into()),
                    Cell::Text(plugins),
                ],
            )
        };
        let plugins = format!("{{\"redactor\":\"{sha}\"}}");
        assert!(
            good(
                "h-0123456789abcdef",
                "http://10.0.0.5:7878",
                plugins.clone()
            )
            .is_ok()
        );
        for (id, url, p, column) in [
            ("h-0123456789ABCDEF", "http://h:1", plugins.clone(), "id"),
            ("h-0123456789abcde", "http://h:1", plugins.clone(), "id"),
            (
                "h-0123456789abcdef",
                "http://user:pw@h:1",
                plugins.clone(),
                "advertise_url",
            ),
            (
                "h-0123456789abcdef",
                "file:///etc",
                plugins.clone(),
                "advertise_url",
            ),
            (
                "h-0123456789abcdef",
                "http://h:1",
                "[]".to_string(),
                "plugins",
            ),
            (
                "h-0123456789abcdef",
                "http://h:1",
                "{\"redactor\":\"x\"}".to_string(),
                "plugins",
            ),
        ] {
            let Err((c, message)) = good(id, url, p) else {
                panic!("{id} {url} must be refused");
            };
            assert_eq!(c, column);
            assert!(!message.contains("pw"), "{message}");
        }
        let runs = TableInfo::new("agent_runs", vec![col("host_id")]);
        assert!(row(&runs, &[Cell::Null]).is_ok());
        assert!(row(&runs, &[Cell::Text("h-0123456789abcdef".into())]).is_ok());
        assert!(row(&runs, &[Cell::Text("../../etc".into())]).is_err());
    }

    #[test]
    fn time_bounds_are_inclusive() {
        use crate::store::transfer::{Affinity, ColumnInfo};
        let t = TableInfo::new(
            "prunes",
            vec![ColumnInfo {
                name: "at".into(),
                decl_type: "BIGINT".into(),
                affinity: Affinity::of("BIGINT"),
            }],
        );
        assert!(row(&t, &[Cell::Integer(0)]).is_ok());
        assert!(row(&t, &[Cell::Integer(MAX_TIME_MS)]).is_ok());
        assert!(row(&t, &[Cell::Integer(-1)]).is_err());
        assert!(row(&t, &[Cell::Integer(MAX_TIME_MS + 1)]).is_err());
    }
}
