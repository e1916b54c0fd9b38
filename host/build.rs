//! Reruns the build when the console's assets change: `src/console` embeds the `console/`
//! folder with `include_dir!`, which cannot tell cargo what it read.

fn main() {
    println!("cargo:rerun-if-changed=console");
}
