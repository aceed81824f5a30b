"""The training env's wrapper stack (`make_training_env`, used by both training modes) and
human interventions: while the operator holds the deadman, the teleop device's action
replaces the policy's (HIL-SERL).

    acting = make_training_env(env, intervention="autopilot", protocol=..., seed=0)

    env = InterventionWrapper(env, device, to_action)
    obs, reward, terminated, truncated, info = env.step(policy_action)
    info["intervention"]     True when the executed action came from the device
    info["policy_action"]    what the policy proposed (logged either way)
    info["executed_action"]  what the env executed, in the POLICY's action space: store this one

The device speaks the robot base frame (hardware/teleop/base.py); `to_action` converts a reading
into the env's action space (robostack.env.actions.base_to_policy_action), so a stored intervention
action means the same thing as a policy action. The learner puts intervention transitions in the
demonstration buffer as well as the online one (the actor sends them on the "intervention"
stream).

RLIF-style option (Luo et al. 2023): `takeover_penalty` > 0 subtracts that much reward on the
step where a takeover starts, i.e. the operator's decision to intervene is itself the signal
that the policy was going wrong. Off by default.

Operator labels: a `success` or `failure` event from the device ends the episode as terminated,
with info["human_label"] set and the reward set to 1 (success) or 0 (failure), the sparse
convention of our tasks. A real-arm task without a reward classifier relies on this.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np


def make_training_env(env: gym.Env, intervention: str = "", protocol=None,
                      takeover_penalty: float = 0.0, seed: int = 0, device=None,
                      screen=None) -> gym.Env:
    """What training episodes step: `env` itself, or with `intervention` (a teleop device name,
    robostack.env.teleop.DEVICES; "expert" is the autopilot's older name) the operator's
    InterventionWrapper around it. Evaluations step the bare `env`: no operator helps there.
    `protocol` (InterventionProtocol) and `seed` drive the autopilot; closing the result closes
    the device and `env`.

    `device`: the operator's device, already open (a person's, opened before anything else
    starts so that a missing one fails first; in an actor, the launcher's RelayedDevice); None:
    opened here by name. With a person in the loop (keyboard, gamepad, spacemouse) the env steps
    in real time (RealTimePacing: nobody can react to a lock-step mirror running 5x faster),
    and `screen` (robostack.env.teleop_relay.OperatorScreen), if given, shows every step."""
    if not intervention:
        return env
    from robostack.env.teleop import RealTimePacing, intervention_device, make_device, needs_pacing

    name = intervention_device(intervention)
    if device is None:
        device = make_device(name, task=env.unwrapped.task, protocol=protocol, seed=seed)
    operator = acting = InterventionWrapper(env, device, takeover_penalty=takeover_penalty)
    if needs_pacing(name):  # outside the operator: the device is read right after the wait
        acting = RealTimePacing(acting)
    if screen is not None:
        acting = OperatorShown(acting, operator, screen)
    return acting


def read_operator(device, env):
    """One reading of `device`; the autopilot first observes the env's true state (as a person
    would look at the scene). `env` is a RobotEnv or a wrapper of one."""
    if hasattr(device, "observe"):
        device.observe(env.unwrapped.fields())
    return device.read()


def operator_action(reading, env) -> np.ndarray:
    """A base-frame device reading as an action in the env's (the policy's) action space."""
    from robostack.env.actions import base_to_policy_action

    env = env.unwrapped
    return base_to_policy_action(reading, env.config, env.fields()["tcp_quaternion"],
                                 getattr(env, "action_frame", "base"))


class InterventionWrapper(gym.Wrapper):
    def __init__(self, env: gym.Env, device, to_action: Callable | None = None,
                 takeover_penalty: float = 0.0, end_on_labels: bool = True):
        super().__init__(env)
        self.device = device
        self.to_action = to_action or (lambda reading: operator_action(reading, self.env))
        self.takeover_penalty = float(takeover_penalty)
        self.end_on_labels = end_on_labels
        self.episode_index = -1
        self.last_reading = None  # the device's reading of the last step (what a view shows)
        self._reset_stats()

    def _reset_stats(self) -> None:
        self.steps = self.intervention_steps = self.takeovers = 0
        self._intervening = False

    def reset(self, **kwargs):
        from robostack.env.teleop import start_episode

        self._reset_stats()
        self.episode_index += 1
        self.last_reading = None
        result = self.env.reset(**kwargs)
        # After the reset: the autopilot draws this episode's takeover, a person's device
        # forgets the last episode's latched gripper and deadman.
        start_episode(self.device, self.episode_index)
        return result

    def step(self, policy_action):
        policy_action = np.asarray(policy_action, dtype=np.float32)
        reading = self.last_reading = read_operator(self.device, self.env)
        intervening = bool(reading.intervene)
        if intervening:
            action = np.asarray(self.to_action(reading), dtype=np.float32)
            if action.shape != policy_action.shape:
                raise ValueError(f"to_action gave shape {action.shape}, the env takes "
                                 f"{policy_action.shape}: convert device readings with "
                                 "robostack.env.actions.base_to_policy_action for this env")
        else:
            action = policy_action
        obs, reward, terminated, truncated, info = self.env.step(action)

        takeover = intervening and not self._intervening
        self._intervening = intervening
        self.steps += 1
        self.intervention_steps += int(intervening)
        self.takeovers += int(takeover)
        if takeover and self.takeover_penalty:
            reward = float(reward) - self.takeover_penalty
        label = "success" if reading.success else "failure" if reading.failure else None
        if label and self.end_on_labels:
            terminated, reward = True, 1.0 if label == "success" else 0.0
            info = {**info, "human_label": label, "success": label == "success"}
        info = {**info, "intervention": intervening, "takeover": takeover,
                "policy_action": policy_action, "executed_action": action,
                "teleop_events": reading.events()}
        if terminated or truncated:
            info["episode_interventions"] = self.episode_stats()
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        try:
            self.device.close()
        finally:
            super().close()

    def episode_stats(self) -> dict:
        """Intervention rate (share of steps) and mean takeover length (steps) of this episode."""
        return {"steps": self.steps, "intervention_steps": self.intervention_steps,
                "takeovers": self.takeovers,
                "rate": self.intervention_steps / self.steps if self.steps else 0.0,
                "mean_length": self.intervention_steps / self.takeovers if self.takeovers else 0.0}


class OperatorShown(gym.Wrapper):
    """Shows each step to the person at the controls (an OperatorScreen): the env's fields, the
    device's reading, the episode and its time. `say` puts a line on the same screen."""

    def __init__(self, env: gym.Env, operator: InterventionWrapper, screen):
        super().__init__(env)
        self.operator, self.screen = operator, screen
        self.steps = 0

    def say(self, line: str) -> None:
        self.screen.say(line)

    def reset(self, **kwargs):
        result = self.env.reset(**kwargs)
        self.steps = 0
        self.screen.new_episode(self.operator.episode_index)
        self.screen.step(self.env.unwrapped.fields(), None, self._progress())
        return result

    def step(self, action):
        result = self.env.step(action)
        self.steps += 1
        self.screen.step(self.env.unwrapped.fields(), self.operator.last_reading, self._progress())
        return result

    def _progress(self) -> str:
        config = self.env.unwrapped.config
        return (f"step {self.steps} / {config.max_episode_steps}   "
                f"{self.steps / config.policy_hz:.1f} / {config.max_episode_steps / config.policy_hz:.1f} s")

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.screen.close()
