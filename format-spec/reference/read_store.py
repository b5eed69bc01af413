#!/usr/bin/env python3
"""Independent, read-only reader of the Vellum on-disk format, version 4.1 (archive files: 1, 2).

Written from format-spec/FORMAT.md alone (standard library only).  Usage:

    python3 read_store.py [--mode tolerate|strict|skip] [--no-lock] [--no-payloads]
                          [--archive full|headers|none] DIR
    python3 read_store.py --vector FILE.json|FILE.bin [--structure NAME] [--input JSON]
    python3 read_store.py --vector-dir DIR
    python3 read_store.py --archived-segment ARCHIVE_FILE [--no-payloads]

For a store it prints one JSON object on stdout: control data, the log records, the committed
contents, the archive and a list of damage found.  It never writes to the store.  Exit status:
0 when the committed contents could be determined (damage may still have been reported), 1 on
an error verdict (the "errors" list says why), 2 on bad usage.  --vector decodes one golden
vector (format-spec/vectors/README.md): {"decoded": ...} or {"error": class, "message": ...};
exit status 1 for an error.  --vector-dir does so for every vector of DIR in one run.
--archived-segment decodes an archive file and walks the records of the segment it holds.
"""

import json
import math
import os
import re
import struct
import sys

# ---------------------------------------------------------------- section 1: CRC32C

_T = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _T.append(_c)
del _i, _c


def crc32c(data, crc=0):
    """FORMAT.md section 1.  (Two-byte and slicing tables were tried: no faster in CPython.)"""
    crc ^= 0xFFFFFFFF
    t = _T
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def align8(x):
    return (x + 7) & ~7


def is_zero(b):
    return not any(b)


KIND_NAMES = {
    1: "update",
    2: "clr",
    3: "commit",
    4: "abort",
    5: "end",
    6: "checkpoint-begin",
    7: "checkpoint-end",
    8: "page-init",
}

SPACE_CATALOG = 1
SPACE_VECTOR = 2

# section 18: the store's major format version (control slots, segment and page headers, arena
# pages); stores of majors 1, 2 and 3 are refused as incompatible
FORMAT_MAJOR = 4


def is_page_id(v):
    return (v >> 56) in (SPACE_CATALOG, SPACE_VECTOR)


def space_of(pid):
    return pid >> 56


def page_no(pid):
    return pid & ((1 << 56) - 1)


def internal_detail(e):
    """An exception that is a bug in this reader: its type, message and where it was raised."""
    import traceback
    tb = traceback.extract_tb(e.__traceback__)
    where = " at line %d in %s" % (tb[-1].lineno, tb[-1].name) if tb else ""
    return "%s: %s%s" % (type(e).__name__, e, where)


class StoreError(Exception):
    """An error verdict: the reader stops (what was found so far is still printed)."""


class Report:
    def __init__(self):
        self.damage = []
        self.errors = []
        self.notes = []
        self.skips = set()

    def dmg(self, kind, detail, **kw):
        d = {"kind": kind, "detail": detail}
        d.update(kw)
        self.damage.append(d)

    def err(self, kind, detail, **kw):
        d = {"kind": kind, "detail": detail}
        d.update(kw)
        self.errors.append(d)


# ---------------------------------------------------------------- section 3: control file

CTRL_MAGIC = b"VLMCTRL\n"
CTRL_FIELDS = [
    ("version_major", "H", 8),
    ("version_minor", "H", 10),
    ("page_size", "I", 12),
    ("segment_size", "Q", 16),
    ("dimension", "I", 24),
    ("timeline", "I", 28),
    ("store_id", "Q", 32),
    ("sequence", "Q", 40),
    ("checkpoint_lsn", "Q", 48),
    ("checkpoint_end_lsn", "Q", 56),
    ("redo_lsn", "Q", 64),
    ("next_txn_id", "Q", 72),
    ("created_us", "Q", 80),
    ("checkpoint_time_us", "Q", 88),
    ("truncate_lsn", "Q", 96),
    # minor >= 1: the arena at the checkpoint in force (section 3)
    ("catalog_pages", "Q", 104),
    ("vector_pages", "Q", 112),
    ("catalog_files", "I", 120),
    ("vector_files", "I", 124),
]


def extent_of(f):
    """Section 3: the arena extent a control slot of minor >= 1 records, else None."""
    if f["version_minor"] < 1:
        return None
    return {"catalog_pages": f["catalog_pages"], "vector_pages": f["vector_pages"],
            "catalog_files": f["catalog_files"], "vector_files": f["vector_files"]}


def parse_slot(b):
    """Returns (status, fields); status is 'valid', 'damaged' or 'version'."""
    if len(b) < 512 or b[0:8] != CTRL_MAGIC:
        return "damaged", None
    if crc32c(b[0:508]) != struct.unpack_from("<I", b, 508)[0]:
        return "damaged", None
    fields = {name: struct.unpack_from("<" + fmt, b, off)[0] for name, fmt, off in CTRL_FIELDS}
    if fields["version_major"] != FORMAT_MAJOR:
        return "version", fields
    return "valid", fields


def check_geometry(P, S):
    if P < 4096 or P > 1048576 or (P & (P - 1)) != 0:
        return "page size %d is not a power of two in 4096..=1048576" % P
    if S % P != 0 or S < 5 * P or S > (1 << 40):
        return "segment size %d is not a multiple of P, >= 5P and <= 2^40" % S
    return None


