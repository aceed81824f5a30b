"""`robostack view`'s plot: title, labelled axes with units, legends, policy vs executed action on
intervention steps (shaded). Checked through what plot_episode says it drew, and the PNG."""

import gymnasium as gym
import numpy as np
import pytest

from robostack.commands.view import INTERVENTION_SHADE, ViewConfig, episode_panels, view
from robostack.data.episode_log import EpisodeLog, EpisodeWriter, features_from_spaces

LENGTH = 10  # steps at 10 Hz: 1 s
TAKEOVER = range(3, 7)  # steps 3..6 are the person's
STATE_NAMES = ["tcp_position.0", "tcp_position.1", "tcp_position.2", "gripper_width"]


def write_log(root, *, state_names=STATE_NAMES, interventions=TAKEOVER, success=True):
    obs_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)})
    features = features_from_spaces(obs_space, gym.spaces.Box(-1, 1, (4,), np.float32),
                                    state_names=state_names)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (LENGTH, 4)).astype(np.float32)
    proposals = actions.copy()
    proposals[list(interventions)] = rng.uniform(-1, 1, (len(interventions), 4))
    with EpisodeWriter(root, fps=10, features=features, task="pick the cube") as writer:
        for t in range(LENGTH):
            state = np.array([0.4 + 0.01 * t, 0.0, 0.2 - 0.005 * t, 0.08], np.float32)
            last = t == LENGTH - 1
            writer.add_frame({"state": state}, actions[t], reward=float(last and success),
                             terminated=last and success, truncated=last and not success,
                             success=last and success, intervention=t in interventions,
                             policy_action=proposals[t])
        writer.end_episode({"state": state})
    return actions, proposals


def test_plot_has_title_units_legends_and_policy_vs_executed_on_interventions(tmp_path):
    import cv2

    write_log(tmp_path / "demo_log")
    written = view(str(tmp_path / "demo_log"), ViewConfig(out=str(tmp_path / "views")), say=lambda s: None)
    figure = written["figure"]
    assert figure["title"].startswith("demo_log  |  episode 0  |  task: pick the cube  |  success: yes")
    assert figure["xlabel"] == "time [s]"
    panels = {p["title"].split(":")[0]: p for p in figure["panels"]}
    assert list(panels) == ["tcp position (base frame)", "gripper width", "action", "reward"]
    assert panels["tcp position (base frame)"]["ylabel"] == "position [m]"
    assert panels["tcp position (base frame)"]["series"] == ["tcp x", "tcp y", "tcp z"]
    assert panels["gripper width"]["ylabel"] == "width [m]"
    action = panels["action"]
    assert action["ylabel"] == "action [normalised]" and action["ylim"][0] <= -1 and action["ylim"][1] >= 1
    assert action["series"] == [f"{n} executed" for n in ("x", "y", "z", "gripper")] + \
        [f"{n} policy" for n in ("x", "y", "z", "gripper")]
    assert action["legend"] == ["x", "y", "z", "gripper", "executed", "policy", "intervention", "success"]
    assert panels["reward"]["series"] == ["reward", "return (cumulative)"]
    assert all("intervention" in p["legend"] for p in figure["panels"])  # shaded in every panel
    assert figure["shaded"] == [pytest.approx((0.3, 0.7))] and figure["success_time"] == pytest.approx(0.9)

    image = cv2.imread(written["plot"])[..., ::-1]  # RGB
    assert image.shape[:2] == tuple(figure["size"]) and image.shape[0] >= 4 * 150
    shaded = np.all(image == INTERVENTION_SHADE, axis=2)
    columns = np.flatnonzero(shaded.sum(axis=0) > 100)  # the shading, not the legend swatch
    assert len(columns) and 0.25 < (columns[-1] - columns[0]) / image.shape[1] < 0.35  # 0.4 s of 1 s


