"""Training runs: the loss falls, an interrupted run resumes exactly, a short run on the shared crops beats the
ImageNet initialisation."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from reidd.train.config import TrainConfig
from reidd.train.datasets import load_dataset
from reidd.train.synthetic import write_toy_reid_dataset
from reidd.train.trainer import train, validate

from support import ASSETS


VN = ASSETS / "reid" / "vn-2cam"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- training
def _cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(data=str(data), val_identities=4, backbone="efficientnet_lite0", input_size=(64, 64), epochs=2,
                batch_p=4, batch_k=2, max_iters=2, lr=1e-3, warmup_epochs=0, threads=1, out=str(out),
                freeze_stages=4)
    base.update(kw)
    return TrainConfig(**base)


def test_training_loss_falls(tmp_path: Path) -> None:
    data = write_toy_reid_dataset(tmp_path / "toy", num_ids=12, size=(32, 32))
    res = train(_cfg(data, tmp_path / "run", epochs=10, batch_k=4, pad=0, erasing_p=0.0, color_jitter=0.0,
                     eval_every=10), progress=False)
    loss = [r["loss"] for r in res.history]
    ce = [r["loss_ce"] for r in res.history]
    assert ce[-1] < 0.85 * ce[0], ce
    # two batches per epoch: the total loss is noisy from one epoch to the next, so compare 3-epoch means
    assert sum(loss[-3:]) < 0.85 * sum(loss[:3]), loss
    assert "mAP" in res.history[-1] and "mAP" not in res.history[0]


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    data = write_toy_reid_dataset(tmp_path / "toy", num_ids=8, size=(32, 32))
    straight = train(_cfg(data, tmp_path / "a"), progress=False)
    first = train(_cfg(data, tmp_path / "b"), progress=False, stop_after_epoch=1)
    assert len(first.history) == 1
    resumed = train(_cfg(data, tmp_path / "b", resume=str(tmp_path / "b" / "last.pt")), progress=False)
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6, rtol=0), k
    # outputs: checkpoints, a two-epoch metrics.csv (the resumed run keeps epoch 1's row), the plot
    rows = list(csv.DictReader((tmp_path / "b" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0.0 <= float(r["mAP"]) <= 1.0 and float(r["loss"]) > 0 for r in rows)
    for name in ("last.pt", "best.pt", "training.png"):
        assert (tmp_path / "b" / name).stat().st_size > 0, name
    assert (tmp_path / "b" / "training.png").read_bytes()[:4] == b"\x89PNG"


def test_weight_average_is_what_is_validated_kept_and_resumed(tmp_path: Path) -> None:
    """With ``ema`` the average of the weights is validated and kept as best.pt, last.pt keeps the trained weights
    beside it, and an interrupted run resumes into the same average as an uninterrupted one."""
    from reidd.reid.checkpoint import load_checkpoint

    data = write_toy_reid_dataset(tmp_path / "toy", num_ids=8, size=(32, 32))
    straight = train(_cfg(data, tmp_path / "a", ema=0.5), progress=False)
    trained, meta = load_checkpoint(tmp_path / "a" / "last.pt")
    best, _ = load_checkpoint(tmp_path / "a" / "best.pt")
    avg = straight.model.state_dict()
    assert meta["averaged"].keys() == avg.keys()
    moved = [k for k, v in avg.items() if v.is_floating_point() and not torch.equal(v, trained.state_dict()[k])]
    assert moved, "the average is the trained weights"
    for k, v in avg.items():
        assert torch.equal(meta["averaged"][k], v.cpu()), k
    if straight.best_epoch == 2:
        assert all(torch.equal(best.state_dict()[k], v) for k, v in avg.items())
    ds = load_dataset(data, val_identities=4)
    assert validate(straight.model, ds, device=torch.device("cpu"))["mAP"] == pytest.approx(
        straight.history[-1]["mAP"], abs=1e-6)
    train(_cfg(data, tmp_path / "b", ema=0.5), progress=False, stop_after_epoch=1)
    resumed = train(_cfg(data, tmp_path / "b", ema=0.5, resume=str(tmp_path / "b" / "last.pt")), progress=False)
    for k, v in avg.items():
        assert torch.allclose(v.float(), resumed.model.state_dict()[k].float(), atol=1e-6, rtol=0), k
    # a last.pt without an average, or with one that does not fit, is refused naming the file
    from reidd.reid.checkpoint import CheckpointMismatch

    with pytest.raises(CheckpointMismatch, match="trained without ema"):
        train(_cfg(data, tmp_path / "c", ema=0.5, resume=str(_plain_last(data, tmp_path / "plain"))), progress=False)
    obj = torch.load(tmp_path / "b" / "last.pt", map_location="cpu", weights_only=True)
    obj["averaged"] = {"nothing": torch.zeros(1)}
    torch.save(obj, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointMismatch, match="damaged.pt: its weight average does not fit"):
        train(_cfg(data, tmp_path / "d", ema=0.5, resume=str(tmp_path / "damaged.pt")), progress=False)


def _plain_last(data: Path, out: Path) -> Path:
    train(_cfg(data, out), progress=False, stop_after_epoch=1)
    return out / "last.pt"


@pytest.mark.skipif(not VN.is_dir(), reason="shared vn-2cam crops not present")
def test_short_training_on_vn2cam_beats_imagenet(tmp_path: Path) -> None:
    from reidd.reid.model import ModelSpec, build_model, pick_device

    ds = load_dataset(VN, val_identities=107, seed=0)  # 400 training identities, 107 held back
    assert ds.num_train_pids == 400
    # 2 epochs x 25 iterations of 16 ids x 2 images at 96x96, stem + first five stages frozen
    cfg = TrainConfig(data=str(VN), input_size=(96, 96), epochs=2, eval_every=2, batch_p=16, batch_k=2,
                      lr=1e-3, warmup_epochs=0, threads=1, freeze_stages=6, out=str(tmp_path / "vn"))
    base = validate(build_model(ModelSpec(input_size=(96, 96))), ds, device=pick_device("cpu"))
    res = train(cfg, dataset=ds, progress=False)
    trained = res.history[-1]
    assert trained["mAP"] > base["mAP"] + 0.05, (base, trained)
