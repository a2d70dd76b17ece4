//! annql's integration tests, in one binary to keep link time down.

mod cli;
mod common;
mod damaged;
mod engine;
mod examples;
mod fused;
mod h5ad;
mod lang;
mod remote;
mod repl;
mod server;
mod slt;
mod store;
