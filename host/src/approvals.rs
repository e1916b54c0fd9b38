//! One-time approvals: the canonical action hash an approval is bound to, and
//! the one-time tokens handed to requesters (only their hash is stored).

use sha2::{Digest, Sha256};

/// What kind of action an approval authorises. A token for one kind never
/// authorises another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Run,
    Pty,
    Attach,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Run => "run",
            ActionKind::Pty => "pty",
            ActionKind::Attach => "attach",
        }
    }
}

/// The exact action an approval is bound to.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    pub kind: ActionKind,
    pub recipe: &'a str,
    /// Sorted by key (a `BTreeMap` iteration).
    pub args: Vec<(&'a str, &'a str)>,
    pub program: &'a str,
    pub argv: &'a [String],
    pub plugin_hash: &'a str,
    pub session_id: Option<&'a str>,
    /// For attach: the PTY id and the mode (`observe` / `drive`).
    pub target: Option<(&'a str, &'a str)>,
}

/// SHA-256 (hex) over a canonical, length-prefixed, domain-separated encoding:
///
/// ```text
/// "happyx-action-v1" || field*   where field = u32-BE length || bytes
/// fields: kind, recipe, arg-count (u32-BE as 4 bytes), (key, value)*,
///         program, argv-count, argv*, plugin-hash, session ("" if none),
///         target-id ("" if none), target-mode ("" if none)
/// ```
///
/// Length prefixes make the encoding injective: no two actions share it.
pub fn action_hash(a: &Action<'_>) -> String {
    let mut h = Sha256::new();
    h.update(b"happyx-action-v1");
    let mut field = |b: &[u8]| {
        h.update((b.len() as u32).to_be_bytes());
        h.update(b);
    };
    field(a.kind.as_str().as_bytes());
    field(a.recipe.as_bytes());
    field(&(a.args.len() as u32).to_be_bytes());
    for (k, v) in &a.args {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    field(a.program.as_bytes());
    field(&(a.argv.len() as u32).to_be_bytes());
    for arg in a.argv {
        field(arg.as_bytes());
    }
    field(a.plugin_hash.as_bytes());
    field(a.session_id.unwrap_or("").as_bytes());
    let (tid, mode) = a.target.unwrap_or(("", ""));
    field(tid.as_bytes());
    field(mode.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base<'a>(argv: &'a [String]) -> Action<'a> {
        Action {
            kind: ActionKind::Run,
            recipe: "shell",
            args: vec![("command", "ls")],
            program: "sh",
            argv,
            plugin_hash: "abc",
            session_id: None,
            target: None,
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let argv = vec!["-c".to_string(), "ls".to_string()];
        let h0 = action_hash(&base(&argv));
        let variants: Vec<Action> = vec![
            Action {
                kind: ActionKind::Pty,
                ..base(&argv)
            },
            Action {
                recipe: "shel",
                ..base(&argv)
            },
            Action {
                args: vec![("command", "ls ")],
                ..base(&argv)
            },
            Action {
                program: "bash",
                ..base(&argv)
            },
            Action {
                plugin_hash: "abd",
                ..base(&argv)
            },
            Action {
                session_id: Some("s"),
                ..base(&argv)
            },
            Action {
                target: Some(("p", "drive")),
                ..base(&argv)
            },
        ];
        for v in variants {
            assert_ne!(action_hash(&v), h0, "{v:?}");
        }
        let other_argv = vec!["-c".to_string(), "l".to_string(), "s".to_string()];
        assert_ne!(action_hash(&base(&other_argv)), h0);
        assert_eq!(action_hash(&base(&argv)), h0);
    }

    #[test]
    fn concatenation_ambiguity_is_impossible() {
        let a1 = vec!["ab".to_string(), "c".to_string()];
        let a2 = vec!["a".to_string(), "bc".to_string()];
        assert_ne!(action_hash(&base(&a1)), action_hash(&base(&a2)));
    }
}
