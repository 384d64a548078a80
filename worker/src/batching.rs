//! Pure decisions of the consumer loop: when a batch is flushed, how long the next read may block,
//! and how long to wait before retrying a failed write.
use std::time::Duration;

/// Flush when the batch is full, or when its oldest entry has waited the flush interval.
pub fn should_flush(
    len: usize,
    batch_size: usize,
    oldest_waited: Duration,
    interval: Duration,
) -> bool {
    len > 0 && (len >= batch_size || oldest_waited >= interval)
}

/// The longest a read blocks, so shutdown and heartbeats are never held up for long.
pub const MAX_BLOCK: Duration = Duration::from_secs(1);

/// How long the next read may block: the whole interval for an empty batch, else what is left of
/// the oldest entry's interval (at least 1 ms, since BLOCK 0 would wait forever), never more than
/// [`MAX_BLOCK`].
pub fn read_block(len: usize, oldest_waited: Duration, interval: Duration) -> Duration {
    let block = if len == 0 {
        interval
    } else {
        interval.saturating_sub(oldest_waited)
    };
    block.clamp(Duration::from_millis(1), MAX_BLOCK)
}

/// Exponential backoff with full jitter: uniform in `[0, min(cap, base·2^attempt)]`. `unit` is a
/// number in [0, 1) from the caller's random source.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_full_batch_flushes_at_once_and_a_partial_one_after_the_interval() {
        assert!(should_flush(100, 100, MS(0), MS(500)));
        assert!(!should_flush(99, 100, MS(499), MS(500)));
        assert!(should_flush(1, 100, MS(500), MS(500)));
        assert!(!should_flush(0, 100, MS(10_000), MS(500)));
    }

    #[test]
    fn reads_block_for_what_is_left_of_the_interval() {
        assert_eq!(read_block(0, MS(0), MS(500)), MS(500));
        assert_eq!(read_block(3, MS(200), MS(500)), MS(300));
        assert_eq!(read_block(3, MS(900), MS(500)), MS(1));
        assert_eq!(read_block(0, MS(0), MS(600_000)), MAX_BLOCK);
        assert_eq!(read_block(3, MS(10), MS(600_000)), MAX_BLOCK);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(0, MS(100), MS(5_000), 0.999_999).as_millis(), 99);
        assert_eq!(backoff(3, MS(100), MS(5_000), 0.5), MS(400));
        assert_eq!(backoff(10, MS(100), MS(5_000), 1.0), MS(5_000));
        assert_eq!(backoff(1_000, MS(100), MS(5_000), 1.0), MS(5_000));
        assert_eq!(backoff(2, MS(100), MS(5_000), 0.0), MS(0));
    }

    proptest! {
        #[test]
        fn backoff_never_exceeds_the_cap(attempt in 0u32..10_000, unit in 0.0f64..1.0) {
            prop_assert!(backoff(attempt, MS(100), MS(5_000), unit) <= MS(5_000));
        }
    }
}
