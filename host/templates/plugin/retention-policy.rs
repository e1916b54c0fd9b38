//! A retention policy: prunes each kind of stored item once it is older than its maximum age
//! (setting `max_age_ms.<kind>`, e.g. `max_age_ms.run-output = "604800000"`), and never
//! anything else. Items come in batches of metadata (never contents); the host deletes what
//! this answers `true` for, in bounded batches, and records each pass.

use std::cell::RefCell;
use std::collections::BTreeMap;

use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo};
use exports::happyx::policy::retention::{Guest as RetentionGuest, Item, Kind, Totals};

wit_bindgen::generate!({
    world: "retention-policy",
    path: "wit",
});

/// The item kinds the host asks about (the WIT `kind` enum), with their setting names.
const KINDS: [(Kind, &str); 5] = [
    (Kind::RunOutput, "run-output"),
    (Kind::TranscriptChunk, "transcript-chunk"),
    (Kind::Envelope, "envelope"),
    (Kind::Event, "event"),
    (Kind::Leftover, "leftover"),
];

thread_local! {
    static MAX_AGE_MS: RefCell<BTreeMap<u8, u64>> = RefCell::new(BTreeMap::new());
}

struct Component;

impl ConfigGuest for Component {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Prunes stored items older than a maximum age per kind".to_string(),
        }
    }

    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        let mut ages = BTreeMap::new();
        for (key, value) in &settings {
            let Some(kind) = key.strip_prefix("max_age_ms.") else {
                return Err(format!("unknown setting {key}"));
            };
            let Some((kind, _)) = KINDS.iter().find(|(_, name)| *name == kind) else {
                let names: Vec<&str> = KINDS.iter().map(|(_, n)| *n).collect();
                return Err(format!("{key}: unknown item kind (one of {})", names.join(", ")));
            };
            let ms = value
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("{key}: expected milliseconds"))?;
            ages.insert(*kind as u8, ms);
        }
        MAX_AGE_MS.with(|m| *m.borrow_mut() = ages);
        Ok(())
    }
}

impl RetentionGuest for Component {
    fn decide(now: u64, _totals: Vec<Totals>, items: Vec<Item>) -> Result<Vec<bool>, String> {
        MAX_AGE_MS.with(|m| {
            let ages = m.borrow();
            Ok(items
                .iter()
                .map(|item| match ages.get(&(item.kind as u8)) {
                    Some(max) => now.saturating_sub(item.created_at) > *max,
                    None => false,
                })
                .collect())
        })
    }
}

export!(Component);
