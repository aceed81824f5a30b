"""The episode log: one on-disk format for demos, interventions, classifier labels and rollouts.

Layout (LeRobotDataset v3.0, readable by LeRobot; templates as in lerobot.datasets.utils):

    meta/info.json                                codebase_version "v3.0", fps, features, totals
    meta/tasks.parquet                            task_index, task (pandas reads task as index)
    meta/episodes/chunk-CCC/file-FFF.parquet      one row per episode: length, tasks, file
                                                  indices, dataset_from/to_index, video
                                                  from/to timestamps, rl/* summary, final/*
    data/chunk-CCC/file-FFF.parquet               one row per step
    videos/<video key>/chunk-CCC/file-FFF.mp4     one per camera (mp4v, RGB in and out)

Frame t holds the observation at which action t was taken, the executed `action`, what the
policy proposed (`policy_action`, equal to `action` unless `intervention`), and the outcome of
the step: `next.reward`, `next.done` (termination: no bootstrapping past it), `next.truncated`
(time limit: bootstrapping continues), `next.success`. `timestamp` is frame_index / fps as in
LeRobot; `timestamp.<source>` (float64 s, NaN when not given) is when each source was measured,
on the clock of whoever stamped it (the robot server's monotonic clock for `state`).
LeRobot drops an episode's last next-observation; RL needs it to bootstrap a truncated episode,
so it is kept: vector observations as `final/<key>` columns of the episode row, images as one
extra trailing video frame after `to_timestamp` (outside the episode's time range, so LeRobot
never decodes it).

Crash safety: one data file (and one video file per camera, one episodes-metadata file) per
episode. Everything of an episode is written under temporary names, fsynced and renamed into
place; `meta/info.json` is rewritten last, atomically, and is the commit point: an episode
exists when `total_episodes` counts it. A crash (kill -9 included) loses at most the episode in
flight; reopening the log removes its leftovers and appends after the last committed episode.

Writes happen on a background thread behind a bounded queue: `add_frame` copies the arrays and
enqueues them (microseconds); video encoding and parquet writing never run on the control loop.
The reader needs numpy, pyarrow and OpenCV only (no torch).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import queue
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robostack.files import fsync_dir

CODEBASE_VERSION = "v3.0"
FORMAT_VERSION = 1  # robostack's extension of the layout (RL fields, final observations)
CHUNKS_SIZE = 1000  # files per chunk directory (LeRobot's DEFAULT_CHUNK_SIZE)
INFO_PATH = "meta/info.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
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


# --------------------------------------------------------------------------- file helpers
def _chunk_file(episode: int) -> dict:
    return {"chunk_index": episode // CHUNKS_SIZE, "file_index": episode % CHUNKS_SIZE}


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_parquet(table: pa.Table, path: Path) -> Path:
    """Write to `path`.tmp and fsync; the caller renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    _fsync_file(tmp)
    return tmp


def _write_json_atomic(data: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=4)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


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


