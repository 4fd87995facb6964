"""Datasets, P x K sampling, losses and the training loop (loss falls, exact resume, outputs)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from reidd.train.config import TrainConfig
from reidd.train.datasets import DatasetError, load_dataset, split_identities
from reidd.train.samplers import PKSampler
from reidd.train.synthetic import write_toy_reid_dataset
from reidd.train.trainer import train, validate

ASSETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets"
VN = ASSETS / "reid" / "vn-2cam"



pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _img(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((16, 12, 3), value, np.uint8))


# --------------------------------------------------------------------------- datasets
def test_veri_layout(tmp_path: Path) -> None:
    root = tmp_path / "VeRi"
    for name in ("0002_c002_00030600_0.jpg", "0002_c003_00030700_0.jpg", "0007_c001_00001000_1.jpg",
                 "0007_c004_00001500_0.jpg"):
        _img(root / "image_train" / name)
    _img(root / "image_query" / "0010_c001_00000100_0.jpg")
    for name in ("0010_c002_00000200_0.jpg", "0010_c002_00000250_0.jpg", "0011_c001_00000300_0.jpg"):
        _img(root / "image_test" / name)
    (root / "name_test.txt").write_text("0010_c002_00000200_0.jpg\n0010_c002_00000250_0.jpg\n0011_c001_00000300_0.jpg\n")
    (root / "test_track.txt").write_text("0010_c002_00000200_0.jpg 0010_c002_00000250_0.jpg\n")
    ds = load_dataset(root)
    assert ds.name.endswith(":veri776")
    assert sorted((s.pid, s.camid) for s in ds.train) == [(0, 2), (0, 3), (1, 1), (1, 4)]  # pids remapped
    assert [(s.pid, s.camid) for s in ds.query] == [(10, 1)]
    assert [(s.pid, s.camid, s.track) for s in ds.gallery] == [
        (10, 2, "0010_c002_00000200_0.jpg"), (10, 2, "0010_c002_00000200_0.jpg"), (11, 1, None)]


def test_csv_manifest_and_roles(tmp_path: Path) -> None:
    rows = []
    for pid in ("car_0001", "bus_0001", "car_0002", "truck_0003", "car_0004"):
        for cam in (1, 2):
            rel = f"images/{pid}_cam{cam}.jpg"
            _img(tmp_path / rel)
            rows.append({"path": rel, "pid": pid, "vehicle_type": pid.split("_")[0], "camid": cam})
    with (tmp_path / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "pid", "vehicle_type", "camid"])
        w.writeheader()
        w.writerows(rows)
    ds = load_dataset(tmp_path, val_identities=2, seed=3)
    assert ds.name.endswith(":csv")
    assert ds.num_train_pids == 3 and sorted({s.pid for s in ds.train}) == [0, 1, 2]
    assert len(ds.query) == 2 and len(ds.gallery) == 2  # one image per camera: one query, one gallery
    for q in ds.query:  # every query has a positive from another camera in the gallery
        assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
    # "bus_0001" and "car_0001" are different identities
    assert len({Path(s.path).name.rsplit("_", 1)[0] for s in ds.train + ds.query}) == 5
    # explicit roles are honoured
    with (tmp_path / "roles.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "pid", "camid", "track", "role"])
        w.writerow(["images/car_0001_cam1.jpg", "car_0001", "c1", "t1", "query"])
        w.writerow(["images/car_0001_cam2.jpg", "car_0001", "c2", "t2", "gallery"])
        w.writerow(["images/bus_0001_cam1.jpg", "bus_0001", "c1", "", "train"])
    ds2 = load_dataset(tmp_path / "roles.csv")
    assert [(s.camid, s.track) for s in ds2.query] == [(1, "t1")] and [s.camid for s in ds2.gallery] == [2]
    assert len(ds2.train) == 1


def test_vehicleid_layout(tmp_path: Path) -> None:
    split = tmp_path / "train_test_split"
    split.mkdir()
    (split / "train_list.txt").write_text("a1 5\na2 5\nb1 9\n")
    (split / "test_list_800.txt").write_text("c1 20\nc2 20\nc3 20\nd1 21\nd2 21\n")
    for n in ("a1", "a2", "b1", "c1", "c2", "c3", "d1", "d2"):
        _img(tmp_path / "image" / f"{n}.jpg")
    ds = load_dataset(tmp_path)
    assert ds.name.endswith(":vehicleid") and ds.num_train_pids == 2
    assert sorted(s.pid for s in ds.gallery) == [20, 21]  # one gallery image per identity
    assert len(ds.query) == 3 and all(s.camid == 1 for s in ds.query)


def test_cityflow_layout_splits_train(tmp_path: Path) -> None:
    items = []
    for i, (pid, cam) in enumerate([(1, 1), (1, 2), (2, 1), (2, 3), (3, 2), (3, 4)]):
        name = f"{i:06d}.jpg"
        _img(tmp_path / "image_train" / name)
        items.append(f'<Item imageName="{name}" vehicleID="{pid:04d}" cameraID="c{cam:03d}" />')
    (tmp_path / "train_label.xml").write_text(
        '<?xml version="1.0" encoding="gb2312"?><TrainingImages><Items>' + "".join(items) + "</Items></TrainingImages>")
    ds = load_dataset(tmp_path, val_identities=1)
    assert ds.name.endswith(":cityflow")
    assert ds.num_train_pids == 2 and len(ds.query) == 1 and len(ds.gallery) == 1
    assert ds.query[0].camid != ds.gallery[0].camid


def test_identity_disjoint_split_is_seeded(tmp_path: Path) -> None:
    write_toy_reid_dataset(tmp_path, num_ids=10, cams=3, per_cam=2, size=(16, 16))
    ds = load_dataset(tmp_path, val_identities=0.3, seed=1)
    train_files = {Path(s.path).name.split("_")[0] for s in ds.train}
    val_files = {Path(s.path).name.split("_")[0] for s in ds.query + ds.gallery}
    assert len(val_files) == 3 and not train_files & val_files
    # 3 cameras x 2 images: a query per camera, each with cross-camera positives in the gallery
    assert len(ds.query) == 9 and len(ds.gallery) == 9
    assert all(any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery) for q in ds.query)
    again = load_dataset(tmp_path, val_identities=0.3, seed=1)
    other = load_dataset(tmp_path, val_identities=0.3, seed=2)
    assert again.query == ds.query
    assert {s.pid for s in other.query} != {s.pid for s in ds.query} or other.query != ds.query
    with pytest.raises(DatasetError, match="val_identities"):
        split_identities(ds.train, 50, 0)


def test_corrupt_image_error_names_file_or_is_skipped(tmp_path: Path) -> None:
    write_toy_reid_dataset(tmp_path, num_ids=6, size=(16, 16))
    bad = tmp_path / "0003_cam1_v0.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match="0003_cam1_v0.jpg"):
        load_dataset(tmp_path, val_identities=2)
    ds = load_dataset(tmp_path, val_identities=2, on_bad="skip")
    assert len(ds.skipped) == 1 and "0003_cam1_v0.jpg" in ds.skipped[0]
    assert len(ds.train) + len(ds.query) + len(ds.gallery) == 6 * 4 - 1
    (tmp_path / "odd-name.jpg").write_bytes(bad.read_bytes())
    with pytest.raises(DatasetError, match="odd-name.jpg"):
        load_dataset(tmp_path, on_bad="skip")


def test_pk_sampler() -> None:
    pids = [i // 3 for i in range(30)] + [10]  # 10 identities x 3 images + one with a single image
    sampler = PKSampler(pids, p=4, k=2, seed=7)
    sampler.set_epoch(0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    for b in batches:
        ids = [pids[i] for i in b]
        assert len(b) == 8 and len(set(ids)) == 4 and all(ids.count(x) == 2 for x in set(ids))
    assert batches == list(sampler)  # deterministic for an epoch
    sampler.set_epoch(1)
    assert list(sampler) != batches
    with pytest.raises(ValueError, match="only 11 identities"):
        PKSampler(pids, p=12, k=2)


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


def test_folder_identity_is_the_whole_name_before_cam(tmp_path: Path) -> None:
    """``car_0012`` and ``bus_0012`` are two vehicles; a suffix after ``_cam<k>`` is another image of one."""
    for name in ("car_0012_cam1.jpg", "car_0012_cam2.jpg", "bus_0012_cam1.jpg", "bus_0012_cam2.jpg",
                 "car_0012_cam1_003.jpg", "van_7_cam2-b.jpg", "van_7_cam1.jpg"):
        _img(tmp_path / "all" / name)
    ds = load_dataset(tmp_path, layout="folder", val_identities=1)
    by_pid: dict[tuple[bool, int], set[tuple[str, int]]] = {}  # train and validation are labelled apart
    for s in ds.train + ds.query + ds.gallery:
        by_pid.setdefault((s in ds.train, s.pid), set()).add((Path(s.path).name, s.camid))
    groups = sorted(sorted(v) for v in by_pid.values())
    assert groups == [
        [("bus_0012_cam1.jpg", 1), ("bus_0012_cam2.jpg", 2)],
        [("car_0012_cam1.jpg", 1), ("car_0012_cam1_003.jpg", 1), ("car_0012_cam2.jpg", 2)],
        [("van_7_cam1.jpg", 1), ("van_7_cam2-b.jpg", 2)],
    ]
    (tmp_path / "all" / "nocamera.jpg").write_bytes((tmp_path / "all" / "van_7_cam1.jpg").read_bytes())
    with pytest.raises(DatasetError, match=r"nocamera\.jpg.*<identity>_cam<k>"):
        load_dataset(tmp_path, layout="folder", val_identities=1)


@pytest.mark.parametrize("recipe", sorted((Path(__file__).resolve().parents[1] / "configs" / "train").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_recipes_are_valid_configs(recipe: Path) -> None:
    from reidd.train.config import load_train_config

    cfg = load_train_config(recipe)
    assert cfg.epochs >= 1 and cfg.input_size[0] >= 32 and cfg.out


def test_pk_sampler_min_batches_revisits_identities() -> None:
    pids = [i // 3 for i in range(3 * 6)]  # 6 identities x 3 images
    short = PKSampler(pids, 4, 2, seed=1)
    assert len(short) == 1 == len(list(short))
    long = PKSampler(pids, 4, 2, seed=1, min_batches=5)
    batches = list(long)
    assert len(long) == 5 == len(batches)
    for b in batches:
        ids = [pids[i] for i in b]
        assert len(b) == 8 and len(set(ids)) == 4 and all(ids.count(p) == 2 for p in set(ids))
    assert len({pids[i] for b in batches for i in b}) == 6  # every identity comes round
    assert len(PKSampler(pids, 4, 2, min_batches=5, max_batches=3)) == 3
