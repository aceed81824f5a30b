"""What a training run reports while it runs, the same in both modes (`robostack train` and
`robostack train --single-process`):

    a progress line      format_progress(stats): steps, episodes, recent success and return,
                         update and env-step rates, the achieved UTD, interventions (and, over
                         processes, the weights each actor acts with and what is spooled)
    progress.csv         one row per report: the stats' numbers and the last update's losses
    tensorboard/         train/<name> scalars per report, eval/success_rate and
                         eval/time_to_success_s per evaluation, flushed each time (when the
                         tensorboard package is installed; everything is in the CSV files anyway)

The stats both modes fill in come from `progress_stats`; the learner adds its processes' part
(robostack/training/receiver.py), and the launcher prints the learner's stats as they come.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import numpy as np

from robostack.training.run_dir import read_csv, write_csv

PROGRESS_FILE = "progress.csv"


class Rates:
    """Critic updates and env steps per second over the last ~`window` s of wall-clock time."""

    def __init__(self, window: float = 30.0, clock=time.monotonic):
        self.window, self.clock = window, clock
        self.samples: deque = deque()  # (time, critic updates, env steps)

    def sample(self, critic_updates: int, env_steps: int) -> tuple[float, float]:
        now = self.clock()
        self.samples.append((now, critic_updates, env_steps))
        while len(self.samples) > 2 and now - self.samples[1][0] > self.window:
            self.samples.popleft()
        t0, u0, e0 = self.samples[0]
        if now <= t0:
            return 0.0, 0.0
        return (critic_updates - u0) / (now - t0), (env_steps - e0) / (now - t0)


def progress_stats(config, *, env_steps: int, update_calls: int, critic_updates: int, episodes: int,
                   demo_episodes: int, interventions: int, recent, rates: Rates,
                   wall_seconds: float, metrics: dict | None = None) -> dict:
    """The stats both training modes report. `config`: the RunConfig; `recent`: (return,
    success) of the last episodes; `update_calls`: RLPD updates (each `utd_ratio` critic steps);
    `metrics`: the last update's (sac.update), NaN losses before the first one."""
    learning_steps = max(0, env_steps - config.learning_starts + 1)
    updates_per_s, env_steps_per_s = rates.sample(critic_updates, env_steps)
    recent, metrics = list(recent), metrics or {}
    return {
        "env_steps": env_steps, "total_steps": config.total_steps, "episodes": episodes,
        "demo_episodes": demo_episodes,
        "success_rate": float(np.mean([s for _, s in recent])) if recent else 0.0,
        "return": float(np.mean([r for r, _ in recent])) if recent else 0.0,
        "critic_updates": critic_updates, "updates_per_s": updates_per_s,
        "env_steps_per_s": env_steps_per_s,
        "utd": update_calls * config.utd_ratio / max(1, learning_steps), "utd_target": config.utd_ratio,
        "interventions": interventions, "wall_seconds": round(wall_seconds, 1),
        "critic_loss": float(metrics.get("critic_loss", float("nan"))),
        "temperature": float(metrics.get("temperature", float("nan"))),
        "phase": "collecting" if env_steps < config.learning_starts else "training",
    }


def format_progress(s: dict) -> str:
    """One progress line from a run's stats (`progress_stats`, plus the learner's processes:
    weights versions, actors, spooled and lost transitions)."""
    line = (f"step {s['env_steps']:>6}/{s['total_steps']}  episodes {s['episodes']:>4}  "
            f"success(last 20) {s['success_rate']:4.0%}  return {s['return']:5.2f}  "
            f"updates/s {s['updates_per_s']:5.0f}  UTD {s['utd']:.2f}/{s['utd_target']}  "
            f"interventions {s['interventions']}  critic {s['critic_loss']:.4f}  "
            f"alpha {s['temperature']:.3f}")
    if "actors" in s:  # over processes
        versions = ",".join(f"v{a['weights_version']}" for a in s["actors"].values()) or "-"
        line += f"  weights v{s['weights_version']} (actors {versions})"
    line += f"  {s['env_steps_per_s']:5.1f} steps/s"
    unsent = sum(a["unsent"] for a in s.get("actors", {}).values())
    line += (f"  spooled {unsent}" if unsent else "") + (f"  LOST {s['lost']}" if s.get("lost") else "")
    return line + ("" if s["phase"] == "training" else f"  [{s['phase']}]")


def tensorboard_writer(run_dir: Path):
    """A SummaryWriter on <run_dir>/tensorboard, or None without the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: every scalar is in the CSV files anyway
        return None
    return SummaryWriter(str(Path(run_dir) / "tensorboard"))


class ProgressReport:
    """Where a run's progress goes: `report(stats, metrics)` writes a progress.csv row and the
    train/* scalars and says the progress line; `evaluation(...)` writes the eval/* scalars.
    `resume`: continue the progress.csv of the run in `run_dir` (else it starts anew)."""

    def __init__(self, run_dir: str | Path, say=print, resume: bool = False):
        self.say = say
        self.path = Path(run_dir) / PROGRESS_FILE
        self.rows = read_csv(self.path) if resume else []
        self.tensorboard = tensorboard_writer(Path(run_dir))

    def report(self, stats: dict, metrics: dict | None = None) -> None:
        metrics = metrics or {}
        row = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()
               if not isinstance(v, dict)}
        row.update({k: round(float(v), 5) for k, v in metrics.items()})
        self.rows.append(row)
        write_csv(self.path, self.rows)
        if self.tensorboard is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tensorboard.add_scalar(f"train/{k}", v, stats["env_steps"])
            self.tensorboard.flush()  # on disk now, not after the writer's 2-minute timer
        self.say(format_progress(stats))

    def evaluation(self, step: int, success_rate: float, time_to_success_s: float) -> None:
        if self.tensorboard is None:
            return
        self.tensorboard.add_scalar("eval/success_rate", float(success_rate), step)
        if time_to_success_s == time_to_success_s:  # not NaN (no success)
            self.tensorboard.add_scalar("eval/time_to_success_s", float(time_to_success_s), step)
        self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
