"""The part of a task's world a real arm can carry: virtual markers (points in the base frame).

A marker is a goal the task draws and the arm is judged against (reach's goal point), not a
physical object, so a real arm's robot server can hold it as exactly as a mirror does. Objects
(pick_cube's cube) are physical: on a real arm their poses come from perception, which this
world does not have, so it refuses them by name instead of inventing a pose.

The methods are those of `sim.scene.World` (positions in m, base frame) that markers need.
"""

from __future__ import annotations

import numpy as np


class MarkerWorld:
    """Virtual markers by name, starting where the task's scene put them."""

    def __init__(self, markers):
        """markers: the scene's `Marker`s (anything with .name and .position)."""
        self._positions = {m.name: np.array(m.position, dtype=float) for m in markers}

    def marker_position(self, name: str) -> np.ndarray:
        return self._position(name).copy()

    def set_marker_position(self, name: str, position) -> None:
        value = np.asarray(position, dtype=float)
        if value.shape != (3,) or not np.isfinite(value).all():
            raise ValueError(f"marker {name!r}: position must be 3 finite numbers (m), got {position!r}")
        self._position(name)[:] = value

    def _position(self, name: str) -> np.ndarray:
        try:
            return self._positions[name]
        except KeyError:
            raise KeyError(f"no marker {name!r} on this arm: it has {sorted(self._positions)}") from None

    def _no_objects(self, name: str):
        raise KeyError(f"object {name!r}: a real arm's world holds virtual markers only; the "
                       "poses of physical objects need perception, which this server lacks")

    def object_pose(self, name: str):
        self._no_objects(name)

    def set_object_pose(self, name: str, position, quaternion) -> None:
        self._no_objects(name)

    def object_mass(self, name: str) -> float:
        self._no_objects(name)

    def set_object_mass(self, name: str, mass: float) -> None:
        self._no_objects(name)
