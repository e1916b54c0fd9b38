//! A second, well-behaved recipe book (`echo` and `hello`) used to test hot reload.
hostile_guest::recipe_book! {
    bindgen: { world: "recipe-book", path: "../../../wit" },
    name: "recipes-v2",
    version: "2.0.0",
}
