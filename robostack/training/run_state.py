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
Checkpoints are numbered by save, not by env step: two saves at one env step must not
collide, and the checkpoints kept are exactly those whose buffers are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from robostack.rl.buffers import ReplayBuffer
from robostack.rl.checkpoint import load_latest_checkpoint, save_checkpoint

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
    """The second half: write the checkpoint, then delete the buffers no kept checkpoint names."""
    path = save_checkpoint(run_dir, number, state, keep_last=KEEP)
    kept = {f"{kind}_{n:06d}.npz" for kind in ("online", "demos") for n in range(number - KEEP + 1, number + 1)}
    for old in (Path(run_dir) / "buffers").glob("*.npz"):
        if old.name not in kept:
            old.unlink(missing_ok=True)
    return path


def load_run_state(run_dir: str | Path) -> RunState | None:
    """The newest intact checkpoint of the run with its buffers, or None if it has none."""
    run_dir = Path(run_dir)
    checkpoint = load_latest_checkpoint(run_dir)
    if checkpoint is None:
        return None
    s = checkpoint.state
    counters = json.loads(s.get("counters", "{}"))
    # Checkpoints written before both modes shared this schema kept the history (and the
    # learner its wall clock) elsewhere.
    history = json.loads(s["history"]) if "history" in s else counters.pop("history", [])
    counters.setdefault("env_steps", int(s["env_steps"]))
    counters.setdefault("wall_seconds", counters.pop("wall_offset", s.get("wall_seconds", 0.0)))
    buffers = run_dir / "buffers"
    return RunState(
        checkpoint=checkpoint.path, agent=s["agent"], state_scale=s.get("state_scale"),
        counters=counters, history=history, ledger=json.loads(s.get("ledger", "{}")),
        online=ReplayBuffer.load(buffers / s.get("online_buffer", "online.npz")),
        demos=ReplayBuffer.load(buffers / s.get("demo_buffer", "demos.npz")),
        saves=int(counters.get("saves", checkpoint.step)))
