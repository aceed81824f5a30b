"""The autopilot (seeded intervention protocol, succeeding on pick_cube), the base <-> policy
frame conversion of intervention actions, and `robostack teleop --selftest`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hardware.teleop.base import TeleopDevice, TeleopReading
from robostack.env import make_env
from controllers.rotations import quat_angle, quat_multiply, quat_to_matrix, rotvec_to_quat
from robostack.env.teleop import Autopilot, InterventionProtocol, make_device
from robostack.env.actions import action_to_target, base_to_policy_action, policy_to_base
from tasks import TaskConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def pick_env():
    env = make_env("pick_cube", transport_kind="inprocess")
    yield env
    env.close()


def random_quaternion(rng) -> np.ndarray:
    q = rng.normal(size=4)
    return q / np.linalg.norm(q)


# --- the intervention protocol -----------------------------------------------------------------
def test_protocol_is_reproducible_from_a_seed_and_differs_across_seeds():
    protocol = InterventionProtocol(probability=0.5, start=(0, 20), duration=(5, 15))
    plan = [protocol.schedule(seed=3, episode=e) for e in range(40)]
    assert plan == [protocol.schedule(seed=3, episode=e) for e in range(40)]
    assert plan != [protocol.schedule(seed=4, episode=e) for e in range(40)]
    taken = [p for p in plan if p is not None]
    assert 8 <= len(taken) <= 32  # about half the episodes
    assert all(0 <= start <= 20 and 5 <= end - start <= 15 for start, end in taken)
    assert all(InterventionProtocol(probability=0.0).schedule(1, e) is None for e in range(20))
    with pytest.raises(ValueError, match="two steps lo <= hi"):
        InterventionProtocol(start=(5,))


def run_episodes(env, autopilot: Autopilot, seeds, policy):
    """Policy acts, the autopilot replaces it while it intervenes; what an actor will do."""
    results = []
    for episode, seed in enumerate(seeds):
        env.reset(seed=seed)
        autopilot.reset(episode=episode)
        trace, info = [], {"success": False}
        for _ in range(env.config.max_episode_steps):
            fields = env.fields()
            autopilot.observe(fields)
            reading = autopilot.read()
            if reading.intervene:
                action = base_to_policy_action(reading, env.config, fields["tcp_quaternion"], "base")
            else:
                action = policy(fields)
            trace.append((reading.intervene, np.round(action, 5).tolist()))
            _, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        results.append((bool(info["success"]), trace))
    return results


def test_autopilot_interventions_succeed_on_pick_cube_and_replay_from_the_seed(pick_env):
    protocol = InterventionProtocol(probability=1.0, start=(2, 6), duration=(60, 60), noise=0.05)
    rng = np.random.default_rng(0)
    wander = lambda fields: rng.uniform(-1, 1, pick_env.action_space.shape).astype(np.float32)  # noqa: E731
    autopilot = make_device("autopilot", task=pick_env.task, protocol=protocol, seed=11)
    assert isinstance(autopilot, TeleopDevice)
    first = run_episodes(pick_env, autopilot, [100, 101, 102], wander)
    assert [success for success, _ in first] == [True, True, True]
    for _, trace in first:
        flags = [intervene for intervene, _ in trace]
        assert 2 <= flags.index(True) <= 6 and not any(flags[:flags.index(True)])

    rng = np.random.default_rng(0)
    again = run_episodes(pick_env, Autopilot(pick_env.task, protocol, seed=11), [100, 101, 102], wander)
    assert again == first  # same seed: same takeovers, same actions, same outcome


def test_autopilot_takes_over_when_the_policy_is_stuck(pick_env):
    protocol = InterventionProtocol(probability=0.0, when_stuck=True, stuck_steps=5,
                                    stuck_distance=0.005, duration=(60, 60))
    hold = lambda fields: np.zeros(pick_env.action_space.shape, np.float32)  # noqa: E731
    [(success, trace)] = run_episodes(pick_env, Autopilot(pick_env.task, protocol, seed=0), [7], hold)
    flags = [intervene for intervene, _ in trace]
    assert not any(flags[:5]) and flags.index(True) <= 8  # stuck from the start: 5 steps to notice
    assert success


def test_autopilot_success_is_one_event(pick_env):
    autopilot = Autopilot(pick_env.task, InterventionProtocol(probability=0.0), seed=0)
    pick_env.reset(seed=0)
    fields = dict(pick_env.fields())
    lifted = dict(fields, cube_position=np.array([0.5, 0.0, 0.2]), cube_to_tcp=np.zeros(3))
    assert not autopilot.read(fields).success
    assert autopilot.read(lifted).success
    assert not autopilot.read(lifted).success


def test_make_device_errors_are_clear():
    with pytest.raises(ValueError, match="keyboard, gamepad, spacemouse, autopilot"):
        make_device("joystick")
    with pytest.raises(ValueError, match="task=env.task"):
        make_device("autopilot")


# --- frames -----------------------------------------------------------------------------------
CONFIG = TaskConfig(control_rotation=True, control_gripper=True)


def test_quaternion_matrix_agrees_with_geometry_quaternion_product():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q, v = random_quaternion(rng), rng.normal(size=3)
        rotated = quat_multiply(quat_multiply(q, np.concatenate([[0.0], v])), q * [1, -1, -1, -1])
        np.testing.assert_allclose(quat_to_matrix(q) @ v, rotated[1:], atol=1e-12)


@pytest.mark.parametrize("frame", ["base", "tool"])
def test_frame_conversion_round_trip(frame):
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = random_quaternion(rng)
        reading = TeleopReading(translation=rng.uniform(-0.57, 0.57, 3), rotation=rng.uniform(-0.57, 0.57, 3),
                                gripper=float(rng.choice([-1.0, 0.0, 1.0])))
        action = base_to_policy_action(reading, CONFIG, q, frame)
        assert action.shape == (7,) and action.dtype == np.float32
        back = policy_to_base(action, CONFIG, q, frame)
        np.testing.assert_allclose(back.translation, reading.translation, atol=1e-6)
        np.testing.assert_allclose(back.rotation, reading.rotation, atol=1e-6)
        assert back.gripper == reading.gripper


def assert_stored_action_replays_the_human_motion(stored, reading, tcp, q, frame):
    """The check an intervention log must pass: the stored action, executed by an env acting in
    `frame`, moves the tcp where the human's base-frame command did."""
    position, quaternion = action_to_target(stored, tcp, q, CONFIG, frame)
    wanted_position = tcp + reading.translation * CONFIG.max_translation_step
    wanted_quaternion = quat_multiply(rotvec_to_quat(reading.rotation * CONFIG.max_rotation_step), q)
    np.testing.assert_allclose(position, wanted_position, atol=1e-9)
    assert quat_angle(quaternion, wanted_quaternion) < 1e-6


