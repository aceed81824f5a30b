"""`robostack view`'s plot: title, labelled axes with units, legends, policy vs executed action on
intervention steps (shaded). Checked through what plot_episode says it drew, and the PNG."""

import gymnasium as gym
import numpy as np
import pytest

from robostack.commands.replay import INTERVENTION_SHADE, ViewConfig, episode_panels, view
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
