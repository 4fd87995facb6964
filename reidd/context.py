"""The run context: what differs between ``reidd run`` (live) and ``reidd replay``, decided once.

A :class:`RunContext` is built first (:meth:`RunContext.for_replay`, :meth:`RunContext.for_live`) and
handed to the constructors that behave differently by mode (:class:`~reidd.pipeline.Pipeline`,
:class:`~reidd.runtime.ReidRuntime`, :class:`~reidd.match.stage.ReidStage`,
:class:`~reidd.gallery.store.Gallery` through its clock), instead of each taking a flag of its own.

* ``mode``: ``live`` takes what the cameras have (newest frame wins, a slow camera never holds the
  others back, embedding batched by a thread, index rebuilds beside the one in use); ``replay`` is
  deterministic (every frame, merged by time, one ordered re-ID worker, rebuilds in place).
* ``clock``: the time the gallery's expiry and the matcher's decisions run on. Wall seconds for live
  streams; media seconds for files (replay, or ``reidd run`` on files), advanced by the re-ID stage as
  it decides, so the gallery never runs ahead of the decisions (in replay the pipeline is ahead of the
  re-ID worker).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from reidd.config import Config


class Clock:
    """Seconds on the run's timeline: ``time.time()`` when ``wall``; else the latest time :meth:`advance`
    was given (``start`` until then; ``None`` means ``time.time()`` until the first advance)."""

    def __init__(self, wall: bool, start: float | None = 0.0):
        self.wall = wall
        self._t = start
        self._lock = threading.Lock()

    def now(self) -> float:
        if self.wall:
            return time.time()
        t = self._t
        return time.time() if t is None else t

    __call__ = now

    def advance(self, ts: float) -> None:
        """Move a media clock forward to ``ts`` (never back); a wall clock ignores it."""
        if self.wall:
            return
        with self._lock:
            self._t = ts if self._t is None else max(self._t, ts)


@dataclass(frozen=True)
class RunContext:
    mode: Literal["live", "replay"]
    clock: Clock = field(default_factory=lambda: Clock(wall=True))

    @property
    def live(self) -> bool:
        return self.mode == "live"

    @property
    def replay(self) -> bool:
        """Deterministic: the same input and config give the same outputs."""
        return self.mode == "replay"

    @classmethod
    def for_replay(cls) -> RunContext:
        """Recorded files, deterministically, on media time from 0."""
        return cls("replay", Clock(wall=False, start=0.0))

    @classmethod
    def for_live(cls, cfg: Config | None = None) -> RunContext:
        """``reidd run``: the wall clock when every enabled camera is a live stream; files played live run
        on their media time (the wall clock until the first decision)."""
        wall = cfg is None or all(c.is_live for c in cfg.enabled_cameras)
        return cls("live", Clock(wall=True) if wall else Clock(wall=False, start=None))
