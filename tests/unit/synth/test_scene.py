"""reidd.synth.scene: same seed, same bytes; bad arguments name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from reidd.synth import generate_scene


SMALL = dict(cameras=2, vehicles=4, fps=10.0, size=(320, 180), progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    a = generate_scene(tmp_path / "a", seed=11, **SMALL)
    b = generate_scene(tmp_path / "b", seed=11, **SMALL)
    c = generate_scene(tmp_path / "c", seed=12, **SMALL)
    fa, fb, fc = _files(a.out_dir), _files(b.out_dir), _files(c.out_dir)
    assert {"c001.mp4", "c002.mp4", "gt/gt_mtmc.txt", "gt/c001.txt", "config.yaml", "scene.json"} <= set(fa)
    assert fa == fb
    for name in ("c001.mp4", "c002.mp4", "gt/gt_mtmc.txt", "backgrounds/c001.png"):
        assert fa[name] != fc[name], name


def test_bad_arguments_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        generate_scene(tmp_path, size=(321, 180), progress=False)
    with pytest.raises(ValueError, match="transit_s"):
        generate_scene(tmp_path, transit_s=(5.0, 2.0), progress=False)
    with pytest.raises(ValueError, match="manifest.csv"):
        generate_scene(tmp_path, crops_dir=tmp_path, progress=False)
