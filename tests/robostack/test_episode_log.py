"""Episode log: round trip, LeRobot v3 layout, crash safety (real SIGKILL), append, errors, no torch."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robostack.data.episode_log import EpisodeLog, EpisodeLogError, EpisodeWriter, env_key, feature_key, features_from_spaces, logged_transitions

REPO = Path(__file__).resolve().parents[2]
H = W = 32
STATE, ACTION = 5, 4


def spaces():
    import gymnasium as gym

    obs = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (STATE,), np.float32),
                           "images/front": gym.spaces.Box(0, 255, (H, W, 3), np.uint8),
                           "images/wrist": gym.spaces.Box(0, 255, (H, W, 3), np.uint8)})
    return obs, gym.spaces.Box(-1, 1, (ACTION,), np.float32)


def features():
    obs, act = spaces()
    return features_from_spaces(obs, act, state_names=[f"s{i}" for i in range(STATE)],
                                action_names=["dx", "dy", "dz", "grip"])


def make_episode(seed: int, length: int, takeover: int | None = None, truncate=False) -> dict:
    """Synthetic episode: smooth images (mp4v is lossy, smooth content survives it well)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    obs = []
    for t in range(length + 1):
        base = (xx * 4 + yy * 2 + 8 * t + 40 * seed) % 200 + 20
        obs.append({"state": rng.standard_normal(STATE).astype(np.float32),
                    "images/front": np.stack([base, base // 2 + 30, 255 - base], -1).astype(np.uint8),
                    "images/wrist": np.full((H, W, 3), (10 * t + 40) % 220, np.uint8)})
    actions = rng.uniform(-1, 1, (length, ACTION)).astype(np.float32)
    policy = actions.copy()
    intervention = np.zeros(length, bool)
    if takeover is not None:
        intervention[takeover:takeover + 3] = True
        policy[intervention] = rng.uniform(-1, 1, (int(intervention.sum()), ACTION))
    done = np.zeros(length, bool)
    trunc = np.zeros(length, bool)
    (trunc if truncate else done)[-1] = True
    return {"obs": obs, "actions": actions, "policy": policy, "intervention": intervention,
            "rewards": rng.uniform(0, 1, length).astype(np.float32), "done": done, "trunc": trunc,
            "success": done.copy(), "t_state": 100.0 + np.arange(length) * 0.1}


def write_episode(writer: EpisodeWriter, ep: dict, task: str | None = None) -> int:
    for t in range(len(ep["actions"])):
        writer.add_frame(ep["obs"][t], ep["actions"][t], ep["rewards"][t], ep["done"][t],
                         ep["trunc"][t], success=ep["success"][t],
                         intervention=ep["intervention"][t], policy_action=ep["policy"][t],
                         timestamps={"state": ep["t_state"][t]})
    return writer.end_episode(ep["obs"][-1], task=task)


def test_round_trip_frames_and_rl_fields(tmp_path):
    eps = [make_episode(0, 7, takeover=2), make_episode(1, 5, truncate=True)]
    with EpisodeWriter(tmp_path, 10, features(), task="pick the cube") as writer:
        assert [write_episode(writer, ep) for ep in eps] == [0, 1]
    log = EpisodeLog(tmp_path)
    assert len(log) == 2 and log.tasks == ["pick the cube"]
    for i, ep in enumerate(eps):
        got = log.episode(i, video=True)
        n = len(ep["actions"])
        np.testing.assert_array_equal(got["observation.state"], np.stack([o["state"] for o in ep["obs"][:-1]]))
        np.testing.assert_array_equal(got["final/observation.state"], ep["obs"][-1]["state"])
        np.testing.assert_array_equal(got["action"], ep["actions"])
        np.testing.assert_array_equal(got["policy_action"], ep["policy"])
        np.testing.assert_array_equal(got["next.reward"], ep["rewards"])
        np.testing.assert_array_equal(got["next.done"], ep["done"])
        np.testing.assert_array_equal(got["next.truncated"], ep["trunc"])
        np.testing.assert_array_equal(got["next.success"], ep["success"])
        np.testing.assert_array_equal(got["intervention"], ep["intervention"])
        np.testing.assert_array_equal(got["timestamp.state"], ep["t_state"])
        assert np.isnan(got["timestamp.action"]).all()  # not given: NaN, never invented
        np.testing.assert_array_equal(got["frame_index"], np.arange(n))
        np.testing.assert_allclose(got["timestamp"], np.arange(n) / 10, atol=1e-6)
        assert (got["episode_index"] == i).all() and got["task"] == "pick the cube"
        for cam in ("front", "wrist"):
            key = f"observation.images.{cam}"
            frames = np.concatenate([got[key], got[f"final/{key}"][None]])
            truth = np.stack([o[f"images/{cam}"] for o in ep["obs"]])
            assert frames.shape == truth.shape and frames.dtype == np.uint8
            # mp4v is lossy (mean error ~5 on these patterns); what must hold exactly is that
            # every decoded frame is nearest to its own source frame (no offset, no reorder).
            err = np.abs(frames[:, None].astype(int) - truth[None]).mean(axis=(2, 3, 4))
            assert err.diagonal().max() < 8.0, cam
            np.testing.assert_array_equal(err.argmin(axis=1), np.arange(n + 1))
    np.testing.assert_array_equal(log.episode(1)["index"], np.arange(7, 12))
    meta = log.episodes[0]
    assert meta["rl/intervention_steps"] == 3 and meta["rl/success"] and meta["rl/terminated"]
    assert log.episodes[1]["rl/truncated"] and not log.episodes[1]["rl/terminated"]


def test_metadata_and_parquet_schema_follow_lerobot_v3(tmp_path):
    with EpisodeWriter(tmp_path, 10, features(), task="pick", robot_type="panda") as writer:
        write_episode(writer, make_episode(0, 4))
        write_episode(writer, make_episode(1, 3), task="place")
    info = json.loads((tmp_path / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["robot_type"] == "panda"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 7, 2)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["chunks_size"] == 1000 and "data_files_size_in_mb" in info
    ft = info["features"]
    for key, dtype in [("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64"), ("next.reward", "float32"),
                       ("next.done", "bool"), ("next.truncated", "bool"), ("next.success", "bool"),
                       ("intervention", "bool"), ("timestamp.state", "float64")]:
        assert ft[key] == {"dtype": dtype, "shape": [1], "names": None}, key
    assert ft["observation.state"] == {"dtype": "float32", "shape": [STATE],
                                       "names": [f"s{i}" for i in range(STATE)]}
    assert ft["action"]["names"] == ["dx", "dy", "dz", "grip"] and ft["policy_action"] == ft["action"]
    cam = ft["observation.images.front"]
    assert cam["dtype"] == "video" and cam["shape"] == [H, W, 3]
    assert cam["names"] == ["height", "width", "channels"] and cam["info"]["video.fps"] == 10
    assert not any("/" in k for k in ft)

    data = pq.read_table(tmp_path / "data/chunk-000/file-001.parquet")
    non_video = [k for k, f in ft.items() if f["dtype"] != "video"]
    assert sorted(data.column_names) == sorted(non_video)
    schema = data.schema
    for key, size in [("observation.state", STATE), ("action", ACTION), ("policy_action", ACTION)]:
        typ = schema.field(key).type  # what HF datasets' Sequence(length=n) maps to
        assert pa.types.is_fixed_size_list(typ) and typ.list_size == size, key
        assert typ.value_type == pa.float32(), key
    for key, f in ft.items():
        if f["dtype"] != "video" and f["shape"] == [1]:
            assert str(schema.field(key).type) == {"float32": "float", "float64": "double",
                                                   "int64": "int64", "bool": "bool"}[f["dtype"]]
    assert data.column("task_index").to_pylist() == [1, 1, 1]

    tasks = pq.read_table(tmp_path / "meta/tasks.parquet")
    assert tasks.column("task").to_pylist() == ["pick", "place"]
    assert tasks.column("task_index").to_pylist() == [0, 1]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]

    row = pq.read_table(tmp_path / "meta/episodes/chunk-000/file-001.parquet").to_pylist()[0]
    assert row["episode_index"] == 1 and row["tasks"] == ["place"] and row["length"] == 3
    assert (row["dataset_from_index"], row["dataset_to_index"]) == (4, 7)
    assert (row["data/chunk_index"], row["data/file_index"]) == (0, 1)
    for cam in ("front", "wrist"):
        key = f"videos/observation.images.{cam}"
        assert (row[f"{key}/chunk_index"], row[f"{key}/file_index"]) == (0, 1)
        assert (row[f"{key}/from_timestamp"], row[f"{key}/to_timestamp"]) == (0.0, 0.3)
        assert (tmp_path / f"videos/observation.images.{cam}/chunk-000/file-001.mp4").is_file()


CRASH_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_episode_log import EpisodeWriter, features, make_episode, write_episode
    writer = EpisodeWriter({root!r}, 10, features(), task="pick")
    for i in range(2):
        write_episode(writer, make_episode(i, 6))
    writer.flush()
    ep = make_episode(2, 50)
    for t in range(20):  # the third episode is in flight: frames queued and encoded, not ended
        writer.add_frame(ep["obs"][t], ep["actions"][t], 0.0, False, False)
    writer.flush()  # returns once the writer thread has encoded them (no guessing with a sleep)
    print("in flight", flush=True)
    time.sleep(60)
""")


def test_sigkill_mid_episode_keeps_earlier_episodes_and_reopen_appends(tmp_path):
    root = tmp_path / "log"
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD.format(tests=str(Path(__file__).parent), root=str(root))],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    try:
        assert child.stdout.readline().strip() == "in flight"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    leftovers = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if ".tmp" in p.name)
    # The in-flight episode (index 2) left its videos under their temporary names, nothing else.
    assert leftovers == [f"videos/observation.images.{cam}/chunk-000/file-002.tmp.mp4"
                         for cam in ("front", "wrist")], leftovers

    log = EpisodeLog(root)
    assert len(log) == 2 and log.info["total_frames"] == 12
    for i in range(2):
        ep = log.episode(i, video=True)
        np.testing.assert_array_equal(ep["action"], make_episode(i, 6)["actions"])
        assert ep["observation.images.front"].shape == (6, H, W, 3)

    with EpisodeWriter(root, 10, features(), task="pick") as writer:  # the lock died with the child
        assert not [p for p in root.rglob("*") if ".tmp" in p.name]
        assert write_episode(writer, make_episode(3, 4)) == 2
    log = EpisodeLog(root)
    assert len(log) == 3 and log.info["total_frames"] == 16
    np.testing.assert_array_equal(log.episode(2)["index"], np.arange(12, 16))
    np.testing.assert_array_equal(log.episode(2)["action"], make_episode(3, 4)["actions"])
    # The statistics cover exactly the committed episodes, never the one the crash lost.
    actions = np.concatenate([make_episode(i, n)["actions"] for i, n in ((0, 6), (1, 6), (3, 4))])
    assert_pooled(log.stats["action"], actions)


COMMIT_CRASH_CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import robostack.data.episode_log.writer as episode_log
    from test_episode_log import EpisodeWriter, features, make_episode, write_episode
    writer = EpisodeWriter({root!r}, 10, features(), task="pick")
    write_episode(writer, make_episode(0, 5))
    writer.flush()
    # Die inside the commit: every file of episode 1 renamed into place, info.json not yet.
    episode_log.write_info = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    write_episode(writer, make_episode(1, 5), task="new task")
    writer.flush()
""")


def test_sigkill_inside_the_commit_leaves_the_previous_state(tmp_path):
    root = tmp_path / "log"
    child = subprocess.run(
        [sys.executable, "-c", COMMIT_CRASH_CHILD.format(tests=str(Path(__file__).parent), root=str(root))],
        capture_output=True, text=True, cwd=REPO, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert (root / "data/chunk-000/file-001.parquet").exists()  # renamed, but not committed
    log = EpisodeLog(root)
    assert len(log) == 1 and len(log.episodes) == 1 and log.tasks == ["pick"]
    assert log.episode(0, video=True)["action"].shape == (5, ACTION)
    with EpisodeWriter(root, 10, features(), task="pick") as writer:
        assert write_episode(writer, make_episode(2, 3)) == 1
    log = EpisodeLog(root)
    assert len(log) == 2 and log.tasks == ["pick"]
    np.testing.assert_array_equal(log.episode(1)["action"], make_episode(2, 3)["actions"])


def test_reopen_appends_and_rejects_other_features(tmp_path):
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        write_episode(writer, make_episode(0, 3))
    with EpisodeWriter(tmp_path, 10, features(), task="b") as writer:
        write_episode(writer, make_episode(1, 2))
        with pytest.raises(EpisodeLogError, match="another EpisodeWriter"):
            EpisodeWriter(tmp_path, 10, features())
    log = EpisodeLog(tmp_path)
    assert len(log) == 2 and log.tasks == ["a", "b"] and log.episode(1)["task"] == "b"
    with pytest.raises(EpisodeLogError, match="fps 10"):
        EpisodeWriter(tmp_path, 20, features())


def test_discard_and_unfinished_episode_are_not_written(tmp_path):
    ep = make_episode(0, 3)
    with EpisodeWriter(tmp_path, 10, features()) as writer:
        writer.add_frame(ep["obs"][0], ep["actions"][0])
        writer.discard_episode()
        write_episode(writer, ep)
        writer.add_frame(ep["obs"][0], ep["actions"][0])  # never ended: dropped on close
    assert len(EpisodeLog(tmp_path)) == 1
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_corrupt_or_missing_files_give_clear_errors(tmp_path):
    with pytest.raises(EpisodeLogError, match="not an episode log"):
        EpisodeLog(tmp_path)
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        write_episode(writer, make_episode(0, 3))
        write_episode(writer, make_episode(1, 3))
    data = tmp_path / "data/chunk-000/file-001.parquet"
    data.write_bytes(data.read_bytes()[:100])
    log = EpisodeLog(tmp_path)
    log.episode(0)  # the others stay readable
    with pytest.raises(EpisodeLogError, match=r"episode 1: .*file-001\.parquet: damaged.*Fix"):
        log.episode(1)
    (tmp_path / "videos/observation.images.wrist/chunk-000/file-000.mp4").unlink()
    with pytest.raises(EpisodeLogError, match=r"file-000\.mp4: missing.*Fix"):
        log.episode(0, video=True)


def _flip_a_byte_that_changes_an_action(path: Path, action: np.ndarray) -> None:
    """Flip the first byte of `path` after which the parquet file still reads, with another
    action: the silent change a reader without checksums takes for the demonstration."""
    original = path.read_bytes()
    for at in range(4, len(original)):
        damaged = bytearray(original)
        damaged[at] ^= 0x04
        path.write_bytes(bytes(damaged))
        try:
            table = pq.read_table(path)
            got = np.asarray(table.column("action").to_pylist(), np.float32)
        except (pa.ArrowException, OSError, ValueError, KeyError):
            continue
        if got.shape == action.shape and not np.array_equal(got, action):
            return
    pytest.fail(f"no byte of {path} changes an action silently")


def test_a_flipped_byte_names_the_damaged_episode_and_the_rest_still_load(tmp_path):
    episodes = [make_episode(i, 4) for i in range(3)]
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        for ep in episodes:
            write_episode(writer, ep)
    info = json.loads((tmp_path / "meta/info.json").read_text())
    recorded = info["robostack"]["sha256"]
    assert {"data/chunk-000/file-001.parquet", "meta/episodes/chunk-000/file-001.parquet",
            "videos/observation.images.front/chunk-000/file-001.mp4"} <= set(recorded)
    data = tmp_path / "data/chunk-000/file-001.parquet"
    _flip_a_byte_that_changes_an_action(data, episodes[1]["actions"])
    log = EpisodeLog(tmp_path)
    with pytest.raises(EpisodeLogError, match=r"episode 1: .*file-001\.parquet: damaged.*Fix"):
        log.episode(1)
    np.testing.assert_array_equal(log.episode(2)["action"], episodes[2]["actions"])
    assert list(log.damaged()) == [1]
    said = []
    pieces = logged_transitions(log, images=False, say=said.append)
    assert len(pieces) == 2
    np.testing.assert_array_equal(pieces[1]["actions"], episodes[2]["actions"])
    assert len(said) == 1 and "skipping episode 1" in said[0] and "file-001.parquet" in said[0]
    # A damaged metadata file or video: that episode only, named.
    meta = tmp_path / "meta/episodes/chunk-000/file-002.parquet"
    meta.write_bytes(meta.read_bytes()[:-20] + b"x" * 20)
    video = tmp_path / "videos/observation.images.wrist/chunk-000/file-000.mp4"
    video.write_bytes(video.read_bytes()[:-1] + b"\0")
    log = EpisodeLog(tmp_path)
    assert set(log.damaged()) == {0, 1, 2} and set(log.damaged(video=False)) == {1, 2}
    assert "file-002.parquet" in log.damaged()[2] and "file-000.mp4" in log.damaged()[0]
    np.testing.assert_array_equal(log.episode(0)["action"], episodes[0]["actions"])
    with pytest.raises(EpisodeLogError, match=r"episode 0: .*file-000\.mp4: damaged"):
        log.episode(0, video=True)
    # The writer appends after them, and the new episode verifies.
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        write_episode(writer, make_episode(3, 4))
    assert set(EpisodeLog(tmp_path).damaged()) == {0, 1, 2}


def test_replay_and_view_name_a_damaged_episode_and_the_intact_ones(tmp_path):
    episodes = [make_episode(i, 4) for i in range(3)]
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        for ep in episodes:
            write_episode(writer, ep)
    _flip_a_byte_that_changes_an_action(tmp_path / "data/chunk-000/file-001.parquet", episodes[1]["actions"])
    for command in ("replay", "view"):
        done = subprocess.run([sys.executable, "-m", "robostack.cli", command, str(tmp_path),
                               "--episode", "1"], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL="egl"))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert f"robostack {command}: " in done.stderr and "episode 1: " in done.stderr
        assert "file-001.parquet: damaged" in done.stderr
        assert "intact episodes: 0, 2; damaged: 1" in done.stderr, done.stderr


def test_reader_needs_no_torch(tmp_path):
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        write_episode(writer, make_episode(0, 3))
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from robostack.data.episode_log import EpisodeLog
        log = EpisodeLog({str(tmp_path)!r})
        ep = log.episode(0, video=True)
        pieces = log.transitions(0)
        print(len(log), ep["action"].shape, pieces[0]["observations"]["images/front"].shape)
        print(log.stats["action"]["count"][0], log.episode_stats(0)["observation.images.front"]["mean"].shape)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == f"1 (3, {ACTION}) (4, {H}, {W}, 3)"
    assert out.stdout.split("\n")[1] == "3 (3, 1, 1)"


def test_logged_transitions_load_into_a_demonstration_buffer(tmp_path):
    # Imported here, not at the top: it brings torch, and the crash children import this file.
    from robostack.rl.buffers import load_demonstrations

    eps = [make_episode(0, 6, takeover=1), make_episode(1, 4, truncate=True)]
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        for ep in eps:
            write_episode(writer, ep)
    buf = load_demonstrations(logged_transitions(tmp_path, images=False), seed=0)
    assert len(buf) == 10
    batch = buf.sample(64)
    states = {tuple(np.round(o["state"], 5)): (e, t) for e, ep in enumerate(eps)
              for t, o in enumerate(ep["obs"][:-1])}
    for k in range(64):
        e, t = states[tuple(np.round(batch["observations"]["state"][k].numpy(), 5))]
        ep = eps[e]
        np.testing.assert_allclose(batch["next_observations"]["state"][k].numpy(), ep["obs"][t + 1]["state"])
        np.testing.assert_allclose(batch["actions"][k].numpy(), ep["actions"][t])
        assert batch["rewards"][k] == pytest.approx(ep["rewards"][t])
        assert batch["terminations"][k] == ep["done"][t] and batch["truncations"][k] == ep["trunc"][t]

    pieces = EpisodeLog(tmp_path).transitions(0, select="intervention")
    assert len(pieces) == 1 and len(pieces[0]["actions"]) == 3
    np.testing.assert_array_equal(pieces[0]["actions"], eps[0]["actions"][1:4])
    np.testing.assert_array_equal(pieces[0]["observations"]["state"],
                                  np.stack([o["state"] for o in eps[0]["obs"][1:5]]))
    pixels = load_demonstrations(logged_transitions(tmp_path, select="intervention"))
    assert len(pixels) == 3 and pixels.image_keys == ["images/front", "images/wrist"]
    with pytest.raises(ValueError, match="no episodes to load"):
        logged_transitions(tmp_path, episodes=[1], select="intervention")  # episode 1 had no takeover


def test_key_mapping_round_trips():
    for key in ("state", "images/front", "observation.state"):
        assert feature_key(env_key(feature_key(key))) == feature_key(key)
    assert env_key(feature_key("images/wrist")) == "images/wrist"


# --------------------------------------------------------------------------- statistics (LeRobot)
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def numpy_stats(values) -> dict:
    """What LeRobot's compute_episode_stats gives for one episode, straight from numpy."""
    x = np.asarray(values, np.float64).reshape(len(values), -1)
    return {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0),
            "count": np.array([len(x)]),
            **{key: np.quantile(x, q, axis=0) for key, q in QUANTILES.items()}}


