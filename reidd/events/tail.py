"""``reidd events tail``: follow the daemon's event stream, as a subscriber would.

Without ``--group`` it reads with XREAD (from the end of the stream, or from its start with
``--from-start``). With ``--group G --consumer C`` it reads with XREADGROUP (creating the group if
absent), first re-reading this consumer's pending entries, and XACKs each entry once printed, so a
restarted consumer resumes where it stopped and several consumers of one group share the work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from reidd.config import printable, redact_url

DEFAULT_STREAM = "reidd:events"


def visible(text: str) -> str:
    """``text`` safe for a terminal (:func:`reidd.config.printable`): whoever can write to the stream cannot drive
    the operator's terminal."""
    return printable(text)


def _json_escape(c: str) -> str:
    n = ord(c)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def safe_json(data: str) -> str | None:
    """``data`` as one line of valid JSON with no character a terminal acts on (None: not JSON).
    Clean input is returned unchanged (the daemon's canonical bytes); otherwise it is written again
    compactly, with those characters as JSON escapes (the same values)."""
    try:
        obj = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    if data.isprintable():
        return data
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))  # non-printables now only inside strings
    return "".join(c if c.isprintable() else _json_escape(c) for c in text)


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _last_id(client: Any, stream: str) -> str:
    last = client.xrevrange(stream, "+", "-", count=1)
    return _text(last[0][0]) if last else "0-0"


