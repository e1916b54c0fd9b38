//! Hostile test plugin `badrange`.
hostile_guest::redactor! {
    bindgen: { world: "redactor", path: "../../../wit" },
    name: "hostile-badrange",
    attack: |data| {
        Ok(vec![Finding { rule: "bad".into(), start: 0, end: data.len() as u64 + 10 }])
    },
}
