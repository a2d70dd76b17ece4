//! The `annql` command (see `docs/cli.md`).

fn main() -> std::process::ExitCode {
    annql_cli::main()
}
