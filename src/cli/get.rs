//! `vellum get <DIR> <ID>`: one vector as a JSON object; exit 1 if absent.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::common::{Failure, open_store_read_only, print_json};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store.
    pub dir: PathBuf,
    /// The id of the vector.
    pub id: String,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let store = open_store_read_only(&args.dir)?;
    let found = store
        .get(&args.id)
        .map_err(|e| Failure::from_error(format!("reading {:?} from {}", args.id, args.dir.display()), e))?;
    let Some(vector) = found else {
        return Err(Failure::not_found(format!(
            "no vector with id {:?} in {}",
            args.id,
            args.dir.display()
        )));
    };
    let metadata: Map<String, Value> = vector
        .metadata()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    print_json(&json!({
        "id": args.id,
        "vector": &*vector,
        "metadata": metadata,
    }));
    Ok(())
}
