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
pub use crate::ship::{ARCHIVE_TIMEOUT, ARCHIVE_TIMEOUT_DEFAULT, ARCHIVE_URL, REPLICA_OF, parse_timeout_ms, timeout_ms};

/// The shipper of an open store, if it ships.
#[derive(Default)]
pub(crate) struct ShipSlot {
    #[cfg(feature = "object-store")]
    pub shipper: parking_lot::Mutex<Option<Arc<crate::store::shipper::Shipper>>>,
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
        let shipper = crate::store::shipper::Shipper::start(inner, &url, timeout)?;
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

/// Whether the store ships its archive: its close then archives every retired segment
/// before it finishes the shipper (the bucket gets the log as archive files, with no gap).
pub(crate) fn ships(inner: &Inner) -> bool {
    #[cfg(feature = "object-store")]
    {
        inner.ship.shipper.lock().is_some()
    }
    #[cfg(not(feature = "object-store"))]
    {
        let _ = inner;
        false
    }
}

/// Stops the shipper without waiting for uploads (a store dropped without close).
pub(crate) fn stop(inner: &Inner) {
    #[cfg(feature = "object-store")]
    if let Some(shipper) = inner.ship.shipper.lock().take() {
        shipper.stop();
    }
    let _ = inner;
}

#[cfg(feature = "object-store")]
impl crate::Store {
    /// What the shipper has done, if this store ships its archive (opened for writing with an
    /// archive URL).
    pub fn ship_status(&self) -> Option<crate::store::shipper::ShipStatus> {
        let shipper = self.inner().ship.shipper.lock().clone();
        shipper.map(|s| s.status())
    }

    /// Asks the shipper for a round now (everything pending, and the live log whatever the
    /// timeout) and waits up to `wait` for it; `None` if the store does not ship.
    pub fn ship_now(&self, wait: std::time::Duration) -> Option<crate::store::shipper::ShipStatus> {
        let shipper = self.inner().ship.shipper.lock().clone();
        // In a forked child the shipper thread does not exist: no round would come.
        let wait = if self.inner().origin.is_forked() { std::time::Duration::ZERO } else { wait };
        shipper.map(|s| s.ship_now(wait))
    }

    /// Sets (or with `None` removes) the archive URL in the store's settings: every later open
    /// ships there (unless its `Options::archive_url` says otherwise). This open is unchanged.
    pub fn set_archive_url(&self, url: Option<&str>) -> crate::Result<()> {
        let inner = self.inner();
        inner.check_writable()?;
        let storage = inner.options.storage.as_ref();
        let mut stored = crate::store::settings::read(storage, &inner.dir)?;
        match url.filter(|u| !u.is_empty()) {
            Some(url) => {
                check_url(url)?;
                stored.set(ARCHIVE_URL, url)?;
            }
            None => stored.unset(ARCHIVE_URL),
        }
        crate::store::settings::write(storage, &inner.dir, &stored)
    }
}

