"""InterventionWrapper on the real in-process mirror, with a scripted operator."""

import numpy as np
import pytest

from hardware.teleop.base import TeleopReading
from robostack.env import make_env
from robostack.env.wrappers import InterventionWrapper


class ScriptedOperator:
    """A TeleopDevice that replays a fixed list of readings (one per step), then lets go."""

    name = "scripted"

    def __init__(self, readings):
        self.readings = list(readings)

    def read(self) -> TeleopReading:
        return self.readings.pop(0) if self.readings else TeleopReading()

    def close(self) -> None:
        pass


def held(x=1.0, **events):
    return TeleopReading(translation=np.array([x, 0.0, 0.0]), intervene=True, **events)


def to_action(reading):  # reach: xyz delta only, base frame = action frame
    return reading.translation


@pytest.fixture
def env():
    env = make_env("reach", transport_kind="inprocess")
    yield env
    env.close()


def test_policy_acts_until_the_deadman_is_held_then_the_device_does(env):
    operator = ScriptedOperator([TeleopReading(), held(), held(), TeleopReading(), held()])
    wrapped = InterventionWrapper(env, operator, to_action)
    wrapped.reset(seed=0)
    policy = np.array([0.0, 0.5, 0.0], np.float32)
    infos = [wrapped.step(policy)[4] for _ in range(6)]
    assert [i["intervention"] for i in infos] == [False, True, True, False, True, False]
    assert [i["takeover"] for i in infos] == [False, True, False, False, True, False]
    for info in infos:
        np.testing.assert_array_equal(info["policy_action"], policy)  # logged either way
        expected = [1.0, 0.0, 0.0] if info["intervention"] else policy
        np.testing.assert_array_equal(info["executed_action"], expected)
    stats = wrapped.episode_stats()
    assert stats == {"steps": 6, "intervention_steps": 3, "takeovers": 2, "rate": 0.5,
                     "mean_length": 1.5}


def test_the_executed_device_action_moves_the_arm(env):
    wrapped = InterventionWrapper(env, ScriptedOperator([held()] * 5), to_action)
    wrapped.reset(seed=1)
    x0 = env.fields()["tcp_position"][0]
    for _ in range(5):
        wrapped.step(np.zeros(3, np.float32))  # the policy asks for nothing
    assert env.fields()["tcp_position"][0] - x0 > 0.05  # the operator pushed +x


def test_takeover_penalty_applies_once_per_takeover(env):
    wrapped = InterventionWrapper(env, ScriptedOperator([held(), held(), TeleopReading(), held()]),
                                  to_action, takeover_penalty=1.0)
    wrapped.reset(seed=0)
    rewards = [wrapped.step(np.zeros(3, np.float32))[1] for _ in range(4)]
    assert rewards == [-1.0, 0.0, 0.0, -1.0]  # sparse reach reward is 0 away from the goal


def test_operator_success_label_ends_the_episode_with_reward_one(env):
    wrapped = InterventionWrapper(env, ScriptedOperator([TeleopReading(), TeleopReading(success=True)]),
                                  to_action)
    wrapped.reset(seed=0)
    assert not wrapped.step(np.zeros(3, np.float32))[2]
    _, reward, terminated, truncated, info = wrapped.step(np.zeros(3, np.float32))
    assert terminated and not truncated and reward == 1.0
    assert info["human_label"] == "success" and info["success"]
    assert info["episode_interventions"]["steps"] == 2


def test_a_device_action_of_the_wrong_shape_is_refused_before_the_env_moves(env):
    wrapped = InterventionWrapper(env, ScriptedOperator([held()]), lambda r: np.zeros(7))
    wrapped.reset(seed=0)
    with pytest.raises(ValueError, match="base_to_policy_action"):
        wrapped.step(np.zeros(3, np.float32))


