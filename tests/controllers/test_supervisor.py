"""The safety supervisor (controllers/supervisor.py) on a fake clock: every transition and every
timing rule, then random event sequences (seeded) against the invariants.

The clock is a number the test advances; ticks come every TICK seconds (a 1 kHz loop).
"""

from __future__ import annotations

import math
import random

import pytest

from controllers.supervisor import LAW, STATES, MotionRefused, Supervisor, SupervisorConfig

TICK = 0.001  # s, a 1 kHz control loop
CONFIG = SupervisorConfig(command_deadline=0.1, max_command_deadline=1.0, peer_timeout=0.5,
                          soft_start_time=0.2, stop_speed=0.01, stop_settle=0.005, stop_timeout=1.0,
                          transient_faults=("communication_constraints_violation",),
                          max_recoveries=2, recovery_window=10.0, recovery_delay=0.05,
                          recovery_settle=0.01, recovery_timeout=0.5)
TRANSIENT, SERIOUS = "communication_constraints_violation", "cartesian_reflex"


def run(sup, start: float, seconds: float, velocity=0.0, faults=(), heartbeat_every=None):
    """Tick from `start` for `seconds` at 1 kHz; returns [(time, output)]. heartbeat_every: s
    between heartbeats of the (anonymous) controlling peer, or None for a silent peer."""
    out = []
    n = int(round(seconds / TICK))
    for i in range(1, n + 1):
        now = start + i * TICK
        if heartbeat_every is not None and i % max(1, round(heartbeat_every / TICK)) == 0:
            sup.heartbeat(now)
        v = velocity(now) if callable(velocity) else velocity
        out.append((now, sup.tick(now, v, faults)))
    return out


def armed(now: float = 0.0, config=CONFIG, peer=None) -> Supervisor:
    sup = Supervisor(config, now=now)
    sup.arm(now, peer=peer)
    return sup


def states(sup) -> list[tuple[str, str]]:
    return [(t.source, t.target) for t in sup.history]


# --- arming, soft start, refusals -----------------------------------------------------------------

def test_starts_disarmed_damped_and_refuses_motion_naming_the_fix():
    sup = Supervisor(CONFIG)
    out = sup.tick(0.0)
    assert (out.mode, out.state, out.stiffness_scale) == ("damped", "disarmed", 0.0)
    with pytest.raises(MotionRefused, match="disarmed.*send 'arm' or 'reset'"):
        sup.command(0.001)
    assert sup.tick(0.002).mode == "damped"


def test_arm_engages_once_and_ramps_the_stiffness_linearly_over_the_soft_start():
    sup = armed(1.0)
    first = sup.tick(1.0)
    assert (first.mode, first.engage, first.stiffness_scale) == ("hold", True, 0.0)
    ticks = run(sup, 1.0, 0.3, heartbeat_every=0.1)
    assert not any(o.engage for _, o in ticks)  # one-shot
    scale = {round(t - 1.0, 3): o.stiffness_scale for t, o in ticks}
    for elapsed, expected in [(0.001, 0.005), (0.05, 0.25), (0.1, 0.5), (0.15, 0.75), (0.2, 1.0),
                              (0.3, 1.0)]:
        assert scale[elapsed] == pytest.approx(expected, abs=1e-9), elapsed
    values = [o.stiffness_scale for _, o in ticks]
    assert values == sorted(values) and all(0.0 <= v <= 1.0 for v in values)


def test_no_soft_start_configured_means_full_stiffness_at_once():
    sup = armed(0.0, SupervisorConfig(soft_start_time=0.0))
    assert sup.tick(0.0).stiffness_scale == 1.0


def test_a_command_while_armed_tracks_and_a_second_arm_holds_without_restarting_the_ramp():
    sup = armed(0.0)
    run(sup, 0.0, 0.1, heartbeat_every=0.05)
    sup.command(0.1)
    out = sup.tick(0.101)
    assert (out.mode, out.state) == ("track", "tracking")
    sup.arm(0.102)
    out = sup.tick(0.102)
    assert (out.mode, out.hold_here, out.engage) == ("hold", True, False)
    assert out.stiffness_scale == pytest.approx(0.51)  # the ramp went on from where it was


