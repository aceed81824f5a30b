"""A training run's state on disk, one schema for both training modes: the single-process
trainer and the learner write and resume from the same checkpoints, and `robostack eval`
reads either.

Save number n writes
    buffers/online_<n>.npz, buffers/demos_<n>.npz     the replay buffers (ReplayBuffer.save)
    checkpoints/ckpt_<n>.pt                            (robostack/rl/checkpoint.py) holding
        agent          the agent's state dict (networks, optimisers, temperature, state scale)
        env_steps      online + intervention env steps the agent was trained on
        counters       JSON: env_steps, update_calls, episodes, interventions, demo_episodes,
                       weights_version, saves, next_eval, run_id, scale_fixed, recent,
                       wall_seconds, eval_seconds (a mode writes those it keeps)
        history        JSON: the evaluation rows (metrics.csv)
        ledger         JSON: per-actor transition seqs (transitions.Ledger; {} in one process)
        online_buffer, demo_buffer   the names of the buffer files saved with it
        buffer_files   JSON: {name: {"bytes", "sha256"}} of those files, checked on resume
Checkpoints are numbered by save, not by env step: two saves at one env step must not
collide, and the checkpoints kept are exactly those whose buffers are kept.

Resume takes the newest checkpoint whose own files all verify (the checkpoint's SHA-256, its
buffer files' sizes and SHA-256s, the buffers' own format checks); a damaged one is skipped with
a line naming the damaged file, and the previous one is used. Transitions only the skipped
checkpoint held are then counted lost by the ledger (their actors deleted them once durable).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from robostack.files import file_sha256
from robostack.rl.buffers import BufferFileError, ReplayBuffer
from robostack.rl.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint

__all__ = ["KEEP", "CheckpointError", "RunState", "commit", "load_run_state", "save_run_state",
           "snapshot"]
log = logging.getLogger("robostack.training.run_state")

KEEP = 2  # checkpoints (and their buffers) kept


@dataclass
class RunState:
    """What a resumed run starts from."""

    checkpoint: Path
    agent: dict  # the agent's state dict
    state_scale: object  # None, or the state scale of checkpoints older than the encoder's own
    counters: dict
    history: list[dict]
    ledger: dict
    online: ReplayBuffer
    demos: ReplayBuffer
    saves: int = field(default=0)


def save_run_state(run_dir: str | Path, number: int, agent, online: ReplayBuffer,
                   demos: ReplayBuffer, counters: dict, history: list[dict],
                   ledger: dict | None = None) -> Path:
    """Write save `number` (buffers, then checkpoint); returns the checkpoint's path."""
    return commit(run_dir, number, snapshot(run_dir, number, agent, online, demos, counters,
                                            history, ledger))


def snapshot(run_dir: str | Path, number: int, agent, online: ReplayBuffer, demos: ReplayBuffer,
             counters: dict, history: list[dict], ledger: dict | None = None) -> dict:
    """The first half of a save: write the buffers of save `number` and return the checkpoint
    state that goes with them. The learner calls it under its lock (its receiver adds
    transitions meanwhile), so buffers, counters and ledger are taken at one instant, and
    `commit`s outside it."""
    buffers = Path(run_dir) / "buffers"
    buffers.mkdir(parents=True, exist_ok=True)
    names = (f"online_{number:06d}.npz", f"demos_{number:06d}.npz")
    online.save(buffers / names[0])
    demos.save(buffers / names[1])
    return {"agent": agent.state_dict(), "env_steps": int(counters["env_steps"]),
            "counters": json.dumps(counters), "history": json.dumps(history),
            "ledger": json.dumps(ledger or {}), "online_buffer": names[0], "demo_buffer": names[1]}


def commit(run_dir: str | Path, number: int, state: dict) -> Path:
    """The second half: record the buffer files' sizes and hashes (outside the learner's lock),
    write the checkpoint, then delete the buffers no kept checkpoint names."""
    buffers = Path(run_dir) / "buffers"
    state = {**state, "buffer_files": json.dumps(
        {name: file_identity(buffers / name) for name in (state["online_buffer"], state["demo_buffer"])})}
    path = save_checkpoint(run_dir, number, state, keep_last=KEEP)
    kept = {f"{kind}_{n:06d}.npz" for kind in ("online", "demos") for n in range(number - KEEP + 1, number + 1)}
    for old in (Path(run_dir) / "buffers").glob("*.npz"):
        if old.name not in kept:
            old.unlink(missing_ok=True)
    return path


def file_identity(path: Path) -> dict:
    """{"bytes", "sha256"} of a file (the buffers' own checks miss flipped array bytes)."""
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def load_run_state(run_dir: str | Path, say=None) -> RunState | None:
    """The newest checkpoint of the run whose files all verify, with its buffers; None if the
    run has none. Each damaged newer checkpoint is skipped with a warning naming the damaged
    file (also through `say`); CheckpointError, naming every problem, if none is intact (a run
    never silently restarts from scratch)."""
    run_dir = Path(run_dir)
    problems = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            state = _load(run_dir, path)
        except (CheckpointError, BufferFileError, FileNotFoundError) as exc:
            problems.append(str(exc))
            _warn(f"resume: skipping checkpoint {path.name}: {exc}", say)
            continue
        if problems:
            _warn(f"resume: falling back to {path.name}, the newest checkpoint whose files verify "
                  f"(transitions only the newer one held are counted lost)", say)
        return state
    if problems:
        raise CheckpointError(f"no intact checkpoint in {run_dir / 'checkpoints'}:\n"
                              + "\n".join(problems) + "\nRestore the damaged files from a backup, "
                              "or start a new run (--resume false moves this one aside).")
    return None


def _load(run_dir: Path, path: Path) -> RunState:
    """One checkpoint and its buffers, every file verified."""
    checkpoint = load_checkpoint(path)
    s = checkpoint.state
    buffers = run_dir / "buffers"
    names = (s.get("online_buffer", "online.npz"), s.get("demo_buffer", "demos.npz"))
    recorded = json.loads(s.get("buffer_files", "{}"))  # checkpoints before it: the buffers' own checks
    for name in names:
        expected, file = recorded.get(name), buffers / name
        if expected is None:
            continue
        if not file.is_file():
            raise FileNotFoundError(f"{file}: the buffer file saved with {path.name} is missing")
        found = file_identity(file)
        if found != expected:
            raise BufferFileError(
                f"{file}: damaged, it is not the buffer file saved with {path.name} "
                f"({found['bytes']} bytes, sha256 {found['sha256'][:12]}..., recorded "
                f"{expected['bytes']} bytes, sha256 {expected['sha256'][:12]}...)")
    counters = json.loads(s.get("counters", "{}"))
    # Checkpoints written before both modes shared this schema kept the history (and the
    # learner its wall clock) elsewhere.
    history = json.loads(s["history"]) if "history" in s else counters.pop("history", [])
    counters.setdefault("env_steps", int(s["env_steps"]))
    counters.setdefault("wall_seconds", counters.pop("wall_offset", s.get("wall_seconds", 0.0)))
    return RunState(
        checkpoint=checkpoint.path, agent=s["agent"], state_scale=s.get("state_scale"),
        counters=counters, history=history, ledger=json.loads(s.get("ledger", "{}")),
        online=ReplayBuffer.load(buffers / names[0]), demos=ReplayBuffer.load(buffers / names[1]),
        saves=int(counters.get("saves", checkpoint.step)))


def _warn(text: str, say=None) -> None:
    """To the caller's output when it has one (the learner's log), else the logging warning."""
    if say is not None:
        say(f"warning: {text}")
    else:
        log.warning(text)