def test_autopilot_takes_over_per_its_protocol_and_finishes_the_task(env):
    from robostack.env.teleop import Autopilot, InterventionProtocol

    pick = make_env("pick_cube", transport_kind="inprocess")
    try:
        protocol = InterventionProtocol(probability=1.0, start=(3, 3), duration=(100, 100))
        wrapped = InterventionWrapper(pick, Autopilot(pick.task, protocol, seed=0))
        wrapped.reset(seed=0)
        idle = np.zeros(pick.action_space.shape, np.float32)  # a policy that does nothing
        for _ in range(pick.config.max_episode_steps):
            _, reward, terminated, truncated, info = wrapped.step(idle)
            if terminated or truncated:
                break
        assert info["success"] and terminated
        stats = info["episode_interventions"]
        assert stats["takeovers"] == 1 and stats["steps"] - stats["intervention_steps"] == 3
    finally:
        pick.close()


def test_single_process_training_with_autopilot_interventions_feeds_both_buffers(tmp_path):
    from robostack.env.teleop import InterventionProtocol
    from robostack.training.config import RunConfig, default_sac_config
    from robostack.training.rollouts import collect_demonstrations
    from robostack.training.run_state import load_run_state
    from robostack.training.train import train

    sac = default_sac_config()
    sac.hidden_dims, sac.num_critics = (32, 32), 2
    config = RunConfig(task="reach", demos=2, total_steps=60, learning_starts=30, eval_every=60,
                         eval_episodes=1, run_dir=str(tmp_path), sac=sac, progress_every=10_000,
                         intervention="autopilot",
                         autopilot=InterventionProtocol(probability=1.0, start=(0, 0), duration=(3, 3)))
    history = train(config, progress=None)
    steps = history[-1]["intervention_steps"]
    assert 3 <= steps < 60  # three steps at the start of every episode, the policy the rest
    state = load_run_state(tmp_path)
    online, demos = state.online, state.demos
    assert len(online) == 60
    scripted = make_env("reach", transport_kind="inprocess")
    try:  # the same two demonstrations the run collected (same seed and noise)
        episodes = collect_demonstrations(scripted, 2, config.seed, config.demo_noise, progress=None)
    finally:
        scripted.close()
    assert len(demos) == sum(len(e["actions"]) for e in episodes) + steps


def test_multi_process_actors_get_the_same_intervention_options_as_single_process(tmp_path):
    """One option set for both modes: `robostack train --intervention autopilot --autopilot-*
    --takeover-penalty` reaches every actor, which reads it back from the run's config.json to
    the same protocol; the actors' command lines carry only who they are."""
    import argparse

    from robostack.env.teleop import InterventionProtocol
    from robostack.training.config import ActorIdentity, LaunchOptions, RunConfig, parse_run_options
    from robostack.training.launcher import Launcher

    protocol = InterventionProtocol(probability=0.3, start=(2, 5), duration=(4, 9), when_stuck=True)
    config = RunConfig(task="reach", run_dir=str(tmp_path / "hil"), intervention="autopilot",
                       takeover_penalty=0.25, autopilot=protocol,
                       launch=LaunchOptions(actors=2, pin_cpus=False))
    launcher = Launcher(config, say=lambda _: None)
    launcher.prepare_run_dir()
    for i, child in enumerate(launcher.actor_children):
        assert "--intervention" not in child.args and "--task" not in child.args
        actor_config, identity, _ = parse_run_options(argparse.ArgumentParser(), child.args, ActorIdentity)
        assert actor_config.intervention == "autopilot"
        assert actor_config.takeover_penalty == 0.25 and actor_config.autopilot == protocol
        assert identity.actor_id == f"actor-{i}" and identity.index == i
    plain = Launcher(RunConfig(task="reach", run_dir=str(tmp_path / "plain"),
                               launch=LaunchOptions(pin_cpus=False)), say=lambda _: None)
    plain.prepare_run_dir()
    actor_config, _, _ = parse_run_options(argparse.ArgumentParser(), plain.actor_children[0].args,
                                           ActorIdentity)
    assert actor_config.intervention == ""


