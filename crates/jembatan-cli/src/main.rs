//! The `jembatan` command
fn main() {}
