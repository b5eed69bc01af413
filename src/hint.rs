//! The one CPU cache hint: start bringing a line into the caches before it is read.

/// Starts bringing the cache line holding `ptr` into the CPU's caches. A hint: it changes no
/// memory and never faults, whatever the address.
#[cfg(target_arch = "x86_64")]
pub(crate) fn prefetch_line(ptr: *const u8) {
    // SAFETY: a prefetch is a hint: it reads nothing into the program, changes no memory and
    // never faults, whatever the address (callers pass one inside a live slice or mapping).
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast()) }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn prefetch_line(_ptr: *const u8) {}
