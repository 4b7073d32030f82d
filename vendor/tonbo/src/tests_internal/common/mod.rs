//! Common test utilities for integration tests.

pub use crate::test_support::config_with_pk;
