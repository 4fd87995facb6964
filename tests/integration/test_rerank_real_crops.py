"""``reidd eval --rerank diffusion attributes`` as a user runs it, on a small subset of the real vn-2cam crops with
the Open Model Zoo vehicle-attributes model (../shared/assets; skipped without them), and a bad
``--attribute-model`` refused in one line naming the option (no assets needed)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support import ASSETS, ROOT

VN = ASSETS / "reid" / "vn-2cam"
ATTR = (ASSETS / "models" / "omz" / "vehicle-attributes-recognition-barrier-0039" / "FP16-INT8"
        / "vehicle-attributes-recognition-barrier-0039.xml")
DETECTOR = (ASSETS / "models" / "omz" / "vehicle-detection-0202" / "FP16-INT8" / "vehicle-detection-0202.xml")
needs_crops = pytest.mark.skipif(not (VN / "manifest.csv").is_file() or not ATTR.is_file(),
                                 reason="needs ../shared/assets (vn-2cam crops and the vehicle-attributes model)")


def _reidd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reidd", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**__import__("os").environ, "REIDD_THREADS": "2"})


def _subset(path: Path, ids: int) -> Path:
    """A manifest of the first ``ids`` identities (both cameras each), with absolute image paths."""
    with (VN / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = sorted({r["pid"] for r in rows})[:ids]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "pid", "camid"])
        for r in rows:
            if r["pid"] in keep:
                w.writerow([str(VN / r["path"]), r["pid"], r["camid"]])
    return path


@needs_crops
def test_eval_with_diffusion_and_attributes_on_real_crops(tmp_path: Path) -> None:
    data = _subset(tmp_path / "subset.csv", 31)
    out = tmp_path / "eval"
    r = _reidd("eval", "--data", str(data), "--layout", "csv", "--val-identities", "30", "--imagenet",
               "efficientnet_lite0", "--input-size", "128", "128", "--rerank", "none", "diffusion", "attributes",
               "diffusion+attributes", "--attribute-model", str(ATTR), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["num_query"] == 30 and res["num_gallery"] == 30
    rows = {x["rerank"]: x for x in res["results"]}
    assert list(rows) == ["none", "diffusion", "attributes", "diffusion+attributes"]
    for x in rows.values():
        assert 0.0 < x["mAP"] <= 1.0 and 0.0 <= x["rank1"] <= 1.0
    assert res["attributes"]["model"] == str(ATTR) and res["diffusion"]["alpha"] == 0.9
    assert "diffusion+attributes" in r.stdout  # the printed table


@needs_crops
def test_attribute_model_agrees_across_cameras_on_real_crops(tmp_path: Path) -> None:
    """What the attribute re-ranking relies on: the two cameras' crops of one vehicle agree on colour and type far
    more often than two vehicles do, so the log likelihood ratio of true pairs is clearly higher."""
    from reidd.evaluate.attributes import AttributeModel, AttributeParams, attribute_log_odds

    with (VN / "manifest.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh)][:120]  # 60 identities, cam1 and cam2 each
    cam1 = sorted((r for r in rows if r["camid"] == "1"), key=lambda r: r["pid"])
    cam2 = sorted((r for r in rows if r["camid"] == "2"), key=lambda r: r["pid"])
    assert [r["pid"] for r in cam1] == [r["pid"] for r in cam2]
    m = AttributeModel(ATTR, batch_size=16, threads=2)
    a1 = m.predict_files([str(VN / r["path"]) for r in cam1])
    a2 = m.predict_files([str(VN / r["path"]) for r in cam2])
    lo = attribute_log_odds(a1, a2, AttributeParams(clip=10.0))
    same = np.eye(len(cam1), dtype=bool)
    assert lo[same].mean() > lo[~same].mean() + 1.0, (lo[same].mean(), lo[~same].mean())
    assert (a1.colour.argmax(1) == a2.colour.argmax(1)).mean() > 0.5


@pytest.mark.parametrize("kind", ["missing", "junk", "detector"])
def test_bad_attribute_model_is_one_line_exit_2(kind: str, tmp_path: Path) -> None:
    if kind == "missing":
        model = tmp_path / "nowhere" / "attributes.xml"
    elif kind == "junk":
        model = tmp_path / "attributes.xml"
        model.write_text("<?xml version='1.0'?><net name='x'><layers><layer id='0' type='Bogus'/></layers></net>")
    else:
        if not DETECTOR.is_file():
            pytest.skip("needs ../shared/assets/models/omz")
        model = DETECTOR
    r = _reidd("eval", "--data", str(tmp_path / "no-such-data"), "--imagenet", "efficientnet_lite0", "--rerank",
               "none", "diffusion", "attributes", "--attribute-model", str(model), "--no-progress",
               "--out", str(tmp_path / "out"), timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: --attribute-model: ") and model.name in lines[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()
