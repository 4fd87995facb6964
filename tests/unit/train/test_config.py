"""reidd.train.config: the shipped training recipes are valid configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import ROOT


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs" / "train").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_recipes_are_valid_configs(recipe: Path) -> None:
    from reidd.train.config import load_train_config

    cfg = load_train_config(recipe)
    assert cfg.epochs >= 1 and cfg.input_size[0] >= 32 and cfg.out