@pytest.mark.parametrize("valid_for", [math.nan, -0.1, 0.0, 1.5, math.inf, True, "0.1", None])
def test_command_deadlines_outside_the_allowed_range_are_refused(valid_for):
    sup = armed(0.0)
    if valid_for is None:  # no deadline named: the configured default
        sup.command(0.0, valid_for)
        assert sup.command_expires == pytest.approx(CONFIG.command_deadline)
        return
    with pytest.raises(MotionRefused, match=r"deadline .*seconds in \(0, 1.0\]"):
        sup.command(0.0, valid_for)
    assert sup.state == "armed"


# --- command deadline -> hold ---------------------------------------------------------------------

@pytest.mark.parametrize("phase", [0.0, 0.0003, 0.0005, 0.0009])
def test_a_missed_command_deadline_holds_within_two_ticks(phase):
    sup = armed(0.0)
    start = 0.3 + phase  # the command arrives between two ticks
    run(sup, 0.0, 0.3, heartbeat_every=0.1)
    sup.command(start, valid_for=0.05)
    ticks = run(sup, 0.3, 0.1)
    expires = start + 0.05
    tracking = [t for t, o in ticks if o.mode == "track"]
    holding = [(t, o) for t, o in ticks if o.mode == "hold"]
    assert tracking and max(tracking) <= expires + 1e-12  # tracked only while the command was valid
    first_hold, out = holding[0]
    assert out.hold_here and sum(o.hold_here for _, o in holding) == 1
    assert 0.0 < first_hold - expires <= 2 * TICK + 1e-12, first_hold - expires
    assert all(o.mode == "hold" for t, o in ticks if t >= first_hold)
    assert "deadline missed" in out.reason
    sup.command(0.45)  # the next command tracks again
    assert sup.tick(0.451).mode == "track"


def test_a_hold_from_the_server_stops_tracking_until_the_next_command():
    sup = armed(0.0)
    sup.command(0.0)
    sup.hold(0.01, "joint 4 near its limit: holding")
    out = sup.tick(0.011)
    assert (out.mode, out.hold_here, out.reason) == ("hold", True, "joint 4 near its limit: holding")
    sup.command(0.02)
    assert sup.tick(0.021).mode == "track"
    sup.disarm(0.03)
    sup.hold(0.04, "ignored")
    assert sup.state == "stopping"


# --- the controlling peer ---------------------------------------------------------------------

def test_heartbeats_keep_the_arm_armed_and_their_loss_is_a_damped_stop_then_disarmed():
    sup = armed(0.0)
    kept = run(sup, 0.0, 2.0, heartbeat_every=0.4)  # faster than peer_timeout 0.5 s
    assert all(o.mode == "hold" for _, o in kept)
    last_heartbeat = 2.0
    # The arm was moving when the peer went silent; damping slows it to rest in ~0.3 s.
    speed = lambda t: 0.5 * max(0.0, 1.0 - (t - (last_heartbeat + CONFIG.peer_timeout)) / 0.3)  # noqa: E731
    ticks = run(sup, 2.0, 1.5, velocity=speed)
    stop = next(t for t, o in ticks if o.mode == "damped")
    assert 0.0 < stop - (last_heartbeat + CONFIG.peer_timeout) <= 2 * TICK + 1e-12
    assert [s for s in states(sup)][-2:] == [("armed", "stopping"), ("stopping", "disarmed")]
    stopping = sup.history[-2]
    assert "silent" in stopping.reason and "peer_timeout" in stopping.reason
    disarmed_at = sup.history[-1].time
    slow_from = last_heartbeat + CONFIG.peer_timeout + 0.3 * (1 - CONFIG.stop_speed / 0.5)
    assert slow_from < disarmed_at <= slow_from + CONFIG.stop_settle + 2 * TICK
    assert "stopped" in sup.history[-1].reason


def test_a_stop_that_does_not_come_to_rest_disarms_after_the_stop_timeout():
    sup = armed(0.0)
    sup.disarm(0.0, "operator pressed stop")
    ticks = run(sup, 0.0, 1.2, velocity=[0.0, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0])
    disarmed = next(t for t, o in ticks if o.state == "disarmed")
    assert disarmed == pytest.approx(CONFIG.stop_timeout, abs=TICK)
    assert all(o.mode == "damped" for _, o in ticks)
    assert "still moving at 0.200 rad/s" in sup.reason
    assert sup.history[-2].reason == "operator pressed stop: damped stop"


def test_a_slow_tick_during_a_reversal_does_not_end_the_stop():
    sup = armed(0.0)
    sup.disarm(0.0)
    reversal = lambda t: 0.0 if abs(t - 0.1) < 0.0015 else 0.3  # noqa: E731  one or two slow ticks
    run(sup, 0.0, 0.2, velocity=reversal)
    assert sup.state == "stopping"


