"""Names, features and file helpers of the episode log layout (LeRobotDataset v3.0 + RL fields)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robostack.files import atomic_write, fsync_dir, write_json_atomic

CODEBASE_VERSION = "v3.0"
FORMAT_VERSION = 1  # robostack's extension of the layout (RL fields, final observations)
CHUNKS_SIZE = 1000  # files per chunk directory (LeRobot's DEFAULT_CHUNK_SIZE)
INFO_PATH = "meta/info.json"
INFO_INDENT = 4  # meta/info.json as LeRobot writes it
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
# Safety events (the supervisor's transitions, ...) of each episode, one row per event. Under
# meta/: LeRobot loads data/ and meta/episodes/ as whole folders, and a table of another shape
# there would break its loader.
EVENTS_PATH = "meta/events/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_FILE_RE = re.compile(r"chunk-(\d+)/file-(\d+)\.(parquet|mp4)$")

DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
RL_FEATURES = {
    "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    "next.done": {"dtype": "bool", "shape": [1], "names": None},
    "next.truncated": {"dtype": "bool", "shape": [1], "names": None},
    "next.success": {"dtype": "bool", "shape": [1], "names": None},
    "intervention": {"dtype": "bool", "shape": [1], "names": None},
}
_ARROW = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(),
          "int32": pa.int32(), "bool": pa.bool_(), "uint8": pa.uint8()}
# Columns every log has; an extra per-frame column may not take their names. "task" and
# "events" are not columns but keys of what EpisodeLog.episode(i) returns beside them.
_FIXED = {"action", "policy_action", "task", "events", *RL_FEATURES, *DEFAULT_FEATURES}
# A classifier label log's one extra column: whether the observation of the frame (its images
# and state) shows the task's success (robostack record-labels; the label source, simulator or
# operator, is the episode's rl/label_source).
LABEL_FEATURE = "label.success"


class EpisodeLogError(RuntimeError):
    """A log file is missing, corrupt or does not match the log's metadata."""


# --------------------------------------------------------------------------- keys and features
def feature_key(env_key: str) -> str:
    """Env observation key -> feature name: "state" -> "observation.state",
    "images/wrist" -> "observation.images.wrist" (LeRobot forbids "/" in feature names)."""
    return env_key if env_key.startswith("observation.") else "observation." + env_key.replace("/", ".")


def env_key(feature: str) -> str:
    """Inverse of `feature_key`."""
    key = feature.removeprefix("observation.")
    return "images/" + key.removeprefix("images.") if key.startswith("images.") else key


def state_names(state_fields: Mapping[str, slice]) -> list[str]:
    """Per-element names from `env.state_fields` (name -> slice): tcp_position.0, ..."""
    names = []
    for name, where in state_fields.items():
        size = where.stop - where.start
        names += [name] if size == 1 else [f"{name}.{i}" for i in range(size)]
    return names


def features_from_spaces(observation_space: Any, action_space: Any, *,
                         state_names: Sequence[str] | None = None,
                         action_names: Sequence[str] | None = None) -> dict:
    """LeRobot features for a robostack env: "observation.state", one "video" feature per
    "images/<camera>" key (uint8 HWC), "action"."""
    items = observation_space.spaces.items() if hasattr(observation_space, "spaces") \
        else dict(observation_space).items()
    features = {}
    for key, space in items:
        shape = [int(s) for s in space.shape]
        if key.startswith("images/"):
            features[feature_key(key)] = {"dtype": "video", "shape": shape,
                                          "names": ["height", "width", "channels"]}
        else:
            names = list(state_names) if key == "state" and state_names else None
            features[feature_key(key)] = {"dtype": "float32", "shape": shape, "names": names}
    features["action"] = {"dtype": "float32", "shape": [int(action_space.shape[0])],
                          "names": list(action_names) if action_names else None}
    return features


def label_features() -> dict:
    """The extra feature of a classifier label log (LABEL_FEATURE), to add to the features an
    EpisodeWriter is opened with."""
    return {LABEL_FEATURE: {"dtype": "bool", "shape": [1], "names": None}}


