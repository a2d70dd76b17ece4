//! annql's integration tests, in one binary to keep link time down.

// Tests report what they measured and why they failed on stderr, and unwrap where a panic is
// the failure they mean.
#![allow(clippy::print_stderr, clippy::print_stdout, clippy::unwrap_used)]

mod aggregate_export;
mod cli;
mod cli_stream;
mod cluster;
mod collection;
mod common;
mod corpus;
mod damage;
mod damaged;
mod engine;
mod examples;
mod export;
mod export_front;
mod flight;
mod fused;
mod gene_index;
mod h5ad;
mod hostile;
mod integrity;
mod lang;
mod legacy;
mod matrix;
mod remote;
mod repl;
mod server;
mod server_limits;
mod slt;
mod store;