def test_nan_velocity_never_counts_as_stopped():
    sup = armed(0.0)
    sup.disarm(0.0)
    run(sup, 0.0, 0.5, velocity=math.nan)
    assert sup.state == "stopping"


def test_reconnecting_never_resumes_motion_only_a_new_arm_does():
    sup = armed(0.0)
    sup.command(0.0)
    run(sup, 0.0, 1.0)  # the peer goes silent: stop, disarmed
    assert sup.state == "disarmed"
    assert sup.heartbeat(1.001)  # it is back
    for _, out in run(sup, 1.0, 0.1, heartbeat_every=0.01):
        assert out.mode == "damped"
    with pytest.raises(MotionRefused, match="never resumes motion by itself"):
        sup.command(1.1)
    sup.arm(1.1)
    sup.command(1.1)
    assert sup.tick(1.101).mode == "track"


def test_only_the_controlling_peer_keeps_the_arm_armed_or_commands_it():
    sup = armed(0.0, peer="actor")
    assert not sup.heartbeat(0.1, peer="dashboard")  # a state poller does not count
    with pytest.raises(MotionRefused, match="controlled by another peer.*'actor'"):
        sup.command(0.1, peer="dashboard")
    for i in range(1, 600):  # the dashboard polls every tick, the actor is silent
        sup.heartbeat(i * TICK, peer="dashboard")
        sup.tick(i * TICK)
    assert ("armed", "stopping") in states(sup) and "silent" in sup.history[1].reason
    sup = armed(0.0, peer="actor")
    for i in range(1, 600):
        sup.heartbeat(i * TICK, peer="actor" if i % 300 == 0 else "dashboard")
        sup.tick(i * TICK)
    assert sup.state == "armed"


# --- faults and recovery ---------------------------------------------------------------------

def test_a_transient_fault_recovers_automatically_to_disarmed_never_to_motion():
    sup = armed(0.0)
    sup.command(0.0)
    ticks = run(sup, 0.0, 0.03, faults=(TRANSIENT,))  # the backend reports it for 30 ms
    assert ticks[0][1].state == "fault" and ticks[0][1].mode == "damped"
    ticks += run(sup, 0.03, 0.2, faults=())
    recovering = [(t, o) for t, o in ticks if o.state == "recovering"]
    assert recovering[0][1].recover and sum(o.recover for _, o in ticks) == 1
    assert recovering[0][0] == pytest.approx(0.001 + CONFIG.recovery_delay, abs=TICK)
    assert sup.state == "disarmed" and "recovered from fault" in sup.reason
    assert [s for _, s in states(sup)] == ["armed", "tracking", "fault", "recovering", "disarmed"]
    with pytest.raises(MotionRefused):
        sup.command(0.3)
    sup.arm(0.3)
    assert sup.tick(0.3).engage


def test_automatic_recovery_is_bounded_within_its_window():
    sup = Supervisor(CONFIG)
    now = 0.0
    for attempt in range(CONFIG.max_recoveries):
        sup.fault(now, TRANSIENT)
        run(sup, now, 0.2)
        assert sup.state == "disarmed", attempt
        now += 0.2
    sup.fault(now, TRANSIENT)  # one more within the window: latched
    run(sup, now, 2.0)
    assert sup.state == "fault" and sup.latched
    assert f"{CONFIG.max_recoveries} automatic recoveries within 10 s" in sup.reason
    later = CONFIG.recovery_window + 1.0  # the window has passed: recovered automatically again
    sup.reset(later, teleport=True)
    sup.fault(later, TRANSIENT)
    run(sup, later, 0.2)
    assert sup.state == "disarmed" and not sup.latched


def test_a_fault_not_on_the_whitelist_latches_until_an_explicit_arm():
    sup = armed(0.0)
    sup.tick(0.001, faults=(SERIOUS,))
    assert sup.state == "fault" and sup.latched and "not a transient fault" in sup.reason
    run(sup, 0.001, 3.0, faults=(SERIOUS,))
    run(sup, 3.001, 3.0, faults=())  # gone from the backend: still latched
    assert sup.state == "fault" and len(sup.history) == 2  # repeated reports are no new transitions
    sup.arm(6.0)
    out = sup.tick(6.0)
    assert out.state == "recovering" and out.recover and not out.engage
    run(sup, 6.0, 0.05)
    assert sup.state == "armed" and "recovered" in sup.reason
    assert sup.stiffness_scale(sup.since) == 0.0  # soft-started again


