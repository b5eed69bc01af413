//! `vellum search <DIR> --vector '[...]'`: k-nearest neighbours, best first: `<id>\t<score>`
//! lines, the id escaped as inside a JSON string (`escape_text`), or `--json`. Through the
//! approximate index when the store has one for the metric (`--ef` sizes its candidate list),
//! else (or with `--exact`) by an exact scan.

use std::path::PathBuf;

use serde_json::{Value, json};
use vellum::{Metric, SearchOptions};

use super::common::{Failure, escape_text, open_store_read_only, print_json};

/// The `--metric` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricArg {
    /// Cosine similarity (higher is closer).
    Cosine,
    /// Euclidean distance (lower is closer).
    L2,
    /// Dot product (higher is closer).
    Dot,
}

impl MetricArg {
    /// The library's metric.
    pub fn metric(self) -> Metric {
        match self {
            MetricArg::Cosine => Metric::Cosine,
            MetricArg::L2 => Metric::L2,
            MetricArg::Dot => Metric::Dot,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store.
    pub dir: PathBuf,
    /// The query: a JSON array of numbers with the store's dimension.
    #[arg(long, value_name = "JSON", allow_hyphen_values = true)]
    pub vector: String,
    /// How many results.
    #[arg(short, long, value_name = "N", default_value_t = 10)]
    pub k: usize,
    /// The similarity measure.
    #[arg(long, value_enum, default_value_t = MetricArg::Cosine)]
    pub metric: MetricArg,
    /// Only vectors whose metadata holds this pair.
    #[arg(long, value_name = "KEY=VALUE")]
    pub filter: Option<String>,
    /// Print a JSON array of {"id","score"} objects instead of lines.
    #[arg(long)]
    pub json: bool,
    /// The candidate list of a search through the index (at least k; default: the index's).
    #[arg(long, value_name = "N")]
    pub ef: Option<usize>,
    /// Scan every vector even when the store has an index for the metric.
    #[arg(long)]
    pub exact: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let query: Vec<f32> = serde_json::from_str(&args.vector)
        .map_err(|e| Failure::usage(format!("--vector must be a JSON array of numbers: {e}")))?;
    let filter = match &args.filter {
        Some(pair) => match pair.split_once('=') {
            Some((key, value)) => Some((key, value)),
            None => return Err(Failure::usage(format!("--filter {pair:?} must look like key=value"))),
        },
        None => None,
    };
    let metric = args.metric.metric();
    let store = open_store_read_only(&args.dir)?;
    if query.len() != store.dimension() {
        return Err(Failure::usage(format!(
            "--vector has {} components, the store at {} holds {}",
            query.len(),
            args.dir.display(),
            store.dimension()
        )));
    }
    if args.ef == Some(0) {
        return Err(Failure::usage("--ef must be at least 1"));
    }
    let options = SearchOptions {
        metric,
        filter,
        ef: args.ef,
        exact: args.exact,
    };
    let hits = store
        .search_with(&query, args.k, &options)
        .map_err(|e| Failure::from_error(format!("searching {}", args.dir.display()), e))?;
    if args.json {
        let hits: Vec<_> = hits
            .iter()
            .map(|(id, score)| json!({"id": id, "score": score_json(*score)}))
            .collect();
        print_json(&json!(hits));
    } else {
        // Ids may hold tabs, newlines or other control characters: escaped (as inside a JSON
        // string), each hit stays one line of two tab-separated fields.
        for (id, score) in hits {
            println!("{}\t{score}", escape_text(&id));
        }
    }
    Ok(())
}

/// A score as JSON: a number, or the string "inf" or "-inf" (a dot product or L2 distance
/// beyond the f32 range), which JSON numbers cannot express and serde would print as null.
fn score_json(score: f32) -> Value {
    match score {
        f32::INFINITY => Value::from("inf"),
        f32::NEG_INFINITY => Value::from("-inf"),
        score => json!(score),
    }
}
