"""Camera images in lock-step: the robot server renders the mirror's cameras from its own physics
state, in the reply to the request that produced that state.

An env asks with meta `"images": ["front", "wrist"]` on `reset`, `step` or `state`; the reply's
arrays then carry `images/<camera>` ((H, W, 3) uint8 RGB, top row first) rendered from the very
state in the same reply, and its meta `image_time` (s, robot clock: the state's `time`). So an
image never lags the state it is paired with, which a camera process sampling the simulation on
its own clock could not promise.

Only a lock-step server with a simulated (MuJoCo) world renders. In real time the frames come from
`robostack camera-server` at the cameras' own rate (the env reads them with camera_endpoint=...,
robostack/env/camera_frames.py): rendering inside the 1 kHz loop's process would stall it.

The GL context lives in the thread that renders (sim/mujoco_cameras.py): it is made lazily, by the
first request that asks for images, in the thread that answers requests.
"""

from __future__ import annotations

from robostack.robot.backends import renders_cameras, simulated_cameras

MAX_CAMERAS = 8  # per request: no scene of ours has more; bounds what a request can make us render


class LockstepImages:
    """The cameras a lock-step MuJoCo server renders. `offered`: {camera: (height, width)} px."""

    def __init__(self, backend, task, clock: str):
        self.backend = backend
        renders = clock == "lockstep" and renders_cameras(backend)
        self.offered = ({c.name: (c.height, c.width) for c in task.build_scene().cameras}
                        if renders else {})
        self._clock = clock
        self._cameras = None

    def requested(self, meta: dict) -> tuple[str, ...]:
        """The cameras a request's meta asks for (none: ()); ValueError naming what is wrong with
        the request, raised before the request changes anything."""
        names = meta.get("images")
        if names is None:
            return ()
        if (not isinstance(names, list) or len(names) > MAX_CAMERAS
                or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"'images' must be a list of at most {MAX_CAMERAS} camera names "
                             f"(str), got {str(names)[:80]}")
        if self._clock == "realtime":
            raise ValueError("'images': a real-time robot server renders no frames; read the "
                             "cameras from `robostack camera-server` (--camera-endpoint; make_env(camera_endpoint=...))")
        unknown = [n[:40] for n in names if n not in self.offered]
        if unknown:
            raise ValueError(f"'images': no camera {unknown} on this server; its cameras: "
                             f"{list(self.offered) or 'none (only a lock-step MuJoCo mirror renders)'}")
        return tuple(dict.fromkeys(names))

    def render(self, names) -> dict:
        """{"images/<camera>": image} of the backend's state now (the caller has just run the
        kinematics pass of the state it replies with)."""
        if self._cameras is None:  # GL is loaded only by a server asked for images
            self._cameras = simulated_cameras(self.backend, list(self.offered))
        return {f"images/{name}": self._cameras.render(name) for name in names}

    def close(self) -> None:
        if self._cameras is not None:
            self._cameras.close()
            self._cameras = None
