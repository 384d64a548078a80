//! Open-loop scheduling: request `i` is due at `start + i / rate`, whatever happened to the ones
//! before it, and its latency is measured from that due time (no coordinated omission).
use std::time::Duration;

/// When request `i` is due, as an offset from the start.
pub fn due(i: u64, requests_per_sec: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / requests_per_sec.max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_evenly_spaced() {
        assert_eq!(due(0, 100.0), Duration::ZERO);
        assert_eq!(due(50, 100.0), Duration::from_millis(500));
        assert_eq!(due(1_000, 500.0), Duration::from_secs(2));
    }
}
