"""Replay buffer: pixel frame sharing, wrap-around, symmetric sampling, save/load."""

import numpy as np
import pytest
import torch

from robostack.rl.buffers import (BufferFileError, ReplayBuffer, load_demonstrations,
                                  sample_mixed)

torch.set_num_threads(1)

H = W = 4
CAMS = ("images/front", "images/wrist")
PIXEL_SPEC = {"state": ((3,), np.float32), **{c: ((H, W, 3), np.uint8) for c in CAMS}}
FINAL = 255  # channel-2 marker on frames that are only ever an episode's final next_obs


def frame(episode, step, cam, final=False):
    """A frame whose pixels encode (episode, step, camera): channel 0/1/2."""
    f = np.empty((H, W, 3), np.uint8)
    f[..., 0], f[..., 1] = episode % 251, step
    f[..., 2] = FINAL if final else cam
    return f


def obs_at(episode, step, final=False):
    o = {"state": np.array([episode, step, 0.0], np.float32)}
    o.update({c: frame(episode, step, i, final) for i, c in enumerate(CAMS)})
    return o


def episode_transitions(episode, length, truncate):
    """(obs, action, reward, next_obs, term, trunc) for one episode; last next_obs is FINAL."""
    out = []
    for t in range(length):
        last = t == length - 1
        out.append((obs_at(episode, t), np.array([episode, t], np.float32), float(t),
                    obs_at(episode, t + 1, final=last),
                    last and not truncate, last and truncate))
    return out


def stack(transitions):
    obs, act, rew, nxt, term, trunc = zip(*transitions)
    cat = lambda ds: {k: np.stack([d[k] for d in ds]) for k in ds[0]}  # noqa: E731
    return cat(obs), np.stack(act), np.array(rew), cat(nxt), np.array(term), np.array(trunc)


def check_pixel_batch(batch):
    """Every sampled pair is consecutive within one episode; images agree with the state."""
    s, ns = batch["observations"]["state"].numpy(), batch["next_observations"]["state"].numpy()
    ep, step = s[:, 0].astype(int), s[:, 1].astype(int)
    done = (batch["terminations"] + batch["truncations"]).numpy() > 0
    assert (ns[:, 0] == ep).all() and (ns[:, 1] == step + 1).all()
    assert (batch["actions"].numpy() == s[:, :2]).all()
    assert (batch["rewards"].numpy() == step).all()
    for i, cam in enumerate(CAMS):
        img, nimg = batch["observations"][cam], batch["next_observations"][cam]
        assert img.dtype == torch.uint8 and img.shape[1:] == (3, H, W)
        img, nimg = img.numpy(), nimg.numpy()
        assert (img[:, 0] == (ep % 251)[:, None, None]).all()
        assert (img[:, 1] == step[:, None, None]).all()
        assert (img[:, 2] == i).all()
        assert (nimg[:, 0] == (ep % 251)[:, None, None]).all()
        assert (nimg[:, 1] == (step + 1)[:, None, None]).all()
        # Terminal next_obs is the stored final frame, never the next episode's first frame.
        assert (nimg[:, 2] == np.where(done, FINAL, i)[:, None, None]).all()


def fill_random_episodes(buf, rng, n_episodes, batched_every=3):
    added = []
    for e in range(n_episodes):
        trans = episode_transitions(e, int(rng.integers(1, 9)), truncate=bool(e % 2))
        if e % batched_every == 0:
            buf.add_batch(*stack(trans))
        else:
            for tr in trans:
                buf.add(*tr)
        added += [(e, t) for t in range(len(trans))]
    return added


def sampled_keys(buf, n, seed=0):
    s = buf.sample(n, np.random.default_rng(seed))["observations"]["state"].numpy()
    return {(int(a), int(b)) for a, b in s[:, :2]}


@pytest.mark.parametrize("capacity", [2, 3, 7, 37])
def test_pixel_pairs_consecutive_across_episodes_and_wraparound(capacity):
    rng = np.random.default_rng(capacity)
    buf = ReplayBuffer(capacity, PIXEL_SPEC, 2)
    added = fill_random_episodes(buf, rng, n_episodes=40)
    assert 0 < len(buf) <= capacity - 1
    for seed in range(5):
        check_pixel_batch(buf.sample(64, np.random.default_rng(seed)))
    # The sampleable transitions are exactly the newest len(buf) ones (no stale survivors).
    assert sampled_keys(buf, 200 * capacity) == set(added[-len(buf):])


