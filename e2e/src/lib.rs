//! Holds no code: the tests in `tests/it` drive the real services.