def extra_keys(features: Mapping[str, Mapping]) -> list[str]:
    """The extra per-frame columns among `features` (a writer's or a log's): every feature that
    is neither an observation, an action, a timestamp nor a column every log has; e.g.
    "label.success" (LABEL_FEATURE) or "next.classifier.probability"."""
    return [k for k in features if k not in _FIXED and not k.startswith(("observation.", "timestamp."))]


def check_extras(extras: Mapping[str, Any] | None, features: Mapping[str, Mapping]) -> dict:
    """One frame's extra columns ({name: value}) checked against the log's `features`: every
    declared extra is given (NaN for an unknown float), none other, each of its feature's shape
    (a scalar or a 1-element array for shape [1]) and kind (a bool or integer feature takes no
    fractions). Returns them as the writer stores them; a ValueError names what is wrong."""
    declared, given = extra_keys(features), dict(extras or {})
    unknown = sorted(map(str, set(given) - set(declared)))
    if unknown:
        raise ValueError(f"extras {unknown}: not columns of this log (its extras: "
                         f"{declared or 'none'}). Fix: declare them in the features the "
                         "EpisodeWriter is opened with, e.g. label_features()")
    missing = [k for k in declared if k not in given]
    if missing:
        raise ValueError(f"extras {missing} missing: every frame gives a value for each extra "
                         "column the log declares. Fix: add_frame(..., extras={name: value}) "
                         "with all of them (NaN for an unknown float)")
    out = {}
    for key in declared:
        ft, value = features[key], np.asarray(given[key])
        n, dtype = ft["shape"][0], np.dtype(ft["dtype"])
        if value.size != n or (n > 1 and value.shape != (n,)):
            raise ValueError(f"extras[{key!r}]: expected shape {ft['shape']}, got {value.shape}")
        kinds = "biuf" if dtype.kind == "f" else "biu"
        stored = value.astype(dtype) if value.dtype.kind in kinds else None
        if stored is None or (dtype.kind != "f" and not np.array_equal(stored, value)):
            raise ValueError(f"extras[{key!r}]: {value.tolist()!r} is not a {ft['dtype']} value")
        out[key] = stored.reshape(()).item() if n == 1 else stored.reshape(n)
    return out


def timestamp_sources(observation_space: Any) -> tuple[str, ...]:
    """The writer's timestamp sources for an env's observations: "state", "action", and each
    camera ("images/<camera>"), whose frames carry their own capture times."""
    keys = observation_space.spaces if hasattr(observation_space, "spaces") else dict(observation_space)
    return ("state", "action", *(k for k in keys if k.startswith("images/")))


def image_timestamps(info: Mapping) -> dict[str, float]:
    """An env step's info["image_times"] ({camera: s}) as add_frame timestamps
    ({"images/<camera>": s}) for the frame that logs those images."""
    return {f"images/{name}": float(when) for name, when in (info.get("image_times") or {}).items()}


