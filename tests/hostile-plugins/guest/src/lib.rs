//! The one guest shape the test components share, as macros.
//!
//! A hostile redactor behaves during the host's load-time contract probes (it masks
//! everything, so it passes them) and misbehaves only when asked to redact the source
//! `"attack"`: what it does then is the whole difference between two hostile components, so
//! it is the only thing each one writes. A test recipe book is a fixed catalogue (`echo`,
//! `hello`) whose name, version and WIT version vary.
//!
//! Both macros expand `wit_bindgen::generate!` in the calling crate, which must depend on
//! `wit-bindgen`; the WIT `path` is relative to that crate's folder.

/// A redactor that passes the contract probes and runs `attack` on the source `"attack"`.
///
/// ```text
/// hostile_guest::redactor! {
///     bindgen: { world: "redactor", path: "../../../wit" },
///     name: "hostile-looper",
///     attack: |data| { loop {} },
/// }
/// ```
///
/// `attack` is the body of `redact` (returning `Result<Vec<Finding>, String>`) with the
/// input bytes bound to the given name; `Finding` and anything the WIT world imports are in
/// scope.
#[macro_export]
macro_rules! redactor {
    (bindgen: { $($bindgen:tt)* }, name: $name:literal, attack: |$data:ident| $attack:block $(,)?) => {
        $crate::redactor! {
            bindgen: { $($bindgen)* },
            name: $name,
            attack: |$data| $attack,
            // No prefilter: every input reaches `redact` whole, attacks included.
            prefilter: None,
        }
    };
    (bindgen: { $($bindgen:tt)* }, name: $name:literal, attack: |$data:ident| $attack:block, prefilter: $prefilter:expr $(,)?) => {
        wit_bindgen::generate!({ $($bindgen)* });

        use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo};
        use exports::happyx::policy::redaction::{Finding, Guest as RedactionGuest, PrefilterSpec, Trigger, Window};

        struct Component;

        impl ConfigGuest for Component {
            fn info() -> PluginInfo {
                PluginInfo { name: $name.into(), version: "0.1.0".into(), description: String::new() }
            }
            fn configure(_settings: Vec<(String, String)>) -> Result<(), String> {
                Ok(())
            }
        }

        impl RedactionGuest for Component {
            #[allow(unreachable_code, unused_variables)]
            fn redact(source: String, $data: Vec<u8>) -> Result<Vec<Finding>, String> {
                // Behave during the host's contract probes (mask everything);
                // misbehave only when the source is "attack".
                if source != "attack" {
                    if $data.is_empty() {
                        return Ok(Vec::new());
                    }
                    return Ok(vec![Finding { rule: "all".into(), start: 0, end: $data.len() as u64 }]);
                }
                $attack
            }

            fn prefilter() -> Option<PrefilterSpec> {
                $prefilter
            }

            /// Each window as if `redact` were given it alone (groups are not used).
            fn redact_windows(source: String, data: Vec<u8>, windows: Vec<Window>) -> Result<Vec<Finding>, String> {
                let mut out = Vec::new();
                for w in &windows {
                    let part = data.get(w.start as usize..w.end as usize).ok_or("a window is outside the data")?;
                    for f in <Component as RedactionGuest>::redact(source.clone(), part.to_vec())? {
                        out.push(Finding { rule: f.rule, start: f.start + w.start, end: f.end + w.start });
                    }
                }
                Ok(out)
            }
        }

        export!(Component);
    };
}

/// A well-behaved recipe book with two recipes: `echo text` (low risk, runs
/// `echo v2 <text>` with a 5 s timeout) and `hello` (medium risk, `echo hello`).
///
/// ```text
/// hostile_guest::recipe_book! {
///     bindgen: { world: "recipe-book", path: "../../../wit" },
///     name: "recipes-v2", version: "2.0.0",
/// }
/// ```
#[macro_export]
macro_rules! recipe_book {
    (bindgen: { $($bindgen:tt)* }, name: $name:literal, version: $version:literal $(,)?) => {
        wit_bindgen::generate!({ $($bindgen)* });

        use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo};
        use exports::happyx::policy::recipes::{Command, Guest, Param, Recipe, RenderError, Risk};

        struct Component;

        impl ConfigGuest for Component {
            fn info() -> PluginInfo {
                PluginInfo { name: $name.into(), version: $version.into(), description: String::new() }
            }
            fn configure(_settings: Vec<(String, String)>) -> Result<(), String> {
                Ok(())
            }
        }

        impl Guest for Component {
            fn catalog() -> Vec<Recipe> {
                vec![
                    Recipe {
                        name: "echo".into(),
                        description: "Print text".into(),
                        risk: Risk::Low,
                        params: vec![Param { name: "text".into(), description: "Text".into(), required: true }],
                    },
                    Recipe { name: "hello".into(), description: "Say hello".into(), risk: Risk::Low, params: vec![] },
                ]
            }
            fn render(name: String, args: Vec<(String, String)>) -> Result<Command, RenderError> {
                for (k, _) in &args {
                    let known = name == "echo" && k == "text";
                    if !known {
                        return Err(RenderError::UnknownArg(k.clone()));
                    }
                }
                match name.as_str() {
                    "echo" => {
                        let text = args.iter().find(|(k, _)| k == "text").map(|(_, v)| v.clone());
                        let text = text.ok_or_else(|| RenderError::MissingArg("text".into()))?;
                        Ok(Command { program: "echo".into(), args: vec!["v2".into(), text], risk: Risk::Low, timeout_ms: Some(5000) })
                    }
                    "hello" => Ok(Command { program: "echo".into(), args: vec!["hello".into()], risk: Risk::Medium, timeout_ms: None }),
                    _ => Err(RenderError::UnknownRecipe(name)),
                }
            }
        }

        export!(Component);
    };
}
