"""Replay buffers for SAC/RLPD: online ring, demonstrations, symmetric sampling, save/load.

One class, `ReplayBuffer`, holds both online and demonstration data; RLPD's symmetric sampling
is `sample_mixed(online, demos, ...)`.

One thing: the pixel ring's slot invariant below is kept jointly by writing, sampling, saving
and loading; split across modules, no one file would show that it holds.

Pixel storage keeps every frame once. The ring is a sequence of *slots*; slot i holds the
camera frames of one observation and, when `valid[i]` is set, the transition that starts there.
Its next-observation frames are always in slot i+1 (mod capacity). When a transition does not
continue the previous one (the episode ended, or the stream switched between interleaved
actors), its observation goes into a fresh slot after the pending final frame, so an episode's
last next-observation keeps its own frame-only slot (valid=False). Writing a frame into slot j
clears `valid[j]`; the only other transition that reads slot j is j-1, which at that moment is
always the transition being written, so a valid slot never points at a frame of a different
episode or an overwritten slot, however often the ring wraps. Consequence: a pixel buffer of
capacity C holds C minus (number of episodes) transitions.

Whether a transition continues the previous one is decided by content: the previous one was
not terminated/truncated and its stored next frames equal this observation's frames byte for
byte. Sharing a frame is therefore always exact, and interleaved actor streams cost one slot per
switch instead of corrupting pairs. Non-image observation keys (the `state` vector) are small
and stored twice (observation and next observation).

Frames are camera images ("images/<cam>", uint8) or a frozen encoder's cached features of them
("features/<cam>", float16, robostack/rl/featurize.py): both (H, W, C) in the env layout, both
kept once, CHW, in their own dtype.

Batch contract (what `sample` returns, all torch tensors on `device`):
    observations / next_observations: {"state": float32 (B, S), "images/<cam>": uint8 (B, C, H, W),
                                       "features/<cam>": float16 (B, C, H, W)}
    actions float32 (B, A); rewards, terminations, truncations float32 (B,);
    one float32 (B, *shape) entry per extra field (e.g. "grasp_penalties").
Environment observations arrive as numpy dicts with images HWC; they become CHW once, on insertion.
"""

from __future__ import annotations

import json
import os
import threading
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robostack.files import atomic_write

IMAGE_PREFIX = "images/"
# Keys stored as frames (once, CHW) and the dtype each kind must have.
FRAME_DTYPES = {IMAGE_PREFIX: np.dtype(np.uint8), "features/": np.dtype(np.float16)}


def frame_dtype(key: str) -> np.dtype | None:
    """The dtype of a frame key ("images/..." uint8, "features/..." float16); None: not a frame."""
    return next((d for prefix, d in FRAME_DTYPES.items() if key.startswith(prefix)), None)
FORMAT_VERSION = 1
_FORMAT_NAME = "robostack.replay_buffer"

# Observation spec: key -> (shape as the environment emits it, dtype). Images are HWC here.
ObservationSpec = dict[str, tuple[tuple[int, ...], np.dtype]]


class BufferFileError(RuntimeError):
    """A saved buffer could not be read (corrupt, truncated or foreign file)."""


def observation_spec(space: Any) -> ObservationSpec:
    """Normalise a gymnasium `Dict` space, or a mapping of key -> Box / array / (shape, dtype).

    Keys starting with "images/" must be uint8 HWC, "features/" float16 HWC; everything else is
    stored as float32.
    """
    items = space.spaces.items() if hasattr(space, "spaces") else dict(space).items()
    spec: ObservationSpec = {}
    for key, value in items:
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            shape, dtype = tuple(value.shape), np.dtype(value.dtype)
        else:
            shape, dtype = tuple(value[0]), np.dtype(value[1])
        frame = frame_dtype(key)
        if frame is not None:
            if dtype != frame or len(shape) != 3:
                raise ValueError(f"{key}: frames must be {frame} (H, W, C), got {dtype} {shape}")
        else:
            dtype = np.dtype(np.float32)
        spec[key] = (tuple(int(s) for s in shape), dtype)
    if not spec:
        raise ValueError("observation spec is empty")
    return spec