def test_intervention_in_a_tool_frame_env_is_stored_in_the_tool_frame():
    # Gripper pointing down (home, (w x y z) = (0, 1, 0, 0)) and turned 90 deg about base z:
    # the tool's axes are none of the base's.
    q = quat_multiply(rotvec_to_quat(np.array([0.0, 0.0, np.pi / 2])), np.array([0.0, 1.0, 0.0, 0.0]))
    tcp = np.array([0.5, 0.0, 0.3])
    reading = TeleopReading(translation=np.array([1.0, 0.0, -0.5]), rotation=np.array([0.0, 0.0, 0.5]),
                            gripper=1.0, intervene=True)
    stored = base_to_policy_action(reading, CONFIG, q, frame="tool")
    assert_stored_action_replays_the_human_motion(stored, reading, tcp, q, "tool")
    assert stored[-1] == 1.0
    # The classic bug: the device's base-frame command stored as the tool-frame action.
    naive = np.concatenate([reading.translation, reading.rotation, [reading.gripper]]).astype(np.float32)
    with pytest.raises(AssertionError):
        assert_stored_action_replays_the_human_motion(naive, reading, tcp, q, "tool")
    # In a base-frame env (RobotEnv) the conversion is the identity.
    base = base_to_policy_action(reading, CONFIG, q, frame="base")
    np.testing.assert_allclose(base, naive)
    assert_stored_action_replays_the_human_motion(base, reading, tcp, q, "base")


