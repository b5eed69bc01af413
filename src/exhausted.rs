//! An error of a resource the process or the system ran out of (descriptors, memory, address
//! space, threads), with the way out added to its message. The operating system's own words
//! ("Too many open files", "Cannot allocate memory") say neither what the limit is nor what to
//! do; [`with_hint`] adds both and keeps the original error as the source, so its code
//! ([`os_error_code`]) and its nature ([`is_exhaustion`]) are still found under the hint.
//! [`with_note`] adds what happened to any other error the same way (a store's directory
//! removed under it): its code is found under the note as well, and it is no shortage.

use std::fmt;
use std::io;

/// `e`, of kind unchanged, whose message is `e`'s then `hint`; `e` stays its source. Only for
/// errors that say the process or the system ran out of something: [`is_exhaustion`] is true
/// of the result whatever `e`'s code.
pub(crate) fn with_hint(e: io::Error, hint: String) -> io::Error {
    io::Error::new(
        e.kind(),
        Noted {
            source: e,
            note: hint,
            shortage: true,
        },
    )
}

/// `e`, of kind unchanged, whose message is `e`'s then `note` (what happened, where the OS's
/// words do not say it); `e` stays its source, and [`is_exhaustion`] judges it by `e`.
pub(crate) fn with_note(e: io::Error, note: String) -> io::Error {
    let shortage = is_exhaustion(&e);
    io::Error::new(
        e.kind(),
        Noted {
            source: e,
            note,
            shortage,
        },
    )
}

/// An error with a note after its message: the way out of a shortage, or what happened.
#[derive(Debug)]
struct Noted {
    source: io::Error,
    note: String,
    /// The process or the system ran out of something.
    shortage: bool,
}

impl fmt::Display for Noted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.note)
    }
}

impl std::error::Error for Noted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn noted(e: &io::Error) -> Option<&Noted> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Noted>())
}

/// True if `e` says the process or the system ran out of something (descriptors, memory or
/// address space), not that a file is wrong: the same call may succeed elsewhere or later.
/// An error made with a hint (the storage's opens out of descriptors, the address space
/// limit's) is one by construction; any other is judged by its code and kind.
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM))
        || e.kind() == io::ErrorKind::OutOfMemory
        || noted(e).is_some_and(|noted| noted.shortage)
}

/// The operating system's error code of `e`, or of the error it wraps where a hint or a note
/// was added:
/// what a caller that matches codes (Python's `OSError.errno`) still finds.
pub fn os_error_code(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
        .or_else(|| noted(e).and_then(|noted| os_error_code(&noted.source)))
}

/// An equal error for a second caller the same failure stopped (`io::Error` is not `Clone`):
/// the same kind, message and code, and the same hint or note where one was added.
pub(crate) fn duplicate(e: &io::Error) -> io::Error {
    if let Some(noted) = noted(e) {
        let source = duplicate(&noted.source);
        let note = noted.note.clone();
        return if noted.shortage {
            with_hint(source, note)
        } else {
            with_note(source, note)
        };
    }
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hinted_error_keeps_its_code_its_kind_and_its_nature() {
        let hinted = with_hint(io::Error::from_raw_os_error(libc::EAGAIN), "raise the limit".into());
        assert_eq!(os_error_code(&hinted), Some(libc::EAGAIN), "the code is still found");
        assert_eq!(hinted.kind(), io::ErrorKind::WouldBlock, "the kind is the source's");
        assert!(is_exhaustion(&hinted), "only shortages are hinted");
        assert!(hinted.to_string().ends_with(": raise the limit"), "{hinted}");
    }

    #[test]
    fn a_duplicate_keeps_the_code_the_kind_and_the_hint() {
        let hinted = with_hint(io::Error::from_raw_os_error(libc::EMFILE), "raise it".into());
        let copy = duplicate(&hinted);
        assert_eq!(os_error_code(&copy), Some(libc::EMFILE), "the code survives: {copy}");
        assert_eq!(copy.to_string(), hinted.to_string(), "and the message");
        assert!(is_exhaustion(&copy), "and the nature");
        let plain = duplicate(&io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(plain.raw_os_error(), Some(libc::EIO), "a plain code survives");
        let made_up = duplicate(&io::Error::other("lost"));
        assert_eq!(
            (made_up.kind(), made_up.to_string()),
            (io::ErrorKind::Other, "lost".to_string())
        );
    }

    #[test]
    fn a_noted_error_keeps_its_code_and_kind_and_is_no_shortage_unless_its_source_is() {
        let noted = with_note(io::Error::from_raw_os_error(libc::ENOENT), "the directory went".into());
        assert_eq!(os_error_code(&noted), Some(libc::ENOENT), "the code is still found");
        assert_eq!(noted.kind(), io::ErrorKind::NotFound, "the kind is the source's");
        assert!(!is_exhaustion(&noted), "a missing file is no shortage");
        let copy = duplicate(&noted);
        assert_eq!(copy.to_string(), noted.to_string(), "a duplicate keeps the message");
        assert_eq!(os_error_code(&copy), Some(libc::ENOENT), "and the code");
        let short = with_note(
            io::Error::from_raw_os_error(libc::EMFILE),
            "while putting a file back".into(),
        );
        assert!(is_exhaustion(&short), "a shortage stays one under a note");
    }

    #[test]
    fn an_unhinted_error_is_judged_by_its_code() {
        assert!(
            is_exhaustion(&io::Error::from_raw_os_error(libc::ENOMEM)),
            "ENOMEM is a shortage"
        );
        assert!(
            !is_exhaustion(&io::Error::from_raw_os_error(libc::EIO)),
            "EIO may be damage: verify reports it"
        );
        assert_eq!(
            os_error_code(&io::Error::other("no code")),
            None,
            "a made-up error has no code"
        );
    }
}
