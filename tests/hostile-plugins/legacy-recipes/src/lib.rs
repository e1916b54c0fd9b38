//! A well-behaved recipe book built against `happyx:policy@0.1.0`: the host must still load it.
hostile_guest::recipe_book! {
    bindgen: { world: "recipe-book", path: "../../../wit/0.1.0" },
    name: "legacy-recipes",
    version: "0.1.0",
}
