"""The learned reward wrapper (robostack/env/learned_reward.py) on the real pick_cube mirror:
success after k consecutive positive frames, the task's sanity check gates it, the simulator's
own success no longer ends an episode (the time limit still does), and a person's label wins."""

from __future__ import annotations

import numpy as np
import pytest

from hardware.teleop.base import TeleopReading
from robostack.env import make_env
from robostack.env.learned_reward import ClassifierReward, episode_classifier_stats
from robostack.env.wrappers import InterventionWrapper
from tasks import TaskConfig


@pytest.fixture
def env():
    env = make_env("pick_cube", transport_kind="inprocess", config=TaskConfig(max_episode_steps=50))
    yield env
    env.close()


def scripted(probabilities):
    """A classifier stand-in answering `probabilities` in turn (then 0), recording what it saw."""
    seen = []

    def probability(obs):
        seen.append(obs)
        return probabilities[len(seen) - 1] if len(seen) <= len(probabilities) else 0.0
    probability.seen = seen
    return probability


def run(env, steps=60, action=None):
    """Step until the episode ends; (rewards, infos, terminated, truncated) of the last step."""
    rewards, infos = [], []
    hold = np.zeros(env.action_space.shape, np.float32) if action is None else action
    for _ in range(steps):
        _, reward, terminated, truncated, info = env.step(hold)
        rewards.append(reward), infos.append(info)
        if terminated or truncated:
            return rewards, infos, terminated, truncated
    raise AssertionError("the episode did not end")


@pytest.mark.parametrize("k, ends_at", [(1, 1), (2, 4), (3, 8)])
def test_success_needs_k_consecutive_positive_frames(env, k, ends_at):
    probabilities = [0.9, 0.2, 0.9, 0.9, 0.1, 0.9, 0.95, 0.9, 0.9]
    wrapped = ClassifierReward(env, scripted(probabilities), threshold=0.5, consecutive=k)
    wrapped.reset(seed=0)
    rewards, infos, terminated, truncated = run(wrapped)
    assert len(rewards) == ends_at and terminated and not truncated
    assert rewards == [0.0] * (ends_at - 1) + [1.0]
    assert [i["classifier_probability"] for i in infos] == pytest.approx(probabilities[:ends_at])
    assert infos[-1]["success"] and not infos[-1]["task_success"]  # the arm never moved: a false success
    assert episode_classifier_stats(infos[-1])["false_success"]
    assert episode_classifier_stats(infos[-1])["classifier_fp"] == sum(p >= 0.5 for p in probabilities[:ends_at])


def test_the_tasks_sanity_check_gates_the_classifier(env):
    env.config.max_episode_steps = 5
    plausible_calls = []
    wrapped = ClassifierReward(env, scripted([1.0] * 10), threshold=0.5,
                               plausible=lambda fields: plausible_calls.append(fields) or False)
    wrapped.reset(seed=0)
    rewards, infos, terminated, truncated = run(wrapped)
    assert truncated and not terminated and sum(rewards) == 0 and len(rewards) == 5
    assert all(i["classifier_positive"] and not i["classifier_plausible"] for i in infos)
    assert "gripper_width" in plausible_calls[0]  # proprioception reaches the check
    # pick_cube's own check: the arm at its start pose, gripper open, is no plausible success.
    assert not env.task.plausible_success(env.fields())


def test_the_simulators_success_no_longer_ends_the_episode_the_time_limit_does(env):
    wrapped = ClassifierReward(env, scripted([]), threshold=0.5)  # never positive
    wrapped.reset(seed=3)
    expert = env.task.expert(seed=0)
    infos = []
    for _ in range(60):
        _, reward, terminated, truncated, info = wrapped.step(expert(env.fields()))
        infos.append(info)
        assert reward == 0.0
        if terminated or truncated:
            break
    assert truncated and not terminated and len(infos) == env.config.max_episode_steps
    assert any(i["task_success"] for i in infos), "the expert should have lifted the cube"
    stats = episode_classifier_stats(infos[-1])
    assert stats["classifier_fn"] == sum(i["task_success"] for i in infos) and stats["classifier_fp"] == 0
    assert not stats["false_success"]


class Operator:
    def __init__(self, readings):
        self.readings = list(readings)

    def read(self):
        return self.readings.pop(0) if self.readings else TeleopReading()

    def close(self):
        pass


@pytest.mark.parametrize("label, probabilities, reward", [
    ("failure", [0.1, 0.9], 0.0),  # the classifier says success on step 2: the person says no
    ("success", [0.1, 0.1], 1.0),  # the classifier sees nothing: the person says success
])
def test_a_persons_label_wins_over_the_classifier(env, label, probabilities, reward):
    readings = [TeleopReading(), TeleopReading(**{label: True})]
    wrapped = InterventionWrapper(ClassifierReward(env, scripted(probabilities), threshold=0.5),
                                  Operator(readings))
    wrapped.reset(seed=0)
    rewards, infos, terminated, _ = run(wrapped)
    assert len(rewards) == 2 and terminated and rewards[-1] == reward
    assert infos[-1]["human_label"] == label and infos[-1]["success"] == (label == "success")


def test_the_classifier_sees_the_pixels_beneath_cached_features():
    pytest.importorskip("efficientnet_lite_pytorch", reason="pip install 'robostack[vision]'")
    from robostack.rl.featurize import policy_env
    from robostack.rl.sac import SACConfig

    env = make_env("pick_cube", transport_kind="inprocess", config=TaskConfig(cameras=("front",)))
    try:
        probability = scripted([0.0])
        wrapped = ClassifierReward(policy_env(env, SACConfig(encoder="efficientnet-lite0")), probability, 0.5)
        wrapped.reset(seed=0)
        obs, *_ = wrapped.step(np.zeros(env.action_space.shape, np.float32))
        seen = probability.seen[0]
        assert "images/front" not in obs and obs["features/front"].shape == (4, 4, 320)
        assert seen["images/front"].shape == (128, 128, 3) and seen["features/front"] is obs["features/front"]
    finally:
        env.close()


def test_k_below_one_is_refused(env):
    with pytest.raises(ValueError, match="consecutive must be >= 1"):
        ClassifierReward(env, scripted([]), 0.5, consecutive=0)