def _full_features(features: Mapping[str, Mapping], fps: float,
                   timestamp_sources: Sequence[str]) -> dict:
    if "action" not in features or not any(k.startswith("observation.") for k in features):
        raise ValueError("features need 'action' and at least one 'observation.*' entry")
    out = {}
    for key, ft in features.items():
        if "/" in key:
            raise ValueError(f"feature name {key!r} contains '/' (LeRobot forbids it); "
                             "use feature_key() to name env keys")
        ft = {"dtype": ft["dtype"], "shape": [int(s) for s in ft["shape"]], "names": ft.get("names")}
        if ft["dtype"] == "video":
            if len(ft["shape"]) != 3 or ft["shape"][2] != 3:
                raise ValueError(f"{key}: video features are (height, width, 3), got {ft['shape']}")
            h, w, c = ft["shape"]
            ft["info"] = {"video.height": h, "video.width": w, "video.codec": "mpeg4",
                          "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                          "video.fps": fps, "video.channels": c, "has_audio": False}
        elif ft["dtype"] not in _ARROW or len(ft["shape"]) != 1:
            raise ValueError(f"{key}: supported are 'video' (H, W, 3) and 1-d {sorted(_ARROW)}, "
                             f"got {ft['dtype']} {ft['shape']}")
        if key in extra_keys({key: ft}) and ft["dtype"] == "video":
            raise ValueError(f"{key}: a camera is an observation; name it observation.images.<camera>")
        if key in _FIXED - {"action"} or key.startswith("timestamp."):
            raise ValueError(f"feature {key!r}: every log has a column of that name. Fix: name "
                             "the extra column otherwise (e.g. label.success)")
        out[key] = ft
    out["policy_action"] = {**out["action"]}
    out.update({k: dict(v) for k, v in RL_FEATURES.items()})
    for source in timestamp_sources:
        out[f"timestamp.{source}"] = {"dtype": "float64", "shape": [1], "names": None}
    out.update({k: dict(v) for k, v in DEFAULT_FEATURES.items()})
    return out


def _arrow_type(ft: Mapping) -> pa.DataType:
    t = _ARROW[ft["dtype"]]
    return t if ft["shape"] == [1] else pa.list_(t, ft["shape"][0])


# --------------------------------------------------------------------------- safety events
EVENT_COLUMNS = {"episode_index": pa.int64(), "frame_index": pa.int64(), "index": pa.int64(),
                 "kind": pa.string(), "from_state": pa.string(), "to_state": pa.string(),
                 "reason": pa.string(), "time": pa.float64()}
EVENT_TEXT_LIMITS = {"kind": 64, "from_state": 64, "to_state": 64, "reason": 500}  # characters
MAX_EVENTS_PER_FRAME = 32  # the supervisor makes a few per step at most; more is a flood


def clean_text(value: str, limit: int) -> str:
    """`value` as one bounded, printable line: what a robot server sent (hostile until shown
    otherwise) can neither break the file (lone surrogates are not UTF-8) nor a terminal that
    prints it (escape sequences, newlines: written as \\x1b, \\n); past `limit` characters it
    is cut, saying how much was cut."""
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                       for c in text)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return text


def check_events(events, frame_index: int) -> list[tuple]:
    """The rows of one frame's events: each `[from_state, to_state, reason]` (a supervisor
    transition, as the env's info["supervisor_transitions"] lists them) or a dict with
    from_state, to_state, reason and optionally kind (default "supervisor") and time (s, the
    robot's time since the reset; NaN when not given). A wrong shape or type is a TypeError
    naming the event; text is made safe and bounded (clean_text); past MAX_EVENTS_PER_FRAME
    the rest is replaced by one "dropped" event that counts them."""
    if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Sequence):
        raise TypeError(f"events of frame {frame_index}: expected a list of events, got "
                        f"{type(events).__name__}")
    rows = []
    for event in events[:MAX_EVENTS_PER_FRAME]:
        if isinstance(event, Mapping):
            unknown = set(event) - {"kind", "from_state", "to_state", "reason", "time"}
            if unknown:
                raise TypeError(f"event {event!r:.200} of frame {frame_index}: unknown keys "
                                f"{sorted(map(str, unknown))}; an event has kind, from_state, "
                                "to_state, reason, time")
            fields = {"kind": event.get("kind", "supervisor"), "from_state": event.get("from_state", ""),
                      "to_state": event.get("to_state", ""), "reason": event.get("reason", "")}
            when = event.get("time", math.nan)
        elif isinstance(event, Sequence) and not isinstance(event, (str, bytes)) and len(event) == 3:
            fields = {"kind": "supervisor", "from_state": event[0], "to_state": event[1],
                      "reason": event[2]}
            when = math.nan
        else:
            raise TypeError(f"event {event!r:.200} of frame {frame_index}: expected "
                            "[from_state, to_state, reason] or a dict of them")
        for name, value in fields.items():
            if not isinstance(value, str):
                raise TypeError(f"event {event!r:.200} of frame {frame_index}: {name} must be "
                                f"a string, got {type(value).__name__}")
        if isinstance(when, bool) or not isinstance(when, (int, float)):
            raise TypeError(f"event {event!r:.200} of frame {frame_index}: time must be a "
                            f"number (s), got {type(when).__name__}")
        rows.append((frame_index, *(clean_text(fields[k], n) for k, n in EVENT_TEXT_LIMITS.items()),
                     float(when)))
    if len(events) > MAX_EVENTS_PER_FRAME:
        rows.append((frame_index, "dropped", "", "", f"{len(events) - MAX_EVENTS_PER_FRAME} more "
                     f"events at this frame not logged (at most {MAX_EVENTS_PER_FRAME} a frame)",
                     math.nan))
    return rows


