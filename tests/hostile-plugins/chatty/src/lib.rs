//! Hostile test plugin `chatty`.
hostile_guest::redactor! {
    bindgen: { world: "redactor", path: "../../../wit" },
    name: "hostile-chatty",
    attack: |data| {
        println!("STDOUT-LEAK {}", String::from_utf8_lossy(&data));
        eprintln!("STDERR-LEAK {}", String::from_utf8_lossy(&data));
        Ok(Vec::new())
    },
}