def test_interleaved_actor_streams_never_share_wrong_frames():
    buf = ReplayBuffer(50, PIXEL_SPEC, 2)
    a, b = episode_transitions(1, 6, False), episode_transitions(2, 6, True)
    mixed = [tr for pair in zip(a, b) for tr in pair]
    buf.add_batch(*stack(mixed[:5]))
    for tr in mixed[5:]:
        buf.add(*tr)
    assert len(buf) == 12
    check_pixel_batch(buf.sample(500, np.random.default_rng(0)))


def test_pixel_storage_shares_frames_within_an_episode():
    buf = ReplayBuffer(100, PIXEL_SPEC, 2)
    for e in range(3):
        buf.add_batch(*stack(episode_transitions(e, 10, False)))
    # 30 transitions + 3 final frames; frames stored once (uint8, CHW, one array per camera).
    assert len(buf) == 30 and buf._written == 33
    assert all(f.dtype == np.uint8 and f.shape == (100, 3, H, W) for f in buf._frames.values())


def test_termination_and_truncation_kept_apart():
    buf = ReplayBuffer(100, PIXEL_SPEC, 2)
    buf.add_batch(*stack(episode_transitions(0, 3, truncate=False)))
    buf.add_batch(*stack(episode_transitions(1, 4, truncate=True)))
    b = buf.sample(400, np.random.default_rng(1))
    s = b["observations"]["state"].numpy()
    term, trunc = b["terminations"].numpy(), b["truncations"].numpy()
    assert b["terminations"].dtype == torch.float32
    assert (term == ((s[:, 0] == 0) & (s[:, 1] == 2))).all()
    assert (trunc == ((s[:, 0] == 1) & (s[:, 1] == 3))).all()
    assert term.sum() > 0 and trunc.sum() > 0


def state_buffer(capacity, marker, n, extra=True):
    buf = ReplayBuffer(capacity, {"state": ((5,), np.float32)}, 2,
                       extra_fields=("marker", "grasp_penalties") if extra else ())
    rng = np.random.default_rng(int(marker))
    ext = {"marker": np.full(n, marker), "grasp_penalties": -np.ones(n)} if extra else {}
    buf.add_batch({"state": rng.normal(size=(n, 5))}, rng.normal(size=(n, 2)), np.arange(n),
                  {"state": rng.normal(size=(n, 5))}, np.zeros(n), np.zeros(n), **ext)
    return buf


@pytest.mark.parametrize("batch_size,fraction", [(256, 0.5), (255, 0.5), (64, 0.25), (10, 1.0)])
def test_symmetric_sampling_exact_proportions(batch_size, fraction):
    online, demos = state_buffer(1000, 0.0, 700), state_buffer(100, 1.0, 30)
    b = sample_mixed(online, demos, batch_size, fraction, np.random.default_rng(0))
    n_demo = int(round(batch_size * fraction))
    assert b["marker"].shape == (batch_size,) and b["marker"].dtype == torch.float32
    assert int(b["marker"].sum()) == n_demo
    assert (b["marker"][batch_size - n_demo:] == 1).all()  # online rows first, then demos
    assert (b["grasp_penalties"] == -1).all()
    assert b["observations"]["state"].shape == (batch_size, 5)


def test_mixed_sampling_falls_back_to_the_non_empty_buffer():
    full, empty = state_buffer(100, 1.0, 30), ReplayBuffer(
        10, {"state": ((5,), np.float32)}, 2, extra_fields=("marker", "grasp_penalties"))
    assert int(sample_mixed(empty, full, 32)["marker"].sum()) == 32
    assert int(sample_mixed(full, empty, 32)["marker"].sum()) == 32
    with pytest.raises(ValueError, match="empty"):
        sample_mixed(empty, empty, 32)
    with pytest.raises(ValueError, match="differ"):
        sample_mixed(full, state_buffer(10, 0.0, 5, extra=False), 32)


def test_state_ring_keeps_newest_transitions():
    buf = ReplayBuffer(10, {"state": ((1,), np.float32)}, 1)
    for i in range(25):
        buf.add({"state": [i]}, [i], i, {"state": [i + 1]}, False, i % 7 == 6)
    assert len(buf) == 10
    b = buf.sample(500, np.random.default_rng(0))
    s = b["observations"]["state"][:, 0].numpy()
    assert set(s.astype(int)) == set(range(15, 25))
    assert (b["next_observations"]["state"][:, 0].numpy() == s + 1).all()
    assert (b["truncations"].numpy() == (s % 7 == 6)).all()


