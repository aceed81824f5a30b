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
                      takeover_penalty: float = 0.0, seed: int = 0) -> gym.Env:
    """What training episodes step: `env` itself, or with `intervention` (a teleop device name,
    robostack.env.teleop.DEVICES; "expert" is the autopilot's older name) the operator's
    InterventionWrapper around it. Evaluations step the bare `env`: no operator helps there.
    `protocol` (InterventionProtocol) and `seed` drive the autopilot; closing the result closes
    the device and `env`."""
    if not intervention:
        return env
    from robostack.env.teleop import intervention_device, make_device

    device = make_device(intervention_device(intervention), task=env.unwrapped.task,
                         protocol=protocol, seed=seed)
    return InterventionWrapper(env, device, takeover_penalty=takeover_penalty)


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
        self._reset_stats()

    def _reset_stats(self) -> None:
        self.steps = self.intervention_steps = self.takeovers = 0
        self._intervening = False

    def reset(self, **kwargs):
        self._reset_stats()
        self.episode_index += 1
        if hasattr(self.device, "reset"):  # the autopilot draws this episode's takeover
            self.device.reset(episode=self.episode_index)
        return self.env.reset(**kwargs)

    def step(self, policy_action):
        policy_action = np.asarray(policy_action, dtype=np.float32)
        reading = read_operator(self.device, self.env)
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