def read_control(store, rep):
    path = os.path.join(store, "CONTROL")
    if not os.path.exists(path):
        raise StoreError("no CONTROL file: not a store")
    with open(path, "rb") as fh:
        data = fh.read(1024)
    if len(data) < 1024:
        rep.dmg("control", "CONTROL is %d bytes, shorter than 1024" % len(data))
        data = data + bytes(1024 - len(data))
    s0, f0 = parse_slot(data[0:512])
    s1, f1 = parse_slot(data[512:1024])
    for i, s in ((0, s0), (1, s1)):
        if s != "valid":
            rep.dmg("control_slot", "control slot %d is not valid (%s)" % (i, s), slot=i)
    if "version" in (s0, s1):
        # section 3: an intact slot of another major version refuses the store, whatever the
        # other slot holds
        major = (f0 if s0 == "version" else f1)["version_major"]
        raise StoreError("incompatible version (a control slot of major %d; this reader reads major %d%s)" %
                         (major, FORMAT_MAJOR, ": a store of format %d.x" % major if major < FORMAT_MAJOR else ""))
    if s0 == "valid" and s1 == "valid":
        slot = 1 if f1["sequence"] > f0["sequence"] else 0
    elif s0 == "valid":
        slot = 0
    elif s1 == "valid":
        slot = 1
    else:
        if "version" in (s0, s1):
            raise StoreError("incompatible version (control file)")
        raise StoreError("control file damaged: no valid slot")
    c = dict(f0 if slot == 0 else f1)
    c["slot"] = slot
    c["extent"] = extent_of(c)
    g = check_geometry(c["page_size"], c["segment_size"])
    if g:
        raise StoreError("control file: bad geometry: " + g)
    P = c["page_size"]
    maxdim = ((P - 80) // 16) * 4   # section 3: one slot and its owner entry fit a page (14.3)
    if not 1 <= c["dimension"] <= maxdim:
        raise StoreError("control file: dimension %d outside 1..=%d" % (c["dimension"], maxdim))
    return c


# ---------------------------------------------------------------- sections 6-12: the log

SEG_RE = re.compile(r"^[0-9a-f]{16}\.wal$")
WAL_SEG_MAGIC = b"VLMWAL\r\n"
WAL_PAGE_MAGIC = b"VWLP"
REC_HDR = struct.Struct("<IIQQQQQBBHI")  # 56 bytes
assert REC_HDR.size == 56
ZERO56 = bytes(56)


class PageHeader:
    __slots__ = ("flags", "addr", "rem_len", "timeline", "epoch")


class Record:
    __slots__ = ("lsn", "total_len", "prev_lsn", "txn_id", "timestamp_us", "durable_lsn", "kind", "flags",
                 "epoch", "end", "payload", "parsed", "payload_error")


class Log:
    def __init__(self, waldir, P, S, store_id, timeline, rep, mem=None):
        """The segment files of `waldir`, or, with `mem` (segment number -> S bytes), segments
        held in memory (a golden vector, an archived segment)."""
        self.P, self.S, self.store_id, self.timeline, self.rep = P, S, store_id, timeline, rep
        self.waldir = waldir
        self.segs = {}
        self.fds = {}
        self.mem = mem
        self._seg_cache = {}
        self._page_cache = {}
        self.max_epoch = 0
        if mem is not None:
            for n, data in mem.items():
                if len(data) != S:
                    raise StoreError("segment %d is %d bytes, not S = %d" % (n, len(data), S))
                self.segs[n] = None
            waldir = None
        elif not os.path.isdir(waldir):
            raise StoreError("no wal/ directory")
        for name in sorted(os.listdir(waldir)) if waldir else ():
            if not SEG_RE.match(name):
                continue
            n = int(name[:16], 16)
            path = os.path.join(waldir, name)
            size = os.path.getsize(path)
            if size != S:
                raise StoreError("segment file %s is %d bytes, not S = %d" % (name, size, S))
            self.segs[n] = path
        if not self.segs:
            raise StoreError("no log segment files")
        self.O = min(self.segs)
        self.N = max(self.segs)
        for n in range(self.O, self.N + 1):
            if n not in self.segs:
                raise StoreError("gap in the log: segment %d missing between %d and %d" % (n, self.O, self.N))
        if (self.N + 1) * S > (1 << 64):
            raise StoreError("segment number %d too large" % self.N)
        self.L = (self.N + 1) * S

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    # -- raw access
    def present(self, n):
        return n in self.segs

    def read(self, lsn, n):
        if n == 0:
            return b""  # e.g. the empty payload of a record ending exactly at a segment end
        seg, off = divmod(lsn, self.S)
        assert off + n <= self.S
        if self.mem is not None:
            return bytes(self.mem[seg][off:off + n])
        fd = self.fds.get(seg)
        if fd is None:
            fd = self.fds[seg] = os.open(self.segs[seg], os.O_RDONLY)
        b = os.pread(fd, n, off)
        if len(b) < n:
            b += bytes(n - len(b))
        return b

    def page_end(self, lsn):
        return lsn - lsn % self.P + self.P

    def next_data_page(self, lsn):
        q = self.page_end(lsn)
        return q + self.P if q % self.S == 0 else q

    # -- section 7
    def seg_status(self, n):
        """'zero', 'valid', 'damaged', 'foreign' or 'stale' for the header of segment n (present)."""
        st = self._seg_cache.get(n)
        if st is not None:
            return st
        h = self.read(n * self.S, 128)
        if is_zero(h):
            st = "zero"
        elif h[0:8] != WAL_SEG_MAGIC:
            st = "damaged"
        elif crc32c(h[0:124]) != struct.unpack_from("<I", h, 124)[0]:
            st = "damaged"
        else:
            major, = struct.unpack_from("<H", h, 8)
            psz, = struct.unpack_from("<I", h, 12)
            ssz, segno, base = struct.unpack_from("<QQQ", h, 16)
            tl, = struct.unpack_from("<I", h, 40)
            sid, = struct.unpack_from("<Q", h, 48)
            if major != FORMAT_MAJOR:
                st = "foreign"
            elif sid != self.store_id:
                st = "foreign"
            elif psz != self.P or ssz != self.S:
                st = "foreign"
            elif segno != n or base != n * self.S:
                st = "stale"
            elif tl != self.timeline:
                st = "stale"
            else:
                st = "valid"
        self._seg_cache[n] = st
        return st

    # -- section 8
    def page_header(self, q, floor):
        """(status, PageHeader or None); status 'zero', 'valid', 'damaged', 'foreign', 'stale'."""
        c = self._page_cache.get(q)
        if c is None:
            b = self.read(q, 32)
            h = None
            if is_zero(b):
                st = "zero"
            elif b[0:4] != WAL_PAGE_MAGIC:
                st = "damaged"
            elif crc32c(b[0:28]) != struct.unpack_from("<I", b, 28)[0]:
                st = "damaged"
            else:
                major, flags, addr, rem, tl, ep = struct.unpack_from("<HHQIII", b, 4)
                h = PageHeader()
                h.flags, h.addr, h.rem_len, h.timeline, h.epoch = flags, addr, rem, tl, ep
                # section 8: the version before the flags (a newer major may define other flags)
                if major != FORMAT_MAJOR:
                    st = "foreign"
                elif (flags & ~1) != 0 or ((flags & 1) != 0) != (rem > 0):
                    st = "damaged"
                elif addr != q:
                    st = "stale"
                elif tl != self.timeline:
                    st = "stale"
                else:
                    st = "valid"
                    self.max_epoch = max(self.max_epoch, ep)
            c = (st, h)
            self._page_cache[q] = c
        st, h = c
        if st == "valid" and h.epoch < floor:
            return "stale", h
        return st, h

    # -- section 11: Step
    def step(self, x, f):
        """Returns (verdict, x, f) with verdict 'start', 'end', 'invalid' or 'refuse'."""
        P, S = self.P, self.S
        while True:
            x = align8(x)
            if x >= self.L:
                return "end", x, f
            if x % S == 0:
                n = x // S
                if not self.present(n):
                    return "end", x, f
                st = self.seg_status(n)
                if st == "zero" or st == "stale":
                    return "end", x, f
                if st == "damaged":
                    return "invalid", x, f
                if st == "foreign":
                    return "refuse", x, f
                x += P
                continue
            if x % P == 0:
                if not self.present(x // S) or x + 32 > self.L:
                    return "end", x, f
                st, h = self.page_header(x, f)
                if st == "zero" or st == "stale":
                    return "end", x, f
                if st == "damaged":
                    return "invalid", x, f
                if st == "foreign":
                    return "refuse", x, f
                if h.rem_len > 0:
                    return "invalid", x, f
                f = h.epoch
                x += 32
                continue
            if self.page_end(x) - x < 56:
                x = self.page_end(x)
                continue
            return "start", x, f

    # -- section 9 / 11: Decode
    def decode(self, s, f):
        """Returns ('end'|'invalid', s, reason) or ('valid', Record, None)."""
        P, S = self.P, self.S
        if s + 56 > self.L or not self.present(s // S):
            return "end", s, None
        h = self.read(s, 56)
        if h == ZERO56:
            return "end", s, None
        crc, total, lsn, prev, txn, ts, dur, kind, flags, res, epoch = REC_HDR.unpack(h)
        if not 56 <= total <= 33554432:
            return "invalid", s, "total_len %d out of range" % total
        if lsn != s:
            return "invalid", s, "lsn field %d != address" % lsn
        if kind == 0:
            return "invalid", s, "kind 0"
        if res != 0:
            return "invalid", s, "reserved u16 non-zero"
        if epoch < f:
            return "invalid", s, "epoch %d below floor %d" % (epoch, f)
        if not (prev < s and dur <= s):
            return "invalid", s, "prev_lsn or durable_lsn not below the record"
        room = self.page_end(s) - s
        if total <= room:
            data = h + self.read(s + 56, total - 56)
            end = s + total
        else:
            # rule 7: compute the end first, then check every continuation page
            remaining = total - room
            k = -(-remaining // (P - 32))
            q = self.next_data_page(s)
            qs = [q]
            for _ in range(k - 1):
                q = self.next_data_page(q)
                qs.append(q)
            last = remaining - (k - 1) * (P - 32)
            end = qs[-1] + 32 + last
            if end > self.L:
                return "invalid", s, "record runs past the read limit"
            parts = [h, self.read(s + 56, room - 56)]
            for q in qs:
                if not self.present(q // S):
                    return "invalid", s, "continuation page %d in an absent segment" % q
                if q % S == P and self.seg_status(q // S) != "valid":
                    return "invalid", s, "segment header of continuation segment %d not valid" % (q // S)
                st, ph = self.page_header(q, epoch)
                if st != "valid":
                    return "invalid", s, "continuation page header at %d is %s" % (q, st)
                if ph.epoch != epoch:
                    return "invalid", s, "continuation page epoch %d != record epoch %d" % (ph.epoch, epoch)
                if ph.rem_len != remaining:
                    return "invalid", s, "continuation rem_len %d != %d" % (ph.rem_len, remaining)
                take = min(remaining, P - 32)
                parts.append(self.read(q + 32, take))
                remaining -= take
            data = b"".join(parts)
        if crc32c(memoryview(data)[4:]) != crc:
            return "invalid", s, "record CRC mismatch"
        self.max_epoch = max(self.max_epoch, epoch)
        r = Record()
        r.lsn, r.total_len, r.prev_lsn, r.txn_id, r.timestamp_us = s, total, prev, txn, ts
        r.durable_lsn, r.kind, r.flags, r.epoch, r.end = dur, kind, flags, epoch, end
        r.payload = bytes(data[56:])
        try:
            r.parsed = parse_payload(kind, r.payload, P)
            r.payload_error = None
        except PayloadError as e:
            r.parsed = None
            r.payload_error = str(e)
        return "valid", r, None

    # -- section 11: resynchronise
    def resync(self, q):
        st, h = self.page_header(q, 0)
        if st != "valid" or h.rem_len >= self.P - 32:
            return None
        s = align8(q + 32 + h.rem_len)
        if self.page_end(q) - s >= 56:
            return s, h.epoch
        return None

    # -- section 11: where to start without a given LSN
    def start_of_oldest(self):
        P, S = self.P, self.S
        seg = self.O
        while True:
            q0 = seg * S + P
            st, h = self.page_header(q0, 0)
            if not (st == "valid" and h.rem_len > 0):
                return seg * S, 0
            q = q0
            while q < min(self.L, (seg + 1) * S):
                st, h = self.page_header(q, 0)
                if st == "valid" and h.rem_len > 0:
                    r = self.resync(q)
                    if r is not None:
                        return r
                else:
                    return q, 0
                q += P
            # Every data page of `seg` continues the record: it runs on into the next segment.
            if (seg + 1) * S >= self.L:
                return (seg + 1) * S + P, 0
            seg += 1

    # -- section 12: evidence after E and the verdict
    def classify(self, E, how, mode):
        P, S = self.P, self.S
        out = {"lsn": E, "stopped_by": how}
        if how == "refuse":
            out["verdict"] = "Refused"
            return out
        G = E
        later = []
        proof = None
        resume = None
        if E % S != 0 and E % P != 0 and E < self.L and self.present(E // S):
            if not is_zero(self.read(E, self.page_end(E) - E)):
                G = max(G, self.page_end(E))
        if E % S == 0:
            q = E + P
        elif E % P == 0:
            q = E
        else:
            q = self.next_data_page(E)
        while q < self.L and proof is None:
            if self.present(q // S):
                st, h = self.page_header(q, 0)
                if st == "valid":
                    G = max(G, q + P)
                    r = self.resync(q)
                    if r is not None:
                        s, f = r
                        if resume is None:
                            resume = (s, f)
                        while True:
                            v, rec, _ = self.decode(s, f)
                            if v != "valid":
                                break
                            later.append(rec.lsn)
                            if rec.durable_lsn > E:
                                proof = rec.lsn
                                break
                            v2, x2, f2 = self.step(rec.end, rec.epoch)
                            if v2 != "start" or x2 - x2 % P != q:
                                break
                            s, f = x2, f2
            q = self.next_data_page(q)
        out["garbage_end"] = G
        # section 12, "Repair after a torn tail": what a writer zeroes, [E, repair_end)
        out["repair_end"] = max(min(self.page_end(E), self.L), G)
        out["later_records"] = later[:16]
        if proof is not None:
            out["verdict"] = "MidLogDamage"
            out["proof_lsn"] = proof
            out["resume"] = resume[0] if resume else None
            out["_resume"] = resume
        elif later:
            out["verdict"] = "AmbiguousTail" if mode == "strict" else "TornTail"
            out["ambiguous"] = True
        elif how == "invalid" or G > E:
            out["verdict"] = "TornTail"
        else:
            out["verdict"] = "CleanEnd"
        return out

    def walk(self, start, floor, mode):
        """Step/Decode from `start`; returns (records, end_info).  Raises StoreError on an error verdict."""
        recs = []
        skipped = []
        x, f = start, floor
        while True:
            v, x, f = self.step(x, f)
            if v == "start":
                d, r, why = self.decode(x, f)
                if d == "valid":
                    recs.append(r)
                    x, f = r.end, r.epoch
                    continue
                v, x = d, x
            else:
                why = None
            info = self.classify(x, v, mode)
            if why:
                info["reason"] = why
            verdict = info["verdict"]
            if verdict == "MidLogDamage" and mode == "skip" and info.get("_resume"):
                rs, rf = info["_resume"]
                skipped.append([x, rs])
                if (x, rs) not in self.rep.skips:
                    self.rep.skips.add((x, rs))
                    self.rep.dmg(
                        "wal_skipped", "skipped damaged log range [%d, %d)" % (x, rs), start=x, end=rs)
                x, f = rs, rf
                continue
            info.pop("_resume", None)
            info["skipped"] = skipped
            return recs, info


# ---------------------------------------------------------------- section 15: payloads


class PayloadError(Exception):
    pass


class Buf:
    def __init__(self, b):
        self.b, self.o = b, 0

    def left(self):
        return len(self.b) - self.o

    def take(self, n):
        if n > self.left():
            raise PayloadError("payload too short")
        v = self.b[self.o:self.o + n]
        self.o += n
        return v

    def u(self, fmt, n):
        return struct.unpack("<" + fmt, self.take(n))[0]


class Edit:
    """One edit of an update or clr (section 15): `kind` is "write", "insert", "remove" or
    "stored" (a stored write: no images, its bytes are in the page's file); `n` is its length;
    `end` the end of the range an insert or a remove shifts (else None)."""
    __slots__ = ("page", "offset", "n", "kind", "end", "before", "after")

    def __init__(self, page, offset, n, kind, end, before, after):
        self.page, self.offset, self.n, self.kind = page, offset, n, kind
        self.end, self.before, self.after = end, before, after


# section 15: the edit flags allowed, and the edit each makes (a stored write's flags are exactly 8)
EDIT_KINDS = {0: "write", 1: "write", 2: "insert", 4: "remove", 5: "remove", 8: "stored"}


def parse_edits(buf, P, is_clr):
    """Section 15, "Edits": flags, ranges and images, strictly."""
    k = buf.u("H", 2)
    if k > buf.left() // 17:
        raise PayloadError("edit count %d exceeds bytes left" % k)
    edits = []
    for _ in range(k):
        pid = buf.u("Q", 8)
        off = buf.u("I", 4)
        n = buf.u("I", 4)
        fl = buf.u("B", 1)
        if not is_page_id(pid):
            raise PayloadError("edit page id %#x is not a page id" % pid)
        kind = EDIT_KINDS.get(fl)
        if kind is None:
            raise PayloadError("unknown edit flags %#x" % fl)
        end = buf.u("I", 4) if kind in ("insert", "remove") else None
        if kind in ("write", "stored") and off + n > P:
            raise PayloadError("%s %d+%d beyond the page" % ("stored write" if kind == "stored" else "write",
                                                             off, n))
        if kind == "insert" and not (off <= end and end + n <= P):
            raise PayloadError("insert of %d bytes at %d, range end %d: outside the page" % (n, off, end))
        if kind == "remove" and not (off + n <= end <= P):
            raise PayloadError("remove of %d bytes at %d, range end %d: outside the page" % (n, off, end))
        if fl & 1 and is_clr:
            raise PayloadError("clr edit with a before-image")
        if kind == "remove" and not fl & 1 and not is_clr:
            raise PayloadError("a remove of an update without the removed bytes")
        if kind == "stored" and is_clr:
            raise PayloadError("a clr holds no stored write")
        before = bytes(buf.take(n)) if fl & 1 else None
        after = bytes(buf.take(n)) if kind in ("write", "insert") else b""
        edits.append(Edit(pid, off, n, kind, end, before, after))
    return edits


def apply_edit(pg, e):
    """Section 15: one edit applied to the page image `pg` (a bytearray).  A stored write changes
    no byte: its bytes are not in the record (17.3 says when its page may be older than it)."""
    o, n = e.offset, e.n
    if e.kind == "stored":
        return
    if e.kind == "write":
        pg[o:o + n] = e.after
    elif e.kind == "insert":
        pg[o:e.end + n] = e.after + bytes(pg[o:e.end])
    else:
        pg[o:e.end] = bytes(pg[o + n:e.end]) + bytes(n)


def compensation(edits):
    """Section 15, "Compensation": the edits that undo an update's edits, in the order to apply.
    A stored write has none (like a write without before-image: its bytes are free after it)."""
    out = []
    for e in reversed(edits):
        if e.kind == "stored":
            continue
        if e.kind == "write":
            if e.before is not None:
                out.append(Edit(e.page, e.offset, e.n, "write", None, None, e.before))
        elif e.kind == "insert":
            out.append(Edit(e.page, e.offset, e.n, "remove", e.end + e.n, None, b""))
        else:
            out.append(Edit(e.page, e.offset, e.n, "insert", e.end - e.n, None, e.before))
    return out


def parse_payload(kind, p, P):
    buf = Buf(p)
    out = {}
    if kind == 1:
        op = buf.u("B", 1)
        if op not in (1, 2, 3, 4, 5):
            raise PayloadError("unknown op %d" % op)
        k = buf.u("H", 2)
        idb = buf.take(k)
        out["op"] = {1: "insert", 2: "upsert", 3: "delete", 4: "batch", 5: "index"}[op]
        try:
            out["id"] = bytes(idb).decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("the id is not UTF-8")
        out["edits"] = parse_edits(buf, P, False)
    elif kind == 2:
        out["undo_next"] = buf.u("Q", 8)
        out["edits"] = parse_edits(buf, P, True)
    elif kind in (3, 4, 5, 6):
        pass
    elif kind == 7:
        out["begin_lsn"] = buf.u("Q", 8)
        out["next_txn_id"] = buf.u("Q", 8)
        t = buf.u("I", 4)
        if t * 25 > buf.left():
            raise PayloadError("transaction count exceeds bytes left")
        txns = []
        for _ in range(t):
            txns.append((buf.u("Q", 8), buf.u("Q", 8), buf.u("Q", 8), buf.u("B", 1)))
        m = buf.u("I", 4)
        if m * 16 > buf.left():
            raise PayloadError("dirty page count exceeds bytes left")
        dirty = []
        for _ in range(m):
            pid, rec = buf.u("Q", 8), buf.u("Q", 8)
            if not is_page_id(pid):
                raise PayloadError("dirty page id %#x is not a page id" % pid)
            dirty.append((pid, rec))
        out["txns"] = txns
        out["dirty"] = dirty
    elif kind == 8:
        pid = buf.u("Q", 8)
        pk = buf.u("B", 1)
        a = buf.u("I", 4)
        b = buf.u("I", 4)
        if not is_page_id(pid):
            raise PayloadError("page-init page id %#x is not a page id" % pid)
        if pk not in PAGE_KINDS:
            raise PayloadError("unknown page kind %d" % pk)
        out.update(page_id=pid, page_kind=pk, a=a, b=b)
    else:
        raise PayloadError("unknown record kind %d" % kind)
    if buf.left() != 0:
        raise PayloadError("%d bytes left over" % buf.left())
    return out


def record_json(r, full):
    d = {
        "lsn": r.lsn,
        "kind": KIND_NAMES.get(r.kind, "unknown-%d" % r.kind),
        "kind_no": r.kind,
        "txn": r.txn_id,
        "prev_lsn": r.prev_lsn,
        "len": r.total_len,
        "end": r.end,
        "timestamp_us": r.timestamp_us,
        "durable_lsn": r.durable_lsn,
        "epoch": r.epoch,
    }
    if r.payload_error:
        d["payload_error"] = r.payload_error
    elif full and r.parsed:
        p = r.parsed
        if r.kind in (1, 2):
            if "op" in p:
                d["op"] = p["op"]
                d["id"] = p["id"]
            if "undo_next" in p:
                d["undo_next"] = p["undo_next"]
            d["edits"] = [dict({"edit": e.kind, "page": "%#018x" % e.page, "offset": e.offset, "len": e.n,
                                "before": e.before is not None}, **({"end": e.end} if e.end is not None else {}))
                          for e in p["edits"]]
        elif r.kind == 7:
            d["begin_lsn"] = p["begin_lsn"]
            d["next_txn_id"] = p["next_txn_id"]
            d["txns"] = [{"txn": t[0], "last_lsn": t[1], "undo_next": t[2], "state": t[3]} for t in p["txns"]]
            d["dirty"] = [{"page": "%#018x" % x[0], "rec_lsn": x[1]} for x in p["dirty"]]
        elif r.kind == 8:
            d.update(page="%#018x" % p["page_id"], page_kind=p["page_kind"], a=p["a"], b=p["b"])
    return d


# ---------------------------------------------------------------- section 14: arena

ARENA_RE = re.compile(r"^(catalog|vector)-([0-9a-f]{8})\.pages$")
# section 14.2: page kinds, and the space each may lie in
KIND_ZERO, KIND_VECTOR, KIND_CATALOG, KIND_OVERFLOW, KIND_META, KIND_LEAF, KIND_BRANCH, KIND_FREE = range(8)
# section 14.13: the approximate index's pages
KIND_GRAPH_META, KIND_GRAPH_NODES, KIND_GRAPH_UPPER = 8, 9, 10
PAGE_KINDS = range(11)
ALLOWED_KINDS = {SPACE_CATALOG: (KIND_ZERO, KIND_CATALOG, KIND_OVERFLOW, KIND_META, KIND_LEAF, KIND_BRANCH, KIND_FREE,
                                 KIND_GRAPH_META, KIND_GRAPH_NODES, KIND_GRAPH_UPPER),
                 SPACE_VECTOR: (KIND_ZERO, KIND_VECTOR)}
LIST_END = 1   # a list link naming no next page (14.11)


def later_than_log(img, E):
    """Section 17.1: a page whose page LSN is at or past the end of the log E holds changes the
    log does not (the page and the log come from different moments): damage.  Returns a reason,
    or None (E None: the end is not known yet)."""
    if E is None:
        return None
    plsn = struct.unpack_from("<Q", img, 16)[0]
    if plsn >= E:
        return "page LSN %d at or past the end of the log %d" % (plsn, E)
    return None


def page_valid(img, pid, store_id=None):
    """Section 14.2.  Returns None if valid, else a reason.  With `store_id`, a page whose
    store id field (minor >= 1) names another store is not valid either."""
    if is_zero(img):
        return None
    if crc32c(memoryview(img)[4:]) != struct.unpack_from("<I", img, 0)[0]:
        return "page CRC mismatch"
    if struct.unpack_from("<Q", img, 8)[0] != pid:
        return "page id field %#x != %#x" % (struct.unpack_from("<Q", img, 8)[0], pid)
    if struct.unpack_from("<H", img, 6)[0] != FORMAT_MAJOR:
        return "page major version %d" % struct.unpack_from("<H", img, 6)[0]
    if img[4] not in ALLOWED_KINDS[space_of(pid)]:
        return "page kind %d not allowed in its space" % img[4]
    owner = struct.unpack_from("<Q", img, 40)[0]
    if store_id is not None and owner not in (0, store_id):
        return "page formatted by store %#018x, not this store" % owner
    return None


class Arena:
    def __init__(self, store, P, S, rep, extent=None):
        self.P, self.S, self.rep, self.extent = P, S, rep, extent
        self.ppf = S // P
        self.dir = os.path.join(store, "arena")
        self.files = {SPACE_CATALOG: {}, SPACE_VECTOR: {}}
        self.fds = {}
        if not os.path.isdir(self.dir):
            rep.dmg("arena", "no arena/ directory")
            return
        for name in sorted(os.listdir(self.dir)):
            m = ARENA_RE.match(name)
            if not m:
                continue
            sp = SPACE_CATALOG if m.group(1) == "catalog" else SPACE_VECTOR
            f = int(m.group(2), 16)
            path = os.path.join(self.dir, name)
            size = os.path.getsize(path)
            if size != S:
                # 14.1: an error in every mode, like a segment file of the wrong length
                rep.dmg("arena_file_size", "%s is %d bytes, not S = %d" % (name, size, S), file=name)
                raise StoreError("arena file %s is %d bytes, not S = %d" % (name, size, S))
            self.files[sp][f] = path
        for sp, fs in self.files.items():
            if fs and sorted(fs) != list(range(len(fs))):
                rep.dmg("arena_gap", "%s files are not contiguous from 0: %s" %
                        ("catalog" if sp == 1 else "vector", sorted(fs)))
                raise StoreError("a gap in the %s files of arena/" % ("catalog" if sp == 1 else "vector"))
        if extent:
            # section 3 / 14.1: the files the checkpoint in force counted must all be there
            for sp, key in ((SPACE_CATALOG, "catalog_files"), (SPACE_VECTOR, "vector_files")):
                if self.file_count(sp) < extent[key]:
                    rep.dmg("arena_missing", "%s file %d is missing (the checkpoint counted %d)" %
                            ("catalog" if sp == 1 else "vector", self.file_count(sp), extent[key]))
                    raise StoreError("an arena file the store needs is missing")

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def file_count(self, sp):
        fs = self.files[sp]
        return (max(fs) + 1) if fs else 0

    def read_page(self, pid):
        """The image at page `pid`'s position in its file (zeros if the file does not exist)."""
        sp, no = space_of(pid), page_no(pid)
        f, idx = divmod(no, self.ppf)
        path = self.files[sp].get(f)
        if path is None:
            return bytes(self.P)
        fd = self.fds.get(path)
        if fd is None:
            fd = self.fds[path] = os.open(path, os.O_RDONLY)
        b = os.pread(fd, self.P, idx * self.P)
        if len(b) < self.P:
            b += bytes(self.P - len(b))
        return b


def read_doublewrite(store, P, rep, store_id):
    """Section 16.2: usable images, page id -> image."""
    path = os.path.join(store, "DOUBLEWRITE")
    out = {}
    info = {"present": os.path.exists(path), "usable_images": 0}
    if not info["present"]:
        return out, info
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < P:
        return out, info
    if data[0:8] != b"VLMDWBF\n" or crc32c(data[0:60]) != struct.unpack_from("<I", data, 60)[0]:
        if not is_zero(data[0:64]):
            rep.notes.append("DOUBLEWRITE header not usable")
        return out, info
    if struct.unpack_from("<I", data, 12)[0] != P:
        return out, info
    k = struct.unpack_from("<I", data, 16)[0]
    info["image_count"] = k
    info["batch"] = struct.unpack_from("<Q", data, 24)[0]
    n = min(k, 64, len(data) // P - 1)
    for i in range(n):
        img = data[(1 + i) * P:(2 + i) * P]
        pid = struct.unpack_from("<Q", img, 8)[0]
        if not is_page_id(pid) or is_zero(img) or page_valid(img, pid, store_id) is not None:
            continue
        if pid not in out:
            out[pid] = img
    info["usable_images"] = len(out)
    return out, info


# ---------------------------------------------------------------- section 17: recovery


class Recovery:
    def __init__(self, arena, dw, P, rep, lenient, store_id):
        self.arena, self.dw, self.P, self.rep, self.lenient = arena, dw, P, rep, lenient
        self.store_id = store_id
        self.pages = {}       # page id -> bytearray (checked or changed by this recovery)
        self.changed = set()
        self.pageinit = set()
        self.failed = False
        self.reported_payloads = set()
        self.committed = set()          # 17.3 analysis: transactions with a commit record from A on
        self.stored_writes_lost = 0     # 17.3 redo: pages older than a committed stored write
        self.lost = set()               # those pages: zeros, every change of them skipped
        self.E = None                   # the end of the log (17.3 step 2), once run() knows it

    def check(self, pid, use_dw):
        if pid in self.pages:
            return
        img = self.arena.read_page(pid)
        why = page_valid(img, pid, self.store_id) or later_than_log(img, self.E)
        if why is None:
            self.pages[pid] = bytearray(img)
        elif use_dw and pid in self.dw and later_than_log(self.dw[pid], self.E) is None:
            self.rep.notes.append("page %#x torn (%s): using its DOUBLEWRITE image" % (pid, why))
            self.pages[pid] = bytearray(self.dw[pid])
        elif pid in self.pageinit:
            self.rep.notes.append("page %#x torn (%s): restarted from zeros (page-init in the log)" % (pid, why))
            self.pages[pid] = bytearray(self.P)
        else:
            self.rep.dmg("torn_page", "page %#x is not valid (%s) and cannot be repaired; recovery fails" %
                         (pid, why), page="%#018x" % pid)
            self.failed = True
            self.pages[pid] = bytearray(self.P)

    def lsn_of(self, pid):
        return struct.unpack_from("<Q", self.pages[pid], 16)[0]

    def set_lsn(self, pid, lsn):
        struct.pack_into("<Q", self.pages[pid], 16, lsn)
        self.changed.add(pid)

    def stored_write_older(self, r, pid, A):
        """17.3, redo: page `pid` (checked, 16.4) is older than the update at `r`, which holds a
        stored write of it.  The stored write's bytes are in the page's file only: if `r`'s
        transaction committed (analysis saw its commit) or `r` lies before the analysis start,
        the page was synced with them before that commit (or that checkpoint, 16.5) and is now
        older: damage.  Otherwise (a loser, or a rollback whose page write failed) the caller
        applies the record's edits of the page as usual; the stored write changes nothing, and
        its bytes are free after the undo.  Returns whether the page is lost: recovery fails (under
        SkipCorrupted it goes on), the page is all zeros and every change of it from `r` on is
        skipped, as for a page 16.4 cannot repair."""
        if r.txn_id in self.committed or r.lsn < A:
            self.stored_writes_lost += 1
            self.rep.dmg("stored_write_lost",
                         "page %#x (page LSN %d) is older than a stored write of a committed transaction "
                         "(record at %d, transaction %d): the medium lost a synced write" %
                         (pid, self.lsn_of(pid), r.lsn, r.txn_id), page="%#018x" % pid, lsn=r.lsn)
            if not self.lenient:
                self.failed = True
            self.pages[pid] = bytearray(self.P)
            self.changed.add(pid)
            self.lost.add(pid)
            return True
        return False

    def run(self, log, recs, A, control, E):
        self.E = E
        rep = self.rep
        losers = {}
        finished = set()
        committed = set()     # 17.3: transactions with a commit record from A on (an end alone is a rollback)
        dpt = {}
        next_txn = control["next_txn_id"]
        for r in recs:
            if r.payload_error:
                if r.lsn not in self.reported_payloads:
                    rep.dmg("bad_payload", "record at %d: %s" % (r.lsn, r.payload_error), lsn=r.lsn)
                self.failed = True
                continue
            next_txn = max(next_txn, r.txn_id + 1)
            p = r.parsed
            t = r.txn_id
            if r.kind in (1, 2):
                losers[t] = (r.lsn, r.lsn if r.kind == 1 else p["undo_next"])
                for e in p["edits"]:
                    dpt.setdefault(e.page, r.lsn)
            elif r.kind == 8:
                dpt.setdefault(p["page_id"], r.lsn)
                self.pageinit.add(p["page_id"])
            elif r.kind == 4:
                if t in losers:
                    losers[t] = (r.lsn, losers[t][1])
                else:
                    losers[t] = (r.lsn, r.prev_lsn)
            elif r.kind in (3, 5):
                losers.pop(t, None)
                finished.add(t)
                if r.kind == 3:
                    committed.add(t)
            elif r.kind == 7 and p["begin_lsn"] == A:
                next_txn = max(next_txn, p["next_txn_id"])
                for (tid, last, undo, _state) in p["txns"]:
                    if tid not in finished and tid not in losers:
                        losers[tid] = (last, undo)
                for (pid, rl) in p["dirty"]:
                    dpt[pid] = min(dpt.get(pid, rl), rl)
        self.next_txn = next_txn
        self.losers_found = sorted(losers)
        self.committed = committed
        # fast path condition (17.2), for information
        self.fast_path = (control["checkpoint_lsn"] != 0 and len(recs) == 2 and recs[0].kind == 6
                          and recs[0].lsn == control["checkpoint_lsn"] and recs[1].kind == 7
                          and recs[1].lsn == control["checkpoint_end_lsn"] and recs[1].parsed is not None
                          and recs[1].parsed["begin_lsn"] == recs[0].lsn and not recs[1].parsed["txns"]
                          and not recs[1].parsed["dirty"])
        # redo
        self.redo_applied = 0
        if dpt:
            R = min(dpt.values())
            if R < A:
                rep.dmg("redo_before_start", "redo would start at %d, before the analysis start %d" % (R, A))
                self.failed = True
            for r in recs:
                if r.lsn < R or r.parsed is None:
                    continue
                if r.kind in (1, 2):
                    order = []
                    for e in r.parsed["edits"]:
                        if e.page not in order:
                            order.append(e.page)
                    stored = set(e.page for e in r.parsed["edits"] if e.kind == "stored")
                    for pid in order:
                        if pid in self.lost:
                            continue
                        self.check(pid, True)
                        if self.lsn_of(pid) < r.lsn:
                            if pid in stored and self.stored_write_older(r, pid, A):
                                continue
                            pg = self.pages[pid]
                            for e in r.parsed["edits"]:
                                if e.page == pid:
                                    apply_edit(pg, e)
                            self.set_lsn(pid, r.lsn)
                            self.redo_applied += 1
                elif r.kind == 8:
                    p = r.parsed
                    pid = p["page_id"]
                    if pid in self.lost:
                        continue
                    self.check(pid, True)
                    if self.lsn_of(pid) < r.lsn:
                        pg = bytearray(self.P)
                        pg[4] = p["page_kind"]
                        struct.pack_into("<HQQII", pg, 6, FORMAT_MAJOR, pid, r.lsn, p["a"], p["b"])
                        struct.pack_into("<Q", pg, 40, self.store_id)
                        self.pages[pid] = pg
                        self.changed.add(pid)
                        self.redo_applied += 1
        # undo
        self.undone = []
        by_lsn = {r.lsn: r for r in recs}
        state = {t: v[1] for t, v in losers.items()}
        while state:
            t = max(state, key=lambda k: (state[k], k))
            u = state[t]
            if u == 0:
                del state[t]
                self.undone.append(t)
                continue
            if u >= E:
                rep.dmg("undo", "undo of transaction %d points at %d, past the end of the log %d" % (t, u, E), lsn=u)
                self.failed = True
                del state[t]
                continue
            r = by_lsn.get(u)
            if r is None:
                # a record before the analysis start (a transaction running at the checkpoint)
                ok = (u % 8 == 0 and log.present(u // log.S) and u % log.S >= log.P and u % log.P >= 32
                      and log.page_end(u) - u >= 56)
                v, r2, _ = log.decode(u, 0) if ok else ("end", u, None)
                r = r2 if v == "valid" else None
            if r is None or r.txn_id != t or r.parsed is None:
                rep.dmg("undo", "undo of transaction %d needs a valid record at %d" % (t, u), lsn=u)
                self.failed = True
                del state[t]
                continue
            nxt = r.prev_lsn if r.kind != 2 else r.parsed["undo_next"]
            if nxt >= u:
                rep.dmg("undo", "undo of transaction %d does not move backwards at %d" % (t, u), lsn=u)
                self.failed = True
                del state[t]
                continue
            if r.kind == 1:
                for e in r.parsed["edits"]:
                    self.check(e.page, False)
                # section 15: the compensation, applied in its order; the pages take LSN u
                for e in compensation(r.parsed["edits"]):
                    if e.page in self.lost:
                        continue    # a page lost to a stored write (17.3): its changes are skipped
                    apply_edit(self.pages[e.page], e)
                    self.set_lsn(e.page, u)
                state[t] = r.prev_lsn
            elif r.kind == 2:
                state[t] = r.parsed["undo_next"]
            else:
                state[t] = r.prev_lsn


# ---------------------------------------------------------------- sections 14.3 - 14.12: the contents


def decode_metadata(m):
    """Section 14.7.  Returns the list of pairs, or raises ValueError."""
    if len(m) < 2:
        raise ValueError("metadata shorter than 2 bytes")
    count = struct.unpack_from("<H", m, 0)[0]
    o = 2
    pairs = []
    for _ in range(count):
        if o + 6 > len(m):
            raise ValueError("metadata pair header beyond the bytes")
        kl, vl = struct.unpack_from("<HI", m, o)
        o += 6
        if o + kl + vl > len(m):
            raise ValueError("metadata key/value beyond the bytes")
        k = m[o:o + kl].decode("utf-8")
        v = m[o + kl:o + kl + vl].decode("utf-8")
        o += kl + vl
        pairs.append([k, v])
    if o != len(m):
        raise ValueError("%d bytes after the last metadata pair" % (len(m) - o))
    return pairs


def align16(x):
    return (x + 15) & ~15


def vector_layout(P, dim):
    """Section 14.3: (stride, slots per page, offset of slot 0)."""
    stride = -(-dim * 4 // 16) * 16
    n = (P - 64) // (stride + 8)
    while n > 0 and align16(64 + 8 * n) + n * stride > P:
        n -= 1
    return stride, n, align16(64 + 8 * n)


def u64_at(b, o):
    return struct.unpack_from("<Q", b, o)[0]


def is_catalog_link(v):
    """A page id the index or a list may name in the catalog space: not the meta page."""
    return is_page_id(v) and space_of(v) == SPACE_CATALOG and page_no(v) >= 1


def is_vector_link(v):
    return is_page_id(v) and space_of(v) == SPACE_VECTOR


META_FIELDS = [("root", "Q", 64), ("height", "I", 72), ("graph", "I", 76), ("count", "Q", 80),
               ("vector_pages", "Q", 88), ("catalog_pages", "Q", 96), ("hot_catalog", "Q", 104),
               ("vector_head", "Q", 112), ("vector_tail", "Q", 120), ("roomy_head", "Q", 128),
               ("roomy_tail", "Q", 136), ("free_head", "Q", 144), ("free_tail", "Q", 152)]
LISTS = (("vector", KIND_VECTOR, SPACE_VECTOR), ("roomy", KIND_CATALOG, SPACE_CATALOG), ("free", KIND_FREE, SPACE_CATALOG))


def meta_fields(img):
    """Section 14.9: the meta page's fields, or ValueError (the page is valid under 14.2)."""
    if img[4] != KIND_META:
        raise ValueError("page kind %d is not the meta page" % img[4])
    f = {name: struct.unpack_from("<" + fmt, img, off)[0] for name, fmt, off in META_FIELDS}
    a, b, c = struct.unpack_from("<IIQ", img, 24)
    if a or b or c or any(img[160:]):
        raise ValueError("meta page: a, b, c or bytes after 160 are not zero")
    if (f["root"] == 0) != (f["height"] == 0):
        raise ValueError("meta page: root %#x with height %d" % (f["root"], f["height"]))
    if f["root"] == 0 and f["count"] != 0:
        raise ValueError("meta page: %d ids in an empty index" % f["count"])
    if f["height"] > 64:
        raise ValueError("meta page: height %d" % f["height"])
    for name, _, sp in LISTS:
        head, tail = f[name + "_head"], f[name + "_tail"]
        if (head == 0) != (tail == 0):
            raise ValueError("meta page: the %s list has one end only" % name)
        for v in (head, tail):
            if v and not (is_vector_link(v) if sp == SPACE_VECTOR else is_catalog_link(v)):
                raise ValueError("meta page: the %s list names %#x" % (name, v))
    for name in ("root", "hot_catalog"):
        if f[name] and not is_catalog_link(f[name]):
            raise ValueError("meta page: %s %#x is no catalog page" % (name, f[name]))
    return f


GRAPH_FIELDS = [("metric", "B", 64), ("reserved0", "B", 65), ("m", "H", 66), ("ef_construction", "I", 68),
                ("ef_search", "I", 72), ("extent_shift", "B", 76), ("seed", "Q", 80), ("entry", "Q", 88),
                ("live", "Q", 96), ("deleted", "Q", 104), ("node_pages", "I", 112), ("upper_pages", "I", 116),
                ("upper_next", "I", 120), ("node_extents", "H", 124), ("upper_extents", "H", 126)]
GRAPH_LEVEL_MAX = 15


def graph_m_ok(m, P):
    """Section 14.13, graph meta page rule 3: M at least 2, and 15 upper slots of 4 + 4M bytes fit a page."""
    return m >= 2 and (P - 64) // (4 + 4 * m) >= GRAPH_LEVEL_MAX


def extent_pages(before, shift):
    """Section 14.13, extents: pages of the extent that follows `before` pages of its kind."""
    return max(1, before >> shift)


def graph_fields(img, P):
    """Section 14.13: the graph meta page's fields and extent tables, or ValueError."""
    if img[4] != KIND_GRAPH_META:
        raise ValueError("page kind %d is not the graph meta page" % img[4])
    g = {name: struct.unpack_from("<" + fmt, img, off)[0] for name, fmt, off in GRAPH_FIELDS}
    a, b, c = struct.unpack_from("<IIQ", img, 24)
    if a or b or c:
        raise ValueError("graph meta page: header fields a, b, c are not zero")
    if g["metric"] not in (1, 2, 3):
        raise ValueError("graph meta page: unknown metric %d" % g["metric"])
    if g["reserved0"] or any(img[77:80]):
        raise ValueError("graph meta page: reserved bytes are not zero")
    if not graph_m_ok(g["m"], P):
        raise ValueError("graph meta page: M = %d does not suit pages of %d bytes" % (g["m"], P))
    if g["ef_construction"] == 0 or g["ef_search"] == 0:
        raise ValueError("graph meta page: ef of zero")
    if g["extent_shift"] > 16:
        raise ValueError("graph meta page: extent shift %d" % g["extent_shift"])
    x = (P - 192) // 8
    if g["node_extents"] > x or g["upper_extents"] > x:
        raise ValueError("graph meta page: more extents than its tables hold")
    for kind in ("node", "upper"):
        pages = 0
        for _ in range(g[kind + "_extents"]):
            pages += extent_pages(pages, g["extent_shift"])
        if pages != g[kind + "_pages"]:
            raise ValueError("graph meta page: %s pages %d, its extents hold %d" % (kind, g[kind + "_pages"], pages))
    g["free_runs"] = list(struct.unpack_from("<16I", img, 128))
    if g["free_runs"][0]:
        raise ValueError("graph meta page: free run list 0 is not empty")
    if g["entry"] == 0 and g["live"] + g["deleted"]:
        raise ValueError("graph meta page: nodes but no entry point")
    g["node_table"] = list(struct.unpack_from("<%dI" % g["node_extents"], img, 192))
    g["upper_table"] = list(struct.unpack_from("<%dI" % g["upper_extents"], img, 192 + 4 * x))
    return g


def graph_node_records(img, P):
    """Section 14.13, node pages: (M, records not free as (index, state, level, upper, ids)), or ValueError."""
    if img[4] != KIND_GRAPH_NODES or u64_at(img, 32):
        raise ValueError("page kind %d is not a graph node page" % img[4])
    r = struct.unpack_from("<I", img, 28)[0]
    m = max(r - 8, 0) // 8
    if r != 8 + 8 * m or not graph_m_ok(m, P):
        raise ValueError("node records of %d bytes: no valid M for pages of %d bytes" % (r, P))
    records = []
    for i in range((P - 64) // r):
        at = 64 + i * r
        st, lv, cnt, up = struct.unpack_from("<BBHI", img, at)
        if st == 0:
            if any(img[at:at + 8]):
                raise ValueError("record %d: free, but its header is not zero" % i)
            continue
        if st not in (1, 2):
            raise ValueError("record %d: state %d" % (i, st))
        if lv > GRAPH_LEVEL_MAX or cnt > 2 * m:
            raise ValueError("record %d: level %d and %d neighbours (M = %d)" % (i, lv, cnt, m))
        records.append((i, st, lv, up, list(struct.unpack_from("<%dI" % cnt, img, at + 8))))
    return m, records


def graph_upper_slots(img, P):
    """Section 14.13, upper pages: (M, slots not all zero as (index, count, ids of min(count, M) places))."""
    if img[4] != KIND_GRAPH_UPPER or u64_at(img, 32):
        raise ValueError("page kind %d is not a graph upper page" % img[4])
    u = struct.unpack_from("<I", img, 28)[0]
    m = max(u - 4, 0) // 4
    if u != 4 + 4 * m or not graph_m_ok(m, P):
        raise ValueError("upper slots of %d bytes: no valid M for pages of %d bytes" % (u, P))
    slots = []
    for i in range((P - 64) // u):
        at = 64 + i * u
        if not any(img[at:at + u]):
            continue
        cnt = struct.unpack_from("<I", img, at)[0]
        slots.append((i, cnt, list(struct.unpack_from("<%dI" % min(cnt, m), img, at + 4))))
    return m, slots


def node_cells(img, P):
    """Section 14.10: (is_leaf, cells, leftmost) of a node page valid under 14.2, or ValueError.
    A cell is (offset, key, value) with value a 6-tuple (leaf) or a child page id (branch)."""
    kind = img[4]
    if kind not in (KIND_LEAF, KIND_BRANCH):
        raise ValueError("page kind %d is not an index node" % kind)
    leaf = kind == KIND_LEAF
    n, d, c = struct.unpack_from("<IIQ", img, 24)
    if not 64 + 8 * n <= d <= P:
        raise ValueError("node of %d cells: directory overlaps cell data at %d" % (n, d))
    if leaf and c != 0:
        raise ValueError("leaf with header field c = %#x" % c)
    if not leaf and not is_catalog_link(c):
        raise ValueError("branch whose leftmost child %#x is no catalog page" % c)
    # rule 7: the key prefix field (header bytes 48..64): length p, the prefix, zeros
    p = img[48]
    if p > 15:
        raise ValueError("key prefix length %d" % p)
    prefix = bytes(img[49:49 + p])
    if any(img[49 + p:64]):
        raise ValueError("key prefix field: bytes after the prefix are not zero")
    v = 24 if leaf else 8
    cells, extents = [], []
    for i in range(n):
        o = struct.unpack_from("<I", img, 64 + 8 * i)[0]
        if o < d or o + 2 + v > P:
            raise ValueError("cell %d at %d outside the cell data" % (i, o))
        k = struct.unpack_from("<H", img, o)[0]
        if not 1 <= k <= 1024 or o + 2 + v + k > P:
            raise ValueError("cell %d: key length %d" % (i, k))
        key = bytes(img[o + 2 + v:o + 2 + v + k])
        if cells and cells[-1][1] >= key:
            raise ValueError("cell %d: keys out of order" % i)
        if not key.startswith(prefix):
            raise ValueError("cell %d: key does not begin with the node's key prefix" % i)
        if bytes(img[64 + 8 * i + 4:64 + 8 * i + 8]) != key[p:p + 4].ljust(4, b"\0"):
            raise ValueError("cell %d: directory head does not match the key" % i)
        if leaf:
            val = struct.unpack_from("<6I", img, o + 2)
        else:
            val = u64_at(img, o + 2)
            if not is_catalog_link(val):
                raise ValueError("cell %d: child %#x is no catalog page" % (i, val))
        cells.append((o, key, val))
        extents.append((o, o + 2 + v + k))
    extents.sort()
    for x, y in zip(extents, extents[1:]):
        if y[0] < x[1]:
            raise ValueError("cells overlap at %d" % y[0])
    return leaf, cells, c


def catalog_entries(img, P, dim):
    """Sections 14.4 and 14.5 as far as one catalog page shows: slot -> entry dict, or
    ValueError.  The rules that need other pages (page counts, chains, the index) are the caller's."""
    n, d = struct.unpack_from("<II", img, 24)
    if not 64 + 8 * n <= d <= P:
        raise ValueError("slot count %d and entry start %d" % (n, d))
    per_page = vector_layout(P, dim)[1]
    slots, extents, ids, vslots = {}, [], set(), set()
    for i in range(n):
        off, ln = struct.unpack_from("<II", img, 64 + 8 * i)
        if ln == 0:
            continue
        if off < d or off + ln > P:
            raise ValueError("slot %d outside the entry data" % i)
        extents.append((off, off + ln))
        e = img[off:off + ln]
        if ln < 32:
            raise ValueError("slot %d: entry shorter than 32 bytes" % i)
        vpid, vslot, flags, idl, ml, res, ovf = struct.unpack_from("<QIHHIIQ", e, 0)
        if not (1 <= idl <= 1024 and idl <= ln - 32):
            raise ValueError("slot %d: id length %d" % (i, idl))
        try:
            ident = bytes(e[32:32 + idl]).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("slot %d: id not UTF-8" % i)
        if ml > 65536 or res != 0:
            raise ValueError("slot %d: meta_len %d, reserved %d" % (i, ml, res))
        if not is_vector_link(vpid) or vslot >= per_page:
            raise ValueError("slot %d: vector page %#x slot %d" % (i, vpid, vslot))
        if ident in ids or (vpid, vslot) in vslots:
            raise ValueError("slot %d repeats an id or a vector slot" % i)
        ids.add(ident)
        vslots.add((vpid, vslot))
        meta = None
        if flags == 0:
            if ln != 32 + idl + ml:
                raise ValueError("slot %d: inline length" % i)
            try:
                meta = decode_metadata(bytes(e[32 + idl:]))
            except (ValueError, UnicodeDecodeError) as ex:
                raise ValueError("slot %d: metadata: %s" % (i, ex))
        elif flags == 1:
            if ln != 32 + idl or not (is_page_id(ovf) and space_of(ovf) == SPACE_CATALOG):
                raise ValueError("slot %d: overflow entry" % i)
        else:
            raise ValueError("slot %d: unknown flags %#x" % (i, flags))
        slots[i] = {"offset": off, "length": ln, "vector_page": vpid, "vector_slot": vslot, "flags": flags,
                    "id": ident, "meta_len": ml, "overflow_page": ovf, "metadata": meta}
    extents.sort()
    for x, y in zip(extents, extents[1:]):
        if y[0] < x[1]:
            raise ValueError("entries overlap at %d" % y[0])
    return n, d, slots


def vector_owners(img, P, dim):
    """Section 14.3: slot -> (catalog page number, entry offset) for every owner entry not 0,
    or ValueError (an owner naming the meta page)."""
    _, n, _ = vector_layout(P, dim)
    owners = {}
    for i in range(n):
        raw = u64_at(img, 64 + 8 * i)
        if raw:
            if raw >> 32 == 0:
                raise ValueError("slot %d: its owner names the meta page" % i)
            owners[i] = (raw >> 32, raw & 0xFFFFFFFF)
    return owners


def read_chain(get, first, m, P, C):
    """Section 14.6: (pairs, pages) of the chain of an entry with meta_len m, or ValueError."""
    maxpages = max(1, -(-m // (P - 64)))
    chain, data, cur = [], [], first
    while cur != 0:
        if not is_page_id(cur) or space_of(cur) != SPACE_CATALOG or not 1 <= page_no(cur) < C:
            raise ValueError("chain page id %#x is not a catalog page in use" % cur)
        if cur in chain:
            raise ValueError("overflow page %#x twice in its chain" % cur)
        chain.append(cur)
        if len(chain) > maxpages:
            raise ValueError("chain longer than %d pages" % maxpages)
        img, why = get(cur)
        if why is not None:
            raise ValueError("overflow page %#x not valid: %s" % (cur, why))
        if img[4] != KIND_OVERFLOW:
            raise ValueError("chain page %#x has kind %d" % (cur, img[4]))
        a = struct.unpack_from("<I", img, 24)[0]
        if a > P - 64:
            raise ValueError("overflow page %#x a = %d" % (cur, a))
        data.append(bytes(img[64:64 + a]))
        cur = u64_at(img, 32)
    blob = b"".join(data)
    if len(blob) != m:
        raise ValueError("chain holds %d bytes, meta_len %d" % (len(blob), m))
    try:
        return decode_metadata(blob), chain
    except (ValueError, UnicodeDecodeError) as ex:
        raise ValueError("chain metadata invalid: %s" % ex)


class Contents:
    """Section 14.12: the committed contents from the meta page, the index, the catalog and the
    vector pages, and every rule by which they must agree (a broken one is reported as damage;
    an id is kept if and only if rules 3.1-3.4 hold for it and its vector page is valid)."""

    def __init__(self, arena, rec, control, rep):
        self.arena, self.rec, self.rep = arena, rec, rep
        self.P, self.dim = arena.P, control["dimension"]
        self.store_id = control["store_id"]
        self.cache = {}
        self.counts = {}
        for sp in (SPACE_CATALOG, SPACE_VECTOR):
            nfiles = arena.file_count(sp)
            for pid in rec.pages:
                if space_of(pid) == sp:
                    nfiles = max(nfiles, page_no(pid) // arena.ppf + 1)
            self.counts[sp] = nfiles * arena.ppf
        self.stride, self.per_page, self.slots_at = vector_layout(self.P, self.dim)
        self.role = {}          # catalog page number -> what uses it (rule 5)
        self.reported = set()

    def get(self, pid):
        """(image, reason-if-invalid): as recovery left it, or as read from its file."""
        if pid in self.rec.pages:
            return self.rec.pages[pid], None
        if pid not in self.cache:
            img = self.arena.read_page(pid)
            self.cache[pid] = (img, page_valid(img, pid, self.store_id) or later_than_log(img, self.rec.E))
        return self.cache[pid]

    def dmg(self, kind, detail, **kw):
        self.rep.dmg(kind, detail, **kw)

    def claim(self, no, role):
        """Rule 5: catalog-space page `no` is used as `role`; a page used twice is damage."""
        if no in self.role:
            self.dmg("page_shared", "catalog page %d is both %s and %s" % (no, self.role[no], role),
                     page="%#018x" % ((SPACE_CATALOG << 56) | no))
            return False
        self.role[no] = role
        return True

    def read(self):
        """Returns (vectors, info)."""
        meta = self.read_meta()
        info = {"catalog_pages": self.counts[SPACE_CATALOG], "vector_pages": self.counts[SPACE_VECTOR],
                "stride": self.stride, "slots_per_page": self.per_page, "slots_offset": self.slots_at}
        if meta is None:
            info["meta"] = None
            return {}, info
        self.V, self.C = meta["vector_pages"], max(meta["catalog_pages"], 1)
        info["meta"] = dict(meta)
        for sp, mark in ((SPACE_CATALOG, self.C), (SPACE_VECTOR, self.V)):
            for no in range(mark):
                pid = (sp << 56) | no
                _, why = self.get(pid)
                if why is not None:
                    self.page_damage(pid, why)
        cells, nodes = self.walk_index(meta)
        info["index"] = {"height": meta["height"], "count": meta["count"], "nodes": nodes, "ids": len(cells)}
        if len(cells) != meta["count"]:
            self.dmg("index_count", "the index holds %d ids, the meta page counts %d" % (len(cells), meta["count"]))
        vectors, named, owned = {}, set(), set()
        for key, val in cells:
            got = self.take_id(key, val, named, owned)
            if got is not None:
                vectors[got[0]] = got[1]
        self.check_unnamed(named, owned)
        self.check_lists(meta)
        info["graph"] = self.read_graph(meta, owned)
        self.check_roles()
        return vectors, info

    def page_damage(self, pid, why):
        if pid in self.reported:
            return
        self.reported.add(pid)
        kind = {SPACE_CATALOG: "catalog_page", SPACE_VECTOR: "vector_page"}[space_of(pid)]
        self.dmg(kind, "page %#x is not valid: %s" % (pid, why), page="%#018x" % pid)

    def read_meta(self):
        """Section 14.9: the meta page's fields; None for a store that has written no id."""
        pid = SPACE_CATALOG << 56
        if self.counts[SPACE_CATALOG] == 0:
            return None
        img, why = self.get(pid)
        if why is not None:
            self.dmg("meta_page", "the meta page is not valid: %s" % why, page="%#018x" % pid)
            raise StoreError("the meta page is not valid: %s" % why)
        if is_zero(img):
            extent = self.arena.extent
            if extent and extent["catalog_pages"] > 0:
                self.dmg("meta_page", "the meta page is empty, but the store had initialised it")
                raise StoreError("the meta page was lost")
            return None
        try:
            f = meta_fields(img)
        except ValueError as e:
            self.dmg("meta_page", str(e), page="%#018x" % pid)
            raise StoreError("the meta page is not valid: %s" % e)
        if f["vector_pages"] > self.counts[SPACE_VECTOR] or f["catalog_pages"] > self.counts[SPACE_CATALOG]:
            self.dmg("meta_page", "the meta page counts %d catalog and %d vector pages, the arena holds %d and %d"
                     % (f["catalog_pages"], f["vector_pages"], self.counts[SPACE_CATALOG], self.counts[SPACE_VECTOR]))
            raise StoreError("the meta page counts pages beyond the arena")
        self.claim(0, "the meta page")
        return f

    def walk_index(self, meta):
        """Section 14.10: every leaf cell (key, value) in tree order; and the number of nodes.
        A node that breaks a rule is reported and its ids are lost."""
        cells, nodes = [], 0
        if meta["root"] == 0:
            return cells, nodes
        stack = [(meta["root"], 1, None, None)]
        while stack:
            pid, depth, lo, hi = stack.pop()
            where = "index node %#x (depth %d)" % (pid, depth)
            if not 1 <= page_no(pid) < self.C:
                self.dmg("index_page", "%s: a page not in use" % where, page="%#018x" % pid)
                continue
            if not self.claim(page_no(pid), "an index node"):
                continue
            img, why = self.get(pid)
            if why is not None:
                self.page_damage(pid, why)
                self.dmg("index_page", "%s is not valid: %s (its ids are lost)" % (where, why), page="%#018x" % pid)
                continue
            try:
                leaf, node, leftmost = node_cells(img, self.P)
                if leaf != (depth == meta["height"]) or depth > meta["height"]:
                    raise ValueError("a %s at depth %d of an index of height %d"
                                     % ("leaf" if leaf else "branch", depth, meta["height"]))
                for _, key, _ in node:
                    if (lo is not None and key < lo) or (hi is not None and key >= hi):
                        raise ValueError("key %r outside the node's range" % key)
            except ValueError as e:
                self.dmg("index_page", "%s: %s (its ids are lost)" % (where, e), page="%#018x" % pid)
                continue
            nodes += 1
            if leaf:
                cells.extend((key, val) for _, key, val in node)
                continue
            keys = [key for _, key, _ in node]
            children = [leftmost] + [val for _, _, val in node]
            bounds = [lo] + keys + [hi]
            for j in reversed(range(len(children))):
                stack.append((children[j], depth + 1, bounds[j], bounds[j + 1]))
        return cells, nodes

    def catalog_page(self, no):
        """Catalog page `no` decoded (n, d, slots), or None (reported) if it is not a valid one."""
        pid = (SPACE_CATALOG << 56) | no
        img, why = self.get(pid)
        if why is None and img[4] != KIND_CATALOG:
            why = "kind %d, not a catalog page" % img[4]
        if why is None:
            key = ("catalog", no)
            if key not in self.cache:
                try:
                    self.cache[key] = catalog_entries(img, self.P, self.dim)
                except ValueError as e:
                    self.cache[key] = e
            got = self.cache[key]
            if not isinstance(got, ValueError):
                return got
            why = "not a valid catalog page: %s" % got
        self.page_damage(pid, why)
        return None

    def take_id(self, key, val, named, owned):
        """Rules 3.1-3.4 for one leaf cell: (id, contents) or None (reported)."""
        vp, vs, cp, cs, off, ln = val
        try:
            ident = key.decode("utf-8")
        except UnicodeDecodeError:
            ident = repr(key)
        if not 1 <= cp < self.C:
            self.dmg("index_catalog", "id %r: catalog page %d is not in use" % (ident, cp), id=ident)
            return None
        page = self.catalog_page(cp)
        if page is None:
            return None
        n, _, slots = page
        e = slots.get(cs) if cs < n else None
        if e is None or (e["offset"], e["length"]) != (off, ln):
            self.dmg("index_catalog", "id %r: catalog page %d slot %d does not hold its entry at %d (%d bytes)"
                     % (ident, cp, cs, off, ln), id=ident)
            return None
        vpid = (SPACE_VECTOR << 56) | vp
        if e["id"].encode("utf-8") != key or e["vector_page"] != vpid or e["vector_slot"] != vs:
            self.dmg("index_catalog", "id %r: its entry names id %r, vector page %#x slot %d" %
                     (ident, e["id"], e["vector_page"], e["vector_slot"]), id=ident)
            return None
        if (cp, cs) in named:
            self.dmg("index_catalog", "id %r: catalog page %d slot %d named twice" % (ident, cp, cs), id=ident)
            return None
        named.add((cp, cs))
        if vp >= self.V or vs >= self.per_page:
            self.dmg("index_catalog", "id %r: vector page %d slot %d not in use" % (ident, vp, vs), id=ident)
            return None
        pairs = e["metadata"]
        if e["flags"] == 1:
            try:
                pairs, chain = read_chain(self.get, e["overflow_page"], e["meta_len"], self.P, self.C)
            except ValueError as ex:
                self.dmg("overflow_chain", "entry %r: %s (entry dropped)" % (ident, ex), id=ident)
                return None
            for c in chain:
                self.claim(page_no(c), "a page of the chain of %r" % ident)
        img, why = self.get(vpid)
        if why is None and img[4] != KIND_VECTOR:
            why = "kind %d, not a vector page" % img[4]
        if why is not None:
            self.page_damage(vpid, why)
            self.dmg("vector_page", "id %r: its vector page %#x is not valid (id dropped)" % (ident, vpid), id=ident)
            return None
        owner = u64_at(img, 64 + 8 * vs)
        if owner != (cp << 32) | off:
            self.dmg("index_owner", "id %r: the owner of vector page %d slot %d is %#x, not catalog page %d offset %d"
                     % (ident, vp, vs, owner, cp, off), id=ident)
            return None
        owned.add((vp, vs))
        vals = list(struct.unpack_from("<%df" % self.dim, img, self.slots_at + vs * self.stride))
        out = []
        for v in vals:
            if math.isfinite(v):
                out.append(v)
            else:
                self.dmg("vector_value", "vector %r holds a non-finite value" % ident, id=ident)
                out.append(repr(v))
        return ident, {"vector": out, "metadata": dict(pairs), "metadata_pairs": pairs, "page": "%#018x" % vpid,
                       "slot": vs, "catalog": ["%#018x" % ((SPACE_CATALOG << 56) | cp), cs], "entry_offset": off}

    def check_unnamed(self, named, owned):
        """Rule 4: no used catalog slot and no owner entry that the index does not name."""
        for no in range(1, self.C):
            img, why = self.get((SPACE_CATALOG << 56) | no)
            if why is not None or img[4] != KIND_CATALOG:
                continue
            self.claim(no, "a catalog page")
            page = self.catalog_page(no)
            for cs in sorted(page[2]) if page else []:
                if (no, cs) not in named:
                    self.dmg("catalog_orphan", "catalog page %d slot %d holds entry %r, which the index does not "
                             "name" % (no, cs, page[2][cs]["id"]), page="%#018x" % ((SPACE_CATALOG << 56) | no))
        for vp in range(self.V):
            img, why = self.get((SPACE_VECTOR << 56) | vp)
            if why is not None or img[4] != KIND_VECTOR:
                if why is None:
                    self.dmg("vector_page", "vector page %d in use is of kind %d" % (vp, img[4]))
                continue
            for vs in range(self.per_page):
                if u64_at(img, 64 + 8 * vs) and (vp, vs) not in owned:
                    self.dmg("owner_orphan", "vector page %d slot %d has an owner no id of the index names"
                             % (vp, vs), page="%#018x" % ((SPACE_VECTOR << 56) | vp))

    def check_lists(self, meta):
        """Section 14.11, and rule 6 (the hot catalog page)."""
        on = {}
        for name, kind, sp in LISTS:
            head, tail = meta[name + "_head"], meta[name + "_tail"]
            mark = self.V if sp == SPACE_VECTOR else self.C
            cur, seen, last = head, [], 0
            while cur not in (0, LIST_END):
                if not is_page_id(cur) or space_of(cur) != sp or not (sp == SPACE_VECTOR or page_no(cur) >= 1) \
                        or page_no(cur) >= mark or cur in seen:
                    self.dmg("list", "the %s list links to %#x: no page in use, or a loop" % (name, cur))
                    break
                img, why = self.get(cur)
                if why is not None or img[4] != kind:
                    self.dmg("list", "the %s list holds page %#x of kind %d" % (name, cur, img[4]))
                    break
                seen.append(cur)
                last, cur = cur, u64_at(img, 32)
            else:
                if cur == 0 and seen:
                    self.dmg("list", "the %s list stops at page %#x, whose link is 0" % (name, last))
                elif last != tail:
                    self.dmg("list", "the %s list ends at %#x, its tail is %#x" % (name, last, tail))
            for pid in seen:
                on[pid] = name
        for name, kind, sp in LISTS:
            mark = self.V if sp == SPACE_VECTOR else self.C
            for no in range(1 if sp == SPACE_CATALOG else 0, mark):
                pid = (sp << 56) | no
                img, why = self.get(pid)
                if why is not None or img[4] != kind:
                    continue
                linked = u64_at(img, 32) != 0
                if linked and on.get(pid) != name:
                    self.dmg("list", "page %#x has a list link but is not on the %s list" % (pid, name))
                if kind == KIND_FREE:
                    self.claim(no, "a free page")
                    if on.get(pid) != name:
                        self.dmg("list", "free page %#x is not on the free list" % pid)
                if kind == KIND_VECTOR:
                    free = any(u64_at(img, 64 + 8 * s) == 0 for s in range(self.per_page))
                    if free != (on.get(pid) == name):
                        self.dmg("list", "vector page %d %s a free slot but is %son the vector list"
                                 % (no, "has" if free else "has no", "" if on.get(pid) == name else "not "))
        hot = meta["hot_catalog"]
        if hot:
            img, why = self.get(hot)
            if page_no(hot) >= self.C or why is not None or img[4] != KIND_CATALOG:
                self.dmg("list", "the hot catalog page %#x is not a catalog page in use" % hot)

    def read_graph(self, meta, owned):
        """Section 14.13: the approximate index's pages claimed and its invariants checked: every
        vector a live node and every live node a vector, tombstones' slots empty, the counts, every
        list within its capacity naming nodes that have its layer, the entry point of the top
        level.  Returns a summary, or None when the store has no index."""
        g_no, P = meta["graph"], self.P
        if g_no == 0:
            return None
        gpid = (SPACE_CATALOG << 56) | g_no
        img, why = self.get(gpid) if 1 <= g_no < self.C else (None, "not a catalog page in use")
        if why is None:
            try:
                g = graph_fields(img, P)
            except ValueError as e:
                why = str(e)
        if why is not None:
            self.dmg("graph", "the graph meta page (catalog page %d) is not valid: %s" % (g_no, why), page="%#018x" % gpid)
            return None
        self.claim(g_no, "the graph meta page")
        m = g["m"]
        per_node, per_upper = (P - 64) // (8 + 8 * m), (P - 64) // (4 + 4 * m)

        def pages(kind, role, want_kind, b):
            out, total = [], 0
            for start in g[kind + "_table"]:
                n = extent_pages(total, g["extent_shift"])
                out.extend(range(start, start + n))
                total += n
            images = []
            for idx, no in enumerate(out):
                pid = (SPACE_CATALOG << 56) | no
                pimg, pwhy = self.get(pid) if 1 <= no < self.C else (None, "not a catalog page in use")
                if pwhy is None and (pimg[4] != want_kind or struct.unpack_from("<II", pimg, 24) != (idx, b)):
                    pwhy = "kind %d, a %d, b %d: not %s %d" % (pimg[4], *struct.unpack_from("<II", pimg, 24), role, idx)
                if pwhy is not None:
                    self.dmg("graph", "the index's %s %d (catalog page %d) is not valid: %s" % (role, idx, no, pwhy))
                    images.append(None)
                    continue
                self.claim(no, "the index's %s %d" % (role, idx))
                images.append(pimg)
            return images

        nodes = {}
        for idx, nimg in enumerate(pages("node", "node page", KIND_GRAPH_NODES, 8 + 8 * m)):
            try:
                recs = graph_node_records(nimg, P)[1] if nimg is not None else []
            except ValueError as e:
                self.dmg("graph", "the index's node page %d: %s" % (idx, e))
                recs = []
            for i, st, lv, up, ids in recs:
                nodes[idx * per_node + i] = (st, lv, up, ids)
        upper = {}
        for idx, uimg in enumerate(pages("upper", "upper page", KIND_GRAPH_UPPER, 4 + 4 * m)):
            try:
                for i, cnt, ids in (graph_upper_slots(uimg, P)[1] if uimg is not None else []):
                    upper[idx * per_upper + i] = (cnt, ids)
            except ValueError as e:
                self.dmg("graph", "the index's upper page %d: %s" % (idx, e))
        live = sum(1 for n in nodes.values() if n[0] == 1)
        dead = len(nodes) - live
        if (live, dead) != (g["live"], g["deleted"]):
            self.dmg("graph", "the graph meta page counts %d live nodes and %d tombstones, the pages hold %d and %d"
                     % (g["live"], g["deleted"], live, dead))
        for node, (st, lv, up, ids) in nodes.items():
            vp, vs = divmod(node, self.per_page)
            if (st == 1) != ((vp, vs) in owned):
                self.dmg("graph", "index node %d is %s, but vector page %d slot %d %s" % (
                    node, "live" if st == 1 else "a tombstone", vp, vs, "is free" if st == 1 else "holds a vector"))
            lists = [(0, ids, 2 * m)]
            for layer in range(1, lv + 1):
                slot = up + layer - 1
                if slot >= g["upper_next"]:
                    self.dmg("graph", "index node %d: upper slot %d was never handed out" % (node, slot))
                    break
                cnt, uids = upper.get(slot, (0, []))
                lists.append((layer, uids if cnt <= m else None, m))
            for layer, lst, cap in lists:
                if lst is None or len(lst) > cap or len(set(lst)) != len(lst) or node in lst:
                    self.dmg("graph", "index node %d: its list at layer %d is not %d distinct other ids" % (node, layer, cap))
                    continue
                for n in lst:
                    if n not in nodes or nodes[n][1] < layer:
                        self.dmg("graph", "index node %d: layer %d names %d, no node with that layer" % (node, layer, n))
        for vp, vs in owned:
            if nodes.get(vp * self.per_page + vs, (0,))[0] != 1:
                self.dmg("graph", "vector page %d slot %d holds a vector the index does not hold" % (vp, vs))
        if nodes:
            top = max(n[1] for n in nodes.values())
            e = g["entry"] - 1
            if e not in nodes or nodes[e][1] != top:
                self.dmg("graph", "the entry point %d is not a node of the top level %d" % (e, top))
        return {"live": live, "tombstones": dead, "m": m, "metric": g["metric"],
                "node_pages": g["node_pages"], "upper_pages": g["upper_pages"]}

    def check_roles(self):
        """Rule 5: every catalog-space page in use has one role."""
        for no in range(1, self.C):
            if no not in self.role:
                img, why = self.get((SPACE_CATALOG << 56) | no)
                if why is None:
                    self.dmg("page_unused", "catalog page %d (kind %d) is in use but nothing uses it" % (no, img[4]),
                             page="%#018x" % ((SPACE_CATALOG << 56) | no))


def read_contents(arena, rec, control, rep):
    return Contents(arena, rec, control, rep).read()


# ---------------------------------------------------------------- section 19: archive files

ARCH_MAGIC = b"VLMARCH\n"
ARCH_HEADER = 192
ARCH_BLOCK_MAX = 1048576
# archive files have their own major version (section 18): the filters each major allows
ARCH_MAJORS = {1: (0, 1, 2), 2: (0, 1, 2, 3)}
ARCH_WAL_RE = re.compile(r"^wal-([0-9a-f]{16})\.lz4$")
ARCH_BASE_RE = re.compile(r"^base-([0-9a-f]{16})\.lz4$")
ARCH_FIELDS = [
    ("version_major", "H", 8),
    ("version_minor", "H", 10),
    ("kind", "B", 12),
    ("store_id", "Q", 16),
    ("timeline", "I", 24),
    ("page_size", "I", 28),
    ("segment_size", "Q", 32),
    ("segment_no", "Q", 40),
    ("first_lsn", "Q", 48),
    ("end_lsn", "Q", 56),
    ("first_us", "Q", 64),
    ("last_us", "Q", 72),
    ("raw_len", "Q", 80),
    ("compressed_len", "Q", 88),
    ("raw_crc", "I", 96),
    ("compressed_crc", "I", 100),
    ("truncate_lsn", "Q", 104),
    ("next_txn_id", "Q", 112),
    ("dimension", "I", 120),
    ("catalog_files", "I", 124),
    ("vector_files", "I", 128),
    ("crc", "I", 188),
]


class ArchiveError(Exception):
    """An archive file that is not valid (19.3): `cls` is 'damaged' or 'incompatible'."""

    def __init__(self, cls, msg):
        Exception.__init__(self, msg)
        self.cls = cls


def lz4_block_decode(src, raw_len):
    """Section 19.2, "The LZ4 block format": one raw LZ4 block that must decode to exactly
    `raw_len` bytes."""
    out = bytearray()
    i, n = 0, len(src)

    def bad(why):
        raise ArchiveError("damaged", "LZ4 block: " + why)

    while True:
        if i >= n:
            bad("data ends before a token")
        token = src[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                if i >= n:
                    bad("data ends in a literal length")
                b = src[i]
                i += 1
                lit += b
                if b != 255:
                    break
        if i + lit > n:
            bad("data ends in the literals")
        if len(out) + lit > raw_len:
            bad("output beyond raw_len")
        out += src[i:i + lit]
        i += lit
        if i == n:
            break  # the last sequence: token, length bytes and literals only
        if i + 2 > n:
            bad("data ends in an offset")
        off = src[i] | (src[i + 1] << 8)
        i += 2
        if off == 0 or off > len(out):
            bad("offset %d outside the output (%d bytes)" % (off, len(out)))
        mlen = token & 15
        if mlen == 15:
            while True:
                if i >= n:
                    bad("data ends in a match length")
                b = src[i]
                i += 1
                mlen += b
                if b != 255:
                    break
        mlen += 4
        if len(out) + mlen > raw_len:
            bad("output beyond raw_len")
        start = len(out) - off
        if off >= mlen:
            out += out[start:start + mlen]
        else:
            # the source overlaps the bytes being written: the last `off` bytes repeat
            pattern = bytes(out[start:])
            reps = -(-mlen // off)
            out += (pattern * reps)[:mlen]
    if len(out) != raw_len:
        bad("decodes to %d bytes, not raw_len %d" % (len(out), raw_len))
    return bytes(out)


def decode_lanes(src, raw_len):
    """Section 19.2, filter 3: four lanes (8-byte lane header, then stored or LZ4 data) of
    w = floor(raw_len / 4) bytes each, then the raw_len - 4w tail bytes; returns the shuffled
    bytes y_0 + y_1 + y_2 + y_3 + tail (still to unshuffle) and each lane's filter and length."""
    w = raw_len // 4
    parts = []
    lanes = []
    i = 0
    for lane in range(4):
        if i + 8 > len(src):
            raise ArchiveError("damaged", "lane %d: its header does not fit in the block" % lane)
        lane_filter = src[i]
        lane_len, = struct.unpack_from("<I", src, i + 4)
        i += 8
        if i + lane_len > len(src):
            raise ArchiveError("damaged", "lane %d: lane_len %d beyond the block" % (lane, lane_len))
        data = src[i:i + lane_len]
        i += lane_len
        lanes.append({"filter": lane_filter, "stored_len": lane_len})
        if lane_filter == 2:
            if lane_len != w:
                raise ArchiveError("damaged", "stored lane %d: lane_len %d != w %d" % (lane, lane_len, w))
            parts.append(bytes(data))
        elif lane_filter == 0:
            parts.append(lz4_block_decode(data, w))
        else:
            raise ArchiveError("damaged", "lane %d: unknown lane filter %d" % (lane, lane_filter))
    if len(src) - i != raw_len - 4 * w:
        raise ArchiveError("damaged", "%d bytes after the lanes, the tail is %d" % (len(src) - i, raw_len - 4 * w))
    parts.append(bytes(src[i:]))
    return b"".join(parts), lanes


def unshuffle4(y):
    """Section 19.2, shuffle-4: x[4i + lane] = y[lane*w + i]; the 0-3 tail bytes unchanged."""
    w = len(y) // 4
    x = bytearray(len(y))
    for lane in range(4):
        x[lane:4 * w:4] = y[lane * w:(lane + 1) * w]
    x[4 * w:] = y[4 * w:]
    return bytes(x)


def archive_header(data):
    """Checks 1-4 of 19.3 on the first 192 bytes; returns the header fields."""
    if len(data) < ARCH_HEADER or data[0:8] != ARCH_MAGIC:
        if len(data) < ARCH_HEADER:
            raise ArchiveError("damaged", "archive file of %d bytes, shorter than its header" % len(data))
        raise ArchiveError("damaged", "bad archive magic")
    if crc32c(data[0:188]) != struct.unpack_from("<I", data, 188)[0]:
        raise ArchiveError("damaged", "archive header CRC mismatch")
    h = {name: struct.unpack_from("<" + fmt, data, off)[0] for name, fmt, off in ARCH_FIELDS}
    if h["version_major"] not in ARCH_MAJORS:
        raise ArchiveError("incompatible", "archive format major version %d (this reader knows 1 and 2)"
                           % h["version_major"])
    if h["kind"] not in (1, 2):
        raise ArchiveError("damaged", "archive kind %d" % h["kind"])
    return h


def archive_decode(data, with_contents=True):
    """Section 19.3: returns (header, blocks, contents or None); raises ArchiveError."""
    h = archive_header(data)
    body_len = len(data) - ARCH_HEADER
    if body_len != h["compressed_len"]:
        raise ArchiveError("damaged", "%d bytes after the header, compressed_len says %d"
                           % (body_len, h["compressed_len"]))
    if crc32c(memoryview(data)[ARCH_HEADER:]) != h["compressed_crc"]:
        raise ArchiveError("damaged", "CRC of the bytes after the header mismatch")
    if h["raw_len"] > (h["compressed_len"] // 16) * ARCH_BLOCK_MAX:
        raise ArchiveError("damaged", "raw_len %d impossible for %d compressed bytes"
                           % (h["raw_len"], h["compressed_len"]))
    blocks = []
    parts = []
    held = 0
    crc = 0
    i = ARCH_HEADER
    while i < len(data):
        if i + 16 > len(data):
            raise ArchiveError("damaged", "block header at %d does not fit" % i)
        filt = data[i]
        raw, stored = struct.unpack_from("<II", data, i + 4)
        if filt not in ARCH_MAJORS[h["version_major"]]:
            raise ArchiveError("damaged", "block at %d: filter %d unknown to major %d" % (i, filt, h["version_major"]))
        if not 1 <= raw <= ARCH_BLOCK_MAX:
            raise ArchiveError("damaged", "block at %d: raw_len %d" % (i, raw))
        if i + 16 + stored > len(data):
            raise ArchiveError("damaged", "block at %d: stored_len %d beyond the end of the file" % (i, stored))
        if blocks and blocks[-1]["raw_len"] != ARCH_BLOCK_MAX:
            raise ArchiveError("damaged", "a block other than the last holds less than 1 MiB")
        if held + raw > h["raw_len"]:
            raise ArchiveError("damaged", "blocks hold more than raw_len %d" % h["raw_len"])
        src = data[i + 16:i + 16 + stored]
        if filt == 2:
            if stored != raw:
                raise ArchiveError("damaged", "stored block at %d: stored_len %d != raw_len %d" % (i, stored, raw))
            out = bytes(src)
        elif filt == 0:
            out = lz4_block_decode(src, raw)
        elif filt == 1:
            out = unshuffle4(lz4_block_decode(src, raw))
        else:
            y, lanes = decode_lanes(src, raw)
            out = unshuffle4(y)
        crc = crc32c(out, crc)
        if with_contents:
            parts.append(out)
        blocks.append({"filter": filt, "raw_len": raw, "stored_len": stored})
        if filt == 3:
            blocks[-1]["lanes"] = lanes
        held += raw
        i += 16 + stored
    if held != h["raw_len"]:
        raise ArchiveError("damaged", "blocks hold %d bytes, raw_len says %d" % (held, h["raw_len"]))
    if crc != h["raw_crc"]:
        raise ArchiveError("damaged", "CRC of the contents mismatch")
    return h, blocks, (b"".join(parts) if with_contents else None)


def archive_pieces(h, contents):
    """The contents as named files: a segment file, or the arena files of a base image (19.4)."""
    S = h["segment_size"]
    if h["kind"] == 1:
        names = ["%016x.wal" % h["segment_no"]]
    else:
        names = ["catalog-%08x.pages" % i for i in range(h["catalog_files"])]
        names += ["vector-%08x.pages" % j for j in range(h["vector_files"])]
    # S-byte pieces, as many as there are both pieces and names (19.3's last paragraph says
    # what a restore requires of the lengths)
    pieces = [contents[k:k + S] for k in range(0, len(contents), S)] if S else []
    return list(zip(names, pieces))


def hex64(v):
    return "0x%016x" % v


def hex32(v):
    return "0x%08x" % v


def archive_header_json(h, data):
    d = {"magic": bytes(data[0:8]).hex()}
    for name, _fmt, _off in ARCH_FIELDS:
        v = h[name]
        if name == "store_id":
            v = hex64(v)
        elif name in ("raw_crc", "compressed_crc", "crc"):
            v = hex32(v)
        d[name] = v
    return d


def nonzero_pages(b, P):
    return [i for i in range(-(-len(b) // P)) if any(b[i * P:(i + 1) * P])]


def read_archive_dir(store, control, rep, check):
    """Section 19: every file of archive/, its header and whether it is valid."""
    adir = os.path.join(store, "archive")
    info = {"present": os.path.isdir(adir), "files": []}
    if not info["present"]:
        return info
    for name in sorted(os.listdir(adir)):
        path = os.path.join(adir, name)
        if not os.path.isfile(path):
            continue
        m_wal, m_base = ARCH_WAL_RE.match(name), ARCH_BASE_RE.match(name)
        ent = {"name": name, "size": os.path.getsize(path)}
        if name.endswith(".tmp"):
            ent["role"] = "temporary"
            info["files"].append(ent)
            continue
        if not (m_wal or m_base):
            ent["role"] = "other"
            info["files"].append(ent)
            continue
        ent["role"] = "segment" if m_wal else "base"
        with open(path, "rb") as fh:
            data = fh.read()
        problems = []
        try:
            if check:
                h, blocks, contents = archive_decode(data)
            else:
                h, blocks, contents = archive_header(data), None, None
            ent["header"] = archive_header_json(h, data)
            if blocks is not None:
                ent["blocks"] = len(blocks)
                ent["filters"] = sorted({b["filter"] for b in blocks})
            want_kind = 1 if m_wal else 2
            if h["kind"] != want_kind:
                problems.append("kind %d in a file named %s" % (h["kind"], name))
            if control is not None:
                if h["store_id"] != control["store_id"]:
                    problems.append("store id %s is not the store's" % hex64(h["store_id"]))
                if h["page_size"] != control["page_size"] or h["segment_size"] != control["segment_size"]:
                    problems.append("geometry differs from the store's")
            S = h["segment_size"]
            if m_wal:
                n = int(m_wal.group(1), 16)
                if h["segment_no"] != n:
                    problems.append("segment number %d in a file named for %d" % (h["segment_no"], n))
                if h["raw_len"] != S:
                    problems.append("contents of %d bytes, not S = %d" % (h["raw_len"], S))
            else:
                b = int(m_base.group(1), 16)
                if h["first_lsn"] != b:
                    problems.append("first_lsn %d in a file named for %d" % (h["first_lsn"], b))
                if h["raw_len"] != (h["catalog_files"] + h["vector_files"]) * S:
                    problems.append("contents of %d bytes, not (c + v) * S" % h["raw_len"])
            if contents is not None:
                ent["contents"] = [{"name": nm, "crc32c": hex32(crc32c(b)), "nonzero_pages": len(nonzero_pages(b, h["page_size"]))}
                                   for nm, b in archive_pieces(h, contents)]
            ent["valid"] = not problems if check else None
            ent["checked"] = check
        except ArchiveError as e:
            ent["valid"] = False
            ent["error"] = {"class": e.cls, "message": str(e)}
            problems.append("%s: %s" % (e.cls, e))
        if problems:
            ent["problems"] = problems
            rep.dmg("archive_file", "archive/%s: %s" % (name, "; ".join(problems)), file=name)
        info["files"].append(ent)
    return info


def archived_segment_records(path, full):
    """Decodes archive file `path` (an archived segment) and reads its records with the walk of
    section 11 as the oldest segment of a log holding only it (no control file needed: the
    geometry, store id and timeline come from the archive header)."""
    rep = Report()
    out = {"file": path, "header": None, "wal": [], "log_end": None, "damage": rep.damage,
           "errors": rep.errors}
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        h, _blocks, contents = archive_decode(data)
        out["header"] = archive_header_json(h, data)
        if h["kind"] != 1:
            raise StoreError("not an archived segment (kind %d)" % h["kind"])
        g = check_geometry(h["page_size"], h["segment_size"])
        if g:
            raise StoreError("archive header: bad geometry: " + g)
        if len(contents) != h["segment_size"]:
            raise StoreError("contents are %d bytes, not S = %d" % (len(contents), h["segment_size"]))
        log = Log(None, h["page_size"], h["segment_size"], h["store_id"], h["timeline"], rep,
                  mem={h["segment_no"]: contents})
        start, floor = log.start_of_oldest()
        recs, end = log.walk(start, floor, "tolerate")
        out["wal_start"] = start
        out["wal"] = [record_json(r, full) for r in recs]
        out["log_end"] = end
        for r in recs:
            if r.payload_error:
                rep.dmg("bad_payload", "record at %d: %s" % (r.lsn, r.payload_error), lsn=r.lsn)
    except ArchiveError as e:
        rep.err(e.cls, "%s: %s" % (path, e))
    except StoreError as e:
        rep.err("error", str(e))
    except Exception as e:  # noqa: BLE001 - a reader must report, never crash
        rep.err("internal", internal_detail(e))
    return out


# ---------------------------------------------------------------- golden vectors: one structure


class VectorError(Exception):
    """The structure is not valid: `cls` is the class of format-spec/vectors/README.md
    (invalid, damaged, stale, foreign, incompatible)."""

    def __init__(self, cls, msg):
        Exception.__init__(self, msg)
        self.cls = cls


def num(v):
    """A u64 of the vector JSON: a number, or a "0x…" string."""
    if isinstance(v, str):
        return int(v, 16) if v.lower().startswith("0x") else int(v)
    return int(v)


def payload_json(kind, p):
    """A decoded payload (parse_payload) in the vector JSON's shape."""
    d = {"kind": KIND_NAMES[kind]}

    def edits(es):
        return [dict({"edit": e.kind, "page": hex64(e.page), "offset": e.offset, "length": e.n,
                      "before": None if e.before is None else e.before.hex(), "after": e.after.hex()},
                     **({"end": e.end} if e.end is not None else {}))
                for e in es]

    if kind == 1:
        d.update(op=p["op"], id=p["id"], edits=edits(p["edits"]))
    elif kind == 2:
        d.update(undo_next=p["undo_next"], edits=edits(p["edits"]))
    elif kind == 7:
        d.update(begin_lsn=p["begin_lsn"], next_txn_id=p["next_txn_id"],
                 txns=[{"txn_id": t[0], "last_lsn": t[1], "undo_next": t[2], "state": t[3]} for t in p["txns"]],
                 dirty=[{"page": hex64(x[0]), "rec_lsn": x[1]} for x in p["dirty"]])
    elif kind == 8:
        d.update(page=hex64(p["page_id"]), page_kind=p["page_kind"], a=p["a"], b=p["b"])
    return d


def vec_payload(b, inp):
    kind = inp["kind"]
    try:
        p = parse_payload(kind, bytes(b), inp["page_size"])
    except PayloadError as e:
        raise VectorError("invalid", str(e))
    return payload_json(kind, p)


def vec_record(b, inp):
    """Section 9, rules 1-6 and 8, on a record's logical bytes."""
    s, f, P = inp["lsn"], inp["epoch_floor"], inp["page_size"]
    if len(b) < 56:
        raise VectorError("invalid", "shorter than a record header")
    crc, total, lsn, prev, txn, ts, dur, kind, flags, res, epoch = REC_HDR.unpack_from(b, 0)
    if not 56 <= total <= 33554432:
        raise VectorError("invalid", "total_len %d out of range" % total)
    if lsn != s:
        raise VectorError("invalid", "lsn field %d != address %d (stale record)" % (lsn, s))
    if kind == 0:
        raise VectorError("invalid", "kind 0")
    if res != 0:
        raise VectorError("invalid", "reserved u16 non-zero")
    if epoch < f:
        raise VectorError("invalid", "epoch %d below floor %d" % (epoch, f))
    if not (prev < s and dur <= s):
        raise VectorError("invalid", "prev_lsn or durable_lsn not below the record")
    if len(b) != total:
        raise VectorError("invalid", "%d bytes, total_len %d" % (len(b), total))
    if crc32c(memoryview(b)[4:total]) != crc:
        raise VectorError("invalid", "record CRC mismatch")
    try:
        p = parse_payload(kind, bytes(b[56:total]), P)
    except PayloadError as e:
        raise VectorError("invalid", "payload: %s" % e)
    return {"crc": hex32(crc), "total_len": total, "lsn": lsn, "prev_lsn": prev, "txn_id": txn,
            "timestamp_us": ts, "durable_lsn": dur, "kind": kind, "flags": flags, "epoch": epoch,
            "payload": payload_json(kind, p)}


def vec_wal_page_header(b, inp):
    """Section 8: a header read at `address` of a log of `timeline`, with `epoch_floor`."""
    q, P = inp["address"], 4096
    # A one-page log is enough to hold the header at its offset in its segment.
    log = Log(None, P, 5 * P, 0, inp["timeline"], Report(), mem={0: bytes(5 * P)})
    log.read = lambda lsn, n: bytes(b[lsn - q:lsn - q + n])
    st, h = log.page_header(q, inp["epoch_floor"])
    if st == "zero":
        return {"zero": True}
    if st != "valid":
        raise VectorError(st, "page header at %d is %s" % (q, st))
    return {"magic": bytes(b[0:4]).hex(), "version_major": struct.unpack_from("<H", b, 4)[0],
            "flags": h.flags, "page_lsn": h.addr, "rem_len": h.rem_len, "timeline": h.timeline,
            "epoch": h.epoch, "crc": hex32(struct.unpack_from("<I", b, 28)[0])}


def vec_segment_header(b, inp):
    """Section 7: the header of the file named for segment `segment_no`."""
    n, P, S = inp["segment_no"], inp["page_size"], inp["segment_size"]
    log = Log(None, P, S, num(inp["store_id"]), inp["timeline"], Report(), mem={n: bytes(S)})
    log.read = lambda lsn, k: bytes(b[lsn - n * S:lsn - n * S + k])
    st = log.seg_status(n)
    if st == "zero":
        return {"not_started": True}
    if st != "valid":
        raise VectorError(st, "segment header of segment %d is %s" % (n, st))
    major, minor, psz, ssz, segno, base, tl, _r, sid, t = struct.unpack_from("<HHIQQQIIQQ", b, 8)
    return {"magic": bytes(b[0:8]).hex(), "version_major": major, "version_minor": minor, "page_size": psz,
            "segment_size": ssz, "segment_no": segno, "base_lsn": base, "timeline": tl,
            "store_id": hex64(sid), "created_us": t, "crc": hex32(struct.unpack_from("<I", b, 124)[0])}


def vec_wal_log(b, inp):
    """Sections 11 and 12 over whole segment files, the first numbered `first_segment`."""
    P, S, first = inp["page_size"], inp["segment_size"], inp["first_segment"]
    mode = {"strict": "strict", "tolerate-torn-tail": "tolerate", "skip-corrupted": "skip"}[inp["mode"]]
    if len(b) % S != 0 or not b:
        raise VectorError("damaged", "%d bytes: not whole segments of %d" % (len(b), S))
    mem = {first + k: b[k * S:(k + 1) * S] for k in range(len(b) // S)}
    rep = Report()
    try:
        log = Log(None, P, S, num(inp["store_id"]), inp["timeline"], rep, mem=mem)
        start, floor = log.start_of_oldest()
        recs, end = log.walk(start, floor, mode)
    except StoreError as e:
        raise VectorError("damaged", str(e))
    v = end["verdict"]
    if v == "Refused":
        raise VectorError("incompatible", "a foreign header at %d: the log is refused" % end["lsn"])
    if v in ("MidLogDamage", "AmbiguousTail"):
        raise VectorError("damaged", "%s at %d" % (v, end["lsn"]))
    for r in recs:
        if r.payload_error:
            raise VectorError("invalid", "record at %d: %s" % (r.lsn, r.payload_error))
    E = end["lsn"]
    out = {"start_lsn": start, "end_lsn": E, "verdict": "torn-tail" if v == "TornTail" else "clean-end",
           "torn_tail": {"lsn": E, "garbage_bytes": end["repair_end"] - E} if v == "TornTail" else None,
           "skipped": [{"from": a, "to": z} for a, z in end["skipped"]], "max_epoch": log.max_epoch,
           "records": []}
    for r in recs:
        out["records"].append({
            "crc": hex32(struct.unpack_from("<I", log.read(r.lsn, 4))[0]), "total_len": r.total_len,
            "lsn": r.lsn, "prev_lsn": r.prev_lsn, "txn_id": r.txn_id, "timestamp_us": r.timestamp_us,
            "durable_lsn": r.durable_lsn, "kind": r.kind, "flags": r.flags, "epoch": r.epoch, "end": r.end,
            "payload": payload_json(r.kind, r.parsed)})
    return out


def vec_control(b, inp):
    """Section 3."""
    if len(b) < 1024:
        raise VectorError("damaged", "CONTROL is %d bytes, shorter than 1024" % len(b))
    data = bytes(b[:1024])
    s0, f0 = parse_slot(data[0:512])
    s1, f1 = parse_slot(data[512:1024])
    if "version" in (s0, s1):
        raise VectorError("incompatible", "an intact control slot of another major version")
    if s0 == "valid" and s1 == "valid":
        f = f1 if f1["sequence"] > f0["sequence"] else f0
    elif s0 == "valid" or s1 == "valid":
        f = f0 if s0 == "valid" else f1
    else:
        raise VectorError("damaged", "no valid control slot")
    g = check_geometry(f["page_size"], f["segment_size"])
    if g:
        raise VectorError("damaged", g)
    return {"page_size": f["page_size"], "segment_size": f["segment_size"], "dimension": f["dimension"],
            "timeline": f["timeline"], "store_id": hex64(f["store_id"]), "sequence": f["sequence"],
            "checkpoint_lsn": f["checkpoint_lsn"], "checkpoint_end_lsn": f["checkpoint_end_lsn"],
            "redo_lsn": f["redo_lsn"], "next_txn_id": f["next_txn_id"], "created_us": f["created_us"],
            "checkpoint_us": f["checkpoint_time_us"], "truncate_lsn": f["truncate_lsn"],
            **({"extent": extent_of(f)} if extent_of(f) else {})}


def vec_arena_page(b, inp):
    """Section 14: one page read at the position of `page_id` (of the store `store_id`, if given)."""
    pid, P, dim = num(inp["page_id"]), inp["page_size"], inp["dimension"]
    if len(b) != P:
        raise VectorError("invalid", "%d bytes, not P = %d" % (len(b), P))
    if not is_page_id(pid):
        raise VectorError("invalid", "%#x is not a page id" % pid)
    why = page_valid(b, pid, num(inp["store_id"]) if "store_id" in inp else None)
    if why is not None:
        raise VectorError("invalid", why)
    if is_zero(b):
        return {"zero": True}
    crc, kind, _r, major, hid, plsn, a, bb, c, sid = struct.unpack_from("<IBBHQQIIQQ", b, 0)
    out = {"crc": hex32(crc), "kind": kind, "version_major": major, "page_id": hex64(hid), "page_lsn": plsn,
           "a": a, "b": bb, "c": hex64(c), "store_id": hex64(sid)}
    try:
        out["body"] = page_body(b, kind, P, dim)
    except ValueError as e:
        raise VectorError("invalid", str(e))
    return out


def page_body(b, kind, P, dim):
    """The body of a page valid under 14.2, by kind (the vector JSON's shape), or ValueError."""
    if kind == KIND_VECTOR:
        stride, n, at = vector_layout(P, dim)
        owners = vector_owners(b, P, dim)
        slots = []
        for i in range(n):
            raw = b[at + i * stride:at + (i + 1) * stride]
            if any(raw):
                slots.append({"slot": i, "vector": list(struct.unpack_from("<%df" % dim, raw, 0))})
        return {"stride": stride, "slots_per_page": n, "slots_offset": at,
                "owners": [{"slot": i, "catalog_page": cp, "entry_offset": off} for i, (cp, off) in sorted(owners.items())],
                "nonzero_slots": slots}
    if kind == KIND_CATALOG:
        n, d, slots = catalog_entries(b, P, dim)
        out = []
        for i in range(n):
            e = slots.get(i)
            if e is None:
                out.append({"slot": i, "free": True})
            else:
                out.append(dict(e, slot=i, vector_page=hex64(e["vector_page"]),
                                overflow_page=hex64(e["overflow_page"])))
        return {"slot_count": n, "entry_start": d, "slots": out}
    if kind == KIND_OVERFLOW:
        a, c = struct.unpack_from("<I", b, 24)[0], u64_at(b, 32)
        if a > P - 64:
            raise ValueError("overflow page holds %d bytes" % a)
        if c != 0 and not is_catalog_link(c):
            raise ValueError("overflow next %#x is not a catalog page id" % c)
        return {"next": hex64(c), "data": bytes(b[64:64 + a]).hex()}
    if kind == KIND_META:
        f = meta_fields(b)
        ends = {name + "_list": {"head": hex64(f[name + "_head"]), "tail": hex64(f[name + "_tail"])}
                for name, _, _ in LISTS}
        return dict({"root": hex64(f["root"]), "height": f["height"], "count": f["count"],
                     "vector_pages": f["vector_pages"], "catalog_pages": f["catalog_pages"],
                     "graph": f["graph"], "hot_catalog": hex64(f["hot_catalog"])}, **ends)
    if kind in (KIND_LEAF, KIND_BRANCH):
        leaf, cells, leftmost = node_cells(b, P)
        n, d = struct.unpack_from("<II", b, 24)
        out = []
        for i, (o, key, val) in enumerate(cells):
            head = bytes(b[64 + 8 * i + 4:64 + 8 * i + 8]).hex()
            if leaf:
                names = ("vector_page", "vector_slot", "catalog_page", "catalog_slot", "entry_offset", "entry_len")
                out.append(dict({"offset": o, "head": head, "key": key.hex()}, **dict(zip(names, val))))
            else:
                out.append({"offset": o, "head": head, "key": key.hex(), "child": hex64(val)})
        body = {"cell_count": n, "data_start": d, "key_prefix": bytes(b[49:49 + b[48]]).hex(), "cells": out}
        if not leaf:
            body["leftmost"] = hex64(leftmost)
        return body
    if kind == KIND_GRAPH_META:
        g = graph_fields(b, P)
        return {"metric": g["metric"], "m": g["m"], "ef_construction": g["ef_construction"],
                "ef_search": g["ef_search"], "extent_shift": g["extent_shift"], "seed": hex64(g["seed"]),
                "entry_point": g["entry"] - 1 if g["entry"] else None, "live": g["live"],
                "tombstones": g["deleted"], "node_pages": g["node_pages"], "upper_pages": g["upper_pages"],
                "upper_next": g["upper_next"], "node_extents": g["node_table"], "upper_extents": g["upper_table"],
                "free_runs": [{"length": ln, "first_slot": head - 1} for ln, head in enumerate(g["free_runs"]) if head]}
    if kind == KIND_GRAPH_NODES:
        m, records = graph_node_records(b, P)
        return {"m": m, "records": [{"record": i, "state": "live" if st == 1 else "deleted", "level": lv,
                                     "upper": up, "neighbours": ids} for i, st, lv, up, ids in records]}
    if kind == KIND_GRAPH_UPPER:
        m, slots = graph_upper_slots(b, P)
        return {"m": m, "slots": [{"slot": i, "count": cnt, "ids": ids} for i, cnt, ids in slots]}
    return None


def vec_archive(b, inp):
    """Section 19.3 (the checks that need the store, 19.3's last paragraph, are not made)."""
    try:
        h, blocks, contents = archive_decode(b)
    except ArchiveError as e:
        raise VectorError(e.cls, str(e))
    out = archive_header_json(h, b)
    out["blocks"] = blocks
    out["contents"] = [{"name": nm, "crc32c": hex32(crc32c(piece)), "nonzero_pages": nonzero_pages(piece, h["page_size"])}
                       for nm, piece in archive_pieces(h, contents)]
    return out


VECTOR_DECODERS = {
    "record-payload": vec_payload,
    "record": vec_record,
    "wal-page-header": vec_wal_page_header,
    "segment-header": vec_segment_header,
    "wal-log": vec_wal_log,
    "control-file": vec_control,
    "arena-page": vec_arena_page,
    "archive": vec_archive,
}


def decode_vector(structure, data, inp):
    """One golden vector: {"decoded": …} or {"error": class, "message": …}."""
    fn = VECTOR_DECODERS.get(structure)
    if fn is None:
        return {"error": "unknown-structure", "message": "no decoder for %r" % structure}
    try:
        return {"decoded": fn(memoryview(bytes(data)).tobytes(), inp)}
    except VectorError as e:
        return {"error": e.cls, "message": str(e)}
    except Exception as e:  # noqa: BLE001 - a reader must report, never crash
        return {"error": "internal", "message": internal_detail(e)}


# ---------------------------------------------------------------- main


def epoch_slot(b):
    """Section 10: one slot of EPOCH; returns (valid, epoch, store_id or None)."""
    ok = (len(b) >= 16 and b[0:4] == b"VEPC" and crc32c(b[0:8]) == struct.unpack_from("<I", b, 8)[0]
          and b[12:16] == bytes(4))
    if not ok:
        return False, None, None
    epoch, sid = struct.unpack_from("<I", b, 4)[0], None
    if len(b) >= 32 and not is_zero(b[16:32]):
        if crc32c(b[0:24]) != struct.unpack_from("<I", b, 24)[0] or b[28:32] != bytes(4):
            return False, None, None
        sid = struct.unpack_from("<Q", b, 16)[0]
    return True, epoch, sid


def read_epoch_file(waldir):
    path = os.path.join(waldir, "EPOCH")
    if not os.path.exists(path):
        return {"present": False, "epoch": 0}
    with open(path, "rb") as fh:
        b = fh.read(544)
    slots = [epoch_slot(b[0:32])] + ([epoch_slot(b[512:544])] if len(b) >= 528 else [])
    valid = [e for ok, e, _ in slots if ok]
    return {"present": True, "valid": bool(valid), "epoch": max(valid) if valid else None,
            "store_ids": sorted({sid for ok, _, sid in slots if ok and sid is not None})}


def run(store, mode, take_lock, full_payloads, archive_mode="full"):
    rep = Report()
    out = {"store": store, "mode": mode, "control": None, "wal": [], "log_end": None, "vectors": {},
           "damage": rep.damage, "errors": rep.errors, "notes": rep.notes}
    lock_fd = None
    log = arena = None
    try:
        if take_lock:
            lp = os.path.join(store, "LOCK")
            if os.path.exists(lp):
                import fcntl
                lock_fd = os.open(lp, os.O_RDONLY)
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:
                    raise StoreError("the store is open (LOCK is held)")
        control = read_control(store, rep)
        out["control"] = control
        P, S = control["page_size"], control["segment_size"]
        waldir = os.path.join(store, "wal")
        out["epoch_file"] = read_epoch_file(waldir) if os.path.isdir(waldir) else None
        log = Log(waldir, P, S, control["store_id"], control["timeline"], rep)
        out["segments"] = {"oldest": log.O, "newest": log.N, "limit": log.L}

        # the whole log, from the first record start of the oldest segment
        start, floor = log.start_of_oldest()
        recs, end = log.walk(start, floor, mode)
        out["wal"] = [record_json(r, full_payloads) for r in recs]
        bad_payloads = set()
        for r in recs:
            if r.payload_error:
                rep.dmg("bad_payload", "record at %d: %s" % (r.lsn, r.payload_error), lsn=r.lsn)
                bad_payloads.add(r.lsn)
        out["wal_start"] = start
        out["log_end"] = end
        note_end(end, rep, "log (from the oldest segment)")
        if end["verdict"] in ("Refused", "MidLogDamage", "AmbiguousTail"):
            raise StoreError("log: %s at %d" % (end["verdict"], end["lsn"]))

        # recovery walk (17.3 step 2), from checkpoint_lsn
        A = control["checkpoint_lsn"]
        if A != 0:
            if A // S < log.O or A > log.L:
                raise StoreError("checkpoint_lsn %d lies outside the log present" % A)
            rrecs, rend = log.walk(A, 0, mode)
            if rend["lsn"] != end["lsn"]:
                note_end(rend, rep, "log (from checkpoint_lsn)")
                out["recovery_log_end"] = rend
            if rend["verdict"] in ("Refused", "MidLogDamage", "AmbiguousTail"):
                raise StoreError("log from checkpoint: %s at %d" % (rend["verdict"], rend["lsn"]))
            if not rrecs or rrecs[0].lsn != A or rrecs[0].kind != 6:
                rep.dmg("checkpoint", "no valid checkpoint-begin record at checkpoint_lsn %d" % A)
        else:
            rrecs, A = recs, (recs[0].lsn if recs else start)
        E = (out.get("recovery_log_end") or end)["lsn"]

        arena = Arena(store, P, S, rep, control.get("extent"))
        dw, dwinfo = read_doublewrite(store, P, rep, control["store_id"])
        out["doublewrite"] = dwinfo
        rec = Recovery(arena, dw, P, rep, mode == "skip", control["store_id"])
        rec.reported_payloads = bad_payloads
        rec.run(log, rrecs, A, control, E)
        out["recovery"] = {
            "analysis_start": A,
            "end": E,
            "records": len(rrecs),
            "fast_path": rec.fast_path,
            "losers": rec.losers_found,
            "next_txn_id": rec.next_txn,
            "redo_page_applications": rec.redo_applied,
            "pages_changed": len(rec.changed),
            "stored_writes_lost": rec.stored_writes_lost,
            "failed": rec.failed,
        }
        vectors, cinfo = read_contents(arena, rec, control, rep)
        out["catalog"] = cinfo
        out["vectors"] = vectors
        if archive_mode != "none":
            out["archive"] = read_archive_dir(store, control, rep, archive_mode == "full")
        if rec.failed:
            rep.err("recovery", "recovery failed (see damage); the contents shown are a best effort")
    except StoreError as e:
        rep.err("error", str(e))
    except Exception as e:  # noqa: BLE001 - a reader must report, never crash
        rep.err("internal", internal_detail(e))
    finally:
        if log:
            log.close()
        if arena:
            arena.close()
        if lock_fd is not None:
            os.close(lock_fd)
    return out


def note_end(end, rep, what):
    v = end["verdict"]
    if v == "TornTail":
        rep.dmg("torn_tail", "%s ends in a torn tail at %d (%s)" % (what, end["lsn"], end.get("reason") or
                                                                     end["stopped_by"]), lsn=end["lsn"])
    elif v == "MidLogDamage":
        rep.dmg("mid_log_damage", "%s damaged at %d: a later record (at %d) proves those bytes were durable"
                % (what, end["lsn"], end["proof_lsn"]), lsn=end["lsn"])
    elif v == "AmbiguousTail":
        rep.dmg("ambiguous_tail", "%s: invalid at %d with valid records after it (strict mode)"
                % (what, end["lsn"]), lsn=end["lsn"])
    elif v == "Refused":
        rep.dmg("refused", "%s: a foreign header at %d (incompatible)" % (what, end["lsn"]), lsn=end["lsn"])


USAGE = """usage: read_store.py [--mode tolerate|strict|skip] [--no-lock] [--no-payloads]
                     [--archive full|headers|none] STORE_DIR
       read_store.py --vector FILE.json|FILE.bin [--structure NAME] [--input JSON]
       read_store.py --vector-dir DIR
       read_store.py --archived-segment ARCHIVE_FILE [--no-payloads]
"""


def main(argv):
    mode = "tolerate"
    take_lock = True
    full = True
    archive_mode = "full"
    vector = structure = inp = segment_file = vector_dir = None
    args = []
    it = iter(argv[1:])
    for a in it:
        if a.startswith("--") and "=" in a:
            a, v = a.split("=", 1)
            it = iter([v] + list(it))
        if a == "--mode":
            mode = next(it, "")
        elif a == "--no-lock":
            take_lock = False
        elif a == "--no-payloads":
            full = False
        elif a == "--archive":
            archive_mode = next(it, "")
        elif a == "--vector":
            vector = next(it, None)
        elif a == "--vector-dir":
            vector_dir = next(it, None)
        elif a == "--structure":
            structure = next(it, None)
        elif a == "--input":
            inp = next(it, None)
        elif a == "--archived-segment":
            segment_file = next(it, None)
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            args.append(a)
    if vector_dir is not None:
        if args or vector is not None:
            sys.stderr.write(USAGE)
            return 2
        out = {}
        for name in sorted(os.listdir(vector_dir)):
            if not name.endswith(".json"):
                continue
            base = os.path.join(vector_dir, name[:-5])
            with open(base + ".json", encoding="utf-8") as fh:
                meta = json.load(fh)
            with open(base + ".bin", "rb") as fh:
                data = fh.read()
            res = decode_vector(meta.get("structure"), data, meta.get("input", {}))
            out[name[:-5]] = dict({"structure": meta.get("structure")}, **res)
        sys.stdout.write(json.dumps(out, ensure_ascii=False, allow_nan=False) + "\n")
        return 0
    if vector is not None:
        if args:
            sys.stderr.write(USAGE)
            return 2
        base = vector[:-5] if vector.endswith(".json") else vector[:-4] if vector.endswith(".bin") else vector
        meta = {}
        if structure is None or inp is None:
            with open(base + ".json", encoding="utf-8") as fh:
                meta = json.load(fh)
        with open(base + ".bin", "rb") as fh:
            data = fh.read()
        structure = structure or meta.get("structure")
        inp = json.loads(inp) if inp is not None else meta.get("input", {})
        out = decode_vector(structure, data, inp)
        out = dict({"vector": os.path.basename(base), "structure": structure}, **out)
        sys.stdout.write(json.dumps(out, ensure_ascii=False, allow_nan=False) + "\n")
        return 0 if "decoded" in out else 1
    if segment_file is not None:
        if args:
            sys.stderr.write(USAGE)
            return 2
        out = archived_segment_records(segment_file, full)
        sys.stdout.write(json.dumps(out, ensure_ascii=False, allow_nan=False) + "\n")
        return 1 if out["errors"] else 0
    if len(args) != 1 or mode not in ("tolerate", "strict", "skip") or archive_mode not in ("full", "headers", "none"):
        sys.stderr.write(USAGE)
        return 2
    out = run(args[0], mode, take_lock, full, archive_mode)
    sys.stdout.write(json.dumps(out, ensure_ascii=False, allow_nan=False))
    sys.stdout.write("\n")
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
