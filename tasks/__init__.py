"""Task definitions shared by the simulated mirrors and real arms.

`make_task("pick_cube")` returns a task object with: `build_scene()`, `reset_scene(backend, rng)`,
`observe(backend)` (mirror only), `evaluate(fields) -> Outcome`, `expert(seed)`, `state_fields`
and `config` (a `TaskConfig`).
"""

from __future__ import annotations

from tasks.common import Outcome, TaskConfig
from tasks.pick_cube import PickCube
from tasks.reach import Reach

TASKS = {"pick_cube": PickCube, "reach": Reach}


def make_task(name: str, config: TaskConfig | None = None):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: choose one of {sorted(TASKS)}")
    return TASKS[name](config)


__all__ = ["Outcome", "TaskConfig", "make_task", "TASKS"]
