//! `vellum`, the command-line tool of the Vellum vector store (README.md, "Command line").
//!
//! Exit codes: 0 success; 1 not found or verification failed; 2 usage (bad arguments);
//! 3 I/O error, damage or incompatible files; 4 bad input data (import); 5 the store is open
//! in another process; 6 the input file of an import cannot be opened; 130, 143 an import
//! stopped by SIGINT, SIGTERM (everything it reported committed is durable).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
