"""The arm's safety supervisor: which control law may drive the arm, decided by one pure state
machine, the same on the simulated mirror and on a real arm.

States and the events that move between them (every transition is recorded with its reason):

    disarmed --arm--> armed (holding, stiffness soft-started) --command--> tracking
    tracking --command deadline missed--> armed (hold at the measured pose)
    armed | tracking --controller's heartbeat lost / disarm--> stopping (damped) --> disarmed
    disarmed | armed | tracking | stopping --reset (real arm)--> homing --arrived--> armed
    any --fault--> fault --transient, within the bound--> recovering --clear--> disarmed
    fault --arm (explicit)--> recovering --clear--> armed;   fault --reset (teleport)--> armed
    fault --clear_fault (an operator's fault reset)--> recovering --clear--> disarmed

Rules it enforces:
* Motion only when armed: `command()` raises MotionRefused in every other state, naming what to
  send. Reconnecting never resumes motion by itself: after a damped stop, a fault or a
  recovery the arm is disarmed and only an explicit `arm` (or `reset`) energizes it again.
* Soft start: after `arm` the stiffness scale ramps linearly from 0 to 1 over
  `soft_start_time`, while the server keeps the damping at its full value, so an arm that sagged
  or drifted while damped is pulled back gently instead of snapping to the reference.
* A command is valid until its deadline; the first tick past it holds at the measured pose
  (within one tick: `tick` compares every tick, and costs about a microsecond).
* Only the controlling peer (the one that armed) keeps the arm armed: its heartbeats (and
  commands) count, other peers' do not, so a dashboard polling state cannot keep a silent
  controller's arm alive. Lost for `peer_timeout`: damped stop, then disarmed once every joint is
  slower than `stop_speed` (or after `stop_timeout` at the latest).
* Faults are read from the backend (codes, e.g. libfranka's error names) or raised by the server.
  Codes in `transient_faults` are recovered automatically, at most `max_recoveries` times within
  `recovery_window`; anything else, or one more, latches until an explicit `arm` or `reset`.
  An automatic recovery ends disarmed: it clears the fault, it never moves the arm.

Time is an argument of every call (s, any monotonic clock: wall-clock in real time, simulated
time in lock-step); nothing here reads a clock or does I/O. The caller acts on what `tick`
returns and drains `take_transitions()` into its state messages and episode log.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

STATES = ("disarmed", "armed", "tracking", "stopping", "homing", "fault", "recovering")
# The control law of each state: "damped" (torque -D dq, nothing commanded), "hold" (Cartesian
# impedance at a reference that does not move), "track" (Cartesian impedance toward the latest
# command), "homing" (the joint impedance move of a real arm's reset).
LAW = {"disarmed": "damped", "armed": "hold", "tracking": "track", "stopping": "damped",
       "homing": "homing", "fault": "damped", "recovering": "damped"}
ENERGIZED = ("armed", "tracking", "homing")  # the states whose law holds or moves the arm


class MotionRefused(ValueError):
    """A request the supervisor turns down in its current state; the message says why and what
    to send instead. A ValueError, so a server's request handler answers it as an error."""


