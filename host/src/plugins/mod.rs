//! Policy plugins (interim built-in recipe table behind the plugin interface).
pub mod config;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: String,
    pub description: String,
    pub required: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recipe {
    pub name: String,
    pub description: String,
    pub risk: Risk,
    pub params: Vec<Param>,
}

#[derive(Debug, Clone)]
pub struct Rendered {
    pub program: String,
    pub args: Vec<String>,
    pub risk: Risk,
    pub listed_risk: Risk,
    pub timeout: Option<Duration>,
    pub plugin_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin failed")]
    Failed,
}
impl PluginError {
    pub fn code(&self) -> &'static str {
        "plugin_failed"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("no recipe named `{0}`")]
    UnknownRecipe(String),
    #[error("missing argument `{0}`")]
    MissingArg(String),
    #[error("unknown argument `{0}`")]
    UnknownArg(String),
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArg { name: String, reason: String },
    #[error(transparent)]
    Plugin(#[from] PluginError),
}
impl RenderError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownRecipe(_) => "unknown_recipe",
            Self::MissingArg(_) => "missing_arg",
            Self::UnknownArg(_) => "unknown_arg",
            Self::InvalidArg { .. } => "invalid_arg",
            Self::Plugin(e) => e.code(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub rule: String,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone)]
pub struct Redaction {
    pub findings: Vec<Finding>,
    pub policy_hash: String,
}

#[derive(Clone, Default)]
pub struct PluginHost {
    _interim: (),
}

impl PluginHost {
    pub async fn catalog(&self) -> Result<Vec<Recipe>, PluginError> {
        let p = |n: &str| Param {
            name: n.into(),
            description: String::new(),
            required: true,
        };
        Ok(vec![
            Recipe {
                name: "echo".into(),
                description: "print text".into(),
                risk: Risk::Low,
                params: vec![p("text")],
            },
            Recipe {
                name: "shell".into(),
                description: "sh -c".into(),
                risk: Risk::High,
                params: vec![p("command")],
            },
        ])
    }
    pub async fn render(
        &self,
        name: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<Rendered, RenderError> {
        let (key, program, pre, risk) = match name {
            "echo" => ("text", "echo", vec![], Risk::Low),
            "shell" => ("command", "sh", vec!["-c".to_string()], Risk::High),
            other => return Err(RenderError::UnknownRecipe(other.into())),
        };
        if let Some(k) = args.keys().find(|k| k.as_str() != key) {
            return Err(RenderError::UnknownArg(k.clone()));
        }
        let v = args
            .get(key)
            .ok_or_else(|| RenderError::MissingArg(key.into()))?;
        let mut a = pre;
        a.push(v.clone());
        Ok(Rendered {
            program: program.into(),
            args: a,
            risk,
            listed_risk: risk,
            timeout: None,
            plugin_hash: "builtin".into(),
        })
    }
    pub async fn redact(&self, _source: &str, _data: &[u8]) -> Result<Redaction, PluginError> {
        Ok(Redaction {
            findings: vec![],
            policy_hash: "builtin".into(),
        })
    }
}

pub fn apply_masks(data: &[u8], _f: &[Finding]) -> Vec<u8> {
    data.to_vec()
}
