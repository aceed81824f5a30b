"""Scene tools: the Panda on a table, with the physics options every mirror scene shares.

Tasks (tasks/) call `panda_on_table()` and add their own objects with `add_box()` etc.; the scene
never knows about tasks.

The table top is the plane z = 0 of the `world` frame, and the robot base stands on it at the
origin. The physics timestep is 1 ms: the impedance controller runs at 1 kHz on a real Panda and
the mirror evaluates it every physics tick, so simulated and real control loops see the same
sampling period.
"""

from __future__ import annotations

import mujoco

from sim import panda_model

PHYSICS_TIMESTEP = 0.001  # s
TABLE_SIZE = (0.8, 0.8, 0.02)  # m, half extents
TABLE_CENTER_XY = (0.45, 0.0)  # m


def panda_on_table() -> mujoco.MjSpec:
    spec = panda_model.panda_spec()
    spec.modelname = "panda_on_table"
    spec.option.timestep = PHYSICS_TIMESTEP
    # Euler: MuJoCo integrates joint damping implicitly even with Euler, which is all the
    # stability a 1 ms step needs here; implicitfast cost ~40% more per step for no gain.
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_EULER
    # At 1 ms every damping term here is far inside the explicit stability limit (h*d/m <= 1.2
    # for the lightest body, the fingers), so the implicit-damping factorisation Euler does by
    # default buys nothing and costs ~12% of a step.
    spec.option.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10  # stiffer frictional contacts: grasped objects slip less
    spec.visual.global_.offwidth = 640
    spec.visual.global_.offheight = 480

    world = spec.worldbody
    world.add_light(name="key", pos=[0.5, -0.5, 1.5], dir=[0.0, 0.3, -1.0], castshadow=False)
    world.add_light(name="fill", pos=[-0.5, 0.5, 2.0], dir=[0.3, 0.0, -1.0], castshadow=False)
    table = world.add_geom(
        name="table", type=mujoco.mjtGeom.mjGEOM_BOX,
        pos=[TABLE_CENTER_XY[0], TABLE_CENTER_XY[1], -TABLE_SIZE[2]], size=list(TABLE_SIZE),
        rgba=[0.55, 0.45, 0.35, 1.0], friction=[1.0, 0.005, 0.0001],
    )
    table.contype, table.conaffinity = panda_model.SCENE_CONTYPE, panda_model.SCENE_CONAFFINITY
    return spec


def add_box(spec: mujoco.MjSpec, name: str, half_size: float, mass: float, rgba, pos) -> None:
    """A free-floating cube (one free joint named `name`), e.g. the object a task manipulates."""
    body = spec.worldbody.add_body(name=name, pos=list(pos))
    body.add_freejoint(name=name)
    geom = body.add_geom(
        name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=[half_size] * 3, mass=mass,
        rgba=list(rgba), friction=[1.0, 0.01, 0.001], condim=4,
    )
    geom.contype, geom.conaffinity = panda_model.SCENE_CONTYPE, panda_model.SCENE_CONAFFINITY


def add_marker(spec: mujoco.MjSpec, name: str, rgba, pos, radius: float = 0.01) -> None:
    """A visual-only sphere (no collisions), e.g. a reach goal."""
    site = spec.worldbody.add_site(name=name, pos=list(pos), size=[radius] * 3, rgba=list(rgba))
    site.type = mujoco.mjtGeom.mjGEOM_SPHERE
