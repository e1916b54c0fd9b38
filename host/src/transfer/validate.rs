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

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

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
