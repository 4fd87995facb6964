"""Test videos whose frames carry their own index, an independent frame counter, and real GStreamer RTSP
servers (run with Debian's /usr/bin/python3, which has the GObject bindings)."""

from __future__ import annotations

import select
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER = Path(__file__).resolve().parent / "rtsp_server.py"


W, H = 320, 240


CODE_BITS = 9  # frame index written as 9 black/white blocks along the top edge


BLOCK = 24


def draw_frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A frame with a moving car-like box and its index encoded as blocks in the top row."""
    img = np.full((h, w, 3), 60, np.uint8)
    x = (i * 7) % (w - 60)
    cv2.rectangle(img, (x, h // 2), (x + 60, h // 2 + 30), (40, 40, 220), -1)
    cv2.circle(img, (w - 40, h - 40 - (i * 3) % (h // 2)), 15, (30, 200, 30), -1)
    for b in range(CODE_BITS):
        on = (i >> b) & 1
        img[0:BLOCK, b * BLOCK : (b + 1) * BLOCK] = 255 if on else 0
    return img


def read_code(img: np.ndarray) -> int:
    """The frame index encoded by :func:`draw_frame`."""
    value = 0
    for b in range(CODE_BITS):
        patch = img[4 : BLOCK - 4, b * BLOCK + 4 : (b + 1) * BLOCK - 4]
        if patch.mean() > 128:
            value |= 1 << b
    return value


def write_video(path: Path, n: int, fps: float, size: tuple[int, int] = (W, H), fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"cannot write {path}"
    for i in range(n):
        writer.write(draw_frame(i, *size))
    writer.release()
    return path


def clip_frames(path: Path, n: int, every: int = 1, cameras: int = 1, fps: float = 30.0) -> list:
    """Every ``every``-th of a real clip's first ``n`` frames as reidd Frames, spread round-robin over ``cameras``
    cameras (ids c0, c1, ...; one camera: "c")."""
    from reidd.types import Frame

    cap = cv2.VideoCapture(str(path))
    frames = []
    for i in range(n):
        ok, img = cap.read()
        assert ok, f"{path}: frame {i} unreadable"
        if i % every == 0:
            frames.append(Frame(f"c{len(frames) % cameras}" if cameras > 1 else "c", i, i / fps, img))
    cap.release()
    return frames


def count_frames(path: Path) -> list[np.ndarray]:
    """Every frame of ``path``, decoded independently of the code under test."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames


def _gstreamer_available() -> str | None:
    code = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    res = subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    return None if res.returncode == 0 else f"GStreamer RTSP server bindings missing: {res.stderr.strip()[-200:]}"


_GST_MISSING = _gstreamer_available()


needs_gst = pytest.mark.skipif(_GST_MISSING is not None, reason=_GST_MISSING or "")


class RtspServers:
    """Starts tests/rtsp_server.py subprocesses; the fixture kills whatever is left."""

    def __init__(self, log_dir: Path) -> None:
        self.procs: list[subprocess.Popen] = []
        self.log_dir = log_dir

    def start(self, video: Path, port: int, path: str = "/cam", timeout: float = 20.0) -> subprocess.Popen:
        err = open(self.log_dir / f"rtsp_{port}_{len(self.procs)}.err", "w")
        proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(RTSP_SERVER), "--port", str(port), "--video", str(video), "--path", path, "--loop"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        err.close()
        self.procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            proc.kill()
            raise AssertionError(f"RTSP server did not start: {line!r} {(self.log_dir / err.name).read_text()[-500:]}")
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()