def test_conversion_keeps_direction_when_rotation_leaves_the_unit_box():
    q = rotvec_to_quat(np.array([0.0, 0.0, np.pi / 4]))
    action = base_to_policy_action(TeleopReading(translation=np.array([1.0, 1.0, 0.0])), CONFIG, q, "tool")
    # [1, 1] turned by -45 deg is [sqrt 2, 0]: shrunk to [1, 0], not clipped to another direction.
    np.testing.assert_allclose(action[:3], [1.0, 0.0, 0.0], atol=1e-6)
    no_rotation = TaskConfig(control_rotation=False)
    assert base_to_policy_action(TeleopReading(gripper=-1.0), no_rotation).tolist() == [0, 0, 0, -1]


# --- the command ------------------------------------------------------------------------------
def test_selftest_autopilot_runs_and_exits_zero(capsys):
    from robostack.cli import main

    assert main(["teleop", "--device", "autopilot", "--selftest", "--steps", "40"]) == 0
    out = capsys.readouterr().out
    assert "intervene" in out and "40 steps" in out
    assert "episode 1: success" in out


def cli(*args, **kwargs) -> subprocess.Popen:
    # PYTHONFAULTHANDLER: a child that hangs can be made to print every thread's stack (SIGABRT).
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    # SIGINT at its default, as a person's terminal gives it: a suite started as a background job
    # of a non-interactive shell (`bash .ci/run &`) inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler in the child (two CI runs "hung" on Ctrl-C that way).
    return subprocess.Popen([sys.executable, "-m", "robostack.cli", "teleop", *args], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint, **kwargs)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_keyboard_selftest_without_a_terminal_says_so():
    process = cli("--device", "keyboard", "--selftest")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "needs an interactive terminal" in err and "Traceback" not in err


def test_selftest_ends_cleanly_on_ctrl_c():
    process = cli("--device", "autopilot", "--selftest")  # no --steps: runs until interrupted
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "intervene" in line:
            break
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # a hang once seen in CI, not reproduced: keep where it hung
        process.send_signal(signal.SIGABRT)
        out, err = process.communicate(timeout=30)
        pytest.fail(f"teleop --selftest ignored SIGINT for 30 s; its stacks:\n{err[-6000:]}\nlast output:\n{out[-1000:]}")
    assert process.returncode == 0, err
    assert "interrupted" in out and "Traceback" not in err


# --- real-time pacing --------------------------------------------------------------------------
class FakeTime:
    def __init__(self):
        self.t = 0.0
        self.slept = []

    def clock(self):
        return self.t

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.t += seconds


def test_pacer_ticks_once_per_period_and_never_bursts_after_a_stall():
    from robostack.env.teleop import Pacer

    fake = FakeTime()
    pacer = Pacer(10.0, clock=fake.clock, sleep=fake.sleep)
    ticks = []
    for work in (0.02, 0.02, 0.05, 0.02):  # each loop body takes `work` s
        pacer.wait()
        ticks.append(fake.t)
        fake.t += work
    np.testing.assert_allclose(np.diff(ticks), [0.1, 0.1, 0.1])
    fake.t += 1.0  # a stall (a slow learner update): no burst of catch-up steps after it
    pacer.wait()
    resumed = fake.t
    pacer.wait()
    assert fake.t - resumed == pytest.approx(0.1) and pacer.late_ticks == 1
    pacer.start()  # a reset: its duration is no late tick, the next wait returns at once
    fake.t += 5.0
    before = fake.t
    pacer.wait()
    assert fake.t == before and pacer.late_ticks == 1
    off = Pacer(10.0, enabled=False, clock=fake.clock, sleep=fake.sleep)
    slept = len(fake.slept)
    for _ in range(5):
        off.wait()
    assert len(fake.slept) == slept  # the autopilot: unpaced
    with pytest.raises(ValueError, match="positive rate"):
        Pacer(0.0)


def test_real_time_pacing_wrapper_steps_a_lock_step_mirror_at_the_policy_rate(pick_env):
    from robostack.env.teleop import RealTimePacing, needs_pacing

    assert needs_pacing("keyboard") and needs_pacing("spacemouse") and not needs_pacing("autopilot")
    paced = RealTimePacing(pick_env)
    paced.reset(seed=0)
    hold = np.zeros(pick_env.action_space.shape, np.float32)
    started = time.monotonic()
    for _ in range(6):
        paced.step(hold)
    # 6 steps: 5 periods of 0.1 s after the first (the lock-step mirror alone: a few ms)
    assert time.monotonic() - started >= 0.49


