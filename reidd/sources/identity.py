"""What tells one recording from another: a short tag from a video file's content.

Tracklet ids of file cameras carry it (``<camera>:<tag>-<local id>:<segment>``) and a replay's
``daemon_id`` is built from the tags of all its cameras, so two recordings of the same cameras replayed
into one Redis never share tracklet ids, gallery entries or event ids, while the same recording replayed
again gives the same ids (its events are recognised as duplicates, its tracklets keep their decisions).

The tag hashes the file's size and its first and last megabyte: cheap on any size of file (two reads),
and different for any two real recordings (a container's header and its last frames differ). Renaming
or moving the file keeps the tag.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

_PART = 1 << 20


def recording_tag(path: str | Path) -> str:
    """8 hex characters naming the content of the file at ``path`` (OSError when it cannot be read)."""
    st = os.stat(path)
    return _tag(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


@lru_cache(maxsize=256)
def _tag(path: str, size: int, _mtime_ns: int, _inode: int) -> str:
    h = hashlib.sha256(f"reidd-recording\0{size}\0".encode())
    with open(path, "rb") as f:
        h.update(f.read(_PART))
        if size > _PART:
            f.seek(max(_PART, size - _PART))
            h.update(f.read(_PART))
    return h.hexdigest()[:8]


__all__ = ["recording_tag"]
