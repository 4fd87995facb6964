"""reidd.sources: capture options handed to OpenCV and credentials redacted from camera URLs."""

from __future__ import annotations

from reidd.sources import redact_url
from reidd.sources.reader import _CaptureOptionsGate


def test_capture_options_and_redaction():
    assert _CaptureOptionsGate.options_for("tcp", None) == "rtsp_transport;tcp"
    assert _CaptureOptionsGate.options_for("tcp", "rtsp_transport;udp|stimeout;1") == "rtsp_transport;tcp|stimeout;1"
    assert redact_url("rtsp://u:p@h:554/x?y=1") == "rtsp://u:***@h:554/x?y=1"
    assert redact_url("rtsp://h/x") == "rtsp://h/x"
    assert redact_url("/videos/a.mp4") == "/videos/a.mp4"
