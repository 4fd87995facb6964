"""Vehicle re-ID datasets: VeRi-776, VehicleID, CityFlow-ReID (AI City), generic folders and CSV manifests.

Every reader returns a :class:`ReidDataset` with ``train`` (pids remapped to 0..C-1), ``query``
and ``gallery`` lists of :class:`Sample`. Layouts without their own query/gallery get an
identity-disjoint split (see :func:`split_identities`), so no validation identity is ever trained on.

Layouts (``layout="auto"`` picks the first that matches):

* ``veri776``: ``image_train/``, ``image_query/``, ``image_test/`` (and optional ``name_*.txt``,
  ``test_track.txt``); names like ``0002_c002_00030600_0.jpg`` (pid 2, camera 2).
* ``vehicleid``: ``train_test_split/train_list.txt`` and ``test_list_{800,1600,2400}.txt`` (lines
  ``name pid``), images ``image/<name>.jpg``. Query/gallery: one random image per test identity goes to
  the gallery, the others are queries (seeded); query camid 1, gallery camid 0 (no cameras in VehicleID).
* ``cityflow``: ``image_train/`` + ``train_label.xml`` (``<Item imageName=.. vehicleID=.. cameraID=..>``);
  ``image_query/`` + ``query_label.xml`` and ``image_test/`` + ``test_label.xml`` when present (with
  ``test_track.txt`` for gallery tracks), otherwise the training identities are split.
* ``csv``: ``manifest.csv`` (or any ``*.csv`` given as root) with columns ``path,pid,camid[,track][,role]``;
  paths relative to the CSV; ``role`` ``query``/``gallery`` rows form the evaluation set, others train.
* ``folder``: images named ``<identity>_cam<k>[_<more>].<ext>`` anywhere below root. The identity is the
  whole name before ``_cam``: ``car_0012_cam1.jpg`` and ``bus_0012_cam1.jpg`` are two vehicles, and
  ``car_0012_cam1_003.jpg`` is another image of the first. ``query/`` and ``gallery/`` sub-folders, when
  both exist, form the evaluation set.
"""

from __future__ import annotations

import csv
import random
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

LAYOUTS = ("auto", "veri776", "vehicleid", "cityflow", "csv", "folder")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_VERI_RE = re.compile(r"^(\d+)_c(\d+)_")
_FOLDER_RE = re.compile(r"^(.+?)_cam(\d+)(?:[_.-].*)?$", re.IGNORECASE)
_FOLDER_PATTERN = "<identity>_cam<k>[_<more>].<ext>"


class DatasetError(ValueError):
    """A dataset that cannot be read; the message names the file."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One image: its path, integer identity, integer camera and optional track id."""

    path: str
    pid: int
    camid: int
    track: str | None = None


@dataclass
class ReidDataset:
    """Train samples (pids 0..C-1) and an evaluation query/gallery split."""

    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    name: str
    skipped: list[str] = field(default_factory=list)  # unreadable images left out (on_bad="skip")

    @property
    def num_train_pids(self) -> int:
        return len({s.pid for s in self.train})

    def summary(self) -> str:
        def line(name: str, ss: list[Sample]) -> str:
            return (f"  {name:<8} {len(ss):>7} images {len({s.pid for s in ss}):>6} ids "
                    f"{len({s.camid for s in ss}):>4} cams")
        parts = [f"dataset {self.name}", line("train", self.train), line("query", self.query),
                 line("gallery", self.gallery)]
        if self.skipped:
            parts.append(f"  skipped {len(self.skipped)} unreadable image(s), e.g. {self.skipped[0]}")
        return "\n".join(parts)


# --------------------------------------------------------------------------- helpers
def _relabel(samples: list[Sample]) -> list[Sample]:
    """Map train pids to 0..C-1 in sorted order of the original pids."""
    ids = {p: i for i, p in enumerate(sorted({s.pid for s in samples}))}
    return [replace(s, pid=ids[s.pid]) for s in samples]


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _names(root: Path, folder: str, listing: str) -> list[Path]:
    lst = root / listing
    if lst.is_file():
        return [root / folder / ln.strip() for ln in lst.read_text().splitlines() if ln.strip()]
    if not (root / folder).is_dir():
        raise DatasetError(f"{root / folder}: folder not found")
    return _list_images(root / folder)


