"""Cached frozen features (robostack/rl/featurize.py): the policy's observation space, features
equal to the encoder's own, stored once per frame in float16 by the replay buffer, an agent
that acts on them and updates its head only, and a run's memory stated before it is spent."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from robostack.rl.buffers import ReplayBuffer, bytes_per_transition, fitting_capacity, observation_spec
from robostack.rl.featurize import CachedFeatures, FeatureObservations, feature_space
from robostack.rl.sac import SACConfig, build_agent, update

pytest.importorskip("efficientnet_lite_pytorch", reason="pip install 'robostack[vision]'")

CONFIG = SACConfig(encoder="efficientnet-lite0", batch_size=16, hidden_dims=(32, 32), latent_dim=16,
                   proprio_latent_dim=16)
PIXELS = gym.spaces.Dict({"images/front": gym.spaces.Box(0, 255, (128, 128, 3), np.uint8),
                          "state": gym.spaces.Box(-np.inf, np.inf, (14,), np.float32)})
ACTIONS = gym.spaces.Box(-1, 1, (4,), np.float32)


@pytest.fixture(scope="module")
def features():
    torch.set_num_threads(1)
    return CachedFeatures(CONFIG)


@pytest.fixture(scope="module")
def env():
    from robostack.env import make_env
    from tasks import make_task

    config = dataclasses.replace(make_task("pick_cube").config, cameras=("front", "wrist"),
                                 observed_state=("tcp_position", "tcp_quaternion", "tcp_velocity",
                                                 "gripper_width"))
    env = make_env("pick_cube", transport_kind="inprocess", config=config)
    yield env
    env.close()


def test_the_policy_sees_features_in_place_of_each_camera():
    space = feature_space(CONFIG, PIXELS)
    assert list(space.spaces) == ["features/front", "state"]
    assert space["features/front"].shape == (4, 4, 320) and space["features/front"].dtype == np.float16
    assert feature_space(dataclasses.replace(CONFIG, encoder_layer="stage4"), PIXELS)["features/front"].shape == (8, 8, 112)
    assert feature_space(SACConfig(), PIXELS) is PIXELS  # an end-to-end encoder sees pixels


def test_cached_features_are_the_encoders_own_and_the_env_keeps_its_pixels(features, env):
    observed = FeatureObservations(env, features)
    obs, _ = observed.reset(seed=3)
    assert set(obs) == {"state", "features/front", "features/wrist"}
    assert observed.observation_space.contains(obs)
    raw = observed.raw
    assert raw["images/front"].shape == (128, 128, 3)  # what the episode log records
    direct = features.encoder(torch.from_numpy(raw["images/front"]).permute(2, 0, 1))[0]
    torch.testing.assert_close(torch.from_numpy(obs["features/front"]).permute(2, 0, 1), direct,
                               atol=2e-2, rtol=0)
    # one episode at once (the demonstrations) equals frame by frame
    stacked = {"images/front": np.stack([raw["images/front"]] * 3), "state": np.zeros((3, 14))}
    batched = features.episode(stacked, chunk=2)["features/front"]
    np.testing.assert_allclose(batched.astype(np.float32), np.stack([obs["features/front"]] * 3).astype(np.float32),
                               atol=2e-2)
    assert not np.array_equal(obs["features/front"], obs["features/wrist"])


def test_features_are_stored_once_in_float16_and_an_agent_learns_on_them(features):
    space = feature_space(CONFIG, PIXELS)
    rng = np.random.default_rng(0)

    def observation():
        return {"features/front": rng.uniform(0, 3, (4, 4, 320)).astype(np.float16),
                "state": rng.standard_normal(14).astype(np.float32)}

    buffer = ReplayBuffer(64, space, 4, seed=0)
    obs = observation()
    for t in range(40):
        nxt = observation()
        buffer.add(obs, rng.uniform(-1, 1, 4), float(t % 2), nxt, False, t % 10 == 9)
        obs = observation() if t % 10 == 9 else nxt
    frames = buffer._frames["features/front"]
    assert frames.dtype == np.float16 and frames.shape == (64, 320, 4, 4)
    assert len(buffer) == 40  # one slot per frame: 40 transitions + 4 episode ends fit in 64
    batch = buffer.sample(16)
    assert batch["observations"]["features/front"].dtype == torch.float16
    assert batch["observations"]["features/front"].shape == (16, 320, 4, 4)

    agent = build_agent(CONFIG, space, ACTIONS)
    head_before = [p.detach().clone() for p in agent.encoder.parameters()]
    losses = [float(update(agent, buffer.sample(16))["critic_loss"]) for _ in range(3)]
    assert all(np.isfinite(losses))
    assert any(not torch.equal(a, b) for a, b in zip(head_before, agent.encoder.parameters()))
    action = agent.act(obs)
    assert action.shape == (4,) and np.all(np.abs(action) <= 1)
    with pytest.raises(ValueError, match="features/<camera>, not images"):
        build_agent(CONFIG, PIXELS, ACTIONS)  # pixels given to a cached-feature agent: named


def test_a_pixel_buffer_is_sized_from_a_stated_share_of_ram():
    per = bytes_per_transition(observation_spec(PIXELS), 4)
    assert per == 128 * 128 * 3 + 2 * 14 * 4 + 4 * 4 + 13  # frames once, the state twice
    said = []
    capacity = fitting_capacity(PIXELS, 4, 10**9, 0.01, say=said.append)
    import os

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert capacity == int(0.01 * ram // per)
    assert "lowered from 1,000,000,000" in said[0] and f"x {per:,} B" in said[0]
    assert fitting_capacity(PIXELS, 4, 100, 0.5, say=said.append) == 100


def test_a_frozen_encoder_run_trains_in_one_process_and_evaluates_with_its_features(tmp_path, capsys):
    """--single-process and `robostack eval` observe through the same features as the actor."""
    from robostack.commands.evaluate import evaluate_run
    from robostack.training.train import main as train_main

    run = tmp_path / "run"
    code = train_main(["--run-dir", str(run), "--task", "pick_cube", "--cameras", "front,wrist",
                       "--observed-state", "tcp_position,tcp_quaternion,tcp_velocity,gripper_width",
                       "--sac-encoder", "efficientnet-lite0", "--total-steps", "60", "--demos", "1",
                       "--learning-starts", "30", "--eval-every", "0", "--eval-episodes", "1",
                       "--sac-batch-size", "8", "--sac-hidden-dims", "16", "16"])
    assert code == 0
    assert "online replay buffer: " in capsys.readouterr().out  # its size, stated
    result = evaluate_run(run, episodes=1, say=lambda line: None)
    assert result["episodes"] == 1 and 0.0 <= result["success_rate"] <= 1.0
