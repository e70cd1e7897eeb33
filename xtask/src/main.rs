//! `cargo xtask`: the project's development tasks.
fn main() {}
