"""`robostack cameras` (robostack/commands/cameras.py): --list and --preview against real parts:
the pick_cube scene rendered headless (MUJOCO_GL=egl), a real `robostack camera-server`
subprocess with synthetic cameras on ipc, the written PNG/MP4 read back with OpenCV. One CLI call
runs as a real process; the rest go through robostack.cli.main in-process (fast)."""

from __future__ import annotations

import glob
import os
import select
import signal
import subprocess
import sys
import uuid

import cv2
import numpy as np
import pytest

from robostack import cli
from robostack.commands.cameras import GAP, LABEL_HEIGHT, SimulatedSource
from robostack.transport.endpoints import ipc_endpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL="egl", PYTHONPATH=REPO)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """robostack cameras ARGV in-process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(["cameras", *argv])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def read_video(path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def tiles(image: np.ndarray, widths: list[int], height: int) -> list[np.ndarray]:
    out, x = [], 0
    for width in widths:
        out.append(image[LABEL_HEIGHT:LABEL_HEIGHT + height, x:x + width])
        x += width + GAP
    return out


@pytest.fixture
def camera_server():
    """A real camera server process: front 160x120 at 20 fps, side 64x48 at 10 fps."""
    endpoint = ipc_endpoint(f"camcmd-{uuid.uuid4().hex[:8]}")
    proc = subprocess.Popen([sys.executable, "-m", "robostack.cli", "camera-server", "--cameras",
                             "front=synthetic,160x120,20;side=synthetic,64x48,10", "--endpoint", endpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    ready, _, _ = select.select([proc.stdout], [], [], 30.0)
    line = proc.stdout.readline() if ready else ""
    if "publishing" not in line:
        proc.kill()
        pytest.fail(f"camera server did not start: {line!r} {proc.stderr.read()}")
    yield endpoint
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5.0)


def test_list_names_every_task_camera_with_size_and_rate(capsys):
    code, out, _ = run(capsys, "--list")
    assert code == 0
    assert "pick_cube/front: 128x128 (HxW) @ 10 Hz" in out, out
    assert "pick_cube/wrist: 128x128 (HxW) @ 10 Hz (policy_hz), on body panda_hand" in out, out
    assert "reach/front: 128x128" in out and "reach/wrist" not in out, out
    if not glob.glob("/dev/video*"):
        assert "no /dev/video* devices" in out, out
    try:
        import pyrealsense2  # noqa: F401
    except (ImportError, OSError):
        assert "robostack[realsense]" in out and "libusb-1.0" in out, out
    code, out, _ = run(capsys, "--list", "--task", "reach")
    assert code == 0 and "reach/front" in out and "pick_cube" not in out, out


def test_png_preview_tiles_each_camera_side_by_side(tmp_path, capsys):
    path = tmp_path / "pick.png"
    code, out, _ = run(capsys, "--preview", str(path), "--task", "pick_cube", "--seed", "3")
    assert code == 0, out
    assert f"wrote {path}: {LABEL_HEIGHT + 128}x{128 + GAP + 128} (HxW), 1 frame(s)" in out, out
    image = cv2.imread(str(path))[..., ::-1]
    assert image.shape == (LABEL_HEIGHT + 128, 128 + GAP + 128, 3)
    front, wrist = tiles(image, [128, 128], 128)
    assert front.std() > 20 and wrist.std() > 20, (front.std(), wrist.std())
    assert np.abs(front.astype(int) - wrist).mean() > 20  # two views, not one image twice
    assert image[:LABEL_HEIGHT].max() == 255  # the labels are written (white text on black)
    # The tiles are the cameras' own renders of the scene after reset_scene(seed 3), unscaled.
    source = SimulatedSource("pick_cube", [], seed=3)
    try:
        rendered = source.read()
    finally:
        source.close()
    assert np.array_equal(front, rendered["front"]) and np.array_equal(wrist, rendered["wrist"])


def test_mp4_preview_has_seconds_times_rate_frames(tmp_path, capsys):
    path = tmp_path / "wrist.mp4"
    code, out, _ = run(capsys, "--preview", str(path), "--cameras", "wrist", "--seconds", "0.6")
    assert code == 0, out
    frames, fps = read_video(path)
    assert len(frames) == 6 and fps == pytest.approx(10.0)  # 0.6 s at pick_cube's 10 Hz
    assert frames[0].shape == (LABEL_HEIGHT + 128, 128, 3)
    assert frames[0][LABEL_HEIGHT:].std() > 20


def test_list_and_preview_a_running_camera_server(camera_server, tmp_path, capsys):
    # The one real CLI process: `robostack cameras --list --endpoint ...`.
    listed = subprocess.run([sys.executable, "-m", "robostack.cli", "cameras", "--list", "--endpoint",
                             camera_server, "--timeout", "1.0"], check=False, capture_output=True, text=True,
                            env=ENV, cwd=REPO, timeout=30)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split(":")[0].strip(): line for line in listed.stdout.splitlines()}
    assert "front" in lines and "side" in lines, listed.stdout
    assert "120x160 (HxW) @ 20 fps nominal" in lines["front"]
    assert "48x64 (HxW) @ 10 fps nominal" in lines["side"]
    measured = float(lines["front"].split("nominal, ")[1].split(" fps")[0])
    assert 16.0 < measured < 24.0, lines["front"]

    path = tmp_path / "server.mp4"
    code, out, _ = run(capsys, "--preview", str(path), "--endpoint", camera_server, "--seconds", "0.5")
    assert code == 0, out
    frames, fps = read_video(path)
    assert len(frames) == 10 and fps == pytest.approx(20.0)  # 0.5 s at the fastest camera's rate
    assert frames[0].shape == (LABEL_HEIGHT + 120, 160 + GAP + 64, 3)
    front, side = tiles(frames[0], [160, 64], 48)
    assert front.std() > 20 and side.std() > 20
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 3  # the pattern scrolls: live frames

    code, _, err = run(capsys, "--preview", str(tmp_path / "x.png"), "--endpoint", camera_server,
                       "--cameras", "side,top")
    assert code == 2 and "no camera 'top'" in err and "front, side" in err, err


def test_preview_of_cameras_opened_here(tmp_path, capsys):
    path = tmp_path / "devices.png"
    code, out, _ = run(capsys, "--preview", str(path), "--devices", "a=synthetic,64x48,15;b=synthetic,32x32,5",
                       "--cameras", "b")
    assert code == 0, out
    image = cv2.imread(str(path))
    assert image.shape == (LABEL_HEIGHT + 32, 32, 3) and image[LABEL_HEIGHT:].std() > 20


def test_usage_errors_name_the_valid_choices(tmp_path, capsys):
    code, _, err = run(capsys, "--preview", str(tmp_path / "p.png"), "--cameras", "front,top")
    assert code == 2 and "no camera 'top' in task 'pick_cube'" in err and "front, wrist" in err, err
    code, _, err = run(capsys, "--list", "--task", "stack")
    assert code == 2 and "unknown task 'stack'" in err and "pick_cube, reach" in err, err
    code, _, err = run(capsys, "--preview", str(tmp_path / "missing" / "p.png"))
    assert code == 2 and "does not exist" in err, err
    code, _, err = run(capsys, "--preview", str(tmp_path / "p.gif"))
    assert code == 2 and ".png" in err and ".mp4" in err, err
    code, _, err = run(capsys)
    assert code == 2 and "--list" in err, err
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    if not os.access(read_only, os.W_OK):  # root writes anywhere
        code, _, err = run(capsys, "--preview", str(read_only / "p.png"))
        assert code == 2 and "cannot write" in err, err


def test_a_silent_endpoint_is_reported_not_waited_for(capsys):
    endpoint = ipc_endpoint(f"nobody-{uuid.uuid4().hex[:8]}")
    code, _, err = run(capsys, "--list", "--endpoint", endpoint, "--timeout", "0.3")
    assert code == 1 and "no camera frame arrived" in err and "camera-server" in err, err


def test_no_window_without_a_display_or_in_ci(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("CI", raising=False)
    code, out, _ = run(capsys, "--preview", str(tmp_path / "p.png"), "--window", "--cameras", "front")
    assert code == 0 and "no display here" in out and (tmp_path / "p.png").exists(), out
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("DISPLAY", ":0")
    code, out, _ = run(capsys, "--preview", str(tmp_path / "q.png"), "--window", "--cameras", "front")
    assert code == 0 and "no live window in CI" in out, out
