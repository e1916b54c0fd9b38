//! A minimal redactor: finds AWS access key ids, GitHub tokens and HappyX
//! tokens with small hand-written scanners (no dependencies), and rejects
//! any setting. Replace `scan` with your own rules, and `prefilter` with the
//! literals they contain (or return `None` to be given every chunk whole).
//! Each trigger names a group of rules; `redact_windows` gets the windows
//! around trigger occurrences with their groups. This sample has one group and
//! scans each window with all of `scan`; a plugin with many rules runs only
//! the rules of a window's groups.
//!
//! Build with `cargo build --target wasm32-wasip2 --profile guest`, then run
//! `happyx plugin check target/wasm32-wasip2/guest/my_redactor.wasm`.

use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo};
use exports::happyx::policy::redaction::{Finding, Guest as RedactionGuest, PrefilterSpec, Trigger, Window};

wit_bindgen::generate!({
    world: "redactor",
    path: "../../wit",
});

struct Component;

impl ConfigGuest for Component {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "my-redactor".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Example redactor built from the HappyX plugin template".to_string(),
        }
    }

    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        match settings.first() {
            None => Ok(()),
            Some((key, _)) => Err(format!("unknown setting `{key}`")),
        }
    }
}

impl RedactionGuest for Component {
    fn redact(_source: String, data: Vec<u8>) -> Result<Vec<Finding>, String> {
        Ok(scan(&data))
    }

    /// Literals every finding of `scan` contains, so that the host searches chunks for
    /// them natively and calls `redact` only on windows around them (see `prefilter` in
    /// wit/happyx-policy.wit). `before`/`after`: how far around the literal a finding and
    /// the bytes `scan` looks at reach, with a byte to spare; a GitHub token is an unbounded
    /// run, found up to the window's end when cut, so `after` only has to hold its shortest
    /// form (4 + 30 characters).
    fn prefilter() -> Option<PrefilterSpec> {
        let trigger = |literal: &str, after: u32| Trigger {
            literal: literal.as_bytes().to_vec(),
            ascii_case_insensitive: false,
            before: 1,
            after,
            group: 0,
        };
        Some(PrefilterSpec {
            triggers: vec![
                trigger("AKIA", 18),
                trigger("ASIA", 18),
                trigger("ghp_", 64),
                trigger("gho_", 64),
                trigger("ghs_", 64),
                trigger("hpx_", 64),
            ],
        })
    }

    /// Each window `data[start..end]` scanned as if it were the whole data, findings in
    /// `data` offsets. Every window here has group 0: all of `scan` runs on it.
    fn redact_windows(_source: String, data: Vec<u8>, windows: Vec<Window>) -> Result<Vec<Finding>, String> {
        let mut out = Vec::new();
        for w in &windows {
            let part = data.get(w.start as usize..w.end as usize).ok_or("a window is outside the data")?;
            out.extend(scan(part).into_iter().map(|f| Finding { start: f.start + w.start, end: f.end + w.start, ..f }));
        }
        Ok(out)
    }
}

fn is_upper_alnum(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Length of the run of bytes from `start` matching `pred`.
fn run(data: &[u8], start: usize, pred: fn(u8) -> bool) -> usize {
    data[start.min(data.len())..].iter().take_while(|b| pred(**b)).count()
}

fn scan(data: &[u8]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |rule: &str, start: usize, end: usize| {
        out.push(Finding { rule: rule.to_string(), start: start as u64, end: end as u64 });
    };
    let mut i = 0;
    while i < data.len() {
        let rest = &data[i..];
        if rest.starts_with(b"AKIA") || rest.starts_with(b"ASIA") {
            if run(data, i + 4, is_upper_alnum) == 16 {
                push("aws-access-key", i, i + 20);
                i += 20;
                continue;
            }
        } else if rest.starts_with(b"ghp_") || rest.starts_with(b"gho_") || rest.starts_with(b"ghs_") {
            let n = run(data, i + 4, |b| b.is_ascii_alphanumeric());
            if n >= 30 {
                push("github-token", i, i + 4 + n);
                i += 4 + n;
                continue;
            }
        } else if rest.starts_with(b"hpx_") {
            let id = run(data, i + 4, |b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if id == 12 && data.get(i + 16) == Some(&b'_') && run(data, i + 17, is_b64url) >= 43 {
                push("happyx-token", i, i + 60);
                i += 60;
                continue;
            }
        }
        i += 1;
    }
    out
}

export!(Component);
