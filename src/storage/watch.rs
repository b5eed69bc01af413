//! Removals in watched directories, counted as they happen (see [`Storage::watch_removals`]).
//!
//! On Linux, one inotify instance serves the whole process (`fs.inotify.max_user_instances` is
//! 128 per user on common systems: one per store would run out), and a registry maps each of
//! its watch descriptors to the count of the watch that asked for it. The kernel queues an
//! event before the `unlink` or `rename` that caused it returns, so a caller that reads the
//! queue after a removal completed counts it: [`RemovalWatch::removals`] reads whatever is
//! queued, without blocking (one `read` returning `EAGAIN` while nothing happens), under the
//! registry's lock, so that no caller returns while another holds events it has read and not
//! counted yet.
//!
//! [`Storage::watch_removals`]: super::Storage::watch_removals

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Which names in a watched directory count when removed.
pub type NameFilter = fn(&str) -> bool;

/// A watch of removals in some directories, ended when dropped.
pub trait RemovalWatch: Send + Sync + fmt::Debug {
    /// How many removals of watched names (and of the directories themselves) were seen so
    /// far, counting every one that completed before this call. `None` once the watch cannot
    /// tell any more (a watched directory is gone, events were lost to a fork): the caller
    /// looks for itself from then on.
    fn removals(&self) -> Option<u64>;
}

/// What a watch has counted, shared by the watcher that counts and the watch that reads.
#[derive(Debug, Default)]
pub(crate) struct Counted {
    removals: AtomicU64,
    lost: AtomicBool,
}

impl Counted {
    /// One removal seen.
    pub(crate) fn removed(&self) {
        self.removals.fetch_add(1, Ordering::AcqRel);
    }

    /// The watch cannot tell any more (counted as a removal too: the loss may hide one).
    pub(crate) fn lose(&self) {
        self.removed();
        self.lost.store(true, Ordering::Release);
    }

    /// The count, or `None` once lost.
    pub(crate) fn get(&self) -> Option<u64> {
        let removals = self.removals.load(Ordering::Acquire);
        (!self.lost.load(Ordering::Acquire)).then_some(removals)
    }
}

/// A watch of `dirs` through the process's inotify instance; `None` where there is none (not
/// Linux, `inotify_init1` failed) or a directory cannot be watched (the per-user watch limit,
/// a directory that is gone, or one that another live watch of this process holds).
pub(crate) fn watch(dirs: &[(&std::path::Path, NameFilter)]) -> Option<Box<dyn RemovalWatch>> {
    #[cfg(target_os = "linux")]
    {
        inotify::watch(dirs)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dirs;
        None
    }
}

#[cfg(target_os = "linux")]
mod inotify {
    use std::collections::HashMap;
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::sync::{Arc, OnceLock};

    use parking_lot::Mutex;

    use super::{Counted, NameFilter, RemovalWatch};

    /// The events that count: a name removed or renamed away, the directory itself removed or
    /// moved. (`IN_IGNORED` and `IN_Q_OVERFLOW` come unasked.)
    const MASK: u32 =
        libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_ONLYDIR;
    /// The fixed part of `struct inotify_event`: wd, mask, cookie, len.
    const HEADER_BYTES: usize = 16;
    /// Room for several events at once (one needs at most 16 + NAME_MAX + 1).
    const BUFFER_BYTES: usize = 4096;

    /// The process's inotify instance and its registry.
    struct Instance {
        fd: OwnedFd,
        /// A child of `fork()` shares the parent's queue: it must not read the parent's events.
        origin: crate::fork::Origin,
        state: Mutex<Registry>,
    }

    struct Registry {
        watches: HashMap<i32, (NameFilter, Arc<Counted>)>,
        buffer: Box<[u8]>,
    }

