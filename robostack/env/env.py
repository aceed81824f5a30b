"""The gymnasium env: a client of the robot server, stepping at the policy rate (default 10 Hz).

Observation (a dict):
  "state": float32 vector, the concatenation of named fields (`env.state_fields` gives names and
           slices): tcp_position (3, m, base frame), tcp_quaternion (4, w x y z, base frame),
           tcp_velocity (6, [m/s; rad/s], base frame), gripper_width (1, m), then the task's
           fields (pick_cube: cube_position, cube_to_tcp); only those the task config's
           `observed_state` names, when it names some (robostack/env/spaces.py).
  "images/<camera>": uint8 (H, W, 3) RGB, one per camera the task config's `cameras` names. In
           lock-step the robot server renders them from the state of the same reply (an image
           never lags its state); in real time they are the newest frames of a camera server
           (`camera_endpoint`, robostack/env/camera_frames.py), at most one policy period old.
           info["image_times"]: {camera: s since the reset} of each image (lock-step: robot time,
           as info["time"]; real time: the host's clock of the frame's capture).
Action (float32 in [-1, 1]): end-effector delta in the base frame, scaled by the task config:
  xyz * max_translation_step (m) from the measured tcp position; with control_rotation, a
  rotation vector * max_rotation_step (rad) applied to the measured orientation (base frame);
  with control_gripper, a last component: > 0.5 close, < -0.5 open, else keep. The mapping is
  robostack.env.actions.action_to_target / gripper_target, the one copy teleop and replay use.
Episode end: `terminated` when the task reports success or failure (no bootstrapping past it),
`truncated` at the time limit (bootstrapping continues). They are never conflated. A camera that
fails mid-episode (dead, stale frames) truncates it too, with info["truncated_reason"] saying why:
the policy never acts on an image older than it should be. At reset it raises CameraError.

The server is reached through a `connection` with one method, `request(kind, meta, arrays)`:
over ZeroMQ (the product path, `ZmqConnection`) or by calling an in-process `RobotServer`
directly (`InProcessConnection`, for tests and for measuring the transport's cost).
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

from hardware.cameras.base import CameraError
from robostack import transport
from robostack.env.actions import action_to_target, gripper_target
from robostack.env.spaces import (ROBOT_FIELDS, action_space, camera_sizes, observation_space,
                                  state_layout)
from robostack.robot.client import InProcessConnection, ZmqConnection, spawn_robot_server
from tasks import TaskConfig, make_task

__all__ = ["ROBOT_FIELDS", "RobotEnv", "make_env"]


class RobotEnv(gym.Env):
    """camera_endpoint: a `robostack camera-server` publishing the task's cameras, at the sizes
    the task declares (its --resize), for a real-time server; lock-step servers render their own."""

    metadata = {"render_modes": []}

    def __init__(self, connection, task: str | None = None, config: TaskConfig | None = None,
                 camera_endpoint: str | None = None, camera_curve: transport.CurveKeys | None = None):
        self.connection = connection
        self.camera_endpoint, self.camera_curve = camera_endpoint, camera_curve
        hello = connection.request("hello", {"task": task} if task else {}).meta
        if hello.get("schema") != transport.SCHEMA_VERSION:
            raise transport.ProtocolError(
                f"robot server speaks schema v{hello.get('schema')}, this env v{transport.SCHEMA_VERSION}")
        self.server_info = hello
        # The server owns the physical world: its task parameters (cube size, table height, ...)
        # decide success, so the env takes them from the hello. A client config that customised
        # them differently is refused rather than silently judged against the wrong world.
        server_params = hello["task_config"].get("params")
        if config is None:
            config = TaskConfig(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in hello["task_config"].items()})
        else:
            mine = make_task(hello["task"], config).params
            theirs = make_task(hello["task"], params=server_params).params
            if mine != theirs and mine != make_task(hello["task"]).params:
                raise ValueError(
                    f"task parameters differ: the robot server at {connection.endpoint} runs "
                    f"{hello['task']} with {theirs}, this env was configured with {mine}; start the "
                    "server with the same --task-params, or leave them out of the env's config")
        self.task = make_task(hello["task"], config, params=server_params)
        self.config = self.task.config
        self.realtime = hello["clock"] == "realtime"

        self.state_fields: dict[str, slice] = state_layout(self.task)
        self.observation_space = observation_space(self.task)
        self.camera_sizes = camera_sizes(self.task)  # {camera: (height, width)} observed
        self._live_frames = None  # real time: the camera server's frames (LiveFrames)
        self._images: dict[str, np.ndarray] = {}
        self._image_times: dict[str, float] = {}
        self._reset_wall = 0.0  # host clock (s) at the last reset: real-time image times count from it
        self._image_request = {}
        if self.camera_sizes:
            self._open_cameras(hello, camera_endpoint)
        self.action_space = action_space(self.config)
        self.max_width = float(hello["gripper_max_width"])
        self._steps = 0
        self._fields: dict[str, np.ndarray] = {}
        self._home_quaternion = np.array([0.0, 1.0, 0.0, 0.0])
        self._gripper = self.max_width
        self._seq = 0
        self._next_step_time = 0.0
        self._episode_start = 0.0  # robot clock (s) at the last reset
        self._transition_seen = -1  # seq of the newest supervisor transition already in an info

    # --- gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31))
        reply = self.connection.request("reset", {"seed": int(seed), **self._image_request}, timeout=30.0)
        self._reset_wall = time.monotonic()
        self._episode_start = float(reply.meta.get("time", 0.0))
        self._steps = 0
        self._gripper = self.max_width
        self._fields = self._take_images(reply)
        if self._live_frames is not None:  # a camera that fails now fails the reset (CameraError)
            self._read_live_frames()
        self._home_quaternion = np.array(reply.arrays["tcp_quaternion"], dtype=float)
        self._next_step_time = time.monotonic()
        return self._observation(), self._info(reply.meta, self.task.evaluate(self._fields))

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action has shape {action.shape}, expected {self.action_space.shape} "
                             f"(xyz{', rotation' if self.config.control_rotation else ''}"
                             f"{', gripper' if self.config.control_gripper else ''})")
        if not np.isfinite(action).all():
            raise ValueError(f"action contains non-finite values {action.tolist()}: the policy "
                             "produced NaN/inf; nothing was sent to the robot")
        position, quaternion = action_to_target(action, self._fields["tcp_position"],
                                                self._fields["tcp_quaternion"], self.config,
                                                held_quaternion=self._home_quaternion)
        self._gripper = gripper_target(action, self.config, self._gripper, self.max_width)
        self._seq += 1
        meta = {"gripper": self._gripper, "seq": self._seq}
        arrays = {"target_position": position, "target_quaternion": quaternion}
        if self.realtime:
            reply = self._step_realtime(meta, arrays)
        else:
            reply = self.connection.request("step", {**meta, **self._image_request}, arrays)
        self._fields = self._take_images(reply)
        self._steps += 1
        camera_failure = None
        if self._live_frames is not None:
            try:
                self._read_live_frames()
            except CameraError as error:  # act on no stale image: end the episode here
                camera_failure = f"camera: {error}"
        outcome = self.task.evaluate(self._fields)
        terminated = bool(outcome.success or outcome.failure)
        truncated = (not terminated) and (self._steps >= self.config.max_episode_steps
                                          or camera_failure is not None)
        info = self._info(reply.meta, outcome)
        if camera_failure is not None and not terminated:
            info["truncated_reason"] = camera_failure
        return self._observation(), outcome.reward, terminated, truncated, info

    def close(self):
        if self._live_frames is not None:
            self._live_frames.close()
        self.connection.close()

    # --- helpers ----------------------------------------------------------------------------
    def _open_cameras(self, hello: dict, camera_endpoint: str | None) -> None:
        names = list(self.camera_sizes)
        if not self.realtime:
            offered = {name: tuple(size) for name, size in (hello.get("cameras") or {}).items()}
            wrong = {n: offered.get(n) for n in names if offered.get(n) != self.camera_sizes[n]}
            if wrong:
                raise ValueError(
                    f"the task observes cameras {self.camera_sizes} (height, width), the robot "
                    f"server at {self.connection.endpoint} renders {offered or 'none'}: run a "
                    "lock-step MuJoCo server of the same task, or observe its cameras")
            self._image_request = {"images": names}
            return
        if not camera_endpoint:
            raise ValueError(
                f"the task observes cameras {names}; a real-time robot server renders none: start "
                "`robostack camera-server` with them (--resize to the task's sizes) and pass its "
                "endpoint (--camera-endpoint; make_env(camera_endpoint=...))")
        from robostack.env.camera_frames import LiveFrames

        period = 1.0 / self.config.policy_hz
        self._live_frames = LiveFrames(camera_endpoint, self.camera_sizes, max_age=period,
                                       curve=self.camera_curve)

    def _take_images(self, reply) -> dict[str, np.ndarray]:
        """The reply's state fields; its images (lock-step) kept apart, with their times."""
        fields = dict(reply.arrays)
        if self._image_request:
            images = {name: fields.pop(f"images/{name}", None) for name in self.camera_sizes}
            missing = [name for name, image in images.items() if image is None]
            if missing:
                raise transport.ProtocolError(f"the robot server's {reply.kind!r} reply carries no "
                                              f"image of camera {missing}, though asked for it")
            self._images = images
            when = reply.meta.get("image_time")
            self._image_times = {name: np.nan if when is None else round(when - self._episode_start, 9)
                                 for name in images}
        return fields

    def _read_live_frames(self) -> None:
        images, captured = self._live_frames.read()
        self._images = images
        self._image_times = {name: round(t - self._reset_wall, 9) for name, t in captured.items()}

    def _step_realtime(self, meta, arrays):
        period = 1.0 / self.config.policy_hz
        meta["deadline"] = 3.0 * period
        self.connection.request("command", meta, arrays)
        self._next_step_time += period
        delay = self._next_step_time - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            self._next_step_time = time.monotonic()
        return self.connection.request("state")

    def _observation(self) -> dict:
        state = np.empty(self.observation_space["state"].shape, dtype=np.float32)
        for name, where in self.state_fields.items():
            state[where] = self._fields[name]
        # Into the space's known bounds: a simulated finger's soft joint limit lets the measured
        # width stray a fraction of a millimetre past closed or open.
        space = self.observation_space["state"]
        np.clip(state, space.low, space.high, out=state)
        return {"state": state, **{f"images/{name}": image for name, image in self._images.items()}}

    def _info(self, meta: dict, outcome) -> dict:
        # "time" is robot time since the reset, not the robot's clock, which runs on across
        # episodes: info must be the same for the same seed and actions (gymnasium's contract).
        time_ = meta.get("time")
        # The supervisor's transitions since the last info, each once (the server repeats its
        # latest few in every message): [from, to, reason], without the robot's running clock.
        # A malformed entry is skipped: it would otherwise stop the episode log's writer.
        new = [t for t in (meta.get("supervisor") or {}).get("transitions", [])
               if isinstance(t, list) and len(t) == 5 and isinstance(t[0], int)
               and t[0] > self._transition_seen and all(isinstance(x, str) for x in t[2:])]
        if new:
            self._transition_seen = new[-1][0]
        return {"success": outcome.success, "safety_flags": meta.get("flags", []),
                "mode": meta.get("mode"), "supervisor_transitions": [t[2:] for t in new],
                "time": None if time_ is None else round(time_ - self._episode_start, 9),
                **({"image_times": dict(self._image_times)} if self.camera_sizes else {}),
                **outcome.info}

    @property
    def elapsed_steps(self) -> int:
        """Steps since the last reset (the time limit counts these)."""
        return self._steps

    def fields(self) -> dict[str, np.ndarray]:
        """The last observation's named fields (robot + task), for scripted experts."""
        return self._fields


