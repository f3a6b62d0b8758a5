//! The sequence allocator's integration tests, linked into one test binary.

mod allocator;
mod process;
