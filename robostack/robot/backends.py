"""The one factory that names robot backends: concrete backends are imported here, lazily, and nowhere else in robostack."""

from __future__ import annotations


def make_backend(name: str, task):
    """The robot backend for `name`; the mirror compiles the task's scene (a `sim.scene.Scene`)."""
    if name == "mujoco":
        from sim.mujoco_backend import MujocoBackend
        from sim.mujoco_scene import compile_scene

        return MujocoBackend(compile_scene(task.build_scene()))
    raise ValueError(
        f"unknown backend {name!r}: this build offers 'mujoco' (real arms: see hardware/)"
    )
