//! The process allocator: one choice, declared by each executable that
//! runs the services (the `chitose` binary and the benchmarks) with
//! [`global_allocator!`](crate::global_allocator).
//!
//! librdkafka allocates each message and its headers on the producing
//! thread and frees them on the thread that polls delivery reports. glibc's
//! per-thread caches never see those chunks come back, so allocations took
//! the arena's slow path and frees its lock: malloc and free were ~15 % of
//! the files source's CPU. mimalloc frees a block from another thread onto
//! its page's list without a lock, and its `override` feature makes the C
//! code's `malloc` and `free` mimalloc's too, so librdkafka gets it as well
//! as Rust. Measured in docs/design.md, "Allocator".
//!
//! The choice is not declared in this library itself because a process
//! has exactly one `#[global_allocator]` and the transform benchmark's is
//! `stats_alloc`'s counter. That counter can wrap only `System` on stable
//! Rust, but with `override` `System`'s `malloc` is mimalloc's as soon as
//! mimalloc is linked, which [`describe`] makes sure of.

/// The allocator the binary and the benchmarks run with.
pub use mimalloc::MiMalloc as Allocator;

/// Declares [`Allocator`] as the `#[global_allocator]` of the executable
/// that invokes it (once, at its crate root).
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::alloc::Allocator = $crate::alloc::Allocator;
    };
}

/// The allocator's name and version, for benchmark headers. Calling it
/// also links mimalloc into an executable whose `#[global_allocator]` is
/// another wrapper over `System`, so `malloc` is overridden there too.
pub fn describe() -> String {
    // Encoded as major·10000 + minor·100 + patch since mimalloc 3.
    let v = Allocator.version();
    format!("mimalloc {}.{}.{}", v / 10_000, v / 100 % 100, v % 100)
}
