//! Hostile test plugin `prefilter-invalid`: declares a trigger one byte longer than the host
//! accepts (65 bytes); the host must refuse it at load (`plugin_invalid`).
hostile_guest::redactor! {
    bindgen: { world: "redactor", path: "../../../wit" },
    name: "hostile-prefilter-invalid",
    attack: |data| {
        Ok(Vec::new())
    },
    prefilter: Some(PrefilterSpec {
        triggers: vec![Trigger {
            literal: vec![b'k'; 65],
            ascii_case_insensitive: false,
            before: 0,
            after: 0,
            group: 0,
        }],
    }),
}
