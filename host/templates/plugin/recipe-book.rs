//! A recipe book: the commands runs and terminals may execute, their parameters and their risk.
//! `render` turns a caller's arguments into the exact argv the host runs (as the caller's own
//! unprivileged uid, in its workspace); an operator approves exactly that argv for high-risk
//! recipes. Validate every argument here: an unknown, missing or invalid one is a typed
//! `render-error` naming the parameter.
//!
//! A low-risk recipe must never run code that workspace content chose (see
//! docs/writing-a-plugin.md in HappyX): no build tools, no programs whose configuration
//! files in the workspace can name other programs, unless you switch those off in the argv.

use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo};
use exports::happyx::policy::recipes::{Command, Guest as RecipesGuest, Param, Recipe, RenderError, Risk};

wit_bindgen::generate!({
    world: "recipe-book",
    path: "wit",
});

const MAX_ARG: usize = 16 * 1024;

struct Component;

impl ConfigGuest for Component {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "greet (low) and word-count (medium)".to_string(),
        }
    }

    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        match settings.first() {
            None => Ok(()),
            Some((key, _)) => Err(format!("unknown setting {key}")),
        }
    }
}

/// The value of the one parameter `name`, after checking that nothing else was given.
fn only<'a>(args: &'a [(String, String)], name: &str) -> Result<&'a str, RenderError> {
    for (k, v) in args {
        if k != name {
            return Err(RenderError::UnknownArg(k.clone()));
        }
        if v.len() > MAX_ARG || v.chars().any(|c| c.is_control()) {
            return Err(RenderError::InvalidArg((k.clone(), "too long or has control characters".into())));
        }
    }
    let mut values = args.iter().filter(|(k, _)| k == name);
    let Some((_, v)) = values.next() else {
        return Err(RenderError::MissingArg(name.to_string()));
    };
    if values.next().is_some() {
        return Err(RenderError::InvalidArg((name.to_string(), "given twice".into())));
    }
    Ok(v)
}

impl RecipesGuest for Component {
    fn catalog() -> Vec<Recipe> {
        let param = |name: &str, description: &str| Param {
            name: name.to_string(),
            description: description.to_string(),
            required: true,
        };
        vec![
            Recipe {
                name: "greet".to_string(),
                description: "Print a greeting".to_string(),
                risk: Risk::Low,
                params: vec![param("name", "Who to greet")],
            },
            Recipe {
                name: "word-count".to_string(),
                description: "Count the words of a file of the workspace".to_string(),
                risk: Risk::Medium,
                params: vec![param("path", "Relative path inside the workspace")],
            },
        ]
    }

    fn render(name: String, args: Vec<(String, String)>) -> Result<Command, RenderError> {
        match name.as_str() {
            "greet" => {
                let who = only(&args, "name")?;
                Ok(Command {
                    program: "echo".to_string(),
                    args: vec![format!("hello, {who}")],
                    risk: Risk::Low,
                    timeout_ms: Some(10_000),
                })
            }
            "word-count" => {
                let path = only(&args, "path")?;
                if path.is_empty() || path.starts_with('/') || path.starts_with('-') || path.split('/').any(|c| c == "..") {
                    return Err(RenderError::InvalidArg(("path".to_string(), "must be a relative path inside the workspace".into())));
                }
                Ok(Command {
                    program: "wc".to_string(),
                    args: vec!["-w".to_string(), "--".to_string(), path.to_string()],
                    risk: Risk::Medium,
                    timeout_ms: Some(30_000),
                })
            }
            _ => Err(RenderError::UnknownRecipe(name)),
        }
    }
}

export!(Component);
