//! One remote archive location (`s3://`, `gs://`, `az://`, `file://`) reached through the
//! `object_store` crate, with blocking calls on a small runtime of its own: the engine's
//! threads never run async code, and a call that fails is an `Error` naming the object.
//!
//! Credentials and endpoints come from the environment, as each cloud's own tools read them
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ALLOW_HTTP`; `GOOGLE_SERVICE_ACCOUNT`…; `AZURE_STORAGE_ACCOUNT_NAME`…): the builders'
//! `from_env`. Transient failures (connection errors, 5xx, timeouts) are retried by the
//! client with exponential backoff before a call reports them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};

use crate::{Error, Result};

/// How many objects a download fetches at once.
pub const DOWNLOADS_IN_FLIGHT: usize = 8;

/// An object under the remote prefix: its name relative to the prefix, size and time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteObject {
    pub name: String,
    pub size_bytes: u64,
    pub modified: SystemTime,
}

/// A remote archive location.
pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: Duration::from_secs(20),
    }
}

fn install_crypto_provider() {
    // reqwest is built without a default TLS provider; the process gets `ring` unless something
    // installed another first (then that one stays).
    // (`ring` lacks the post-quantum key exchange aws-lc-rs has; that is rustls' deprecation.)
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let _ = provider.install_default();
}

impl Remote {
    /// Parses `url` and builds its client (no network traffic yet).
    pub fn new(url: &str) -> Result<Remote> {
        install_crypto_provider();
        let bad = |why: String| Error::InvalidArgument(format!("archive URL {url:?}: {why}"));
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not an absolute local path".into()))?;
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| bad(e.to_string()))?
                    .with_fsync(true);
                (Arc::new(local), ObjectPath::default())
            }
            "s3" | "s3a" => {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                (Arc::new(store), object_path(&parsed)?)
            }
            "gs" => {
                let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                (Arc::new(store), object_path(&parsed)?)
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                (Arc::new(store), object_path(&parsed)?)
            }
            other => {
                return Err(bad(format!(
                    "unknown scheme {other:?}: use s3://, gs://, az:// or file://"
                )));
            }
        };
        Ok(Remote {
            url: url.trim_end_matches('/').to_string(),
            store,
            prefix,
            runtime: new_runtime()?,
        })
    }

    /// The URL this remote was made from (without a trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of the object `name` (relative to the prefix), for messages.
    pub fn object_url(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }

    fn path(&self, name: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        path
    }

    fn failure(&self, doing: &str, name: &str, error: object_store::Error) -> Error {
        if let object_store::Error::NotFound { .. } = error {
            return Error::NotFound(format!("{} is missing from the remote archive", self.object_url(name)));
        }
        Error::Io {
            context: format!("{doing} {}", self.object_url(name)),
            source: std::io::Error::other(error.to_string()),
        }
    }

    /// Uploads `bytes` as `name`, replacing any object there, atomically: the object exists
    /// whole or not at all.
    pub fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path(name);
        self.runtime
            .block_on(self.store.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.failure("uploading", name, e))
    }

    /// Uploads `bytes` as `name` only if no object is there. `Ok(false)` if one is. Where the
    /// backend has no conditional put, falls back to a check then a put.
    pub fn put_new(&self, name: &str, bytes: Vec<u8>) -> Result<bool> {
        let path = self.path(name);
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let payload = PutPayload::from(bytes.clone());
        match self.runtime.block_on(self.store.put_opts(&path, payload, options)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) | Err(object_store::Error::NotSupported { .. }) => {
                if self.get_optional(name)?.is_some() {
                    return Ok(false);
                }
                self.put(name, bytes).map(|()| true)
            }
            Err(e) => Err(self.failure("uploading", name, e)),
        }
    }

    /// Downloads `name` whole.
    pub fn get(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.path(name);
        self.runtime
            .block_on(async {
                let result = self.store.get(&path).await?;
                result.bytes().await
            })
            .map(|b| b.to_vec())
            .map_err(|e| self.failure("downloading", name, e))
    }

    /// Downloads bytes `range` of `name`.
    pub fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
        let path = self.path(name);
        self.runtime
            .block_on(self.store.get_range(&path, range))
            .map(|b| b.to_vec())
            .map_err(|e| self.failure("downloading", name, e))
    }

    /// Downloads `name` into the new file `path`, a chunk at a time (a base image need not fit
    /// in memory); returns its size.
    pub fn download_to(&self, name: &str, path: &std::path::Path) -> Result<u64> {
        use std::io::Write;
        let object = self.path(name);
        let mut file = std::fs::File::create(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        self.runtime.block_on(async {
            let result = self
                .store
                .get(&object)
                .await
                .map_err(|e| self.failure("downloading", name, e))?;
            let mut stream = result.into_stream();
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.failure("downloading", name, e))?;
                file.write_all(&chunk)
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
                size += chunk.len() as u64;
            }
            Ok(size)
        })
    }

    /// The same location with a runtime of its own, for another thread to download with
    /// while this one's thread does something else.
    pub fn twin(&self) -> Result<Remote> {
        Ok(Remote {
            url: self.url.clone(),
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            runtime: new_runtime()?,
        })
    }

    /// Downloads `name` and sends its bytes, chunk by chunk as they arrive, into `chunks`; a
    /// failure is sent as the last message. Stops early if the receiver is gone.
    pub fn stream_to(&self, name: &str, chunks: &std::sync::mpsc::SyncSender<Result<Vec<u8>>>) {
        let object = self.path(name);
        let outcome = self.runtime.block_on(async {
            let result = self
                .store
                .get(&object)
                .await
                .map_err(|e| self.failure("downloading", name, e))?;
            let mut stream = result.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.failure("downloading", name, e))?;
                if chunks.send(Ok(Vec::from(chunk))).is_err() {
                    break;
                }
            }
            Ok(())
        });
        if let Err(error) = outcome {
            let _ = chunks.send(Err(error));
        }
    }

    /// Downloads `name`, or `None` if there is no such object.
    pub fn get_optional(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.get(name) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Downloads several objects, a few at a time, and hands each to `each` in the order given.
    pub fn get_each(&self, names: &[String], mut each: impl FnMut(&str, Vec<u8>) -> Result<()>) -> Result<()> {
        let fetches = names.iter().map(|name| {
            let path = self.path(name);
            let store = self.store.clone();
            async move {
                let result = store.get(&path).await?;
                result.bytes().await
            }
        });
        self.runtime.block_on(async {
            let mut stream = futures_util::stream::iter(fetches).buffered(DOWNLOADS_IN_FLIGHT);
            let mut at = 0;
            while let Some(result) = stream.next().await {
                let name = &names[at];
                let bytes = result.map_err(|e| self.failure("downloading", name, e))?;
                each(name, bytes.to_vec())?;
                at += 1;
            }
            Ok(())
        })
    }

    /// Deletes `name` (no error if it is already gone).
    pub fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failure("deleting", name, e)),
        }
    }

    /// Every object under `dir/` (relative to the prefix; "" for all), names relative to the
    /// prefix, sorted by name.
    pub fn list(&self, dir: &str) -> Result<Vec<RemoteObject>> {
        let path = self.path(dir);
        let base = self.prefix.as_ref().to_string();
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&path)).try_collect())
            .map_err(|e| self.failure("listing", dir, e))?;
        let mut objects: Vec<RemoteObject> = metas
            .into_iter()
            .filter_map(|meta| {
                let full = meta.location.as_ref();
                let name = if base.is_empty() {
                    full
                } else {
                    full.strip_prefix(base.as_str())?.strip_prefix('/')?
                };
                Some(RemoteObject {
                    name: name.to_string(),
                    size_bytes: meta.size,
                    modified: SystemTime::from(meta.last_modified),
                })
            })
            .collect();
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(objects)
    }
}

fn new_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the object-store runtime", e))
}

fn object_path(url: &url::Url) -> Result<ObjectPath> {
    ObjectPath::from_url_path(url.path()).map_err(|e| Error::InvalidArgument(format!("archive URL {url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ship::is_url;

    #[test]
    fn urls_are_told_from_paths() {
        for url in ["s3://bucket/prefix", "gs://b", "az://container/p", "file:///tmp/x"] {
            assert!(is_url(url), "{url} is a URL");
        }
        for path in ["/tmp/store", "store", "./s3:/x", "C://x", "a b://c", "://x"] {
            assert!(!is_url(path), "{path} is a path");
        }
    }

    #[test]
    fn a_file_remote_puts_lists_gets_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/remote", dir.path().display());
        let remote = Remote::new(&url).unwrap();
        remote.put("g/a", b"one".to_vec()).unwrap();
        assert!(
            !remote.put_new("g/a", b"two".to_vec()).unwrap(),
            "a conditional put keeps the object there"
        );
        assert!(remote.put_new("g/b", b"three".to_vec()).unwrap());
        let names: Vec<String> = remote.list("g").unwrap().into_iter().map(|o| o.name).collect();
        assert_eq!(names, ["g/a", "g/b"]);
        assert_eq!(remote.get("g/a").unwrap(), b"one");
        remote.delete("g/a").unwrap();
        remote.delete("g/a").unwrap();
        assert!(
            matches!(remote.get("g/a"), Err(Error::NotFound(_))),
            "a deleted object is not found"
        );
        assert!(
            matches!(Remote::new("ftp://x/y"), Err(Error::InvalidArgument(_))),
            "unknown schemes are refused"
        );
    }
}
