//! Hostile test plugin `membomb`.
hostile_guest::redactor! {
    bindgen: { world: "redactor", path: "../../../wit" },
    name: "hostile-membomb",
    attack: |data| {
        let mut v: Vec<Vec<u8>> = Vec::new();
        loop {
            v.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&v);
        }
    },
}
