"""EpisodeWriter: appends episodes from the control loop; encodes and commits on its own thread.

One thing: the writer of a log. Its caller side, what it checks when it opens a log and its
background commit share one state (the info, the tasks, the statistics); split, each would reach
into the others'. What a crash left behind is removed first (recovery.py)."""

from __future__ import annotations

import fcntl
import json
import math
import os
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robostack.data.episode_log import stats as feature_stats
from robostack.data.episode_log.handoff import FrameHandoff
from robostack.data.episode_log.layout import CHUNKS_SIZE, CODEBASE_VERSION, DATA_PATH, EPISODES_PATH, EVENTS_PATH, FORMAT_VERSION, INFO_INDENT, INFO_PATH, TASKS_PATH, VIDEO_PATH, EpisodeLogError, _arrow_type, _chunk_file, _full_features, _tasks_table, _rename_durably, _write_parquet_atomic, check_events, check_extras, checksums, events_table, extra_keys, feature_key, tasks_digest, write_info
from robostack.data.episode_log.reader import EpisodeLog
from robostack.data.episode_log.recovery import recover
from robostack.files import file_sha256, write_json_atomic


class EpisodeWriter:
    """Appends episodes to a log at `root` (created if absent; reopened logs must match `fps`
    and `features`). One writer per log at a time (a lock file enforces it).

        writer = EpisodeWriter(root, fps=10, features=features_from_spaces(...), task="pick_cube")
        writer.add_frame(obs, action, reward, terminated, truncated, success=..., ...,
                         timestamps={"state": ..., "images/front": ...},
                         events=info["supervisor_transitions"])
        writer.end_episode(final_obs)        # commits in the background; returns the index
        writer.close()                       # waits for every committed episode to be on disk
    """

    def __init__(self, root: str | os.PathLike, fps: float, features: Mapping[str, Mapping], *,
                 task: str = "", robot_type: str | None = None,
                 timestamp_sources: Sequence[str] = ("state", "action"), queue_size: int = 1024):
        self.root = Path(root)
        if not float(fps).is_integer() or fps <= 0:
            raise ValueError(f"fps {fps}: LeRobot logs have an integer frame rate (timestamp = "
                             "frame_index / fps). Fix: run the policy at a whole number of Hz.")
        self.fps = int(fps)  # 10.0 (a policy rate) -> 10: LeRobot's info.json fps is an int
        self.task = task
        # Sources are named as the env names what they stamp ("state", "images/front"), columns
        # with "." for "/" (LeRobot forbids "/" in feature names): timestamp.images.front.
        self.sources = {source: "timestamp." + source.replace("/", ".") for source in timestamp_sources}
        self.features = _full_features(features, self.fps, [c[len("timestamp."):] for c in self.sources.values()])
        self.obs_keys = [k for k in self.features if k.startswith("observation.")]
        self.video_keys = [k for k in self.obs_keys if self.features[k]["dtype"] == "video"]
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
        self._tasks = recover(self.root, self.info)  # what a crash left is removed first
        # Float extras may hold NaN (unknown): no statistics for them, as for the clock readings.
        self.extras = extra_keys(self.features)
        self._stat_keys = [k for k in feature_stats.stats_features(self.features) if not
                           (k in self.extras and self.features[k]["dtype"].startswith("float"))]
        self._stats = self._open_stats()  # of the committed episodes; None while there are none
        self._next_episode = self.info["total_episodes"]
        self._frames_in_episode = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.frames = FrameHandoff(self.video_keys)  # camera frames in flight (copied or taken)
        self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
        self._thread.start()

    # --- caller side (control loop) ------------------------------------------------------
    def add_frame(self, obs: Mapping[str, np.ndarray], action, reward: float = 0.0,
                  terminated: bool = False, truncated: bool = False, *, success: bool = False,
                  intervention: bool = False, policy_action=None,
                  timestamps: Mapping[str, float] | None = None, events=None,
                  extras: Mapping | None = None, take: bool = False) -> None:
        """Log one step: `obs` (env or feature keys) is where `action` was taken; reward,
        terminated, truncated, success are its outcome. Copies the arrays; never writes them.
        `take`: hand the camera frames over, uncopied (~0.5 ms less a step with two 640x480
        cameras) and marked read-only: a later write through one raises ValueError instead of
        changing the logged frame (one that cannot be made safe so is copied; handoff.py).
        `events`: the safety events since the previous frame (for the first frame, since the
        reset began), e.g. the env's info["supervisor_transitions"]; each [from_state,
        to_state, reason] or a dict (layout.check_events), logged with this frame's index.
        `timestamps`: {source: s} of the writer's timestamp_sources ("images/front": the frame's
        capture time); one not given is NaN, one the writer was not opened with an error.
        `extras`: {name: value} of every extra column the features declare (label.success, ...;
        layout.check_extras: NaN for an unknown float; one missing or undeclared is an error)."""
        self._raise_pending()
        event_rows = check_events(events, self._frames_in_episode) if events else []
        extra_values = check_extras(extras, self.features)
        arrays = {}
        for key, value in obs.items():
            name = feature_key(key)
            ft = self.features.get(name)
            arrays[name] = arr = np.asarray(value)
            if ft is None or list(arr.shape) != ft["shape"]:
                raise ValueError(f"obs[{key!r}]: expected feature {name} of shape "
                                 f"{ft and ft['shape']}, got {arr.shape}")
        if len(arrays) != len(self.obs_keys):
            raise ValueError(f"obs keys {sorted(arrays)} differ from {self.obs_keys}")
        timestamps = timestamps or {}
        if set(timestamps) - set(self.sources):  # a misspelt camera would log NaN, silently
            raise ValueError(f"timestamps for {sorted(set(map(str, timestamps)) - set(self.sources))}: the "
                             f"log's timestamp_sources are {list(self.sources)}; open it with them")
        # Only now, with the frame known good, are camera frames copied or taken (read-only).
        frame = {name: self.frames.hand(name, arr, take) if name in self.frames else arr.copy()
                 for name, arr in arrays.items()}
        frame["action"] = np.array(action, np.float32)
        frame["policy_action"] = frame["action"] if policy_action is None \
            else np.array(policy_action, np.float32)
        frame.update({"next.reward": float(reward), "next.done": bool(terminated),
                      "next.truncated": bool(truncated), "next.success": bool(success),
                      "intervention": bool(intervention), **extra_values})
        for source, column in self.sources.items():
            frame[column] = float(timestamps.get(source, math.nan))
        self._frames_in_episode += 1
        self._put(("frame", (frame, event_rows)))

    def end_episode(self, final_obs: Mapping[str, np.ndarray], *, task: str | None = None,
                    metadata: Mapping[str, float | int | bool | str] | None = None) -> int:
        """Close the episode in flight; `final_obs` is the observation after its last step.
        `metadata`: scalars stored in the episode's row as rl/<name> (e.g. reset_seed, which
        `robostack replay` uses to reset the mirror the same way).
        The commit runs in the background; returns the episode's index in the log."""
        for name, value in (metadata or {}).items():
            if not isinstance(value, (bool, int, float, str)):
                raise TypeError(f"episode metadata {name!r} must be a scalar (bool, int, float, "
                                f"str), got {type(value).__name__}")
        self._raise_pending()
        if self._frames_in_episode == 0:
            raise ValueError("end_episode without any add_frame")
        final = {feature_key(k): np.array(v) for k, v in final_obs.items()}
        if sorted(final) != sorted(self.obs_keys):
            raise ValueError(f"final_obs keys {sorted(final)} differ from {self.obs_keys}")
        index = self._next_episode
        self._next_episode += 1
        self._frames_in_episode = 0
        self._put(("end", {"final": final, "task": self.task if task is None else task,
                           "metadata": dict(metadata or {})}))
        return index

    def discard_episode(self) -> None:
        """Drop the episode in flight (a re-recorded demo, an aborted rollout)."""
        self._frames_in_episode = 0
        self._put(("discard", None))

    def flush(self) -> None:
        """Block until the background thread has handled everything handed to it so far: every
        ended episode is committed, and the frames of the episode in flight are encoded into its
        temporary files (which a crash leaves behind and the next writer removes)."""
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
                    "video_files_size_in_mb": 500, "fps": self.fps, "splits": {"train": "0:0"},
                    "data_path": DATA_PATH, "video_path": VIDEO_PATH if self.video_keys else None,
                    "features": self.features,
                    "robostack": {"format_version": FORMAT_VERSION, "files_per_episode": 1,
                                  "events_path": EVENTS_PATH, "sha256": {}}}
            write_info(self.root, info)
            return info
        info = EpisodeLog._read_info(self.root)
        if info["fps"] != self.fps or info["features"] != json.loads(json.dumps(self.features)):
            raise EpisodeLogError(
                f"{path}: this log was written with fps {info['fps']} and features "
                f"{sorted(info['features'])}; the writer has fps {self.fps} and features "
                f"{sorted(self.features)} (or shapes/names differ). Fix: write to a new folder.")
        # A log written before fps was an integer and the split was kept gets both now (the
        # features compared equal, 10.0 == 10; ours carry the integer video.fps).
        # One written before safety events were logged gets them from its next episode on.
        upgraded = {**info, "fps": self.fps, "features": json.loads(json.dumps(self.features)),
                    "splits": {"train": f"0:{info['total_episodes']}"},
                    "robostack": {**info.get("robostack", {}), "format_version": FORMAT_VERSION,
                                  "events_path": EVENTS_PATH}}
        if upgraded != info or "info_sha256" not in upgraded["robostack"]:
            write_info(self.root, upgraded)
        return upgraded

    def _open_stats(self) -> dict | None:
        """The statistics of the committed episodes: meta/stats.json when it is the file the
        last commit recorded (its sha256; in logs from before that: when it covers exactly
        the committed frames), else pooled again from the episodes' own statistics. That
        happens after a crash between the stats write and the commit (stats.json then covers
        the uncommitted episode too), after damage, and for a log written before statistics
        were kept (its episodes get theirs computed now)."""
        path = self.root / feature_stats.STATS_PATH
        if self.info["total_episodes"] == 0:
            path.unlink(missing_ok=True)
            return None
        recorded = checksums(self.info).get(feature_stats.STATS_PATH)
        if path.is_file() and (recorded is None or file_sha256(path) == recorded):
            try:
                stats = feature_stats.from_json(json.loads(path.read_text()))
                if sorted(stats) == sorted(self._stat_keys) and \
                        int(stats["action"]["count"][0]) == self.info["total_frames"]:
                    return stats
            except (ValueError, KeyError, TypeError, IndexError):
                pass  # damaged: rebuilt below from the episodes' statistics
        log = EpisodeLog(self.root)
        per_episode = []
        for i, row in enumerate(log.episodes):
            if "damaged" in row:  # its metadata file is damaged: the pool goes without it
                continue
            episode_stats = feature_stats.from_columns(row)
            if sorted(episode_stats) != sorted(self._stat_keys):
                episode_stats = self._backfill_episode_stats(log, i)
            per_episode.append(episode_stats)
        stats = feature_stats.aggregate_stats(per_episode)
        self._write_stats(stats)
        write_info(self.root, self.info)  # with the new file's checksum
        return stats

    def _backfill_episode_stats(self, log: EpisodeLog, i: int) -> dict:
        """Compute episode i's statistics from its files and add them to its metadata row. Its
        camera frames exist only as decoded video by now: mp4v's loss shifts those statistics
        slightly (a few 1/255) from what the writer computes on the source frames."""
        episode = log.episode(i, video=bool(self.video_keys))
        stats = {key: feature_stats.image_stats([feature_stats.channel_histogram(f) for f in episode[key]])
                 if key in self.video_keys else feature_stats.vector_stats(episode[key])
                 for key in self._stat_keys}
        meta = log.episodes[i]
        path = self.root / EPISODES_PATH.format(chunk_index=meta["meta/episodes/chunk_index"],
                                                file_index=meta["meta/episodes/file_index"])
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            if row["episode_index"] == i:
                for column in [c for c in row if c.startswith("stats/")]:
                    del row[column]
                row.update(feature_stats.to_columns(stats))
        _write_parquet_atomic(pa.Table.from_pylist(rows), path)
        recorded = checksums(self.info)
        relative = path.relative_to(self.root).as_posix()
        if relative in recorded:
            recorded[relative] = file_sha256(path)
            write_info(self.root, self.info)
        return stats

    def _write_stats(self, stats: dict) -> None:
        """stats.json, and its checksum into self.info (which the caller writes)."""
        path = self.root / feature_stats.STATS_PATH
        write_json_atomic(path, feature_stats.to_json(stats), indent=INFO_INDENT)
        checksums(self.info)[feature_stats.STATS_PATH] = file_sha256(path)

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

        episode = {"index": index, "columns": {k: [] for k in self.features}, "videos": {}, "events": [],
                   "histograms": {key: [] for key in self.video_keys}}  # per frame, for the stats
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

    def _append(self, episode: dict, item: tuple) -> None:
        frame, event_rows = item
        episode["events"] += event_rows
        cols = episode["columns"]
        for key, value in frame.items():
            if key in episode["videos"]:
                episode["videos"][key][0].write(np.ascontiguousarray(value[..., ::-1]))  # RGB->BGR
                episode["histograms"][key].append(feature_stats.channel_histogram(value))
                self.frames.release(key, value)
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
        episode_stats = {key: feature_stats.image_stats(episode["histograms"][key])
                         for key in self.video_keys if key in self._stat_keys}
        for key, ft in self.features.items():
            if ft["dtype"] == "video":
                continue
            values = np.asarray(cols[key], dtype=ft["dtype"])
            if key in self._stat_keys:
                episode_stats[key] = feature_stats.vector_stats(values)
            typ = _arrow_type(ft)
            arr = pa.array(values, typ) if values.ndim == 1 else pa.FixedSizeListArray.from_arrays(
                pa.array(values.reshape(-1), typ.value_type), ft["shape"][0])
            arrays.append(arr), fields.append(pa.field(key, typ))
        # Every file of the episode is renamed into place as soon as it is complete; none of
        # them counts until info.json does (below), and _recover removes them after a crash.
        # Their checksums are committed with the episode (info.json, below): a reader verifies
        # each file before trusting a byte of it.
        sums = {}
        for key, (writer, tmp, final) in episode["videos"].items():
            writer.write(np.ascontiguousarray(end["final"][key].astype(np.uint8)[..., ::-1]))
            writer.release()
            _rename_durably(tmp, final)
            sums[final] = file_sha256(final)
        where = _chunk_file(index)
        data_path = self.root / DATA_PATH.format(**where)
        _write_parquet_atomic(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), data_path)
        sums[data_path] = file_sha256(data_path)
        # Same columns in every metadata row (LeRobot loads them as one table): the events file
        # is found by the episode's meta/episodes indices, and exists where a checksum says so.
        events_path = self.root / EVENTS_PATH.format(**where)
        _write_parquet_atomic(events_table(index, first, episode["events"]), events_path)
        sums[events_path] = file_sha256(events_path)
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
        row.update({f"rl/{name}": value for name, value in end.get("metadata", {}).items()})
        for key in self.obs_keys:
            if key not in self.video_keys:
                row[f"final/{key}"] = end["final"][key].astype(np.float32).tolist()
        episode_stats = {key: episode_stats[key] for key in self._stat_keys}  # feature order
        row.update(feature_stats.to_columns(episode_stats))
        meta_path = self.root / EPISODES_PATH.format(**where)
        _write_parquet_atomic(pa.Table.from_pylist([row]), meta_path)
        sums[meta_path] = file_sha256(meta_path)
        checksums(self.info).update({p.relative_to(self.root).as_posix(): h for p, h in sums.items()})
        if new_task:
            _write_parquet_atomic(_tasks_table(self._tasks), self.root / TASKS_PATH)
        self.info["robostack"]["tasks_sha256"] = tasks_digest(self._tasks)
        # Before the commit (LeRobot writes them after it), so that the commit records their
        # checksum: a crash in between leaves stats.json covering this uncommitted episode
        # too and not matching that checksum, which the next writer notices and pools again.
        pooled = episode_stats if self._stats is None else \
            feature_stats.aggregate_stats([self._stats, episode_stats])
        self._write_stats(pooled)
        # The commit point: until info.json counts it, the episode does not exist.
        self.info.update(total_episodes=index + 1, total_frames=first + length,
                         total_tasks=len(self._tasks), splits={"train": f"0:{index + 1}"})
        write_info(self.root, self.info)
        self._stats = pooled

