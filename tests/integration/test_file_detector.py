"""Replays with detections from MOTChallenge files (``detector.type: file``): config errors naming the folder
and camera file, and `reidd rematch` reproducing a run's association."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reidd.config import ConfigError, load_config

from support import ROOT, write_text as write


def test_config_names_the_missing_folder_and_camera_file(tmp_path: Path) -> None:
    video = write(tmp_path / "v.mp4", "x")
    base = {"cameras": [{"id": "c1", "url": str(video)}, {"id": "c2", "url": str(video)}]}
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({**base, "detector": {"type": "file"}}))
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert ("detector.detections_dir", "required when detector.type is 'file'") in exc.value.problems
    (tmp_path / "dets").mkdir()
    write(tmp_path / "dets" / "c1.txt", "1,-1,1,1,5,5,1\n")
    p.write_text(yaml.safe_dump({**base, "detector": {"type": "file", "detections_dir": "dets"}}))
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert [path for path, _ in exc.value.problems] == ["cameras[1]"]
    assert "no detection file for camera 'c2'" in exc.value.problems[0][1]
    r = subprocess.run([sys.executable, "-m", "reidd.cli", "check-config", str(p)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2 and "cameras[1]" in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_replay_with_ground_truth_boxes_and_rematch_reproduces_it(scene3, tmp_path: Path) -> None:
    """Ground-truth boxes as detections: tracking + re-ID + association alone. The recorded embeddings fed
    back through ``reidd rematch`` with the same settings give the same events and global ids."""
    from reidd.daemon import run_replay
    from reidd.evaluate.mtmc import evaluate_mtmc

    data = yaml.safe_load(Path(scene3.config).read_text())
    data["detector"] = {"type": "file", "detections_dir": str(Path(scene3.gt_mot[scene3.camera_ids[0]]).parent)}
    data["reid"] = {"input_size": [128, 128], "max_batch": 32}
    data["tracklets"] = {"max_crops": 4}
    data["metrics"] = {"enabled": False}
    cfg_path = Path(scene3.out_dir) / f"file-{tmp_path.name}.yaml"  # camera urls are relative to the scene
    cfg_path.write_text(yaml.safe_dump(data))
    out = tmp_path / "replay"
    code, _ = run_replay(load_config(cfg_path), out, events_jsonl=out / "events.jsonl", mtmc_path=out / "mtmc.txt",
                         save_crops=False, save_embeddings=True)
    assert code == 0
    res = evaluate_mtmc(scene3.gt_mtmc, out / "mtmc.txt")
    assert res["mota"] >= 0.9, res  # the boxes are the truth: only tracking can lose any
    assert res["transition_accuracy"] >= 0.85 and res["false_merges"] <= 1, res
    r = subprocess.run([sys.executable, "-m", "reidd.cli", "rematch", "--config", str(cfg_path), "--embeddings",
                        str(out / "embeddings.jsonl"), "--out", str(tmp_path / "re"), "--output-mtmc",
                        str(tmp_path / "re" / "mtmc.txt"), "--events-jsonl", str(tmp_path / "re" / "events.jsonl")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "re" / "mtmc.txt").read_bytes() == (out / "mtmc.txt").read_bytes()
    assert (tmp_path / "re" / "events.jsonl").read_bytes() == (out / "events.jsonl").read_bytes()
    # decisions come as soon as nothing to come can change them (matching.early: the cameras' progress is in the
    # log, so the rematch above repeats them), most well before the longest wait
    from reidd.match.policy import AssociationPolicy

    wait = AssociationPolicy(load_config(cfg_path).matching).wait_s()
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    lat = sorted(e["association"]["decided_ts"] - e["last_ts"] for e in events if e["type"] == "tracklet")
    assert lat[len(lat) // 2] < wait / 2 and lat[-1] <= wait + 0.2, (lat, wait)
    # another setting changes the outcome: nothing links when no score can pass
    strict = yaml.safe_load(cfg_path.read_text())
    strict["matching"] = {**strict.get("matching", {}), "min_score": 1000.0}
    cfg2 = Path(scene3.out_dir) / f"strict-{tmp_path.name}.yaml"
    cfg2.write_text(yaml.safe_dump(strict))
    r = subprocess.run([sys.executable, "-m", "reidd.cli", "rematch", "--config", str(cfg2), "--embeddings",
                        str(out / "embeddings.jsonl"), "--out", str(tmp_path / "re2")], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0 and "(0 cross-camera matches)" in r.stdout, r.stdout + r.stderr
    # a damaged log is refused with its file and line
    bad = tmp_path / "bad.jsonl"
    lines = (out / "embeddings.jsonl").read_text().splitlines()
    bad.write_text("\n".join([lines[0], '{"q": {"cam": "c1"}}']) + "\n")
    r = subprocess.run([sys.executable, "-m", "reidd.cli", "rematch", "--config", str(cfg_path), "--embeddings",
                        str(bad), "--out", str(tmp_path / "re3")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and f"{bad}:2:" in r.stderr and "Traceback" not in r.stderr