def ensure_group(client: Any, stream: str, group: str, from_start: bool) -> None:
    """Create consumer group ``group`` on ``stream`` (and the stream) unless it exists."""
    import redis

    try:
        client.xgroup_create(stream, group, id="0" if from_start else "$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def iter_events(
    client: Any,
    stream: str,
    *,
    group: str | None = None,
    consumer: str | None = None,
    from_start: bool = False,
    timeout: float | None = None,
    block_ms: int = 500,
    read_count: int = 100,
) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield ``(entry_id, fields)`` of stream entries until ``timeout`` seconds pass without one.

    With a group the caller acknowledges (XACK) each entry once handled (at-least-once delivery);
    each read claims up to ``read_count`` entries for this consumer.
    """
    pending = group is not None  # a group member first re-reads its own unacknowledged entries, then ">"
    if group is not None:
        ensure_group(client, stream, group, from_start)
        cursor = "0"
    else:
        cursor = "0-0" if from_start else _last_id(client, stream)
    last_seen = time.monotonic()
    while True:
        wait_ms = block_ms
        if timeout is not None:
            left = timeout - (time.monotonic() - last_seen)
            if left <= 0:
                return
            wait_ms = max(1, min(block_ms, int(left * 1000)))
        if group is not None:
            block = None if pending else wait_ms
            resp = client.xreadgroup(group, consumer, {stream: cursor}, count=read_count, block=block)
        else:
            resp = client.xread({stream: cursor}, count=read_count, block=wait_ms)
        entries = resp[0][1] if resp else []
        if pending and not entries:
            pending, cursor = False, ">"
            continue
        for entry_id, raw in entries:
            eid = _text(entry_id)
            last_seen = time.monotonic()
            if group is None or pending:
                cursor = eid
            yield eid, _fields(raw)


def format_event(obj: dict[str, Any]) -> str:
    """One readable line for a tracklet or match event."""
    t = obj.get("time", "?")
    if obj.get("type") == "tracklet":
        gid = obj.get("global_id")
        return (
            f"{t}  tracklet  {obj.get('tracklet_id')}  camera={obj.get('camera_id')}  "
            f"global={'-' if gid is None else gid}  frames={obj.get('first_frame')}-{obj.get('last_frame')}  "
            f"boxes={obj.get('num_boxes')}  cls={obj.get('cls')}"
        )
    if obj.get("type") == "match":
        q, g = obj.get("query") or {}, obj.get("gallery") or {}
        return (
            f"{t}  match     {q.get('tracklet_id')} ({q.get('camera_id')}) -> {g.get('tracklet_id')} "
            f"({g.get('camera_id')})  global={obj.get('global_id')}  sim={obj.get('similarity', 0):.3f}  "
            f"transit={obj.get('transit_s', 0):.1f}s"
        )
    return f"{t}  {obj.get('type')}  {json.dumps(obj, sort_keys=True)}"


def _resolve(args: argparse.Namespace) -> tuple[str, str] | None:
    """(redis_url, stream) from the arguments, or None after printing why not."""
    url, stream = args.redis_url, args.stream
    if args.config:
        from reidd.config import ConfigError, load_config

        try:
            cfg = load_config(args.config, check_files=False)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return None
        stream = stream or cfg.events.stream
        if url is None:
            url = cfg.gallery.redis_url
            if url is None:
                from pathlib import Path

                from reidd.gallery.redis_server import embedded_url

                state = Path(cfg.gallery.state_dir).expanduser()
                state = state if state.is_absolute() else Path(args.config).resolve().parent / state
                url = embedded_url(state)
                if url is None:
                    print(
                        f"error: {args.config}: gallery.redis_url is unset and no embedded Redis is running on "
                        f"{state} (start `reidd run --config {args.config}` first, or pass --redis-url)",
                        file=sys.stderr,
                    )
                    return None
    if url is None:
        print("error: pass --redis-url URL or --config FILE", file=sys.stderr)
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        print(f"error: --redis-url: must start with redis://, rediss:// or unix://, got {url!r}", file=sys.stderr)
        return None
    return url, stream or DEFAULT_STREAM


def _show(entry_id: str, data: str, raw: bool) -> None:
    """Print one entry; nothing from the stream reaches the terminal unescaped (see :func:`visible`)."""
    if raw:
        line = safe_json(data)
        if line is None:  # stdout stays one JSON value per line
            print(f"(unreadable entry {visible(entry_id)}: not JSON: {visible(repr(data[:200]))})",
                  file=sys.stderr, flush=True)
        else:
            print(line, flush=True)
        return
    try:
        line = format_event(json.loads(data))
    except (AttributeError, TypeError, ValueError, RecursionError):
        line = f"(unreadable entry {entry_id}: {data[:200]!r})"
    print(visible(line), flush=True)


def run_tail(args: argparse.Namespace) -> int:
    """The ``events tail`` command."""
    import redis

    if (args.group is None) != (args.consumer is None):
        print("error: --group and --consumer go together", file=sys.stderr)
        return 2
    if args.count is not None and args.count < 1:
        print(f"error: --count: must be >= 1, got {args.count}", file=sys.stderr)
        return 2
    if args.timeout is not None and args.timeout <= 0:
        print(f"error: --timeout: must be > 0, got {args.timeout}", file=sys.stderr)
        return 2
    resolved = _resolve(args)
    if resolved is None:
        return 2
    url, stream = resolved
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5)
    except ValueError as exc:
        print(f"error: --redis-url: invalid Redis URL {redact_url(url)}: {exc}", file=sys.stderr)
        return 2
    shown = 0
    try:
        client.ping()
        for entry_id, fields in iter_events(
            client, stream, group=args.group, consumer=args.consumer, from_start=args.from_start,
            timeout=args.timeout, read_count=1 if args.count is not None else 100,  # claim no more than shown
        ):
            if not args.type or fields.get("type") == args.type:
                _show(entry_id, fields.get("data", ""), args.json)
                shown += 1
            if args.group is not None:
                client.xack(stream, args.group, entry_id)
            if args.count is not None and shown >= args.count:
                break
    except redis.RedisError as exc:
        print(f"error: Redis at {visible(redact_url(url))}: {visible(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


def register(subparsers: Any) -> None:
    """Add ``events`` with its ``tail`` subcommand."""
    events = subparsers.add_parser(
        "events",
        help="Work with the daemon's event stream.",
        description="Work with the match and tracklet events the daemon publishes to a Redis Stream.",
    )
    sub = events.add_subparsers(dest="events_command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "tail",
        help="Print events from the Redis Stream as they arrive.",
        description=(
            "Print events from the daemon's Redis Stream as they arrive, one per line (readable or raw JSON). "
            "With --group/--consumer it reads as a consumer group member and acknowledges each event, so it "
            "resumes where it stopped."
        ),
    )
    p.add_argument("--redis-url", help="Redis URL (redis://, rediss:// or unix://); overrides the config.")
    p.add_argument(
        "--config",
        help="A cameras.yaml: uses its gallery.redis_url and events.stream (embedded Redis: use --redis-url).",
    )
    p.add_argument("--stream", help=f"Stream key (default: the config's events.stream, else {DEFAULT_STREAM}).")
    p.add_argument("--group", help="Consumer group to read as (created if absent); needs --consumer.")
    p.add_argument("--consumer", help="Consumer name within --group (keep it stable to resume pending events).")
    p.add_argument(
        "--from-start",
        action="store_true",
        help="Start at the oldest entry (without --group) or create the group at the start of the stream.",
    )
    p.add_argument("--count", type=int, help="Exit after printing this many events.")
    p.add_argument("--timeout", type=float, help="Exit after this many seconds without an event.")
    p.add_argument("--type", choices=["tracklet", "match"], help="Only print events of this type.")
    p.add_argument("--json", action="store_true", help="Print the raw canonical JSON of each event.")
    p.set_defaults(func=run_tail)


def main(argv: list[str] | None = None) -> int:
    """Run ``events ...`` on its own (``python -m reidd.events.tail events tail ...``)."""
    parser = argparse.ArgumentParser(prog="reidd")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
