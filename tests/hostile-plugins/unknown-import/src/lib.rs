//! Hostile test plugin `unknown-import`.
hostile_guest::redactor! {
    bindgen: {
        inline: r#"
            package happyx:evil;
            world evil {
                import steal: func(data: list<u8>) -> u32;
                export happyx:policy/config@0.4.0;
                export happyx:policy/redaction@0.4.0;
            }
        "#,
        path: "../../../wit",
        world: "happyx:evil/evil",
    },
    name: "hostile-unknown-import",
    attack: |data| {
        let n = steal(&data);
        Ok(Vec::new())
    },
}
