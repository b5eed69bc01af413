//! The subcommands, one module each, and what they share (`common`, `input`).

mod archive;
mod backup;
mod checkpoint;
mod common;
mod create;
mod delete;
mod demo;
mod export;
mod get;
mod import;
mod index;
mod input;
mod list;
mod read_ahead;
#[cfg(feature = "object-store")]
mod replica;
mod restore;
mod search;
mod signals;
mod stats;
mod verify;
mod wal_dump;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An embedded, crash-safe vector store: the command-line tool.
///
/// Exit codes: 0 success; 1 not found or verification failed; 2 usage; 3 I/O error, damage or
/// incompatible files; 4 bad input data; 5 the store is open in another process; 6 the input
/// file of an import cannot be opened; 130, 143 an import stopped by SIGINT, SIGTERM.
#[derive(Parser, Debug)]
#[command(name = "vellum", version, about, long_about = None, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a store of fixed-dimension float32 vectors in a new directory.
    Create(create::Args),
    /// Load vectors from a JSONL, fvecs or npy file, committing them in batches.
    Import(import::Args),
    /// Print vectors as JSON objects {"id","vector","metadata"}, one a line in the order given; exit 1 if any is absent.
    Get(get::Args),
    /// Delete one vector; exit 1 if absent.
    Delete(delete::Args),
    /// k-nearest-neighbour search (through the index when the store has one for the metric);
    /// prints `<id>\t<score>` lines, best first.
    Search(search::Args),
    /// Manage the approximate-search index: `create` builds it, `drop` removes it.
    #[command(subcommand)]
    Index(index::Command),
    /// Write every dirty page, move the recovery start point forward and archive the log released.
    Checkpoint(checkpoint::Args),
    /// Check every control, log record, page and archive checksum without changing anything.
    Verify(verify::Args),
    /// Print the write-ahead log, one record a line, without opening the store.
    #[command(name = "wal-dump")]
    WalDump(wal_dump::Args),
    /// Counts, sizes, LSNs, the last checkpoint, the archive and the recovery report.
    Stats(stats::Args),
    /// Restore a store as it was at an LSN or instant into a new directory.
    Restore(restore::Args),
    /// Follow the remote archive a store ships to as a read replica in a directory.
    #[cfg(feature = "object-store")]
    Replica(replica::Args),
    /// Copy a store, consistently, into a new directory (a base image and the log it needs,
    /// replayed into a new store).
    Backup(backup::Args),
    /// Manage the archive: `prune` applies (or sets and applies) the retention policy.
    #[command(subcommand)]
    Archive(archive::Command),
    /// The crash-safety story in one command: import, SIGKILL, recover, check, search, restore.
    Demo(demo::Args),
    /// Print the ids in byte order, one a line (escaped as inside a JSON string; --json: JSON
    /// strings).
    List(list::Args),
    /// Write the records in byte order of the id as JSONL that `import` reads back bit for bit.
    Export(export::Args),
}

/// Parses the command line and runs the subcommand; errors go to stderr as one sentence.
pub fn main() -> ExitCode {
    common::restore_default_sigpipe();
    common::share_one_malloc_arena_under_an_address_space_limit();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Create(args) => create::run(args),
        Command::Import(args) => import::run(args),
        Command::Get(args) => get::run(args),
        Command::Delete(args) => delete::run(args),
        Command::Search(args) => search::run(args),
        Command::Index(command) => index::run(command),
        Command::Checkpoint(args) => checkpoint::run(args),
        Command::Verify(args) => verify::run(args),
        Command::WalDump(args) => wal_dump::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Archive(command) => archive::run(command),
        #[cfg(feature = "object-store")]
        Command::Replica(args) => replica::run(args),
        Command::Demo(args) => demo::run(args),
        Command::List(args) => list::run(args),
        Command::Export(args) => export::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("vellum: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