@dataclass(frozen=True)
class SupervisorConfig:
    """Timing and fault rules of the supervisor. SI units (s, rad/s)."""

    command_deadline: float = 0.3  # s a command stays valid when it names no deadline of its own
    max_command_deadline: float = 1.0  # s, the longest deadline a command may ask for
    peer_timeout: float = 2.0  # s without a heartbeat from the controlling peer -> damped stop
    soft_start_time: float = 0.5  # s over which the stiffness ramps from 0 to 1 after 'arm'
    stop_speed: float = 0.01  # rad/s: a damped stop ends when every joint is slower than this...
    stop_settle: float = 0.02  # s ...for this long (one slow tick may be a reversal)...
    stop_timeout: float = 1.0  # s ...or after this long at the latest
    transient_faults: tuple[str, ...] = ("communication_constraints_violation",)  # auto-recovered
    max_recoveries: int = 3  # automatic recoveries allowed within recovery_window; then latched
    recovery_window: float = 60.0  # s
    recovery_delay: float = 0.1  # s damped in "fault" before an automatic recovery starts
    recovery_settle: float = 0.05  # s the backend must report no fault for a recovery to succeed
    recovery_timeout: float = 1.0  # s a recovery may take before it counts as failed

    def __post_init__(self):
        for name in ("command_deadline", "max_command_deadline", "peer_timeout", "stop_timeout",
                     "recovery_timeout"):
            if not getattr(self, name) > 0.0:  # inf allowed: lock-step has no wall-clock deadline
                raise ValueError(f"{name}: must be > 0 s, got {getattr(self, name)}")
        for name in ("soft_start_time", "stop_speed", "stop_settle", "recovery_window",
                     "recovery_delay", "recovery_settle"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value}")
        if self.command_deadline > self.max_command_deadline:
            raise ValueError(f"command_deadline {self.command_deadline} s is above "
                             f"max_command_deadline {self.max_command_deadline} s")
        if isinstance(self.max_recoveries, bool) or not isinstance(self.max_recoveries, int) \
                or self.max_recoveries < 0:
            raise ValueError(f"max_recoveries: must be an integer >= 0, got {self.max_recoveries!r}")
        if isinstance(self.transient_faults, str):
            raise ValueError("transient_faults: a tuple of fault codes, not one string")


class Transition(NamedTuple):
    """One change of state. seq counts from 0, so a reader of a lossy stream that carries the
    latest few transitions can tell which ones it has already seen."""

    seq: int
    time: float  # s, the caller's clock
    source: str
    target: str
    reason: str


class TickOutput(NamedTuple):
    """What the server does this tick."""

    mode: str  # "damped" | "hold" | "track" | "homing": the control law to run
    stiffness_scale: float  # 0..1: multiply the Cartesian stiffness by this (soft start)
    engage: bool  # the Cartesian law takes over from damping: reset it at the measured pose
    hold_here: bool  # tracking stopped: snap the reference to the measured pose (keep torque)
    recover: bool  # ask the backend to clear its faults now (if it can)
    state: str  # the supervisor's state after this tick
    reason: str  # why the supervisor is in this state (repeat it in every state message)