def bytes_per_transition(spec: ObservationSpec, action_dim: int) -> int:
    """What one stored transition costs: its frames once, its vectors twice (obs and next obs),
    the action, reward and flags."""
    total = 4 * action_dim + 4 * 3 + 1
    for key, (shape, dtype) in spec.items():
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        total += size if frame_dtype(key) is not None else 2 * size
    return total


def fitting_capacity(space: Any, action_dim: int, requested: int, memory_fraction: float,
                     say=print, what: str = "online replay buffer") -> int:
    """`requested`, lowered to what fits in `memory_fraction` of this machine's RAM, with a line
    saying what it costs: a pixel buffer sized like a state one would ask for tens of GB."""
    per = bytes_per_transition(observation_spec(space), action_dim)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    fits = max(2, int(memory_fraction * ram // per))
    capacity = min(requested, fits)
    note = (f" (lowered from {requested:,}: --buffer-capacity x {per:,} B is over "
            f"--buffer-memory {memory_fraction:g} of RAM)" if capacity < requested else "")
    say(f"{what}: {capacity:,} transitions x {per:,} B = {capacity * per / 1e9:.2f} GB of "
        f"{ram / 1e9:.1f} GB RAM{note}")
    return capacity


def _extra_spec(extra_fields: Sequence[str] | Mapping[str, Sequence[int]]) -> dict[str, tuple]:
    if isinstance(extra_fields, Mapping):
        return {k: tuple(int(s) for s in v) for k, v in extra_fields.items()}
    return {k: () for k in extra_fields}


_CORE_KEYS = ("observations", "next_observations", "actions", "rewards", "terminations",
              "truncations")


class ReplayBuffer:
    """Preallocated ring of transitions; pixel frames stored once (see module docstring)."""

    def __init__(self, capacity: int, observation_space: Any, action_dim: int, *,
                 extra_fields: Sequence[str] | Mapping[str, Sequence[int]] = (),
                 device: str | torch.device = "cpu", seed: int | None = None):
        self.spec = observation_spec(observation_space)
        self.extra_spec = _extra_spec(extra_fields)
        clash = set(self.extra_spec) & set(_CORE_KEYS)
        if clash:
            raise ValueError(f"extra fields {sorted(clash)} clash with the batch contract keys")
        self.capacity = int(capacity)
        self.action_dim = int(action_dim)
        self.device = torch.device(device)
        self.image_keys = [k for k in self.spec if frame_dtype(k) is not None]  # frames: once
        self.vector_keys = [k for k in self.spec if frame_dtype(k) is None]
        if self.capacity < 2:
            raise ValueError("capacity must be >= 2")
        cap = self.capacity
        self._frames = {k: np.zeros((cap, s[2], s[0], s[1]), d)
                        for k, (s, d) in self.spec.items() if k in self.image_keys}
        self._obs = {k: np.zeros((cap, *self.spec[k][0]), np.float32) for k in self.vector_keys}
        self._next_obs = {k: np.zeros_like(v) for k, v in self._obs.items()}
        self._actions = np.zeros((cap, self.action_dim), np.float32)
        self._rewards = np.zeros(cap, np.float32)
        self._terminations = np.zeros(cap, np.float32)
        self._truncations = np.zeros(cap, np.float32)
        self._extras = {k: np.zeros((cap, *s), np.float32) for k, s in self.extra_spec.items()}
        self._valid = np.zeros(cap, bool)
        # Bookkeeping (saved with the buffer). _head: absolute (never wrapped) index of the next
        # state-only slot, or of the pending final frame for pixel buffers. _written: absolute
        # end of the slots written so far. _continuable: the last transition was not done.
        self._head = 0
        self._written = 0
        self._num_valid = 0
        self._continuable = False
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ insertion
    def __len__(self) -> int:
        return self._num_valid

    def add(self, obs: Mapping[str, np.ndarray], action, reward, next_obs: Mapping[str, np.ndarray],
            terminated, truncated, **extras) -> None:
        """Insert one transition (env layout: state (S,), images (H, W, C) uint8)."""
        self.add_batch({k: np.asarray(v)[None] for k, v in obs.items()},
                       np.asarray(action)[None], np.asarray(reward)[None],
                       {k: np.asarray(v)[None] for k, v in next_obs.items()},
                       np.asarray(terminated)[None], np.asarray(truncated)[None],
                       **{k: np.asarray(v)[None] for k, v in extras.items()})

    def add_batch(self, obs: Mapping[str, np.ndarray], actions, rewards,
                  next_obs: Mapping[str, np.ndarray], terminations, truncations, **extras) -> None:
        """Insert B transitions in time order (each array has a leading B axis)."""
        actions = np.asarray(actions, np.float32)
        batch = len(actions)
        if batch == 0:
            return
        fields = {
            "actions": (actions, (self.action_dim,)),
            "rewards": (np.asarray(rewards, np.float32), ()),
            "terminations": (np.asarray(terminations, np.float32), ()),
            "truncations": (np.asarray(truncations, np.float32), ()),
        }
        if set(extras) != set(self.extra_spec):
            raise ValueError(f"extra fields: buffer has {sorted(self.extra_spec)}, "
                             f"got {sorted(extras)}")
        for k, s in self.extra_spec.items():
            fields[k] = (np.asarray(extras[k], np.float32), s)
        for name, (arr, shape) in fields.items():
            if arr.shape != (batch, *shape):
                raise ValueError(f"{name}: expected shape {(batch, *shape)}, got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{name}: non-finite values")
        obs = self._check_obs(obs, batch, "obs")
        next_obs = self._check_obs(next_obs, batch, "next_obs")
        done = (fields["terminations"][0] != 0) | (fields["truncations"][0] != 0)

        with self._lock:
            # Chunks bound the slots one write spans to the capacity, so nothing in a chunk
            # overwrites a slot written earlier in the same chunk.
            chunk = self.capacity if not self.image_keys else max(1, (self.capacity - 1) // 2)
            for lo in range(0, batch, chunk):
                sl = slice(lo, lo + chunk)
                self._write({k: v[sl] for k, v in obs.items()},
                            {k: v[sl] for k, v in next_obs.items()},
                            {k: v[0][sl] for k, v in fields.items()}, done[sl])

    def _check_obs(self, obs: Mapping[str, np.ndarray], batch: int, what: str) -> dict:
        if set(obs) != set(self.spec):
            raise ValueError(f"{what} keys {sorted(obs)} differ from the spec {sorted(self.spec)}")
        out = {}
        for k, (shape, dtype) in self.spec.items():
            arr = np.asarray(obs[k])
            if k in self.image_keys and arr.dtype != dtype:
                raise ValueError(f"{what}[{k!r}]: frames must be {dtype}, got {arr.dtype}")
            arr = arr.astype(dtype, copy=False)
            if arr.shape != (batch, *shape):
                raise ValueError(f"{what}[{k!r}]: expected shape {(batch, *shape)}, "
                                 f"got {arr.shape}")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ValueError(f"{what}[{k!r}]: non-finite values")
            out[k] = arr
        return out

    def _write(self, obs: dict, next_obs: dict, fields: dict, done: np.ndarray) -> None:
        cap, batch = self.capacity, len(done)
        if not self.image_keys:
            abs_slots = self._head + np.arange(batch)
            slots = abs_slots % cap
            touched = slots
            self._head = int(abs_slots[-1]) + 1
            self._written = self._head
        else:
            # cont[k]: transition k reuses the pending frame of transition k-1 as its observation.
            cont = np.empty(batch, bool)
            h = self._head % cap
            cont[0] = self._written > 0 and self._continuable and all(
                np.array_equal(self._frames[k][h], obs[k][0].transpose(2, 0, 1))
                for k in self.image_keys)
            cont[1:] = ~done[:-1]
            if batch > 1:
                for k in self.image_keys:
                    cont[1:] &= (_words(obs[k][1:]) == _words(next_obs[k][:-1])).all(axis=1)
            gap = (~cont).astype(np.int64)
            if self._written == 0:
                gap[0] = 0  # empty buffer: no pending frame to keep
            abs_slots = self._head + np.cumsum(gap + 1) - 1
            slots = abs_slots % cap
            nxt = (abs_slots + 1) % cap
            touched = np.unique(np.concatenate([slots, nxt]))
            self._head = int(abs_slots[-1]) + 1
            self._written = max(self._written, self._head + 1)
        before = int(self._valid[touched].sum())
        if self.image_keys:
            # A continuing transition's observation frame is already in place (it is the
            # previous next frame), so only new segments write one.
            new = np.flatnonzero(~cont)
            for k in self.image_keys:
                self._frames[k][slots[new]] = obs[k][new].transpose(0, 3, 1, 2)
                self._frames[k][nxt] = next_obs[k].transpose(0, 3, 1, 2)
            self._valid[nxt] = False
        self._valid[slots] = True
        self._num_valid += int(self._valid[touched].sum()) - before
        for k in self.vector_keys:
            self._obs[k][slots] = obs[k]
            self._next_obs[k][slots] = next_obs[k]
        self._actions[slots] = fields["actions"]
        self._rewards[slots] = fields["rewards"]
        self._terminations[slots] = fields["terminations"]
        self._truncations[slots] = fields["truncations"]
        for k in self.extra_spec:
            self._extras[k][slots] = fields[k]
        self._continuable = not bool(done[-1])

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int, generator: np.random.Generator | None = None,
               device: str | torch.device | None = None, out: dict | None = None) -> dict:
        """Uniform sample of `batch_size` transitions as a dict of torch tensors.

        `out`: a CPU batch returned by an earlier call, overwritten in place and returned.
        Fresh pixel batches are tens of MB, and first-touch page faults on new memory cost
        about as much as the gather itself; reuse when the previous batch is no longer needed.
        """
        device = self.device if device is None else torch.device(device)
        arrays = (self._alloc(batch_size) if out is None
                  else _reusable(out, self._alloc(0), device, batch_size))
        with self._lock:
            idx = self._sample_indices(batch_size, generator or self._rng)
            self._gather(arrays, 0, idx)
        return out if out is not None else _to_torch(arrays, device)

    def _sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self._num_valid == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        filled = min(self.capacity, self._written)
        idx = rng.integers(0, filled, n)
        if self._num_valid == filled:
            return idx
        # Frame-only slots are a small fraction (one per episode): redraw the few that hit one.
        bad = ~self._valid[idx]
        for _ in range(32):
            if not bad.any():
                return idx
            idx[bad] = rng.integers(0, filled, int(bad.sum()))
            bad = ~self._valid[idx]
        if bad.any():  # only reachable with pathological 1-step episodes in a tiny ring
            idx[bad] = rng.choice(np.flatnonzero(self._valid[:filled]), int(bad.sum()))
        return idx

    def _alloc(self, n: int) -> dict:
        def obs_arrays():
            d = {k: np.empty((n, *self.spec[k][0]), np.float32) for k in self.vector_keys}
            d.update({k: np.empty((n, *self._frames[k].shape[1:]), self._frames[k].dtype)
                      for k in self.image_keys})
            return d
        out = {"observations": obs_arrays(), "next_observations": obs_arrays(),
               "actions": np.empty((n, self.action_dim), np.float32),
               "rewards": np.empty(n, np.float32), "terminations": np.empty(n, np.float32),
               "truncations": np.empty(n, np.float32)}
        out.update({k: np.empty((n, *s), np.float32) for k, s in self.extra_spec.items()})
        return out

    def _gather(self, out: dict, offset: int, idx: np.ndarray) -> None:
        """Vectorised gather of transitions `idx` into out[...][offset:offset+len(idx)]."""
        end = offset + len(idx)

        def take(src, dst):
            # mode="clip" lets numpy write straight into `dst` (mode="raise" buffers a copy).
            np.take(src, idx, axis=0, out=dst[offset:end], mode="clip")

        nxt = (idx + 1) % self.capacity
        for k in self.vector_keys:
            take(self._obs[k], out["observations"][k])
            take(self._next_obs[k], out["next_observations"][k])
        for k in self.image_keys:
            take(self._frames[k], out["observations"][k])
            np.take(self._frames[k], nxt, axis=0, out=out["next_observations"][k][offset:end],
                    mode="clip")
        take(self._actions, out["actions"])
        take(self._rewards, out["rewards"])
        take(self._terminations, out["terminations"])
        take(self._truncations, out["truncations"])
        for k in self.extra_spec:
            take(self._extras[k], out[k])

    # ------------------------------------------------------------------ persistence
    def _layout(self) -> dict:
        return {"spec": {k: [list(s), d.str] for k, (s, d) in self.spec.items()},
                "extra_spec": {k: list(s) for k, s in self.extra_spec.items()},
                "action_dim": self.action_dim}

    def save(self, path: str | os.PathLike) -> None:
        """Write the whole buffer to one .npz file atomically (robostack.files.atomic_write)."""
        path = Path(path)
        with self._lock:
            filled = min(self.capacity, self._written)
            meta = {"format": _FORMAT_NAME, "version": FORMAT_VERSION, "capacity": self.capacity,
                    **self._layout(), "head": self._head, "written": self._written,
                    "num_valid": self._num_valid, "continuable": self._continuable,
                    "rng_state": self._rng.bit_generator.state}
            arrays = {name: arr[:filled] for name, arr in self._named_arrays().items()}
            arrays["__meta__"] = np.array(json.dumps(meta))
            with atomic_write(path) as f:
                np.savez(f, allow_pickle=False, **arrays)

    def _named_arrays(self) -> dict[str, np.ndarray]:
        named = {f"obs/{k}": v for k, v in self._obs.items()}
        named.update({f"next_obs/{k}": v for k, v in self._next_obs.items()})
        named.update({f"frames/{k}": v for k, v in self._frames.items()})
        named.update({f"extras/{k}": v for k, v in self._extras.items()})
        named.update(actions=self._actions, rewards=self._rewards,
                     terminations=self._terminations, truncations=self._truncations,
                     valid=self._valid)
        return named

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> ReplayBuffer:
        """Restore a buffer written by `save`, ring pointers and sampling RNG included."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no saved replay buffer there")
        try:
            if not zipfile.is_zipfile(path):  # else np.load would talk about pickles
                raise zipfile.BadZipFile("not an .npz (zip) archive")
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["__meta__"]))
                if meta.get("format") != _FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
                    raise BufferFileError(f"{path}: not a robostack replay buffer of format "
                                          f"version {FORMAT_VERSION} (meta: {meta.get('format')} "
                                          f"v{meta.get('version')})")
                spec = {k: (tuple(s), np.dtype(d)) for k, (s, d) in meta["spec"].items()}
                buf = cls(meta["capacity"], spec, meta["action_dim"],
                          extra_fields=meta["extra_spec"], device=device)
                filled = min(buf.capacity, meta["written"])
                for name, dst in buf._named_arrays().items():
                    src = z[name]
                    if src.shape != (filled, *dst.shape[1:]) or src.dtype != dst.dtype:
                        raise BufferFileError(f"{path}: array {name!r} has {src.dtype} "
                                              f"{src.shape}, expected {dst.dtype} "
                                              f"{(filled, *dst.shape[1:])}")
                    dst[:filled] = src
        except BufferFileError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
                TypeError) as e:
            raise BufferFileError(
                f"{path}: cannot read the saved replay buffer ({type(e).__name__}: {e}). The file "
                "is truncated or corrupt; saves are atomic, so it was damaged after being written "
                "(disk full, interrupted copy). Restore it from a backup, or delete it to start "
                "with an empty buffer.") from e
        buf._head, buf._written = int(meta["head"]), int(meta["written"])
        buf._continuable = bool(meta["continuable"])
        buf._num_valid = int(buf._valid.sum())
        if buf._num_valid != meta["num_valid"]:
            raise BufferFileError(f"{path}: bookkeeping mismatch ({buf._num_valid} valid slots, "
                                  f"metadata says {meta['num_valid']}); the file is corrupt.")
        buf._rng.bit_generator.state = meta["rng_state"]
        return buf


def _words(images: np.ndarray) -> np.ndarray:
    """(N, ...) frames -> (N, words): compare them 8 bytes at a time."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1).view(np.uint8)
    return flat.view(np.uint64) if flat.shape[1] % 8 == 0 else flat


def _reusable(out: dict, template: dict, device: torch.device, batch_size: int) -> dict:
    """numpy views of a previously returned CPU batch, checked against the buffer's layout."""
    if device.type != "cpu":
        raise ValueError("out= reuses CPU batches only")
    if out.keys() != template.keys():
        raise ValueError(f"out has keys {sorted(out)}, expected {sorted(template)}")
    views = {}
    for k, v in template.items():
        if isinstance(v, dict):
            views[k] = _reusable(out[k], v, device, batch_size)
            continue
        t = out[k]
        if (t.device.type != "cpu" or t.shape != (batch_size, *v.shape[1:])
                or t.numpy().dtype != v.dtype or not t.is_contiguous()):
            raise ValueError(f"out[{k!r}] does not match a batch of {batch_size} from this buffer")
        views[k] = t.numpy()
    return views


def _to_torch(batch: dict, device: torch.device) -> dict:
    def conv(x):
        t = torch.from_numpy(x)
        return t if device.type == "cpu" else t.to(device, non_blocking=True)
    return {k: ({kk: conv(vv) for kk, vv in v.items()} if isinstance(v, dict) else conv(v))
            for k, v in batch.items()}


def sample_mixed(online: ReplayBuffer, demos: ReplayBuffer, batch_size: int,
                 demo_fraction: float = 0.5, generator: np.random.Generator | None = None,
                 device: str | torch.device | None = None, out: dict | None = None) -> dict:
    """RLPD symmetric sampling: round(batch_size * demo_fraction) rows from `demos`, the rest
    from `online`, concatenated (online rows first) into one batch.

    If one buffer is empty the whole batch comes from the other (e.g. before the first online
    episode); if both are empty this raises. Both buffers must share spec, action_dim and extras.
    `out` reuses an earlier CPU batch in place, as in `ReplayBuffer.sample`.
    """
    if online._layout() != demos._layout():
        raise ValueError("online and demo buffers differ in observation spec, action_dim or "
                         "extra fields; they cannot share a batch")
    if not 0.0 <= demo_fraction <= 1.0:
        raise ValueError(f"demo_fraction must be in [0, 1], got {demo_fraction}")
    n_demo = int(round(batch_size * demo_fraction))
    if len(demos) == 0:
        n_demo = 0
    elif len(online) == 0:
        n_demo = batch_size
    rng = generator or online._rng
    device = online.device if device is None else torch.device(device)
    arrays = (online._alloc(batch_size) if out is None
              else _reusable(out, online._alloc(0), device, batch_size))
    n_online = batch_size - n_demo
    if n_online:
        with online._lock:
            online._gather(arrays, 0, online._sample_indices(n_online, rng))
    if n_demo:
        with demos._lock:
            demos._gather(arrays, n_online, demos._sample_indices(n_demo, rng))
    return out if out is not None else _to_torch(arrays, device)


def load_demonstrations(episodes: Sequence[Mapping[str, Any]], *, extra_capacity: int = 0,
                        extra_fields: Sequence[str] | Mapping[str, Sequence[int]] = (),
                        device: str | torch.device = "cpu",
                        seed: int | None = None) -> ReplayBuffer:
    """Build a demonstration buffer from scripted-expert episodes.

    Each episode is a dict of stacked numpy arrays over T steps:
        "observations": {key: array (T+1, ...)}  (env layout, images uint8 HWC)
        "actions": (T, A), "rewards": (T,), "terminations": (T,), "truncations": (T,)
        plus one (T, ...) array per name in `extra_fields`.
    Observation t and t+1 form transition t. Only the last step may be terminal or truncated.
    The buffer is sized to hold every episode without overwriting, plus `extra_capacity` slots
    for interventions added later.
    """
    if not episodes:
        raise ValueError("no demonstration episodes given")
    first = episodes[0]
    spec = {k: (np.asarray(v).shape[1:], np.asarray(v).dtype)
            for k, v in first["observations"].items()}
    action_dim = np.asarray(first["actions"]).shape[1]
    lengths = [len(ep["actions"]) for ep in episodes]
    buf = ReplayBuffer(sum(lengths) + len(episodes) + extra_capacity + 1, spec, action_dim,
                       extra_fields=extra_fields, device=device, seed=seed)
    for i, (ep, t) in enumerate(zip(episodes, lengths)):
        obs = ep["observations"]
        for k, v in obs.items():
            if len(v) != t + 1:
                raise ValueError(f"episode {i}: observations[{k!r}] has {len(v)} entries, "
                                 f"expected T+1 = {t + 1}")
        done = (np.asarray(ep["terminations"]) != 0) | (np.asarray(ep["truncations"]) != 0)
        if done[:-1].any():
            raise ValueError(f"episode {i}: terminated/truncated before its last step")
        buf.add_batch({k: v[:-1] for k, v in obs.items()}, ep["actions"], ep["rewards"],
                      {k: v[1:] for k, v in obs.items()}, ep["terminations"], ep["truncations"],
                      **{k: ep[k] for k in buf.extra_spec})
    return buf
