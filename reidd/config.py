"""The cameras.yaml schema: every field typed, defaulted and described.

``load_config(path)`` reads a file, substitutes ``${ENV_VAR}`` (or
``${ENV_VAR:-default}``), validates, resolves relative paths against the file's
folder and checks that referenced files exist. Every problem is collected into
one :class:`ConfigError` whose ``problems`` list holds ``(path, message)``
pairs, e.g. ``("cameras[2].url", "file not found: ...")``.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reidd.detect.labels import LABEL_NAMES, MODEL_LABELS
from reidd.detect.registry import TRACK_THRESH, DetectorType
from reidd.detect.registry import describe as describe_detectors
from reidd.reid.registry import BackboneName
from reidd.types import VEHICLE_CLASSES

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log or print)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # as written: never raises on a bad port, keeps [IPv6] brackets
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` lists (path, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{printable(source)}: {len(problems)} problem(s)"]
        lines += [f"  {printable(p) or '<root>'}: {printable(m)}" for p, m in problems]
        super().__init__("\n".join(lines))


def printable(text: str) -> str:
    """``text`` safe to echo to a terminal or a log: every character Python does not count as printable (C0 and
    C1 controls such as NUL, ESC, DEL and line breaks, bidi overrides like U+202E, other format characters, lone
    surrogates) is written as its escape (``\\x1b``, ``\\u202e``), so a hostile value cannot drive the terminal."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else
                                              f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
                   for c in text)


class _Model(BaseModel):
    # no text field of a cameras.yaml means anything when empty (an optional one is left out instead), so an empty
    # string, typed or substituted from a ${VAR} that is set but empty, is refused naming the field
    model_config = ConfigDict(extra="forbid", validate_assignment=True, str_min_length=1)


# --------------------------------------------------------------------------- cameras
class ReconnectConfig(_Model):
    """Back-off between reconnection attempts of a live source."""

    initial_s: float = Field(0.5, gt=0, description="First wait after a failure, seconds.")
    max_s: float = Field(30.0, gt=0, description="Longest wait between attempts, seconds.")
    multiplier: float = Field(2.0, ge=1.0, description="Each failed attempt multiplies the wait by this.")
    jitter: float = Field(0.2, ge=0, le=1, description="Random +/- fraction added to each wait.")
    max_attempts: int = Field(
        0, ge=0, description="Give up (state 'failed') after this many failed attempts in a row; 0 = never."
    )


