"""EpisodeLog: the torch-free reader, and the logged transitions in the replay buffers' format.

Integrity: every per-episode file (data, episode metadata, events, videos) is checked against the
sha256 its episode's commit recorded in meta/info.json before a byte of it is used. A damaged
or missing file makes its episode damaged, never the log: `episode(i)` refuses it with an
EpisodeLogError naming the episode and the file, `damaged()` lists them, and
`logged_transitions` (training's --demo-log) loads the intact episodes and says which it skipped.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robostack.data.episode_log import stats as feature_stats
from robostack.data.episode_log.layout import EVENT_TEXT_LIMITS, EVENTS_PATH, INFO_PATH, TASKS_PATH, EpisodeLogError, _column, _read_table, checksums, clean_text, env_key, info_digest, tasks_digest
from robostack.files import file_sha256

_logger = logging.getLogger("robostack.data.episode_log")
_warned: set[tuple[str, str]] = set()  # (log root, what): each warning once per process
_META_FILE = re.compile(r"chunk-(\d+)/file-(\d+)\.parquet$")


class EpisodeLog:
    """Read-only view of a log (ours, or any LeRobot v3.0 dataset on disk). No torch."""

    def __init__(self, root: str | os.PathLike, *, say=None):
        """`say`: where the log's warnings go (each once per process), else to logging."""
        self.root = Path(root)
        self.say = say
        self.info = self._read_info(self.root)
        self.fps = self.info["fps"]
        self.features = self.info["features"]
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.tasks = self._verified_tasks()
        self._episodes: list[dict] | None = None
        self.checksums = checksums(self.info)
        self._verified: dict[str, str | None] = {}  # relative path -> why it is damaged (None: intact)
        self._damaged_meta: dict[int, str] = {}  # episodes whose metadata file is damaged

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
        digest = info.get("robostack", {}).get("info_sha256")
        if digest is not None and digest != info_digest(info):
            raise EpisodeLogError(
                f"{path}: its content is not what the writer wrote (robostack.info_sha256 does "
                "not match: a byte changed on disk, or the file was edited). Every other file is "
                "checked against it, so nothing of the log is read. Fix: restore it from a copy; "
                "if you edited it on purpose, delete the robostack.info_sha256 entry (the next "
                "EpisodeWriter on the log records a new one).")
        if not str(info.get("codebase_version", "")).startswith("v3."):
            raise EpisodeLogError(f"{path}: codebase_version {info.get('codebase_version')!r}; "
                                  "this reader needs v3.x. Fix: convert it with LeRobot's "
                                  "convert_dataset_v21_to_v30 script.")
        return info

    def _warn(self, what: str, text: str) -> None:
        key = (str(self.root.resolve()), what)
        if key not in _warned:
            _warned.add(key)
            log_warning(text, self.say)

    def _verified_tasks(self) -> list[str]:
        """The committed tasks (rows past total_tasks belong to an episode whose commit a crash
        interrupted); [] when tasks.parquet does not match the list its commit recorded, and
        then each episode's task comes from its own (checksummed) metadata row."""
        if not self.info["total_tasks"]:
            return []
        expected = self.info.get("robostack", {}).get("tasks_sha256")
        try:
            tasks = self._read_tasks(self.root)[:self.info["total_tasks"]]
        except EpisodeLogError as exc:
            if expected is None:
                raise
            why = str(exc)
        else:
            if expected is None or tasks_digest(tasks) == expected:
                return tasks
            why = (f"{self.root / TASKS_PATH}: damaged (its tasks are not the ones recorded at "
                   "the last commit)")
        self._warn("tasks", f"{why}; each episode's task is read from its metadata row instead. "
                   "Fix: restore the file from a copy, or open the log with an EpisodeWriter, "
                   "which rebuilds it from those rows.")
        return []

    def tasks_from_episodes(self) -> list[str]:
        """The task list again, from the episodes' (checksummed) metadata rows, for a damaged
        tasks.parquet: tasks are numbered in the order episodes first used them."""
        rows = self.episodes
        damaged = [row["episode_index"] for row in rows if "damaged" in row]
        tasks = list(dict.fromkeys(row["tasks"][0] for row in rows if "damaged" not in row))
        expected = self.info.get("robostack", {}).get("tasks_sha256")
        if damaged or len(tasks) != self.info["total_tasks"] or \
                (expected and tasks_digest(tasks) != expected):
            raise EpisodeLogError(
                f"{self.root / TASKS_PATH}: damaged, and the episodes' rows cannot rebuild it "
                f"(damaged episodes {damaged[:10]}; {len(tasks)} tasks found, info.json counts "
                f"{self.info['total_tasks']}). Fix: restore it from a copy.")
        return tasks

    @staticmethod
    def _read_tasks(root: Path) -> list[str]:
        table = _read_table(root / TASKS_PATH, "task list")
        if "task" in table.column_names:
            by_index = dict(zip(_column(table, "task_index").tolist(), table.column("task").to_pylist()))
        else:  # pandas index stored under its own name
            name = [c for c in table.column_names if c != "task_index"][0]
            by_index = dict(zip(_column(table, "task_index").tolist(), table.column(name).to_pylist()))
        return [by_index[i] for i in sorted(by_index)]

    def _damage(self, path: Path) -> str | None:
        """Why the file at `path` is not what its episode's commit recorded (None: it is, or
        nothing was recorded for it)."""
        relative = path.relative_to(self.root).as_posix()
        if relative not in self._verified:
            expected, why = self.checksums.get(relative), None
            if expected is not None:
                if not path.is_file():
                    why = f"{path}: missing"
                elif file_sha256(path) != expected:
                    why = (f"{path}: damaged (its sha256 is not the one recorded when the episode "
                           f"was written: bytes changed on disk)")
            self._verified[relative] = why
        return self._verified[relative]

    def _check_meta_file(self, path: Path) -> str | None:
        why = self._damage(path)
        if why is None:
            return None
        m = _META_FILE.search(path.as_posix())
        if m:  # one metadata file per episode (files_per_episode 1)
            index = int(m[1]) * int(self.info.get("chunks_size", 1000)) + int(m[2])
            if index < len(self):
                self._damaged_meta[index] = why
        return why

    @property
    def episodes(self) -> list[dict]:
        """Per-episode metadata rows (committed episodes only), in episode order. A damaged
        episode's row holds only its index, length 0 and `damaged` (the reason)."""
        if self._episodes is None:
            rows = {}
            for path in sorted((self.root / "meta/episodes").glob("*/*.parquet")):
                if self._check_meta_file(path):
                    continue
                for row in _read_table(path, "episode metadata").to_pylist():
                    if row["episode_index"] < len(self):
                        rows[row["episode_index"]] = row
            for relative in self.checksums:  # recorded metadata files that are gone
                if relative.startswith("meta/episodes/"):
                    self._check_meta_file(self.root / relative)
            for index, why in self._damaged_meta.items():
                rows[index] = {"episode_index": index, "length": 0, "damaged": why,
                               "rl/success": False}
            missing = sorted(set(range(len(self))) - set(rows))
            if missing:
                raise EpisodeLogError(
                    f"{self.root / 'meta/episodes'}: no metadata for episodes {missing[:10]} that "
                    f"{self.root / INFO_PATH} counts. Fix: restore the missing meta/episodes "
                    "files, or lower total_episodes/total_frames in info.json to drop them (and "
                    "delete its robostack.info_sha256 entry: an edited info.json is refused).")
            self._episodes = [rows[i] for i in range(len(self))]
            unverified = [i for i, row in enumerate(self._episodes) if "damaged" not in row and
                          self._data_path(row).relative_to(self.root).as_posix() not in self.checksums]
            if unverified:
                self._warn("unverified", (
                    f"{self.root}: episodes {_ranges(unverified)} have no recorded checksums "
                    "(written before the log recorded them, or by another tool): they are read "
                    "unverified, so a byte changed on disk in them goes unnoticed. Fix: nothing "
                    "to read them; to have them verified, record them again into a new log "
                    "(the writer cannot vouch for files it did not write)."))
        return self._episodes

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]] | None:
        """meta/stats.json as LeRobot loads it ({feature: {stat: array}}), None if the log has
        none (no episode yet, or a log from before statistics were kept). A file that is not
        the one the last commit recorded (its sha256: a changed byte, or a crash between the
        statistics and the commit) is named in a warning, and the statistics pooled from the
        episodes' checksummed metadata rows are returned instead."""
        path = self.root / feature_stats.STATS_PATH
        recorded = self.checksums.get(feature_stats.STATS_PATH)
        if recorded is not None and (not path.is_file() or file_sha256(path) != recorded):
            pooled = self.pooled_stats()
            self._warn("stats", f"{path}: {'damaged' if path.is_file() else 'missing'} (not the "
                       "file the last commit recorded: a byte changed, or a crash came between "
                       "the statistics and the commit); "
                       + ("using the statistics pooled from the episodes' metadata rows" if pooled
                          else "and a damaged episode leaves nothing to pool them from")
                       + ". Fix: open the log with an EpisodeWriter, which writes them again.")
            return pooled
        if not path.is_file():
            return None
        try:
            return feature_stats.from_json(json.loads(path.read_text()))
        except ValueError as exc:
            raise EpisodeLogError(f"{path}: unreadable ({exc!r}). Fix: delete it; the next "
                                  "EpisodeWriter on this log pools it again from the "
                                  "episodes' statistics.") from exc

    def pooled_stats(self) -> dict[str, dict[str, np.ndarray]] | None:
        """The log's statistics pooled from its episodes' metadata rows; None when an episode
        is damaged or has none (a log from before statistics were kept)."""
        per_episode = [feature_stats.from_columns(row) for row in self.episodes if "damaged" not in row]
        if not per_episode or len(per_episode) < len(self) or not all(per_episode) or \
                any(sorted(s) != sorted(per_episode[0]) for s in per_episode):
            return None
        return feature_stats.aggregate_stats(per_episode)

    def episode_stats(self, i: int) -> dict[str, dict[str, np.ndarray]]:
        """Episode i's statistics from its metadata row (the stats/<feature>/<stat> columns);
        {} for an episode written before statistics were kept."""
        return feature_stats.from_columns(self.episodes[i])

    def damage(self, i: int, *, video: bool = True) -> str | None:
        """Why episode i cannot be trusted (a file of it missing or changed since it was
        written; `video`: its camera files too), or None when every file of it verifies."""
        meta = self.episodes[i]
        if "damaged" in meta:
            return f"episode {i}: {meta['damaged']}"
        paths = [self._data_path(meta), self._events_path(meta)]
        if video:
            paths += [self._video_path(meta, key) for key in self.video_keys]
        for path in paths:
            why = self._damage(path)
            if why:
                return f"episode {i}: {why}"
        return None

    def damaged(self, *, video: bool = True) -> dict[int, str]:
        """{episode: why} for every episode whose files do not verify."""
        found = {i: self.damage(i, video=video) for i in range(len(self))}
        return {i: why for i, why in found.items() if why}

    def _data_path(self, meta: dict) -> Path:
        return self.root / self.info["data_path"].format(
            chunk_index=meta["data/chunk_index"], file_index=meta["data/file_index"])

    def _events_path(self, meta: dict) -> Path:
        return self.root / self.info.get("robostack", {}).get("events_path", EVENTS_PATH).format(
            chunk_index=meta["meta/episodes/chunk_index"], file_index=meta["meta/episodes/file_index"])

    def events(self, i: int) -> list[dict]:
        """Episode i's safety events (the supervisor's transitions, ...) in order: dicts of
        frame_index (the frame whose step reported it; frame 0's include the reset's),
        kind, from_state, to_state, reason, time (s since the reset; NaN when not given).
        [] for an episode written before events were logged. A damaged events file is an
        EpisodeLogError naming it."""
        meta = self.episodes[i]
        if "damaged" in meta:
            raise EpisodeLogError(f"{self.root}: episode {i}: {meta['damaged']}. Fix: restore "
                                  "that file from a copy")
        path = self._events_path(meta)
        if path.relative_to(self.root).as_posix() not in self.checksums:
            return []  # written before events were logged (or another LeRobot dataset)
        why = self._damage(path)
        if why:
            raise EpisodeLogError(f"{self.root}: episode {i}: {why}. Fix: restore it from a copy; "
                                  "the log's other episodes are unaffected")
        table = _read_table(path, f"safety events of episode {i}")
        return [{k: v for k, v in row.items() if k not in ("episode_index", "index")}
                for row in table.to_pylist()]

    def _video_path(self, meta: dict, key: str) -> Path:
        return self.root / self.info["video_path"].format(
            video_key=key, chunk_index=meta[f"videos/{key}/chunk_index"],
            file_index=meta[f"videos/{key}/file_index"])

    def episode(self, i: int, *, video: bool = False) -> dict:
        """Episode i: one numpy array per feature (T rows; vectors (T, n)), "task", the final
        observation as "final/<key>", and "events" (`events(i)`). With `video`, camera frames are decoded: (T, H, W, 3)
        uint8 RGB under the feature key and the final frame under "final/<key>". A damaged
        episode is an EpisodeLogError naming it and its damaged file."""
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} out of range: the log has {len(self)}")
        why = self.damage(i, video=video)
        if why:
            raise EpisodeLogError(f"{self.root}: {why}. Fix: restore that file from a copy; the "
                                  f"log's other episodes are unaffected (EpisodeLog.damaged() lists "
                                  f"every damaged one)")
        meta = self.episodes[i]
        path = self._data_path(meta)
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
        out["events"] = self.events(i)
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
        path = self._video_path(meta, key)
        why = self._damage(path)
        if why:
            raise EpisodeLogError(f"{self.root}: episode {i}: {why}. Fix: restore it from a copy, "
                                  f"or read the episode without video=True.")
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


