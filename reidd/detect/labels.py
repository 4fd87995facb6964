"""Detector labels in the words reidd speaks: COCO class ids (the event's ``cls``, the class evidence of
association). Models with coarser labels (Intel's Open Model Zoo detectors: vehicle / bike / person) map
them here; ``detector.labels`` overrides a table or supplies one for another model. Imports nothing heavy:
the config reads it to check ``detector.labels``."""

from __future__ import annotations

from pathlib import Path

#: Names ``detector.labels`` accepts, and the COCO id each stands for (-1: drop the box).
LABEL_NAMES: dict[str, int] = {
    "person": 0, "bicycle": 1, "car": 2, "motorcycle": 3, "bus": 5, "truck": 7,
    "vehicle": 2,  # a model that does not tell car, bus and truck apart: reported as car
    "two-wheeler": 3,  # bike / motorbike / "non-vehicle" of the Open Model Zoo: reported as motorcycle
    "ignore": -1,
}

#: The shipped Open Model Zoo detectors' label ids, by the .xml's file name: their model cards, checked against
#: what each reports on the real clips and the benchmark scenes (boxes matched to ground-truth cars, trucks and
#: motorbikes). crossroad-1016's card says "0 non-vehicle, 1 vehicle, 2 person", but its IR reports 1 for cars
#: and trucks, 2 for the riders on motorbikes (tall boxes) and 3 for the motorbikes: the table follows the IR.
MODEL_LABELS: dict[str, dict[int, str]] = {
    "person-vehicle-bike-detection-crossroad-1016": {1: "vehicle", 2: "person", 3: "two-wheeler"},
    "person-vehicle-bike-detection-crossroad-0078": {1: "person", 2: "vehicle", 3: "two-wheeler"},
    "vehicle-detection-0202": {0: "vehicle"},
    "person-vehicle-bike-detection-2004": {0: "vehicle", 1: "person", 2: "two-wheeler"},
}


def label_table(labels: dict[int, str] | None, model: str | Path) -> dict[int, int] | None:
    """Model label id -> COCO id for ``model`` (an .xml path): ``labels`` when given, else the model's row of
    :data:`MODEL_LABELS`, else None (unknown: the config must say)."""
    names = labels if labels is not None else MODEL_LABELS.get(Path(model).stem)
    if names is None:
        return None
    return {int(k): LABEL_NAMES[v] for k, v in names.items() if LABEL_NAMES[v] >= 0}
