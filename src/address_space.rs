//! The process's address space limit (`RLIMIT_AS`, `ulimit -v`): a store maps each of its files
//! whole and every thread reserves room for its stack, so under a limit a mapping or a thread's
//! start can fail with `ENOMEM` or `EAGAIN`, whose own words ("Cannot allocate memory",
//! "Resource temporarily unavailable") point at RAM or at a thread limit instead.

use std::io;

/// The process's address space limit in bytes; `None`: no limit.
pub fn limit_bytes() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`, a local of that type.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(limit.rlim_cur)
}

/// `e`, a failure to reserve address space (`ENOMEM` from a mapping, `EAGAIN` from the stack
/// of a thread being started), saying what the limit is, what needed the room (`taking`) and
/// what to do, where a limit is set; `e` stays its source, so its code is still found
/// ([`crate::exhausted::os_error_code`]). Any other error, or no limit, is `e` unchanged.
pub fn with_limit(e: io::Error, taking: &str) -> io::Error {
    if !matches!(e.raw_os_error(), Some(libc::ENOMEM | libc::EAGAIN)) {
        return e;
    }
    let Some(limit_bytes) = limit_bytes() else {
        return e;
    };
    let limit_mib = limit_bytes as f64 / f64::from(1u32 << 20);
    crate::exhausted::with_hint(
        e,
        format!(
            "this process may map at most {limit_mib:.1} MiB (its address space limit, `ulimit -v`), and {taking}; raise the limit"
        ),
    )
}

/// What a thread's start takes, for [`with_limit`].
pub const THREAD_STACK: &str = "each thread takes room for its stack";
