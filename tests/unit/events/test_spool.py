"""The on-disk event spool: FIFO order, rotation, restart, its bound, torn and damaged records."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from reidd.events.spool import Spool, SpoolFull, SpoolLocked


# ---------------------------------------------------------------------------------------------- spool
def test_spool_fifo_rotation_restart_and_bound(tmp_path):
    sp = Spool(tmp_path / "s", max_bytes=20_000, segment_bytes=400)
    recs = [f"record-{i:04d}-".encode() * 3 for i in range(60)]
    for r in recs[:3]:
        sp.append(r)
    assert sp.append_many(recs[3:]) == 57
    assert len(sp) == 60 and len(list((tmp_path / "s").glob("*.seg"))) > 3
    assert sp.peek(5) == recs[:5]
    sp.commit(5)
    with pytest.raises(SpoolLocked):
        Spool(tmp_path / "s")
    sp.close()
    sp = Spool(tmp_path / "s", max_bytes=20_000, segment_bytes=400)  # cursor survives a restart
    assert len(sp) == 55 and sp.peek(2) == recs[5:7]
    segs_before = len(list((tmp_path / "s").glob("*.seg")))
    sp.commit(40)
    assert sp.peek(100) == recs[45:]
    assert len(list((tmp_path / "s").glob("*.seg"))) < segs_before  # consumed segments deleted
    sp.commit(15)
    assert len(sp) == 0 and sp.disk_bytes == 0
    n = sp.append_many([b"x" * 100] * 500)  # 8-byte header per record: 185 fit in 20,000 bytes
    assert n == 20_000 // 108 and len(sp) == n and sp.disk_bytes <= 20_000
    with pytest.raises(SpoolFull):
        sp.append(b"x" * 100)
    assert len(sp) == n
    sp.close()


def test_spool_torn_last_record_is_ignored(tmp_path):
    sp = Spool(tmp_path / "s")
    for r in (b"alpha", b"beta", b"gamma"):
        sp.append(r)
    sp.close()
    seg = sorted((tmp_path / "s").glob("*.seg"))[-1]
    with open(seg, "ab") as fh:  # a record whose header promises 100 bytes, cut short by a crash
        fh.write((100).to_bytes(4, "big") + (0).to_bytes(4, "big") + b"partial")
    sp = Spool(tmp_path / "s")
    assert len(sp) == 3 and sp.torn_records == 1 and sp.peek(10) == [b"alpha", b"beta", b"gamma"]
    sp.append(b"delta")  # appends continue after the cut
    assert sp.peek(10) == [b"alpha", b"beta", b"gamma", b"delta"]
    sp.close()
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF  # corrupt the last record's payload: CRC mismatch
    seg.write_bytes(bytes(data))
    sp = Spool(tmp_path / "s")
    assert sp.peek(10) == [b"alpha", b"beta", b"gamma"] and sp.torn_records == 1
    sp.close()


def test_record_damaged_on_disk_is_dropped_not_raised(tmp_path: Path, caplog):
    """A record that changes on disk after it was written (bit rot, a stray writer) fails its CRC on read:
    logged once, it and the rest of its segment dropped, no exception, the depth corrected."""
    sp = Spool(tmp_path / "s", max_bytes=10**6, segment_bytes=64 * 1024)
    try:
        recs = [f"rec-{i:03d}".encode() * 10 for i in range(10)]
        assert sp.append_many(recs) == 10
        seg = sorted((tmp_path / "s").glob("*.seg"))[-1]
        with open(seg, "r+b") as fh:  # flip a byte of the 4th record's payload
            fh.seek(3 * (8 + len(recs[0])) + 8 + 5)
            b = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([b[0] ^ 0xFF]))
        with caplog.at_level(logging.ERROR, logger="reidd.events.spool"):
            assert sp.peek(100) == recs[:3]
        assert len(sp) == 3 and sp.torn_records == 1
        assert sum("damaged record" in r.getMessage() for r in caplog.records) == 1
        sp.commit(3)
        assert sp.append_many([b"after"]) == 1 and sp.peek(10) == [b"after"]
    finally:
        sp.close()
