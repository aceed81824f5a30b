"""Task definitions shared by the simulated mirrors and real arms.

`make_task("pick_cube")` returns a task object with: `build_scene() -> sim.scene.Scene`,
`reset_scene(world, rng)` and `observe(world, robot_state)` (simulation: they act through the
backend's `sim.scene.World`), `evaluate(fields) -> Outcome`, `expert(seed)`, `state_fields`,
`config` (a `TaskConfig`) and `params` (the task's physical parameters, `config.params`).

`parse_task_params("pick_cube", "cube_half_size=0.025,cube_mass=0.05:0.2")` reads the command-line
form of the parameters (tasks/params.py); pass the result as `make_task(name, params=...)`.
"""

from __future__ import annotations

from tasks.common import Outcome, TaskConfig
from tasks.params import TaskParams
from tasks.pick_cube import PickCube
from tasks.reach import Reach

TASKS = {"pick_cube": PickCube, "reach": Reach}


def _task_class(name: str):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: choose one of {sorted(TASKS)}")
    return TASKS[name]


def make_task(name: str, config: TaskConfig | None = None, params=None):
    """The task `name` with `config` (default: the task's own) and `params` applied over the
    config's parameters (a dict as parse_task_params returns, or the task's params instance)."""
    return _task_class(name)(config, params)


def parse_task_params(task_name: str, text: str) -> dict:
    """'name=value,name=low:high' -> {name: value or (low, high)} for `task_name`, checked: an
    unknown name, a bad number, low > high, or a range for a parameter that holds for the whole
    run raises ValueError saying so (and listing the valid parameters, units and defaults)."""
    return _task_class(task_name).Params.parse(text)


__all__ = ["Outcome", "TaskConfig", "TaskParams", "make_task", "parse_task_params", "TASKS"]
