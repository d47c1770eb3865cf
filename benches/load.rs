//! Placeholder until the load harness lands.
fn main() {}
