//! The hooks the engine calls for shipping the archive (`src/ship/`, feature `object-store`):
//! which settings name the archive URL, starting and stopping a store's shipper, and whether
//! retention may delete a local archive file. Without the feature a store whose settings name
//! an archive URL is refused for writing (it would stop shipping silently).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::store::Inner;
use crate::store::settings::Settings;
use crate::{Error, Options, Result};

/// The settings key of the archive URL (`SETTINGS`).
pub const ARCHIVE_URL: &str = "archive_url";
/// The settings key of the archive timeout, in milliseconds.
pub const ARCHIVE_TIMEOUT: &str = "archive_timeout";
/// The settings key that marks a directory as a replica (its value: the URL it follows).
pub const REPLICA_OF: &str = "replica_of";
/// The archive timeout where none is set.
pub const ARCHIVE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// The shipper of an open store, if it ships.
#[derive(Default)]
pub(crate) struct ShipSlot {
    #[cfg(feature = "object-store")]
    pub shipper: parking_lot::Mutex<Option<Arc<crate::ship::Shipper>>>,
}

/// True if `text` looks like a URL of a remote archive (`scheme://…`), not a path.
pub fn is_url(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once("://") else {
        return false;
    };
    scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '+')
}

/// Restores from a remote archive (`vellum::restore` with a URL source).
pub(crate) fn restore_from_url(url: &str, dest: &Path, target: crate::RestoreTarget) -> Result<crate::RestoreReport> {
    #[cfg(feature = "object-store")]
    {
        crate::ship::fetch::restore_from_url(url, None, dest, target)
    }
    #[cfg(not(feature = "object-store"))]
    {
        let _ = (dest, target);
        check_url(url).map(|()| crate::RestoreReport::default())
    }
}

/// Refuses to open a replica for writing: its log is the primary's, and a writer's recovery
/// would append to it.
pub(crate) fn refuse_writer_on_replica(dir: &Path, settings: &Settings) -> Result<()> {
    match settings.get(REPLICA_OF) {
        Some(url) => Err(Error::ReadOnly(format!(
            "{} is a replica of {url}: it opens read-only (restore from {url} for a writable copy)",
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// Records the archive URL and timeout a new store was created with (`Options`).
pub(crate) fn store_creation_settings(options: &Options, settings: &mut Settings) -> Result<()> {
    if let Some(url) = options.archive_url.as_deref().filter(|u| !u.is_empty()) {
        check_url(url)?;
        settings.set(ARCHIVE_URL, url)?;
    }
    if let Some(timeout) = options.archive_timeout {
        settings.set(ARCHIVE_TIMEOUT, &timeout_ms(timeout)?.to_string())?;
    }
    Ok(())
}

/// An archive timeout in whole milliseconds, at least 1.
pub fn timeout_ms(timeout: Duration) -> Result<u64> {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(Error::InvalidArgument(
            "the archive timeout must be at least 1 ms".into(),
        ));
    }
    Ok(ms)
}

/// Parses an archive timeout as the settings store it (milliseconds).
pub fn parse_timeout_ms(text: &str) -> Result<Duration> {
    text.parse::<u64>()
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            Error::corrupted_file(
                crate::store::settings::SETTINGS_FILE_NAME,
                format!("{ARCHIVE_TIMEOUT}: {text:?} is not a positive number of milliseconds"),
            )
        })
}

/// Checks that `url` is an archive URL this build can ship to (no network).
pub(crate) fn check_url(url: &str) -> Result<()> {
    #[cfg(feature = "object-store")]
    {
        crate::ship::Remote::new(url).map(|_| ())
    }
    #[cfg(not(feature = "object-store"))]
    {
        Err(Error::Incompatible(format!(
            "shipping the archive to {url} needs the `object-store` feature, which this build lacks"
        )))
    }
}

/// The archive URL and timeout an open applies: its `Options`, else the store's settings.
pub(crate) fn effective(options: &Options, settings: &Settings) -> Result<Option<(String, Duration)>> {
    let url = match options.archive_url.as_deref() {
        Some("") => None,
        Some(url) => Some(url.to_string()),
        None => settings.get(ARCHIVE_URL).map(str::to_string),
    };
    let Some(url) = url else { return Ok(None) };
    let timeout = match (options.archive_timeout, settings.get(ARCHIVE_TIMEOUT)) {
        (Some(timeout), _) => Duration::from_millis(timeout_ms(timeout)?),
        (None, Some(text)) => parse_timeout_ms(text)?,
        (None, None) => ARCHIVE_TIMEOUT_DEFAULT,
    };
    Ok(Some((url, timeout)))
}

/// Starts the shipper of a store opened for writing, if it ships.
pub(crate) fn start(inner: &Arc<Inner>, settings: &Settings) -> Result<()> {
    if inner.read_only {
        return Ok(());
    }
    let Some((url, timeout)) = effective(&inner.options, settings)? else {
        return Ok(());
    };
    if !inner.options.archive {
        return Err(Error::InvalidArgument(format!(
            "shipping the archive to {url} needs Options::archive"
        )));
    }
    #[cfg(feature = "object-store")]
    {
        let shipper = crate::ship::Shipper::start(inner, &url, timeout)?;
        *inner.ship.shipper.lock() = Some(shipper);
        Ok(())
    }
    #[cfg(not(feature = "object-store"))]
    {
        let _ = timeout;
        check_url(&url)
    }
}

/// Whether retention may delete the local archive file at `path`: only once it is confirmed
/// remote, when the store ships.
pub(crate) fn may_delete(inner: &Inner, path: &Path) -> bool {
    #[cfg(feature = "object-store")]
    if let Some(shipper) = inner.ship.shipper.lock().clone() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        return shipper.confirmed(name);
    }
    let _ = (inner, path);
    true
}

/// At close: uploads what is left (waiting a bounded time), then stops the shipper.
pub(crate) fn finish(inner: &Inner) {
    #[cfg(feature = "object-store")]
    if let Some(shipper) = inner.ship.shipper.lock().take() {
        shipper.finish();
    }
    let _ = inner;
}

/// Stops the shipper without waiting for uploads (a store dropped without close).
pub(crate) fn stop(inner: &Inner) {
    #[cfg(feature = "object-store")]
    if let Some(shipper) = inner.ship.shipper.lock().take() {
        shipper.stop();
    }
    let _ = inner;
}
