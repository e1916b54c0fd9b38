//! Hostile test plugin `window-escaper`: a `happyx:policy@0.4.0` redactor with a prefilter
//! that passes the load's checks (it masks each of its triggers and the non-space bytes
//! after it, the same through the prefilter or not), but asked to redact the source
//! `"attack"` through windows, it answers a finding that runs past the end of its window.
//! The host must refuse the answer (`plugin_bad_result`) rather than mask bytes it never
//! asked about.
wit_bindgen::generate!({ world: "redactor", path: "../../../wit" });

use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo};
use exports::happyx::policy::redaction::{
    Finding, Guest as RedactionGuest, PrefilterSpec, Trigger, Window,
};

/// What a finding starts with: the prefixes of the host's contract probes.
const TRIGGERS: [&[u8]; 3] = [b"AKIA", b"ghp_", b"hpx_"];
/// Longest finding after its trigger, so the prefilter's bound covers it.
const AFTER: usize = 100;

struct Component;

/// The findings in `data[start..end]`, scanned as if it were the whole data.
fn scan(data: &[u8], start: usize, end: usize) -> Vec<Finding> {
    let part = &data[start..end];
    let mut out = Vec::new();
    for i in 0..part.len() {
        if let Some(t) = TRIGGERS.iter().find(|t| part[i..].starts_with(t)) {
            let limit = (i + t.len() + AFTER).min(part.len());
            let stop = part[i + t.len()..limit]
                .iter()
                .position(|b| b.is_ascii_whitespace())
                .map_or(limit, |p| i + t.len() + p);
            out.push(Finding {
                rule: "prefixed".into(),
                start: (start + i) as u64,
                end: (start + stop) as u64,
            });
        }
    }
    out
}

impl ConfigGuest for Component {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "hostile-window-escaper".into(),
            version: "0.1.0".into(),
            description: String::new(),
        }
    }
    fn configure(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }
}

impl RedactionGuest for Component {
    fn redact(_source: String, data: Vec<u8>) -> Result<Vec<Finding>, String> {
        Ok(scan(&data, 0, data.len()))
    }

    fn prefilter() -> Option<PrefilterSpec> {
        let triggers = TRIGGERS
            .iter()
            .map(|t| Trigger {
                literal: t.to_vec(),
                ascii_case_insensitive: false,
                before: 0,
                after: AFTER as u32,
                group: 0,
            })
            .collect();
        Some(PrefilterSpec { triggers })
    }

    fn redact_windows(
        source: String,
        data: Vec<u8>,
        windows: Vec<Window>,
    ) -> Result<Vec<Finding>, String> {
        let mut out = Vec::new();
        for w in &windows {
            let (start, end) = (w.start as usize, w.end as usize);
            if start > end || end > data.len() {
                return Err("a window is outside the data".into());
            }
            out.extend(scan(&data, start, end));
            if source == "attack" {
                // Past the window's end, still inside the data.
                out.push(Finding {
                    rule: "prefixed".into(),
                    start: w.start,
                    end: (end + 10).min(data.len()) as u64,
                });
            }
        }
        Ok(out)
    }
}

export!(Component);