def events_table(episode: int, first_index: int, rows: Sequence[tuple]) -> pa.Table:
    """One episode's events file: rows (frame_index, kind, from_state, to_state, reason, time)."""
    columns = list(zip(*rows)) if rows else [()] * 6
    frames = [int(f) for f in columns[0]]
    data = {"episode_index": [episode] * len(rows), "frame_index": frames,
            "index": [first_index + f for f in frames], "kind": columns[1],
            "from_state": columns[2], "to_state": columns[3], "reason": columns[4],
            "time": columns[5]}
    return pa.table({name: pa.array(list(data[name]), typ) for name, typ in EVENT_COLUMNS.items()})


# --------------------------------------------------------------------------- file helpers
def _chunk_file(episode: int) -> dict:
    return {"chunk_index": episode // CHUNKS_SIZE, "file_index": episode % CHUNKS_SIZE}


def _is_temporary(path: Path) -> bool:
    """A file a crashed writer left: atomic_write's `.<name>.tmp-<pid>`, the video encoder's
    `<name>.tmp.mp4`, or `<name>.tmp` (logs written before robostack.files existed)."""
    return ".tmp" in path.name


def checksums(info: dict) -> dict[str, str]:
    """info.json's {path relative to the root: sha256} of every per-episode file (data, episode
    metadata, videos), recorded at each episode's commit; {} in logs written before them (and
    in other LeRobot datasets), whose files are then read unverified."""
    return info.setdefault("robostack", {}).setdefault("sha256", {})


def info_digest(info: dict) -> str:
    """The sha256 of what info.json says, without its own digest (robostack.info_sha256): a
    file cannot hold the checksum of its own bytes, so it holds one of its content (keys
    sorted), which a changed byte, or an edit, changes."""
    content = json.loads(json.dumps(info))
    content.get("robostack", {}).pop("info_sha256", None)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def tasks_digest(tasks: Sequence[str]) -> str:
    """The sha256 of the committed task list, recorded in info.json (robostack.tasks_sha256):
    of the list, not of tasks.parquet's bytes, because a crash inside a commit may leave the
    file with one more task than info.json counts, and the reader reads only the counted ones."""
    return hashlib.sha256(json.dumps(list(tasks)).encode()).hexdigest()


def write_info(root: Path, info: dict) -> None:
    """info.json, atomically, with its content digest (info_digest) updated."""
    info.setdefault("robostack", {})["info_sha256"] = info_digest(info)
    write_json_atomic(root / INFO_PATH, info, indent=INFO_INDENT)


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """`path` gets the whole table or, after a crash, stays as it was (robostack.files.atomic_write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        pq.write_table(table, f)


def _tasks_table(tasks: Sequence[str]) -> pa.Table:
    # LeRobot writes tasks with pandas, the task string as the index; the pandas metadata below
    # makes pandas.read_parquet give that same frame, while pyarrow readers see two columns.
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
         "numpy_type": "int64", "metadata": None},
        {"name": "task", "field_name": "task", "pandas_type": "unicode",
         "numpy_type": "object", "metadata": None}]}
    return pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                     "task": pa.array(list(tasks), pa.string())},
                    ).replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _read_table(path: Path, what: str) -> pa.Table:
    if not path.is_file():
        raise EpisodeLogError(f"{path}: missing ({what}). Fix: restore the file, or copy the log "
                              "again; a log is only complete with every file info.json counts.")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise EpisodeLogError(
            f"{path}: corrupt or truncated parquet ({what}): {exc}. Fix: restore it from a copy; "
            "if only this episode is damaged, read the others (EpisodeLog(...).episode(i) for "
            "the rest still works).") from exc


def _column(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    if pa.types.is_list(col.type):
        return np.array(col.to_pylist())
    return col.to_numpy(zero_copy_only=False)


def _rename_durably(tmp: Path, final: Path) -> None:
    """fsync a finished file, rename it into place, fsync the directory: robostack.files.atomic_write's
    steps for a file it could not open itself (OpenCV's VideoWriter writes by path and picks the
    container from the extension, hence `<name>.tmp.mp4`)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(final.parent)