class CameraConfig(_Model):
    """One camera: a video file, an RTSP stream or an HTTP(S) stream."""

    id: str = Field(..., pattern=_ID_RE, description="Unique camera id (letters, digits, '_', '-', '.').")
    url: str = Field(
        ...,
        description="rtsp://, rtsps://, http(s):// URL or a video file path (relative to the config file).",
    )
    enabled: bool = Field(True, description="Disabled cameras are validated but not opened.")
    max_fps: float | None = Field(
        None, gt=0, description="Process at most this many frames per second (files: a frame stride is derived)."
    )
    frame_stride: int = Field(1, ge=1, description="Process every N-th decoded frame.")
    roi: list[tuple[float, float]] | None = Field(
        None,
        description="Optional polygon [[x, y], ...] in pixels; detections whose box centre lies outside are ignored.",
    )
    time_offset_s: float = Field(
        0.0, description="Added to the media time of a file source (aligns cameras recorded at different starts)."
    )
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport.")
    open_timeout_s: float = Field(10.0, gt=0, description="Give up opening the stream after this long.")
    read_timeout_s: float = Field(5.0, gt=0, description="A read that takes longer counts as a failure.")
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig, description="Reconnect back-off.")
    queue_size: int = Field(
        4, ge=1, le=1024, description="Frames buffered between reader and pipeline (live: newest wins)."
    )
    loop: bool = Field(
        False,
        description=(
            "Video files only (demos, soak runs): when the file ends, play it again from the start; frame indices "
            "and media time keep increasing across passes. `reidd run` loops until stopped; replays (`reidd replay`, "
            "`topology`, `adapt`) play each file once, `reidd replay` with a warning. Refused for stream URLs."
        ),
    )

    @field_validator("id", mode="before")
    @classmethod
    def _id_to_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("roi")
    @classmethod
    def _roi_polygon(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is not None and len(v) < 3:
            raise ValueError("a polygon needs at least 3 points")
        return v

    @property
    def kind(self) -> Literal["rtsp", "http", "file"]:
        low = self.url.lower()
        if low.startswith(("rtsp://", "rtsps://")):
            return "rtsp"
        if low.startswith(("http://", "https://")):
            return "http"
        return "file"

    @property
    def is_live(self) -> bool:
        return self.kind != "file"


# --------------------------------------------------------------------------- detector / tracker
class MotionConfig(_Model):
    """Background-subtraction detector settings (fixed cameras, offline demo)."""

    history: int = Field(200, ge=1, description="Frames in the MOG2 background model.")
    var_threshold: float = Field(25.0, gt=0, description="MOG2 variance threshold.")
    learning_rate: float = Field(-1.0, description="MOG2 learning rate (-1 = automatic).")
    warmup_frames: int = Field(0, ge=0, description="Frames used only to learn the background.")
    kernel: int = Field(5, ge=1, description="Morphology kernel size in pixels.")
    min_area: int = Field(400, ge=1, description="Smallest blob kept, pixels.")
    max_area_frac: float = Field(0.5, gt=0, le=1, description="Largest blob kept, fraction of the frame.")
    min_aspect: float = Field(0.2, gt=0, description="Smallest width/height ratio kept.")
    max_aspect: float = Field(5.0, gt=0, description="Largest width/height ratio kept.")


class DetectorConfig(_Model):
    """Which detector runs on every frame."""

    type: DetectorType = Field("yolo", description=describe_detectors() + ".")
    model: str = Field(
        "yolo11n.pt",
        description=(
            "type 'yolo': anything ultralytics loads: a .pt name it can download, or a local .pt/.onnx/.engine file "
            "or *_openvino_model folder. type 'openvino': an OpenVINO IR .xml (its .bin beside it) or a folder holding "
            "one, e.g. Intel's person-vehicle-bike-detection-crossroad-1016 (the recommended CPU detector). Relative "
            "to the config file."
        ),
    )
    trust_pickle: bool = Field(
        False,
        description=(
            "A .pt detector is a Python pickle, which can run code when loaded. By default it is loaded with "
            "ultralytics' restricted loader (only known model classes). Set true only for a legacy checkpoint you "
            "trust that the restricted loader refuses."
        ),
    )
    classes: list[int] = Field(
        default_factory=lambda: sorted(VEHICLE_CLASSES),
        description="COCO class ids kept (default: " + ", ".join(VEHICLE_CLASSES[c] for c in sorted(VEHICLE_CLASSES))
        + ").",
    )
    labels: dict[int, str] | None = Field(
        None,
        description=(
            "type 'openvino': the model's label ids mapped to reidd's classes: " + ", ".join(
                f"'{k}'" for k in LABEL_NAMES) + " ('vehicle' is reported as car, 'two-wheeler' as motorcycle, "
            "'ignore' drops the box). Default: the table of the shipped Open Model Zoo model named by the .xml "
            "(" + ", ".join(MODEL_LABELS) + "); required for any other model."
        ),
    )
    detections_dir: str | None = Field(
        None,
        description=(
            "type 'file': folder (relative to the config file) with one <camera id>.txt per camera, lines "
            "'frame,id,x,y,w,h,conf[,class]' (frame 1-based in that camera's video, id ignored)."
        ),
    )
    conf: float = Field(
        0.1, ge=0, le=1,
        description=(
            "Boxes below this confidence never reach the tracker. Keep it at or below tracker.track_low_thresh: "
            "the tracker's thresholds decide what a box may do (low-score boxes extend tracks, only "
            "confident ones start tracks)."
        ),
    )
    riders: bool = Field(
        True,
        description=(
            "yolo and openvino, when motorcycles are kept: also detect persons; a person on a two-wheeler box becomes one "
            "motorcycle box, a lone person is tracked and kept only if it moves like a vehicle "
            "(tracklets.min_rider_speed). Where motorbikes dominate, COCO models see the rider, not the bike."
        ),
    )
    rider_grow: tuple[float, float, float, float] = Field(
        (0.15, 0.0, 0.15, 0.08),
        description=(
            "detector.riders: a lone rider's box grown by these fractions of its width/height (left, top, right, "
            "bottom) to cover the two-wheeler: handlebars and mirrors to the sides, the wheel below. Measured on "
            "the realistic-scene benchmark: motorbikes found at IoU 0.5 rise from 49 % to 60 % in the overhead "
            "camera. [0, 0, 0, 0]: the rider's box as detected."
        ),
    )
    tiles: Literal["auto"] | int = Field(
        "auto",
        description=(
            "Detect in this many overlapping columns of the frame, each scaled to imgsz, instead of the whole frame "
            "at once: small vehicles of wide frames stay large enough for the model, at the cost of one model call per "
            "column. 'auto': one column per 1.25 x imgsz of width (960 px at 640: 2; 1920 px: 3), 1 = off. "
            "Realistic-scene benchmark, 960x540 at 640: vehicles found in the far cameras 49 -> 61 % and 35 -> 50 %. "
            "type 'openvino': 'auto' is the whole frame (those models are trained on whole frames)."
        ),
    )
    tile_overlap: int = Field(
        160, ge=0, description="Pixels neighbouring columns share (larger than most vehicles, so each is whole in one)."
    )
    iou: float = Field(0.7, gt=0, le=1, description="NMS IoU threshold.")
    imgsz: int = Field(640, ge=32, description="Inference size in pixels.")
    device: str = Field("auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    half: bool = Field(False, description="fp16 inference (CUDA only).")
    max_batch: int = Field(
        8, ge=1, description="Frames from several cameras batched into one call, at most (a model exported with a "
        "fixed batch size, as most ONNX and OpenVINO exports are, is called with that many).")
    motion_assist: bool = Field(
        False,
        description=(
            "yolo and openvino on fixed cameras: background subtraction (detector.motion) runs beside the model, and a "
            "moving blob no model box explains is added with confidence motion_assist_conf, so a track goes on through "
            "the frames where the model loses its vehicle."
        ),
    )
    motion_assist_conf: float = Field(
        0.2, ge=0, le=1,
        description=(
            "Confidence of the boxes motion_assist adds. At or above tracker.new_track_thresh (openvino: 0.15) they can "
            "start tracks; below it (YOLO: 0.25) they only continue tracks the model started. Realistic-scene "
            "benchmark, crossroad-1016, seeds 11-13: IDF1 0.744 without, 0.754 at 0.12, 0.789 at 0.2."
        ),
    )
    gate: bool = Field(
        False,
        description=(
            "yolo and openvino on fixed cameras: the model looks only where something moves. Background subtraction "
            "(gate_history frames, detector.motion's var_threshold, learning_rate, min_area) runs on every frame at "
            "gate_width; "
            "the model sees the whole frame every gate_every frames (and when more than gate_max_cover of it moves), "
            "in between only the moving regions, packed from all the batch's frames onto shared model inputs, and "
            "nothing when nothing moves (the tracker coasts to the next whole frame). Measured with crossroad-1016 on "
            "bench_streams.py's 1080p intersection clip, 4 cameras, gate_every 5 (2 loaded CPU cores): 0.56 model "
            "inputs per frame, detection 30 instead of 43 ms per frame; of the confident (>= 0.5) boxes found "
            "ungated, 87 % are found inside the moving regions but 36 % over all frames, since the queue waiting at "
            "the lights is seen on whole frames only. Off by default: its effect on identity is not measured yet."
        ),
    )
    gate_every: int = Field(
        5, ge=1,
        description=(
            "detector.gate: every camera's whole frame is detected once in this many frames, so that parked and slow "
            "vehicles, which the background swallows, are found again. Keep it at or below tracklets.exit_frames "
            "and tracklets.lost_frames, or their tracklets close between two whole frames. 1: every frame whole."
        ),
    )
    gate_width: int = Field(
        320, ge=32,
        description="detector.gate: frames are shrunk to this width (pixels) for background subtraction.",
    )
    gate_history: int = Field(
        30, ge=1,
        description=(
            "detector.gate: frames in its background model (detector.motion.history is the motion detector's). "
            "Short, so that where a vehicle stood (a ghost) or a vehicle that stopped becomes background within a few "
            "seconds; the whole frames find what stands still. Real clip at 960x540, after a still stretch: moving "
            "regions cover 5-9 % of the frame at 30, 20-45 % at 200."
        ),
    )
    gate_max_cover: float = Field(
        0.5, gt=0, le=1,
        description=(
            "detector.gate: a frame whose moving regions cover more than this share of it is detected whole "
            "(cutting it up would save nothing)."
        ),
    )
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Settings of the motion detector.")

    @field_validator("tiles")
    @classmethod
    def _tiles_range(cls, v: Any) -> Any:
        if v != "auto" and not 1 <= int(v) <= 8:
            raise ValueError("must be 'auto' or 1..8 columns")
        return v

    @field_validator("labels")
    @classmethod
    def _label_names(cls, v: dict[int, str] | None) -> dict[int, str] | None:
        if v is None:
            return v
        for k, name in v.items():
            if k < 0:
                raise ValueError(f"label id {k} must be >= 0")
            if name not in LABEL_NAMES:
                raise ValueError(f"label {k}: {name!r} is not one of {', '.join(LABEL_NAMES)}")
        return v

    @field_validator("rider_grow")
    @classmethod
    def _grow_range(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        if any(not 0.0 <= x <= 1.0 for x in v):
            raise ValueError("each fraction must be within 0..1")
        return v


class TrackerConfig(_Model):
    """Per-camera multi-object tracker (ultralytics' ByteTrack / BoT-SORT)."""

    type: Literal["bytetrack", "botsort"] = Field("bytetrack", description="Tracking algorithm.")
    track_high_thresh: float = Field(
        0.25, ge=0, le=1,
        description="First-association confidence threshold (unset: 0.15 with detector.type 'openvino', whose "
                    "confidences run lower).")
    track_low_thresh: float = Field(0.1, ge=0, le=1, description="Second-association confidence threshold.")
    new_track_thresh: float = Field(
        0.25, ge=0, le=1,
        description="Confidence needed to start a track (unset: 0.15 with detector.type 'openvino').")
    track_buffer: int = Field(30, ge=1, description="Frames a lost track is kept for re-association.")
    match_thresh: float = Field(0.8, gt=0, le=1, description="Association cost threshold.")
    fuse_score: bool = Field(
        False,
        description=(
            "Multiply the IoU by the detection confidence in the association cost (ultralytics' default is on). Off: "
            "with the shipped INT8 detectors confidences of 0.3-0.5 are common and fusing makes tracks lose them "
            "(realistic-scene benchmark, YOLO11n INT8: detection recall 0.40 -> 0.58, IDF1 0.54 -> 0.61)."
        ),
    )
    gmc_method: Literal["none", "sparseOptFlow", "orb", "sift", "ecc"] = Field(
        "none", description="BoT-SORT camera-motion compensation ('none' for fixed cameras)."
    )
    proximity_thresh: float = Field(0.5, ge=0, le=1, description="BoT-SORT proximity threshold.")
    appearance_thresh: float = Field(0.8, ge=0, le=1, description="BoT-SORT appearance threshold.")


class CropQualityWeights(_Model):
    """Weights of the crop quality score (each term is in 0..1)."""

    size: float = Field(0.35, ge=0, description="Box area relative to a reference size.")
    sharpness: float = Field(0.25, ge=0, description="Variance of the Laplacian (focus / motion blur).")
    confidence: float = Field(0.25, ge=0, description="Detector confidence.")
    border: float = Field(0.15, ge=0, description="1 when the box is clear of the frame border, 0 when cut.")


class TrackletConfig(_Model):
    """How tracks become tracklets."""

    max_crops: int = Field(8, ge=1, le=256, description="Best crops kept per tracklet.")
    lost_frames: int = Field(
        30, ge=1, description="Close a tracklet when its track has not been seen for this many processed frames."
    )
    exit_frames: int = Field(
        5, ge=1,
        description=(
            "A track last seen touching an edge of the frame (within border_margin) that its first box did not touch "
            "has most likely left there: its tracklet closes after this many unseen frames instead of lost_frames, so "
            "that it is decided sooner (a vehicle coming in at an edge and missed there waits lost_frames). Should the "
            "tracker find it again, it goes on as the next segment (same local id and global id). At or above "
            "lost_frames: off."
        ),
    )
    max_frames: int = Field(
        900, ge=10, description="A track still open after this many frames emits a 'periodic' tracklet and goes on."
    )
    min_boxes: int = Field(3, ge=1, description="Tracklets with fewer boxes are dropped (counted).")
    min_rider_speed: float = Field(
        1.0, ge=0,
        description=(
            "A track of lone person boxes (detector.riders) is kept, as a motorcycle, only when its box moves at "
            "least this many box heights per second over the tracklet; slower ones are pedestrians (dropped, counted)."
        ),
    )
    static_speed: float = Field(
        0.3, ge=0,
        description=(
            "With static_min_conf: a tracklet whose box moves less than this many box heights per second over its "
            "life is static."
        ),
    )
    static_min_conf: float = Field(
        0.5, ge=0, le=1,
        description=(
            "A static tracklet (static_speed) whose mean detector confidence is below this is a false detection the "
            "detector half-believes (a shadow, a road marking, a large part of the road: what low-threshold models "
            "report on fixed cameras): dropped, counted. Parked vehicles the detector is sure of stay. 0 = keep all. "
            "Realistic-scene benchmark (crossroad-1016): 35 of 130 junk tracklets dropped, no real one."
        ),
    )
    min_crop_size: int = Field(16, ge=1, description="Crops smaller than this (either side, pixels) are not kept.")
    border_margin: int = Field(4, ge=0, description="A box within this many pixels of the edge counts as cut.")
    max_open_tracks: int = Field(
        1000, ge=1, description="Per camera bound on open tracklets; the oldest are closed past it."
    )
    quality: CropQualityWeights = Field(default_factory=CropQualityWeights, description="Crop quality weights.")


# --------------------------------------------------------------------------- re-ID / gallery / matching
class ReidConfig(_Model):
    """The re-ID embedder shared by all cameras."""

    enabled: bool = Field(True, description="Embed and match tracklets (off: tracking only).")
    backbone: BackboneName | None = Field(
        None,
        description=(
            "CNN backbone. Unset: the one stored in reid.weights, else efficientnet_lite0. A value that contradicts "
            "the checkpoint is a start-up error."
        ),
    )
    weights: str | None = Field(
        None,
        description=(
            "A reidd checkpoint (.pt) or exported .onnx. It carries its backbone, embedding size, attention, "
            "multi-level and input size, so those fields can stay unset. Unset = ImageNet-initialised backbone with "
            "a fresh BNNeck (efficientnet_lite0 works offline)."
        ),
    )
    embedding_dim: int | None = Field(
        None, ge=8,
        description="Embedding size. Unset: the checkpoint's, else the backbone's width (no reduction layer).",
    )
    attention: bool | None = Field(
        None, description="CBAM channel+spatial attention after the backbone. Unset: the checkpoint's, else off."
    )
    multi_level: bool | None = Field(
        None,
        description="Embeddings from the last three backbone stages, concatenated. Unset: the checkpoint's, else off.",
    )
    input_size: tuple[int, int] | None = Field(
        None, description="Crop size fed to the model, (height, width). Unset: the checkpoint's, else (224, 224)."
    )
    device: str = Field("auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda', ...")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="'auto': fp16 on CUDA, bf16 on CPUs that support it, else fp32."
    )
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto",
        description=(
            "'auto': PyTorch on CUDA; on CPU the model is exported once to ONNX (checked against PyTorch) and run "
            "with onnxruntime, several times faster than eager PyTorch there."
        ),
    )
    flip_average: bool = Field(
        False,
        description=(
            "Average each crop's features with its mirror image's (test-time augmentation; twice the embedding "
            "work). Off by default: no gain on the realistic-scene benchmark with the default embedder."
        ),
    )
    max_batch: int = Field(64, ge=1, description="Crops per embedder call, at most.")
    max_wait_ms: float = Field(20.0, ge=0, description="Wait at most this long to fill a batch.")
    pooling: Literal["quality", "mean"] = Field(
        "quality", description="Temporal pooling of a tracklet's crop features."
    )


class GalleryConfig(_Model):
    """Where tracklet embeddings live: Redis is the source of truth, FAISS the in-memory index."""

    redis_url: str | None = Field(
        None,
        description=(
            "redis:// or rediss:// URL (use ${ENV_VAR} for credentials); unset = start an embedded redis-server."
        ),
    )
    state_dir: str = Field(".state/reidd", description="Embedded Redis data folder (relative to the config file).")
    namespace: str = Field("reidd", pattern=r"^[A-Za-z0-9_:.-]+$", description="Prefix of every Redis key.")
    ttl_s: float = Field(3600.0, gt=0, description="Gallery entries expire after this many seconds.")
    index: Literal["auto", "flat", "ivf", "hnsw"] = Field(
        "auto", description="FAISS index type; 'auto' = exact below exact_max, IVF-Flat above (see nprobe)."
    )
    exact_max: int = Field(
        100_000, ge=1,
        description="Entries below which 'auto' uses exact search (about 10 ms per query at 100k on 2 CPU cores).",
    )
    nlist: int | None = Field(
        None, ge=1, le=65536,
        description="IVF cells; unset = 2 x sqrt(entries) when the index is (re)trained, retrained at 4x growth.",
    )
    nprobe: int = Field(
        48, ge=1,
        description="IVF cells scanned per query (higher: better recall, slower query; recall@10 0.99+ at 1e6).",
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree (higher: better recall, slower build).")
    ef_search: int = Field(256, ge=8, description="HNSW search breadth (higher: better recall, slower query).")
    ef_construction: int = Field(80, ge=8, description="HNSW build breadth (higher: better graph, slower build).")
    max_entries: int = Field(1_000_000, ge=1, description="Upper bound of in-memory entries (oldest evicted).")


class TopologyLink(_Model):
    """An allowed camera pair and the transit time between them."""

    src: str = Field(..., description="Camera id the vehicle leaves.")
    dst: str = Field(..., description="Camera id it appears in next.")
    min_s: float = Field(0.0, ge=0, description="Shortest plausible transit, seconds.")
    max_s: float = Field(300.0, gt=0, description="Longest plausible transit, seconds.")
    bidirectional: bool = Field(True, description="Also allow dst -> src with the same times.")


class MatchingConfig(_Model):
    """Cross-camera association (see reidd/match/policy.py): calibrated scores, joint one-to-one assignment,
    no link when the best two are close."""

    min_score: float = Field(
        2.0,
        description=(
            "Smallest calibrated score for a link: the appearance z-score against this deployment's own "
            "distribution of stranger pairs (so it means the same for any model), plus colour and class evidence."
        ),
    )
    min_appearance: float | None = Field(
        None,
        description=(
            "Optional floor on the appearance z-score alone, whatever colour and class add (unset: none; a model "
            "trained for the site can afford about 1.5)."
        ),
    )
    margin: float = Field(
        0.3, ge=0,
        description="A link must beat the query's best other vehicle and the entry's best other claimant by this much.",
    )
    top_k: int = Field(50, ge=1, description="Gallery candidates retrieved per query.")
    window_s: float = Field(600.0, gt=0, description="Default time window when no topology is given.")
    topology: list[TopologyLink] = Field(
        default_factory=list, description="Allowed camera pairs; empty = any pair within window_s."
    )
    wait_s: float | None = Field(
        None, ge=0,
        description=(
            "Seconds a closed tracklet waits at most for rival queries before it is decided; unset = the widest "
            "transit window of the topology (max_s - min_s, at most 60), half of it with early, or decision_window_s "
            "without a topology."
        ),
    )
    early: bool = Field(
        True,
        description=(
            "Decide a tracklet as soon as nothing still to come can change its decision, within wait_s (needs a "
            "topology): every tracklet that could be its candidate is in the gallery (the cameras linked into its "
            "camera have processed past its window), and either no candidate comes close (best score below 0, "
            "the typical stranger), or every query that could rival it for its best candidate has been seen (that "
            "entry's transit window has passed in its camera, with no tracklet that started in it still open), or "
            "its link scores early_score. Cameras of other daemons sharing the gallery are not known here: against "
            "them a tracklet waits wait_s. Realistic-scene benchmark (ground-truth boxes, default embedder, seeds "
            "11 12 13 21 22): decision latency p50/p95 13.1/13.2 s -> 2.2/6.7 s, IDF1 0.885 -> 0.882, false merges "
            "0.016 both."
        ),
    )
    early_score: float | None = Field(
        5.0,
        description=(
            "With early: a link scoring at least this is decided without waiting for rival queries (a later rival "
            "would have to score within margin of it to change the decision). Unset: always wait for them. "
            "Realistic-scene benchmark: 4 -> false merges 0.035, 5 -> 0.016 (as with none), p50 latency 2.9 s -> "
            "2.5 s."
        ),
    )
    decision_window_s: float = Field(
        2.0, ge=0, description="Wait used when there is no topology (tracklets closing this close are assigned jointly)."
    )
    camera_bias: bool = Field(True, description="Remove each camera's mean embedding before comparing.")
    bias_window: int = Field(500, ge=1, description="Tracklets in each camera's running mean embedding.")
    bias_shrink: float = Field(
        10.0, ge=0, description="The camera mean counts n/(n+bias_shrink) after n tracklets (little at the start)."
    )
    calibration_window: int = Field(5000, ge=10, description="Recent candidate scores kept per camera pair.")
    calibration_min: int = Field(
        50, ge=1, description="Scores a camera pair needs before its own distribution is used (before: all pairs')."
    )
    colour_weight: float = Field(4.0, ge=0, description="Weight of the colour evidence (Bhattacharyya coefficient).")
    colour_ref: float = Field(0.6, ge=0, le=1, description="Colour coefficient that adds nothing (above: more, below: less).")
    class_penalty: float = Field(
        2.0, ge=0, description="Subtracted when the vehicle classes disagree (twice for two-wheel vs four-wheel)."
    )
    class_min_share: float = Field(
        0.6, ge=0, le=1, description="Class evidence only counts where this share of a tracklet's boxes agree."
    )
    transit_weight: float = Field(
        0.5, ge=0,
        description=(
            "Weight of the transit-time evidence: log(p / uniform) of a candidate's transit, p learned from the "
            "links this camera pair accepted (kernel density mixed with transit_prior uniform pseudo-links), "
            "clipped to [-3, 1.5]; 0 = the topology window alone. Realistic-scene benchmark (a 2-15 s window "
            "around 3-12 s transits), YOLO11n: false-merge rate 0.041 -> 0.034; GT boxes + trained model: 0.025 -> 0.017."
        ),
    )
    transit_prior: int = Field(20, ge=1, description="Uniform pseudo-links the learned transit density starts from.")
    fragment_gap_s: float = Field(
        3.0, ge=0, description="A tracklet starting this soon after another of its camera ended may continue it."
    )
    fragment_max_distance: float = Field(
        1.5, ge=0, description="...if it starts within this many box sizes of where the other was heading..."
    )
    fragment_min_similarity: float = Field(
        0.3, ge=-1, le=1, description="...and their bias-removed cosine is at least this (0 and 0 disable joining)."
    )


class EventsConfig(_Model):
    """Where match and tracklet events go."""

    stream: str = Field("reidd:events", description="Redis Stream key (under the gallery's Redis).")
    maxlen: int = Field(100_000, ge=1, description="Approximate MAXLEN of the stream.")
    pubsub_channel: str | None = Field(None, description="Also PUBLISH each event here (fire-and-forget).")
    jsonl: str | None = Field(None, description="Also append events to this JSONL file.")
    spool_dir: str = Field(".state/spool", description="On-disk spool used while Redis is unreachable.")
    spool_max_mb: float = Field(512.0, gt=0, description="Bound of the spool on disk, MiB.")
    dedupe_ttl_s: int = Field(
        7 * 86400, ge=60,
        description="How long Redis remembers an event id to refuse redeliveries (about 250 bytes per event).",
    )
    crops_dir: str | None = Field(
        None, description="Save each tracklet's best crop here as JPEG (referenced by tracklet events); unset = off."
    )
    crops_max: int = Field(100_000, ge=1, description="Keep at most this many crop files (oldest deleted first).")


class MetricsConfig(_Model):
    """Prometheus endpoint."""

    enabled: bool = Field(True, description="Serve /metrics.")
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(9108, ge=0, le=65535, description="Port (0 = any free port).")


class LoggingConfig(_Model):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    json_format: bool = Field(False, description="One JSON object per log line.")


class Config(_Model):
    """A whole cameras.yaml."""

    daemon_id: str | None = Field(
        None, pattern=_ID_RE, description="Name of this daemon in events and gallery entries (default: '<host name>-<camera ids>' live, 'replay-<camera ids>' in replay)."
    )
    cameras: Annotated[list[CameraConfig], Field(min_length=1)] = Field(..., description="The cameras.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Vehicle detector.")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="Per-camera tracker.")
    tracklets: TrackletConfig = Field(default_factory=TrackletConfig, description="Track -> tracklet rules.")
    reid: ReidConfig = Field(default_factory=ReidConfig, description="Re-ID embedder.")
    gallery: GalleryConfig = Field(default_factory=GalleryConfig, description="Gallery (Redis + FAISS).")
    matching: MatchingConfig = Field(default_factory=MatchingConfig, description="Cross-camera matching.")
    events: EventsConfig = Field(default_factory=EventsConfig, description="Event sinks.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")

    @model_validator(mode="after")
    def _tracker_thresholds_of_the_detector(self) -> "Config":
        """Tracker thresholds the config leaves unset follow the detector's confidences (registry.TRACK_THRESH)."""
        start = TRACK_THRESH.get(self.detector.type)
        if start is not None:
            for name in ("track_high_thresh", "new_track_thresh"):
                if name not in self.tracker.model_fields_set:
                    setattr(self.tracker, name, start)
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> "Config":
        seen: dict[str, int] = {}
        for i, cam in enumerate(self.cameras):
            if cam.id in seen:
                raise ValueError(f"cameras[{i}].id: duplicate camera id '{cam.id}' (also cameras[{seen[cam.id]}])")
            seen[cam.id] = i
        return self

    @property
    def enabled_cameras(self) -> list[CameraConfig]:
        return [c for c in self.cameras if c.enabled]

    def camera(self, camera_id: str) -> CameraConfig:
        for c in self.cameras:
            if c.id == camera_id:
                return c
        raise KeyError(camera_id)


# --------------------------------------------------------------------------- loading
def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def substitute_env(node: Any, path: str = "", problems: list[tuple[str, str]] | None = None,
                   empty: dict[str, list[str]] | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed YAML tree.

    An unset variable without a default is a problem of its field. ``empty`` (when given) collects, by field path,
    the variables that came out empty (set to "" or unset with an empty default): a field that is then empty as a whole is
    refused naming the variable (see :func:`parse_config`), and any other problem of the field mentions it."""
    problems = problems if problems is not None else []
    if isinstance(node, dict):
        return {k: substitute_env(v, f"{path}.{k}" if path else str(k), problems, empty) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_env(v, f"{path}[{i}]", problems, empty) for i, v in enumerate(node)]
    if isinstance(node, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                value, why = os.environ[name], "is set but empty"
            elif default is not None:
                value, why = default, "is unset and its default is empty"
            else:
                problems.append((path, f"environment variable ${{{name}}} is not set"))
                return m.group(0)
            if not value and empty is not None:
                empty.setdefault(path, []).append(f"${{{name}}} {why}")
            return value

        return _ENV_RE.sub(repl, node)
    return node


def _empty_vars(why: list[str]) -> str:
    return ", ".join(dict.fromkeys(why))


_MODEL_SUFFIXES = (".onnx", ".engine", ".torchscript", ".xml", ".tflite", ".mlpackage")

#: A cameras.yaml larger than this is refused before parsing (real ones are a few KiB).
MAX_CONFIG_BYTES = 1 << 20
#: Values a parsed cameras.yaml may expand to once aliases are followed (an alias "bomb" of a few hundred bytes
#: expands to billions; a 1,000-camera config to about 50,000).
MAX_CONFIG_VALUES = 200_000

#: Magic numbers of still-image formats that video decoders accept as a one-frame "video".
_IMAGE_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"), (b"\xff\xd8\xff", 0, "JPEG"), (b"GIF87a", 0, "GIF"), (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"), (b"II*\x00", 0, "TIFF"), (b"MM\x00*", 0, "TIFF"), (b"WEBP", 8, "WebP"),
)


def _resolve(base: Path, value: str) -> str:
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p))


def probe_path(path: str) -> tuple[str, os.stat_result | None]:
    """Stat ``path`` without raising: ``("", stat)``, ``("", None)`` when it does not exist, or ``(problem, None)``
    for a name no file can have (a NUL byte, a component longer than the file system allows, ...)."""
    if "\x00" in path:
        return "the path contains a NUL byte", None
    try:
        return "", os.stat(path)
    except FileNotFoundError:
        return "", None
    except NotADirectoryError:
        return "", None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            longest = max((len(part) for part in Path(path).parts), default=0)
            return f"file name too long ({longest} characters in one name, {len(path)} in the path)", None
        return f"cannot access it: {exc.strerror or exc}", None
    except ValueError as exc:
        return f"not a usable path: {exc}", None


def _still_image(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not head:
        return "is an empty file"
    for magic, offset, name in _IMAGE_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return f"is a {name} image, not a video"
    return None


def _existing_ancestor(path: Path) -> Path:
    p = path
    while True:
        problem, st = probe_path(str(p))
        if st is not None or p.parent == p:
            return p
        p = p.parent


def check_output_dir(path: str) -> str | None:
    """Why the folder ``path`` could not be created or written (``None``: it can). Creates nothing."""
    problem, st = probe_path(path)
    if problem:
        return problem
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            return f"{path} exists and is not a folder"
        return None if os.access(path, os.W_OK | os.X_OK) else f"folder {path} is not writable"
    anc = _existing_ancestor(Path(path))
    if not anc.is_dir():
        return f"cannot create {path}: {anc} is a file, not a folder"
    if not os.access(anc, os.W_OK | os.X_OK):
        return f"cannot create {path}: {anc} is not writable"
    return None


def check_output_file(path: str) -> str | None:
    """Why the file ``path`` could not be created or appended to (``None``: it can). Creates nothing."""
    problem, st = probe_path(path)
    if problem:
        return problem
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            return f"{path} is a folder, not a file"
        return None if os.access(path, os.W_OK) else f"file {path} is not writable"
    parent = str(Path(path).parent)
    why = check_output_dir(parent)
    return why and f"cannot create {path}: {why}"


def _check_model_path(field: str, path: str, problems: list[tuple[str, str]], what: str) -> bool:
    problem, st = probe_path(path)
    if problem:
        problems.append((field, problem))
        return False
    if st is None:
        problems.append((field, f"{what} not found: {path}"))
        return False
    return True


def _check_openvino_folder(path: str) -> str | None:
    folder = Path(path)
    xmls = sorted(folder.glob("*.xml"))
    if not xmls:
        return f"OpenVINO folder {path} has no .xml model"
    if not xmls[0].with_suffix(".bin").is_file():
        return f"OpenVINO model {xmls[0]} has no weights file {xmls[0].with_suffix('.bin').name} beside it"
    return None


def _check_openvino_detector(det: DetectorConfig, base: Path) -> list[tuple[str, str]]:
    """``detector.type: openvino``: the model is a local .xml with its .bin (or a folder holding exactly one), and
    its labels are known. Whether the file is a detector is checked when it is loaded (start-up, exit 2)."""
    problems: list[tuple[str, str]] = []
    det.model = _resolve(base, det.model)
    if not _check_model_path("detector.model", det.model, problems, "OpenVINO model"):
        return problems
    xml = Path(det.model)
    if xml.is_dir():
        xmls = sorted(xml.glob("*.xml"))
        if len(xmls) != 1:
            return [("detector.model", f"{xml} holds {len(xmls)} .xml files; name the model's .xml")]
        xml = xmls[0]
    if xml.suffix != ".xml":
        return [("detector.model", f"{xml} is not an OpenVINO IR .xml (type 'openvino'; other formats: type 'yolo')")]
    if not xml.with_suffix(".bin").is_file():
        problems.append(("detector.model", f"OpenVINO model {xml} has no weights file {xml.with_suffix('.bin').name} "
                                           "beside it"))
    elif xml.stat().st_size == 0:
        problems.append(("detector.model", f"OpenVINO model {xml} is an empty file"))
    if det.labels is None and xml.stem not in MODEL_LABELS:
        problems.append(("detector.labels", f"required for {xml.name} (reidd knows the labels of "
                                            f"{', '.join(MODEL_LABELS)}): map its label ids, e.g. "
                                            "{0: vehicle, 1: person, 2: two-wheeler}"))
    return problems


def _check_files(cfg: Config, base: Path, skip: set[str]) -> list[tuple[str, str]]:
    """Checks that look at the file system (nothing is created). Fields in ``skip`` already have a problem."""
    problems: list[tuple[str, str]] = []
    for i, cam in enumerate(cfg.cameras):
        field = f"cameras[{i}].url"
        if cam.kind != "file" or field in skip:
            continue
        cam.url = _resolve(base, cam.url)
        if not cam.enabled:
            continue
        problem, st = probe_path(cam.url)
        if problem:
            problems.append((field, problem))
        elif st is None:
            problems.append((field, f"video file not found: {cam.url}"))
        elif stat.S_ISDIR(st.st_mode):
            problems.append((field, f"{cam.url} is a folder, not a video file"))
        elif (why := _still_image(cam.url)) is not None:
            problems.append((field, f"{cam.url} {why}"))
    if cfg.detector.type == "file" and "detector.detections_dir" not in skip:
        if not cfg.detector.detections_dir:
            problems.append(("detector.detections_dir", "required when detector.type is 'file'"))
        else:
            cfg.detector.detections_dir = _resolve(base, cfg.detector.detections_dir)
            d = Path(cfg.detector.detections_dir)
            problem, st = probe_path(str(d))
            if problem:
                problems.append(("detector.detections_dir", problem))
            elif st is None or not stat.S_ISDIR(st.st_mode):
                problems.append(("detector.detections_dir", f"folder not found: {d}"))
            else:
                for i, cam in enumerate(cfg.cameras):
                    if cam.enabled and not (d / f"{cam.id}.txt").is_file():
                        problems.append((f"cameras[{i}]", f"no detection file for camera '{cam.id}': {d / (cam.id + '.txt')}"))
    model = cfg.detector.model
    looks_local = ("/" in model or os.sep in model or model.endswith(_MODEL_SUFFIXES) or model.endswith("_model"))
    if cfg.detector.type == "yolo" and "detector.model" not in skip:
        if not looks_local and probe_path(_resolve(base, model))[1] is not None:
            looks_local = True  # a bare name of a file next to the config: that file, not a download
        if looks_local or "\x00" in model or len(model) > 255:
            cfg.detector.model = _resolve(base, model)
            if _check_model_path("detector.model", cfg.detector.model, problems, "model file"):
                if Path(cfg.detector.model).is_dir():
                    why = _check_openvino_folder(cfg.detector.model)
                    if why:
                        problems.append(("detector.model", why))
                elif os.path.getsize(cfg.detector.model) == 0:
                    problems.append(("detector.model", f"{cfg.detector.model} is an empty file"))
    if cfg.detector.type == "openvino" and "detector.model" not in skip:
        problems += _check_openvino_detector(cfg.detector, base)
    if cfg.reid.weights and "reid.weights" not in skip:
        cfg.reid.weights = _resolve(base, cfg.reid.weights)
        if _check_model_path("reid.weights", cfg.reid.weights, problems, "checkpoint"):
            if not Path(cfg.reid.weights).is_file():
                problems.append(("reid.weights", f"{cfg.reid.weights} is not a file"))
    # Folders and files the daemon writes: checked now rather than failing minutes into a run.
    outputs: list[tuple[str, str, bool]] = [("events.spool_dir", "spool_dir", True)]
    if cfg.events.jsonl:
        outputs.append(("events.jsonl", "jsonl", False))
    if cfg.events.crops_dir:
        outputs.append(("events.crops_dir", "crops_dir", True))
    for field, attr, is_dir in outputs:
        if field in skip:
            continue
        value = _resolve(base, getattr(cfg.events, attr))
        setattr(cfg.events, attr, value)
        why = check_output_dir(value) if is_dir else check_output_file(value)
        if why:
            problems.append((field, why))
    cfg.gallery.state_dir = _resolve(base, cfg.gallery.state_dir)
    if cfg.gallery.redis_url is None and "gallery.state_dir" not in skip:
        why = check_output_dir(cfg.gallery.state_dir)
        if why:
            problems.append(("gallery.state_dir", f"{why} (the embedded Redis keeps its data there)"))
    return problems


def _check_consistency(cfg: Config) -> list[tuple[str, str]]:
    """Checks of the config against itself: they run for every command, whatever it reads."""
    problems: list[tuple[str, str]] = []
    ids = {c.id for c in cfg.cameras}
    for j, link in enumerate(cfg.matching.topology):
        for field_name in ("src", "dst"):
            if getattr(link, field_name) not in ids:
                problems.append(
                    (f"matching.topology[{j}].{field_name}", f"unknown camera id '{getattr(link, field_name)}'")
                )
        if link.min_s > link.max_s:
            problems.append((f"matching.topology[{j}]", "min_s is larger than max_s"))
    if cfg.gallery.redis_url and not cfg.gallery.redis_url.startswith(("redis://", "rediss://", "unix://")):
        problems.append(("gallery.redis_url", "must start with redis://, rediss:// or unix://"))
    for i, cam in enumerate(cfg.cameras):
        if cam.loop and cam.is_live:
            problems.append((f"cameras[{i}].loop", f"only video files can loop; cameras[{i}].url is a live "
                                                   f"{cam.kind} stream (remove loop)"))
    if not cfg.enabled_cameras:
        problems.append(("cameras", "no camera is enabled"))
    return problems


def parse_config(data: Any, source: str = "<config>", base_dir: str | Path = ".", check_files: bool = True) -> Config:
    """Validate an already-parsed YAML tree; raise :class:`ConfigError` listing every problem.

    ``check_files=False`` skips only what looks at the file system (inputs exist, outputs are writable); the
    checks of the config against itself always run."""
    problems: list[tuple[str, str]] = []
    if not isinstance(data, dict):
        raise ConfigError(source, [("", "the top level must be a mapping with at least 'cameras'")])
    empty: dict[str, list[str]] = {}
    data = substitute_env(data, "", problems, empty)
    # a field that a variable set to "" left empty: no field takes an empty value, so say which variable did it
    blank = {path for path in empty if _value_at(data, path) == ""}
    problems += [(path, f"{_empty_vars(empty[path])}, and the field cannot be empty") for path in sorted(blank)]
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            path = _loc_to_path(tuple(err["loc"]))
            if path in blank:
                continue  # already named with its variable
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
                # model-level messages carry their own path prefix
                if not path and ": " in msg and msg.split(": ", 1)[0].startswith("cameras["):
                    path, msg = msg.split(": ", 1)
            problems.append((path, msg))
        raise ConfigError(source, _mention_empty(problems, empty)) from None
    problems += _check_consistency(cfg)
    if check_files:
        problems += _check_files(cfg, Path(base_dir), {p for p, _ in problems})
    if problems:
        raise ConfigError(source, _mention_empty(problems, empty))
    return cfg


def _value_at(data: Any, path: str) -> Any:
    """The value at a field path (``cameras[0].url``) of a parsed YAML tree; None when there is none."""
    node = data
    for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        try:
            node = node[int(index)] if index else node[key] if key in node else node[int(key)]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return node


def _mention_empty(problems: list[tuple[str, str]], empty: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Problems of fields into which a variable substituted nothing say so (``url: ${HOST}/cam`` with HOST="")."""
    return [(path, msg if path not in empty or msg.startswith("${") else f"{msg} ({_empty_vars(empty[path])})")
            for path, msg in problems]


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Values ``node`` stands for once every alias is followed (aliases share nodes: memoised by identity)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise ValueError("a YAML alias refers to itself (a recursive structure)")
    active.add(key)
    if isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_size(v, memo, active) for v in node.value)
    elif isinstance(node, yaml.MappingNode):
        n = 1 + sum(_expanded_size(k, memo, active) + _expanded_size(v, memo, active) for k, v in node.value)
    else:
        n = 1
    active.discard(key)
    memo[key] = n = min(n, MAX_CONFIG_VALUES + 1)  # saturate: the count itself never grows huge
    return n


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """Parse a YAML file safely (no Python objects) and within bounds: at most MAX_CONFIG_BYTES, at most
    MAX_CONFIG_VALUES values once aliases are expanded. Raises :class:`ConfigError`."""
    p = Path(path)
    problem, st = probe_path(str(p))
    if problem:
        raise ConfigError(str(path), [("", problem)])
    if st is None or not stat.S_ISREG(st.st_mode):
        raise ConfigError(str(path), [("", f"{what} file not found: {path}")])
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), [("", f"{what} file is {st.st_size} bytes; the limit is {MAX_CONFIG_BYTES}")])
    try:
        text = p.read_bytes()[: MAX_CONFIG_BYTES + 1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [("", f"not a text file: {exc}")]) from None
    except OSError as exc:
        raise ConfigError(str(path), [("", f"cannot read it: {exc.strerror or exc}")]) from None
    if "\x00" in text:
        raise ConfigError(str(path), [("", "not a text file: it contains a NUL byte")])
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            size = _expanded_size(node, {}, set())
        except ValueError as exc:
            raise ConfigError(str(path), [("", f"invalid YAML: {exc}")]) from None
        except RecursionError:
            raise ConfigError(str(path), [("", "invalid YAML: nested too deeply")]) from None
        if size > MAX_CONFIG_VALUES:
            raise ConfigError(str(path), [("", f"invalid YAML: it expands to more than {MAX_CONFIG_VALUES} values "
                                               "(aliases that multiply, an 'alias bomb'?)")])
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [("", f"invalid YAML: {where}{getattr(exc, 'problem', None) or exc}")]) from None
    except RecursionError:
        raise ConfigError(str(path), [("", "invalid YAML: nested too deeply")]) from None
    finally:
        loader.dispose()


def load_config(path: str | Path, check_files: bool = True) -> Config:
    """Read, substitute, validate and resolve one cameras.yaml."""
    data = read_yaml(path)
    return parse_config(data, str(path), Path(path).resolve().parent, check_files)