def pixel_stats(frames) -> dict:
    """Per-channel statistics of (N, H, W, 3) uint8 frames, in [0, 1], shaped (3, 1, 1)."""
    x = np.asarray(frames, np.float64).reshape(-1, 3) / 255.0
    out = {key: value.reshape(3, 1, 1) for key, value in numpy_stats(x).items() if key != "count"}
    return {**out, "count": np.array([len(frames)])}


def assert_stats(got: dict, want: dict, atol=1e-9) -> None:
    assert sorted(got) == sorted(want), sorted(got)
    for key, value in want.items():
        assert np.shape(got[key]) == np.shape(value), key
        np.testing.assert_allclose(got[key], value, atol=atol, err_msg=key)


def assert_pooled(got: dict, values, quantiles_from=None) -> None:
    """Pooled statistics of the concatenated `values`; quantiles as LeRobot pools them (the
    count-weighted mean of the per-episode quantiles of `quantiles_from`, a list of episodes)."""
    want = numpy_stats(values)
    for key in ("min", "max", "mean", "std", "count"):
        np.testing.assert_allclose(got[key], want[key], atol=1e-9, err_msg=key)
    if quantiles_from is not None:
        counts = np.array([len(v) for v in quantiles_from], float)
        for key in QUANTILES:
            per_episode = np.stack([numpy_stats(v)[key] for v in quantiles_from])
            np.testing.assert_allclose(got[key], counts @ per_episode / counts.sum(), atol=1e-9)


