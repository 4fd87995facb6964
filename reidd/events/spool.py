"""A durable, bounded FIFO of byte records on disk.

Layout of the spool folder::

    000000000001.seg ...   append-only segment files of records
    cursor.json            {"segment": N, "offset": B}: first unconsumed byte, replaced atomically
    .lock                  flock'd by the one process using the folder

A record is ``length (u32 BE) | crc32 (u32 BE) | payload``. Appends are written with ``pwrite`` at the
end of the last valid record and fsync'd before they return; the cursor is written to a temporary file,
fsync'd and renamed. After a crash, a torn or corrupt tail (short header, short payload or CRC mismatch)
is detected when the spool is opened, logged, counted in ``torn_records`` and cut off; everything before
it is kept. Consumed segments are deleted. The bound ``max_bytes`` applies to the segment files on disk:
an append that would pass it is refused (:meth:`Spool.append_many` returns the count written,
:meth:`Spool.append` raises :class:`SpoolFull`; the caller decides what to do, nothing is dropped
silently here).

A failing disk (``ENOSPC``, ``EDQUOT``, ``EIO``, ...) is a state, not an exception: an append that hits
it keeps the records that were completely written and made durable, cuts off the partial one (so no
torn record is ever left behind for a later read), returns the count written and sets
:attr:`Spool.write_error`. While it is set, every append first checks that a new block can be had
(:func:`probe_free_block`) and is refused without writing when not. The state is logged once when it
starts ("spool: disk full under DIR (ENOSPC): ...") and once when a later append succeeds again
("spool: writable again under DIR ...").
Reads verify every record's length and CRC too: a record that is damaged on disk after it was written
is logged and dropped with what follows it in its segment, never raised as a parse error.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
MAX_RECORD_BYTES = 64 * 1024 * 1024
_CURSOR = "cursor.json"
_SUFFIX = ".seg"

# what an errno means for an operator, and what ends the state
_ERRNO_WORDS = {
    errno.ENOSPC: ("disk full", "space returns"),
    errno.EDQUOT: ("disk quota exceeded", "space returns"),
    errno.EIO: ("I/O error", "writes succeed again"),
    errno.EROFS: ("read-only file system", "writes succeed again"),
}


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


_PROBE_BYTES = 4096  # one block on the usual file systems (ext4, xfs, tmpfs pages)


def probe_free_block(directory: str | Path) -> None:
    """Raise the ``OSError`` the disk gives for a new block under ``directory`` (ENOSPC while it is full).

    Used while writes fail: a small write can still succeed in the unused end of a file's last block on a
    full disk, and retrying real writes there would flip between "full" and "writable" with every record
    size. A scratch file that needs a block of its own only succeeds once space has really returned."""
    path = Path(directory) / ".probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(b"\0" * _PROBE_BYTES)
        while view:
            n = os.write(fd, view)
            if n <= 0:
                raise OSError(errno.EIO, "write returned 0 bytes")
            view = view[n:]
    finally:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass


def errno_name(exc: OSError) -> str:
    """``ENOSPC`` for an ``OSError`` with errno 28; the class name when it has no errno."""
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def describe_write_error(exc: OSError, directory: str | Path) -> str:
    """``disk full under /x (ENOSPC)``: the words an operator reads in logs and in readiness."""
    what = _ERRNO_WORDS.get(exc.errno or 0, (exc.strerror or str(exc), ""))[0]
    return f"{what} under {directory} ({errno_name(exc)})"


class Spool:
    """Durable FIFO of ``bytes`` records under ``directory``, at most ``max_bytes`` of segment files.

    ``len(spool)`` is the number of records waiting; it is kept as one counter, read without a lock, so
    every reporter (metrics, readiness) can read it cheaply and sees the same number.
    """

    def __init__(self, directory: str | Path, max_bytes: int = 512 * 1024 * 1024, segment_bytes: int | None = None):
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be > 0, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = int(segment_bytes or min(16 * 1024 * 1024, max(64 * 1024, self.max_bytes // 8)))
        self.torn_records = 0
        self.write_error: OSError | None = None  # set while appends fail on the disk; None while writable
        self.write_error_since: float | None = None  # time.monotonic() when the current write error began
        self.refused_while_unwritable = 0  # records not written because of the current write error
        self.last_refusal: str | None = None  # why the last append wrote fewer records than given: bound/error
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
        self._depth = 0  # sum of _counts: records waiting
        self._disk = 0  # sum of _sizes: bytes of segment files
        self._peeked: list[tuple[int, int]] = []  # (segment, end offset) of the records of the last peek
        self._fd = -1  # the last segment, opened for pwrite at _sizes[_tail]
        self._tail_dirty = False  # bytes past _sizes[_tail] may be on disk (a truncation failed)
        self._cursor_dirty = False  # the cursor on disk is behind the one in memory (its write failed)
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
        self._tail = max(self._sizes)
        self._depth = sum(self._counts.values())
        self._disk = sum(self._sizes.values())
        self._fd = os.open(self._seg_path(self._tail), os.O_WRONLY | os.O_CREAT, 0o644)
        self._save_cursor()

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
            try:
                with open(path, "r+b") as fh:
                    fh.truncate(pos)
                    os.fsync(fh.fileno())
            except OSError as exc:  # the bytes stay on disk; they are past the valid size and never read
                log.error("spool %s: could not cut off the torn record (%s)", path, exc)
                if last:
                    self._tail_dirty = True
        return pos, count

    def _write_cursor(self) -> None:
        tmp = self.directory / (_CURSOR + ".tmp")
        data = json.dumps({"segment": self._head, "offset": self._offset}).encode("utf-8")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.directory / _CURSOR)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.directory)

    def _save_cursor(self) -> None:
        """Write the cursor; on a failing disk keep going (what it costs after a crash: the records consumed
        since are read again, at-least-once) and retry with the next append or commit."""
        try:
            self._write_cursor()
        except OSError as exc:
            if not self._cursor_dirty:
                log.warning("spool %s: cursor not saved (%s: %s); retrying with the next write",
                            self.directory, errno_name(exc), exc.strerror or exc)
            self._cursor_dirty = True
            return
        if self._cursor_dirty:
            log.info("spool %s: cursor saved again", self.directory)
        self._cursor_dirty = False

    # ------------------------------------------------------------------ API
    def __len__(self) -> int:
        return self._depth

    @property
    def disk_bytes(self) -> int:
        """Bytes of segment files on disk (what ``max_bytes`` bounds)."""
        return self._disk

    @property
    def writable(self) -> bool:
        """False while the last append failed on the disk (see :attr:`write_error`)."""
        return self.write_error is None

    def write_error_text(self) -> str | None:
        """``disk full under /x (ENOSPC)`` while appends fail on the disk, else None."""
        exc = self.write_error
        return None if exc is None else describe_write_error(exc, self.directory)

    def append(self, record: bytes) -> None:
        """Append one record durably; raise :class:`SpoolFull` when it does not fit, the disk's
        ``OSError`` (errno kept) when the disk refuses it."""
        if self.append_many([record]) != 1:
            if self.last_refusal == "error" and self.write_error is not None:
                exc = self.write_error
                raise OSError(exc.errno, f"spool {self.directory}: {exc.strerror or exc}")
            raise SpoolFull(f"spool {self.directory} is full ({self.disk_bytes} of {self.max_bytes} bytes)")

    def append_many(self, records: list[bytes]) -> int:
        """Append records in order, durably; stop at the first that does not fit or that the disk refuses.

        Returns the count written (a prefix of ``records``); :attr:`last_refusal` says why it is short
        (``"bound"``: ``max_bytes`` reached; ``"error"``: the disk failed, see :attr:`write_error`)."""
        with self._lock:
            self._check_open()
            fit: list[bytes] = []
            room = self.max_bytes - self._disk
            for rec in records:
                need = _HEADER.size + len(rec)
                if len(rec) > MAX_RECORD_BYTES or need > room:
                    break
                fit.append(rec)
                room -= need
            self.last_refusal = None if len(fit) == len(records) else "bound"
            if not fit:
                return 0
            written, err = 0, None
            try:
                if self.write_error is not None:  # refuse until a new block can be had (see probe_free_block)
                    probe_free_block(self.directory)
                self._prepare_tail()
                i = 0
                while i < len(fit):
                    need = _HEADER.size + len(fit[i])
                    if self._sizes[self._tail] > 0 and self._sizes[self._tail] + need > self.segment_bytes:
                        self._rotate()
                    j, size = i + 1, self._sizes[self._tail] + need
                    while j < len(fit) and size + _HEADER.size + len(fit[j]) <= self.segment_bytes:
                        size += _HEADER.size + len(fit[j])
                        j += 1
                    n, err = self._write_chunk(fit[i:j])
                    written += n
                    if err is not None:
                        break
                    i = j
            except OSError as exc:  # rotation or re-opening the last segment failed
                err = exc
            if err is not None:
                self.last_refusal = "error"
                self._enter_error(err, len(records) - written)
            elif self.write_error is not None:
                self._leave_error()
            if written and self._cursor_dirty:
                self._save_cursor()
            return written

    def _write_chunk(self, recs: list[bytes]) -> tuple[int, OSError | None]:
        """Write ``recs`` at the end of the last segment and fsync. On a failure keep only the records that
        were completely written and made durable, cut off the rest. Returns (records kept, error)."""
        start = self._sizes[self._tail]
        buf = b"".join(_HEADER.pack(len(r), zlib.crc32(r)) + r for r in recs)
        done, err = 0, None
        view = memoryview(buf)
        try:
            while done < len(buf):
                n = os.pwrite(self._fd, view[done:], start + done)
                if n <= 0:
                    raise OSError(errno.EIO, "write returned 0 bytes")
                done += n
        except OSError as exc:
            err = exc
        keep, count = 0, 0
        if err is None:
            keep, count = done, len(recs)
        else:
            for r in recs:
                if keep + _HEADER.size + len(r) > done:
                    break
                keep += _HEADER.size + len(r)
                count += 1
        try:
            if keep < done:  # a partial record: never leave it for a later read
                os.ftruncate(self._fd, start + keep)
            if count:
                os.fsync(self._fd)
        except OSError as exc:  # not durable: undo the whole chunk
            err = err or exc
            keep, count = 0, 0
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._tail_dirty = True
        if count:
            self._sizes[self._tail] += keep
            self._counts[self._tail] += count
            self._disk += keep
            self._depth += count
        return count, err

    def _prepare_tail(self) -> None:
        """After a write error, re-open the last segment (the path may now lead elsewhere) and cut off
        whatever lies past its valid end."""
        if self.write_error is None and not self._tail_dirty:
            return
        tail = self._tail
        path = self._seg_path(tail)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size > self._sizes[tail] and (self._tail_dirty or os.path.isfile(path)):
                os.ftruncate(fd, self._sizes[tail])
        except OSError:
            os.close(fd)
            raise
        self._tail_dirty = False
        old, self._fd = self._fd, fd
        if old >= 0:
            try:
                os.close(old)
            except OSError:
                pass
        if size < self._sizes[tail] and os.path.isfile(path):  # the file lost data meanwhile: count what is left
            start = self._offset if tail == self._head else 0
            valid, count = self._scan(tail, start, last=True)
            log.error("spool %s: the last segment shrank to %d bytes; %d record(s) lost", path, size,
                      self._counts[tail] - count)
            self._depth -= self._counts[tail] - count
            self._disk -= self._sizes[tail] - valid
            self._sizes[tail], self._counts[tail] = valid, count

    def _enter_error(self, exc: OSError, refused: int) -> None:
        prev = self.write_error
        self.write_error = exc
        if prev is None or prev.errno != exc.errno:
            self.write_error_since = time.monotonic()
            self.refused_while_unwritable = refused
            until = _ERRNO_WORDS.get(exc.errno or 0, ("", "writes succeed again"))[1]
            log.error("spool: %s: %d event(s) refused until %s", describe_write_error(exc, self.directory),
                      refused, until)
        else:
            self.refused_while_unwritable += refused

    def _leave_error(self) -> None:
        exc, since = self.write_error, self.write_error_since or time.monotonic()
        self.write_error, self.write_error_since = None, None
        log.warning("spool: writable again under %s after %.1f s of %s; %d event(s) were refused meanwhile",
                    self.directory, time.monotonic() - since, errno_name(exc), self.refused_while_unwritable)
        self.refused_while_unwritable = 0

    def _rotate(self) -> None:
        new = self._tail + 1
        path = self._seg_path(new)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size:
                os.ftruncate(fd, 0)
            _fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        old, self._fd = self._fd, fd
        try:
            os.close(old)
        except OSError:
            pass
        self._tail = new
        self._sizes[new], self._counts[new] = 0, 0
        self._tail_dirty = False

    def peek(self, n: int) -> list[bytes]:
        """The first ``n`` unconsumed records (fewer if the spool holds fewer), without consuming them.

        Every record is checked (length and CRC); one that is damaged on disk is logged, counted in
        ``torn_records`` and dropped together with the records after it in its segment."""
        with self._lock:
            self._check_open()
            out: list[bytes] = []
            self._peeked = []
            seg, off = self._head, self._offset
            while len(out) < n and seg <= self._tail:
                if off >= self._sizes.get(seg, 0):
                    seg, off = seg + 1, 0
                    continue
                read_here = 0
                with open(self._seg_path(seg), "rb") as fh:
                    fh.seek(off)
                    while len(out) < n and off < self._sizes[seg]:
                        bad = None
                        header = fh.read(_HEADER.size)
                        if len(header) < _HEADER.size:
                            bad = "short header"
                        else:
                            length, crc = _HEADER.unpack(header)
                            payload = fh.read(length) if length <= MAX_RECORD_BYTES else b""
                            if length > MAX_RECORD_BYTES or off + _HEADER.size + length > self._sizes[seg]:
                                bad = f"length {length} past the valid end"
                            elif len(payload) < length:
                                bad = "short payload"
                            elif zlib.crc32(payload) != crc:
                                bad = "CRC mismatch"
                        if bad is not None:
                            self._drop_damaged(seg, off, read_here, bad)
                            break
                        out.append(payload)
                        off += _HEADER.size + length
                        read_here += 1
                        self._peeked.append((seg, off))
            return out

    def _drop_damaged(self, seg: int, off: int, read_here: int, why: str) -> None:
        """Segment ``seg`` is damaged at ``off``: forget it from there (``read_here`` records before it
        were read in this pass, from the head offset for the head segment, else from 0)."""
        lost = self._counts[seg] - read_here
        self.torn_records += 1
        log.error("spool %s: damaged record at offset %d (%s); dropping the %d record(s) from there on",
                  self._seg_path(seg), off, why, lost)
        self._counts[seg] = read_here
        self._depth -= lost
        self._disk -= self._sizes[seg] - off
        self._sizes[seg] = off
        try:
            if seg == self._tail:
                os.ftruncate(self._fd, off)
            else:
                with open(self._seg_path(seg), "r+b") as fh:
                    fh.truncate(off)
        except OSError:
            if seg == self._tail:
                self._tail_dirty = True

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
            self._depth -= len(consumed)
            self._head, self._offset = consumed[-1]
            if self._depth == 0:
                if self._sizes[self._tail] > 0:
                    try:
                        self._rotate()  # a fresh, empty segment, so every consumed one can go
                    except OSError as exc:  # keep the consumed last segment; retried at the next commit
                        log.debug("spool %s: new segment not created (%s)", self.directory, exc)
                self._head = self._tail
                self._offset = self._sizes[self._tail]
            elif self._offset >= self._sizes[self._head] and self._head < self._tail:
                self._head, self._offset = self._head + 1, 0
            self._save_cursor()
            # deleting consumed segments also frees space on a full disk; with the cursor not saved, a
            # restart re-reads the head segment from its start (at-least-once, never a lost record)
            for s in [s for s in self._sizes if s < self._head]:
                self._seg_path(s).unlink(missing_ok=True)
                self._disk -= self._sizes[s]
                del self._sizes[s], self._counts[s]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"spool {self.directory} is closed")

    def close(self) -> None:
        """Close the files and release the folder lock (every append was fsync'd when it returned)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._cursor_dirty:
                self._save_cursor()
            try:
                os.close(self._fd)
            except OSError:
                pass
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
