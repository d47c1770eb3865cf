//! Placeholder until the micro benches land.
fn main() {}