def strict_json(path: Path):
    def no_nan(name):
        raise AssertionError(f"{path} holds {name}: not valid JSON")
    return json.loads(path.read_text(), parse_constant=no_nan)


def test_stats_of_every_feature_match_numpy_per_episode_and_pooled(tmp_path):
    eps = [make_episode(0, 7, takeover=2), make_episode(1, 5, truncate=True)]
    with EpisodeWriter(tmp_path, 10.0, features(), task="a") as writer:  # a float policy rate
        for ep in eps:
            write_episode(writer, ep)
    info = json.loads((tmp_path / "meta/info.json").read_text())
    assert info["fps"] == 10 and isinstance(info["fps"], int)
    assert info["features"]["observation.images.front"]["info"]["video.fps"] == 10
    assert info["splits"] == {"train": "0:2"}

    log = EpisodeLog(tmp_path)
    stats = strict_json(tmp_path / "meta/stats.json")
    assert "timestamp.state" not in stats  # clock readings (NaN where not given): no stats
    assert sorted(stats) == sorted(k for k in info["features"] if not k.startswith("timestamp."))
    for key, ft in stats.items():  # the shapes LeRobot's aggregate_stats asserts
        assert sorted(ft) == sorted(["min", "max", "mean", "std", "count", *QUANTILES]), key
        assert np.shape(ft["count"]) == (1,), key
    per_episode = {  # each feature's values, episode by episode, from the test's own data
        "observation.state": [np.stack([o["state"] for o in ep["obs"][:-1]]) for ep in eps],
        "action": [ep["actions"] for ep in eps], "policy_action": [ep["policy"] for ep in eps],
        "next.reward": [ep["rewards"] for ep in eps], "next.done": [ep["done"] for ep in eps],
        "intervention": [ep["intervention"] for ep in eps],
        "index": [np.arange(7), np.arange(7, 12)], "frame_index": [np.arange(7), np.arange(5)],
        "timestamp": [np.arange(7, dtype=np.float32) / np.float32(10),
                      np.arange(5, dtype=np.float32) / np.float32(10)]}
    for key, parts in per_episode.items():
        for i, values in enumerate(parts):
            assert_stats(log.episode_stats(i)[key], numpy_stats(values), atol=1e-6)
        assert_pooled(log.stats[key], np.concatenate(parts), quantiles_from=parts)
        assert np.shape(log.stats[key]["mean"]) == (np.shape(parts[0])[1:] or (1,))
    for cam in ("front", "wrist"):  # every frame is sampled in episodes of up to 100 frames
        key = f"observation.images.{cam}"
        frames = [np.stack([o[f"images/{cam}"] for o in ep["obs"][:-1]]) for ep in eps]
        for i in range(2):
            assert_stats(log.episode_stats(i)[key], pixel_stats(frames[i]))
        pooled = log.stats[key]
        np.testing.assert_allclose(pooled["mean"], pixel_stats(np.concatenate(frames))["mean"], atol=1e-9)
        np.testing.assert_allclose(pooled["std"], pixel_stats(np.concatenate(frames))["std"], atol=1e-9)
        assert pooled["count"].tolist() == [12] and pooled["min"].shape == (3, 1, 1)
    # Every episode file has the same columns and types, so that LeRobot's loader (HF datasets'
    # concatenate_datasets over meta/episodes/*/*.parquet) can stack them.
    schemas = [pq.read_schema(p) for p in sorted((tmp_path / "meta/episodes").glob("*/*.parquet"))]
    assert len(schemas) == 2 and schemas[0].equals(schemas[1])
    assert str(schemas[0].field("stats/observation.state/mean").type) == "list<element: double>"
    assert str(schemas[0].field("stats/action/count").type) == "list<element: int64>"