@pytest.mark.parametrize("single", [True, False])
def test_an_unknown_intervention_device_is_refused_before_anything_starts(tmp_path, capsys, single):
    from robostack.commands.train import main

    argv = ["--task", "reach", "--run-dir", str(tmp_path / "run"), "--intervention", "joystick"]
    with pytest.raises(SystemExit) as exc:
        main(argv + (["--single-process"] if single else []))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'joystick'" in err and "keyboard, gamepad, spacemouse, autopilot" in err
    assert not (tmp_path / "run" / "logs").exists()


def test_a_bad_autopilot_protocol_is_a_usage_error_not_a_traceback(tmp_path, capsys):
    from robostack.commands.train import main

    with pytest.raises(SystemExit) as exc:
        main(["--task", "reach", "--run-dir", str(tmp_path / "run"), "--intervention", "expert",
              "--autopilot-start", "5", "2"])
    assert exc.value.code == 2 and "must be two steps lo <= hi" in capsys.readouterr().err


# --- a person's device over processes: the launcher's relay ----------------------------------------

class CountingDevice:
    """A person's device held down: deadman on, pushing +x; counts episode starts."""

    name = "scripted-person"

    def __init__(self):
        self.new_episodes = 0
        self.success_pending = False
        self.closed = False

    def read(self) -> TeleopReading:
        success, self.success_pending = self.success_pending, False
        return TeleopReading(translation=np.array([0.5, 0.0, 0.0]), intervene=self.new_episodes > 0,
                             success=success)

    def new_episode(self) -> None:
        self.new_episodes += 1

    def close(self) -> None:
        self.closed = True


def _read_until(device, predicate, timeout=5.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reading = device.read()
        if predicate(reading):
            return reading
        time.sleep(0.01)
    raise AssertionError(f"no such reading within {timeout} s; last {reading}")


def test_the_relay_carries_a_person_s_device_to_the_actor_and_releases_it_when_stale():
    import time

    from robostack.env.teleop import start_episode
    from robostack.env.teleop_relay import MAX_AGE, RelayedDevice, TeleopRelay

    person = CountingDevice()
    relay = TeleopRelay(person)
    relay.start()
    remote = RelayedDevice(relay.readings_endpoint, relay.view_endpoint)
    try:
        # Episode 0 has not been announced to the relay's device: no deadman yet.
        assert not _read_until(remote, lambda r: r.timestamp > 0).intervene
        # The actor's reset reaches the real device (the keyboard forgets its latched keys)...
        start_episode(remote, 1)
        reading = _read_until(remote, lambda r: r.intervene)
        assert person.new_episodes >= 1
        np.testing.assert_allclose(reading.translation, [0.5, 0.0, 0.0])
        # ...an edge arrives once, however often the actor reads...
        person.success_pending = True
        _read_until(remote, lambda r: r.success)
        assert not any(remote.read().success for _ in range(20))
        # ...and readings of an earlier episode are no readings.
        remote.reset(episode=5)
        assert not remote.read().intervene
        _read_until(remote, lambda r: r.intervene)
    finally:
        relay.close()
    assert person.closed
    time.sleep(MAX_AGE + 0.1)
    released = remote.read()  # the launcher is gone: as if the person let go
    assert not released.intervene and not np.any(released.translation)
    remote.close()


def test_a_device_that_fails_in_the_relay_is_reported_in_one_line_not_retried():
    import time

    from robostack.env.teleop_relay import TeleopRelay

    class Unplugged(CountingDevice):
        def read(self):
            raise OSError("the gamepad was unplugged")

    relay = TeleopRelay(Unplugged())
    relay.start()
    deadline = time.monotonic() + 5.0
    while relay.failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    relay.close()
    assert relay.failure == "the scripted-person device failed: the gamepad was unplugged"
    assert relay.published == 0
