//! Shared harness for the HappyX end-to-end suites.
