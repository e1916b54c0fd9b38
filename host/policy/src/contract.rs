//! Contract checks (built in, per world) and operator fixtures.
//!
//! Built-in checks call a loaded plugin on a fixed probe set and require
//! well-formed answers (every answer also passes the host's validation). A
//! redactor with a prefilter must miss nothing through it: on probes and on
//! every redaction fixture, each finding of a whole-input scan must be covered
//! by findings of the same rule through the prefilter.
//!
//! Fixtures live in `<dir>/<case>/` (one folder per case, run in name
//! order); `<dir>` is the folder for the plugin's interface (`redaction`,
//! `retention`, `recipes`), or a folder containing one of those:
//!
//! * `redaction/<case>/input.bin` + `expected.json`:
//!   `{"source": "stdout", "findings": [{"rule", "start", "end"}],
//!     "clean": false, "masked_excludes": ["..."]}` — every expected
//!   finding must be covered by a returned finding of the same rule;
//!   `clean: true` requires no findings at all; no string in
//!   `masked_excludes` may remain in the masked output.
//! * `retention/<case>/input.json` (`{"now", "totals": [...], "items": [...]}`,
//!   fields as in the WIT; `kind` is a WIT `kind` case name, e.g. `"leftover"`) +
//!   `expected.json` (`{"prune": [true, false, ...]}`).
//! * `recipes/<case>/input.json` (`{"name", "args": {...}}`) +
//!   `expected.json`: either `{"program", "args": [...], "risk"}` (and
//!   optionally `"timeout_ms"`) or `{"error": "unknown_recipe" |
//!   "missing_arg" | "unknown_arg" | "invalid_arg", "arg": "name"}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::Kind;
use super::masks::apply_masks;
use super::runtime::{Plugin, RawRender};
use super::types::{Finding, Item, RetentionKind, Risk, Totals};

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// Why it failed (host-written; never guest output).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Check {
    fn pass(name: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            passed: true,
            detail: String::new(),
        }
    }
    fn fail(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            passed: false,
            detail: detail.into(),
        }
    }
    fn from(name: &str, r: Result<(), String>) -> Check {
        match r {
            Ok(()) => Check::pass(name),
            Err(d) => Check::fail(name, d),
        }
    }
}

/// A GitHub token, AWS key id and HappyX token planted in the probes.
const PROBE_AWS: &str = "AKIAIOSFODNN7EXAMPLE";
const PROBE_GITHUB: &str = "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB";
const PROBE_HAPPYX: &str = "hpx_ab12cd34ef56_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

fn covered(findings: &[Finding], start: usize, end: usize) -> bool {
    let mut pos = start;
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| f.start);
    for f in sorted {
        if f.start <= pos && f.end > pos {
            pos = f.end;
        }
        if pos >= end {
            return true;
        }
    }
    pos >= end
}

fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn err_str(e: super::PluginError) -> String {
    format!("{} ({})", e, e.code())
}

/// Runs the built-in checks for the plugin's world.
pub fn builtin_checks(plugin: &Plugin) -> Vec<Check> {
    match plugin.kind {
        Kind::Redactor => redactor_checks(plugin),
        Kind::Retention => retention_checks(plugin),
        Kind::Recipes => recipe_checks(plugin),
    }
}

fn redactor_checks(p: &Plugin) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(Check::from(
        "redact-empty",
        p.redact("text", b"").map_err(err_str).and_then(|f| {
            if f.is_empty() {
                Ok(())
            } else {
                Err("findings on empty input".into())
            }
        }),
    ));
    for (name, secret) in [
        ("finds-aws-access-key", PROBE_AWS),
        ("finds-github-token", PROBE_GITHUB),
        ("finds-happyx-token", PROBE_HAPPYX),
    ] {
        let data = format!("$ deploy --verbose\nusing credential {secret} for upload\ndone\n");
        let start = data.find(secret).unwrap_or(0);
        let r = p
            .redact("stdout", data.as_bytes())
            .map_err(err_str)
            .and_then(|f| {
                if covered(&f, start, start + secret.len()) {
                    Ok(())
                } else {
                    Err("planted secret not fully covered by findings".into())
                }
            });
        out.push(Check::from(name, r));
    }
    let random = pseudo_random(64 * 1024, 0x9e37_79b9_7f4a_7c15);
    out.push(Check::from(
        "redact-random-64k",
        p.redact("pty-output", &random).map(|_| ()).map_err(err_str),
    ));
    if p.has_prefilter() {
        let mut planted = pseudo_random(16 * 1024, 7)
            .into_iter()
            .map(|b| b'a' + b % 26)
            .collect::<Vec<u8>>();
        for (i, secret) in [PROBE_AWS, PROBE_GITHUB, PROBE_HAPPYX].iter().enumerate() {
            let at = 1000 + i * 5000;
            planted[at] = b' ';
            planted[at + 1..at + 1 + secret.len()].copy_from_slice(secret.as_bytes());
            planted[at + 1 + secret.len()] = b' ';
        }
        let r = [&planted[..], &random[..]]
            .into_iter()
            .try_for_each(|data| prefilter_misses_nothing(p, "stdout", data));
        out.push(Check::from("prefilter-misses-nothing", r));
    }
    out
}

