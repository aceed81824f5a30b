"""The `sim.scene.World` interface on a MuJoCo model built by sim/mujoco_scene.py.

Positions are in the robot `base` frame, which is MuJoCo's `world` frame in the mirror (m);
quaternions (w, x, y, z), MuJoCo's own order. An object is a body with a free joint of the same
name; a marker is a site. Reads come from the last kinematics pass (the robot server runs one
before every state message); writes update the kinematics at once, so a write reads back.
"""

from __future__ import annotations

import mujoco
import numpy as np


class MujocoWorld:
    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData):
        self.model = model
        self.data = data
        # name -> (body id, qpos address, dof address), looked up once: observe() runs every step.
        self._objects: dict[str, tuple[int, int, int]] = {}
        for j in range(model.njnt):
            if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
                name = model.joint(j).name
                body = int(model.jnt_bodyid[j])
                if model.body(body).name == name:
                    self._objects[name] = (body, int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j]))
        self._markers = {model.site(i).name: i for i in range(model.nsite)
                         if model.site(i).name and model.site_bodyid[i] == 0}

    def _object(self, name: str) -> tuple[int, int, int]:
        try:
            return self._objects[name]
        except KeyError:
            raise KeyError(f"no object {name!r} in this scene; objects: {sorted(self._objects)}") from None

    def _marker(self, name: str) -> int:
        try:
            return self._markers[name]
        except KeyError:
            raise KeyError(f"no marker {name!r} in this scene; markers: {sorted(self._markers)}") from None

    # --- objects -------------------------------------------------------------------------------
    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        body = self._object(name)[0]
        return self.data.xpos[body].copy(), self.data.xquat[body].copy()

    def set_object_pose(self, name: str, position, quaternion) -> None:
        position = np.asarray(position, dtype=float)
        quaternion = np.asarray(quaternion, dtype=float)
        if position.shape != (3,) or quaternion.shape != (4,):
            raise ValueError(f"object pose: position (3,) and quaternion (4,) expected, got "
                             f"{position.shape} and {quaternion.shape}")
        _, qpos, dof = self._object(name)
        self.data.qpos[qpos:qpos + 3] = position
        self.data.qpos[qpos + 3:qpos + 7] = quaternion
        self.data.qvel[dof:dof + 6] = 0.0
        mujoco.mj_kinematics(self.model, self.data)

    def object_mass(self, name: str) -> float:
        return float(self.model.body_mass[self._object(name)[0]])

    def set_object_mass(self, name: str, mass: float) -> None:
        """Scale the body's mass and inertia (same shape, uniform density), then refresh what
        MuJoCo derives from them at compile time, so the model equals one compiled with `mass`."""
        m, d = self.model, self.data
        body = self._object(name)[0]
        if not (np.isfinite(mass) and mass > 0):
            raise ValueError(f"object {name!r}: mass must be > 0 kg, got {mass}")
        old_mass, old_inertia = float(m.body_mass[body]), m.body_inertia[body].copy()
        if mass == old_mass:
            return
        m.body_mass[body] = mass
        m.body_inertia[body] = old_inertia * (mass / old_mass)
        # mj_setConst recomputes subtree masses and the inverse weights contacts are softened
        # with, evaluating them at qpos0: it overwrites qpos, which is restored afterwards.
        qpos = d.qpos.copy()
        mujoco.mj_setConst(m, d)
        d.qpos[:] = qpos
        # mj_setConst leaves the size statistics alone; the compiler's mean inertia is the mean
        # of the mass matrix diagonal at qpos0, and a free body adds 3 x mass + its inertia.
        m.stat.meaninertia += (3 * (mass - old_mass) + float((m.body_inertia[body] - old_inertia).sum())) / m.nv
        m.stat.meanmass += (mass - old_mass) / (m.nbody - 1)
        mujoco.mj_forward(m, d)

    # --- markers -------------------------------------------------------------------------------
    def marker_position(self, name: str) -> np.ndarray:
        return self.model.site_pos[self._marker(name)].copy()

    def set_marker_position(self, name: str, position) -> None:
        position = np.asarray(position, dtype=float)
        if position.shape != (3,):
            raise ValueError(f"marker position: (3,) expected, got {position.shape}")
        site = self._marker(name)
        self.model.site_pos[site] = position
        self.data.site_xpos[site] = position  # a world-body site: no kinematics pass needed
