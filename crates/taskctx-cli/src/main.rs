//! The `taskctx` binary.
fn main() {}
