"""Device choice in one place: ``cuda`` when available, else ``cpu``."""

from __future__ import annotations

import os


def resolve_device(name: str = "auto") -> str:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into a concrete torch device string.

    Raises ``ValueError`` when a CUDA device is asked for and none is available.
    """
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device '{name}' requested but CUDA is not available on this machine")
        return name if ":" in name else "cuda:0"
    raise ValueError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)")


def cpu_threads(n: int | None = None) -> int:
    """Threads for CPU compute: ``n``, else ``REIDD_THREADS``, else the CPUs this process may run on."""
    if n or os.environ.get("REIDD_THREADS"):
        return n or int(os.environ["REIDD_THREADS"])
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def set_cpu_threads(n: int | None = None) -> int:
    """Use ``n`` (default: :func:`cpu_threads`) torch CPU threads; returns the number set.

    Ultralytics pins torch to one thread after its first predict; call this after model warm-up.
    """
    import torch

    n = cpu_threads(n)
    torch.set_num_threads(n)
    return n


def _libc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


class HeapTrimmer:
    """A daemon thread that hands freed heap pages back to the operating system every ``interval_s`` seconds.

    The daemon allocates and frees a stream of large buffers (decoded frames, letterboxed detector inputs,
    crop batches) from several threads. glibc serves most of them from its heaps, where a few small objects
    allocated in between keep the freed pages resident, and it only gives back the top of a heap. A periodic
    ``malloc_trim(0)`` releases the free pages inside the heaps too: a 3-camera replay with YOLO and re-ID peaks
    about 20 MB lower (996 MB) at the same speed (scripts/bench_replay.py). No garbage collection is forced (a full
    collection every few seconds costs the pipeline about 10% of its throughput). Without glibc (musl, macOS)
    ``start()`` does nothing."""

    def __init__(self, interval_s: float = 2.0):
        import threading

        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.trims = 0

    def start(self) -> "HeapTrimmer":
        import ctypes
        import threading

        trim = getattr(_libc(), "malloc_trim", None)
        if trim is None or self._thread is not None:
            return self
        trim.argtypes = [ctypes.c_size_t]

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                trim(0)
                self.trims += 1

        self._thread = threading.Thread(target=loop, name="reidd-heap-trim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def release_freed_memory() -> bool:
    """Hand memory that Python and native libraries have freed back to the operating system.

    glibc keeps freed heap pages for reuse, so a one-off burst (the ONNX export of the embedder leaves
    about 150 MB behind) would otherwise stay in the resident set for the life of the daemon. Calls
    ``malloc_trim(0)`` after a garbage collection; returns False where there is no glibc (the call is
    then a no-op)."""
    import ctypes
    import gc

    gc.collect()
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)  # musl, macOS: none
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
