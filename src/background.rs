//! Background threads: the work a committer hands off (log segments and `EPOCH` horizons made
//! ahead, fresh pages made ahead, checkpoints, archiving, shipping) runs at a lower scheduling
//! priority than the threads that commit.
//!
//! Why: a thread woken by a committer is often placed on the committer's own core and, at the
//! same priority, preempts it, though another core is idle: the commit then waits for the
//! whole of the work it handed off. Measured on the 2-core development machine (Linux 6.18),
//! single writer, durable 1 KiB inserts: the commit that woke the thread making the next run
//! of fresh pages (~0.3 ms of page faults) took 380–480 µs instead of ~85, every time, and as
//! long with the faults replaced by a 0.3 ms busy loop; at nice 19 the same commits took 70–120
//! µs. A lower priority does not starve the thread: it runs on an idle core, or on the
//! committer's while the committer sleeps in its `fdatasync`; a committer that waits for it
//! (a segment not ready yet, memory over the budget) gives it the core.

use std::io;
use std::thread::{Builder, JoinHandle};

/// The nice value of background threads (0 is the default; 19 the lowest priority). Linux
/// weighs a nice-10 thread at about a tenth of a nice-0 one when both want the same core.
pub const BACKGROUND_NICE: i32 = 10;

/// Spawns a thread named `name` that runs `body` at [`BACKGROUND_NICE`], or at the spawner's
/// nice value where that is higher (threads it spawns in turn inherit it).
pub(crate) fn spawn<T, F>(name: &str, body: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new()
        .name(name.into())
        .spawn(move || {
            lower_priority();
            body()
        })
        .map_err(|e| crate::address_space::with_limit(e, crate::address_space::THREAD_STACK))
}

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`], never raising it: a thread of a
/// process run at a higher nice value keeps it (a new thread starts with its spawner's). A
/// hint: a refusal is ignored.
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: getpriority and setpriority take plain integers and touch no memory of ours; on
    // Linux, PRIO_PROCESS with `who` 0 names the calling thread alone. errno is cleared first:
    // getpriority can return -1 as a value.
    unsafe {
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        if current < BACKGROUND_NICE {
            let _ = libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore = "threads and system calls")]
    fn a_background_thread_runs_at_the_background_nice_value_and_the_spawner_keeps_its_own() {
        // SAFETY: getpriority reads this thread's nice value; errno is cleared first as the
        // call can return -1 as a value.
        let nice_of_this_thread = || unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, 0)
        };
        let before = nice_of_this_thread();
        let inside = spawn("vellum-test", nice_of_this_thread).unwrap().join().unwrap();
        assert_eq!(
            inside,
            BACKGROUND_NICE.max(before),
            "the thread runs at the background nice value"
        );
        assert_eq!(nice_of_this_thread(), before, "the spawning thread keeps its priority");
    }
}
