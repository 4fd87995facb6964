"""The versioned event schema: constructors, canonical JSON and validation.

Every event is one flat JSON object (see ``event_schema.json``, JSON Schema draft 2020-12) holding
``schema_version``, ``event_id``, ``type`` (``tracklet`` | ``match``), ``time``, ``media_time``,
``daemon_id`` and the fields of its type.

Times: ``media_time`` is the ``ts`` of the camera timeline in seconds and ``time`` the same instant as
ISO-8601 UTC (``...T..:..:..ffffffZ``), computed as 1970-01-01T00:00:00Z + ``media_time``. For live
sources ``ts`` is wall-clock epoch seconds, so ``time`` is the wall-clock time; for files ``ts`` is
media time since the file start (plus the camera's ``time_offset_s``), so ``time`` is 1970-01-01 plus
that offset and replays of the same file give byte-identical events. A tracklet event's instant is
its ``last_ts``; a match event's instant is the query tracklet's ``last_ts``.

``event_id`` is the first 128 bits (hex) of a SHA-256 over the event's identity (type, daemon id and
tracklet ids, plus the global id for matches), so the same input always gives the same id and a
redelivered event is recognisable (the Redis sink deduplicates on it). A tracklet event's id does not
depend on its frames: after a restart on the same files, the tracklet keeps its first event even when
frames were dropped differently (live pacing), and its decision is repeated, so no event contradicts
another. Tracklet ids carry a tag (``Tracklet.session``): live sources the run, files the recording, so they never collide.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from reidd.types import Event

SCHEMA_VERSION = 1
EVENT_TYPES = ("tracklet", "match")
SCHEMA_PATH = Path(__file__).with_name("event_schema.json")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _plain(value: Any, field: str) -> Any:
    """Convert numpy scalars/arrays and tuples into plain JSON values; reject non-finite floats."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v, f"{field}[{i}]") for i, v in enumerate(list(value))]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _finite(value, field)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"event field '{field}': {type(value).__name__} is not JSON-serialisable")


def _finite(value: Any, field: str, ndigits: int | None = None) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"event field '{field}': expected a number, got {value!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"event field '{field}': must be finite, got {f}")
    return round(f, ndigits) if ndigits is not None else f


def _int(value: Any, field: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"event field '{field}': expected an integer, got {value!r}")
    return int(value)


def iso_time(ts: float) -> str:
    """``ts`` seconds after 1970-01-01T00:00:00Z as ISO-8601 UTC with microseconds and 'Z'."""
    t = _EPOCH + timedelta(seconds=_finite(ts, "time"))
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event_id(*parts: Any) -> str:
    key = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _base(ts: float, daemon_id: str) -> dict[str, Any]:
    if not isinstance(daemon_id, str) or not daemon_id:
        raise ValueError(f"event field 'daemon_id': expected a non-empty string, got {daemon_id!r}")
    media_time = _finite(ts, "media_time", 6)
    return {
        "schema_version": SCHEMA_VERSION,
        "time": iso_time(media_time),
        "media_time": media_time,
        "daemon_id": daemon_id,
    }


def tracklet_event(
    *,
    camera_id: str,
    local_id: int,
    tracklet_id: str,
    global_id: int | None,
    first_frame: int,
    last_frame: int,
    first_ts: float,
    last_ts: float,
    live: bool,
    box_summary: dict[str, Any],
    best_crop: str | None,
    cls: int,
    num_boxes: int,
    daemon_id: str,
    association: dict[str, Any] | None = None,
) -> Event:
    """A tracklet closed (or emitted periodically) on one camera, with its global id (None: no re-ID).
    ``association``: how the global id was decided (reason, and the scored candidates when there were any)."""
    last_ts = _finite(last_ts, "last_ts", 6)
    payload = _base(last_ts, daemon_id)
    if not isinstance(box_summary, dict):
        raise ValueError(f"event field 'box_summary': expected a mapping, got {type(box_summary).__name__}")
    payload.update(
        camera_id=str(camera_id),
        local_id=_int(local_id, "local_id"),
        tracklet_id=str(tracklet_id),
        global_id=None if global_id is None else _int(global_id, "global_id"),
        first_frame=_int(first_frame, "first_frame"),
        last_frame=_int(last_frame, "last_frame"),
        first_ts=_finite(first_ts, "first_ts", 6),
        last_ts=last_ts,
        live=bool(live),
        box_summary=_plain(box_summary, "box_summary"),
        best_crop=None if best_crop is None else str(best_crop),
        cls=_int(cls, "cls"),
        num_boxes=_int(num_boxes, "num_boxes"),
    )
    if association is not None:
        payload["association"] = _plain(association, "association")
    eid = _event_id("tracklet", daemon_id, payload["tracklet_id"])
    return Event(event_id=eid, type="tracklet", payload=payload)


