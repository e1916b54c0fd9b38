//! The `happyx` binary.
fn main() {}
