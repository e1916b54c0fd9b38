//! Hostile test plugin `newer-wit`.
hostile_guest::redactor! {
    bindgen: { world: "redactor", path: "wit" },
    name: "hostile-newer-wit",
    attack: |data| {
        Ok(Vec::new())
    },
}
