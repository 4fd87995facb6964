"""Freed heap pages go back to the operating system while the daemon runs (reidd.device.HeapTrimmer), measured
in fresh interpreters: a thread allocates 120 frame-sized buffers with small native allocations in between, as
a camera reader does, then frees the buffers. Without the trimmer all of them stay resident (glibc only gives
back the top of a heap); with it they are gone within its interval, and stop() ends its thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support import ROOT

_PROBE = r"""
import ctypes, json, sys, threading, time
import numpy as np
from reidd.device import HeapTrimmer

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

trimmer = HeapTrimmer(interval_s=0.2) if sys.argv[1] == "trim" else None
malloc = ctypes.CDLL(None).malloc
malloc.restype = ctypes.c_void_p
out = {}

def work():
    big = np.ones(16 << 20, np.uint8); del big      # glibc now serves buffers up to 16 MB from its heaps
    base = rss_mb()
    frames, keep = [], []
    for i in range(120):
        frames.append(np.ones(1_555_200, np.uint8))  # one 960x540 BGR frame
        keep.append(malloc(200))                     # a small allocation that outlives it
    out["peak_mb"] = rss_mb() - base
    frames.clear()
    if trimmer is not None:
        trimmer.start()
    time.sleep(1.0)
    out["held_mb"] = rss_mb() - base

t = threading.Thread(target=work); t.start(); t.join()
if trimmer is not None:
    out["trims"] = trimmer.trims
    trimmer.stop()
    out["threads_after_stop"] = [t.name for t in threading.enumerate() if t.name == "reidd-heap-trim"]
print("PROBE " + json.dumps(out))
"""


def _probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(next(line[6:] for line in done.stdout.splitlines() if line.startswith("PROBE ")))


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="malloc_trim is glibc's")
def test_freed_frames_leave_the_resident_set() -> None:
    plain, trimmed = _probe("plain"), _probe("trim")
    assert plain["peak_mb"] > 150 and trimmed["peak_mb"] > 150  # the buffers were really there
    assert plain["held_mb"] > 100, plain                         # glibc kept them (so the check can fail)
    assert trimmed["trims"] >= 2 and trimmed["held_mb"] < 20, trimmed
    assert trimmed["threads_after_stop"] == []
