"""The run directory's files when something damaged them (issue 11, item 5): resume falls back
to the newest checkpoint whose own files verify, a damaged line of episodes.jsonl or row of
progress.csv is skipped with a warning naming the file and the line, and the run's identity
(run.json) is created once and kept.

In this process, on real files; no network, no env."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robostack.rl.buffers import ReplayBuffer
from robostack.training import run_dir
from robostack.training.progress import ProgressReport
from robostack.training.run_state import CheckpointError, load_run_state, save_run_state

SPEC = {"state": ((3,), np.dtype(np.float32))}


class Agent:
    def __init__(self, value: float):
        self.weights = torch.full((4,), value)

    def state_dict(self) -> dict:
        return {"w": self.weights}


def buffer(count: int, seed: int = 0) -> ReplayBuffer:
    buf = ReplayBuffer(64, SPEC, 2, seed=seed)
    rng = np.random.default_rng(seed)
    obs = {"state": rng.normal(size=(count, 3)).astype(np.float32)}
    buf.add_batch(obs, rng.normal(size=(count, 2)).astype(np.float32), np.ones(count, np.float32),
                  obs, np.zeros(count, bool), np.zeros(count, bool))
    return buf


def two_saves(tmp_path):
    for number, count in ((1, 10), (2, 20)):
        save_run_state(tmp_path, number, Agent(float(number)), buffer(count), buffer(3, seed=1),
                       {"env_steps": count, "saves": number}, [], {"stored": {"actor-0": count}})


def flip_byte(path, at: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damaged", ["online_000002.npz", "demos_000002.npz"])
def test_a_damaged_buffer_of_the_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damaged):
    two_saves(tmp_path)
    assert load_run_state(tmp_path).counters["env_steps"] == 20
    flip_byte(tmp_path / "buffers" / damaged)
    said = []
    state = load_run_state(tmp_path, say=said.append)
    assert state.counters["env_steps"] == len(state.online) == 10 and state.saves == 1
    assert state.checkpoint.name == "ckpt_0000000001.pt"
    assert float(state.agent["w"][0]) == 1.0
    text = "\n".join(said)
    assert damaged in text and "ckpt_0000000002.pt" in text and "falling back to ckpt_0000000001.pt" in text


def test_a_missing_or_truncated_buffer_file_falls_back_too(tmp_path):
    two_saves(tmp_path)
    path = tmp_path / "buffers" / "online_000002.npz"
    path.write_bytes(path.read_bytes()[:100])
    said = []
    assert load_run_state(tmp_path, say=said.append).saves == 1
    assert "online_000002.npz: damaged" in said[0]
    path.unlink()
    said.clear()
    assert load_run_state(tmp_path, say=said.append).saves == 1
    assert "online_000002.npz: the buffer file saved with ckpt_0000000002.pt is missing" in said[0]


def test_with_no_intact_checkpoint_resume_is_refused_naming_every_damaged_file(tmp_path):
    two_saves(tmp_path)
    flip_byte(tmp_path / "buffers" / "online_000002.npz")
    flip_byte(tmp_path / "buffers" / "demos_000001.npz")
    with pytest.raises(CheckpointError) as refused:
        load_run_state(tmp_path)
    text = str(refused.value)
    assert "online_000002.npz" in text and "demos_000001.npz" in text and "--resume false" in text


def test_a_damaged_episodes_line_is_skipped_with_the_file_and_line_named(tmp_path):
    lines = [json.dumps({"actor": "actor-0", "last_seq": s, "return": 1.0}) for s in (10, 20, 30)]
    path = tmp_path / "episodes.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode().replace(b'"last_seq": 20', b'"last\xff": 2@,'))
    with open(path, "ab") as f:
        f.write(b'7\n{"actor": "actor-0", "last_s')  # not a record; a line torn by a crash
    said = []
    records = run_dir.read_episodes(tmp_path, say=said.append)
    assert [r["last_seq"] for r in records] == [10, 30]
    assert [w.split(" line ")[1].split(":")[0] for w in said] == ["2", "4", "5"]
    assert all(str(path) in w for w in said)
    run_dir.trim_episodes(tmp_path, {"actor-0": 15}, say=said.append)  # the learner resumes
    assert [json.loads(line)["last_seq"] for line in path.read_text().splitlines()] == [10]
    run_dir.trim_episodes(tmp_path, {})  # restarted before its first checkpoint: all come again
    assert path.read_text() == ""


def test_a_damaged_progress_row_is_skipped_and_the_resumed_report_goes_on(tmp_path):
    path = tmp_path / "progress.csv"
    path.write_bytes(b"env_steps,episodes,critic_loss\n10,1,0.5\n20,2\x00,0.4\n30,\xfe\xff,3,0.3\n"
                     b"40,4,0.2\n50,5")
    said = []
    report = ProgressReport(tmp_path, say=said.append, resume=True)
    assert [row["env_steps"] for row in report.rows] == ["10", "40"]
    rows = run_dir.read_csv(path, say=said.append)
    assert len(rows) == 2
    skipped = [w for w in said if "damaged, skipped" in w]
    assert {w.split(" line ")[1].split(":")[0] for w in skipped} == {"3", "4", "6"}, said
    report.say = lambda text: None
    report.report({"env_steps": 60, "episodes": 6, "total_steps": 100, "success_rate": 0.0,
                   "return": 0.0, "updates_per_s": 0.0, "utd": 0.0, "utd_target": 1,
                   "interventions": 0, "critic_loss": 0.1, "temperature": 0.1,
                   "env_steps_per_s": 0.0, "phase": "training"})
    assert [row["env_steps"] for row in run_dir.read_csv(path)] == ["10", "40", "60"]


def test_the_run_identity_is_created_once_and_a_checkpoint_keeps_its_own(tmp_path):
    first = run_dir.run_identity(tmp_path)
    assert run_dir.run_identity(tmp_path) == first
    assert json.loads((tmp_path / "run.json").read_text())["run"] == first
    assert run_dir.run_identity(tmp_path, checkpointed="abc123") == "abc123"  # a run from before run.json
    assert run_dir.run_identity(tmp_path) == "abc123"
    (tmp_path / "run.json").write_bytes(b'{"run": "ab\xff')
    with pytest.raises(run_dir.RunFileError) as refused:
        run_dir.run_identity(tmp_path)
    assert "run.json" in str(refused.value) and "--resume false" in str(refused.value)


def test_the_run_secret_is_created_with_the_identity_private_and_kept(tmp_path):
    run = run_dir.run_identity(tmp_path)
    path = tmp_path / "run.json"
    assert path.stat().st_mode & 0o777 == 0o600  # other users must not read the secret
    same, secret = run_dir.read_run_identity(path)
    assert same == run and len(secret) == 32 and int(secret, 16) >= 0
    assert run_dir.run_identity(tmp_path) == run and run_dir.read_run_identity(path)[1] == secret
    # A run.json from before run secrets keeps its id and gains a secret.
    path.write_text(json.dumps({"run": "old123"}))
    with pytest.raises(run_dir.RunFileError, match="holds no 'secret'"):
        run_dir.read_run_identity(path)
    assert run_dir.run_identity(tmp_path) == "old123"
    assert run_dir.read_run_identity(path)[0] == "old123" and path.stat().st_mode & 0o777 == 0o600
    path.write_text(json.dumps({"run": "old123", "secret": "nothex"}))
    with pytest.raises(run_dir.RunFileError, match="not 32 hex digits") as refused:
        run_dir.read_run_identity(path)
    assert "nothex" not in str(refused.value)  # a secret (even a bad one) is never printed
    path.unlink()
    with pytest.raises(run_dir.RunFileMissing, match="does not exist"):
        run_dir.read_run_identity(path)
