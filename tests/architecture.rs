//! The layering of ARCHITECTURE.md, checked from the sources: every `crate::<module>` a
//! top-level module names (outside its `#[cfg(test)]` tests and its comments) lies in a lower
//! layer, or is the module itself. Root re-exports count as the module that defines them. So
//! there is no import cycle among top-level modules either.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules by layer, bottom first (ARCHITECTURE.md, "Layers").
const LAYERS: &[&[&str]] = &[
    &["exhausted"],
    &["address_space", "fork", "hint", "lsn", "modes", "rng", "zeros"],
    &["background"],
    &["error"],
    &["storage"],
    &["format"],
    &["wal", "arena", "archive", "search", "ship"],
    &["ann"],
    &["store"],
    &["restore", "inspect"],
    &["replica"],
    &["testing"],
];

/// Names the crate root re-exports, with the module that defines each.
const ROOT_NAMES: &[(&str, &str)] = &[
    ("Error", "error"),
    ("Result", "error"),
    ("Lsn", "lsn"),
    ("RecoveryMode", "modes"),
    ("SyncMode", "modes"),
    ("Metric", "search"),
    ("Store", "store"),
    ("Options", "store"),
    ("Retention", "store"),
    ("Transaction", "store"),
    ("VectorRef", "store"),
    ("Row", "store"),
    ("BATCH_RECORD_BYTES", "store"),
    ("ListOptions", "store"),
    ("Ids", "store"),
    ("Entries", "store"),
    ("Entry", "store"),
    ("LogInfo", "store"),
    ("RecoveryReport", "store"),
    ("ShipStatus", "store"),
    ("RestoreReport", "restore"),
    ("RestoreTarget", "restore"),
    ("restore", "restore"),
    ("restore_with", "restore"),
    ("Replica", "replica"),
    ("ReplicaOptions", "replica"),
    ("ReplicaStatus", "replica"),
    ("is_archive_url", "ship"),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn source_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        files.extend(source_files(&entry.path()));
    }
    files
}

/// The source of a file without its unit tests (by convention the file's last item).
fn without_tests(text: &str) -> &str {
    text.find("\n#[cfg(test)]\nmod ").map_or(text, |at| &text[..at])
}

/// Every top-level module `text` names through `crate::` (comments and doc links aside).
fn named_modules(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = code.as_str();
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + 7..];
        if rest.starts_with('{') {
            let list = &rest[1..rest.find('}').unwrap_or(rest.len())];
            out.extend(
                list.split(',')
                    .map(|n| n.trim().split("::").next().unwrap_or("").to_string()),
            );
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(name);
        }
    }
    out.into_iter()
        .filter(|n| !n.is_empty())
        .map(|n| {
            ROOT_NAMES
                .iter()
                .find(|(name, _)| *name == n)
                .map_or(n.clone(), |(_, module)| module.to_string())
        })
        .collect()
}

#[test]
fn every_module_names_only_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut uphill: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for layer in LAYERS {
        for &module in *layer {
            let (dir, file) = (src.join(module), src.join(format!("{module}.rs")));
            let path = if dir.is_dir() { dir } else { file };
            let here = layer_of(module).unwrap();
            for source in source_files(&path) {
                let text = std::fs::read_to_string(&source).unwrap();
                for named in named_modules(without_tests(&text)) {
                    let Some(there) = layer_of(&named) else {
                        continue; // a root item (a macro, a path into `self`), not a module
                    };
                    if named != module && there >= here {
                        uphill
                            .entry(format!("{module} -> {named}"))
                            .or_default()
                            .push(source.strip_prefix(&src).unwrap().display().to_string());
                    }
                }
            }
        }
    }
    assert!(
        uphill.is_empty(),
        "arrows that do not run down (ARCHITECTURE.md, Layers): {uphill:#?}"
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let module = name.strip_suffix(".rs").unwrap_or(&name).to_string();
        if ["lib", "main", "cli"].contains(&module.as_str()) {
            continue;
        }
        assert!(
            layer_of(&module).is_some(),
            "src/{name} has no layer in ARCHITECTURE.md and tests/architecture.rs"
        );
    }
}
