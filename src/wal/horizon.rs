//! How far ahead of the log the horizon of `EPOCH` is moved (FORMAT.md section 10).
//!
//! Every move of the horizon is a write and an `fdatasync` of `EPOCH`. A fixed step of
//! [`HORIZON_AHEAD_BYTES`] is one move per 230 commits of 1 KiB records, but a bulk load of
//! 1 MB commits moved it four times a commit: 708 `EPOCH` syncs beside 262 log syncs for
//! 256 MiB, each behind the log's own flush on the same device. So the step adapts to the log's
//! pace, counted in log syncs rather than time (a reproducible run must make the same writes):
//! a step used up in fewer than [`GROW_BELOW_SYNCS`] log syncs doubles the next, up to
//! [`HORIZON_AHEAD_MAX_BYTES`]; one that lasted more than [`SHRINK_ABOVE_SYNCS`] halves it,
//! down to the base. A log whose commits do not sync (`SyncMode::Never`, or `Interval`
//! between its flushes) uses its steps up in few syncs too, and takes long steps: those moves
//! would be the only syncs on its path. The cost of a longer step is the look-ahead of a scan
//! after a crash (it reads to the horizon at most: 4 MiB cold, a few milliseconds) and what
//! its repair erases.
//!
//! Invariant (what makes any step safe): a flush never writes a log byte at or past the
//! horizon durable in `EPOCH`; every move puts the horizon at least a page past the flush's
//! end.

use super::Geometry;
use super::epoch_file::HORIZON_AHEAD_BYTES;

/// The longest step: bounds a scan's look-ahead after a crash.
pub const HORIZON_AHEAD_MAX_BYTES: u64 = 4 << 20;
/// A step used up by fewer log syncs than this doubles the next.
const GROW_BELOW_SYNCS: u64 = 8;
/// A step that lasted more log syncs than this halves the next.
const SHRINK_ABOVE_SYNCS: u64 = 128;

const _: () = assert!(HORIZON_AHEAD_BYTES.is_power_of_two() && HORIZON_AHEAD_MAX_BYTES.is_power_of_two());
const _: () = assert!(HORIZON_AHEAD_BYTES <= HORIZON_AHEAD_MAX_BYTES);
const _: () = assert!(GROW_BELOW_SYNCS < SHRINK_ABOVE_SYNCS);

/// Who moves the horizon next, under `Shared::horizon`: a flush that would write past it, or
/// the preallocator thread ahead of need (see `flush::Shared::ensure_horizon`).
pub(super) struct HorizonState {
    /// The `EPOCH` slot the next horizon goes to.
    pub slot: usize,
    /// How far past a flush's page the next move puts the horizon.
    pub step_bytes: u64,
    /// The log's sync count at the last move (`None` before the first).
    pub syncs_at_move: Option<u64>,
}

impl HorizonState {
    pub fn new() -> HorizonState {
        HorizonState {
            slot: 0,
            step_bytes: HORIZON_AHEAD_BYTES,
            syncs_at_move: None,
        }
    }

    /// At a move, with `syncs` log syncs made so far: learns the step from how many syncs the
    /// last one lasted, and returns it.
    pub fn step_for_move(&mut self, syncs: u64) -> u64 {
        if let Some(before) = self.syncs_at_move {
            let lasted = syncs.saturating_sub(before);
            self.step_bytes = next_step_bytes(self.step_bytes, lasted);
        }
        self.syncs_at_move = Some(syncs);
        self.step_bytes
    }
}

/// The step after one that lasted `lasted_syncs` log syncs.
fn next_step_bytes(step_bytes: u64, lasted_syncs: u64) -> u64 {
    let next = if lasted_syncs < GROW_BELOW_SYNCS {
        step_bytes.saturating_mul(2)
    } else if lasted_syncs > SHRINK_ABOVE_SYNCS {
        step_bytes / 2
    } else {
        step_bytes
    };
    next.clamp(HORIZON_AHEAD_BYTES, HORIZON_AHEAD_MAX_BYTES)
}

/// The horizon a flush ending at `end` moves to with a step of `step_bytes`: the end of its
/// page plus the step rounded up to whole pages, a page boundary.
pub(super) fn horizon_past(geometry: &Geometry, end: u64, step_bytes: u64) -> u64 {
    assert!(step_bytes >= HORIZON_AHEAD_BYTES, "a step is never below the base");
    let ahead = step_bytes.next_multiple_of(geometry.page_bytes());
    let horizon = geometry.page_start(end) + geometry.page_bytes() + ahead;
    assert!(horizon > end && horizon.is_multiple_of(geometry.page_bytes()), "a page boundary past the end");
    horizon
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_horizon_lies_whole_pages_past_the_page_a_flush_ends_in() {
        for page_bytes in [4096u32, 16384, 1 << 20] {
            let geometry = Geometry::new(page_bytes, u64::from(page_bytes) * 64).unwrap();
            let page = u64::from(page_bytes);
            let end = 5 * page + 100;
            for step in [HORIZON_AHEAD_BYTES, HORIZON_AHEAD_MAX_BYTES] {
                let horizon = horizon_past(&geometry, end, step);
                assert!(horizon.is_multiple_of(page), "{page_bytes}: a page boundary");
                assert!(horizon >= 6 * page + step, "{page_bytes}: the step past the flush's page");
                assert!(horizon - 6 * page < step + page, "{page_bytes}: rounded up by less than a page");
            }
        }
    }

    #[test]
    fn a_step_used_up_in_a_few_syncs_grows_to_the_cap_and_a_slow_one_shrinks_to_the_base() {
        let mut state = HorizonState::new();
        assert_eq!(state.step_for_move(0), HORIZON_AHEAD_BYTES, "the first move takes the base");
        // A bulk load: each step used up by two syncs.
        let mut syncs = 0;
        let mut steps = Vec::new();
        for _ in 0..8 {
            syncs += 2;
            steps.push(state.step_for_move(syncs));
        }
        assert_eq!(steps[0], 2 * HORIZON_AHEAD_BYTES, "doubled after a quick step");
        assert!(steps.windows(2).all(|w| w[1] >= w[0]), "never shrinks while quick: {steps:?}");
        assert_eq!(*steps.last().unwrap(), HORIZON_AHEAD_MAX_BYTES, "capped: {steps:?}");
        // Small commits: a step that lasts between the bounds keeps its length.
        syncs += GROW_BELOW_SYNCS;
        assert_eq!(state.step_for_move(syncs), HORIZON_AHEAD_MAX_BYTES, "kept at the lower bound");
        syncs += SHRINK_ABOVE_SYNCS;
        assert_eq!(state.step_for_move(syncs), HORIZON_AHEAD_MAX_BYTES, "kept at the upper bound");
        // Then slow steps: halved each time, down to the base and no further.
        for _ in 0..10 {
            syncs += SHRINK_ABOVE_SYNCS + 1;
            state.step_for_move(syncs);
        }
        assert_eq!(state.step_bytes, HORIZON_AHEAD_BYTES, "back to the base");
    }
}
