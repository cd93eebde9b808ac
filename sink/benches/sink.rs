//! Sink benchmark (the sink issue).
fn main() {}
