"""The commands against servers run apart, as on a real arm (robostack/env/remote.py): a
real-time robot server renders no images, so record-demos and replay read the task's cameras
from a `robostack camera-server`; both servers bound on a network address serve only with
CURVE keys, which the commands take as options. Real processes: a real-time MuJoCo robot
server and a synthetic camera server, both on 0.0.0.0 with CURVE, reached over loopback."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import numpy as np
import pytest

from robostack import transport
from robostack.commands.replay import ReplayConfig
from robostack.data.episode_log import EpisodeLog
from robostack.env.remote import RemoteServers

pytestmark = pytest.mark.timeout(300)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _port() -> int:
    return int(transport.free_tcp_endpoint().rsplit(":", 1)[1])


@pytest.fixture
def servers(tmp_path, keys):
    """(robot command endpoint, camera endpoint, env for the commands), both servers with the
    'server' key pair admitting 'client'; stopped at the end."""
    env = dict(os.environ, OMP_NUM_THREADS="1", ROBOSTACK_KEYS=str(keys), PYTHONPATH=REPO)
    command, state, camera = _port(), _port(), _port()
    robot = subprocess.Popen(
        [sys.executable, "-m", "robostack.cli", "robot-server", "--task", "reach", "--clock", "realtime",
         "--command-endpoint", f"tcp://0.0.0.0:{command}", "--state-endpoint", f"tcp://0.0.0.0:{state}",
         "--admin-endpoint", transport.ipc_endpoint(f"remote-test-{command}-admin"),
         "--curve-key", "server", "--log-level", "WARNING"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "robot.err", "w"))
    # A real camera's size: the task (reach: front at 128 x 128) decides the crop and resize.
    cameras = subprocess.Popen(
        [sys.executable, "-m", "robostack.cameras.server", "--cameras", "front=synthetic,640x480,30",
         "--task", "reach", "--endpoint", f"tcp://0.0.0.0:{camera}", "--curve-key", "server"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=open(tmp_path / "cameras.err", "w"), text=True)
    try:
        ready, _, _ = select.select([cameras.stdout], [], [], 60.0)
        assert ready and "publishing" in cameras.stdout.readline(), (tmp_path / "cameras.err").read_text()
        probe = transport.RequestClient(f"tcp://127.0.0.1:{command}", "test", timeout=1.0,
                                        curve=transport.CurveKeys("client", "server", keys_dir=str(keys)))
        deadline = time.monotonic() + 60
        while True:
            try:
                probe.request("hello")
                break
            except transport.PeerTimeout:
                assert robot.poll() is None and time.monotonic() < deadline, (tmp_path / "robot.err").read_text()
        probe.close()
        yield f"tcp://127.0.0.1:{command}", f"tcp://127.0.0.1:{camera}", env
    finally:
        for process in (robot, cameras):
            process.terminate()
        for process in (robot, cameras):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


KEYS = ["--curve-key", "client", "--server-key", "server", "--camera-server-key", "server"]


def robostack(*args, env):
    return subprocess.run([sys.executable, "-m", "robostack.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=180)


def test_record_demos_and_replay_read_the_camera_server_of_a_real_time_robot_server(servers, tmp_path):
    command, camera, env = servers
    log = tmp_path / "demos"
    recorded = robostack("record-demos", "--task", "reach", "--device", "autopilot", "--episodes", "1",
                         "--max-attempts", "1", "--keep", "all", "--view", "plain", "--seed", "3",
                         "--log", str(log), "--endpoint", command, "--cameras", "front",
                         "--camera-endpoint", camera, *KEYS, env=env)
    assert recorded.returncode == 0, recorded.stdout[-2000:] + recorded.stderr[-2000:]
    episodes = EpisodeLog(log)
    assert list(episodes.video_keys) == ["observation.images.front"]
    episode = episodes.episode(0, video=True)
    steps = len(episode["action"])
    frames, times = episode["observation.images.front"], episode["timestamp.images.front"]
    assert steps >= 3 and frames.shape == (steps, 128, 128, 3), frames.shape
    # The camera server's frames, not the mirror's renders: the synthetic pattern has every
    # colour channel busy, a camera frame each step (times increase), about one step apart.
    assert frames.std() > 20.0
    assert np.all(np.diff(times) > 0), times
    assert np.median(np.diff(times)) == pytest.approx(0.1, abs=0.04)

    replayed = robostack("replay", str(log), "--endpoint", command, "--camera-endpoint", camera,
                         "--tolerance", "0.05", *KEYS, env=env)
    assert replayed.returncode == 0, replayed.stdout[-2000:] + replayed.stderr[-2000:]
    assert "camera front: logged vs re-rendered" in replayed.stdout, replayed.stdout


def test_without_the_camera_server_a_real_time_robot_server_is_refused_naming_the_option(servers, tmp_path):
    command, _, env = servers
    result = robostack("record-demos", "--task", "reach", "--device", "autopilot", "--episodes", "1",
                       "--view", "plain", "--log", str(tmp_path / "demos"), "--endpoint", command,
                       "--cameras", "front", *KEYS[:4], env=env)
    assert result.returncode != 0
    assert "--camera-endpoint" in result.stdout + result.stderr, result.stdout + result.stderr
    assert not (tmp_path / "demos" / "meta").exists() or len(EpisodeLog(tmp_path / "demos")) == 0


def test_remote_options_need_a_robot_server_run_apart_and_whole_key_sets():
    with pytest.raises(ValueError, match="--camera-endpoint: for a robot server run apart \\(--endpoint\\)"):
        ReplayConfig(remote=RemoteServers(camera_endpoint="tcp://127.0.0.1:5560"))
    with pytest.raises(ValueError, match="need --curve-key"):
        RemoteServers(server_key="server")
    with pytest.raises(ValueError, match="--curve-key needs the public key"):
        RemoteServers(curve_key="client")
    options = RemoteServers(camera_endpoint="ipc:///x", curve_key="client", server_key="server").env_options()
    assert options["camera_endpoint"] == "ipc:///x" and options["camera_curve"] is None
    assert (options["curve"].key, options["curve"].server_key) == ("client", "server")


def test_a_run_s_env_reads_the_camera_server_as_its_actor_and_eval_open_it(servers, keys, monkeypatch):
    # `robostack actor --camera-server ... --camera-server-key ...` and `robostack eval
    # --camera-endpoint ...` open their env through rollouts.open_env with these keywords.
    from robostack.training.config import RunConfig
    from robostack.training.rollouts import open_env

    command, camera, _ = servers
    monkeypatch.setenv("ROBOSTACK_KEYS", str(keys))
    remote = RemoteServers(camera_endpoint=camera, curve_key="client", server_key="server",
                           camera_server_key="server")
    env = open_env(RunConfig(task="reach", cameras="front"), 0, command, timeout=30.0, **remote.env_options())
    try:
        obs, info = env.reset(seed=1)
        assert obs["images/front"].shape == (128, 128, 3) and obs["images/front"].std() > 20.0
        obs, _, _, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
        assert not truncated, info.get("truncated_reason")
        assert info["image_times"]["front"] > 0
    finally:
        env.close()