def test_stats_stay_right_across_sessions_appending(tmp_path):
    eps = [make_episode(0, 6), make_episode(1, 4), make_episode(2, 9, takeover=3)]
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        write_episode(writer, eps[0]), write_episode(writer, eps[1])
    first = EpisodeLog(tmp_path).stats
    with EpisodeWriter(tmp_path, 10, features(), task="b") as writer:
        write_episode(writer, eps[2])
    log = EpisodeLog(tmp_path)
    assert log.info["splits"] == {"train": "0:3"} and first["action"]["count"].tolist() == [10]
    actions = [ep["actions"] for ep in eps]
    assert_pooled(log.stats["action"], np.concatenate(actions), quantiles_from=actions)
    assert log.stats["task_index"]["max"].tolist() == [1.0]
    states = [np.stack([o["state"] for o in ep["obs"][:-1]]) for ep in eps]
    assert_pooled(log.stats["observation.state"], np.concatenate(states), quantiles_from=states)
    frames = np.concatenate([np.stack([o["images/front"] for o in ep["obs"][:-1]]) for ep in eps])
    np.testing.assert_allclose(log.stats["observation.images.front"]["mean"],
                               pixel_stats(frames)["mean"], atol=1e-9)


def test_image_stats_sample_frames_and_stride_large_ones_as_lerobot_does(tmp_path):
    import gymnasium as gym

    space = {"state": gym.spaces.Box(-1, 1, (2,), np.float32),
             "images/big": gym.spaces.Box(0, 255, (320, 320, 3), np.uint8)}
    feats = features_from_spaces(space, gym.spaces.Box(-1, 1, (2,), np.float32))
    length = 150
    # LeRobot: 100 frames of 150 (round(linspace(0, 149, 100))), each strided by int(320 / 150).
    sampled = np.round(np.linspace(0, length - 1, 100)).astype(int)
    value = lambda t: t % 97 if t in sampled else 250  # frames outside the sample stand out
    with EpisodeWriter(tmp_path, 10, feats, task="a") as writer:
        for t in range(length + 1):
            frame = np.zeros((320, 320, 3), np.uint8)
            frame[::2, ::2] = value(t)  # what a stride of 2 keeps
            frame[1::2, :] = 255  # what it skips
            frame[:, :, 2] = 7
            obs = {"state": np.zeros(2, np.float32), "images/big": frame}
            if t < length:
                writer.add_frame(obs, np.zeros(2))
            else:
                writer.end_episode(obs)
    got = EpisodeLog(tmp_path).episode_stats(0)["observation.images.big"]
    kept = np.array([value(t) for t in sampled], float)
    assert got["count"].tolist() == [100]
    np.testing.assert_allclose(got["mean"].ravel(), [kept.mean() / 255, kept.mean() / 255, 7 / 255])
    np.testing.assert_allclose(got["std"].ravel()[:2], kept.std() / 255)
    np.testing.assert_allclose(got["q50"].ravel()[:2], np.quantile(np.repeat(kept, 160 * 160), 0.5) / 255)
    assert got["max"].ravel().tolist() == [96 / 255] * 2 + [7 / 255]
    assert got["min"].ravel().tolist() == [0.0, 0.0, 7 / 255]


