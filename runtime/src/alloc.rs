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

/// Turns transparent huge pages off for this process, before its services
/// start. mimalloc asks the kernel for huge pages; memory it returns and
/// takes again is then faulted and zeroed 2 MiB at a time, and on a
/// kernel that grants them on request (`madvise` mode) that was 20–30 %
/// of the Kafka services' CPU (docs/benchmarks.md, "mimalloc's
/// transparent huge pages"). The same switch as mimalloc's
/// `MIMALLOC_ALLOW_THP=0`, which must be set before the process starts;
/// this one is the binary's own. A kernel that refuses it leaves things as
/// they were.
pub fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// The allocator's name and version, for benchmark headers. Calling it
/// also links mimalloc into an executable whose `#[global_allocator]` is
/// another wrapper over `System`, so `malloc` is overridden there too.
pub fn describe() -> String {
    // Encoded as major·10000 + minor·100 + patch since mimalloc 3.
    let v = Allocator.version();
    format!("mimalloc {}.{}.{}", v / 10_000, v / 100 % 100, v % 100)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The switch reaches the kernel: `/proc/self/status` says huge pages
    /// are off for this process afterwards.
    #[test]
    fn huge_pages_are_off_after_the_switch() {
        super::without_huge_pages();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .expect("a kernel that reports THP_enabled (Linux 5.0 and later)");
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
}