def event_lines(events: list[dict], fps: float) -> list[str]:
    """The episode's safety events, one line each, for the text output: frame, time into the
    episode, kind, transition, reason. The text is shown escaped and bounded whatever the log
    holds (a log from elsewhere need not have been written by our writer)."""
    def text(event, name):
        return clean_text(str(event.get(name) or ""), EVENT_TEXT_LIMITS[name])

    lines = [f"safety events: {len(events) or 'none logged'}"]
    for event in events:
        frame = int(event["frame_index"])
        move = f"{text(event, 'from_state')} -> {text(event, 'to_state')}: " \
            if event.get("from_state") or event.get("to_state") else ""
        lines.append(f"  frame {frame} ({frame / fps:.1f} s) {text(event, 'kind')} {move}"
                     f"{text(event, 'reason')}")
    return lines


def _ranges(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    spans, start = [], None
    for k, i in enumerate(indices):
        start = i if start is None else start
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            spans.append(f"{start}" if start == i else f"{start}-{i}")
            start = None
    return ", ".join(spans)


def logged_transitions(log: EpisodeLog | str | os.PathLike, *, episodes: Sequence[int] | None = None,
                       select: str = "all", successful_only: bool = False,
                       images: bool = True, say=None) -> list[dict]:
    """The transitions of a log's episodes, in the format robostack.rl.buffers.load_demonstrations
    takes (`load_demonstrations(logged_transitions(log))` is a demonstration buffer holding the
    same (obs, action, reward, next obs, termination, truncation) as scripted-expert demos).
    `select="intervention"` keeps only intervention segments; `successful_only` skips episodes
    that never reported success. The buffer is left to the caller so that this layer needs no
    torch and no rl. A damaged episode (a file not matching its recorded checksum) is skipped
    with a warning naming it and the file (also through `say`)."""
    log = log if isinstance(log, EpisodeLog) else EpisodeLog(log, say=say)
    chosen = range(len(log)) if episodes is None else episodes
    pieces = []
    for i in skip_damaged(log, chosen, video=images, say=say):
        if successful_only and not log.episodes[i].get("rl/success", True):
            continue
        pieces += log.transitions(i, select=select, images=images)
    if not pieces:
        raise ValueError(f"{log.root}: no episodes to load (select={select!r}, "
                         f"successful_only={successful_only})")
    return pieces


def skip_damaged(log: EpisodeLog, chosen: Sequence[int], *, video: bool = True, say=None) -> list[int]:
    """The episodes of `chosen` whose files verify; each damaged one is named in a warning."""
    intact = []
    for i in chosen:
        why = log.damage(i, video=video)
        if why is None:
            intact.append(i)
            continue
        text = f"{log.root}: skipping {why}"
        log_warning(text, say)
    return intact


def log_warning(text: str, say=None) -> None:
    if say is not None:
        say(f"warning: {text}")
    else:
        _logger.warning(text)
