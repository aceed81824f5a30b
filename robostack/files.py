"""Crash-safe file writes, the one copy every writer of state uses (buffers, checkpoints, spool,
episode log, run directory files).

A crash leaves either the old file or the new one, never a torn one: `atomic_write` writes a
hidden temp file beside the target, fsyncs it, renames it into place and fsyncs the directory
(the rename lives in the directory entry). A failure removes the temp file and leaves the old
file as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs):
    """`with atomic_write(path) as f: f.write(...)`: `path` gets the whole content or nothing.

    The temp file is named `.<name>.tmp-<pid>` so that concurrent writers of one path never share
    a temp file and directory listings by pattern (`*.npz`, `ckpt_*.pt`) never see it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, data, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(data, indent=indent) + ("\n" if indent is not None else ""))


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, hex: what integrity records (checkpoints, episode logs) hold."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
