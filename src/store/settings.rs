//! The store's settings (`SETTINGS`): what every opener of the store applies unless its own
//! `Options` say otherwise, such as the archive's retention. Written by `Store::create` and
//! `Store::set_setting` (the command line's `create` flags); absent until something is set.
//!
//! A small text file, replaced whole and atomically (written as `SETTINGS.tmp`, fdatasynced,
//! renamed, the directory fsynced), so a crash leaves the old or the new file, never a mix:
//!
//! ```text
//! VLMSET1
//! retention=keep-last:3
//! crc32c=1a2b3c4d
//! ```
//!
//! The first line is the magic; then one `key=value` line per setting (keys are lowercase
//! ASCII letters, digits and `_`; values are UTF-8 without newlines), sorted by key; the last
//! line is the CRC32C of every byte before it, as 8 lowercase hex digits. The file is valid if
//! and only if it has that shape and the CRC matches. An invalid file is damage
//! (`Corrupted`): settings are never silently dropped. Unknown keys are kept and ignored, so
//! a newer writer's settings survive an older one.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::storage::Storage;
use crate::store::Retention;
use crate::{Error, Options};

pub const SETTINGS_FILE_NAME: &str = "SETTINGS";
const SETTINGS_MAGIC: &str = "VLMSET1";
/// A settings file is never larger than this: anything longer is damage, refused before it is
/// read whole.
pub const SETTINGS_MAX_BYTES: u64 = 64 << 10;

/// The settings of a store, by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

/// The key of the archive's retention policy.
pub const RETENTION: &str = "retention";

impl Settings {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Sets `key` to `value`; `InvalidArgument` for a key or value the file cannot hold.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !key_ok || key == "crc32c" {
            return Err(Error::InvalidArgument(format!("{key:?} is not a settings key")));
        }
        if value.contains(['\n', '\r']) {
            return Err(Error::InvalidArgument(format!("the value of {key} holds a line break")));
        }
        self.values.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Removes `key`.
    pub fn unset(&mut self, key: &str) {
        self.values.remove(key);
    }

    /// The retention policy, if set; damage if the stored value does not parse.
    pub fn retention(&self) -> Result<Option<Retention>> {
        self.get(RETENTION)
            .map(|text| {
                text.parse::<Retention>()
                    .map_err(|reason| Error::corrupted_file(SETTINGS_FILE_NAME, format!("retention: {reason}")))
            })
            .transpose()
    }

    fn encode(&self) -> String {
        let mut text = format!("{SETTINGS_MAGIC}\n");
        for (key, value) in &self.values {
            text.push_str(&format!("{key}={value}\n"));
        }
        let crc = crc32c::crc32c(text.as_bytes());
        text.push_str(&format!("crc32c={crc:08x}\n"));
        text
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Settings, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8")?;
        let body_end = text
            .trim_end_matches('\n')
            .rfind('\n')
            .map(|i| i + 1)
            .ok_or("no checksum line")?;
        let (body, crc_line) = text.split_at(body_end);
        let crc = crc_line
            .strip_prefix("crc32c=")
            .and_then(|hex| hex.strip_suffix('\n'))
            .filter(|hex| hex.len() == 8)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or("the last line is not the checksum")?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return Err("checksum mismatch".into());
        }
        let mut lines = body.lines();
        if lines.next() != Some(SETTINGS_MAGIC) {
            return Err("not a settings file (bad magic)".into());
        }
        let mut settings = Settings::default();
        for line in lines {
            let (key, value) = line.split_once('=').ok_or("a line without `=`")?;
            settings.set(key, value).map_err(|e| e.to_string())?;
        }
        Ok(settings)
    }
}

/// The settings of the store in `dir` (empty if it has none). Opens the file read-only.
pub fn read(storage: &dyn Storage, dir: &Path) -> Result<Settings> {
    let path = dir.join(SETTINGS_FILE_NAME);
    let file = match storage.open_read_only(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(crate::store::control_file::no_store_at_a_file(dir));
        }
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let len_bytes = file
        .len()
        .context(|| format!("reading the length of {}", path.display()))?;
    if len_bytes > SETTINGS_MAX_BYTES {
        return Err(Error::corrupted_file(
            &path,
            format!("{len_bytes} bytes: too long for a settings file"),
        ));
    }
    let mut bytes = vec![0u8; len_bytes as usize];
    file.read_at(&mut bytes, 0)
        .context(|| format!("reading {}", path.display()))?;
    Settings::decode(&bytes).map_err(|reason| Error::corrupted_file(&path, reason))
}

/// Replaces the settings of the store in `dir` with `settings`, atomically and durably.
pub fn write(storage: &dyn Storage, dir: &Path, settings: &Settings) -> Result<()> {
    let path = dir.join(SETTINGS_FILE_NAME);
    let tmp = dir.join(format!("{SETTINGS_FILE_NAME}.tmp"));
    let _ = storage.remove_file(&tmp);
    let bytes = settings.encode();
    let written = storage
        .open(&tmp, true)
        .and_then(|file| {
            file.write_at(bytes.as_bytes(), 0)?;
            file.sync_data()
        })
        .and_then(|()| storage.rename(&tmp, &path))
        .and_then(|()| storage.sync_dir(dir));
    if let Err(e) = written {
        let _ = storage.remove_file(&tmp);
        return Err(Error::io(format!("writing {}", path.display()), e));
    }
    Ok(())
}

/// The retention an open applies: the opener's own, or, for `Retention::Stored`, the store's
/// setting (`KeepLast(2)` where none is set).
pub fn effective_retention(options: &Options, settings: &Settings) -> Result<Retention> {
    match options.retention {
        Retention::Stored => Ok(settings.retention()?.unwrap_or(Retention::DEFAULT)),
        explicit => Ok(explicit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;

    #[test]
    fn settings_round_trip_and_damage_is_refused() {
        let sim = SimStorage::new(5);
        let dir = Path::new("/s");
        sim.create_dir_all(dir).unwrap();
        assert_eq!(read(&sim, dir).unwrap(), Settings::default(), "no file: nothing set");
        let mut settings = Settings::default();
        settings.set(RETENTION, "keep-last:3").unwrap();
        settings.set("archive_url", "s3://bucket/prefix with space").unwrap();
        write(&sim, dir, &settings).unwrap();
        let back = read(&sim, dir).unwrap();
        assert_eq!(back, settings);
        assert_eq!(back.retention().unwrap(), Some(Retention::KeepLast(3)));
        let path = dir.join(SETTINGS_FILE_NAME);
        let len = sim.read_file(&path).unwrap().len();
        for at in [0, 9, len as u64 - 3] {
            let sim2 = sim.reboot();
            sim2.damage(&path, at, b"#").unwrap();
            let error = read(&sim2, dir).unwrap_err();
            assert!(
                matches!(error, Error::Corrupted { .. }),
                "a byte changed at {at}: {error}"
            );
        }
        assert!(settings.set("Bad Key", "x").is_err(), "keys are checked");
        assert!(settings.set("k", "a\nb").is_err(), "values hold no line break");
    }
}
