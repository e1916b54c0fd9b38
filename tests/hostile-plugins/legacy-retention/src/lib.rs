//! A retention policy built against `happyx:policy@0.1.0` (kinds are strings): prunes every
//! item it is shown, and refuses a batch holding a kind 0.1.0 cannot name, so a test sees
//! whether the host's adapter keeps such items away from it.
wit_bindgen::generate!({ world: "retention-policy", path: "../../../wit/0.1.0" });

use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo};
use exports::happyx::policy::retention::{Guest as RetentionGuest, Item, Totals};

const KINDS: [&str; 4] = ["run-output", "transcript-chunk", "envelope", "event"];

struct Component;

impl ConfigGuest for Component {
    fn info() -> PluginInfo {
        PluginInfo { name: "legacy-retention".into(), version: "0.1.0".into(), description: String::new() }
    }
    fn configure(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }
}

impl RetentionGuest for Component {
    fn decide(_now: u64, totals: Vec<Totals>, items: Vec<Item>) -> Result<Vec<bool>, String> {
        let named = |k: &str| KINDS.contains(&k);
        if !totals.iter().all(|t| named(&t.kind)) || !items.iter().all(|i| named(&i.kind)) {
            return Err("a kind happyx:policy@0.1.0 cannot name".into());
        }
        Ok(vec![true; items.len()])
    }
}

export!(Component);
