"""Checkpoints: keep-last-N, atomic writes, resume of agent/optimizer/counters, corrupt fallback."""

import numpy as np
import pytest
import torch

from robostack.rl import checkpoint as ck

torch.set_num_threads(1)

MARKER = 1.2345  # a recognisable float whose bytes the corruption test finds in the file


def make_agent(seed):
    torch.manual_seed(seed)
    agent = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    log_alpha = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([*agent.parameters(), log_alpha], lr=1e-2)
    return agent, log_alpha, opt


def train(agent, log_alpha, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=g)
        loss = agent(x).pow(2).mean() + (log_alpha - 1).pow(2)
        opt.zero_grad()
        loss.backward()
        opt.step()


def state_of(agent, log_alpha, opt, env_steps, updates):
    return {"agent": agent, "optimizer": opt, "log_alpha": log_alpha.detach().clone(),
            "counters": {"env_steps": env_steps, "updates": updates, "episodes": 3},
            "marker": torch.full((256,), MARKER)}


def steps_on_disk(run_dir):
    return [int(p.name[5:15]) for p in ck.list_checkpoints(run_dir)]


def test_keep_last_n(tmp_path):
    agent, log_alpha, opt = make_agent(0)
    for step in (100, 200, 300, 400, 500):
        ck.save_checkpoint(tmp_path, step, state_of(agent, log_alpha, opt, step, step),
                           keep_last=2)
    assert steps_on_disk(tmp_path) == [400, 500]
    assert ck.latest_checkpoint(tmp_path).name == "ckpt_0000000500.pt"
    assert ck.latest_checkpoint(tmp_path / "empty") is None
    assert ck.load_latest_checkpoint(tmp_path / "empty") is None


def test_resume_continues_the_same_run(tmp_path):
    agent, log_alpha, opt = make_agent(0)
    train(agent, log_alpha, opt, 5, seed=1)
    ck.save_checkpoint(tmp_path, 1234, state_of(agent, log_alpha, opt, 1234, 56))

    agent2, log_alpha2, opt2 = make_agent(7)  # different init: resume must overwrite all of it
    ckpt = ck.resume(tmp_path, {"agent": agent2, "optimizer": opt2})
    with torch.no_grad():
        log_alpha2.copy_(ckpt.state["log_alpha"])
    assert ckpt.step == 1234
    assert ckpt.state["counters"] == {"env_steps": 1234, "updates": 56, "episodes": 3}
    # Same next updates from both: parameters and Adam moments were restored.
    train(agent, log_alpha, opt, 3, seed=2)
    train(agent2, log_alpha2, opt2, 3, seed=2)
    for p, q in zip(agent.parameters(), agent2.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(log_alpha, log_alpha2)


def test_atomic_write_leftover_temp_is_ignored_and_crash_keeps_previous(tmp_path, monkeypatch):
    agent, log_alpha, opt = make_agent(0)
    ck.save_checkpoint(tmp_path, 10, state_of(agent, log_alpha, opt, 10, 1))
    d = ck.checkpoint_dir(tmp_path)
    stale = d / ".ckpt_0000000099.pt.tmp-99999999"  # a crashed writer's half file (dead pid)
    stale.write_bytes(b"half a checkpoint")
    assert ck.latest_checkpoint(tmp_path).name == "ckpt_0000000010.pt"
    assert ck.load_latest_checkpoint(tmp_path).step == 10

    def crash(obj, f):
        f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(ck.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(tmp_path, 20, state_of(agent, log_alpha, opt, 20, 2))
    monkeypatch.undo()
    assert steps_on_disk(tmp_path) == [10]
    assert {p.name for p in d.iterdir()} == {"ckpt_0000000010.pt", stale.name}
    ck.save_checkpoint(tmp_path, 30, state_of(agent, log_alpha, opt, 30, 3))
    assert not stale.exists()  # its writer is gone, so the next save cleans it up


def truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


def flip_marker_bytes(path):
    data = bytearray(path.read_bytes())
    pattern = np.full(4, MARKER, np.float32).tobytes()
    i = data.find(pattern)
    assert i >= 0
    data[i:i + 4] = np.float32(-MARKER).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_marker_bytes])
def test_corrupt_latest_falls_back_with_warning(tmp_path, damage):
    agent, log_alpha, opt = make_agent(0)
    for step in (1, 2, 3):
        ck.save_checkpoint(tmp_path, step, state_of(agent, log_alpha, opt, step * 10, step))
    latest = ck.latest_checkpoint(tmp_path)
    damage(latest)
    with pytest.raises(ck.CheckpointError, match="ckpt_0000000003.pt.*(corrupt|truncated)"):
        ck.load_checkpoint(latest)
    with pytest.warns(UserWarning, match="ckpt_0000000003.pt.*Falling back to ckpt_0000000002"):
        ckpt = ck.load_latest_checkpoint(tmp_path)
    assert ckpt.step == 2 and ckpt.state["counters"]["env_steps"] == 20
    for p in ck.list_checkpoints(tmp_path):
        damage(p)
    with pytest.raises(ck.CheckpointError, match="no usable checkpoint"):
        ck.load_latest_checkpoint(tmp_path)


def test_non_plain_state_is_rejected_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"state\['rng'\]\['a'\]: numpy.ndarray"):
        ck.save_checkpoint(tmp_path, 1, {"rng": {"a": np.zeros(3)}})
    assert ck.list_checkpoints(tmp_path) == []
    # Plain data that weights_only loading accepts round-trips, numpy RNG state included.
    rng_state = np.random.default_rng(0).bit_generator.state
    ck.save_checkpoint(tmp_path, 1, {"rng": rng_state, "t": torch.get_rng_state()})
    assert ck.load_checkpoint(ck.latest_checkpoint(tmp_path)).state["rng"] == rng_state