def test_policy_series_hold_the_proposals_on_intervention_steps_only(tmp_path):
    actions, proposals = write_log(tmp_path)
    log = EpisodeLog(tmp_path)
    panels = episode_panels(log, log.episode(0))
    action = next(p for p in panels if p["title"].startswith("action"))
    by_label = {s["label"]: s for s in action["series"]}
    for i, name in enumerate(("x", "y", "z", "gripper")):
        np.testing.assert_array_equal(by_label[f"{name} executed"]["values"], actions[:, i])
        policy = by_label[f"{name} policy"]
        assert policy["dashed"] and not by_label[f"{name} executed"]["dashed"]
        np.testing.assert_array_equal(policy["values"][list(TAKEOVER)], proposals[list(TAKEOVER), i])
        outside = [t for t in range(LENGTH) if t not in TAKEOVER]
        assert np.isnan(policy["values"][outside]).all()
    tcp = next(p for p in panels if p["title"].startswith("tcp position"))
    np.testing.assert_allclose(tcp["series"][0]["values"], 0.4 + 0.01 * np.arange(LENGTH), atol=1e-6)


def test_without_interventions_or_state_names_the_plot_says_so(tmp_path):
    write_log(tmp_path / "log", state_names=None, interventions=(), success=False)
    written = view(str(tmp_path / "log"), ViewConfig(out=str(tmp_path / "views")), say=lambda s: None)
    figure = written["figure"]
    assert "success: no" in figure["title"] and figure["shaded"] == [] and figure["success_time"] is None
    state, action, _ = figure["panels"]
    assert state["title"] == "observation.state" and state["series"] == ["s0", "s1", "s2", "s3"]
    assert action["series"] == [f"{n} executed" for n in ("x", "y", "z", "gripper")]
    assert "policy" not in action["legend"] and "intervention" not in action["legend"]
    assert action["title"] == "action: executed (no intervention steps)"


def test_camera_videos_carry_time_reward_success_intervention_and_safety_events(tmp_path):
    import cv2

    H, W = 96, 128  # a 4:3 camera, enlarged 2x
    obs_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
                                 "images/front": gym.spaces.Box(0, 255, (H, W, 3), np.uint8)})
    features = features_from_spaces(obs_space, gym.spaces.Box(-1, 1, (4,), np.float32),
                                    state_names=STATE_NAMES)
    grey = {"state": np.zeros(4, np.float32), "images/front": np.full((H, W, 3), 90, np.uint8)}
    captured = 50.0 + 0.1 * np.arange(LENGTH) + 0.004  # the camera's own clock
    with EpisodeWriter(tmp_path / "log", fps=10, features=features, task="t",
                       timestamp_sources=("state", "images/front")) as writer:
        for t in range(LENGTH):
            last = t == LENGTH - 1
            writer.add_frame(grey, np.zeros(4), reward=float(last), terminated=last, success=last,
                             intervention=t in TAKEOVER, timestamps={"images/front": captured[t]},
                             events=[["armed", "tracking", "command valid for inf s"]] if t == 2 else None)
        writer.end_episode(grey)
    written = view(str(tmp_path / "log"), ViewConfig(out=str(tmp_path / "views")), say=lambda s: None)
    lines = [[text for text, _ in frame] for frame in written["overlays"]["observation.images.front"]]
    assert len(lines) == LENGTH
    assert lines[0][:2] == ["step 0  0.0 s  camera 0.000 s", "r +0.00  return +0.00"]
    assert lines[7][0] == "step 7  0.7 s  camera 0.700 s"
    assert lines[LENGTH - 1][1:3] == ["r +1.00  return +1.00", "SUCCESS"]
    assert [t for t in range(LENGTH) if "INTERVENTION" in lines[t]] == list(TAKEOVER)
    event = "supervisor armed -> tracking: command valid for inf s"
    assert [t for t in range(LENGTH) if event in lines[t]] == list(range(2, LENGTH))  # held 1 s

    video = cv2.VideoCapture(written["observation.images.front"])
    frames = []
    while (read := video.read())[0]:
        frames.append(read[1])
    assert len(frames) == LENGTH and frames[0].shape[:2] == (2 * H, 2 * W)
    yellow = [int(((f[..., 2] > 170) & (f[..., 1] > 170) & (f[..., 0] < 110)).sum()) for f in frames]
    assert yellow[0] == 0 and yellow[1] == 0 and min(yellow[2:]) > 50, yellow  # the event's text
    green = [int(((f[..., 1] > 160) & (f[..., 2] < 110) & (f[..., 0] < 110)).sum()) for f in frames]
    assert green[-1] > 30 and max(green[:-1]) == 0, green  # SUCCESS, on the last frame only
