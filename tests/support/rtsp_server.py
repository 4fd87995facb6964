#!/usr/bin/python3
"""A small RTSP server that serves one video file as H.264, for reidd's tests and demos.

Run it with the system Python that has GStreamer's introspection bindings (Debian packages
python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,bad,ugly}, gstreamer1.0-libav)::

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554 --video clip.mp4 --path /cam --loop

It listens on 127.0.0.1 only. Every client of the mount shares one media: the file is decoded, paced at its
native frame rate, encoded with x264 (zerolatency) and payloaded as RTP/H.264. With ``--loop`` the file
restarts at its end, otherwise the stream ends. Once serving it prints one line
``READY rtsp://127.0.0.1:PORT/PATH`` on stdout; it exits cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

_DECODE = (
    "filesrc name=file ! decodebin ! videoconvert ! video/x-raw,format=I420 "
    "! appsink name=sink sync=false max-buffers=8"
)
_PULL_TIMEOUT_NS = 5 * Gst.SECOND


def _open_decoder(video: Path) -> Gst.Element:
    """A playing pipeline that decodes ``video`` into I420 samples on an appsink named ``sink``."""
    pipe = Gst.parse_launch(_DECODE)
    pipe.get_by_name("file").set_property("location", str(video))
    pipe.set_state(Gst.State.PLAYING)
    return pipe


def probe(video: Path, fps_override: float | None) -> tuple[Gst.Caps, float]:
    """Decode the first frame of ``video``; return its caps and frame rate (raises ``RuntimeError``)."""
    pipe = _open_decoder(video)
    try:
        sample = pipe.get_by_name("sink").emit("try-pull-sample", _PULL_TIMEOUT_NS)
        if sample is None:
            msg = pipe.get_bus().timed_pop_filtered(0, Gst.MessageType.ERROR)
            detail = msg.parse_error()[0].message if msg else "no frame decoded"
            raise RuntimeError(f"cannot decode video {video}: {detail}")
        caps = sample.get_caps()
        ok, num, den = caps.get_structure(0).get_fraction("framerate")
        fps = fps_override or (num / den if ok and num > 0 and den > 0 else 25.0)
        return caps, fps
    finally:
        pipe.set_state(Gst.State.NULL)


class Feeder:
    """Decodes the file and pushes paced, timestamped frames into one media's appsrc."""

    def __init__(self, appsrc: Gst.Element, video: Path, fps: float, loop: bool):
        self.appsrc = appsrc
        self.video = video
        self.period_ns = int(Gst.SECOND / fps)
        self.loop = loop
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rtsp-feeder", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        dec = _open_decoder(self.video)
        sink = dec.get_by_name("sink")
        n = 0
        t0 = time.monotonic()
        try:
            while not self.stopped.is_set():
                sample = sink.emit("try-pull-sample", _PULL_TIMEOUT_NS)
                if sample is None:
                    if sink.get_property("eos") and self.loop:
                        dec.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
                        continue
                    self.appsrc.emit("end-of-stream")
                    return
                delay = t0 + n * self.period_ns / Gst.SECOND - time.monotonic()
                if delay > 0 and self.stopped.wait(delay):
                    return
                buf = sample.get_buffer().copy()
                buf.pts = n * self.period_ns
                buf.dts = Gst.CLOCK_TIME_NONE
                buf.duration = self.period_ns
                if self.appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                    return  # media is shutting down
                n += 1
        finally:
            dec.set_state(Gst.State.NULL)


class FileMediaFactory(GstRtspServer.RTSPMediaFactory):
    """A shared media factory that feeds an appsrc from the decoded file."""

    def __init__(self, video: Path, caps: Gst.Caps, fps: float, loop: bool):
        super().__init__()
        self.video, self.caps, self.fps, self.loop = video, caps, fps, loop
        gop = max(1, round(fps))
        self.set_launch(
            "( appsrc name=src is-live=true format=time "
            f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate=1000 "
            "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
        self.set_shared(True)
        self.connect("media-configure", self._on_configure)

    def _on_configure(self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name("src")
        appsrc.set_property("caps", self.caps)
        feeder = Feeder(appsrc, self.video, self.fps, self.loop)
        media.connect("unprepared", lambda _m: feeder.stop())
        feeder.start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve a video file over RTSP (H.264) on 127.0.0.1.")
    ap.add_argument("--port", type=int, required=True, help="TCP port to listen on (127.0.0.1 only).")
    ap.add_argument("--video", type=Path, required=True, help="Video file to serve (anything GStreamer decodes).")
    ap.add_argument("--path", default="/cam", help="Mount path of the stream, e.g. /cam (default).")
    ap.add_argument("--loop", action="store_true", help="Restart the video at its end instead of ending the stream.")
    ap.add_argument("--fps", type=float, default=None, help="Override the frame rate read from the file.")
    args = ap.parse_args(argv)
    if not args.video.is_file():
        print(f"rtsp_server: --video: file not found: {args.video}", file=sys.stderr)
        return 2
    if not args.path.startswith("/"):
        print(f"rtsp_server: --path must start with '/': {args.path}", file=sys.stderr)
        return 2

    Gst.init(None)
    try:
        caps, fps = probe(args.video.resolve(), args.fps)
    except RuntimeError as exc:
        print(f"rtsp_server: --video: {exc}", file=sys.stderr)
        return 2

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, FileMediaFactory(args.video.resolve(), caps, fps, args.loop))
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
