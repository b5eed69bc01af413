//! The process's limit on open files (`RLIMIT_NOFILE`, `ulimit -n`) and the system's table of
//! them: raised where the process may, and named in the error where it may not.
//!
//! A store holds a descriptor for each log segment it reads and for each arena file its writer
//! has used (about 64 a GiB at the default 16 MiB segment size); a reader holds none for the
//! arena files it maps (`StorageFile::map_private_detached`). Out of descriptors, `open` fails
//! with `EMFILE` ("Too many open files"), which says neither what the limit is nor why a store
//! needs so many: [`with_descriptor_room`] says both.

use std::io;

/// Runs `open`; where it fails for want of descriptors (`EMFILE`) and the process's soft limit
/// on open files is below its hard limit, raises the soft limit to the hard one (at most
/// 2^20) and runs it once more. The usual soft limit of 1,024 stopped a store growing, or a
/// search reading it, at about 16 GiB, though the hard limit allowed far more (Go's runtime
/// raises the soft limit at every program's start for the same reason). Raised only when
/// needed: a process that never runs out keeps its limit. A failure for want of descriptors
/// that remains (`EMFILE` at the hard limit, `ENFILE`) says what the limit is and the way out.
pub(crate) fn with_descriptor_room<T>(mut open: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let result = match open() {
        Err(e) if e.raw_os_error() == Some(libc::EMFILE) && raise_open_file_limit() => open(),
        other => other,
    };
    result.map_err(with_descriptor_hint)
}

/// `e` with what the limit on open files is and the way out, if it is `EMFILE` or `ENFILE`;
/// any other error unchanged. The result keeps `e` as its source (see
/// [`crate::exhausted::is_exhaustion`]).
fn with_descriptor_hint(e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EMFILE) => {
            let (soft, hard) = open_file_limits().unwrap_or((0, 0));
            format!(
                "this process may have at most {soft} files open (its limit, `ulimit -n`; the hard limit is {hard}); \
                 a store keeps a few open, and its writer one more for each arena file it has used \
                 (64 a GiB of 16 MiB files; a read-only open keeps none of those): raise the limit"
            )
        }
        Some(libc::ENFILE) => {
            "the system's table of open files is full (`fs.file-max`): close some or raise it".to_string()
        }
        _ => return e,
    };
    crate::exhausted::with_hint(e, hint)
}

/// The soft and hard limits on open files, if the process can read them.
fn open_file_limits() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`, a local of that type.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft limit on open files to the hard one (at most 2^20); true if it rose.
fn raise_open_file_limit() -> bool {
    let Some((soft, hard)) = open_file_limits() else {
        return false;
    };
    let wanted = hard.min(1 << 20);
    if wanted <= soft {
        return false;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit from `raised`, a local of that type.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exhausted::{is_exhaustion, os_error_code};

    #[test]
    fn a_descriptor_shortage_is_named_and_still_an_exhaustion() {
        let hinted = with_descriptor_hint(io::Error::from_raw_os_error(libc::EMFILE));
        assert!(
            hinted.to_string().contains("ulimit -n"),
            "the hint names the limit: {hinted}"
        );
        assert_eq!(os_error_code(&hinted), Some(libc::EMFILE), "the code is still found");
        assert!(
            is_exhaustion(&hinted),
            "a hinted EMFILE is still a shortage, not damage"
        );
        let system = with_descriptor_hint(io::Error::from_raw_os_error(libc::ENFILE));
        assert!(system.to_string().contains("fs.file-max"), "{system}");
        assert!(is_exhaustion(&system), "ENFILE is a shortage");
    }

    #[test]
    fn other_errors_are_neither_hinted_nor_exhaustion() {
        let eio = with_descriptor_hint(io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(eio.raw_os_error(), Some(libc::EIO), "an I/O error passes unchanged");
        assert!(!is_exhaustion(&eio), "EIO may be damage: verify reports it");
        assert!(
            is_exhaustion(&io::Error::from_raw_os_error(libc::ENOMEM)),
            "ENOMEM is a shortage"
        );
        let mapped = crate::address_space::with_limit(io::Error::from_raw_os_error(libc::ENOMEM), "mapping");
        assert!(
            is_exhaustion(&mapped),
            "an address space limit keeps the kind OutOfMemory"
        );
        assert_eq!(
            os_error_code(&mapped),
            Some(libc::ENOMEM),
            "and the code under its hint: {mapped}"
        );
    }
}
