"""reidd.events.schema: valid events, canonical JSON, and broken events rejected naming the field."""

from __future__ import annotations

import json

import pytest

from reidd.events.schema import event_from_json, event_to_dict, event_to_json, match_event, tracklet_event, validate_event

from support.samples import match_event_sample as _match, tracklet_event_sample as _tracklet


# ---------------------------------------------------------------------------------------------- schema
def test_schema_valid_events_and_canonical_json():
    for ev in (_tracklet(3), _match(3)):
        obj = json.loads(event_to_json(ev))
        validate_event(obj)
        assert obj["schema_version"] == 1 and obj["type"] == ev.type and obj["event_id"] == ev.event_id
        assert event_from_json(event_to_json(ev)) == ev
    t = json.loads(event_to_json(_tracklet(3)))
    # files: time is 1970-01-01 + media time (last_ts)
    assert t["media_time"] == pytest.approx(1.56) and t["time"] == "1970-01-01T00:00:01.560000Z"
    m = json.loads(event_to_json(_match(3)))
    assert m["media_time"] == 15.5 and m["time"] == "1970-01-01T00:00:15.500000Z"
    live = tracklet_event(**{**_tracklet_kwargs(), "first_ts": 1_700_000_000.0, "last_ts": 1_700_000_002.25,
                             "live": True})
    assert event_to_dict(live)["time"] == "2023-11-14T22:13:22.250000Z"
    # canonical: identical input -> identical bytes and ids; sorted keys, compact
    a, b = event_to_json(_tracklet(5)), event_to_json(_tracklet(5))
    assert a == b and " " not in a and list(json.loads(a)) == sorted(json.loads(a))
    assert _tracklet(5).event_id == _tracklet(5).event_id
    assert len({_tracklet(5).event_id, _tracklet(6).event_id, _tracklet(5, daemon="d2").event_id,
                _match(5).event_id}) == 4


def _tracklet_kwargs() -> dict:
    return dict(camera_id="c9", local_id=1, tracklet_id="c9:1:0", global_id=None, first_frame=0, last_frame=4,
                first_ts=0.0, last_ts=0.16, live=False, box_summary={}, best_crop="crops/c9_1.jpg", cls=7,
                num_boxes=5, daemon_id="d1")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("camera_id"), "camera_id"),
        (lambda d: d.update(cls="car"), "cls"),
        (lambda d: d.update(first_frame=-1), "first_frame"),
        (lambda d: d.update(time="yesterday"), "time"),
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d.update(type="alarm"), "type"),
        (lambda d: d.update(schema_version=2), "schema_version"),
    ],
)
def test_schema_rejects_broken_tracklet_naming_the_field(mutate, field):
    obj = json.loads(event_to_json(tracklet_event(**_tracklet_kwargs())))
    validate_event(obj)
    mutate(obj)
    with pytest.raises(ValueError, match=f"'{field}'"):
        validate_event(obj)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["query"].pop("camera_id"), "query.camera_id"),
        (lambda d: d.update(similarity=1.5), "similarity"),
        (lambda d: d["gallery"].update(extra=1), "gallery.extra"),
    ],
)
def test_schema_rejects_broken_match_naming_the_field(mutate, field):
    obj = json.loads(event_to_json(_match(1)))
    mutate(obj)
    with pytest.raises(ValueError, match=f"'{field}'"):
        validate_event(obj)


def test_constructors_reject_bad_values():
    with pytest.raises(ValueError, match="'last_ts'"):
        tracklet_event(**{**_tracklet_kwargs(), "last_ts": float("nan")})
    with pytest.raises(ValueError, match="'local_id'"):
        tracklet_event(**{**_tracklet_kwargs(), "local_id": "7"})
    with pytest.raises(ValueError, match="'gallery.last_ts'"):
        match_event(query={"tracklet_id": "a", "camera_id": "c1", "first_ts": 0, "last_ts": 1},
                    gallery={"tracklet_id": "b", "camera_id": "c2", "first_ts": 0}, similarity=0.5,
                    transit_s=1, global_id=1, daemon_id="d")
