//! Sample secrets redactor (world `redactor`).
//!
//! The rules live in [`rules`]; this file only adapts them to the WIT
//! interface. The compiled rule set is built once per instance, in
//! `configure` (or on the first `redact` if the host never configured it).

mod rules;

use std::cell::RefCell;
use std::rc::Rc;

use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo as Info};
use exports::happyx::policy::redaction::{
    Finding, Guest as RedactionGuest, PrefilterSpec, Trigger, Window,
};

wit_bindgen::generate!({
    world: "redactor",
    path: "../../wit",
});

struct Component;

thread_local! {
    static RULES: RefCell<Option<Rc<rules::Rules>>> = const { RefCell::new(None) };
}

fn current_rules() -> Result<Rc<rules::Rules>, String> {
    if let Some(r) = RULES.with(|r| r.borrow().clone()) {
        return Ok(r);
    }
    let built = Rc::new(rules::Rules::new(&rules::Settings::default())?);
    RULES.with(|r| *r.borrow_mut() = Some(built.clone()));
    Ok(built)
}

impl ConfigGuest for Component {
    fn info() -> Info {
        Info {
            name: "secrets-redactor".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Masks private keys, cloud and forge tokens, JWTs, auth headers, \
                          password assignments, URL credentials and HappyX tokens"
                .to_string(),
        }
    }

    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        let built = Rc::new(rules::Rules::from_settings(&settings)?);
        RULES.with(|r| *r.borrow_mut() = Some(built));
        Ok(())
    }
}

fn findings(hits: Vec<rules::Hit>) -> Vec<Finding> {
    hits.into_iter()
        .map(|h| Finding {
            rule: h.rule.to_string(),
            start: h.start as u64,
            end: h.end as u64,
        })
        .collect()
}

impl RedactionGuest for Component {
    fn redact(_source: String, data: Vec<u8>) -> Result<Vec<Finding>, String> {
        Ok(findings(current_rules()?.scan(&data)))
    }

    /// Each window with the rules its groups name (a group is a rule's index).
    fn redact_windows(
        _source: String,
        data: Vec<u8>,
        windows: Vec<Window>,
    ) -> Result<Vec<Finding>, String> {
        let rules = current_rules()?;
        let mut ranges = Vec::with_capacity(windows.len());
        for w in &windows {
            // A reversed or out-of-range window is refused by `scan_windows`.
            let (Ok(start), Ok(end)) = (usize::try_from(w.start), usize::try_from(w.end)) else {
                return Err("a window is out of range".to_string());
            };
            ranges.push((start..end, w.groups.as_slice()));
        }
        Ok(findings(rules.scan_windows(&data, &ranges)?))
    }

    /// The rules' triggers (see `rules::Rules::triggers`); `none` if every
    /// rule is disabled and there are no extra literals.
    fn prefilter() -> Option<PrefilterSpec> {
        let rules = current_rules().ok()?;
        let triggers: Vec<Trigger> = rules
            .triggers()
            .iter()
            .map(|t| Trigger {
                literal: t.literal.clone(),
                ascii_case_insensitive: t.nocase,
                before: t.before,
                after: t.after,
                group: t.group,
            })
            .collect();
        (!triggers.is_empty()).then_some(PrefilterSpec { triggers })
    }
}

export!(Component);
