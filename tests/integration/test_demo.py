"""`reidd demo` (what scripts/demo runs) works end to end and reports what the README promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from support import ROOT


def test_demo_runs_the_whole_daemon_path(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "reidd", "demo", "--out", str(tmp_path), "--vehicles", "4",
                        "--seed", "3", "--port", "0"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    for cam in ("c001", "c002", "c003"):
        assert re.search(rf"{cam}:\s+\d+ tracklets, global ids \[", out), out
    m = re.search(r"IDF1 ([\d.]+)%.*transitions (\d+)/(\d+) correct, (\d+) false merges", out)
    assert m, out
    idf1, ok, total, merges = float(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))
    assert total >= 4 and ok >= total - 1 and merges <= 1 and idf1 >= 80.0, out
    assert re.search(r"\d+ cross-camera matches", out)
    assert "Redis stream: 'reidd:events'" in out and re.search(r"http://127\.0\.0\.1:\d+/metrics", out)
    assert (tmp_path / "run" / "events.jsonl").stat().st_size > 0