def test_an_explicit_recovery_that_does_not_clear_the_fault_latches_again_naming_it():
    sup = armed(0.0)
    sup.fault(0.0, SERIOUS, "collision detected")
    assert "collision detected" in sup.reason
    sup.arm(1.0)
    run(sup, 1.0, 0.6, faults=(SERIOUS,))
    assert sup.state == "fault" and sup.latched
    assert "still reports ['cartesian_reflex']" in sup.reason


def test_an_operators_fault_reset_recovers_a_latched_fault_to_disarmed_never_to_motion():
    sup = Supervisor(CONFIG, now=0.0)
    assert not sup.clear_fault(0.0) and sup.state == "disarmed"  # no fault: nothing happens
    sup.arm(0.0)
    sup.tick(0.001, faults=(SERIOUS,))
    assert sup.state == "fault" and sup.latched
    assert sup.clear_fault(1.0)
    out = sup.tick(1.0, faults=(SERIOUS,))
    assert out.state == "recovering" and out.recover and not out.engage
    run(sup, 1.0, 0.6, faults=(SERIOUS,))  # the backend still reports it: latched again
    assert sup.state == "fault" and sup.latched and "still reports" in sup.reason
    assert sup.clear_fault(2.0) and sup.clear_fault(2.0)  # a second call while recovering: same one
    run(sup, 2.0, 0.05, faults=())
    assert sup.state == "disarmed" and "recovered from fault 'cartesian_reflex'" in sup.reason
    assert len(sup.recoveries) == 0  # a person's reset does not spend the automatic bound
    with pytest.raises(MotionRefused, match="disarmed"):
        sup.command(2.1)


def test_a_reset_by_teleport_replaces_a_fault_and_a_homing_reset_waits_for_a_healthy_arm():
    sup = armed(0.0)
    sup.tick(0.0, faults=(SERIOUS,))
    with pytest.raises(MotionRefused, match=r"still reports \['cartesian_reflex'\].*'arm'"):
        sup.reset(0.1, teleport=False)
    sup.reset(0.1, teleport=True)
    out = sup.tick(0.1)
    assert (out.state, out.engage, out.stiffness_scale) == ("armed", True, 1.0)
    sup.tick(0.2, faults=(SERIOUS,))
    run(sup, 0.2, 0.1, faults=())  # cleared in the backend: the homing reset may go
    sup.reset(0.3, teleport=False)
    assert sup.tick(0.3).mode == "homing"


def test_homing_ignores_the_peer_timeout_and_ends_armed_or_in_a_damped_stop():
    sup = Supervisor(CONFIG)
    sup.reset(0.0, teleport=False)
    ticks = run(sup, 0.0, 3.0)  # a client waiting for the reset sends nothing
    assert all(o.mode == "homing" for _, o in ticks)
    sup.homing_done(3.0, arrived=True)
    out = sup.tick(3.0)
    assert (out.mode, out.engage, out.stiffness_scale) == ("hold", True, 1.0)
    sup.reset(3.1, teleport=False)
    sup.homing_done(4.0, arrived=False, reason="home not reached within 10 s")
    assert sup.state == "stopping" and "home not reached" in sup.reason
    sup.reset(5.0, teleport=False)
    sup.tick(5.001, faults=(TRANSIENT,))
    assert sup.tick(5.002).mode == "damped"  # a fault aborts homing
    sup.homing_done(5.003, arrived=True)  # the server's late report changes nothing
    assert sup.state == "fault"


# --- transitions, report, configuration ---------------------------------------------------------------

def test_every_transition_is_recorded_once_with_its_reason_and_drained_by_the_caller():
    sup = armed(0.0)
    sup.command(0.0)
    run(sup, 0.0, 1.5)
    new = sup.take_transitions()
    assert [(t.source, t.target) for t in new] == [("disarmed", "armed"), ("armed", "tracking"),
                                                   ("tracking", "armed"), ("armed", "stopping"),
                                                   ("stopping", "disarmed")]
    assert [t.seq for t in new] == list(range(5)) and all(t.reason for t in new)
    assert sup.take_transitions() == []
    report = sup.report()
    assert report["state"] == "disarmed" and report["transitions"][-1][3] == "disarmed"
    assert all(type(v) in (str, float, bool, list) for v in report.values())


