//! Sample retention policy (world `retention-policy`).
//!
//! Per item kind: a maximum age, a maximum total size and a maximum count.
//! Settings are `<kind>.max_age_ms`, `<kind>.max_bytes`, `<kind>.max_count`
//! with a decimal value, or `off` for no limit. Defaults:
//!
//! | kind               | max_age_ms        | max_bytes | max_count |
//! | ------------------ | ----------------- | --------- | --------- |
//! | `run-output`       | 30 days           | 1 GiB     | off       |
//! | `transcript-chunk` | 30 days           | 1 GiB     | off       |
//! | `envelope`         | 90 days           | off       | off       |
//! | `event`            | 365 days          | off       | 1 000 000 |
//! | `leftover`         | 1 day             | off       | off       |
//!
//! An item older than its kind's age limit is pruned. Size and count limits
//! prune the oldest items first (items arrive oldest first per kind) until the
//! kind's totals, which cover everything stored, fit. `leftover` items are the
//! tokens of used, denied or expired approvals, used or expired enrollment codes
//! and spent or expired attach tickets (their age counts from their creation).

use std::cell::RefCell;
use std::collections::BTreeMap;

use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo as Info};
use exports::happyx::policy::retention::{Guest as RetentionGuest, Item, Kind, Totals};

wit_bindgen::generate!({
    world: "retention-policy",
    path: "../../wit",
});

const DAY_MS: u64 = 24 * 60 * 60 * 1000;
const GIB: u64 = 1 << 30;
/// Every kind with its setting prefix (the WIT case name).
const KINDS: [(Kind, &str); 5] = [
    (Kind::RunOutput, "run-output"),
    (Kind::TranscriptChunk, "transcript-chunk"),
    (Kind::Envelope, "envelope"),
    (Kind::Event, "event"),
    (Kind::Leftover, "leftover"),
];

/// A kind as a map key.
fn key(kind: Kind) -> u8 {
    kind as u8
}

#[derive(Clone, Copy, Default)]
struct Limits {
    max_age_ms: Option<u64>,
    max_bytes: Option<u64>,
    max_count: Option<u64>,
}

fn defaults() -> BTreeMap<u8, Limits> {
    let mut m = BTreeMap::new();
    m.insert(
        key(Kind::RunOutput),
        Limits { max_age_ms: Some(30 * DAY_MS), max_bytes: Some(GIB), max_count: None },
    );
    m.insert(
        key(Kind::TranscriptChunk),
        Limits { max_age_ms: Some(30 * DAY_MS), max_bytes: Some(GIB), max_count: None },
    );
    m.insert(
        key(Kind::Envelope),
        Limits { max_age_ms: Some(90 * DAY_MS), max_bytes: None, max_count: None },
    );
    m.insert(
        key(Kind::Event),
        Limits { max_age_ms: Some(365 * DAY_MS), max_bytes: None, max_count: Some(1_000_000) },
    );
    m.insert(
        key(Kind::Leftover),
        Limits { max_age_ms: Some(DAY_MS), max_bytes: None, max_count: None },
    );
    m
}

thread_local! {
    static LIMITS: RefCell<BTreeMap<u8, Limits>> = RefCell::new(defaults());
}

fn parse_limit(key: &str, value: &str) -> Result<Option<u64>, String> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    v.parse::<u64>()
        .map(Some)
        .map_err(|_| format!("{key}: expected a non-negative integer or `off`"))
}

struct Component;

impl ConfigGuest for Component {
    fn info() -> Info {
        Info {
            name: "age-and-size-retention".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Prunes by age, total size and count per kind, oldest first".to_string(),
        }
    }

    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        let mut limits = defaults();
        for (key, value) in &settings {
            let Some((kind, field)) = key.split_once('.') else {
                return Err(format!("unknown setting `{key}`"));
            };
            let Some((kind, _)) = KINDS.iter().copied().find(|(_, name)| *name == kind) else {
                return Err(format!("unknown setting `{key}` (unknown kind)"));
            };
            let entry = limits.entry(self::key(kind)).or_default();
            let parsed = parse_limit(key, value)?;
            match field {
                "max_age_ms" => entry.max_age_ms = parsed,
                "max_bytes" => entry.max_bytes = parsed,
                "max_count" => entry.max_count = parsed,
                _ => return Err(format!("unknown setting `{key}`")),
            }
        }
        LIMITS.with(|l| *l.borrow_mut() = limits);
        Ok(())
    }
}

impl RetentionGuest for Component {
    fn decide(now: u64, totals: Vec<Totals>, items: Vec<Item>) -> Result<Vec<bool>, String> {
        let limits = LIMITS.with(|l| l.borrow().clone());
        // Remaining (bytes, count) per kind after what this batch prunes.
        let mut remaining: BTreeMap<u8, (u64, u64)> = BTreeMap::new();
        for t in &totals {
            let e = remaining.entry(key(t.kind)).or_insert((0, 0));
            e.0 = e.0.saturating_add(t.bytes);
            e.1 = e.1.saturating_add(t.count);
        }
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let Some(limit) = limits.get(&key(item.kind)) else {
                out.push(false);
                continue;
            };
            let age = now.saturating_sub(item.created_at);
            let too_old = limit.max_age_ms.is_some_and(|max| age > max);
            let (bytes, count) = remaining.get(&key(item.kind)).copied().unwrap_or((0, 0));
            let too_big = limit.max_bytes.is_some_and(|max| bytes > max);
            let too_many = limit.max_count.is_some_and(|max| count > max);
            let prune = too_old || too_big || too_many;
            if prune && let Some(e) = remaining.get_mut(&key(item.kind)) {
                e.0 = e.0.saturating_sub(item.bytes);
                e.1 = e.1.saturating_sub(1);
            }
            out.push(prune);
        }
        Ok(out)
    }
}

export!(Component);