# --------------------------------------------------------------------------- writer
class EpisodeWriter:
    """Appends episodes to a log at `root` (created if absent; reopened logs must match `fps`
    and `features`). One writer per log at a time (a lock file enforces it).

        writer = EpisodeWriter(root, fps=10, features=features_from_spaces(...), task="pick_cube")
        writer.add_frame(obs, action, reward, terminated, truncated, success=..., ...)
        writer.end_episode(final_obs)        # commits in the background; returns the index
        writer.close()                       # waits for every committed episode to be on disk
    """

    def __init__(self, root: str | os.PathLike, fps: float, features: Mapping[str, Mapping], *,
                 task: str = "", robot_type: str | None = None,
                 timestamp_sources: Sequence[str] = ("state", "action"), queue_size: int = 1024):
        self.root = Path(root)
        self.fps = fps
        self.task = task
        self.features = _full_features(features, fps, timestamp_sources)
        self.obs_keys = [k for k in self.features if k.startswith("observation.")]
        self.video_keys = [k for k in self.obs_keys if self.features[k]["dtype"] == "video"]
        self.sources = list(timestamp_sources)
        self.stall_seconds = 0.0  # time add_frame spent waiting on a full queue
        (self.root / "meta").mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.root / "meta" / ".writer.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise EpisodeLogError(f"{self.root}: another EpisodeWriter has this log open. Fix: "
                                  "close it, or write to another folder.") from None
        self.info = self._open_info(robot_type)
        self._tasks = []
        self._recover()
        self._next_episode = self.info["total_episodes"]
        self._frames_in_episode = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
        self._thread.start()

    # --- caller side (control loop) ------------------------------------------------------
    def add_frame(self, obs: Mapping[str, np.ndarray], action, reward: float = 0.0,
                  terminated: bool = False, truncated: bool = False, *, success: bool = False,
                  intervention: bool = False, policy_action=None,
                  timestamps: Mapping[str, float] | None = None) -> None:
        """Log one step: `obs` (env or feature keys) is where `action` was taken; reward,
        terminated, truncated, success are its outcome. Copies the arrays; never writes."""
        self._raise_pending()
        frame = {}
        for key, value in obs.items():
            name = feature_key(key)
            ft = self.features.get(name)
            arr = np.array(value, dtype=np.uint8 if ft and ft["dtype"] == "video" else None)
            if ft is None or list(arr.shape) != ft["shape"]:
                raise ValueError(f"obs[{key!r}]: expected feature {name} of shape "
                                 f"{ft and ft['shape']}, got {arr.shape}")
            frame[name] = arr
        if len(frame) != len(self.obs_keys):
            raise ValueError(f"obs keys {sorted(frame)} differ from {self.obs_keys}")
        frame["action"] = np.array(action, np.float32)
        frame["policy_action"] = frame["action"] if policy_action is None \
            else np.array(policy_action, np.float32)
        frame["next.reward"] = float(reward)
        frame["next.done"] = bool(terminated)
        frame["next.truncated"] = bool(truncated)
        frame["next.success"] = bool(success)
        frame["intervention"] = bool(intervention)
        for source in self.sources:
            frame[f"timestamp.{source}"] = float(timestamps.get(source, math.nan)) \
                if timestamps else math.nan
        self._frames_in_episode += 1
        self._put(("frame", frame))

    def end_episode(self, final_obs: Mapping[str, np.ndarray], *, task: str | None = None) -> int:
        """Close the episode in flight; `final_obs` is the observation after its last step.
        The commit runs in the background; returns the episode's index in the log."""
        self._raise_pending()
        if self._frames_in_episode == 0:
            raise ValueError("end_episode without any add_frame")
        final = {feature_key(k): np.array(v) for k, v in final_obs.items()}
        if sorted(final) != sorted(self.obs_keys):
            raise ValueError(f"final_obs keys {sorted(final)} differ from {self.obs_keys}")
        index = self._next_episode
        self._next_episode += 1
        self._frames_in_episode = 0
        self._put(("end", {"final": final, "task": self.task if task is None else task}))
        return index

    def discard_episode(self) -> None:
        """Drop the episode in flight (a re-recorded demo, an aborted rollout)."""
        self._frames_in_episode = 0
        self._put(("discard", None))

    def flush(self) -> None:
        """Block until every ended episode is committed."""
        self._queue.join()
        self._raise_pending()

    def close(self) -> None:
        """Commit what was ended, drop an unfinished episode, release the log."""
        if self._thread.is_alive():
            self._put(("close", None))
            self._thread.join()
        self._lock_file.close()
        self._raise_pending()

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _put(self, item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # back-pressure rather than losing data; counted for the report
            t0 = time.perf_counter()
            self._queue.put(item)
            self.stall_seconds += time.perf_counter() - t0

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise EpisodeLogError(f"{self.root}: the background writer failed: "
                                  f"{self._error!r}") from self._error

    # --- opening an existing log -------------------------------------------------------------
    def _open_info(self, robot_type: str | None) -> dict:
        path = self.root / INFO_PATH
        if not path.exists():
            info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type,
                    "total_episodes": 0, "total_frames": 0, "total_tasks": 0,
                    "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100,
                    "video_files_size_in_mb": 500, "fps": self.fps, "splits": {},
                    "data_path": DATA_PATH, "video_path": VIDEO_PATH if self.video_keys else None,
                    "features": self.features,
                    "robostack": {"format_version": FORMAT_VERSION, "files_per_episode": 1}}
            _write_json_atomic(info, path)
            return info
        info = EpisodeLog._read_info(self.root)
        if info["fps"] != self.fps or info["features"] != json.loads(json.dumps(self.features)):
            raise EpisodeLogError(
                f"{path}: this log was written with fps {info['fps']} and features "
                f"{sorted(info['features'])}; the writer has fps {self.fps} and features "
                f"{sorted(self.features)} (or shapes/names differ). Fix: write to a new folder.")
        return info

    def _recover(self) -> None:
        """Remove what a crash left: temporary files and files of uncommitted episodes."""
        committed = self.info["total_episodes"]
        for path in (self.root / "meta").glob("*.tmp"):
            path.unlink()
        if self.info["total_tasks"]:
            # A crash inside a commit can leave tasks.parquet with the uncommitted episode's task.
            tasks = EpisodeLog._read_tasks(self.root)
            self._tasks = tasks[:self.info["total_tasks"]]
            if len(tasks) > len(self._tasks):
                path = self.root / TASKS_PATH
                os.replace(_write_parquet(_tasks_table(self._tasks), path), path)
                fsync_dir(path.parent)
        for top in ("data", "videos", "meta/episodes"):
            for path in (self.root / top).rglob("*") if (self.root / top).exists() else ():
                if not path.is_file():
                    continue
                m = _FILE_RE.search(path.as_posix())
                if ".tmp" in path.name or (m and int(m[1]) * CHUNKS_SIZE + int(m[2]) >= committed):
                    path.unlink()

    # --- background thread -------------------------------------------------------------------
    def _run(self) -> None:
        episode = None
        while True:
            kind, payload = self._queue.get()
            try:
                if self._error is not None or kind == "close":
                    if episode is not None:
                        self._abort(episode)
                    return
                if kind == "frame":
                    episode = episode or self._start(self.info["total_episodes"])
                    self._append(episode, payload)
                elif kind == "end":
                    self._commit(episode, payload)
                    episode = None
                elif kind == "discard" and episode is not None:
                    self._abort(episode)
                    episode = None
            except BaseException as exc:  # surfaced to the caller on its next call
                self._error = exc
            finally:
                self._queue.task_done()

    def _start(self, index: int) -> dict:
        import cv2

        episode = {"index": index, "columns": {k: [] for k in self.features}, "videos": {}}
        for key in self.video_keys:
            final = self.root / VIDEO_PATH.format(video_key=key, **_chunk_file(index))
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(final.stem + ".tmp.mp4")  # the extension picks the container
            h, w, _ = self.features[key]["shape"]
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(self.fps), (w, h))
            if not writer.isOpened():
                raise EpisodeLogError(f"{tmp}: OpenCV cannot write mp4v video. Fix: install "
                                      "opencv-python-headless from PyPI (its wheels include FFmpeg).")
            episode["videos"][key] = (writer, tmp, final)
        return episode

    def _append(self, episode: dict, frame: dict) -> None:
        cols = episode["columns"]
        for key, value in frame.items():
            if key in episode["videos"]:
                episode["videos"][key][0].write(np.ascontiguousarray(value[..., ::-1]))  # RGB->BGR
            else:
                cols[key].append(value)

    def _abort(self, episode: dict) -> None:
        for writer, tmp, _ in episode["videos"].values():
            writer.release()
            tmp.unlink(missing_ok=True)

    def _commit(self, episode: dict, end: dict) -> None:
        index, cols = episode["index"], episode["columns"]
        length = len(cols["action"])
        if end["task"] not in self._tasks:
            self._tasks.append(end["task"])
            new_task = True
        else:
            new_task = False
        task_index = self._tasks.index(end["task"])
        first = self.info["total_frames"]
        cols["timestamp"] = np.arange(length, dtype=np.float32) / np.float32(self.fps)
        cols["frame_index"] = np.arange(length, dtype=np.int64)
        cols["episode_index"] = np.full(length, index, np.int64)
        cols["index"] = np.arange(first, first + length, dtype=np.int64)
        cols["task_index"] = np.full(length, task_index, np.int64)
        arrays, fields = [], []
        for key, ft in self.features.items():
            if ft["dtype"] == "video":
                continue
            values = np.asarray(cols[key], dtype=ft["dtype"])
            typ = _arrow_type(ft)
            arr = pa.array(values, typ) if values.ndim == 1 else pa.FixedSizeListArray.from_arrays(
                pa.array(values.reshape(-1), typ.value_type), ft["shape"][0])
            arrays.append(arr), fields.append(pa.field(key, typ))
        renames = []
        for key, (writer, tmp, final) in episode["videos"].items():
            writer.write(np.ascontiguousarray(end["final"][key].astype(np.uint8)[..., ::-1]))
            writer.release()
            _fsync_file(tmp)
            renames.append((tmp, final))
        where = _chunk_file(index)
        data_path = self.root / DATA_PATH.format(**where)
        renames.append((_write_parquet(pa.Table.from_arrays(arrays, schema=pa.schema(fields)),
                                       data_path), data_path))
        rewards = np.asarray(cols["next.reward"], np.float64)
        row = {"episode_index": index, "tasks": [end["task"]], "length": length,
               "data/chunk_index": where["chunk_index"], "data/file_index": where["file_index"],
               "dataset_from_index": first, "dataset_to_index": first + length}
        for key in self.video_keys:
            row.update({f"videos/{key}/chunk_index": where["chunk_index"],
                        f"videos/{key}/file_index": where["file_index"],
                        f"videos/{key}/from_timestamp": 0.0,
                        f"videos/{key}/to_timestamp": length / self.fps})
        row.update({"meta/episodes/chunk_index": where["chunk_index"],
                    "meta/episodes/file_index": where["file_index"],
                    "rl/return": float(rewards.sum()), "rl/success": bool(any(cols["next.success"])),
                    "rl/terminated": bool(cols["next.done"][-1]),
                    "rl/truncated": bool(cols["next.truncated"][-1]),
                    "rl/intervention_steps": int(sum(cols["intervention"]))})
        for key in self.obs_keys:
            if key not in self.video_keys:
                row[f"final/{key}"] = end["final"][key].astype(np.float32).tolist()
        meta_path = self.root / EPISODES_PATH.format(**where)
        renames.append((_write_parquet(pa.Table.from_pylist([row]), meta_path), meta_path))
        if new_task:
            tasks_path = self.root / TASKS_PATH
            renames.append((_write_parquet(_tasks_table(self._tasks), tasks_path), tasks_path))
        for tmp, final in renames:
            os.replace(tmp, final)
        for directory in {final.parent for _, final in renames}:
            fsync_dir(directory)
        # The commit point: until info.json counts it, the episode does not exist.
        self.info.update(total_episodes=index + 1, total_frames=first + length,
                         total_tasks=len(self._tasks))
        _write_json_atomic(self.info, self.root / INFO_PATH)