def test_undrained_transitions_stay_bounded():
    sup = Supervisor(CONFIG, history=8)
    for i in range(100):
        sup.arm(i)
        sup.disarm(i + 0.5)
    assert len(sup.take_transitions()) == 8 and len(sup.history) == 8


@pytest.mark.parametrize("field, value, words", [
    ("peer_timeout", 0.0, "peer_timeout: must be > 0 s"),
    ("soft_start_time", math.nan, "soft_start_time: must be a finite number >= 0"),
    ("command_deadline", 2.0, "above max_command_deadline"),
    ("max_recoveries", -1, "max_recoveries: must be an integer >= 0"),
    ("transient_faults", "communication_constraints_violation", "a tuple of fault codes"),
])
def test_bad_configuration_is_refused_naming_the_field(field, value, words):
    with pytest.raises(ValueError, match=words):
        SupervisorConfig(**{field: value})


# --- random event sequences -------------------------------------------------------------------

EVENTS = ("tick", "tick", "tick", "tick", "arm", "disarm", "command", "command", "heartbeat",
          "heartbeat_other", "fault_transient", "fault_serious", "backend_fault", "reset_teleport",
          "reset_homing", "homing_done", "hold", "wait")


@pytest.mark.parametrize("seed", range(20))
def test_random_event_sequences_keep_the_invariants(seed):
    """Never "track" unless an arm (or reset) came after the latest fault, under a fresh command,
    with the controller's heartbeat fresh; no transition from "fault" or "recovering" straight
    to "tracking"; a refusal leaves the state as it was; the law always matches the state."""
    rng = random.Random(seed)
    sup = Supervisor(CONFIG)
    now = 0.0
    needs_arm = True  # no arm or reset since the start or the latest fault
    last_command, last_valid_for = -math.inf, 0.0
    backend_faults: tuple[str, ...] = ()
    last = None
    seen = set()
    for _ in range(3000):
        event = rng.choice(EVENTS)
        now += TICK if event != "wait" else rng.uniform(0.0, 1.0)
        before = sup.state
        try:
            if event == "arm":
                sup.arm(now)
                needs_arm = False
            elif event == "disarm":
                sup.disarm(now)
            elif event == "command":
                valid_for = rng.choice([None, 0.01, 0.3, 1.0, 5.0, -1.0])
                sup.command(now, valid_for)
                last_command, last_valid_for = now, valid_for or CONFIG.command_deadline
            elif event == "heartbeat":
                sup.heartbeat(now)
            elif event == "fault_transient":
                sup.fault(now, TRANSIENT)
            elif event == "fault_serious":
                sup.fault(now, SERIOUS)
            elif event == "backend_fault":
                backend_faults = () if backend_faults else (rng.choice([TRANSIENT, SERIOUS]),)
            elif event == "reset_teleport":
                sup.reset(now, teleport=True)
                backend_faults, needs_arm = (), False
            elif event == "reset_homing":
                sup.reset(now, teleport=False)
                needs_arm = False
            elif event == "homing_done":
                sup.homing_done(now, arrived=rng.random() < 0.7)
            elif event == "hold":
                sup.hold(now, "the server holds (joint-limit guard)")
        except MotionRefused:
            assert sup.state == before, event  # a refusal changes nothing
        out = sup.tick(now, rng.choice([0.0, 0.005, 0.5]), backend_faults)
        for t in sup.take_transitions():
            seen.add((t.source, t.target))
            if t.target == "fault":
                needs_arm = True
            assert t.reason, t
            if last is not None:
                assert t.source == last.target and t.time >= last.time and t.seq == last.seq + 1, (last, t)
            assert not (t.source in ("fault", "recovering") and t.target == "tracking"), t
            last = t
        assert out.state == sup.state in STATES and out.mode == LAW[sup.state]
        assert 0.0 <= out.stiffness_scale <= 1.0
        if out.mode == "track":
            assert not needs_arm, (seed, list(sup.history)[-5:])
            assert now <= last_command + last_valid_for + 1e-9, (now, last_command, last_valid_for)
            assert now - sup._last_heartbeat <= CONFIG.peer_timeout
        if sup.state in ("disarmed", "stopping", "fault", "recovering", "homing"):
            with pytest.raises(MotionRefused):
                sup.command(now)
    # The sequences reach the whole machine, so the invariants were tested where they matter.
    assert {("armed", "tracking"), ("tracking", "armed"), ("fault", "recovering"),
            ("stopping", "disarmed")} <= seen, seen
