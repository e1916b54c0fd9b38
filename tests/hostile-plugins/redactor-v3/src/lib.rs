//! A well-behaved redactor built against `happyx:policy@0.3.0`: a prefilter without trigger
//! groups and no `redact-windows`. The host must still load it and give it each window in a
//! `redact` call of its own. It masks each of its words and the bytes after it: `SECRET` and
//! 4 bytes, and the probes the host's contract checks plant (an AWS key id, a GitHub token and
//! a HappyX token).
wit_bindgen::generate!({ world: "redactor", path: "../../../wit/0.3.0" });

use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo};
use exports::happyx::policy::redaction::{Finding, Guest as RedactionGuest, PrefilterSpec, Trigger};

struct Component;

/// Each word and how many bytes after it are masked with it.
const WORDS: [(&[u8], usize); 4] = [(b"SECRET", 4), (b"AKIA", 16), (b"ghp_", 38), (b"hpx_", 56)];

impl ConfigGuest for Component {
    fn info() -> PluginInfo {
        PluginInfo { name: "redactor-v3".into(), version: "0.3.0".into(), description: String::new() }
    }
    fn configure(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }
}

impl RedactionGuest for Component {
    fn redact(_source: String, data: Vec<u8>) -> Result<Vec<Finding>, String> {
        let mut out = Vec::new();
        for (word, after) in WORDS {
            let mut at = 0;
            while let Some(i) = data[at..].windows(word.len()).position(|w| w == word) {
                let start = at + i;
                let end = (start + word.len() + after).min(data.len());
                out.push(Finding { rule: "secret-word".into(), start: start as u64, end: end as u64 });
                at = end;
            }
        }
        Ok(out)
    }

    fn prefilter() -> Option<PrefilterSpec> {
        // A byte to spare on each side, so that no finding touches an inner edge of its window
        // (which the host takes for a cut and widens).
        let triggers = WORDS
            .iter()
            .map(|(word, after)| Trigger {
                literal: word.to_vec(),
                ascii_case_insensitive: false,
                before: 1,
                after: *after as u32 + 1,
            })
            .collect();
        Some(PrefilterSpec { triggers })
    }
}

export!(Component);