# --------------------------------------------------------------------------- reader
class EpisodeLog:
    """Read-only view of a log (ours, or any LeRobot v3.0 dataset on disk). No torch."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.info = self._read_info(self.root)
        self.fps = self.info["fps"]
        self.features = self.info["features"]
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        # Rows past total_tasks belong to an episode whose commit a crash interrupted.
        self.tasks = self._read_tasks(self.root)[:self.info["total_tasks"]] \
            if self.info["total_tasks"] else []
        self._episodes: list[dict] | None = None

    def __len__(self) -> int:
        return int(self.info["total_episodes"])

    @staticmethod
    def _read_info(root: Path) -> dict:
        path = root / INFO_PATH
        if not path.is_file():
            raise EpisodeLogError(f"{path}: missing; {root} is not an episode log. Fix: pass the "
                                  "log's root folder (the one holding meta/, data/, videos/).")
        try:
            info = json.loads(path.read_text())
            info["features"], info["total_episodes"]  # noqa: B018 (presence check)
        except (ValueError, KeyError) as exc:
            raise EpisodeLogError(f"{path}: unreadable ({exc!r}). Fix: restore it from a copy; "
                                  "it is always replaced atomically, so damage came from "
                                  "outside the writer.") from exc
        if not str(info.get("codebase_version", "")).startswith("v3."):
            raise EpisodeLogError(f"{path}: codebase_version {info.get('codebase_version')!r}; "
                                  "this reader needs v3.x. Fix: convert it with LeRobot's "
                                  "convert_dataset_v21_to_v30 script.")
        return info

    @staticmethod
    def _read_tasks(root: Path) -> list[str]:
        table = _read_table(root / TASKS_PATH, "task list")
        if "task" in table.column_names:
            by_index = dict(zip(_column(table, "task_index").tolist(), table.column("task").to_pylist()))
        else:  # pandas index stored under its own name
            name = [c for c in table.column_names if c != "task_index"][0]
            by_index = dict(zip(_column(table, "task_index").tolist(), table.column(name).to_pylist()))
        return [by_index[i] for i in sorted(by_index)]

    @property
    def episodes(self) -> list[dict]:
        """Per-episode metadata rows (committed episodes only), in episode order."""
        if self._episodes is None:
            rows = {}
            for path in sorted((self.root / "meta/episodes").glob("*/*.parquet")):
                for row in _read_table(path, "episode metadata").to_pylist():
                    if row["episode_index"] < len(self):
                        rows[row["episode_index"]] = row
            missing = sorted(set(range(len(self))) - set(rows))
            if missing:
                raise EpisodeLogError(
                    f"{self.root / 'meta/episodes'}: no metadata for episodes {missing[:10]} that "
                    f"{self.root / INFO_PATH} counts. Fix: restore the missing meta/episodes "
                    "files, or lower total_episodes/total_frames in info.json to drop them.")
            self._episodes = [rows[i] for i in range(len(self))]
        return self._episodes

    def episode(self, i: int, *, video: bool = False) -> dict:
        """Episode i: one numpy array per feature (T rows; vectors (T, n)), "task", and the final
        observation as "final/<key>". With `video`, camera frames are decoded: (T, H, W, 3)
        uint8 RGB under the feature key and the final frame under "final/<key>"."""
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} out of range: the log has {len(self)}")
        meta = self.episodes[i]
        path = self.root / self.info["data_path"].format(
            chunk_index=meta["data/chunk_index"], file_index=meta["data/file_index"])
        table = _read_table(path, f"frames of episode {i}")
        if table.num_rows != meta["length"]:
            import pyarrow.compute as pc

            table = table.filter(pc.equal(table.column("episode_index"), i))
        if table.num_rows != meta["length"]:
            raise EpisodeLogError(f"{path}: {table.num_rows} rows for episode {i}, its metadata "
                                  f"says {meta['length']}. Fix: restore the file from a copy.")
        out = {k: _column(table, k) for k in table.column_names}
        out["task"] = self.tasks[int(out["task_index"][0])] if self.tasks else meta["tasks"][0]
        out.update({k: np.asarray(v, np.float32) for k, v in meta.items() if k.startswith("final/")})
        if video:
            for key in self.video_keys:
                frames = self.frames(i, key)
                out[key] = frames[:meta["length"]]
                if len(frames) > meta["length"]:
                    out[f"final/{key}"] = frames[meta["length"]]
        return out

    def frames(self, i: int, key: str) -> np.ndarray:
        """Decoded frames of camera `key` in episode i, (N, H, W, 3) uint8 RGB; N is the length
        plus the trailing final-observation frame where the log has one."""
        import cv2

        meta = self.episodes[i]
        path = self.root / self.info["video_path"].format(
            video_key=key, chunk_index=meta[f"videos/{key}/chunk_index"],
            file_index=meta[f"videos/{key}/file_index"])
        if not path.is_file():
            raise EpisodeLogError(f"{path}: missing (video of episode {i}). Fix: restore it, or "
                                  "read the episode without video=True.")
        start = round(meta[f"videos/{key}/from_timestamp"] * self.fps)
        count = meta["length"] + (1 if "rl/return" in meta else 0)
        cap = cv2.VideoCapture(str(path))
        if start:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        frames = []
        while len(frames) < count:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(bgr[..., ::-1])
        cap.release()
        if len(frames) < meta["length"]:
            raise EpisodeLogError(f"{path}: decoded {len(frames)} frames, episode {i} needs "
                                  f"{meta['length']}: the video is corrupt or truncated. Fix: "
                                  "restore it from a copy, or read without video=True.")
        return np.stack(frames)

    def transitions(self, i: int, *, select: str = "all", images: bool = True) -> list[dict]:
        """Episode i as replay-buffer episodes (the `load_demonstrations` format): observations
        {env key: (T+1, ...)}, actions, rewards, terminations, truncations. select="intervention"
        keeps only the human's steps, one segment per take-over (the HIL-SERL demo-buffer rule)."""
        ep = self.episode(i, video=images and bool(self.video_keys))
        keys = [k for k in self.features if k.startswith("observation.")
                and (images or k not in self.video_keys)]
        obs = {env_key(k): np.concatenate([ep[k], ep[f"final/{k}"][None]]) for k in keys}
        length = len(ep["action"])
        if select == "all":
            spans = [(0, length)]
        elif select == "intervention":
            flag = np.concatenate([[False], ep["intervention"].astype(bool), [False]])
            edges = np.flatnonzero(np.diff(flag.astype(np.int8)))
            spans = list(zip(edges[::2], edges[1::2]))
        else:
            raise ValueError(f"select must be 'all' or 'intervention', got {select!r}")
        return [{"observations": {k: v[a:b + 1] for k, v in obs.items()},
                 "actions": ep["action"][a:b].astype(np.float32),
                 "rewards": ep["next.reward"][a:b].astype(np.float32),
                 "terminations": ep["next.done"][a:b], "truncations": ep["next.truncated"][a:b]}
                for a, b in spans]


def load_into_buffer(log: EpisodeLog | str | os.PathLike, *, episodes: Sequence[int] | None = None,
                     select: str = "all", successful_only: bool = False, images: bool = True,
                     extra_capacity: int = 0, seed: int | None = None, device: str = "cpu"):
    """A demonstration ReplayBuffer (robostack.rl.buffers) holding the logged transitions:
    the same (obs, action, reward, next obs, termination, truncation) as scripted-expert demos.
    `select="intervention"` loads only intervention segments; `successful_only` skips episodes
    that never reported success. Imports torch (through the buffer), unlike the reader."""
    from robostack.rl.buffers import load_demonstrations

    log = log if isinstance(log, EpisodeLog) else EpisodeLog(log)
    chosen = range(len(log)) if episodes is None else episodes
    pieces = []
    for i in chosen:
        if successful_only and not log.episodes[i].get("rl/success", True):
            continue
        pieces += log.transitions(i, select=select, images=images)
    if not pieces:
        raise ValueError(f"{log.root}: no episodes to load (select={select!r}, "
                         f"successful_only={successful_only})")
    return load_demonstrations(pieces, extra_capacity=extra_capacity, seed=seed, device=device)
