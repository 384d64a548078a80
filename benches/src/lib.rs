//! Benchmarks of the hot path live in `benches/`; see `make bench`.
