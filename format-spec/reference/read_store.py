#!/usr/bin/env python3
"""Independent, read-only reader of the Vellum on-disk format, version 1.

Written from format-spec/FORMAT.md alone (standard library only).  Usage:

    python3 read_store.py [--mode tolerate|strict|skip] [--no-lock] [--no-payloads] DIR

prints one JSON object on stdout: control data, the log records, the committed contents
and a list of damage found.  It never writes to the store.  Exit status: 0 when the committed
contents could be determined (damage may still have been reported), 1 on an error verdict
(the "errors" list says why), 2 on bad usage.
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


def is_page_id(v):
    return (v >> 56) in (SPACE_CATALOG, SPACE_VECTOR)


def space_of(pid):
    return pid >> 56


def page_no(pid):
    return pid & ((1 << 56) - 1)


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
]


def parse_slot(b):
    """Returns (status, fields); status is 'valid', 'damaged' or 'version'."""
    if len(b) < 512 or b[0:8] != CTRL_MAGIC:
        return "damaged", None
    if crc32c(b[0:508]) != struct.unpack_from("<I", b, 508)[0]:
        return "damaged", None
    fields = {name: struct.unpack_from("<" + fmt, b, off)[0] for name, fmt, off in CTRL_FIELDS}
    if fields["version_major"] != 1:
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
    g = check_geometry(c["page_size"], c["segment_size"])
    if g:
        raise StoreError("control file: bad geometry: " + g)
    P = c["page_size"]
    maxdim = ((P - 64) // 16) * 4
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
    def __init__(self, waldir, P, S, store_id, timeline, rep):
        self.P, self.S, self.store_id, self.timeline, self.rep = P, S, store_id, timeline, rep
        self.waldir = waldir
        self.segs = {}
        self.fds = {}
        self._seg_cache = {}
        self._page_cache = {}
        if not os.path.isdir(waldir):
            raise StoreError("no wal/ directory")
        for name in sorted(os.listdir(waldir)):
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
        seg, off = divmod(lsn, self.S)
        assert off + n <= self.S
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
            if major != 1:
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
                if (flags & ~1) != 0 or ((flags & 1) != 0) != (rem > 0):
                    st = "damaged"
                elif major != 1:
                    st = "foreign"
                elif addr != q:
                    st = "stale"
                elif tl != self.timeline:
                    st = "stale"
                else:
                    st = "valid"
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
        P, S, O = self.P, self.S, self.O
        q0 = O * S + P
        st, h = self.page_header(q0, 0)
        if not (st == "valid" and h.rem_len > 0):
            return O * S, 0
        q = q0
        while q < min(self.L, (O + 1) * S):
            st, h = self.page_header(q, 0)
            if st == "valid" and h.rem_len > 0:
                r = self.resync(q)
                if r is not None:
                    return r
            else:
                return q, 0
            q += P
        return (O + 1) * S + P, 0

    # -- section 12: evidence after E and the verdict
    def classify(self, E, how, mode):
        P, S = self.P, self.S
        out = {"lsn": E, "stopped_by": how}
        if how == "refuse":
            out["verdict"] = "Refused"
            return out
        Z = E
        later = []
        proof = None
        resume = None
        if E % S != 0 and E % P != 0 and E < self.L and self.present(E // S):
            if not is_zero(self.read(E, self.page_end(E) - E)):
                Z = max(Z, self.page_end(E))
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
                    Z = max(Z, q + P)
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
        out["garbage_end"] = Z
        out["later_records"] = later[:16]
        if proof is not None:
            out["verdict"] = "MidLogDamage"
            out["proof_lsn"] = proof
            out["resume"] = resume[0] if resume else None
            out["_resume"] = resume
        elif later:
            out["verdict"] = "AmbiguousTail" if mode == "strict" else "TornTail"
            out["ambiguous"] = True
        elif how == "invalid" or Z > E:
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


def parse_edits(buf, P, allow_before):
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
        if off + n > P:
            raise PayloadError("edit range %d+%d beyond the page" % (off, n))
        if fl & ~1:
            raise PayloadError("unknown edit flags %#x" % fl)
        if fl & 1 and not allow_before:
            raise PayloadError("clr edit with a before-image")
        before = buf.take(n) if fl & 1 else None
        after = buf.take(n)
        edits.append((pid, off, before, after))
    return edits


def parse_payload(kind, p, P):
    buf = Buf(p)
    out = {}
    if kind == 1:
        op = buf.u("B", 1)
        if op not in (1, 2, 3):
            raise PayloadError("unknown op %d" % op)
        k = buf.u("H", 2)
        idb = buf.take(k)
        out["op"] = {1: "insert", 2: "upsert", 3: "delete"}[op]
        out["id"] = idb.decode("utf-8", "replace")
        out["edits"] = parse_edits(buf, P, True)
    elif kind == 2:
        out["undo_next"] = buf.u("Q", 8)
        out["edits"] = parse_edits(buf, P, False)
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
        if pk not in (0, 1, 2, 3):
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
            d["edits"] = [{"page": "%#018x" % e[0], "offset": e[1], "len": len(e[3]), "before": e[2] is not None}
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
ALLOWED_KINDS = {SPACE_CATALOG: (0, 2, 3), SPACE_VECTOR: (0, 1)}


def page_valid(img, pid):
    """Section 14.2.  Returns None if valid, else a reason."""
    if is_zero(img):
        return None
    if crc32c(memoryview(img)[4:]) != struct.unpack_from("<I", img, 0)[0]:
        return "page CRC mismatch"
    if struct.unpack_from("<Q", img, 8)[0] != pid:
        return "page id field %#x != %#x" % (struct.unpack_from("<Q", img, 8)[0], pid)
    if struct.unpack_from("<H", img, 6)[0] != 1:
        return "page major version %d" % struct.unpack_from("<H", img, 6)[0]
    if img[4] not in ALLOWED_KINDS[space_of(pid)]:
        return "page kind %d not allowed in its space" % img[4]
    return None


class Arena:
    def __init__(self, store, P, S, rep):
        self.P, self.S, self.rep = P, S, rep
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
                rep.dmg("arena_file_size", "%s is %d bytes, not S = %d" % (name, size, S), file=name)
            self.files[sp][f] = path
        for sp, fs in self.files.items():
            if fs and sorted(fs) != list(range(len(fs))):
                rep.dmg("arena_gap", "%s files are not contiguous from 0: %s" %
                        ("catalog" if sp == 1 else "vector", sorted(fs)))

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


def read_doublewrite(store, P, rep):
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
        if not is_page_id(pid) or is_zero(img) or page_valid(img, pid) is not None:
            continue
        if pid not in out:
            out[pid] = img
    info["usable_images"] = len(out)
    return out, info


# ---------------------------------------------------------------- section 17: recovery


class Recovery:
    def __init__(self, arena, dw, P, rep, lenient):
        self.arena, self.dw, self.P, self.rep, self.lenient = arena, dw, P, rep, lenient
        self.pages = {}       # page id -> bytearray (checked or changed by this recovery)
        self.changed = set()
        self.pageinit = set()
        self.failed = False
        self.reported_payloads = set()

    def check(self, pid, use_dw):
        if pid in self.pages:
            return
        img = self.arena.read_page(pid)
        why = page_valid(img, pid)
        if why is None:
            self.pages[pid] = bytearray(img)
        elif use_dw and pid in self.dw:
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

    def run(self, log, recs, A, control, E):
        rep = self.rep
        losers = {}
        finished = set()
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
                    dpt.setdefault(e[0], r.lsn)
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
            elif r.kind == 7 and p["begin_lsn"] == A:
                next_txn = max(next_txn, p["next_txn_id"])
                for (tid, last, undo, _state) in p["txns"]:
                    if tid not in finished and tid not in losers:
                        losers[tid] = (last, undo)
                for (pid, rl) in p["dirty"]:
                    dpt[pid] = min(dpt.get(pid, rl), rl)
        self.next_txn = next_txn
        self.losers_found = sorted(losers)
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
                        if e[0] not in order:
                            order.append(e[0])
                    for pid in order:
                        self.check(pid, True)
                        if self.lsn_of(pid) < r.lsn:
                            pg = self.pages[pid]
                            for e in r.parsed["edits"]:
                                if e[0] == pid:
                                    pg[e[1]:e[1] + len(e[3])] = e[3]
                            self.set_lsn(pid, r.lsn)
                            self.redo_applied += 1
                elif r.kind == 8:
                    p = r.parsed
                    pid = p["page_id"]
                    self.check(pid, True)
                    if self.lsn_of(pid) < r.lsn:
                        pg = bytearray(self.P)
                        pg[4] = p["page_kind"]
                        struct.pack_into("<HQQII", pg, 6, 1, pid, r.lsn, p["a"], p["b"])
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
                    self.check(e[0], False)
                for e in reversed(r.parsed["edits"]):
                    if e[2] is not None:
                        self.pages[e[0]][e[1]:e[1] + len(e[2])] = e[2]
                        self.changed.add(e[0])
                state[t] = r.prev_lsn
            elif r.kind == 2:
                state[t] = r.parsed["undo_next"]
            else:
                state[t] = r.prev_lsn


# ---------------------------------------------------------------- sections 14.4 - 14.8: the catalog


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


def read_catalog(arena, rec, dim, rep):
    P = arena.P
    ppf = arena.ppf
    # page counts, counting the files recovery needed
    counts = {}
    for sp in (SPACE_CATALOG, SPACE_VECTOR):
        nfiles = arena.file_count(sp)
        for pid in rec.pages:
            if space_of(pid) == sp:
                nfiles = max(nfiles, page_no(pid) // ppf + 1)
        counts[sp] = nfiles * ppf
    stride = -(-dim * 4 // 16) * 16
    slots_per_page = (P - 64) // stride

    cache = {}

    def get(pid):
        """(image, reason-if-invalid)."""
        if pid in rec.pages:
            return rec.pages[pid], None
        if pid not in cache:
            img = arena.read_page(pid)
            cache[pid] = (img, page_valid(img, pid))
        return cache[pid]

    entries = []   # (id, vec_pid, vslot, pairs, where)
    used_overflow = {}
    for no in range(counts[SPACE_CATALOG]):
        pid = (SPACE_CATALOG << 56) | no
        img, why = get(pid)
        if why is not None:
            rep.dmg("catalog_page", "catalog page %#x is not valid: %s (dropped)" % (pid, why), page="%#018x" % pid)
            continue
        if img[4] != 2:
            continue
        n, d = struct.unpack_from("<II", img, 24)
        problems = []
        page_entries = []
        if not (64 + 8 * n <= d <= P):
            problems.append("slot count %d / data start %d inconsistent" % (n, d))
        else:
            extents = []
            for i in range(n):
                off, ln = struct.unpack_from("<II", img, 64 + 8 * i)
                if ln == 0:
                    continue
                if off < d or off + ln > P:
                    problems.append("slot %d extent [%d,+%d) outside the entry data" % (i, off, ln))
                    continue
                extents.append((off, off + ln, i))
                e = img[off:off + ln]
                if ln < 32:
                    problems.append("slot %d entry shorter than 32 bytes" % i)
                    continue
                vpid, vslot, flags, idl, ml, res, ovf = struct.unpack_from("<QIHHIIQ", e, 0)
                if not (1 <= idl <= 1024 and idl <= ln - 32):
                    problems.append("slot %d id length %d" % (i, idl))
                    continue
                try:
                    ident = bytes(e[32:32 + idl]).decode("utf-8")
                except UnicodeDecodeError:
                    problems.append("slot %d id not UTF-8" % i)
                    continue
                if ml > 65536 or res != 0:
                    problems.append("slot %d meta_len %d / reserved %d" % (i, ml, res))
                    continue
                if space_of(vpid) != SPACE_VECTOR or page_no(vpid) >= counts[SPACE_VECTOR]:
                    problems.append("slot %d vector page id %#x out of range" % (i, vpid))
                    continue
                if vslot >= slots_per_page:
                    problems.append("slot %d vector slot %d >= %d" % (i, vslot, slots_per_page))
                    continue
                if flags == 0:
                    if ln != 32 + idl + ml:
                        problems.append("slot %d inline entry length %d != %d" % (i, ln, 32 + idl + ml))
                        continue
                    try:
                        pairs = decode_metadata(bytes(e[32 + idl:32 + idl + ml]))
                    except (ValueError, UnicodeDecodeError) as ex:
                        problems.append("slot %d inline metadata invalid: %s" % (i, ex))
                        continue
                    page_entries.append([ident, vpid, vslot, pairs, (pid, i), None])
                elif flags == 1:
                    if ln != 32 + idl:
                        problems.append("slot %d overflow entry length %d != %d" % (i, ln, 32 + idl))
                        continue
                    page_entries.append([ident, vpid, vslot, None, (pid, i), (ovf, ml)])
                else:
                    problems.append("slot %d unknown entry flags %#x" % (i, flags))
            extents.sort()
            for a, b in zip(extents, extents[1:]):
                if b[0] < a[1]:
                    problems.append("slots %d and %d overlap" % (a[2], b[2]))
        if problems:
            rep.dmg("catalog_page", "catalog page %#x is not a valid catalog page (dropped): %s" %
                    (pid, "; ".join(problems[:5])), page="%#018x" % pid)
            continue
        entries.extend(page_entries)

    # overflow chains (14.6)
    good = []
    for ent in entries:
        if ent[5] is None:
            good.append(ent)
            continue
        first, m = ent[5]
        maxpages = max(1, -(-m // (P - 64)))
        chain = []
        data = []
        cur = first
        bad = None
        while cur != 0:
            if not is_page_id(cur) or space_of(cur) != SPACE_CATALOG or page_no(cur) >= counts[SPACE_CATALOG]:
                bad = "chain page id %#x not a catalog page in range" % cur
                break
            if cur in chain or cur in used_overflow:
                bad = "overflow page %#x appears twice" % cur
                break
            chain.append(cur)
            if len(chain) > maxpages:
                bad = "chain longer than %d pages" % maxpages
                break
            img, why = get(cur)
            if why is not None:
                bad = "overflow page %#x not valid: %s" % (cur, why)
                break
            if img[4] != 3:
                bad = "chain page %#x has kind %d" % (cur, img[4])
                break
            a = struct.unpack_from("<I", img, 24)[0]
            if a > P - 64:
                bad = "overflow page %#x a = %d" % (cur, a)
                break
            data.append(bytes(img[64:64 + a]))
            cur = struct.unpack_from("<Q", img, 32)[0]
        if bad is None:
            blob = b"".join(data)
            if len(blob) != m:
                bad = "chain holds %d bytes, meta_len %d" % (len(blob), m)
            else:
                try:
                    ent[3] = decode_metadata(blob)
                except (ValueError, UnicodeDecodeError) as ex:
                    bad = "chain metadata invalid: %s" % ex
        if bad is not None:
            rep.dmg("overflow_chain", "entry %r: %s (entry dropped)" % (ent[0], bad), id=ent[0])
            continue
        for c in chain:
            used_overflow[c] = ent[0]
        good.append(ent)

    # cross-page rules
    ids = {}
    slots = {}
    final = []
    for ent in good:
        if ent[0] in ids:
            rep.dmg("duplicate_id", "id %r appears in two entries (second dropped)" % ent[0], id=ent[0])
            continue
        if (ent[1], ent[2]) in slots:
            rep.dmg("duplicate_slot", "vector page %#x slot %d named by %r and %r (second dropped)" %
                    (ent[1], ent[2], slots[(ent[1], ent[2])], ent[0]), id=ent[0])
            continue
        ids[ent[0]] = True
        slots[(ent[1], ent[2])] = ent[0]
        final.append(ent)

    # vectors (14.3)
    vectors = {}
    for ident, vpid, vslot, pairs, where, _ in final:
        img, why = get(vpid)
        if why is not None:
            rep.dmg("vector_page", "vector page %#x (holding %r) is not valid: %s (entry dropped)" %
                    (vpid, ident, why), page="%#018x" % vpid, id=ident)
            continue
        if img[4] != 1:
            rep.notes.append("vector of %r lies in page %#x of kind %d" % (ident, vpid, img[4]))
        off = 64 + vslot * stride
        vals = list(struct.unpack_from("<%df" % dim, img, off))
        out = []
        for v in vals:
            if math.isfinite(v):
                out.append(v)
            else:
                rep.dmg("vector_value", "vector %r holds a non-finite value" % ident, id=ident)
                out.append(repr(v))
        meta = {}
        for k, v in pairs:
            meta[k] = v
        vectors[ident] = {
            "vector": out,
            "metadata": meta,
            "metadata_pairs": pairs,
            "page": "%#018x" % vpid,
            "slot": vslot,
            "catalog": ["%#018x" % where[0], where[1]],
        }
    return vectors, {"catalog_pages": counts[SPACE_CATALOG], "vector_pages": counts[SPACE_VECTOR],
                     "stride": stride, "slots_per_page": slots_per_page}


# ---------------------------------------------------------------- main


def read_epoch_file(waldir):
    path = os.path.join(waldir, "EPOCH")
    if not os.path.exists(path):
        return {"present": False, "epoch": 0}
    with open(path, "rb") as fh:
        b = fh.read(16)
    ok = (len(b) == 16 and b[0:4] == b"VEPC" and crc32c(b[0:8]) == struct.unpack_from("<I", b, 8)[0]
          and b[12:16] == bytes(4))
    return {"present": True, "valid": ok, "epoch": struct.unpack_from("<I", b, 4)[0] if len(b) >= 8 else None}


def run(store, mode, take_lock, full_payloads):
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

        arena = Arena(store, P, S, rep)
        dw, dwinfo = read_doublewrite(store, P, rep)
        out["doublewrite"] = dwinfo
        rec = Recovery(arena, dw, P, rep, mode == "skip")
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
            "failed": rec.failed,
        }
        vectors, cinfo = read_catalog(arena, rec, control["dimension"], rep)
        out["catalog"] = cinfo
        out["vectors"] = vectors
        if rec.failed:
            rep.err("recovery", "recovery failed (see damage); the contents shown are a best effort")
    except StoreError as e:
        rep.err("error", str(e))
    except Exception as e:  # noqa: BLE001 - a reader must report, never crash
        rep.err("internal", "%s: %s" % (type(e).__name__, e))
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


def main(argv):
    mode = "tolerate"
    take_lock = True
    full = True
    args = []
    it = iter(argv[1:])
    for a in it:
        if a == "--mode":
            mode = next(it, "")
        elif a.startswith("--mode="):
            mode = a.split("=", 1)[1]
        elif a == "--no-lock":
            take_lock = False
        elif a == "--no-payloads":
            full = False
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            args.append(a)
    if len(args) != 1 or mode not in ("tolerate", "strict", "skip"):
        sys.stderr.write("usage: read_store.py [--mode tolerate|strict|skip] [--no-lock] [--no-payloads] DIR\n")
        return 2
    out = run(args[0], mode, take_lock, full)
    sys.stdout.write(json.dumps(out, ensure_ascii=False, allow_nan=False))
    sys.stdout.write("\n")
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
