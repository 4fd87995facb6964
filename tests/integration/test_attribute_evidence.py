"""Colour/type evidence in association (``reid.attribute_model``, Intel's vehicle-attributes-recognition-barrier-0039
from ../shared/assets; skipped without it): every embedded tracklet carries its pooled posteriors into the recorded
embeddings and the gallery, candidates are scored with the clipped likelihood-ratio term, and ``reidd rematch``
repeats the run with it, or weighs it out with ``matching.attribute_weight: 0``."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from reidd.config import load_config

from support import ASSETS, ROOT

ATTR = (ASSETS / "models" / "omz" / "vehicle-attributes-recognition-barrier-0039" / "FP16-INT8"
        / "vehicle-attributes-recognition-barrier-0039.xml")


def _rematch(cfg: Path, embeddings: Path, out: Path) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "reidd.cli", "rematch", "--config", str(cfg), "--embeddings",
                        str(embeddings), "--out", str(out), "--events-jsonl", str(out / "events.jsonl")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def _terms(events: list[dict]) -> list[float]:
    return [c["attributes"] for e in events for c in (e.get("association") or {}).get("candidates", [])
            if "attributes" in c]


@pytest.mark.skipif(not ATTR.is_file(), reason="needs ../shared/assets/models/omz (vehicle attributes model)")
def test_replay_weighs_colour_and_type_and_rematch_repeats_it(scene3, tmp_path: Path) -> None:
    from reidd.daemon import run_replay

    data = yaml.safe_load(Path(scene3.config).read_text())
    data["detector"] = {"type": "file", "detections_dir": str(Path(scene3.gt_mot[scene3.camera_ids[0]]).parent)}
    data["reid"] = {"input_size": [128, 128], "max_batch": 32, "attribute_model": str(ATTR)}
    data["tracklets"] = {"max_crops": 4}
    data["metrics"] = {"enabled": False}
    cfg_path = Path(scene3.out_dir) / f"attrs-{tmp_path.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    out = tmp_path / "replay"
    code, _ = run_replay(load_config(cfg_path), out, events_jsonl=out / "events.jsonl", save_crops=False,
                         save_embeddings=True)
    assert code == 0
    queries = [json.loads(line)["q"] for line in (out / "embeddings.jsonl").read_text().splitlines()
               if line.startswith('{"q"')]
    assert queries
    for q in queries:
        a = np.frombuffer(base64.b64decode(q["vattrs"]), "<f4")
        assert a.shape == (11,) and abs(a[:7].sum() - 1) < 1e-3 and abs(a[7:].sum() - 1) < 1e-3
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    terms = _terms(events)
    assert terms and all(-1.5 - 1e-6 <= t <= 1.5 + 1e-6 for t in terms), terms  # weight 1, clip 1.5
    assert len(set(terms)) > 1  # the evidence differs from pair to pair
    # the same settings repeat the run from the recorded posteriors; weight 0 takes the term out
    assert _rematch(cfg_path, out / "embeddings.jsonl", tmp_path / "same") == events
    data["matching"] = {"attribute_weight": 0.0}
    off = Path(scene3.out_dir) / f"attrs-off-{tmp_path.name}.yaml"
    off.write_text(yaml.safe_dump(data))
    assert not _terms(_rematch(off, out / "embeddings.jsonl", tmp_path / "off"))
