//! Small types the store's modules share.

use std::collections::{HashMap, HashSet};

use crate::format::page::PageId;

/// The hasher of the maps keyed by pages: foldhash, seeded at random per map (several times
/// faster than SipHash on short keys, and still not predictable from outside).
pub type FastHash = foldhash::fast::RandomState;
/// A map keyed by arena pages (the dirty page table, recent page inits).
pub type PageMap<V> = HashMap<PageId, V, FastHash>;
/// A set of arena pages (recovery's: pages the log formats, pages made fresh, pages lost).
pub type PageSet = HashSet<PageId, FastHash>;
