//! annql's integration tests, in one binary to keep link time down.

mod aggregate_export;
mod cli;
mod cli_stream;
mod common;
mod corpus;
mod damage;
mod damaged;
mod engine;
mod examples;
mod export;
mod export_front;
mod fused;
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
