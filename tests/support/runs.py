"""Configs for daemon runs over generated scenes, and readers of what a run wrote (JSONL files, Redis streams)."""

from __future__ import annotations

import json
from pathlib import Path

import redis
import yaml


def reid_config(scene, tmp_path: Path, name: str, *, cameras: list[str] | None = None, **extra) -> Path:
    data = yaml.safe_load(Path(scene.config).read_text())
    data["reid"] = {"input_size": [128, 128], "max_batch": 32}
    data["tracklets"] = {"max_crops": 4}
    data["metrics"] = {"enabled": False}
    if cameras is not None:  # other daemons' cameras stay listed (the topology names them) but disabled
        for c in data["cameras"]:
            c["enabled"] = c["id"] in cameras
    for k, v in extra.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    path = Path(scene.out_dir) / f"{name}-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def stream_events(client: redis.Redis, stream: str = "reidd:events") -> list[dict]:
    return [json.loads(fields[b"data"]) for _, fields in client.xrange(stream)]