def make_env(task: str = "pick_cube", backend: str = "mujoco", transport_kind: str = "zmq",
             endpoint: str | None = None, config: TaskConfig | None = None, clock: str = "lockstep",
             seed: int = 0, camera_endpoint: str | None = None,
             curve: transport.CurveKeys | None = None,
             camera_curve: transport.CurveKeys | None = None) -> RobotEnv:
    """An env for `task`.

    transport_kind="zmq" with no endpoint starts a robot server subprocess on loopback (closed
    with the env); with an endpoint, connects to a running `robostack robot-server`.
    transport_kind="inprocess" runs the server in this process (lock-step, no sockets).
    Images: name the cameras in `config.cameras` (TaskConfig(cameras=("front", "wrist"))); a
    real-time server needs `camera_endpoint`, a `robostack camera-server` publishing them.
    `curve` / `camera_curve`: transport.CurveKeys for a robot / camera server serving with CURVE
    (robostack/env/remote.py gathers them from command-line options).
    """
    if transport_kind == "inprocess":
        from robostack.robot.server import RobotServer, RobotServerConfig

        task_object = make_task(task, config)
        server = RobotServer(RobotServerConfig(task=task, backend=backend, seed=seed), task=task_object)
        return RobotEnv(InProcessConnection(server), task=task, config=config,
                        camera_endpoint=camera_endpoint, camera_curve=camera_curve)
    if transport_kind != "zmq":
        raise ValueError(f"transport_kind must be 'zmq' or 'inprocess', got {transport_kind!r}")
    if endpoint is None:
        connection = spawn_robot_server(task, backend, clock, ("--seed", str(seed)))
    else:
        connection = ZmqConnection(endpoint, curve=curve)
    try:
        return RobotEnv(connection, task=task, config=config, camera_endpoint=camera_endpoint,
                        camera_curve=camera_curve)
    except BaseException:
        connection.close()  # a server this call started stops with it
        raise
