//! The one test of a byte range for zeros, 64 bytes at a time.
//!
//! Pages and log tails are checked for zeros at every open and on every scan (a page never
//! written, the end of the log, the bytes past the meta page's fields); a byte-at-a-time loop
//! with an early exit does not vectorise, and the meta page's 16 KiB alone cost ~3 µs of each
//! open.

/// True if every byte of `bytes` is zero.
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    const BLOCK_BYTES: usize = 64;
    let mut blocks = bytes.chunks_exact(BLOCK_BYTES);
    for block in &mut blocks {
        let folded = block.chunks_exact(8).fold(0u64, |acc, word| {
            acc | u64::from_ne_bytes(word.try_into().expect("8 bytes"))
        });
        if folded != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::all_zero;

    #[test]
    fn a_non_zero_byte_anywhere_is_found() {
        for len in [0usize, 1, 7, 63, 64, 65, 200, 16384] {
            let zeros = vec![0u8; len];
            assert!(all_zero(&zeros), "{len} zeros");
            for at in (0..len).step_by(13).chain(len.checked_sub(1)) {
                let mut bytes = zeros.clone();
                bytes[at] = 0x80;
                assert!(!all_zero(&bytes), "len {len}: a byte at {at}");
            }
        }
    }
}
