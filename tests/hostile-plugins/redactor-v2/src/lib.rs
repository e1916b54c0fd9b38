//! A well-behaved redactor built against `happyx:policy@0.2.0` (no prefilter): the host must
//! still load it and give it whole chunks. It masks all of any non-empty input.
wit_bindgen::generate!({ world: "redactor", path: "../../../wit/0.2.0" });

use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo};
use exports::happyx::policy::redaction::{Finding, Guest as RedactionGuest};

struct Component;

impl ConfigGuest for Component {
    fn info() -> PluginInfo {
        PluginInfo { name: "redactor-v2".into(), version: "0.2.0".into(), description: String::new() }
    }
    fn configure(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }
}

impl RedactionGuest for Component {
    fn redact(_source: String, data: Vec<u8>) -> Result<Vec<Finding>, String> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![Finding { rule: "all".into(), start: 0, end: data.len() as u64 }])
    }
}

export!(Component);