def test_add_rejects_bad_input():
    buf = ReplayBuffer(10, PIXEL_SPEC, 2)
    o = obs_at(0, 0)
    with pytest.raises(ValueError, match="uint8"):
        buf.add({**o, "images/front": o["images/front"].astype(np.float32)}, [0, 0], 0, o, 0, 0)
    with pytest.raises(ValueError, match="shape"):
        buf.add(o, [0, 0, 0], 0, o, 0, 0)
    with pytest.raises(ValueError, match="non-finite"):
        buf.add(o, [0, np.nan], 0, o, 0, 0)
    assert len(buf) == 0


def test_sample_into_reused_batch_matches_fresh_sample():
    buf = ReplayBuffer(30, PIXEL_SPEC, 2)
    fill_random_episodes(buf, np.random.default_rng(0), 8)
    demos = ReplayBuffer(30, PIXEL_SPEC, 2)
    fill_random_episodes(demos, np.random.default_rng(1), 3)
    reused = buf.sample(16, np.random.default_rng(0))
    fresh = buf.sample(16, np.random.default_rng(1))
    assert buf.sample(16, np.random.default_rng(1), out=reused) is reused
    assert_batches_equal(reused, fresh)
    fresh = sample_mixed(buf, demos, 16, generator=np.random.default_rng(2))
    sample_mixed(buf, demos, 16, generator=np.random.default_rng(2), out=reused)
    assert_batches_equal(reused, fresh)
    with pytest.raises(ValueError, match="batch of 8"):
        buf.sample(8, out=reused)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    buf = ReplayBuffer(23, PIXEL_SPEC, 2, seed=5)
    fill_random_episodes(buf, rng, 15)
    path = tmp_path / "replay.npz"
    buf.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["replay.npz"]
    loaded = ReplayBuffer.load(path)
    assert len(loaded) == len(buf)
    # Same explicit generator and the restored internal RNG both give identical batches.
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    for a, b in [(buf.sample(32, g1), loaded.sample(32, g2)), (buf.sample(32), loaded.sample(32))]:
        assert_batches_equal(a, b)
    # Ring pointers restored: adding the same data afterwards keeps both buffers identical.
    for b in (buf, loaded):
        b.add_batch(*stack(episode_transitions(99, 5, False)))
        for tr in episode_transitions(100, 4, True):
            b.add(*tr)
    assert_batches_equal(buf.sample(64, np.random.default_rng(1)),
                         loaded.sample(64, np.random.default_rng(1)))
    check_pixel_batch(loaded.sample(64, np.random.default_rng(2)))


def assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            assert_batches_equal(a[k], b[k])
        else:
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("damage", ["truncate", "garble", "garbage"])
def test_corrupt_file_gives_clear_error(tmp_path, damage):
    buf = ReplayBuffer(50, PIXEL_SPEC, 2)
    fill_random_episodes(buf, np.random.default_rng(0), 6)
    path = tmp_path / "replay.npz"
    buf.save(path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garble":  # inside the frame data: only the zip CRC can notice
        i = len(data) // 2
        data[i:i + 16] = bytes(16)
    else:
        data = b"not a buffer at all" * 10
    path.write_bytes(bytes(data))
    with pytest.raises(BufferFileError, match="replay.npz.*(corrupt|truncated)"):
        ReplayBuffer.load(path)


def test_load_demonstrations():
    episodes = []
    for e, (t, trunc) in enumerate([(4, False), (6, True), (1, False)]):
        obs, act, rew, nxt, term, tr = stack(episode_transitions(e, t, trunc))
        episodes.append({"observations": {k: np.concatenate([obs[k], nxt[k][-1:]]) for k in obs},
                         "actions": act, "rewards": rew, "terminations": term,
                         "truncations": tr})
    demos = load_demonstrations(episodes, extra_capacity=5)
    assert len(demos) == 11
    check_pixel_batch(demos.sample(300, np.random.default_rng(0)))
    assert sampled_keys(demos, 300) == {(e, t) for e, n in enumerate([4, 6, 1]) for t in range(n)}
    bad = dict(episodes[0], terminations=np.array([1, 0, 0, 1]))
    with pytest.raises(ValueError, match="before its last step"):
        load_demonstrations([bad])
