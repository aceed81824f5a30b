"""The one factory that names robot backends: concrete backends are imported here, lazily, and nowhere else in robostack."""

from __future__ import annotations


def make_backend(name: str, task):
    """The robot backend for `name`; the mirror builds the task's scene."""
    if name == "mujoco":
        from sim.mujoco_backend import MujocoBackend

        return MujocoBackend(task.build_scene().compile())
    raise ValueError(
        f"unknown backend {name!r}: this build offers 'mujoco' (real arms: see hardware/)"
    )
