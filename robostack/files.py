"""Crash-safe file helpers shared by everything that writes state to disk (buffers, checkpoints)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside `directory` durable (the rename itself lives in the directory entry).
    Best effort: some filesystems refuse to open or fsync a directory."""
    try:
        fd = os.open(Path(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
