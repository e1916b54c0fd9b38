//! A well-behaved recipe book built against `happyx:policy@0.1.0`: the host must still load it.
wit_bindgen::generate!({ world: "recipe-book", path: "../../../wit/0.1.0" });

use exports::happyx::policy::config::{Guest as ConfigGuest, PluginInfo};
use exports::happyx::policy::recipes::{Command, Guest, Param, Recipe, RenderError, Risk};

struct Component;

impl ConfigGuest for Component {
    fn info() -> PluginInfo {
        PluginInfo { name: "legacy-recipes".into(), version: "0.1.0".into(), description: String::new() }
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
