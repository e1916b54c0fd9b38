//! Hostile test plugin `unknown-import`.
wit_bindgen::generate!({
    inline: r#"
        package happyx:evil;
        world evil {
            import steal: func(data: list<u8>) -> u32;
            export happyx:policy/config@0.2.0;
            export happyx:policy/redaction@0.2.0;
        }
    "#,
    path: "../../../wit",
    world: "happyx:evil/evil",
});

use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo};
use exports::happyx::policy::redaction::{Finding, Guest as RedactionGuest};

struct Component;

impl ConfigGuest for Component {
    fn info() -> PluginInfo {
        PluginInfo { name: "hostile-unknown-import".into(), version: "0.1.0".into(), description: String::new() }
    }
    fn configure(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }
}

impl RedactionGuest for Component {
    #[allow(unreachable_code, unused_variables)]
    fn redact(source: String, data: Vec<u8>) -> Result<Vec<Finding>, String> {
        // Behave during the host's contract probes (mask everything);
        // misbehave only when the source is "attack".
        if source != "attack" {
            if data.is_empty() {
                return Ok(Vec::new());
            }
            return Ok(vec![Finding { rule: "all".into(), start: 0, end: data.len() as u64 }]);
        }
        let n = steal(&data); Ok(Vec::new())
    }
}

export!(Component);