# --- the live view -----------------------------------------------------------------------------
def view_state(**changes):
    from robostack.env.teleop_view import ViewState
    from hardware.teleop.keyboard import keyboard_controls

    state = ViewState(title="robostack record-demos | task pick_cube", phase="READY",
                      detail="press SPACE to start episode 1", counters="kept 0 of 2 wanted",
                      progress="step 0 / 300", task_fields=("cube_position",),
                      fields={"tcp_position": np.array([0.5, -0.01, 0.3]), "gripper_width": np.array([0.08]),
                              "tcp_quaternion": np.array([0.0, 1.0, 0.0, 0.0]),
                              "cube_position": np.array([0.45, 0.1, 0.02])},
                      reading=TeleopReading(translation=np.array([1.0, 0.0, 0.0]), gripper=1.0,
                                            intervene=True),
                      controls=keyboard_controls(), hint="SPACE to start")
    for name, value in changes.items():
        setattr(state, name, value)
    return state


def test_screen_shows_phase_counters_readout_and_the_devices_key_map():
    from robostack.env.teleop_view import screen_lines

    text = "\n".join(screen_lines(view_state()))
    for shown in ("READY     press SPACE to start episode 1", "kept 0 of 2 wanted", "step 0 / 300",
                  "tcp            x +0.500  y -0.010  z +0.300   m, base frame",
                  "gripper        width 0.080 m   command: close",
                  "cube_position  x +0.450  y +0.100  z +0.020",
                  "operator       xyz +1.00 +0.00 +0.00   deadman ON",
                  "SPACE", "w/s Up/Down", "forward / back (base +x / -x)", "ENTER/y", "hint: SPACE to start",
                  "cameras        none yet"):
        assert shown in text, f"{shown!r} missing from\n{text}"
    assert "tcp_quaternion" not in text  # only what a person acts on


def test_terminal_view_redraws_in_place_and_gives_the_terminal_back():
    import io

    from robostack.env.teleop_view import TerminalView

    stream = io.StringIO()
    view = TerminalView(stream, size=lambda: (80, 24), min_interval=0.0)
    assert stream.getvalue().startswith("\x1b[?1049h")  # the alternate screen: no scrollback mess
    state = view_state()
    view.update(**{name: getattr(state, name) for name in ("title", "phase", "detail", "fields",
                                                           "reading", "controls", "task_fields")})
    view.say("attempt 1: success after 80 steps, logged as episode 0")
    frames = stream.getvalue().split("\x1b[H")[1:]
    assert len(frames) >= 2
    for frame in frames:  # every redraw starts at home and stays inside 80 x 23
        lines = frame.split("\r\n")
        assert len(lines) <= 24
        assert all(len(line.replace("\x1b[K", "").replace("\x1b[7m", "").replace("\x1b[0m", "")) < 80
                   for line in lines)
        assert "\n" not in frame.replace("\r\n", "")
    view.close()
    tail = stream.getvalue().rsplit("\x1b[?1049l", 1)[1]
    assert tail == "attempt 1: success after 80 steps, logged as episode 0\n"  # kept in the scrollback
    view.close()  # twice is harmless


def test_camera_frames_get_a_small_preview_and_no_cameras_say_so():
    import io

    from robostack.env.teleop_view import TerminalView, preview_rows

    image = np.zeros((48, 64, 3), np.uint8)
    image[:24] = (255, 0, 0)  # red upper half, black lower half
    rows = preview_rows(image, columns=16)
    assert len(rows) == 6  # 16 columns x 2 pixel rows per line, 4:3
    assert rows[0].count("\u2580") == 16 and "38;2;255;0;0m" in rows[0] and "48;2;0;0;0m" in rows[-1]
    stream = io.StringIO()
    view = TerminalView(stream, size=lambda: (100, 60), min_interval=0.0)
    view.update(**{"phase": "READY", "fields": view_state().fields, "images": {"images/wrist": image}})
    assert "camera images/wrist" in stream.getvalue() and "none yet" not in stream.getvalue()
    view.close()


