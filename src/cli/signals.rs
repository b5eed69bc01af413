//! SIGINT and SIGTERM as requests to stop: a long command (`import`, `index create`) stops at
//! its next safe point, leaves the store consistent and closed, and exits 128 + the signal's
//! number (130, 143), as a shell reports a process the signal ended.

use std::sync::atomic::{AtomicI32, Ordering};

use super::common::{EXIT_SIGNAL_BASE, Failure};

/// The signal (SIGINT or SIGTERM) that asked the command to stop; 0 if none has.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(signal: libc::c_int) {
    // An atomic store is async-signal-safe; the command reads it at its safe points.
    STOP_SIGNAL.store(signal, Ordering::SeqCst);
}

/// The stop signal received so far, if any.
pub fn stop_signal() -> Option<libc::c_int> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Makes SIGINT and SIGTERM set `STOP_SIGNAL` instead of ending the process. Each handler
/// resets itself when it runs (`SA_RESETHAND`), so a second signal has its default effect;
/// interrupted system calls restart (`SA_RESTART`), so no read or write sees EINTR.
pub fn catch_stop_signals() -> Result<(), Failure> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `action` starts zeroed, a valid `sigaction` (no flags, empty mask), and gets a
        // handler of the signature `sa_sigaction` expects without SA_SIGINFO, which does
        // nothing but an atomic store; no old action is asked for (null).
        let result = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if result != 0 {
            let error = std::io::Error::last_os_error();
            return Err(Failure::store(format!("cannot handle signal {signal}: {error}")));
        }
    }
    Ok(())
}

/// The failure of a command `signal` stopped: exit 128 + its number, the message saying what
/// the stop left (`what`).
pub fn stopped_by(signal: libc::c_int, what: &str) -> Failure {
    let name = if signal == libc::SIGINT { "SIGINT" } else { "SIGTERM" };
    Failure::new(
        EXIT_SIGNAL_BASE + signal as u8,
        format!("interrupted by {name}: {what}"),
    )
}
