//! Protocol-core benches (filled in with the protocol).
fn main() {}
