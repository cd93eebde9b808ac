//! The integration tests: one binary, so the whole stack is linked once
//! rather than once per file (each link of the stack is hundreds of MB and a
//! minute of a 2-core machine). Each module is one area; `cargo nextest run
//! -E 'test(/^sink::/)'` runs one of them.

mod helpers;

mod attacks;
mod bad_input;
mod chaos;
mod cli;
mod deploy;
mod ingest;
mod lake;
mod ops;
mod python_readers;
mod registry;
mod release;
mod s3_conditional_put;
mod security;
mod sink;
mod spine;
mod tools;
mod transform;
mod up;
