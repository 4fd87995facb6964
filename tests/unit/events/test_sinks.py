"""The JSONL event sink: reopened after log rotation, one line per event across restarts."""

from __future__ import annotations

import json

from reidd.events.sinks import JsonlSink

from support.samples import tracklet_event_sample as _tracklet


def test_jsonl_sink_reopens_after_rotation(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, check_every_s=0.0)
    sink.publish(_tracklet(1))
    path.rename(tmp_path / "events.jsonl.1")  # logrotate's default: rename, then the writer must reopen
    sink.publish(_tracklet(2))
    path.unlink()  # or delete it
    sink.publish(_tracklet(3))
    sink.close()
    assert [json.loads(x)["local_id"] for x in (tmp_path / "events.jsonl.1").read_text().splitlines()] == [1]
    assert [json.loads(x)["local_id"] for x in path.read_text().splitlines()] == [3]
    assert sink.published == 3 and sink.publish_failures == 0


def test_jsonl_sink_keeps_one_line_per_event_across_restarts(tmp_path):
    """A daemon restarted on the same files emits its events again: the file keeps one line per event id."""
    path = tmp_path / "events.jsonl"
    first = JsonlSink(path)
    for i in (1, 2, 3):
        first.publish(_tracklet(i))
    first.publish(_tracklet(2))  # a repeat within one run too
    first.close()
    assert first.duplicates == 1
    again = JsonlSink(path)  # a new process: the ids are read back from the file
    for i in (1, 2, 3, 4):
        again.publish(_tracklet(i))
    again.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["local_id"] for e in lines] == [1, 2, 3, 4] and again.duplicates == 3
    small = JsonlSink(path)
    small.remember = 2  # the memory is bounded: only the newest ids are kept
    for i in (5, 6, 7):
        small.publish(_tracklet(i))
    assert len(small._seen) == 2
    small.publish(_tracklet(5))  # forgotten, so written again: the bound is a window, not a guarantee
    small.close()
    assert [json.loads(x)["local_id"] for x in path.read_text().splitlines()][-4:] == [5, 6, 7, 5]
