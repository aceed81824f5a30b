"""Extra per-frame columns of the episode log (label.success, a classifier's probability, ...):
round trip, the errors for a missing / undeclared / misshapen value, append and refusal on reopen."""

import json
import math

import numpy as np
import pytest

from robostack.data.episode_log import LABEL_FEATURE, EpisodeLog, EpisodeLogError, EpisodeWriter, extra_keys, label_features
from robostack.data.episode_log.stats import STATS_PATH

STATE, ACTION = 3, 2
PROBABILITY = "next.classifier.probability"


def features(**extra) -> dict:
    return {"observation.state": {"dtype": "float32", "shape": [STATE], "names": None},
            "action": {"dtype": "float32", "shape": [ACTION], "names": None}, **extra}


def with_extras() -> dict:
    return features(**label_features(),
                    **{PROBABILITY: {"dtype": "float32", "shape": [1], "names": None},
                       "label.votes": {"dtype": "int64", "shape": [3], "names": ["a", "b", "c"]}})


def write_episode(writer, labels, probabilities, seed=0):
    rng = np.random.default_rng(seed)
    for t, (label, p) in enumerate(zip(labels, probabilities)):
        writer.add_frame({"state": rng.standard_normal(STATE).astype(np.float32)},
                         np.zeros(ACTION, np.float32),
                         extras={LABEL_FEATURE: label, PROBABILITY: p, "label.votes": [t, 1, 2]})
    return writer.end_episode({"state": np.zeros(STATE, np.float32)}, metadata={"label_source": "simulator"})


def test_label_features_declare_one_bool_column():
    assert LABEL_FEATURE == "label.success"
    assert label_features() == {"label.success": {"dtype": "bool", "shape": [1], "names": None}}
    assert extra_keys(with_extras()) == ["label.success", PROBABILITY, "label.votes"]


def test_bool_float_and_vector_extras_round_trip_with_nan_kept(tmp_path):
    labels = [False, False, True, np.bool_(True), 0]
    probabilities = [0.1, math.nan, 0.75, np.float64(1.0), 0.0]
    with EpisodeWriter(tmp_path, fps=10, features=with_extras()) as writer:
        assert write_episode(writer, labels, probabilities) == 0
    log = EpisodeLog(tmp_path)
    episode = log.episode(0)
    assert episode[LABEL_FEATURE].dtype == bool
    assert episode[LABEL_FEATURE].tolist() == [False, False, True, True, False]
    p = episode[PROBABILITY]
    assert p.dtype == np.float32 and math.isnan(p[1])
    np.testing.assert_allclose(p[[0, 2, 3, 4]], [0.1, 0.75, 1.0, 0.0], rtol=1e-6)
    assert episode["label.votes"].tolist() == [[t, 1, 2] for t in range(5)]
    assert log.episodes[0]["rl/label_source"] == "simulator"
    assert log.features[LABEL_FEATURE] == label_features()[LABEL_FEATURE]
    # The label gets statistics (2 of 5 positive); the float extra, which may hold NaN, none,
    # so stats.json stays valid JSON (no NaN in it).
    stats = log.stats
    assert stats[LABEL_FEATURE]["mean"].tolist() == [pytest.approx(0.4)]
    assert PROBABILITY not in stats
    json.loads((tmp_path / STATS_PATH).read_text(), parse_constant=lambda c: pytest.fail(f"{c} in stats.json"))


def test_a_missing_extra_is_named_with_the_fix(tmp_path):
    with EpisodeWriter(tmp_path, fps=10, features=with_extras()) as writer:
        with pytest.raises(ValueError, match=r"extras \['next.classifier.probability', 'label.votes'\] "
                                             r"missing.*add_frame\(\.\.\., extras="):
            writer.add_frame({"state": np.zeros(STATE)}, np.zeros(ACTION), extras={LABEL_FEATURE: True})
        with pytest.raises(ValueError, match=r"missing"):
            writer.add_frame({"state": np.zeros(STATE)}, np.zeros(ACTION))  # no extras at all
        # A refused frame is not half logged: the episode still has no frames.
        with pytest.raises(ValueError, match="without any add_frame"):
            writer.end_episode({"state": np.zeros(STATE)})


def test_an_undeclared_extra_is_named(tmp_path):
    with EpisodeWriter(tmp_path, fps=10, features=features(**label_features())) as writer:
        with pytest.raises(ValueError, match=r"extras \['label.sucess'\]: not columns of this log "
                                             r"\(its extras: \['label.success'\]\)"):
            writer.add_frame({"state": np.zeros(STATE)}, np.zeros(ACTION),
                             extras={LABEL_FEATURE: True, "label.sucess": True})
    with EpisodeWriter(tmp_path / "plain", fps=10, features=features()) as writer:
        with pytest.raises(ValueError, match=r"its extras: none"):
            writer.add_frame({"state": np.zeros(STATE)}, np.zeros(ACTION), extras={LABEL_FEATURE: True})


@pytest.mark.parametrize("dtype, value, why", [
    ("bool", 0.5, "0.5 is not a bool value"), ("bool", 2, "2 is not a bool value"),
    ("bool", [True, False], r"expected shape \[1\], got \(2,\)"), ("bool", "yes", "'yes' is not a bool"),
    ("float32", "0.5", "'0.5' is not a float32 value"), ("uint8", 300, "300 is not a uint8 value")])
def test_a_value_of_the_wrong_kind_or_shape_is_refused(tmp_path, dtype, value, why):
    extra = {"label.x": {"dtype": dtype, "shape": [1], "names": None}}
    with EpisodeWriter(tmp_path, fps=10, features=features(**extra)) as writer:
        with pytest.raises(ValueError, match=rf"extras\['label.x'\]: {why}"):
            writer.add_frame({"state": np.zeros(STATE)}, np.zeros(ACTION), extras={"label.x": value})


def test_an_extra_may_not_take_a_fixed_columns_name(tmp_path):
    for name in ("next.success", "policy_action", "timestamp.state", "frame_index", "task"):
        with pytest.raises(ValueError, match=f"feature '{name}': every log has a column of that name"):
            EpisodeWriter(tmp_path / name, fps=10,
                          features=features(**{name: {"dtype": "bool", "shape": [1], "names": None}}))


def test_reopening_with_the_same_extras_appends(tmp_path):
    with EpisodeWriter(tmp_path, fps=10, features=with_extras()) as writer:
        write_episode(writer, [True, False], [0.9, 0.1])
    with EpisodeWriter(tmp_path, fps=10, features=with_extras()) as writer:
        assert write_episode(writer, [False, False, True], [0.2, 0.3, 0.8], seed=1) == 1
    log = EpisodeLog(tmp_path)
    assert len(log) == 2
    assert log.episode(0)[LABEL_FEATURE].tolist() == [True, False]
    assert log.episode(1)[LABEL_FEATURE].tolist() == [False, False, True]
    assert log.stats[LABEL_FEATURE]["count"].tolist() == [5]
    assert log.stats[LABEL_FEATURE]["mean"].tolist() == [pytest.approx(0.4)]


def test_reopening_with_other_extras_is_refused(tmp_path):
    with EpisodeWriter(tmp_path, fps=10, features=features(**label_features())) as writer:
        writer.add_frame({"state": np.zeros(STATE)}, np.zeros(ACTION), extras={LABEL_FEATURE: True})
        writer.end_episode({"state": np.zeros(STATE)})
    for other in (features(), with_extras()):
        with pytest.raises(EpisodeLogError, match="write to a new folder"):
            EpisodeWriter(tmp_path, fps=10, features=other)
    assert len(EpisodeLog(tmp_path)) == 1
