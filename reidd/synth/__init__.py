"""Synthetic multi-camera traffic scenes with ground truth (tests, demo).

``generate_scene`` writes per-camera videos, AI City MTMC and MOTChallenge
ground truth, a ready ``config.yaml`` and ``scene.json``; ``register`` adds the
``reidd synth`` subcommand. The renderer (OpenCV) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reidd.synth.cli import register

if TYPE_CHECKING:
    from reidd.synth.scene import Scene, generate_scene

__all__ = ["Scene", "generate_scene", "register"]


def __getattr__(name: str) -> Any:
    if name in ("Scene", "generate_scene"):
        from reidd.synth import scene

        return getattr(scene, name)
    raise AttributeError(f"module 'reidd.synth' has no attribute {name!r}")