WRITE_STATS_CRASH_CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import robostack.data.episode_log.writer as episode_log
    from test_episode_log import EpisodeWriter, features, make_episode, write_episode
    writer = EpisodeWriter({root!r}, 10, features(), task="pick")
    write_episode(writer, make_episode(0, 5))
    writer.flush()
    # Die after episode 1's statistics are in stats.json, before the commit (info.json) counts it.
    episode_log.write_info = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
    write_episode(writer, make_episode(1, 4))
    writer.flush()
""")


def test_stats_written_ahead_of_a_crashed_commit_are_pooled_again(tmp_path):
    root = tmp_path / "log"
    child = subprocess.run(
        [sys.executable, "-c", WRITE_STATS_CRASH_CHILD.format(tests=str(Path(__file__).parent), root=str(root))],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert child.returncode == -signal.SIGKILL, child.stderr
    ahead = json.loads((root / "meta/stats.json").read_text())
    assert ahead["action"]["count"] == [9]  # episodes 0 and 1, of which only 0 is committed
    said = []
    log = EpisodeLog(root, say=said.append)
    # The reader does not hand out the file: it is not the one the commit recorded.
    assert len(log) == 1 and log.stats["action"]["count"].tolist() == [5]
    assert len(said) == 1 and "stats.json: damaged (not the file the last commit recorded" in said[0]
    action = make_episode(0, 5)["actions"]
    assert_pooled(log.stats["action"], action, quantiles_from=[action])
    EpisodeWriter(root, 10, features(), task="pick").close()  # reopening alone repairs it
    assert json.loads((root / "meta/stats.json").read_text())["action"]["count"] == [5]
    info = json.loads((root / "meta/info.json").read_text())
    assert info["robostack"]["sha256"]["meta/stats.json"] == file_sha256(root / "meta/stats.json")


def test_a_log_from_before_stats_gets_them_when_reopened(tmp_path):
    eps = [make_episode(0, 6), make_episode(1, 5)]
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        for ep in eps:
            write_episode(writer, ep)
    # What the writer left before statistics were kept: no stats.json, no stats/* columns,
    # a float fps and no split (and no checksums, digests or events, which came later still).
    (tmp_path / "meta/stats.json").unlink()
    for path in (tmp_path / "meta/episodes").glob("*/*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop([c for c in table.column_names if c.startswith("stats/")]), path)
    info = json.loads((tmp_path / "meta/info.json").read_text())
    info["robostack"] = {"format_version": 1, "files_per_episode": 1}
    (tmp_path / "meta/info.json").write_text(json.dumps({**info, "fps": 10.0, "splits": {}}))
    assert EpisodeLog(tmp_path).stats is None and EpisodeLog(tmp_path).episode_stats(0) == {}

    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        write_episode(writer, make_episode(2, 3))
    eps.append(make_episode(2, 3))
    log = EpisodeLog(tmp_path)
    assert log.info["fps"] == 10 and isinstance(log.info["fps"], int)
    assert log.info["splits"] == {"train": "0:3"}
    states = [np.stack([o["state"] for o in ep["obs"][:-1]]) for ep in eps]
    assert_stats(log.episode_stats(0)["observation.state"], numpy_stats(states[0]), atol=1e-6)
    assert_pooled(log.stats["observation.state"], np.concatenate(states), quantiles_from=states)
    # Old episodes' camera statistics come from the decoded video (mp4v is lossy).
    frames = np.concatenate([np.stack([o["images/front"] for o in ep["obs"][:-1]]) for ep in eps])
    np.testing.assert_allclose(log.stats["observation.images.front"]["mean"],
                               pixel_stats(frames)["mean"], atol=8 / 255)
    assert log.stats["observation.images.front"]["count"].tolist() == [14]


def test_fps_must_be_a_whole_number(tmp_path):
    with pytest.raises(ValueError, match="integer frame rate"):
        EpisodeWriter(tmp_path, 7.5, features())


# --- safety events (the supervisor's transitions) ------------------------------------------------
HOSTILE = "\x1b[2J\x1b[31mfault\nrm -rf /\x00\ud800" + "x" * 100_000  # escapes, NUL, a lone surrogate


def write_with_events(writer: EpisodeWriter, ep: dict, events: dict[int, list]) -> int:
    """`ep` with `events[t]` (a list) given to frame t's add_frame."""
    for t in range(len(ep["actions"])):
        writer.add_frame(ep["obs"][t], ep["actions"][t], ep["rewards"][t], ep["done"][t],
                         ep["trunc"][t], success=ep["success"][t], events=events.get(t))
    return writer.end_episode(ep["obs"][-1])