/// With a prefilter: every finding of a whole-input scan of `data` is covered by findings
/// of the same rule through the prefilter (extra findings are allowed: they only mask more).
fn prefilter_misses_nothing(p: &Plugin, source: &str, data: &[u8]) -> Result<(), String> {
    if !p.has_prefilter() {
        return Ok(());
    }
    let whole = p.redact_whole(source, data).map_err(err_str)?;
    let filtered = p.redact(source, data).map_err(err_str)?;
    for f in &whole {
        let same_rule: Vec<Finding> = filtered
            .iter()
            .filter(|g| g.rule == f.rule)
            .cloned()
            .collect();
        if !covered(&same_rule, f.start, f.end) {
            return Err(format!(
                "finding {}..{} of a whole-input scan is missed through the prefilter",
                f.start, f.end
            ));
        }
    }
    Ok(())
}

fn retention_checks(p: &Plugin) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(Check::from(
        "decide-empty",
        p.decide(0, &[], &[]).map(|_| ()).map_err(err_str),
    ));
    let now = 1_700_000_000_000u64;
    let kinds = RetentionKind::ALL;
    let items: Vec<Item> = (0..20)
        .map(|i| Item {
            kind: kinds[i % kinds.len()],
            id: format!("item-{i}"),
            created_at: now.saturating_sub((i as u64) * 86_400_000 * 40),
            bytes: 1000 * i as u64,
            session_id: (i % 2 == 0).then(|| format!("s{i}")),
        })
        .collect();
    let totals: Vec<Totals> = kinds
        .iter()
        .map(|k| Totals {
            kind: *k,
            count: 4,
            bytes: 40_000,
        })
        .collect();
    out.push(Check::from(
        "decide-one-per-item",
        p.decide(now, &totals, &items).map(|_| ()).map_err(err_str),
    ));
    out.push(Check::from(
        "decide-future-items",
        p.decide(0, &totals, &items).map(|_| ()).map_err(err_str),
    ));
    out
}