class Supervisor:
    """The state machine; see the module docstring for the rules."""

    def __init__(self, config: SupervisorConfig | None = None, now: float = 0.0,
                 history: int = 64):
        self.config = config or SupervisorConfig()
        self.state = "disarmed"
        self.since = float(now)  # when the current state was entered
        self.reason = "started disarmed: send 'arm' or 'reset' before commanding motion"
        self.controller = None  # the peer that armed; only its heartbeats count
        self.command_expires = -math.inf
        self.faults: tuple[str, ...] = ()  # the fault codes the backend reported last
        self.latched = False  # in "fault": no automatic recovery, waits for arm / reset
        self.recoveries: deque[float] = deque()  # start times of automatic recoveries
        self._last_heartbeat = -math.inf
        self._ramp_start = -math.inf  # soft start began here; -inf: full stiffness
        self._slow_since = None  # stopping: when every joint became slower than stop_speed
        self._clear_since = None  # recovering: since when the backend reports no fault
        self._recover_target = "disarmed"  # where a recovery in progress ends
        self._fault_code: str | None = None  # the latest fault's code
        self._fault_codes: set[str] = set()  # every code reported since the fault began
        self._engage = self._hold_here = self._recover = False  # one-shot outputs of next tick
        self._seq = 0
        self._new: list[Transition] = []
        self.history: deque[Transition] = deque(maxlen=history)  # the latest transitions

    # --- bookkeeping ------------------------------------------------------------------------
    def _go(self, now: float, target: str, reason: str) -> None:
        transition = Transition(self._seq, float(now), self.state, target, reason)
        self._seq += 1
        self._new.append(transition)
        self.history.append(transition)
        if len(self._new) > self.history.maxlen:  # nobody drains: keep the latest only
            del self._new[0]
        self.state, self.since, self.reason = target, float(now), reason

    def take_transitions(self) -> list[Transition]:
        """The transitions since the last call (oldest first), for the state message and log."""
        new, self._new = self._new, []
        return new

    def _peer_matches(self, peer) -> bool:
        # None on either side: the caller cannot tell peers apart (one client, or no identities
        # on its socket yet), so every peer counts as the controller.
        return peer is None or self.controller is None or peer == self.controller

    def _refuse(self, what: str) -> MotionRefused:
        hint = {
            "disarmed": "send 'arm' or 'reset' first (a reconnecting client never resumes motion "
                        "by itself)",
            "stopping": "the arm is in a damped stop; send 'arm' or 'reset' to energize it again",
            "homing": "a reset is driving the arm home; wait for the reset's reply",
            "fault": "once the cause is cleared send 'fault_reset' (recovers, stays disarmed), 'arm' "
                     "(recovers, then holds) or 'reset'",
            "recovering": "a fault recovery is in progress; wait for it, then send 'arm'",
        }[self.state]
        return MotionRefused(f"{what} refused: the arm is {self.state} ({self.reason}); {hint}")

    # --- events -----------------------------------------------------------------------------
    def arm(self, now: float, peer=None) -> None:
        """Energize: hold at the measured pose, stiffness soft-started. In "fault" it starts an
        explicit recovery first (armed when the backend reports no fault). `peer` becomes the
        controlling peer."""
        self.controller = peer
        self._last_heartbeat = now
        self.command_expires = -math.inf  # no motion until a command after this arm
        if self.state in ("fault", "recovering"):
            self._start_recovery(now, "armed", f"arm requested: recovering from "
                                 f"{self._fault_words()} before holding", automatic=False)
        elif self.state in ("armed", "tracking"):
            self._hold_here = self.state == "tracking"  # keep the ramp where it is: no sag
            self._go(now, "armed", "arm requested while armed: holding at the measured pose")
        else:
            self._energize(now, f"armed from {self.state}: holding at the measured pose, "
                                f"stiffness ramping up over {self.config.soft_start_time} s")

    def _energize(self, now: float, reason: str) -> None:
        self._engage, self._ramp_start = True, now
        self._go(now, "armed", reason)

    def disarm(self, now: float, reason: str = "disarm requested") -> None:
        """Damped stop, then disarmed. A fault stays a fault; a recovery is abandoned (latched)."""
        if self.state in ENERGIZED:
            self._stop(now, f"{reason}: damped stop")
        elif self.state == "recovering":
            self.latched = True
            self._go(now, "fault", f"{reason}: recovery abandoned, {self._fault_words()} latched")

    def _stop(self, now: float, reason: str) -> None:
        self._slow_since = None
        self.command_expires = -math.inf
        self._go(now, "stopping", reason)

    def command(self, now: float, valid_for: float | None = None, peer=None) -> None:
        """A motion command arrived (already validated and filtered): track it until
        `now + valid_for` (default: command_deadline). Raises MotionRefused unless armed, or
        when another peer controls the arm, or for a deadline that is not a number of seconds
        in (0, max_command_deadline]."""
        c = self.config
        if valid_for is None:
            valid_for = c.command_deadline
        elif isinstance(valid_for, bool) or not isinstance(valid_for, (int, float)) \
                or not 0.0 < valid_for <= c.max_command_deadline:
            raise MotionRefused(f"command deadline {valid_for!r}: must be a number of seconds in "
                                f"(0, {c.max_command_deadline}]; send a shorter deadline or none "
                                f"(default {c.command_deadline} s)")
        if self.state not in ("armed", "tracking"):
            raise self._refuse("command")
        if not self._peer_matches(peer):
            raise MotionRefused(f"command refused: the arm is controlled by another peer "
                                f"({self.controller!r}); send 'arm' to take control")
        self._last_heartbeat = now
        self.command_expires = now + valid_for
        if self.state == "armed":
            self._go(now, "tracking", f"command valid for {valid_for:g} s")

    def hold(self, now: float, reason: str) -> None:
        """Stop tracking and hold at the measured pose (e.g. the joint-limit guard tripped); the
        next command tracks again. Outside armed / tracking it changes nothing."""
        if self.state in ("armed", "tracking"):
            self._hold_here = True
            self.command_expires = -math.inf
            self._go(now, "armed", reason)

    def heartbeat(self, now: float, peer=None) -> bool:
        """The controlling peer is alive; True if this heartbeat counted (it came from it)."""
        if not self._peer_matches(peer):
            return False
        self._last_heartbeat = max(self._last_heartbeat, now)
        return True

    def fault(self, now: float, code: str, detail: str = "") -> None:
        """A fault (from the backend, or one the server detected): damped, and recovered
        automatically only if `code` is transient and the recovery bound is not spent. A code
        already reported since the fault began is ignored (a backend repeats it every tick)."""
        in_fault = self.state in ("fault", "recovering")
        if in_fault and code in self._fault_codes:
            return
        if not in_fault:
            self._fault_codes = set()
        self._fault_codes.add(code)
        c = self.config
        while self.recoveries and now - self.recoveries[0] > c.recovery_window:
            self.recoveries.popleft()
        if in_fault and self.latched:
            why = ("while latched: stays latched; once the cause is cleared send 'fault_reset' (ends "
                   "disarmed), 'arm' or 'reset'")
        elif code not in c.transient_faults:
            self.latched = True
            why = ("not a transient fault: latched; once the cause is cleared send 'fault_reset' (ends "
                   "disarmed), 'arm' or 'reset'")
        elif len(self.recoveries) >= c.max_recoveries:
            self.latched = True
            why = (f"{len(self.recoveries)} automatic recoveries within {c.recovery_window:g} s "
                   f"already: latched; check the arm, then send 'arm' or 'reset'")
        else:
            self.latched = False
            why = f"transient: recovering automatically in {c.recovery_delay:g} s"
        self.command_expires = -math.inf
        self._fault_code = code
        self._go(now, "fault", f"fault {code!r}" + (f" ({detail})" if detail else "") + f"; {why}")

    def _fault_words(self) -> str:
        return f"fault {self._fault_code!r}" if self._fault_code else "the fault"

    def _start_recovery(self, now: float, target: str, reason: str, automatic: bool) -> None:
        if automatic:
            self.recoveries.append(now)
        self._recover_target, self._clear_since, self._recover = target, None, True
        self._go(now, "recovering", reason)

    def clear_fault(self, now: float) -> bool:
        """An operator's fault reset: in "fault" (latched or not), ask the backend to clear its
        faults and end disarmed once it reports none for recovery_settle (a recovery that never
        energizes: motion still needs an explicit 'arm' or 'reset'). It does not count against
        max_recoveries (a person decided the cause is gone) and changes no whitelist: a fault
        the backend still reports after recovery_timeout latches again. True if a recovery is
        under way after the call (started now or already running), False when there is no fault."""
        if self.state == "recovering":
            return True
        if self.state != "fault":
            return False
        self._start_recovery(now, "disarmed", f"fault reset requested: recovering from "
                             f"{self._fault_words()}, then disarmed", automatic=False)
        return True

    def reset(self, now: float, teleport: bool, peer=None) -> None:
        """A reset was requested. teleport=True (a simulation puts the arm at rest at home): the
        new state replaces whatever happened, faults included: armed at once, full stiffness.
        teleport=False (a real arm is driven home): homing, refused while the backend still
        reports a fault (recover it with 'arm' first)."""
        self.controller = peer
        self._last_heartbeat = now
        self.command_expires = -math.inf
        if teleport:
            self.latched, self.faults = False, ()
            self._engage, self._ramp_start = True, -math.inf
            self._go(now, "armed", "reset: at rest at the home posture, holding")
            return
        if self.state in ("fault", "recovering") and self.faults:
            raise MotionRefused(f"reset refused: the backend still reports {list(self.faults)}; "
                                "send 'arm' to recover it first, then 'reset'")
        self.latched = False
        self._go(now, "homing", "reset: driving to the home posture")

    def homing_done(self, now: float, arrived: bool, reason: str = "") -> None:
        """The move home ended: arrived -> armed (full stiffness: the joint law held the arm
        all along); otherwise a damped stop (reason says why)."""
        if self.state != "homing":
            return  # aborted already (a fault, a disarm): that transition said why
        self._last_heartbeat = now  # the waiting client is alive: it is being answered
        if arrived:
            self._engage, self._ramp_start = True, -math.inf
            self._go(now, "armed", "reset: at the home posture, holding")
        else:
            self._stop(now, f"homing failed: {reason or 'home not reached'}")

    # --- the tick ---------------------------------------------------------------------------
    def tick(self, now: float, joint_velocity=0.0, faults=()) -> TickOutput:
        """Once per control tick (or per chunk of ticks the caller runs with one law): advance
        the timers and say what to do. joint_velocity: the measured joint speeds (rad/s; an
        array or the largest magnitude), read only while stopping. faults: the codes the backend
        reports now (empty when none or when it cannot tell)."""
        if faults or self.faults:
            faults = tuple(faults)
            for code in faults:
                if code not in self.faults:
                    self.fault(now, code)
            self.faults = faults
        state, c = self.state, self.config
        if state in ("armed", "tracking"):
            if now - self._last_heartbeat > c.peer_timeout:
                self._stop(now, f"controlling peer silent for {now - self._last_heartbeat:.3f} s "
                                f"(peer_timeout {c.peer_timeout:g} s): damped stop; send 'arm' "
                                "or 'reset' to resume")
            elif state == "tracking" and now > self.command_expires:
                self._hold_here = True
                self._go(now, "armed", f"command deadline missed by {now - self.command_expires:.4f} s: "
                                       "holding at the measured pose until the next command")
        elif state == "stopping":
            speed = _largest(joint_velocity)
            if speed < c.stop_speed:
                if self._slow_since is None:
                    self._slow_since = now
                if now - self._slow_since >= c.stop_settle:
                    self._go(now, "disarmed", f"stopped (every joint below {c.stop_speed:g} rad/s "
                                              f"after {now - self.since:.3f} s): disarmed; send "
                                              "'arm' or 'reset' to resume")
            else:
                self._slow_since = None
                if now - self.since >= c.stop_timeout:
                    self._go(now, "disarmed", f"still moving at {speed:.3f} rad/s after "
                                              f"{c.stop_timeout:g} s of damped stop: disarmed (damping "
                                              "stays on); send 'arm' or 'reset' to resume")
        elif state == "fault":
            if not self.latched and now - self.since >= c.recovery_delay:
                attempt = len(self.recoveries) + 1
                self._start_recovery(now, "disarmed", f"automatic recovery {attempt} of "
                                     f"{c.max_recoveries} within {c.recovery_window:g} s from "
                                     f"{self._fault_words()}", automatic=True)
        elif state == "recovering":
            if self.faults:
                self._clear_since = None
            elif self._clear_since is None:
                self._clear_since = now
            if self._clear_since is not None and now - self._clear_since >= c.recovery_settle:
                if self._recover_target == "armed":
                    self.latched = False
                    self._energize(now, f"recovered from {self._fault_words()}: holding at the "
                                        f"measured pose, stiffness ramping up")
                else:
                    self.latched = False
                    self._go(now, "disarmed", f"recovered from {self._fault_words()}: disarmed; "
                                              "send 'arm' or 'reset' to resume")
            elif now - self.since >= c.recovery_timeout:
                self.latched = True
                self._go(now, "fault", f"recovery from {self._fault_words()} failed: the backend "
                                       f"still reports {list(self.faults)} after "
                                       f"{c.recovery_timeout:g} s; latched: clear the cause, then "
                                       "send 'fault_reset', 'arm' or 'reset'")
        out = TickOutput(LAW[self.state], self.stiffness_scale(now), self._engage, self._hold_here,
                         self._recover, self.state, self.reason)
        self._engage = self._hold_here = self._recover = False
        return out

    def stiffness_scale(self, now: float) -> float:
        """0..1, the soft start's ramp (1 outside a ramp; 0 in the damped states)."""
        if self.state not in ("armed", "tracking"):
            return 0.0 if LAW[self.state] == "damped" else 1.0
        t = self.config.soft_start_time
        elapsed = now - self._ramp_start
        return 1.0 if t <= 0.0 or elapsed >= t else max(0.0, elapsed / t)

    def report(self) -> dict:
        """The supervisor's part of a state message (plain types, msgpack-ready)."""
        return {"state": self.state, "since": self.since, "reason": self.reason,
                "latched": self.latched, "faults": list(self.faults),
                "transitions": [list(t) for t in self.history][-8:]}


def _largest(velocity) -> float:
    try:
        return max(abs(float(v)) for v in velocity)
    except TypeError:  # a single number
        return abs(float(velocity))
