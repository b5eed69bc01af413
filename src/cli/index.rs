//! `vellum index create <DIR> [--metric M] [--m N] [--ef-construction N]` and `vellum index drop
//! <DIR>`: the approximate-search (HNSW) index, which `search` then uses for its metric.

use std::path::PathBuf;
use std::time::Instant;

use vellum::{IndexOptions, SyncMode};

use super::common::{Failure, human_bytes, ms, open_store};
use super::search::MetricArg;

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
    let started = Instant::now();
    store
        .create_index(options)
        .map_err(|e| Failure::from_error(context(), e))?;
    let took = started.elapsed();
    let info = store
        .index_info()
        .map_err(|e| Failure::from_error(context(), e))?
        .ok_or_else(|| Failure::store(format!("{}: the index is not there after its build", context())))?;
    store
        .close()
        .map_err(|e| Failure::from_error(format!("closing {}", args.dir.display()), e))?;
    println!(
        "index built: {} vectors, metric {:?}, M {}, ef_construction {}, {} in {}",
        info.live,
        info.metric,
        info.m,
        info.ef_construction,
        human_bytes(info.size_bytes),
        ms(took)
    );
    Ok(())
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
