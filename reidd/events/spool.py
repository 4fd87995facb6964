"""A durable, bounded FIFO of byte records on disk.

Layout of the spool folder::

    000000000001.seg ...   append-only segment files of records
    cursor.json            {"segment": N, "offset": B}: first unconsumed byte, replaced atomically
    .lock                  flock'd by the one process using the folder

A record is ``length (u32 BE) | crc32 (u32 BE) | payload``. Appends are fsync'd before they return;
the cursor is written to a temporary file, fsync'd and renamed. After a crash, a torn or corrupt tail
(short header, short payload or CRC mismatch) is detected when the spool is opened, logged, counted in
``torn_records`` and cut off; everything before it is kept. Consumed segments are deleted. The bound
``max_bytes`` applies to the segment files on disk: an append that would pass it raises
:class:`SpoolFull` (the caller decides what to do; nothing is dropped silently here).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
MAX_RECORD_BYTES = 64 * 1024 * 1024
_CURSOR = "cursor.json"
_SUFFIX = ".seg"


class SpoolFull(Exception):
    """The spool has no room for the record (its ``max_bytes`` bound would be passed)."""


class SpoolLocked(RuntimeError):
    """Another live process holds the spool folder."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Durable FIFO of ``bytes`` records under ``directory``, at most ``max_bytes`` of segment files."""

    def __init__(self, directory: str | Path, max_bytes: int = 512 * 1024 * 1024, segment_bytes: int | None = None):
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be > 0, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = int(segment_bytes or min(16 * 1024 * 1024, max(64 * 1024, self.max_bytes // 8)))
        self.torn_records = 0
        self._lock = threading.RLock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLocked(f"spool folder {self.directory} is in use by another process") from None
        self._sizes: dict[int, int] = {}  # segment -> valid bytes
        self._counts: dict[int, int] = {}  # segment -> unconsumed records
        self._peeked: list[tuple[int, int]] = []  # (segment, end offset) of the records of the last peek
        self._closed = False
        self._recover()

    # ------------------------------------------------------------------ opening
    def _seg_path(self, seg: int) -> Path:
        return self.directory / f"{seg:012d}{_SUFFIX}"

    def _read_cursor(self) -> tuple[int, int] | None:
        p = self.directory / _CURSOR
        if not p.exists():
            return None
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
            return int(obj["segment"]), int(obj["offset"])
        except (ValueError, KeyError, TypeError, OSError) as exc:
            log.error("spool %s: unreadable cursor file (%s); restarting from the oldest segment", self.directory, exc)
            return None

    def _recover(self) -> None:
        segs = sorted(int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        cursor = self._read_cursor()
        if cursor is not None and cursor[0] in segs:
            for seg in [s for s in segs if s < cursor[0]]:  # consumed, deletion interrupted by a crash
                self._seg_path(seg).unlink(missing_ok=True)
            segs = [s for s in segs if s >= cursor[0]]
        else:
            cursor = (segs[0], 0) if segs else (1, 0)
        self._head, self._offset = cursor
        for i, seg in enumerate(segs):
            start = self._offset if seg == self._head else 0
            self._sizes[seg], self._counts[seg] = self._scan(seg, start, last=i == len(segs) - 1)
        if segs:
            self._offset = min(self._offset, self._sizes[self._head])
        if not segs:
            self._sizes[self._head], self._counts[self._head] = 0, 0
            self._seg_path(self._head).touch()
        self._tail = max(self._sizes)
        self._writer = open(self._seg_path(self._tail), "ab")
        self._write_cursor()

    def _scan(self, seg: int, start: int, last: bool) -> tuple[int, int]:
        """Count valid records from ``start``; cut off a torn/corrupt tail. Returns (valid size, count)."""
        path = self._seg_path(seg)
        size = path.stat().st_size
        pos, count = min(start, size), 0
        with open(path, "rb") as fh:
            fh.seek(pos)
            while pos < size:
                header = fh.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                length, crc = _HEADER.unpack(header)
                if length > MAX_RECORD_BYTES:
                    break
                payload = fh.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    break
                pos += _HEADER.size + length
                count += 1
        if pos < size:
            self.torn_records += 1
            level = logging.WARNING if last else logging.ERROR
            log.log(level, "spool %s: ignoring %d bytes of a torn/corrupt record at offset %d", path, size - pos, pos)
            with open(path, "r+b") as fh:
                fh.truncate(pos)
                os.fsync(fh.fileno())
        return pos, count

    def _write_cursor(self) -> None:
        tmp = self.directory / (_CURSOR + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"segment": self._head, "offset": self._offset}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / _CURSOR)
        _fsync_dir(self.directory)

    # ------------------------------------------------------------------ API
    def __len__(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    @property
    def disk_bytes(self) -> int:
        """Bytes of segment files on disk (what ``max_bytes`` bounds)."""
        with self._lock:
            return sum(self._sizes.values())

    def append(self, record: bytes) -> None:
        """Append one record durably; raise :class:`SpoolFull` when it does not fit."""
        if self.append_many([record]) != 1:
            raise SpoolFull(f"spool {self.directory} is full ({self.disk_bytes} of {self.max_bytes} bytes)")

    def append_many(self, records: list[bytes]) -> int:
        """Append records in order with one fsync; stop at the first that does not fit. Returns the count written."""
        with self._lock:
            self._check_open()
            written = 0
            for rec in records:
                need = _HEADER.size + len(rec)
                if len(rec) > MAX_RECORD_BYTES or self.disk_bytes + need > self.max_bytes:
                    break
                if self._sizes[self._tail] > 0 and self._sizes[self._tail] + need > self.segment_bytes:
                    self._rotate()
                self._writer.write(_HEADER.pack(len(rec), zlib.crc32(rec)))
                self._writer.write(rec)
                self._sizes[self._tail] += need
                self._counts[self._tail] += 1
                written += 1
            if written:
                self._writer.flush()
                os.fsync(self._writer.fileno())
            return written

    def _rotate(self) -> None:
        self._writer.flush()
        os.fsync(self._writer.fileno())
        self._writer.close()
        self._tail += 1
        self._sizes[self._tail], self._counts[self._tail] = 0, 0
        self._writer = open(self._seg_path(self._tail), "ab")
        _fsync_dir(self.directory)

    def peek(self, n: int) -> list[bytes]:
        """The first ``n`` unconsumed records (fewer if the spool holds fewer), without consuming them."""
        with self._lock:
            self._check_open()
            out: list[bytes] = []
            self._peeked = []
            seg, off = self._head, self._offset
            while len(out) < n and seg <= self._tail:
                if off >= self._sizes.get(seg, 0):
                    seg, off = seg + 1, 0
                    continue
                with open(self._seg_path(seg), "rb") as fh:
                    fh.seek(off)
                    while len(out) < n and off < self._sizes[seg]:
                        length, _crc = _HEADER.unpack(fh.read(_HEADER.size))
                        out.append(fh.read(length))
                        off += _HEADER.size + length
                        self._peeked.append((seg, off))
            return out

    def commit(self, n: int) -> None:
        """Consume the first ``n`` records (normally the ones the last :meth:`peek` returned)."""
        with self._lock:
            self._check_open()
            if n <= 0:
                return
            if n > len(self):
                raise ValueError(f"spool commit({n}) but only {len(self)} records are waiting")
            if n > len(self._peeked):
                self.peek(n)
            consumed = self._peeked[:n]
            self._peeked = []
            for s, _end in consumed:
                self._counts[s] -= 1
            self._head, self._offset = consumed[-1]
            if len(self) == 0:
                if self._sizes[self._tail] > 0:
                    self._rotate()  # a fresh, empty segment, so every consumed one can go
                self._head, self._offset = self._tail, 0
            elif self._offset >= self._sizes[self._head] and self._head < self._tail:
                self._head, self._offset = self._head + 1, 0
            self._write_cursor()
            for s in [s for s in self._sizes if s < self._head]:
                self._seg_path(s).unlink(missing_ok=True)
                del self._sizes[s], self._counts[s]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"spool {self.directory} is closed")

    def close(self) -> None:
        """Flush, close the files and release the folder lock."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._writer.flush()
            os.fsync(self._writer.fileno())
            self._writer.close()
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
