"""Record a scripted-expert episode to an episode log, then replay and view it."""

import numpy as np
import pytest

from robostack.env import make_env
from robostack.data.episode_log import EpisodeWriter, features_from_spaces, state_names
from robostack.commands.replay import ReplayConfig, replay
from robostack.commands.view import ViewConfig, view

SEED = 3


def record(root, task="pick_cube", seed=SEED, perturb=0.0, logged_action_scale=1.0):
    env = make_env(task, transport_kind="inprocess")
    expert = env.task.expert(seed=0)
    features = features_from_spaces(env.observation_space, env.action_space,
                                    state_names=state_names(env.state_fields))
    writer = EpisodeWriter(root, fps=10, features=features, task=task)
    try:
        obs, _ = env.reset(seed=seed)
        expert.reset()
        for _ in range(env.config.max_episode_steps):
            action = expert(env.fields())
            next_obs, reward, terminated, truncated, info = env.step(action)
            if perturb:  # what a different plant would have measured
                next_obs = {"state": next_obs["state"].copy()}
                next_obs["state"][env.state_fields["tcp_position"]] += perturb
            logged = np.array(action, np.float32)
            logged[:3] *= logged_action_scale  # what an arm answering each action further would need
            writer.add_frame(obs, logged, reward, terminated, truncated, success=info["success"])
            obs = next_obs
            if terminated or truncated:
                break
        writer.end_episode(obs)
    finally:
        writer.close()
        env.close()
    return info["success"]


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("log")
    assert record(root)
    return root


def test_replay_of_a_mirror_episode_reproduces_it_within_a_millimetre(log_dir):
    result = replay(str(log_dir), ReplayConfig(seed=SEED, transport="inprocess"), say=lambda s: None)
    assert result["success"] and result["logged_success"]
    assert result["start_error"] < 0.002
    assert result["max_error"] < 0.001  # same seed, same actions, deterministic physics


def test_replay_reports_a_tracking_error_when_the_log_disagrees_with_the_mirror(tmp_path):
    record(tmp_path, perturb=0.02)
    result = replay(str(tmp_path), ReplayConfig(seed=SEED, transport="inprocess"), say=lambda s: None)
    assert result["mean_error"] == pytest.approx(0.02 * np.sqrt(3), abs=0.001)  # +2 cm on x, y, z


def test_following_the_recorded_targets_keeps_a_laggier_arm_from_drifting(log_dir):
    # The MuJoCo log replayed on PyBullet, whose arm answers each step a little differently:
    # each logged action, sent from where the arm is, adds its small difference to the last;
    # the recorded targets, sent from where the arm is, do not add up.
    same = replay(str(log_dir), ReplayConfig(seed=SEED, transport="inprocess", follow="targets"),
                  say=lambda s: None)
    assert same["max_error"] < 0.001 and same["follow"] == "targets"  # the recording's own arm
    actions = replay(str(log_dir), ReplayConfig(seed=SEED, transport="inprocess", backend="pybullet"),
                     say=lambda s: None)
    targets = replay(str(log_dir), ReplayConfig(seed=SEED, transport="inprocess", backend="pybullet",
                                                follow="targets"), say=lambda s: None)
    # measured: final 5.8 mm (actions) vs 2.2 mm (targets), mean 5.2 vs 2.3 mm
    assert targets["final_error"] < 0.5 * actions["final_error"], (targets, actions)
    assert targets["mean_error"] < 0.7 * actions["mean_error"], (targets, actions)
    assert targets["success"], targets
    with pytest.raises(ValueError, match="--follow must be one of actions, targets"):
        ReplayConfig(follow="poses")


def test_replay_moves_to_the_logged_start_through_env_steps(log_dir):
    # Another reset seed puts the arm elsewhere: replay must first step to the logged start.
    result = replay(str(log_dir), ReplayConfig(seed=SEED + 100, transport="inprocess"),
                    say=lambda s: None)
    assert result["start_error"] < 0.002


def test_view_writes_a_plot(log_dir, tmp_path):
    import cv2

    written = view(str(log_dir), ViewConfig(out=str(tmp_path)), say=lambda s: None)
    image = cv2.imread(written["plot"])
    assert image is not None and image.shape[0] > 400 and image.std() > 5  # drawn, not blank


def test_replay_of_a_missing_episode_says_how_many_there_are(log_dir):
    with pytest.raises(SystemExit, match="has 1 episodes"):
        replay(str(log_dir), ReplayConfig(episode=5, transport="inprocess"), say=lambda s: None)


def test_view_writes_a_video_with_overlays_for_camera_streams(tmp_path):
    import cv2
    import gymnasium as gym

    obs_space = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,), np.float32),
                                 "images/wrist": gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)})
    features = features_from_spaces(obs_space, gym.spaces.Box(-1, 1, (2,), np.float32))
    frame = lambda v: {"state": np.full(3, v, np.float32),  # noqa: E731
                       "images/wrist": np.full((32, 32, 3), 40 * v, np.uint8)}
    with EpisodeWriter(tmp_path / "log", fps=10, features=features, task="synthetic") as writer:
        for t in range(5):
            writer.add_frame(frame(t), np.zeros(2), reward=float(t == 4), terminated=t == 4,
                             success=t == 4, intervention=t in (1, 2))
        writer.end_episode(frame(5))
    written = view(str(tmp_path / "log"), ViewConfig(out=str(tmp_path / "views")), say=lambda s: None)
    video = cv2.VideoCapture(written["observation.images.wrist"])
    frames = []
    while True:
        ok, image = video.read()
        if not ok:
            break
        frames.append(image)
    assert len(frames) == 5 and frames[0].shape[:2] == (256, 256)  # enlarged 8x for the text
    red = lambda image: image[:3, :, 2].mean() - image[:3, :, 1].mean()  # noqa: E731 (BGR top rows)
    assert red(frames[1]) > 100 and red(frames[0]) < 30  # intervention steps get a red border
