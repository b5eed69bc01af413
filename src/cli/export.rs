//! `vellum export <DIR>`: every record (or those under `--prefix`), in byte order of the id, in
//! the JSONL format `import` reads, so that importing the output into a store of the same
//! dimension gives the same ids, the same vectors bit for bit and the same metadata in the same
//! order. Read-only, streamed leaf by leaf.
//!
//! Floats are written as the shortest decimal that parses back to the same float32 (serde_json's
//! float32 formatting); `import` reads them with serde_json's float32 parsing. For the version in
//! Cargo.lock every finite float32 was checked (all 2^32 bit patterns, once); the unit test below
//! checks the boundary values and a random sample through the import's own reader.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::ser::SerializeMap;
use vellum::{Entry, ListOptions, Store};

use super::common::{EXIT_INPUT, Failure, open_store_read_only};

/// The `--format` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object a line, {"id": ..., "vector": [...], "metadata": {...}}: what `import`
    /// reads.
    #[default]
    Jsonl,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store.
    pub dir: PathBuf,
    /// The output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Only records whose id starts with this text.
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: String,
    /// Write to FILE instead of stdout. The output goes to a temporary file beside it, which
    /// replaces FILE only once the export is complete and durable.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// One line of the output.
#[derive(Serialize)]
struct Record<'a> {
    id: &'a str,
    vector: &'a [f32],
    metadata: Pairs<'a>,
}

/// Metadata pairs as a JSON object, in insertion order.
struct Pairs<'a>(&'a [(String, String)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

pub fn run(args: Args) -> Result<(), Failure> {
    let ExportFormat::Jsonl = args.format;
    let store = open_store_read_only(&args.dir)?;
    let options = ListOptions {
        prefix: args.prefix.clone(),
        ..ListOptions::default()
    };
    match &args.output {
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            write_records(&store, &args.dir, options, &mut out)?;
            out.flush().map_err(|e| Failure::io("writing the records to stdout", e))
        }
        Some(path) => {
            let count = export_to_file(&store, &args.dir, options, path)?;
            println!(
                "exported {count} records from {} to {}",
                args.dir.display(),
                path.display()
            );
            Ok(())
        }
    }
}

/// Writes the records to a temporary file beside `path`, makes it durable and renames it over
/// `path`; on failure removes the temporary file and leaves `path` as it was. Returns how many
/// records it wrote.
fn export_to_file(store: &Store, dir: &Path, options: ListOptions, path: &Path) -> Result<u64, Failure> {
    let Some(name) = path.file_name() else {
        return Err(Failure::usage(format!("--output {} names no file", path.display())));
    };
    let partial = path.with_file_name(format!(
        ".{}.export-{}.partial",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = File::create(&partial).map_err(|e| Failure::io(format!("cannot create {}", partial.display()), e))?;
    let written = |e| Failure::io(format!("writing {}", partial.display()), e);
    let result = (|| {
        let mut out = BufWriter::new(file);
        let count = write_records(store, dir, options, &mut out)?;
        let file = out.into_inner().map_err(|e| written(e.into_error()))?;
        file.sync_all().map_err(written)?;
        std::fs::rename(&partial, path)
            .map_err(|e| Failure::io(format!("renaming {} to {}", partial.display(), path.display()), e))?;
        Ok(count)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Writes one line per record to `out`; returns how many.
fn write_records(store: &Store, dir: &Path, options: ListOptions, out: &mut impl Write) -> Result<u64, Failure> {
    let written = |e| Failure::io("writing a record", e);
    let mut count = 0u64;
    for entry in store.entries(options) {
        let entry = entry.map_err(|e| Failure::from_error(format!("reading the records of {}", dir.display()), e))?;
        check_representable(&entry)?;
        let record = Record {
            id: &entry.id,
            vector: &entry.vector,
            metadata: Pairs(&entry.metadata),
        };
        serde_json::to_writer(&mut *out, &record).map_err(|e| written(e.into()))?;
        out.write_all(b"\n").map_err(written)?;
        count += 1;
    }
    Ok(count)
}

/// Fails on a record the JSONL format cannot give back whole: metadata naming a key twice
/// (possible through the library), which a JSON object read by `import` would collapse.
fn check_representable(entry: &Entry) -> Result<(), Failure> {
    if entry.metadata.len() < 2 {
        return Ok(());
    }
    let mut keys: Vec<&str> = entry.metadata.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    match keys.windows(2).find(|w| w[0] == w[1]) {
        None => Ok(()),
        Some(twice) => Err(Failure::new(
            EXIT_INPUT,
            format!(
                "the metadata of id {:?} holds the key {:?} twice: a JSON object (what import reads) \
                 cannot hold both values, so the export stops here",
                entry.id, twice[0]
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::input::{self, Format};

    /// Float32s that stress a decimal round trip: zeros, the subnormal range, the normal
    /// boundary, powers of two and their neighbours, the largest values.
    fn awkward_floats() -> Vec<f32> {
        let mut bits: Vec<u32> = vec![
            0,
            1,
            2,
            3,
            0x007f_ffff,
            0x0080_0000,
            0x0080_0001,
            0x7f7f_ffff,
            0x7f7f_fffe,
        ];
        for exponent in 1..255u32 {
            let power = exponent << 23;
            bits.extend([power - 1, power, power + 1]);
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let candidate = (state >> 32) as u32;
            if f32::from_bits(candidate).is_finite() {
                bits.push(candidate);
            }
        }
        bits.iter()
            .flat_map(|&b| [f32::from_bits(b), -f32::from_bits(b)])
            .collect()
    }

    #[test]
    fn exported_floats_are_read_back_by_import_bit_for_bit() {
        let floats = awkward_floats();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("floats.jsonl");
        let mut out = Vec::new();
        for (i, chunk) in floats.chunks(1000).enumerate() {
            let metadata = vec![
                ("z".to_string(), "\u{0}\"\\\n".to_string()),
                ("a".to_string(), String::new()),
            ];
            let id = format!("row\t{i}");
            let record = Record {
                id: &id,
                vector: chunk,
                metadata: Pairs(&metadata),
            };
            serde_json::to_writer(&mut out, &record).unwrap();
            out.push(b'\n');
        }
        std::fs::write(&path, &out).unwrap();
        let (mut source, _) = input::open(&path, Format::Jsonl, 1000).unwrap();
        let mut read = 0;
        for (i, chunk) in floats.chunks(1000).enumerate() {
            let record = source.next_record().unwrap().expect("a record per chunk");
            assert_eq!(record.id, format!("row\t{i}"));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&record.vector), bits(chunk), "record {i}: the same bits");
            assert_eq!(
                record.metadata,
                [("z".into(), "\u{0}\"\\\n".into()), ("a".into(), String::new())]
            );
            read += chunk.len();
        }
        assert!(source.next_record().unwrap().is_none());
        assert_eq!(read, floats.len());
        assert!(floats.len() > 300_000, "the sample is what it says");
    }

    #[test]
    fn metadata_naming_a_key_twice_is_refused_with_the_id() {
        let entry = Entry {
            id: "x".into(),
            vector: vec![0.0],
            metadata: vec![
                ("k".into(), "1".into()),
                ("j".into(), "2".into()),
                ("k".into(), "3".into()),
            ],
        };
        let refused = check_representable(&entry);
        assert!(
            matches!(&refused, Err(f) if f.code == EXIT_INPUT && f.message.contains("\"k\" twice")),
            "{refused:?}"
        );
    }
}