def _check(samples: list[Sample], on_bad: str, skipped: list[str], progress: bool) -> list[Sample]:
    """Open every image header (cheap); a missing/corrupt one raises naming it, or is skipped."""
    from PIL import Image
    from tqdm import tqdm

    good: list[Sample] = []
    for s in tqdm(samples, desc="check images", unit="img", disable=not progress, leave=False):
        try:
            with Image.open(s.path) as im:
                im.verify()
        except Exception as exc:
            msg = f"{s.path}: {'missing' if not Path(s.path).exists() else 'unreadable image'} ({type(exc).__name__})"
            if on_bad == "error":
                raise DatasetError(msg + " -- fix or remove it, or load with on_bad='skip'") from None
            skipped.append(msg)
            continue
        good.append(s)
    return good


def split_identities(
    samples: list[Sample], val_identities: float, seed: int, fold: int = 0
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Identity-disjoint split into (train, query, gallery).

    ``val_identities``: a fraction (< 1) of the identities or a count (>= 1), chosen at random by ``seed``.
    ``fold``: which block of that size in the seeded order of identities is held out (0: the first), so that
    folds 0, 1, 2, ... of one seed are disjoint validation sets (k-fold over identities) and fold 0 is the
    split of earlier versions.
    For each validation identity, cameras are visited in random order and one random image of a camera
    becomes a query when images of *another* camera remain in the gallery; all other images are gallery.
    So every query has a cross-camera positive, and an identity seen by one camera only is a distractor.
    """
    pids = sorted({s.pid for s in samples})
    n_val = int(round(val_identities * len(pids))) if val_identities < 1 else int(val_identities)
    if not 0 < n_val < len(pids):
        raise DatasetError(
            f"val_identities={val_identities} gives {n_val} of {len(pids)} identities for validation; "
            "need at least one for training and one for validation"
        )
    if fold < 0 or (fold + 1) * n_val > len(pids):
        raise DatasetError(
            f"val_fold={fold}: folds of {n_val} identities; {len(pids)} identities hold folds 0-{len(pids) // n_val - 1}"
        )
    rng = random.Random(seed)
    shuffled = pids[:]
    rng.shuffle(shuffled)
    val = set(shuffled[fold * n_val:(fold + 1) * n_val])
    train = [s for s in samples if s.pid not in val]
    by_pid: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.pid in val:
            by_pid[s.pid].append(s)
    query: list[Sample] = []
    gallery: list[Sample] = []
    for pid in sorted(by_pid):
        by_cam: dict[int, list[Sample]] = defaultdict(list)
        for s in by_pid[pid]:
            by_cam[s.camid].append(s)
        cams = sorted(by_cam)
        rng.shuffle(cams)
        chosen: set[str] = set()
        for cam in cams:
            pick = rng.choice(by_cam[cam])
            others = [s for c in by_cam if c != cam for s in by_cam[c] if s.path not in chosen]
            if others:
                chosen.add(pick.path)
        for s in by_pid[pid]:
            (query if s.path in chosen else gallery).append(s)
    return train, query, gallery


# --------------------------------------------------------------------------- readers
def _veri_samples(paths: list[Path], tracks: dict[str, str] | None = None) -> list[Sample]:
    out = []
    for p in paths:
        m = _VERI_RE.match(p.name)
        if not m:
            raise DatasetError(f"{p}: name does not look like VeRi '<pid>_c<cam>_<frame>_<n>.jpg'")
        out.append(Sample(str(p), int(m.group(1)), int(m.group(2)), (tracks or {}).get(p.name)))
    return out


def _read_tracks(path: Path) -> dict[str, str]:
    """``test_track.txt``: each line lists the images of one track; the track id is the first name."""
    tracks: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            names = line.split()
            for n in names:
                tracks[n] = names[0]
    return tracks


def _read_veri(root: Path) -> tuple[list[Sample], list[Sample], list[Sample]]:
    train = _veri_samples(_names(root, "image_train", "name_train.txt"))
    query = _veri_samples(_names(root, "image_query", "name_query.txt"))
    gallery = _veri_samples(_names(root, "image_test", "name_test.txt"), _read_tracks(root / "test_track.txt"))
    return train, query, gallery


def _read_vehicleid(root: Path, test_size: int, seed: int) -> tuple[list[Sample], list[Sample], list[Sample]]:
    split = root / "train_test_split"

    def read(name: str) -> list[Sample]:
        f = split / name
        if not f.is_file():
            raise DatasetError(f"{f}: list file not found")
        out = []
        for i, line in enumerate(f.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DatasetError(f"{f}:{i}: expected '<image name> <pid>', got {line!r}")
            out.append(Sample(str(root / "image" / f"{parts[0]}.jpg"), int(parts[1]), 0))
        return out

    train = read("train_list.txt")
    test = read(f"test_list_{test_size}.txt")
    rng = random.Random(seed)
    by_pid: dict[int, list[Sample]] = defaultdict(list)
    for s in test:
        by_pid[s.pid].append(s)
    query, gallery = [], []
    for pid in sorted(by_pid):
        items = by_pid[pid]
        g = rng.randrange(len(items))
        for j, s in enumerate(items):
            if j == g:
                gallery.append(replace(s, camid=0))
            else:
                query.append(replace(s, camid=1))
    return train, query, gallery


def _read_cityflow_xml(xml_path: Path, folder: Path) -> list[Sample]:
    try:
        # the AI City label files declare gb2312 encoding; parse the bytes leniently
        text = xml_path.read_bytes().decode("utf-8", errors="replace")
        text = re.sub(r"encoding=\"[^\"]+\"", "", text, count=1)
        tree = ET.fromstring(text)
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"{xml_path}: cannot parse label XML ({exc})") from exc
    out = []
    for item in tree.iter("Item"):
        try:
            name, pid, cam = item.attrib["imageName"], item.attrib["vehicleID"], item.attrib["cameraID"]
        except KeyError as exc:
            raise DatasetError(f"{xml_path}: <Item> without attribute {exc}") from None
        out.append(Sample(str(folder / name), int(pid), int(cam.lstrip("cC"))))
    if not out:
        raise DatasetError(f"{xml_path}: no <Item> entries")
    return out


def _read_cityflow(root: Path, val_identities: float, seed: int, fold: int = 0) -> tuple[list[Sample], list[Sample], list[Sample]]:
    train = _read_cityflow_xml(root / "train_label.xml", root / "image_train")
    if (root / "query_label.xml").is_file() and (root / "test_label.xml").is_file():
        query = _read_cityflow_xml(root / "query_label.xml", root / "image_query")
        tracks = _read_tracks(root / "test_track.txt")
        gallery = [replace(s, track=tracks.get(Path(s.path).name))
                   for s in _read_cityflow_xml(root / "test_label.xml", root / "image_test")]
        return train, query, gallery
    return split_identities(train, val_identities, seed, fold)


def _read_csv(csv_path: Path, val_identities: float, seed: int, fold: int = 0) -> tuple[list[Sample], list[Sample], list[Sample]]:
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "pid", "camid"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{csv_path}: missing column(s) {sorted(missing)} (need path,pid,camid[,track][,role])")
        rows = list(reader)
    if not rows:
        raise DatasetError(f"{csv_path}: no rows")
    pid_codes = {p: i for i, p in enumerate(sorted({r["pid"] for r in rows}, key=_natural))}
    cam_codes: dict[str, int] = {}
    for c in sorted({r["camid"] for r in rows}, key=_natural):
        digits = re.sub(r"\D", "", c)
        cam_codes[c] = int(digits) if digits else len(cam_codes)
    if len(set(cam_codes.values())) != len(cam_codes):
        cam_codes = {c: i for i, c in enumerate(cam_codes)}
    groups: dict[str, list[Sample]] = defaultdict(list)
    for i, r in enumerate(rows, 2):
        if not r["path"]:
            raise DatasetError(f"{csv_path}:{i}: empty path")
        track = (r.get("track") or "").strip() or None
        s = Sample(str(csv_path.parent / r["path"]), pid_codes[r["pid"]], cam_codes[r["camid"]], track)
        groups[(r.get("role") or "train").strip().lower()].append(s)
    if groups.get("query") and groups.get("gallery"):
        return groups.get("train", []), groups["query"], groups["gallery"]
    return split_identities([s for g in groups.values() for s in g], val_identities, seed, fold)


def _natural(s: str) -> tuple[int, int | str]:
    return (0, int(s)) if s.isdigit() else (1, s)


def _folder_samples(paths: list[Path]) -> list[tuple[Path, str, int]]:
    out = []
    for p in paths:
        m = _FOLDER_RE.match(p.stem)
        if not m:
            raise DatasetError(f"{p}: name does not match '{_FOLDER_PATTERN}'")
        out.append((p, m.group(1), int(m.group(2))))
    return out


def _read_folder(root: Path, val_identities: float, seed: int, fold: int = 0) -> tuple[list[Sample], list[Sample], list[Sample]]:
    has_eval = (root / "query").is_dir() and (root / "gallery").is_dir()
    parts = {"query": root / "query", "gallery": root / "gallery"} if has_eval else {}
    if has_eval:
        parts["train"] = root / "train"
        listed = {k: _folder_samples(_list_images(v) if v.is_dir() else []) for k, v in parts.items()}
    else:
        listed = {"all": _folder_samples(_list_images(root))}
    all_ids = sorted({pid for items in listed.values() for _, pid, _ in items}, key=_natural)
    if not all_ids:
        raise DatasetError(f"{root}: no images named '{_FOLDER_PATTERN}' found")
    code = {p: i for i, p in enumerate(all_ids)}
    samples = {k: [Sample(str(p), code[pid], cam) for p, pid, cam in v] for k, v in listed.items()}
    if has_eval:
        return samples["train"], samples["query"], samples["gallery"]
    return split_identities(samples["all"], val_identities, seed, fold)


def detect_layout(root: Path) -> str:
    """Guess the layout of a dataset folder (or a CSV file)."""
    if root.is_file() and root.suffix.lower() == ".csv":
        return "csv"
    if (root / "train_label.xml").is_file():
        return "cityflow"
    if (root / "image_train").is_dir() and (root / "image_query").is_dir():
        return "veri776"
    if (root / "train_test_split").is_dir():
        return "vehicleid"
    if (root / "manifest.csv").is_file():
        return "csv"
    return "folder"


def load_dataset(
    root: str | Path,
    layout: str = "auto",
    *,
    val_identities: float = 0.2,
    seed: int = 0,
    val_fold: int = 0,
    on_bad: str = "error",
    test_size: int = 800,
    check_images: bool = True,
    progress: bool = False,
) -> ReidDataset:
    """Read a dataset; see the module docstring for layouts and the split protocol.

    ``on_bad``: ``"error"`` (raise naming the first missing/corrupt image) or ``"skip"`` (leave them out,
    listed in ``ReidDataset.skipped``). ``test_size``: VehicleID test list (800, 1600 or 2400). ``val_fold``: the
    block of identities held out where the split is made here (see :func:`split_identities`).
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder not found")
    if layout not in LAYOUTS:
        raise DatasetError(f"layout: unknown '{layout}' (choose from {', '.join(LAYOUTS)})")
    if on_bad not in ("error", "skip"):
        raise DatasetError(f"on_bad: 'error' or 'skip', got '{on_bad}'")
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "veri776":
        train, query, gallery = _read_veri(root)
    elif layout == "vehicleid":
        train, query, gallery = _read_vehicleid(root, test_size, seed)
    elif layout == "cityflow":
        train, query, gallery = _read_cityflow(root, val_identities, seed, val_fold)
    elif layout == "csv":
        train, query, gallery = _read_csv(root if root.is_file() else root / "manifest.csv", val_identities, seed, val_fold)
    else:
        train, query, gallery = _read_folder(root, val_identities, seed, val_fold)
    skipped: list[str] = []
    if check_images:
        train, query, gallery = (_check(s, on_bad, skipped, progress) for s in (train, query, gallery))
    if not query or not gallery:
        raise DatasetError(f"{root}: no query/gallery images for evaluation (layout {layout})")
    return ReidDataset(_relabel(train), query, gallery, f"{root.name}:{layout}", skipped)
