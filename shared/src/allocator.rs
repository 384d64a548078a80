//! The services' allocator is mimalloc (`#[global_allocator]` in each binary: glibc's malloc was a
//! quarter of the api's time on the batch path). One of its defaults is changed here.
use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (`mimalloc.h`); the test below checks
/// that the number still names it (its v3 default is 1,000 ms).
const PURGE_DELAY: mi_option_t = 15;

/// Gives memory a thread freed back to the system at once, instead of after mimalloc v3's default
/// delay of one second. With the delay, a burst of requests that each inflate and refuse a large
/// body took the api's resident memory to 424–466 MiB on a loaded box (freed pages kept for a
/// second on each thread, while other threads took fresh ones); with none, 98 MiB for the same
/// burst (`api/tests/it/memory.rs`). Call it first thing in `main`. An operator's own
/// `MIMALLOC_PURGE_DELAY` (which mimalloc reads at start) is left as it is.
#[allow(unsafe_code)]
pub fn return_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` stores one option value; it has no other precondition.
    unsafe { mi_option_set(PURGE_DELAY, 0) }
}

/// The purge delay in force, in milliseconds.
#[allow(unsafe_code)]
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reading an option has no precondition.
    unsafe { mi_option_get(PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_the_purge_delay() {
        // v3's documented default for the purge delay; another option at this index (a v2 build,
        // a reordered enum) would read otherwise.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), 1_000);
            return_freed_memory_at_once();
            assert_eq!(purge_delay_ms(), 0);
        }
    }
}