def test_safety_events_are_logged_at_their_frames_and_read_back(tmp_path):
    from robostack.data.episode_log.layout import MAX_EVENTS_PER_FRAME

    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        write_with_events(writer, make_episode(0, 4), {})
        write_with_events(writer, make_episode(1, 6), {
            0: [["disarmed", "armed", "reset: at rest"], ["armed", "tracking", "command valid"]],
            3: [{"from_state": "tracking", "to_state": "armed", "reason": "joint limit hold",
                 "time": 0.31}, {"kind": "torque_ramp", "reason": "ramping down"}],
            5: [["tracking", "fault", HOSTILE]] + [["fault", "fault", "again"]] * 40})
    log = EpisodeLog(tmp_path)
    assert log.events(0) == [] and log.episode(0)["events"] == []
    events = log.events(1)
    assert str(log.episode(1)["events"]) == str(events)  # (NaN times: == would not hold)
    assert [(e["frame_index"], e["kind"], e["from_state"], e["to_state"]) for e in events[:4]] == [
        (0, "supervisor", "disarmed", "armed"), (0, "supervisor", "armed", "tracking"),
        (3, "supervisor", "tracking", "armed"), (3, "torque_ramp", "", "")]
    assert [e["reason"] for e in events[:4]] == ["reset: at rest", "command valid",
                                                 "joint limit hold", "ramping down"]
    assert events[2]["time"] == pytest.approx(0.31) and np.isnan(events[0]["time"])
    # The hostile reason: one bounded printable line, its escapes visible, the length it had said.
    hostile = events[4]["reason"]
    assert hostile.isprintable() and hostile.startswith("\\x1b[2J\\x1b[31mfault\\nrm -rf /\\x00\\ud800")
    assert len(hostile) < 600 and "more characters)" in hostile
    # A flood is bounded: the first MAX_EVENTS_PER_FRAME, then one event saying how many went.
    at_5 = [e for e in events if e["frame_index"] == 5]
    assert len(at_5) == MAX_EVENTS_PER_FRAME + 1 and at_5[-1]["kind"] == "dropped"
    assert at_5[-1]["reason"].startswith(f"{41 - MAX_EVENTS_PER_FRAME} more events")
    # The file, as any parquet reader sees it: global frame indices beside the episode's.
    table = pq.read_table(tmp_path / "meta/events/chunk-000/file-001.parquet")
    assert table.column("index").to_pylist()[:4] == [4, 4, 7, 7]
    assert set(table.column("episode_index").to_pylist()) == {1}
    info = json.loads((tmp_path / "meta/info.json").read_text())
    assert {"meta/events/chunk-000/file-000.parquet",
            "meta/events/chunk-000/file-001.parquet"} <= set(info["robostack"]["sha256"])


def test_malformed_events_are_refused_naming_the_event(tmp_path):
    ep = make_episode(0, 2)
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        for bad, message in ((["armed", "tracking"], r"expected \[from_state, to_state, reason\]"),
                             ([["armed", 3, "why"]], "to_state must be a string, got int"),
                             ([{"from_state": "a", "colour": "red"}], r"unknown keys \['colour'\]"),
                             ([{"reason": "r", "time": "soon"}], "time must be a number"),
                             ("armed -> tracking", "expected a list of events")):
            with pytest.raises(TypeError, match=message):
                writer.add_frame(ep["obs"][0], ep["actions"][0], events=bad)
        write_with_events(writer, ep, {1: [["armed", "tracking", "fine"]]})  # the log goes on
    assert [e["frame_index"] for e in EpisodeLog(tmp_path).events(0)] == [1]


def test_a_flipped_byte_in_an_events_file_names_it_and_the_rest_still_load(tmp_path):
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        for i in range(3):
            write_with_events(writer, make_episode(i, 4), {0: [["disarmed", "armed", f"reset {i}"]]})
    path = tmp_path / "meta/events/chunk-000/file-001.parquet"
    data = bytearray(path.read_bytes())
    at = data.index(b"reset 1")  # the reason itself: still a readable file, another reason
    data[at + 6] ^= 0x01
    path.write_bytes(bytes(data))
    assert pq.read_table(path).column("reason").to_pylist() == ["reset 0"]  # silently different
    log = EpisodeLog(tmp_path)
    with pytest.raises(EpisodeLogError, match=r"episode 1: .*meta/events/chunk-000/file-001\.parquet: damaged"):
        log.events(1)
    with pytest.raises(EpisodeLogError, match=r"episode 1: .*file-001\.parquet: damaged"):
        log.episode(1)
    assert list(log.damaged(video=False)) == [1]
    assert log.events(2)[0]["reason"] == "reset 2"
    path.unlink()
    assert "file-001.parquet: missing" in EpisodeLog(tmp_path).damaged(video=False)[1]


