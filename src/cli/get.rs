//! `vellum get <DIR> <ID>...`: each vector as a JSON object, one a line, in the order given;
//! exit 1 if any is absent (after the others are printed).

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::common::{Failure, open_store_read_only, print_json};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store.
    pub dir: PathBuf,
    /// The ids of the vectors (read in one batch: `Store::get_many`).
    #[arg(required = true, num_args = 1.., value_name = "ID")]
    pub ids: Vec<String>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let store = open_store_read_only(&args.dir)?;
    let ids: Vec<&str> = args.ids.iter().map(String::as_str).collect();
    let mut absent = Vec::new();
    store
        .get_many(&ids, |i, found| {
            let Some(vector) = found else {
                absent.push(format!("{:?}", ids[i]));
                return;
            };
            let metadata: Map<String, Value> = vector
                .metadata()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            print_json(&json!({
                "id": ids[i],
                "vector": &*vector,
                "metadata": metadata,
            }));
        })
        .map_err(|e| {
            let what = match ids.as_slice() {
                [id] => format!("{id:?}"),
                _ => format!("{} ids", ids.len()),
            };
            Failure::from_error(format!("reading {what} from {}", args.dir.display()), e)
        })?;
    if absent.is_empty() {
        return Ok(());
    }
    let what = if absent.len() == 1 { "id" } else { "ids" };
    Err(Failure::not_found(format!(
        "no vector with {what} {} in {}",
        absent.join(", "),
        args.dir.display()
    )))
}
