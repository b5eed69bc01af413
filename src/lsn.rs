//! Log sequence numbers.
//!
//! An LSN is a byte address in the logical log: `segment_number * segment_size_bytes +
//! offset_in_segment`. Segment headers and page headers occupy addresses too, so no record ever
//! starts at LSN 0 and `Lsn::NONE` (0) can mean "no record".

use std::fmt;

/// A byte address in the write-ahead log.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// No record: the prev-LSN of a transaction's first record, an empty undo chain.
    pub const NONE: Lsn = Lsn(0);

    /// The raw byte address.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// True for [`Lsn::NONE`].
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({})", self.0)
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Lsn(value)
    }
}