def _ref(ref: dict[str, Any], field: str) -> dict[str, Any]:
    if not isinstance(ref, dict):
        raise ValueError(f"event field '{field}': expected a mapping, got {type(ref).__name__}")
    missing = [k for k in ("tracklet_id", "camera_id", "first_ts", "last_ts") if k not in ref]
    if missing:
        raise ValueError(f"event field '{field}.{missing[0]}': missing")
    return {
        "tracklet_id": str(ref["tracklet_id"]),
        "camera_id": str(ref["camera_id"]),
        "first_ts": _finite(ref["first_ts"], f"{field}.first_ts", 6),
        "last_ts": _finite(ref["last_ts"], f"{field}.last_ts", 6),
    }


def match_event(
    *,
    query: dict[str, Any],
    gallery: dict[str, Any],
    similarity: float,
    transit_s: float,
    global_id: int,
    daemon_id: str,
    score: float | None = None,
    explanation: dict[str, Any] | None = None,
) -> Event:
    """A query tracklet matched to a gallery tracklet.

    ``query`` and ``gallery`` each hold ``tracklet_id``, ``camera_id``, ``first_ts`` and ``last_ts``;
    ``score`` is the calibrated score of the link, ``explanation`` the reason and the scored candidates.
    """
    q, g = _ref(query, "query"), _ref(gallery, "gallery")
    payload = _base(q["last_ts"], daemon_id)
    payload.update(
        query=q,
        gallery=g,
        similarity=_finite(similarity, "similarity", 6),
        transit_s=_finite(transit_s, "transit_s", 6),
        global_id=_int(global_id, "global_id"),
    )
    if score is not None:
        payload["score"] = _finite(score, "score", 4)
    if explanation is not None:
        payload["explanation"] = explanation
    eid = _event_id("match", daemon_id, q["tracklet_id"], g["tracklet_id"], payload["global_id"])
    return Event(event_id=eid, type="match", payload=payload)


def event_to_dict(ev: Event) -> dict[str, Any]:
    """The event as one flat JSON object."""
    return {**ev.payload, "event_id": ev.event_id, "type": ev.type}


def event_to_json(ev: Event) -> str:
    """Canonical JSON (sorted keys, compact separators, UTF-8): identical input gives identical bytes."""
    return json.dumps(event_to_dict(ev), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_from_json(text: str | bytes) -> Event:
    """Parse and validate one event line back into an :class:`Event`."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"event: not valid JSON ({exc})") from None
    validate_event(obj)
    payload = {k: v for k, v in obj.items() if k not in ("event_id", "type")}
    return Event(event_id=obj["event_id"], type=obj["type"], payload=payload)


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_event(obj: dict[str, Any]) -> None:
    """Check ``obj`` against ``event_schema.json``; raise ``ValueError`` naming the offending field."""
    from jsonschema.exceptions import best_match

    if not isinstance(obj, dict):
        raise ValueError(f"event: expected a JSON object, got {type(obj).__name__}")
    errors = list(_validator().iter_errors(obj))
    if not errors:
        return
    # A failing type branch also makes its fields "unevaluated": report the branch's own error first.
    err = best_match([e for e in errors if e.validator != "unevaluatedProperties"] or errors)
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "required":
        missing = [k for k in err.validator_value if isinstance(err.instance, dict) and k not in err.instance]
        field = f"{path}.{missing[0]}" if path else missing[0]
        raise ValueError(f"event field '{field}': missing")
    if err.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(err.instance, dict):
        known = set(err.schema.get("properties", {}))
        if err.validator == "unevaluatedProperties":
            known |= set(_validator().schema["$defs"].get(str(obj.get("type")), {}).get("properties", {}))
        extra = sorted(set(err.instance) - known)
        if extra:
            field = f"{path}.{extra[0]}" if path else extra[0]
            raise ValueError(f"event field '{field}': unexpected field for a {obj.get('type')!r} event")
    raise ValueError(f"event field '{path or '<root>'}': {err.message}")
