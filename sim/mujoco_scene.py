"""A `sim.scene.Scene` compiled into a MuJoCo model: the Panda on its table, with the physics
options every mirror scene shares, and the task's objects, markers, cameras and lights.

The table top is the plane z = `scene.table.height` of the `world` frame, which is the robot
`base` frame: the robot base stands at the origin (z = 0) whatever the table height. Names carry
over: the table geom is `table`; a box is a body with one free joint and one geom, all three
named after it; a marker is a site; a camera a camera, on the world body or, for a camera
`attached_to` a body, on that body (pose in that body's frame); its resolution is the camera's
image size. sim/mujoco_cameras.py renders them.
"""

from __future__ import annotations

import mujoco

from sim import panda_model
from sim.scene import Box, Marker, Scene, Table

ROBOTS = {"panda": panda_model.panda_spec}


def build_spec(scene: Scene, visual: str = "coarse") -> mujoco.MjSpec:
    """An editable MuJoCo spec of `scene` (compile it with `.compile()`, or use `compile_scene`).
    `visual`: the robot meshes cameras see, "coarse" (cheap to render), "full" or "none" (see
    sim/panda_model.py); the dynamics are the same with each."""
    if scene.robot not in ROBOTS:
        raise ValueError(f"unknown robot {scene.robot!r}: the MuJoCo mirror has {sorted(ROBOTS)}")
    spec = ROBOTS[scene.robot](visual=visual)
    spec.modelname = f"{scene.robot}_on_table"
    _physics_options(spec, scene.physics_timestep)
    # Offscreen buffer: at least 640 x 480, and as large as the largest camera image.
    spec.visual.global_.offwidth = max([640] + [c.width for c in scene.cameras])
    spec.visual.global_.offheight = max([480] + [c.height for c in scene.cameras])

    world = spec.worldbody
    for light in scene.lights:
        world.add_light(name=light.name, pos=list(light.position), dir=list(light.direction),
                        castshadow=False)
    _add_table(spec, scene.table)
    for box in scene.objects:
        _add_box(spec, box)
    for marker in scene.markers:
        _add_marker(spec, marker)
    bodies = {body.name for body in spec.bodies}
    for camera in scene.cameras:
        if camera.attached_to is None:
            parent = world
        elif camera.attached_to in bodies:
            parent = spec.body(camera.attached_to)
        else:
            raise ValueError(f"camera {camera.name!r} is attached_to {camera.attached_to!r}, which is "
                             f"no body of this scene; bodies: {sorted(b for b in bodies if b != 'world')}")
        added = parent.add_camera(name=camera.name, pos=list(camera.position),
                                  quat=list(camera.orientation()), fovy=camera.fovy)
        added.resolution = [camera.width, camera.height]
    return spec


def compile_scene(scene: Scene, visual: str = "coarse") -> mujoco.MjModel:
    return build_spec(scene, visual).compile()


def _physics_options(spec: mujoco.MjSpec, timestep: float) -> None:
    spec.option.timestep = timestep
    # Euler: MuJoCo integrates joint damping implicitly even with Euler, which is all the
    # stability a 1 ms step needs here; implicitfast cost ~40% more per step for no gain.
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_EULER
    # At 1 ms every damping term here is far inside the explicit stability limit (h*d/m <= 1.2
    # for the lightest body, the fingers), so the implicit-damping factorisation Euler does by
    # default buys nothing and costs ~12% of a step.
    spec.option.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10  # stiffer frictional contacts: grasped objects slip less


def _add_table(spec: mujoco.MjSpec, table: Table) -> None:
    geom = spec.worldbody.add_geom(
        name="table", type=mujoco.mjtGeom.mjGEOM_BOX, pos=list(table.center()),
        size=list(table.half_size), rgba=list(table.colour), friction=list(table.friction),
    )
    geom.contype, geom.conaffinity = panda_model.SCENE_CONTYPE, panda_model.SCENE_CONAFFINITY


def _add_box(spec: mujoco.MjSpec, box: Box) -> None:
    body = spec.worldbody.add_body(name=box.name, pos=list(box.position), quat=list(box.quaternion))
    body.add_freejoint(name=box.name)
    geom = body.add_geom(
        name=box.name, type=mujoco.mjtGeom.mjGEOM_BOX, size=list(box.half_size), mass=box.mass,
        rgba=list(box.colour), friction=list(box.friction),
        condim=4,  # torsional friction: a grasped box does not spin between the pads
    )
    geom.contype, geom.conaffinity = panda_model.SCENE_CONTYPE, panda_model.SCENE_CONAFFINITY


def _add_marker(spec: mujoco.MjSpec, marker: Marker) -> None:
    site = spec.worldbody.add_site(name=marker.name, pos=list(marker.position),
                                   size=[marker.radius] * 3, rgba=list(marker.colour))
    site.type = mujoco.mjtGeom.mjGEOM_SPHERE
