"""Training checkpoints with full resume: atomic, checksummed, keep-last-N, corrupt fallback.

A checkpoint is one `torch.save` file, `<run_dir>/checkpoints/ckpt_<step>.pt`, holding
    {"format", "version", "step", "state": {name: plain data}, "sha256"}
where `state` is whatever the learner passes (agent, optimizers, temperature, step counters,
RNG states). Objects with `state_dict()` are stored as their state dict. Only tensors and plain
containers are allowed (checked at save time), so loading uses `torch.load(weights_only=True)`
and never runs pickled code. The file stays readable with a bare `torch.load`.

Writes go through robostack.files.atomic_write (a hidden temp file `.ckpt_<step>.pt.tmp-<pid>`,
fsynced, renamed into place, directory fsynced), so a crash leaves either the old set of
checkpoints or the new one, plus at most a stray temp file that every reader ignores and the
next save removes once its writer is dead. torch's zip reader does not verify tensor bytes, so the payload carries a
SHA-256 over the state; a damaged newest checkpoint is reported and the previous one is used.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robostack.files import atomic_write

CHECKPOINT_DIR = "checkpoints"
FORMAT_NAME = "robostack.checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
_TMP = re.compile(r"^\.ckpt_\d+\.pt\.tmp-(\d+)$")  # atomic_write's temp name for a checkpoint
# What torch.load(weights_only=True) reconstructs besides tensors and containers.
_PLAIN = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device,
          torch.Size)


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, corrupt or not a robostack checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest step first (temp files are never listed)."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Path of the newest checkpoint (not verified; `load_latest_checkpoint` verifies)."""
    paths = list_checkpoints(run_dir)
    return paths[-1] if paths else None


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: Mapping[str, Any], *,
                    keep_last: int = 3) -> Path:
    """Atomically write `state` as the checkpoint for `step`; keep only the newest `keep_last`."""
    if keep_last < 1:
        raise ValueError("keep_last must be >= 1")
    step = int(step)
    plain = {name: v.state_dict() if callable(getattr(v, "state_dict", None)) else v
             for name, v in state.items()}
    digest = _digest(plain)  # also rejects what weights_only loading could not read back
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"ckpt_{step:010d}.pt"
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "step": step, "state": plain,
               "sha256": digest}
    with atomic_write(final) as f:
        torch.save(payload, f)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
    _remove_stale_temp_files(d)
    return final


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Load and verify one checkpoint; raises CheckpointError if it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, OSError, EOFError, UnpicklingError...
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(e).__name__}: {e}). It is truncated or "
            "corrupt (writes are atomic, so it was damaged afterwards, e.g. a full disk or an "
            "interrupted copy); delete it to resume from the previous checkpoint.") from e
    if (not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME
            or payload.get("version") != FORMAT_VERSION):
        raise CheckpointError(f"{path}: not a robostack checkpoint of format version "
                              f"{FORMAT_VERSION}")
    if _digest(payload["state"]) != payload["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupt; delete it to "
                              "resume from the previous checkpoint.")
    return Checkpoint(path, int(payload["step"]), payload["state"])


def load_latest_checkpoint(run_dir: str | os.PathLike,
                           map_location: Any = "cpu") -> Checkpoint | None:
    """Newest checkpoint that verifies, warning about each damaged newer one it skips.

    None if the run has no checkpoint; CheckpointError if every checkpoint is damaged (a run
    never silently restarts from scratch).
    """
    paths = list_checkpoints(run_dir)
    errors = []
    for path in reversed(paths):
        try:
            ckpt = load_checkpoint(path, map_location)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        for err in errors:
            warnings.warn(f"{err} Falling back to {path.name}.", stacklevel=2)
        return ckpt
    if errors:
        raise CheckpointError("no usable checkpoint in " f"{checkpoint_dir(run_dir)}:\n"
                              + "\n".join(errors))
    return None


def resume(run_dir: str | os.PathLike, objects: Mapping[str, Any],
           map_location: Any = "cpu") -> Checkpoint | None:
    """Load the newest good checkpoint into `objects` (name -> has `load_state_dict`).

    Returns the checkpoint, whose `state` also holds the plain entries (step counters, RNG
    states) for the caller to restore; None when the run has no checkpoint yet.
    """
    ckpt = load_latest_checkpoint(run_dir, map_location)
    if ckpt is None:
        return None
    missing = [name for name in objects if name not in ckpt.state]
    if missing:
        raise CheckpointError(f"{ckpt.path}: has no entry for {missing} "
                              f"(it holds {sorted(ckpt.state)})")
    for name, obj in objects.items():
        obj.load_state_dict(ckpt.state[name])
    return ckpt


def _digest(state: Any) -> str:
    """SHA-256 over structure, types and bytes; raises TypeError on non-plain data."""
    h = hashlib.sha256()

    def walk(x: Any, where: str) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(x, Mapping):
            h.update(f"D{len(x)}:".encode())
            for k, v in x.items():
                walk(k, where)
                walk(v, f"{where}[{k!r}]")
        elif isinstance(x, (list, tuple)):
            h.update(f"L{type(x).__name__}{len(x)}:".encode())
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]")
        elif isinstance(x, _PLAIN):
            h.update(f"{type(x).__name__}:{x!r};".encode())
        else:
            raise TypeError(f"state{where}: {type(x).__module__}.{type(x).__name__} cannot be "
                            "checkpointed; use tensors, numbers, strings and lists/dicts of "
                            "them (e.g. torch.from_numpy for arrays)")

    walk(state, "")
    return h.hexdigest()


state_digest = _digest  # what other files of plain data and tensors (a classifier) are checked by


def _remove_stale_temp_files(d: Path) -> None:
    """Delete temp files left by crashed writers (their process no longer exists)."""
    for p in d.iterdir():
        m = _TMP.match(p.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            p.unlink(missing_ok=True)
        except (PermissionError, OverflowError):
            pass
