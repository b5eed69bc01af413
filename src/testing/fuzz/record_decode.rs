//! The `record_decode` target, and the check of a decoded record payload the other WAL targets
//! share.

use zerocopy::FromBytes;

use super::PAGE;
use crate::format::page::PageId;
use crate::format::record::{self, Kind, Payload};
use crate::format::wal::{PAGE_HEADER_BYTES, RECORD_HEADER_BYTES, RECORD_MAX_BYTES, RecordHeader, record_crc};
use crate::{Error, Lsn};

/// **record_decode**: the first byte is a record kind, the rest its payload.
///
/// Invariants:
/// - `record::decode(kind, payload, lsn, page_size)` returns `Ok` or `Err(Corrupted)`, never
///   panics and never another error, for page sizes 4 KiB and 1 MiB;
/// - a decoded payload is canonical: encoding it again (`record::encode_*`) gives back exactly
///   `payload`, its variant matches `kind`, and every edit lies inside the page with before- and
///   after-images of one length;
/// - `RecordHeader::read_from_bytes` of the first 56 bytes never fails, and when
///   `RecordHeader::check` accepts a header, every rule it documents holds; a header it accepts
///   frames a payload (`total_len - 56` bytes after it) that decodes as above.
pub fn record_decode(data: &[u8]) {
    if let Some((&kind, payload)) = data.split_first() {
        for page_size in [PAGE, crate::format::wal::PAGE_SIZE_MAX_BYTES] {
            decode_payload_checked(kind, payload, Lsn(PAGE as u64 + PAGE_HEADER_BYTES as u64), page_size);
        }
    }
    if data.len() >= RECORD_HEADER_BYTES {
        let header = RecordHeader::read_from_bytes(&data[..RECORD_HEADER_BYTES]).expect("56 bytes make a header");
        let own_lsn = header.lsn.get();
        let candidates = [
            (own_lsn, 0),
            (own_lsn, header.epoch.get()),
            (own_lsn, u32::MAX),
            (PAGE as u64 + PAGE_HEADER_BYTES as u64, 0),
        ];
        for (lsn, floor) in candidates {
            if header.check(lsn, floor).is_none() {
                assert_record_header_valid(&header, lsn, floor);
                let total_len = header.total_len.get() as usize;
                if data.len() >= total_len {
                    let payload = &data[RECORD_HEADER_BYTES..total_len];
                    let _ = record_crc(&header, &[payload]);
                    decode_payload_checked(header.kind, payload, Lsn(lsn), PAGE);
                }
            }
        }
    }
}

fn assert_record_header_valid(header: &RecordHeader, lsn: u64, floor: u32) {
    let total_len = header.total_len.get();
    assert!(
        (RECORD_HEADER_BYTES as u32..=RECORD_MAX_BYTES).contains(&total_len),
        "check accepted total_len {total_len}"
    );
    assert_eq!(header.lsn.get(), lsn, "check accepted a record naming another address");
    assert_ne!(header.kind, 0, "check accepted kind 0");
    assert_eq!(header.reserved0.get(), 0, "check accepted non-zero reserved bytes");
    assert!(header.epoch.get() >= floor, "check accepted an epoch below the floor");
    assert!(
        header.prev_lsn.get() < lsn && header.durable_lsn.get() <= lsn,
        "check accepted a forward back-pointer"
    );
}

/// Decodes a payload; panics unless the result is `Ok` (canonical) or `Err(Corrupted)`.
pub(super) fn decode_payload_checked(kind: u8, payload: &[u8], lsn: Lsn, page_size: u32) {
    match record::decode(kind, payload, lsn, page_size) {
        Ok(decoded) => assert_canonical(kind, payload, &decoded, page_size),
        Err(Error::Corrupted { .. }) => {}
        Err(other) => panic!("record::decode returned a non-corruption error: {other:?}"),
    }
}

fn assert_canonical(kind: u8, payload: &[u8], decoded: &Payload<'_>, page_size: u32) {
    let kind = Kind::from_u8(kind).expect("decode accepted an unknown kind");
    let check_edits = |edits: &[record::Edit<'_>]| {
        for edit in edits {
            assert!(edit.extent().end <= page_size, "decoded edit runs past the page");
            assert!(PageId::from_raw(edit.page.0).is_some(), "decoded edit names no space");
            match edit.kind {
                // A remove holds the bytes it removes (its before-image) and writes none; a
                // stored write holds no image at all.
                record::EditKind::Remove { len, .. } => {
                    assert!(edit.after.is_empty(), "a decoded remove writes bytes");
                    assert!(
                        edit.before.is_none_or(|b| b.len() == len as usize),
                        "a remove's before-image differs from its length"
                    );
                }
                record::EditKind::Stored { .. } => {
                    assert!(
                        edit.after.is_empty() && edit.before.is_none(),
                        "a decoded stored write holds an image"
                    );
                }
                record::EditKind::Write | record::EditKind::Insert { .. } => {
                    if let Some(before) = edit.before {
                        assert_eq!(before.len(), edit.after.len(), "before/after images differ in length");
                    }
                }
            }
        }
    };
    let encoded = match (kind, decoded) {
        (Kind::Update, Payload::Update { op, id, edits }) => {
            check_edits(edits);
            record::encode_update(*op, id, edits)
        }
        (Kind::Clr, Payload::Clr { undo_next, edits }) => {
            check_edits(edits);
            assert!(
                edits.iter().all(|e| e.before.is_none()),
                "a CLR decoded with before-images"
            );
            record::encode_clr(*undo_next, edits)
        }
        (Kind::Commit, Payload::Commit)
        | (Kind::Abort, Payload::Abort)
        | (Kind::End, Payload::End)
        | (Kind::CheckpointBegin, Payload::CheckpointBegin) => Vec::new(),
        (Kind::CheckpointEnd, Payload::CheckpointEnd(checkpoint)) => record::encode_checkpoint(checkpoint),
        (Kind::PageInit, Payload::PageInit { page, init }) => record::encode_page_init(*page, *init),
        (kind, decoded) => panic!("kind {kind:?} decoded as {decoded:?}"),
    };
    assert_eq!(
        encoded, payload,
        "decoded {kind:?} payload does not re-encode to its bytes"
    );
}