def test_a_log_from_before_events_reads_with_none_and_logs_them_from_then_on(tmp_path):
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        write_episode(writer, make_episode(0, 3))
        write_episode(writer, make_episode(1, 3))
    # What the writer left before events were logged: no meta/events, no events_path, no
    # checksums of them (nor the info and task digests, which came with them).
    for path in (tmp_path / "meta/events").glob("*/*.parquet"):
        path.unlink()
    info = json.loads((tmp_path / "meta/info.json").read_text())
    for key in ("events_path", "info_sha256", "tasks_sha256"):
        del info["robostack"][key]
    info["robostack"]["sha256"] = {k: v for k, v in info["robostack"]["sha256"].items()
                                   if not k.startswith("meta/events/")}
    (tmp_path / "meta/info.json").write_text(json.dumps(info))
    log = EpisodeLog(tmp_path)
    assert log.events(0) == log.events(1) == [] and log.damaged() == {}
    assert log.episode(1)["events"] == []
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        write_with_events(writer, make_episode(2, 3), {2: [["tracking", "armed", "hold"]]})
    log = EpisodeLog(tmp_path)
    assert log.events(1) == [] and [e["reason"] for e in log.events(2)] == ["hold"]
    assert log.info["robostack"]["events_path"].startswith("meta/events/")


# --- the log's own files: info.json, tasks.parquet, stats.json; logs from before checksums --------
def file_sha256(path):
    from robostack.files import file_sha256 as sha

    return sha(path)


def test_a_healthy_log_reads_without_a_warning(tmp_path):
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        write_episode(writer, make_episode(0, 3))
        write_episode(writer, make_episode(1, 3), task="b")
    said = []
    log = EpisodeLog(tmp_path, say=said.append)
    assert log.tasks == ["a", "b"] and log.stats["action"]["count"].tolist() == [6]
    assert log.damaged() == {} and said == []


def test_a_changed_info_json_is_refused_naming_it(tmp_path):
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        write_episode(writer, make_episode(0, 3))
    path = tmp_path / "meta/info.json"
    text = path.read_text()
    assert '"fps": 10,' in text
    path.write_text(text.replace('"fps": 10,', '"fps": 11,'))  # one byte: still valid JSON
    with pytest.raises(EpisodeLogError, match=r"info\.json: its content is not what the writer wrote.*Fix"):
        EpisodeLog(tmp_path)
    # Edited on purpose: without the digest it reads (and a writer records a new one).
    info = json.loads(path.read_text())
    del info["robostack"]["info_sha256"]
    path.write_text(json.dumps({**info, "fps": 10}))
    assert EpisodeLog(tmp_path).fps == 10
    EpisodeWriter(tmp_path, 10, features(), task="a").close()
    assert "info_sha256" in json.loads(path.read_text())["robostack"]


def test_a_damaged_task_list_is_named_and_the_tasks_come_from_the_episodes(tmp_path):
    with EpisodeWriter(tmp_path, 10, features(), task="pick") as writer:
        write_episode(writer, make_episode(0, 3))
        write_episode(writer, make_episode(1, 3), task="place")
    path = tmp_path / "meta/tasks.parquet"
    data = bytearray(path.read_bytes())
    at = data.index(b"place")
    data[at] ^= 0x20  # "Place": still a readable file, another task
    path.write_bytes(bytes(data))
    assert pq.read_table(path).column("task").to_pylist() == ["pick", "Place"]
    said = []
    log = EpisodeLog(tmp_path, say=said.append)
    assert log.tasks == [] and [log.episode(i)["task"] for i in range(2)] == ["pick", "place"]
    assert len(said) == 1 and "tasks.parquet: damaged" in said[0] and "Fix" in said[0]
    EpisodeLog(tmp_path, say=said.append).tasks  # noqa: B018 (once per process, not per reader)
    assert len(said) == 1
    # A writer rebuilds it from the episodes' rows and appends as before.
    with EpisodeWriter(tmp_path, 10, features(), task="place") as writer:
        write_episode(writer, make_episode(2, 3))
    assert pq.read_table(path).column("task").to_pylist() == ["pick", "place"]
    log = EpisodeLog(tmp_path)
    assert log.tasks == ["pick", "place"] and log.episode(2)["task_index"][0] == 1


def test_a_changed_stats_json_is_not_handed_out(tmp_path):
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        write_episode(writer, make_episode(0, 5))
        write_episode(writer, make_episode(1, 4))
    path = tmp_path / "meta/stats.json"
    good = EpisodeLog(tmp_path).stats
    stats = json.loads(path.read_text())
    stats["action"]["mean"][0] += 0.25  # valid JSON, the right frame count: only the checksum tells
    path.write_text(json.dumps(stats))
    said = []
    got = EpisodeLog(tmp_path, say=said.append).stats
    np.testing.assert_allclose(got["action"]["mean"], good["action"]["mean"])
    assert len(said) == 1 and "stats.json: damaged" in said[0] and "pooled" in said[0]
    EpisodeWriter(tmp_path, 10, features(), task="a").close()  # the count was right: still rewritten
    np.testing.assert_allclose(json.loads(path.read_text())["action"]["mean"], good["action"]["mean"])


def test_a_log_from_before_checksums_reads_with_one_warning_naming_its_episodes(tmp_path):
    eps = [make_episode(i, 3) for i in range(3)]
    with EpisodeWriter(tmp_path, 10, features(), task="a") as writer:
        for ep in eps:
            write_episode(writer, ep)
    info = json.loads((tmp_path / "meta/info.json").read_text())
    info["robostack"] = {"format_version": 1, "files_per_episode": 1}  # as it was then
    (tmp_path / "meta/info.json").write_text(json.dumps(info))
    said = []
    log = EpisodeLog(tmp_path, say=said.append)
    np.testing.assert_array_equal(log.episode(1)["action"], eps[1]["actions"])
    logged_transitions(log, images=False, say=said.append)
    EpisodeLog(tmp_path, say=said.append).episode(0)
    assert len(said) == 1, said
    assert "episodes 0-2 have no recorded checksums" in said[0] and "read unverified" in said[0]


