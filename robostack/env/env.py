"""The gymnasium env: a client of the robot server, stepping at the policy rate (default 10 Hz).

Observation (a dict):
  "state": float32 vector, the concatenation of named fields (`env.state_fields` gives names and
           slices): tcp_position (3, m, base frame), tcp_quaternion (4, w x y z, base frame),
           tcp_velocity (6, [m/s; rad/s], base frame), gripper_width (1, m), then the task's
           fields (pick_cube: cube_position, cube_to_tcp).
Action (float32 in [-1, 1]): end-effector delta in the base frame, scaled by the task config:
  xyz * max_translation_step (m) from the measured tcp position; with control_rotation, a
  rotation vector * max_rotation_step (rad) applied to the measured orientation (base frame);
  with control_gripper, a last component: > 0.5 close, < -0.5 open, else keep. The mapping is
  robostack.env.actions.action_to_target / gripper_target, the one copy teleop and replay use.
Episode end: `terminated` when the task reports success or failure (no bootstrapping past it),
`truncated` at the time limit (bootstrapping continues). They are never conflated.

The server is reached through a `connection` with one method, `request(kind, meta, arrays)`:
over ZeroMQ (the product path, `ZmqConnection`) or by calling an in-process `RobotServer`
directly (`InProcessConnection`, for tests and for measuring the transport's cost).
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

from robostack import transport
from robostack.env.actions import action_to_target, gripper_target
from robostack.env.spaces import ROBOT_FIELDS, action_space, observation_space, state_layout
from robostack.robot.client import InProcessConnection, ZmqConnection, spawn_robot_server
from tasks import TaskConfig, make_task

__all__ = ["ROBOT_FIELDS", "RobotEnv", "make_env"]








class RobotEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, connection, task: str | None = None, config: TaskConfig | None = None):
        self.connection = connection
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
        reply = self.connection.request("reset", {"seed": int(seed)}, timeout=30.0)
        self._steps = 0
        self._gripper = self.max_width
        self._fields = dict(reply.arrays)
        self._home_quaternion = np.array(reply.arrays["tcp_quaternion"], dtype=float)
        self._next_step_time = time.monotonic()
        self._episode_start = float(reply.meta.get("time", 0.0))
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
            reply = self.connection.request("step", meta, arrays)
        self._fields = dict(reply.arrays)
        self._steps += 1
        outcome = self.task.evaluate(self._fields)
        terminated = bool(outcome.success or outcome.failure)
        truncated = (not terminated) and self._steps >= self.config.max_episode_steps
        return self._observation(), outcome.reward, terminated, truncated, self._info(reply.meta, outcome)

    def close(self):
        self.connection.close()

    # --- helpers ----------------------------------------------------------------------------
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
        return {"state": state}

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
                **outcome.info}

    def fields(self) -> dict[str, np.ndarray]:
        """The last observation's named fields (robot + task), for scripted experts."""
        return self._fields


def make_env(task: str = "pick_cube", backend: str = "mujoco", transport_kind: str = "zmq",
             endpoint: str | None = None, config: TaskConfig | None = None, clock: str = "lockstep",
             seed: int = 0) -> RobotEnv:
    """An env for `task`.

    transport_kind="zmq" with no endpoint starts a robot server subprocess on loopback (closed
    with the env); with an endpoint, connects to a running `robostack robot-server`.
    transport_kind="inprocess" runs the server in this process (lock-step, no sockets).
    """
    if transport_kind == "inprocess":
        from robostack.robot.server import RobotServer, RobotServerConfig

        task_object = make_task(task, config)
        server = RobotServer(RobotServerConfig(task=task, backend=backend, seed=seed), task=task_object)
        return RobotEnv(InProcessConnection(server), task=task, config=config)
    if transport_kind != "zmq":
        raise ValueError(f"transport_kind must be 'zmq' or 'inprocess', got {transport_kind!r}")
    if endpoint is None:
        connection = spawn_robot_server(task, backend, clock, ("--seed", str(seed)))
    else:
        connection = ZmqConnection(endpoint)
    return RobotEnv(connection, task=task, config=config)
