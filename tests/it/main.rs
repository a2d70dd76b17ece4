//! annql's integration tests, in one binary to keep link time down.

mod common;
mod engine;
mod slt;
mod store;