def test_each_camera_has_its_own_frame_timestamps_as_passed(tmp_path):
    # Two cameras on their own clocks (a real front camera at 30 fps read at 10 Hz, a wrist one
    # captured with jitter): each frame's capture time is logged under its camera, exactly.
    sources = ("state", "images/front", "images/wrist")
    ep = make_episode(0, 6)
    rng = np.random.default_rng(1)
    times = {"images/front": 100.0 + np.arange(6) * 0.1 - 0.033,
             "images/wrist": 100.0 + np.arange(6) * 0.1 - rng.uniform(0.0, 0.02, 6)}
    with EpisodeWriter(tmp_path, 10, features(), timestamp_sources=sources) as writer:
        for t in range(6):
            writer.add_frame(ep["obs"][t], ep["actions"][t], timestamps={
                "state": ep["t_state"][t], **{s: times[s][t] for s in times}})
        writer.end_episode(ep["obs"][-1])
    log = EpisodeLog(tmp_path)
    assert {"timestamp.images.front", "timestamp.images.wrist"} <= set(log.features)
    assert not any("/" in key for key in log.features)  # LeRobot's rule for feature names
    got = log.episode(0, video=True)
    for source, column in (("images/front", "timestamp.images.front"),
                           ("images/wrist", "timestamp.images.wrist")):
        np.testing.assert_array_equal(got[column], times[source])
        assert np.all(np.diff(got[column]) > 0), column  # monotonic, frame after frame
        assert len(got[column]) == len(got[f"observation.{source.replace('/', '.')}"])
    np.testing.assert_array_equal(got["timestamp.state"], ep["t_state"])


def test_a_timestamp_for_a_source_the_log_does_not_have_is_refused(tmp_path):
    ep = make_episode(0, 2)
    with EpisodeWriter(tmp_path, 10, features(), timestamp_sources=("state", "images/front")) as writer:
        with pytest.raises(ValueError, match=r"'images/frnt'.*timestamp_sources are \['state', 'images/front'\]"):
            writer.add_frame(ep["obs"][0], ep["actions"][0], timestamps={"images/frnt": 1.0})


# --------------------------------------------------------------------------- handing frames over
def logged_frames(root: Path, cam: str) -> tuple[np.ndarray, dict]:
    """Episode 0's decoded frames of `cam` and the statistics the writer computed from the
    frames it encoded (exact: from each frame's histogram, not from the lossy video)."""
    log = EpisodeLog(root)
    key = f"observation.images.{cam}"
    return log.episode(0, video=True)[key], log.episode_stats(0)[key]


def test_a_taken_frame_is_read_only_and_a_view_is_copied_so_the_log_keeps_what_was_handed(tmp_path):
    ep = make_episode(0, 6)
    handed = {"front": [], "wrist": []}
    with EpisodeWriter(tmp_path, 10, features()) as writer:
        for t in range(6):
            obs = {key: value.copy() for key, value in ep["obs"][t].items()}  # fresh, as an env's
            big = np.zeros((2 * H, W, 3), np.uint8)
            big[:H] = obs["images/wrist"]
            obs["images/wrist"] = big[:H]  # a view into memory the caller keeps writable
            for cam in handed:
                handed[cam].append(obs[f"images/{cam}"].copy())
            writer.add_frame(obs, ep["actions"][t], take=True)
            assert not obs["images/front"].flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                obs["images/front"][:] = 0  # would blank the logged frame: refused
            big[:] = 255  # the view was copied: the logged wrist frame does not change
        writer.end_episode(ep["obs"][-1])
        assert (writer.frames.taken, writer.frames.copied) == (6, 6)
    for cam, frames in handed.items():
        decoded, stats = logged_frames(tmp_path, cam)
        assert_stats(stats, pixel_stats(np.stack(frames)))  # exactly the handed pixels
        err = np.abs(decoded[:, None].astype(int) - np.stack(frames)[None]).mean(axis=(2, 3, 4))
        np.testing.assert_array_equal(err.argmin(axis=1), np.arange(6))
        assert err.diagonal().max() < 8.0, cam  # mp4v's loss, not a 255 or 0 frame


def test_taken_and_copied_frames_read_back_the_same_even_when_the_caller_reuses_its_buffer(tmp_path):
    ep = make_episode(3, 8)
    for mode in ("copy", "take"):
        reused = {key: np.empty_like(value) for key, value in ep["obs"][0].items()}
        with EpisodeWriter(tmp_path / mode, 10, features()) as writer:
            for t in range(8):
                if mode == "copy":  # one buffer per camera for every step: legal when copying
                    for key, value in ep["obs"][t].items():
                        reused[key][...] = value
                    obs = reused
                else:
                    obs = {key: value.copy() for key, value in ep["obs"][t].items()}
                writer.add_frame(obs, ep["actions"][t], take=mode == "take")
            writer.end_episode(ep["obs"][-1])
    for cam in ("front", "wrist"):
        truth = np.stack([o[f"images/{cam}"] for o in ep["obs"][:-1]])
        (copied, copy_stats), (taken, take_stats) = (logged_frames(tmp_path / m, cam) for m in ("copy", "take"))
        assert_stats(copy_stats, pixel_stats(truth)), assert_stats(take_stats, pixel_stats(truth))
        np.testing.assert_array_equal(copied, taken)  # same pixels in, same encoder: same video
        assert np.abs(taken.astype(int) - truth).mean(axis=(1, 2, 3)).max() < 8.0, cam


def test_taking_frames_loses_none_when_the_writer_thread_is_slow(tmp_path, monkeypatch):
    n = 40
    frames = [np.full((H, W, 3), 5 * t + 20, np.uint8) for t in range(n)]  # each its own grey
    append = EpisodeWriter._append

    def slow_append(self, episode, item):  # an encoder 20x slower than the loop hands frames
        import time
        time.sleep(0.01)
        append(self, episode, item)

    monkeypatch.setattr(EpisodeWriter, "_append", slow_append)
    with EpisodeWriter(tmp_path, 10, features(), queue_size=4) as writer:
        for t in range(n):
            writer.add_frame({"state": np.full(STATE, t, np.float32), "images/front": frames[t],
                              "images/wrist": frames[n - 1 - t]}, np.zeros(ACTION), take=True)
        writer.end_episode({"state": np.zeros(STATE, np.float32), "images/front": frames[0],
                            "images/wrist": frames[0]})
        assert writer.stall_seconds > 0.1  # add_frame waited on the full queue: back-pressure
        assert writer.frames.taken == 2 * n
    log = EpisodeLog(tmp_path)
    got = log.episode(0, video=True)
    assert log.info["total_frames"] == n
    np.testing.assert_array_equal(got["observation.state"][:, 0], np.arange(n))
    for cam, order in (("front", np.arange(n)), ("wrist", np.arange(n)[::-1])):
        greys = got[f"observation.images.{cam}"].reshape(n, -1).mean(axis=1)
        # mp4v's colour conversion shifts a grey by a few levels: what must hold is that each
        # frame is one step of 5 levels from the one before (none lost, none repeated or reordered)
        steps = np.diff(greys) * (1 if cam == "front" else -1)
        assert len(greys) == n and steps.min() > 3 and steps.max() < 7, np.round(greys)
        assert_stats(log.episode_stats(0)[f"observation.images.{cam}"], pixel_stats(np.stack(frames)[order]))
