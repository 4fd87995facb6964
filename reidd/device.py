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


def release_freed_memory() -> bool:
    """Hand memory that Python and native libraries have freed back to the operating system.

    glibc keeps freed heap pages for reuse, so a one-off burst (the ONNX export of the embedder leaves
    about 150 MB behind) would otherwise stay in the resident set for the life of the daemon. Calls
    ``malloc_trim(0)`` after a garbage collection; returns False where there is no glibc (the call is
    then a no-op)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # musl, macOS: no malloc_trim
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
