"""reidd.train.datasets: VeRi, VehicleID, CityFlow and CSV layouts, seeded identity splits, corrupt images."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidd.train.datasets import DatasetError, load_dataset, split_identities
from reidd.train.synthetic import write_toy_reid_dataset


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


def test_val_folds_are_disjoint_and_cover_the_identities(tmp_path: Path) -> None:
    write_toy_reid_dataset(tmp_path, num_ids=10, cams=2, per_cam=1, size=(16, 16))
    held = []
    for fold in range(3):
        ds = load_dataset(tmp_path, val_identities=3, seed=4, val_fold=fold)
        names = {Path(s.path).name.split("_")[0] for s in ds.query + ds.gallery}
        train_names = {Path(s.path).name.split("_")[0] for s in ds.train}
        assert len(names) == 3 and not names & train_names and len(train_names) == 7
        held.append(names)
    assert not held[0] & held[1] and not held[0] & held[2] and not held[1] & held[2]
    # fold 0 is the split without folds (earlier versions' validation set)
    assert load_dataset(tmp_path, val_identities=3, seed=4).query == load_dataset(
        tmp_path, val_identities=3, seed=4, val_fold=0).query
    with pytest.raises(DatasetError, match=r"val_fold=3: .* folds 0-2"):
        load_dataset(tmp_path, val_identities=3, seed=4, val_fold=3)
