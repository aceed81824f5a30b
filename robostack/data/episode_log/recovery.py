"""What an EpisodeWriter removes when it opens a log a crash interrupted (writer.py).

A crash (kill -9 included) leaves temporary files and the files of the episode in flight, which
info.json (the commit point) does not count; a crash inside a commit can also leave
tasks.parquet with the uncommitted episode's task. `recover` removes all of that, so that the
writer appends after the last committed episode."""

from __future__ import annotations

from pathlib import Path

from robostack.data.episode_log.layout import _FILE_RE, CHUNKS_SIZE, TASKS_PATH, EpisodeLogError, _is_temporary, _tasks_table, _write_parquet_atomic, tasks_digest
from robostack.data.episode_log.reader import EpisodeLog


def recover(root: Path, info: dict) -> list[str]:
    """Remove what a crash left under `root` (temporary files, files of uncommitted episodes)
    and return the committed task list (tasks.parquet rewritten where it holds more, or is
    damaged: then rebuilt from the episodes' rows)."""
    committed = info["total_episodes"]
    for path in (root / "meta").iterdir():
        if path.is_file() and _is_temporary(path):
            path.unlink()
    tasks_kept: list[str] = []
    if info["total_tasks"]:
        try:
            tasks = EpisodeLog._read_tasks(root)
        except EpisodeLogError:
            tasks = None
        tasks_kept = (tasks or [])[:info["total_tasks"]]
        expected = info["robostack"].get("tasks_sha256")
        if tasks is None or (expected and tasks_digest(tasks_kept) != expected):
            tasks_kept = EpisodeLog(root).tasks_from_episodes()  # (it warns, once)
            _write_parquet_atomic(_tasks_table(tasks_kept), root / TASKS_PATH)
        elif len(tasks) > len(tasks_kept):
            _write_parquet_atomic(_tasks_table(tasks_kept), root / TASKS_PATH)
    for top in ("data", "videos", "meta/episodes", "meta/events"):
        for path in (root / top).rglob("*") if (root / top).exists() else ():
            if not path.is_file():
                continue
            m = _FILE_RE.search(path.as_posix())
            if _is_temporary(path) or (m and int(m[1]) * CHUNKS_SIZE + int(m[2]) >= committed):
                path.unlink()
    return tasks_kept
