//! `happyx plugin new --world W DIR`: a policy plugin project that builds as created — the
//! WIT vendored (so the folder can live anywhere), a `guest` profile for small components, a
//! working sample of the world, and conformance fixtures for `happyx plugin check
//! --fixtures fixtures`. The redactor and the lock file are `examples/plugin-template/`'s own
//! (renamed); the other worlds' samples and the manifest live in `host/templates/plugin/`.
//! `.ci/run` builds a fresh project of every world and checks it, so this path cannot rot.

use std::path::{Path, PathBuf};

/// The world a new plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum World {
    Redactor,
    RetentionPolicy,
    RecipeBook,
}

impl World {
    /// The WIT world's name.
    pub fn name(self) -> &'static str {
        match self {
            World::Redactor => "redactor",
            World::RetentionPolicy => "retention-policy",
            World::RecipeBook => "recipe-book",
        }
    }

    /// The `[plugins.<kind>]` section of the host config that would name it.
    fn kind(self) -> &'static str {
        match self {
            World::Redactor => "redactor",
            World::RetentionPolicy => "retention",
            World::RecipeBook => "recipes",
        }
    }

    /// The sample's `src/lib.rs`, with `{{…}}` placeholders.
    fn source(self) -> String {
        match self {
            // The example project, pointed at the vendored WIT and named after the new crate.
            World::Redactor => include_str!("../../../examples/plugin-template/src/lib.rs")
                .replace("path: \"../../wit\"", "path: \"wit\"")
                .replace("\"my-redactor\"", "\"{{name}}\"")
                .replace("my_redactor.wasm`", "{{crate}}.wasm --fixtures fixtures`"),
            World::RetentionPolicy => {
                include_str!("../../templates/plugin/retention-policy.rs").to_string()
            }
            World::RecipeBook => include_str!("../../templates/plugin/recipe-book.rs").to_string(),
        }
    }

    /// `(path under fixtures/, contents)` of the sample's conformance cases.
    fn fixtures(self) -> &'static [(&'static str, &'static str)] {
        match self {
            World::Redactor => &[
                (
                    "redaction/aws-key/input.bin",
                    "deploy with key AKIAIOSFODNN7EXAMPLE now\n",
                ),
                (
                    "redaction/aws-key/expected.json",
                    "{\"findings\": [{\"rule\": \"aws-access-key\", \"start\": 16, \"end\": 36}], \"masked_excludes\": [\"AKIAIOSFODNN7EXAMPLE\"]}\n",
                ),
                ("redaction/clean/input.bin", "nothing secret here\n"),
                ("redaction/clean/expected.json", "{\"clean\": true}\n"),
            ],
            World::RetentionPolicy => &[
                (
                    "retention/keeps-without-settings/input.json",
                    "{\"now\": 1000000, \"totals\": [], \"items\": [{\"kind\": \"run-output\", \"id\": \"a\", \"created_at\": 0, \"bytes\": 10}, {\"kind\": \"event\", \"id\": \"b\", \"created_at\": 0, \"bytes\": 1}, {\"kind\": \"leftover\", \"id\": \"approval:c\", \"created_at\": 0, \"bytes\": 64}]}\n",
                ),
                (
                    "retention/keeps-without-settings/expected.json",
                    "{\"prune\": [false, false, false]}\n",
                ),
            ],
            World::RecipeBook => &[
                (
                    "recipes/greet/input.json",
                    "{\"name\": \"greet\", \"args\": {\"name\": \"ada\"}}\n",
                ),
                (
                    "recipes/greet/expected.json",
                    "{\"program\": \"echo\", \"args\": [\"hello, ada\"], \"risk\": \"low\"}\n",
                ),
                (
                    "recipes/word-count-escapes/input.json",
                    "{\"name\": \"word-count\", \"args\": {\"path\": \"../secret\"}}\n",
                ),
                (
                    "recipes/word-count-escapes/expected.json",
                    "{\"error\": \"invalid_arg\", \"arg\": \"path\"}\n",
                ),
            ],
        }
    }
}

/// Why a project could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0} exists and is not empty; choose a new directory")]
    NotEmpty(PathBuf),
    #[error("cannot name a crate after {0}; use a directory name of letters, digits, - or _")]
    BadName(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Creates the project in `dir` (new or empty); returns the files written.
pub fn new_project(world: World, dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(ScaffoldError::NotEmpty(dir.to_path_buf()));
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.to_ascii_lowercase().replace('_', "-"))
        .filter(|n| {
            !n.is_empty()
                && n.len() <= 64
                && n.starts_with(|c: char| c.is_ascii_alphabetic())
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .ok_or_else(|| ScaffoldError::BadName(dir.to_path_buf()))?;
    let krate = name.replace('-', "_");
    let fill = |t: &str| {
        t.replace("{{name}}", &name)
            .replace("{{crate}}", &krate)
            .replace("{{world}}", world.name())
            .replace("{{kind}}", world.kind())
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        (
            "Cargo.toml".into(),
            fill(include_str!("../../templates/plugin/Cargo.toml.in")),
        ),
        (
            "Cargo.lock".into(),
            include_str!("../../../examples/plugin-template/Cargo.lock")
                .replace("name = \"my-redactor\"", &format!("name = \"{name}\"")),
        ),
        ("src/lib.rs".into(), fill(&world.source())),
        (
            "wit/happyx-policy.wit".into(),
            include_str!("../../../wit/happyx-policy.wit").to_string(),
        ),
        (".gitignore".into(), "/target\n".to_string()),
    ];
    for (path, text) in world.fixtures() {
        files.push((Path::new("fixtures").join(path), (*text).to_string()));
    }
    let mut written = Vec::with_capacity(files.len());
    for (rel, text) in files {
        let path = dir.join(rel);
        let werr = |source| ScaffoldError::Write {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(werr)?;
        }
        std::fs::write(&path, text).map_err(werr)?;
        written.push(path);
    }
    Ok(written)
}

/// The commands that build and check a project created in `dir`.
pub fn next_steps(dir: &Path) -> String {
    let krate = dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.to_ascii_lowercase().replace('-', "_"))
        .unwrap_or_default();
    format!(
        "cd {dir}\ncargo build --target wasm32-wasip2 --profile guest\n\
         happyx plugin check target/wasm32-wasip2/guest/{krate}.wasm --fixtures fixtures",
        dir = dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_world_fills_every_placeholder_and_refuses_a_used_dir() {
        for world in [World::Redactor, World::RetentionPolicy, World::RecipeBook] {
            let tmp = tempfile::tempdir().expect("tmp");
            let dir = tmp.path().join("my-plugin");
            let files = new_project(world, &dir).expect("created");
            for f in &files {
                let text = std::fs::read_to_string(f).expect("read");
                assert!(!text.contains("{{"), "{} keeps a placeholder", f.display());
                assert!(
                    !text.contains("my-redactor"),
                    "{} keeps the example's name",
                    f.display()
                );
                assert!(
                    !text.contains("../../wit"),
                    "{} points outside itself",
                    f.display()
                );
            }
            assert!(dir.join("wit/happyx-policy.wit").is_file());
            assert!(matches!(
                new_project(world, &dir),
                Err(ScaffoldError::NotEmpty(_))
            ));
        }
        let tmp = tempfile::tempdir().expect("tmp");
        assert!(matches!(
            new_project(World::Redactor, &tmp.path().join("9 bad")),
            Err(ScaffoldError::BadName(_))
        ));
    }
}
