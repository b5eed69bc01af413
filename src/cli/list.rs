//! `vellum list <DIR>`: the ids in byte order, one a line, escaped as inside a JSON string
//! (`escape_text`), or with `--json` each a JSON string. Read-only, streamed leaf by leaf.

use std::io::Write;
use std::path::PathBuf;

use vellum::ListOptions;

use super::common::{Failure, escape_text, open_store_read_only};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store.
    pub dir: PathBuf,
    /// Only ids that start with this text.
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: String,
    /// Only ids after this one in byte order (exclusive): the last id of the previous page.
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,
    /// At most N ids.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Each id as a JSON string on its own line (JSON Lines) instead of escaped text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let store = open_store_read_only(&args.dir)?;
    let options = ListOptions {
        prefix: args.prefix,
        after: args.after,
        limit: args.limit,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = |e| Failure::io("writing the ids to stdout", e);
    for id in store.ids(options) {
        let id = id.map_err(|e| Failure::from_error(format!("listing the ids of {}", args.dir.display()), e))?;
        if args.json {
            serde_json::to_writer(&mut out, &id).map_err(|e| written(e.into()))?;
            out.write_all(b"\n").map_err(written)?;
        } else {
            // Ids may hold newlines or other control characters: escaped (as inside a JSON
            // string), each id stays one line, and unescaping gives it back.
            writeln!(out, "{}", escape_text(&id)).map_err(written)?;
        }
    }
    out.flush().map_err(written)
}