def test_make_view_falls_back_to_what_the_place_allows(monkeypatch):
    import io

    from robostack.env.teleop_view import PlainView, TerminalView, make_view

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    said = []
    assert isinstance(make_view("auto", say=said.append, stream=io.StringIO()), PlainView)  # a pipe
    assert isinstance(make_view("window", say=said.append, stream=io.StringIO()), PlainView)
    assert any("no window possible" in line for line in said)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    view = make_view("auto", say=said.append, stream=Tty())
    assert isinstance(view, TerminalView)
    view.close()
    with pytest.raises(ValueError, match="--view must be one of auto, window, terminal, plain"):
        make_view("fancy")


def test_window_view_draws_the_screen_and_passes_window_keys_on():
    import cv2

    from robostack.env.teleop_view import WindowView

    class HeadlessCv2:  # the real cv2 for drawing; the GUI calls a display would answer
        def __init__(self):
            self.shown, self.keys = [], [ord("w"), 32, 65362, 13, ord("Q")]

        def __getattr__(self, name):
            return getattr(cv2, name)

        def namedWindow(self, *args): pass
        def destroyWindow(self, *args): pass
        def waitKey(self, *args): return -1
        def imshow(self, name, image): self.shown.append(image)
        def waitKeyEx(self, *args): return self.keys.pop(0) if self.keys else -1

    fake, said = HeadlessCv2(), []
    view = WindowView(fake, say=said.append)
    image = np.full((120, 160, 3), 200, np.uint8)
    view.update(**{"phase": "READY", "detail": "press SPACE to start", "fields": view_state().fields,
                   "controls": view_state().controls, "images": {"images/front": image}})
    picture = fake.shown[-1]
    assert picture.ndim == 3 and picture.shape[1] > 760  # text panel, camera frame beside it
    assert (picture[5:245, 765:1085] == 200).all()  # the frame itself, not a placeholder
    assert picture[:, :760].max() > 200  # text drawn
    assert view.poll_keys() == ["w", "space", "up", "enter", "q"]
    assert "READY: press SPACE to start" in said  # and a line per event in the terminal
    view.close()


def test_device_controls_drop_what_the_env_ignores(pick_env):
    from robostack.env.teleop import device_controls, start_hint
    from hardware.teleop.keyboard import keyboard_controls

    class Keys:
        def controls(self):
            return keyboard_controls()

    roles = [role for role, _, _ in device_controls(Keys(), control_rotation=False, control_gripper=True)]
    assert "rotation" not in roles and "translation" in roles and "gripper" in roles
    assert "gripper" not in [r for r, _, _ in device_controls(Keys(), control_gripper=False)]
    assert start_hint(Keys()) == "engage the deadman"  # a device that does not say
    autopilot = make_device("autopilot", task=pick_env.task)
    assert device_controls(autopilot)[0][0] == "info"


def test_teleop_with_a_person_at_a_terminal_shows_the_view_and_quits_on_q():
    import fcntl
    import select
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 110, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    process = subprocess.Popen([sys.executable, "-m", "robostack.cli", "teleop", "--device", "keyboard"],
                               cwd=ROOT, env=dict(env, OMP_NUM_THREADS="1"), stdin=slave, stdout=slave,
                               stderr=slave, close_fds=True)
    os.close(slave)
    screen, sent = b"", False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    screen += os.read(master, 65536)
                except OSError:
                    break
            if not sent and b"HOLDING" in screen:
                os.write(master, b" w")  # deadman on, forward
                time.sleep(0.5)
                os.write(master, b"q")
                sent = True
        process.wait(timeout=30)
        while select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    text = screen.decode(errors="replace")
    assert process.returncode == 0, text[-2000:]
    for shown in ("SPACE", "w/s Up/Down", "r/f", "c/v", "q/ESC", "tcp ", "cube_position", "DRIVING"):
        assert shown in text, f"{shown!r} not on the screen"
    assert "\x1b[?1049h" in text and text.rfind("\x1b[?1049l") > text.rfind("\x1b[?1049h")
    assert "stop pressed" in text and "Traceback" not in text
