//! `vellum`, the command-line tool of the Vellum vector store (README.md, "Command line").
//!
//! Exit codes: 0 success; 1 not found or verification failed; 2 usage (bad arguments);
//! 3 I/O error, damage or incompatible files; 4 bad input data (import); 5 the store is open
//! in another process.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
