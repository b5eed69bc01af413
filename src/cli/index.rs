//! `vellum index create <DIR> [--metric M] [--m N] [--ef-construction N]` and `vellum index drop
//! <DIR>`: the approximate-search (HNSW) index, which `search` then uses for its metric.
//!
//! A build shows a progress bar per phase when run interactively. SIGINT or SIGTERM stops it
//! within about a tenth of a second: nothing of it is kept (its transaction is rolled back),
//! the store is closed without an index and the exit code is 130 or 143.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use vellum::{IndexBuildPhase, IndexBuildProgress, IndexOptions, SyncMode};

use super::common::{Failure, PhaseBar, duration, human_bytes, open_store, progress_bar};
use super::search::MetricArg;
use super::signals::{catch_stop_signals, stop_signal, stopped_by};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Build an approximate-search (HNSW) index over every vector (on every core, one
    /// transaction); every later write keeps it current, and `search` uses it for its metric.
    Create(CreateArgs),
    /// Drop the index and give its pages back (`search` scans again).
    Drop(DropArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The store.
    pub dir: PathBuf,
    /// The metric searches through the index are by (a search by another one scans).
    #[arg(long, value_enum, default_value_t = MetricArg::Cosine)]
    pub metric: MetricArg,
    /// Neighbours per node and layer (2M at layer 0): more costs space and build time, gains
    /// recall.
    #[arg(long, value_name = "N", default_value_t = IndexOptions::default().m)]
    pub m: usize,
    /// The candidate list of each insert's search: larger builds slower and better.
    #[arg(long = "ef-construction", value_name = "N", default_value_t = IndexOptions::default().ef_construction)]
    pub ef_construction: usize,
}

#[derive(clap::Args, Debug)]
pub struct DropArgs {
    /// The store.
    pub dir: PathBuf,
}

pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Create(args) => create(args),
        Command::Drop(args) => drop_index(args),
    }
}

fn create(args: CreateArgs) -> Result<(), Failure> {
    let store = open_store(&args.dir, SyncMode::Always)?;
    let options = IndexOptions {
        metric: args.metric.metric(),
        m: args.m,
        ef_construction: args.ef_construction,
    };
    let context = || format!("building the index of {}", args.dir.display());
    catch_stop_signals()?;
    let started = Instant::now();
    let mut bar = PhaseBar::new();
    let built = store.create_index_watched(options, &mut |progress| {
        show(&mut bar, progress);
        match stop_signal() {
            Some(_) => ControlFlow::Break(()),
            None => ControlFlow::Continue(()),
        }
    });
    bar.finish();
    let took = started.elapsed();
    let info = match built {
        Err(vellum::Error::Interrupted(_)) => None,
        Err(e @ vellum::Error::AlreadyExists) => {
            let mut failure = Failure::from_error(context(), e);
            let dir = args.dir.display();
            failure
                .message
                .push_str(&format!(": {dir} has an index (`vellum index drop {dir}` drops it)"));
            return Err(failure);
        }
        Err(e) => return Err(Failure::from_error(context(), e)),
        Ok(()) => Some(
            store
                .index_info()
                .map_err(|e| Failure::from_error(context(), e))?
                .ok_or_else(|| Failure::store(format!("{}: the index is not there after its build", context())))?,
        ),
    };
    store
        .close()
        .map_err(|e| Failure::from_error(format!("closing {}", args.dir.display()), e))?;
    let Some(info) = info else {
        let signal = stop_signal().expect("only a stop signal stops the build");
        let what = format!(
            "the index build stopped after {}; nothing of it was kept, and {} has no index (searches scan)",
            duration(took),
            args.dir.display()
        );
        return Err(stopped_by(signal, &what));
    };
    println!(
        "index built: {} vector{}, metric {:?}, M {}, ef_construction {}, {} in {}",
        info.live,
        if info.live == 1 { "" } else { "s" },
        info.metric,
        info.m,
        info.ef_construction,
        human_bytes(info.size_bytes),
        duration(took)
    );
    Ok(())
}

/// Shows a build's progress: a bar per phase.
fn show(bar: &mut PhaseBar<IndexBuildPhase>, progress: IndexBuildProgress) {
    let message = match progress.phase {
        IndexBuildPhase::Linking => "linking vectors",
        IndexBuildPhase::Calibrating => "calibrating ef",
        _ => "writing pages",
    };
    bar.show(progress.phase, progress.done, || {
        progress_bar(progress.total, message, false)
    });
}

fn drop_index(args: DropArgs) -> Result<(), Failure> {
    let store = open_store(&args.dir, SyncMode::Always)?;
    store
        .drop_index()
        .map_err(|e| Failure::from_error(format!("dropping the index of {}", args.dir.display()), e))?;
    store
        .close()
        .map_err(|e| Failure::from_error(format!("closing {}", args.dir.display()), e))?;
    println!("index dropped");
    Ok(())
}