fn recipe_checks(p: &Plugin) -> Vec<Check> {
    let mut out = Vec::new();
    // The catalog was read and validated at load (non-empty, unique names).
    out.push(Check::pass("catalog-well-formed"));
    for r in p.catalog() {
        let args: Vec<(String, String)> = r
            .params
            .iter()
            .filter(|p| p.required)
            .map(|p| (p.name.clone(), "sample".to_string()))
            .collect();
        let res = match p.render_raw(&r.name, &args) {
            Ok(RawRender::Ok { .. }) | Ok(RawRender::InvalidArg(..)) => Ok(()),
            Ok(_) => Err("sample arguments refused as missing/unknown".to_string()),
            Err(e) => Err(err_str(e)),
        };
        out.push(Check::from(&format!("render-{}", r.name), res));
    }
    let res = match p.render_raw("happyx-no-such-recipe", &[]) {
        Ok(RawRender::UnknownRecipe) => Ok(()),
        Ok(_) => Err("an unknown recipe was not refused as unknown-recipe".to_string()),
        Err(e) => Err(err_str(e)),
    };
    out.push(Check::from("render-unknown-recipe", res));
    if let Some(r) = p.catalog().first() {
        let mut args: Vec<(String, String)> = r
            .params
            .iter()
            .map(|p| (p.name.clone(), "sample".to_string()))
            .collect();
        args.push(("happyx-probe-extra".into(), "x".into()));
        let res = match p.render_raw(&r.name, &args) {
            Ok(RawRender::UnknownArg(_)) => Ok(()),
            Ok(_) => Err("an unknown argument was not refused as unknown-arg".to_string()),
            Err(e) => Err(err_str(e)),
        };
        out.push(Check::from("render-unknown-arg", res));
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedactionExpected {
    #[serde(default = "default_source")]
    source: String,
    #[serde(default)]
    findings: Vec<Finding>,
    #[serde(default)]
    clean: bool,
    #[serde(default)]
    masked_excludes: Vec<String>,
}

fn default_source() -> String {
    "text".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionInput {
    now: u64,
    #[serde(default)]
    totals: Vec<Totals>,
    items: Vec<Item>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionExpected {
    prune: Vec<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeInput {
    name: String,
    #[serde(default)]
    args: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeExpected {
    #[serde(default)]
    program: Option<String>,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    risk: Option<Risk>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    arg: Option<String>,
}

/// The fixtures folder for `kind` under `dir`.
pub fn fixtures_dir(dir: &Path, kind: Kind) -> PathBuf {
    let nested = dir.join(kind.interface());
    if nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs every fixture case in `dir` (see the module docs).
pub fn fixture_checks(plugin: &Plugin, dir: &Path) -> Vec<Check> {
    let dir = fixtures_dir(dir, plugin.kind);
    let mut cases: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect(),
        Err(e) => return vec![Check::fail("fixtures", format!("{}: {e}", dir.display()))],
    };
    cases.sort();
    if cases.is_empty() {
        return vec![Check::fail(
            "fixtures",
            format!("no cases in {}", dir.display()),
        )];
    }
    cases
        .iter()
        .map(|case| {
            let name = format!(
                "fixture:{}/{}",
                plugin.kind.interface(),
                case.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
            let r = match plugin.kind {
                Kind::Redactor => redaction_case(plugin, case),
                Kind::Retention => retention_case(plugin, case),
                Kind::Recipes => recipe_case(plugin, case),
            };
            Check::from(&name, r)
        })
        .collect()
}

fn redaction_case(p: &Plugin, case: &Path) -> Result<(), String> {
    let input_path = case.join("input.bin");
    let input = std::fs::read(&input_path).map_err(|e| format!("{}: {e}", input_path.display()))?;
    let expected: RedactionExpected = read_json(&case.join("expected.json"))?;
    let found = p.redact(&expected.source, &input).map_err(err_str)?;
    if expected.clean && !found.is_empty() {
        return Err(format!("expected no findings, got {}", found.len()));
    }
    for e in &expected.findings {
        let same_rule: Vec<Finding> = found.iter().filter(|f| f.rule == e.rule).cloned().collect();
        if !covered(&same_rule, e.start, e.end) {
            return Err(format!(
                "expected {} at {}..{} not covered",
                e.rule, e.start, e.end
            ));
        }
    }
    prefilter_misses_nothing(p, &expected.source, &input)?;
    let masked = apply_masks(&input, &found);
    for s in &expected.masked_excludes {
        if !s.is_empty() && masked.windows(s.len()).any(|w| w == s.as_bytes()) {
            return Err("a `masked_excludes` string survived masking".into());
        }
    }
    Ok(())
}

fn retention_case(p: &Plugin, case: &Path) -> Result<(), String> {
    let input: RetentionInput = read_json(&case.join("input.json"))?;
    let expected: RetentionExpected = read_json(&case.join("expected.json"))?;
    let prune = p
        .decide(input.now, &input.totals, &input.items)
        .map_err(err_str)?;
    if prune != expected.prune {
        return Err(format!("expected {:?}, got {:?}", expected.prune, prune));
    }
    Ok(())
}

fn recipe_case(p: &Plugin, case: &Path) -> Result<(), String> {
    let input: RecipeInput = read_json(&case.join("input.json"))?;
    let expected: RecipeExpected = read_json(&case.join("expected.json"))?;
    let args: Vec<(String, String)> = input.args.into_iter().collect();
    let got = p.render_raw(&input.name, &args).map_err(err_str)?;
    let (code, arg) = match &got {
        RawRender::Ok { .. } => ("", None),
        RawRender::UnknownRecipe => ("unknown_recipe", None),
        RawRender::MissingArg(a) => ("missing_arg", Some(a.clone())),
        RawRender::UnknownArg(a) => ("unknown_arg", Some(a.clone())),
        RawRender::InvalidArg(a, _) => ("invalid_arg", Some(a.clone())),
    };
    if let Some(want) = &expected.error {
        if want != code {
            return Err(format!(
                "expected error {want}, got {}",
                if code.is_empty() { "success" } else { code }
            ));
        }
        if expected.arg.is_some() && expected.arg != arg {
            return Err(format!("expected arg {:?}, got {:?}", expected.arg, arg));
        }
        return Ok(());
    }
    let RawRender::Ok {
        program,
        args,
        risk,
        timeout_ms,
    } = got
    else {
        return Err(format!("expected success, got {code}"));
    };
    if let Some(want) = &expected.program
        && *want != program
    {
        return Err(format!("expected program {want}, got {program}"));
    }
    if let Some(want) = &expected.args
        && *want != args
    {
        return Err(format!("expected args {want:?}, got {args:?}"));
    }
    if let Some(want) = expected.risk
        && want != risk
    {
        return Err(format!(
            "expected risk {}, got {}",
            want.as_str(),
            risk.as_str()
        ));
    }
    if expected.timeout_ms.is_some() && expected.timeout_ms != timeout_ms {
        return Err(format!(
            "expected timeout {:?}, got {timeout_ms:?}",
            expected.timeout_ms
        ));
    }
    Ok(())
}
