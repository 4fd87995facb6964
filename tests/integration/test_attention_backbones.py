"""The issue-23 backbones through the whole recipe: `reidd train --backbone glamor` and `reidd export` as
commands, and clip_vit (a tiny random CLIP ViT) through the trainer, export and the daemon's embedder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reidd.train.config import TrainConfig
from reidd.train.synthetic import write_toy_reid_dataset
from reidd.train.trainer import train

from support import ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reidd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reidd", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_reidd_train_and_export_glamor(tmp_path: Path) -> None:
    data = write_toy_reid_dataset(tmp_path / "toy", num_ids=12, size=(32, 32))
    common = ["train", "--data", str(data), "--val-identities", "4", "--input-size", "64", "64", "--epochs", "2",
              "--batch-p", "4", "--batch-k", "2", "--max-iters", "2", "--threads", "1", "--no-progress"]
    # without --pretrained none the command says what to do (GLAMOR has no ImageNet weights)
    r = _reidd(*common, "--backbone", "glamor", "--out", str(tmp_path / "no"))
    assert r.returncode != 0 and "--pretrained none" in r.stderr, r.stderr
    out = tmp_path / "run"
    r = _reidd(*common, "--backbone", "glamor_gn", "--pretrained", "none", "--multi-level", "--attention",
               "--out", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["epochs"] == 2 and 0.0 <= res["best_mAP"] <= 1.0
    r = _reidd("export", "--model", str(out / "best.pt"), "--format", "onnx", "--out", str(tmp_path / "g.onnx"))
    assert r.returncode == 0, r.stderr
    from reidd.reid.export import read_onnx_spec

    spec = read_onnx_spec(tmp_path / "g.onnx")
    assert spec.backbone == "glamor_gn" and spec.multi_level and spec.attention


def test_clip_vit_trains_exports_and_embeds(tmp_path: Path, monkeypatch) -> None:
    from reidd.config import ReidConfig
    from reidd.reid import clip_branch as cb
    from reidd.reid.embedder import Embedder
    from reidd.reid.export import export_model
    from reidd.types import BoxRecord, Crop, Tracklet

    monkeypatch.setattr(cb, "CLIP_VIT_ARCH", cb.ClipArch(patch=8, width=32, layers=2, heads=2, embed_dim=16,
                                                         image_size=64))
    data = write_toy_reid_dataset(tmp_path / "toy", num_ids=12, size=(32, 32))
    cfg = TrainConfig(data=str(data), val_identities=4, backbone="clip_vit", input_size=(64, 64), epochs=6,
                      batch_p=4, batch_k=4, max_iters=2, lr=1e-3, warmup_epochs=0, threads=1, out=str(tmp_path / "run"),
                      pretrained=True, allow_random_init=True, freeze_stages=4, pad=0, erasing_p=0.0,
                      color_jitter=0.0, eval_every=6)
    with pytest.warns(UserWarning, match="CLIP weights cannot be downloaded"):
        res = train(cfg, progress=False)
    ce = [r["loss_ce"] for r in res.history]
    assert ce[-1] < ce[0], ce
    onnx = tmp_path / "c.onnx"
    assert export_model(res.model, onnx, "onnx")["max_abs_diff"] < 1e-3
    rng = np.random.default_rng(0)
    crops = [Crop(i, i / 10, (0, 0, 50, 40), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), quality=0.9)
             for i in range(3)]
    tl = Tracklet("c1", 1, 0, [BoxRecord(i, i / 10, (0, 0, 10, 10), 0.9, 2) for i in range(3)], crops, "lost", 2)
    got = [Embedder(ReidConfig(weights=w, runtime="torch", precision="fp32") if w.endswith(".pt")
                    else ReidConfig(weights=w)).embed_tracklets([tl])[0].embedding
           for w in (str(tmp_path / "run" / "best.pt"), str(onnx))]
    assert got[0].shape == (1296,) and np.abs(got[0] - got[1]).max() < 1e-4