    fn instance() -> Option<&'static Instance> {
        static INSTANCE: OnceLock<Option<Instance>> = OnceLock::new();
        INSTANCE
            .get_or_init(|| {
                // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
                let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
                if fd < 0 {
                    return None;
                }
                // SAFETY: a non-negative return is a new descriptor nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                Some(Instance {
                    fd,
                    origin: crate::fork::Origin::here(),
                    state: Mutex::new(Registry {
                        watches: HashMap::new(),
                        buffer: vec![0; BUFFER_BYTES].into_boxed_slice(),
                    }),
                })
            })
            .as_ref()
            .filter(|instance| !instance.origin.is_forked())
    }

    pub(super) fn watch(dirs: &[(&Path, NameFilter)]) -> Option<Box<dyn RemovalWatch>> {
        let instance = instance()?;
        let counted = Arc::new(Counted::default());
        let mut registry = instance.state.lock();
        // What is queued belongs to the watches there were: counted before new ones join.
        instance.take_in(&mut registry);
        let mut wds = Vec::with_capacity(dirs.len());
        for &(dir, names) in dirs {
            let added = CString::new(dir.as_os_str().as_bytes()).ok().and_then(|path| {
                // SAFETY: `path` is a NUL-terminated string that outlives the call.
                let wd = unsafe { libc::inotify_add_watch(instance.fd.as_raw_fd(), path.as_ptr(), MASK) };
                // The same directory watched twice shares one descriptor, and one count:
                // refused (a store's directories are its own while it is open).
                (wd >= 0 && !registry.watches.contains_key(&wd)).then_some(wd)
            });
            let Some(wd) = added else {
                instance.unwatch(&mut registry, &wds);
                return None;
            };
            registry.watches.insert(wd, (names, Arc::clone(&counted)));
            wds.push(wd);
        }
        Some(Box::new(InotifyWatch { wds, counted }))
    }

    impl Instance {
        /// Reads every queued event without blocking, and counts each for its watch.
        fn take_in(&self, registry: &mut Registry) {
            let Registry { watches, buffer } = registry;
            loop {
                // SAFETY: `buffer` is writable memory of `buffer.len()` bytes; the kernel writes
                // whole events into it and returns how many bytes.
                let read = unsafe { libc::read(self.fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
                let Ok(len_bytes) = usize::try_from(read) else {
                    match std::io::Error::last_os_error().raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::EAGAIN) => return,
                        // A queue that cannot be read tells nothing more: every watch is lost.
                        _ => return watches.values().for_each(|(_, counted)| counted.lose()),
                    }
                };
                if len_bytes == 0 {
                    return;
                }
                count_events(&buffer[..len_bytes.min(buffer.len())], watches);
            }
        }

        /// Ends the watches `wds` (and forgets them).
        fn unwatch(&self, registry: &mut Registry, wds: &[i32]) {
            for &wd in wds {
                if registry.watches.remove(&wd).is_some() {
                    // SAFETY: removes a watch of our own instance; an error (the kernel ended it
                    // already: its directory is gone) changes nothing.
                    unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
                }
            }
        }
    }

    /// Counts the events in `events` (whole events, as `read` returns them) for their watches.
    fn count_events(events: &[u8], watches: &mut HashMap<i32, (NameFilter, Arc<Counted>)>) {
        let field = |at: usize| events.get(at..at + 4).map(|b| [b[0], b[1], b[2], b[3]]);
        let mut at = 0;
        while at < events.len() {
            let (Some(wd), Some(mask), Some(len)) = (field(at), field(at + 4), field(at + 12)) else {
                break;
            };
            let (wd, mask) = (i32::from_ne_bytes(wd), u32::from_ne_bytes(mask));
            let name_end = (at + HEADER_BYTES).checked_add(u32::from_ne_bytes(len) as usize);
            let Some(name) = name_end.and_then(|end| events.get(at + HEADER_BYTES..end)) else {
                // The kernel returns whole events: a short one means the queue cannot be
                // trusted, and every watch is lost (the caller looks for itself).
                watches.values().for_each(|(_, counted)| counted.lose());
                return;
            };
            at += HEADER_BYTES + name.len();
            count_event(wd, mask, name, watches);
        }
    }

    /// Counts one event (`name` NUL-padded, empty for an event of the directory itself).
    fn count_event(wd: i32, mask: u32, name: &[u8], watches: &mut HashMap<i32, (NameFilter, Arc<Counted>)>) {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            // Events were dropped: any of them may have been a removal, of any watch.
            watches.values().for_each(|(_, counted)| counted.removed());
            return;
        }
        let Some((names, counted)) = watches.get(&wd) else {
            return;
        };
        if mask & libc::IN_IGNORED != 0 {
            // The kernel ended the watch (its directory removed, its file system unmounted).
            counted.lose();
            watches.remove(&wd);
        } else if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
            counted.removed();
        } else if mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            if std::str::from_utf8(name).is_ok_and(names) {
                counted.removed();
            }
        }
    }

    /// A registered watch: its descriptors, and the count they feed.
    #[derive(Debug)]
    struct InotifyWatch {
        wds: Vec<i32>,
        counted: Arc<Counted>,
    }

    impl RemovalWatch for InotifyWatch {
        fn removals(&self) -> Option<u64> {
            let Some(instance) = instance() else {
                // A fork's child: the parent's queue is not this process's to read.
                return None;
            };
            instance.take_in(&mut instance.state.lock());
            self.counted.get()
        }
    }

    impl Drop for InotifyWatch {
        fn drop(&mut self) {
            if let Some(instance) = instance() {
                let mut registry = instance.state.lock();
                instance.unwatch(&mut registry, &self.wds);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn is_pages(name: &str) -> bool {
            name.ends_with(".pages")
        }

        #[test]
        fn only_a_removal_of_a_watched_name_is_counted_and_a_removed_directory_loses_the_watch() {
            let dir = tempfile::tempdir().unwrap();
            let sub = dir.path().join("arena");
            std::fs::create_dir(&sub).unwrap();
            for name in ["a.pages", "b.pages", "c.pages.tmp"] {
                std::fs::write(sub.join(name), b"x").unwrap();
            }
            let watch = watch(&[(&sub, is_pages)]).expect("inotify is there on Linux");
            assert_eq!(watch.removals(), Some(0), "nothing removed yet");
            std::fs::rename(sub.join("c.pages.tmp"), sub.join("c.pages")).unwrap();
            std::fs::remove_file(sub.join("c.pages")).unwrap();
            assert_eq!(
                watch.removals(),
                Some(1),
                "a temporary name renamed does not count, a removal does"
            );
            std::fs::rename(sub.join("a.pages"), dir.path().join("a.pages")).unwrap();
            assert_eq!(watch.removals(), Some(2), "a file renamed away counts");
            std::fs::remove_file(sub.join("b.pages")).unwrap();
            std::fs::remove_dir(&sub).unwrap();
            assert_eq!(watch.removals(), None, "a watch whose directory is gone cannot tell");
        }

        #[test]
        fn a_directory_watched_already_is_refused_and_the_first_watch_keeps_counting() {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("x.pages"), b"x").unwrap();
            let first = watch(&[(dir.path(), is_pages)]).unwrap();
            assert!(watch(&[(dir.path(), is_pages)]).is_none(), "one count per directory");
            std::fs::remove_file(dir.path().join("x.pages")).unwrap();
            assert_eq!(
                first.removals(),
                Some(1),
                "the refused watch took nothing from the first"
            );
        }

        #[test]
        fn a_short_or_overflowing_event_is_never_sliced_past_what_the_kernel_gave() {
            let counted = Arc::new(Counted::default());
            let mut watches = HashMap::new();
            watches.insert(1, (is_pages as NameFilter, Arc::clone(&counted)));
            let mut event = Vec::new();
            event.extend_from_slice(&1i32.to_ne_bytes());
            event.extend_from_slice(&libc::IN_DELETE.to_ne_bytes());
            event.extend_from_slice(&0u32.to_ne_bytes());
            event.extend_from_slice(&u32::MAX.to_ne_bytes());
            event.extend_from_slice(b"a.pages\0");
            count_events(&event, &mut watches);
            assert_eq!(
                counted.get(),
                None,
                "a length past the bytes read loses the watch, no panic"
            );
        }
    }
}
