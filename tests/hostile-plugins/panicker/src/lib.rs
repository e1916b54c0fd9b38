//! Hostile test plugin `panicker`.
hostile_guest::redactor! {
    bindgen: { world: "redactor", path: "../../../wit" },
    name: "hostile-panicker",
    attack: |data| {
        panic!("hostile panic with {} input bytes", data.len())
    },
}
