//! Checks on everything a plugin returns before the host uses it.
//!
//! Each function returns the reason a value is refused; the caller wraps it
//! in `PluginError::BadResult`. Reasons never quote guest-chosen text.

use std::collections::BTreeSet;

use super::types::{Finding, Recipe};

/// Most findings accepted for one call.
pub const MAX_FINDINGS: usize = 100_000;
/// Most recipes in a catalog.
pub const MAX_RECIPES: usize = 256;
/// Most parameters of one recipe.
pub const MAX_PARAMS: usize = 32;
/// Longest accepted name (rule, recipe, parameter, plugin).
pub const MAX_NAME: usize = 64;
/// Longest accepted description.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest program path in a rendered command.
pub const MAX_PROGRAM: usize = 4096;
/// Most arguments in a rendered command.
pub const MAX_ARGS: usize = 1024;
/// Largest total size of a rendered argument vector.
pub const MAX_ARGS_BYTES: usize = 256 * 1024;
/// Longest accepted run timeout (24 h).
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// A name: 1..=64 chars of `[A-Za-z0-9._:-]`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// Keeps at most `max` chars of `s`, replacing control characters, so a
/// guest-provided message can be shown safely in one line.
pub fn clean_text(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Converts and checks raw findings against the data length.
pub fn findings(
    raw: impl IntoIterator<Item = (String, u64, u64), IntoIter: ExactSizeIterator>,
    len: usize,
) -> Result<Vec<Finding>, String> {
    let raw = raw.into_iter();
    if raw.len() > MAX_FINDINGS.min(len.saturating_mul(2).max(16)) {
        return Err(format!("{} findings for {len} bytes", raw.len()));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, (rule, start, end)) in raw.enumerate() {
        if !is_name(&rule) {
            return Err(format!("finding {i} has an invalid rule name"));
        }
        let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
            return Err(format!("finding {i} is out of range"));
        };
        if start >= end || end > len {
            return Err(format!(
                "finding {i} has range {start}..{end}, outside 0..{len} or empty"
            ));
        }
        out.push(Finding { rule, start, end });
    }
    out.sort_by_key(|a| (a.start, a.end));
    Ok(out)
}

/// Checks a catalog: non-empty, bounded, names valid and unique.
pub fn catalog(recipes: &[Recipe]) -> Result<(), String> {
    if recipes.is_empty() {
        return Err("empty catalog".into());
    }
    if recipes.len() > MAX_RECIPES {
        return Err(format!("more than {MAX_RECIPES} recipes"));
    }
    let mut names = BTreeSet::new();
    for (i, r) in recipes.iter().enumerate() {
        if !is_name(&r.name) {
            return Err(format!("recipe {i} has an invalid name"));
        }
        if !names.insert(r.name.as_str()) {
            return Err(format!("recipe {i} repeats a name"));
        }
        if r.description.len() > MAX_DESCRIPTION {
            return Err(format!("recipe {i} has an oversized description"));
        }
        if r.params.len() > MAX_PARAMS {
            return Err(format!("recipe {i} has more than {MAX_PARAMS} params"));
        }
        let mut params = BTreeSet::new();
        for p in &r.params {
            if !is_name(&p.name) || !params.insert(p.name.as_str()) {
                return Err(format!("recipe {i} has an invalid or repeated param name"));
            }
            if p.description.len() > MAX_DESCRIPTION {
                return Err(format!("recipe {i} has an oversized param description"));
            }
        }
    }
    Ok(())
}

/// Checks a rendered command.
pub fn command(program: &str, args: &[String], timeout_ms: Option<u64>) -> Result<(), String> {
    if program.is_empty() || program.len() > MAX_PROGRAM || program.contains('\0') {
        return Err("empty, oversized or NUL-containing program".into());
    }
    if args.len() > MAX_ARGS {
        return Err(format!("more than {MAX_ARGS} arguments"));
    }
    let mut total = 0usize;
    for (i, a) in args.iter().enumerate() {
        if a.contains('\0') {
            return Err(format!("argument {i} contains NUL"));
        }
        total = total.saturating_add(a.len());
    }
    if total > MAX_ARGS_BYTES {
        return Err(format!("arguments exceed {MAX_ARGS_BYTES} bytes"));
    }
    if let Some(t) = timeout_ms
        && (t == 0 || t > MAX_TIMEOUT_MS)
    {
        return Err(format!("timeout {t} ms outside 1..={MAX_TIMEOUT_MS}"));
    }
    Ok(())
}
