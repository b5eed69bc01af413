//! The metadata encoding: `count u16`, then per pair `key_len u16, value_len u32, key, value`
//! (UTF-8), in insertion order. Encoded size at most [`METADATA_MAX_BYTES`].

/// The largest encoded metadata accepted.
pub const METADATA_MAX_BYTES: usize = 64 * 1024;
/// The largest id accepted, in bytes of UTF-8.
pub const ID_MAX_BYTES: usize = 1024;

/// The encoded size of `pairs`, or `None` if a count or length field would overflow.
pub fn encoded_len(pairs: &[(&str, &str)]) -> Option<usize> {
    if pairs.len() > u16::MAX as usize {
        return None;
    }
    let mut total = 2usize;
    for (key, value) in pairs {
        if key.len() > u16::MAX as usize || value.len() > u32::MAX as usize {
            return None;
        }
        total = total.checked_add(6 + key.len() + value.len())?;
    }
    Some(total)
}

/// Encodes `pairs` (the caller checked `encoded_len`).
pub fn encode(pairs: &[(&str, &str)], out: &mut Vec<u8>) {
    out.extend_from_slice(&(pairs.len() as u16).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
}

/// Checks encoded metadata read from disk: `Err(reason)` if malformed.
pub fn validate(bytes: &[u8]) -> Result<(), String> {
    let mut iter = Pairs::new(bytes).ok_or("metadata shorter than its count")?;
    for _ in 0..iter.remaining {
        match iter.next_checked() {
            Some(Ok(_)) => {}
            Some(Err(reason)) => return Err(reason),
            None => return Err("metadata ends early".into()),
        }
    }
    if !iter.rest.is_empty() {
        return Err("metadata has trailing bytes".into());
    }
    Ok(())
}

/// Iterates validated encoded metadata as `(&str, &str)`.
#[derive(Clone, Debug)]
pub struct Pairs<'a> {
    rest: &'a [u8],
    remaining: usize,
}

impl<'a> Pairs<'a> {
    /// `None` if `bytes` has no count.
    pub fn new(bytes: &'a [u8]) -> Option<Pairs<'a>> {
        let count = u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
        Some(Pairs {
            rest: &bytes[2..],
            remaining: count,
        })
    }

    /// An iterator over nothing.
    pub fn empty() -> Pairs<'static> {
        Pairs {
            rest: &[],
            remaining: 0,
        }
    }

    fn next_checked(&mut self) -> Option<Result<(&'a str, &'a str), String>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let header = self.rest.get(..6)?;
        let key_len = u16::from_le_bytes([header[0], header[1]]) as usize;
        let value_len = u32::from_le_bytes([header[2], header[3], header[4], header[5]]) as usize;
        let body = &self.rest[6..];
        if body.len() < key_len || body.len() - key_len < value_len {
            return Some(Err("metadata pair runs past its end".into()));
        }
        let key = std::str::from_utf8(&body[..key_len]);
        let value = std::str::from_utf8(&body[key_len..key_len + value_len]);
        self.rest = &body[key_len + value_len..];
        match (key, value) {
            (Ok(key), Ok(value)) => Some(Ok((key, value))),
            _ => Some(Err("metadata is not UTF-8".into())),
        }
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        // Bytes were validated when the entry was loaded or written; a failure here would be a
        // broken invariant, so it ends the iteration rather than yield garbage.
        self.next_checked()?.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_in_insertion_order() {
        let pairs = [("lang", "en"), ("", ""), ("k", "välue")];
        let mut bytes = Vec::new();
        encode(&pairs, &mut bytes);
        assert_eq!(bytes.len(), encoded_len(&pairs).unwrap());
        assert_eq!(validate(&bytes), Ok(()));
        assert_eq!(Pairs::new(&bytes).unwrap().collect::<Vec<_>>(), pairs);
        for len in 0..bytes.len() {
            assert!(validate(&bytes[..len]).is_err(), "truncated at {len} is refused");
        }
    }
}
