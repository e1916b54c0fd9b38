//! Hostile test plugin `prefilter-liar`: masks all of any input, but declares a trigger its
//! findings do not contain; the contract checks must catch it at load (`plugin_contract`).
hostile_guest::redactor! {
    bindgen: { world: "redactor", path: "../../../wit" },
    name: "hostile-prefilter-liar",
    attack: |data| {
        Ok(Vec::new())
    },
    prefilter: Some(PrefilterSpec {
        triggers: vec![Trigger {
            literal: b"zzzz".to_vec(),
            ascii_case_insensitive: false,
            before: 1,
            after: 1,
            group: 0,
        }],
    }),
}
