"""Ceilings on the Cartesian impedance gains: what a `gains` request may set, and the soft start's
scaled gains.

A robot server is started with `GainCeilings` (the arm's rated values by default, tightened by a
start option); `check_gains` admits a request only if every gain it names is a finite,
non-negative number (or one per axis / joint) at or below its ceiling, and the gains that result
(damping derived from stiffness included) stay within them too. Anything else raises
`GainRefused`, whose message names the gain, the value, the ceiling and how to raise it.

Why the ceilings bound what they bound:
* stiffness x error clip is the largest spring force the law can push with (reference limiting,
  controllers/cartesian_impedance.py), so it has a ceiling of its own (`max_clip_force`,
  `max_clip_torque`), besides each factor's; an infinite clip is never allowed.
* torque limits and the torque rate are the arm's own (controllers/franka.py): libfranka aborts
  above the rate, and no law should plan beyond the joints' torques.
* stiffness and damping ceilings keep the 1 kHz discrete law stable and the arm compliant. The
  stiffness defaults are the stiffest setting of the Panda's built-in Cartesian impedance in
  libfranka's examples (3000 N/m, 300 Nm/rad); the damping ones sit above critical damping at
  those stiffnesses (2 sqrt(K) for 1 kg / 1 kg m^2), so the default law's derived damping fits.

SI units throughout (N/m, Nm/rad, Ns/m, Nms/rad, m, rad, Nm, Nm/s).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Real

import numpy as np

from controllers.cartesian_impedance import CartesianImpedanceGains
from controllers.franka import MAX_TORQUE_RATE, TORQUE_LIMITS

_REL = 1e-9  # relative slack in comparisons: 2000 N/m x 0.05 m is 100.00000000000001 N in floats

# Every field of CartesianImpedanceGains: (numbers: 1 scalar only, 3 per axis, 7 per joint, unit).
GAIN_SHAPES = {
    "translational_stiffness": (3, "N/m"), "rotational_stiffness": (3, "Nm/rad"),
    "translational_damping": (3, "Ns/m"), "rotational_damping": (3, "Nms/rad"),
    "nullspace_stiffness": (7, "Nm/rad"), "nullspace_damping": (7, "Nms/rad"),
    "translational_integral_gain": (3, "N/(m s)"), "rotational_integral_gain": (3, "Nm/(rad s)"),
    "translational_integral_limit": (3, "N"), "rotational_integral_limit": (3, "Nm"),
    "translational_clip": (3, "m"), "rotational_clip": (3, "rad"),
    "max_torque_rate": (1, "Nm/s"), "torque_limits": (7, "Nm"),
}
AUTO_DAMPING = ("translational_damping", "rotational_damping", "nullspace_damping")  # None: 2 sqrt(K)
PRODUCT_CEILINGS = {"max_clip_force": "N", "max_clip_torque": "Nm"}
CEILING_OPTION = "--gain-ceilings"  # the robot server's start option that sets GainCeilings


class GainRefused(ValueError):
    """A gains request that would leave the limits the server was started with; the message
    names the gain, the value, the ceiling and how to raise the ceiling."""


@dataclass(frozen=True)
class GainCeilings:
    """The most each gain may be set to (per axis / per joint where the gain is). A gain's
    ceiling applies to every one of its axes; torque_limits has one ceiling per joint."""

    translational_stiffness: float = 3000.0  # N/m
    rotational_stiffness: float = 300.0  # Nm/rad
    translational_damping: float = 200.0  # Ns/m
    rotational_damping: float = 40.0  # Nms/rad
    nullspace_stiffness: float = 50.0  # Nm/rad
    nullspace_damping: float = 20.0  # Nms/rad
    translational_integral_gain: float = 1000.0  # N/(m s)
    rotational_integral_gain: float = 100.0  # Nm/(rad s)
    translational_integral_limit: float = 30.0  # N, bound on the integral term's force
    rotational_integral_limit: float = 3.0  # Nm
    translational_clip: float = 0.05  # m, error clip per axis
    rotational_clip: float = 0.3  # rad
    max_clip_force: float = 100.0  # N, translational stiffness x clip, per axis
    max_clip_torque: float = 30.0  # Nm, rotational stiffness x clip, per axis
    max_torque_rate: float = MAX_TORQUE_RATE  # Nm/s
    torque_limits: tuple[float, ...] = TORQUE_LIMITS  # Nm per joint

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = np.asarray(getattr(self, f.name), dtype=float)
            n = 7 if f.name == "torque_limits" else 1
            if value.size != n or not (np.isfinite(value).all() and (value >= 0).all()):
                raise ValueError(f"gain ceiling {f.name}: need {n} finite number(s) >= 0, "
                                 f"got {getattr(self, f.name)!r}")
        if not self.max_torque_rate > 0.0:
            raise ValueError("gain ceiling max_torque_rate: must be > 0 Nm/s")
        # Made once: a gains request looks up ~23 ceilings inside a real-time control tick.
        arrays = {name: np.broadcast_to(np.asarray(getattr(self, name), dtype=float), (n,))
                  for name, (n, _) in GAIN_SHAPES.items()}
        object.__setattr__(self, "_arrays", arrays)

    def ceiling(self, name: str) -> np.ndarray:
        """The ceiling of gain `name` as a (read-only) array of its length (1, 3 or 7)."""
        return self._arrays[name]


def rated_ceilings(torque_limits=TORQUE_LIMITS, max_torque_rate: float = MAX_TORQUE_RATE) -> GainCeilings:
    """The ceilings an arm allows at most: the defaults, with the arm's own torque limits and
    torque rate where they are lower than a Panda's (a backend's `torque_limits`)."""
    limits = np.minimum(np.asarray(torque_limits, dtype=float), TORQUE_LIMITS)
    return GainCeilings(torque_limits=tuple(float(v) for v in limits),
                        max_torque_rate=min(float(max_torque_rate), MAX_TORQUE_RATE))


def parse_ceilings(text: str, rated: GainCeilings | None = None) -> GainCeilings:
    """GainCeilings from a start option "name=value,name=value" (e.g.
    "translational_stiffness=1500,translational_clip=0.02"; torque_limits takes 7 values
    separated by ':'), each at most the arm's `rated` value. Empty text: the rated ceilings.
    ValueError naming the problem, the valid names with units, and the rated values."""
    rated = rated or GainCeilings()
    names = [f.name for f in dataclasses.fields(GainCeilings)]
    values = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, equals, raw = item.partition("=")
        name = name.strip()
        if not equals or name not in names:
            valid = ", ".join(f"{n} ({_unit(n)})" for n in names)
            raise ValueError(f"{CEILING_OPTION}: {item!r} is not name=value with a known name; "
                             f"valid: {valid}")
        try:
            number = tuple(float(v) for v in raw.split(":")) if name == "torque_limits" else float(raw)
        except ValueError:
            raise ValueError(f"{CEILING_OPTION}: {name}={raw!r} is not a number "
                             f"({_unit(name)})") from None
        top = np.asarray(getattr(rated, name), dtype=float)
        given = np.asarray(number, dtype=float)
        if given.shape != top.shape:
            raise ValueError(f"{CEILING_OPTION}: {name} needs {top.size} value(s) ({_unit(name)}), "
                             f"got {raw!r}")
        if not (np.isfinite(given).all() and (given >= 0).all()):
            raise ValueError(f"{CEILING_OPTION}: {name}={raw} must be finite and >= 0 {_unit(name)}")
        if (given > top * (1 + _REL)).any():
            raise ValueError(f"{CEILING_OPTION}: {name}={raw} {_unit(name)} is above the arm's rated "
                             f"{_words(top)} {_unit(name)}; a ceiling can only tighten the rating")
        values[name] = number
    return dataclasses.replace(rated, **values)


def _unit(name: str) -> str:
    return PRODUCT_CEILINGS.get(name) or GAIN_SHAPES[name][1]


def _words(a) -> str:
    a = np.atleast_1d(np.asarray(a, dtype=float))
    return f"{a[0]:g}" if a.size == 1 or (a == a[0]).all() else "[" + ", ".join(f"{v:g}" for v in a) + "]"


def _refuse(name: str, value, ceiling, what: str = "") -> GainRefused:
    unit, rated = _unit(name), GainCeilings().ceiling(name)
    return GainRefused(
        f"gain {name}{what} = {_words(value)} {unit} is above its ceiling {_words(ceiling)} {unit}: "
        f"ask for at most that, or restart the robot server with a higher ceiling "
        f"({CEILING_OPTION} {name}=<value>, up to the arm's rated {_words(rated)} {unit})")


def _value(name: str, value) -> np.ndarray:
    """A requested gain as a float array of its length; GainRefused unless finite and >= 0."""
    n, unit = GAIN_SHAPES[name]
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(v, Real) and not isinstance(v, bool) for v in items):
        raise GainRefused(f"gain {name}: {value!r} is not a number; send one number"
                          + ("" if n == 1 else f" or {n} numbers (one per {'axis x, y, z' if n == 3 else 'joint'})")
                          + f" in {unit}")
    a = np.array([float(v) for v in items])
    if a.size == 1:
        a = np.full(n, a[0])
    if a.size != n:
        raise GainRefused(f"gain {name}: {len(items)} numbers; send one number or {n} numbers in {unit}")
    if not np.isfinite(a).all():
        raise GainRefused(f"gain {name}: {value!r} is not finite; send finite numbers in {unit} "
                          f"(an infinite {name} would remove the limit it sets)")
    if (a < 0).any():
        raise GainRefused(f"gain {name}: {value!r} is negative; send numbers >= 0 {unit}")
    return a


def check_gains(requested: dict, ceilings: GainCeilings,
                current: CartesianImpedanceGains | None = None) -> CartesianImpedanceGains:
    """The gains that result from applying `requested` (name -> number or per-axis list; None for
    a damping means 2 sqrt(K)) to `current`, if they are all within `ceilings`; else GainRefused.

    Both the request and the result are checked, so a damping left to None (derived from a new
    stiffness) and the clip force (stiffness x clip, where only one of them changed) are held
    to their ceilings too. Call it with {} to check a server's starting gains."""
    current = current if current is not None else CartesianImpedanceGains()
    if not isinstance(requested, dict):
        raise GainRefused(f"gains: expected a mapping of gain name -> value, got {type(requested).__name__}")
    unknown = sorted(str(k) for k in requested if k not in GAIN_SHAPES)
    if unknown:
        raise GainRefused(f"unknown gain(s) {unknown}; valid: "
                          + ", ".join(f"{n} ({u})" for n, (_, u) in GAIN_SHAPES.items()))
    validated = {}
    for name, value in requested.items():
        if value is None and name in AUTO_DAMPING:
            validated[name] = None
            continue
        a = _value(name, value)
        top = ceilings.ceiling(name)
        if (a > top * (1 + _REL)).any():
            raise _refuse(name, value, top)
        one = GAIN_SHAPES[name][0] == 1 or not isinstance(value, (list, tuple))
        validated[name] = float(a[0]) if one else a.tolist()
    try:  # the gains check their own numbers when made
        gains = dataclasses.replace(current, **validated)
        vec, clip, integral_limit, torque_limits, rate = gains.packed()
    except ValueError as error:
        raise GainRefused(f"gains: {error}") from None
    effective = {  # the arrays the law runs with, named as the ceilings are
        "translational_stiffness": vec[0:3], "rotational_stiffness": vec[3:6],
        "translational_damping": vec[6:9], "rotational_damping": vec[9:12],
        "translational_integral_gain": vec[12:15], "rotational_integral_gain": vec[15:18],
        "nullspace_stiffness": vec[18:25], "nullspace_damping": vec[25:32],
        "translational_clip": clip[:3], "rotational_clip": clip[3:],
        "translational_integral_limit": integral_limit[:3], "rotational_integral_limit": integral_limit[3:],
        "torque_limits": torque_limits, "max_torque_rate": np.array([rate]),
    }
    for name, a in effective.items():
        top = ceilings.ceiling(name)
        if not np.isfinite(a).all() or (a > top * (1 + _REL)).any():
            derived = " (derived: 2 sqrt(stiffness), since it is None)" \
                if name in AUTO_DAMPING and getattr(gains, name) is None else " (the resulting gains)"
            raise _refuse(name, a, top, derived)
    for name, k, c, what in (("max_clip_force", vec[0:3], clip[:3], "translational_stiffness x translational_clip"),
                             ("max_clip_torque", vec[3:6], clip[3:], "rotational_stiffness x rotational_clip")):
        product = k * c
        top = float(getattr(ceilings, name))
        if (product > top * (1 + _REL)).any():
            axis = "xyz"[int(np.argmax(product))]
            raise GainRefused(
                f"gains: {what} = {_words(k)} x {_words(c)} = {product.max():g} {_unit(name)} on axis "
                f"{axis} is above the spring-force ceiling {name} = {top:g} {_unit(name)}: lower the "
                f"stiffness or the clip, or restart the robot server with {CEILING_OPTION} "
                f"{name}=<value> (up to the arm's rated {getattr(GainCeilings(), name):g} {_unit(name)})")
    return gains


def soft_start_gains(gains: CartesianImpedanceGains, scale: float) -> CartesianImpedanceGains:
    """`gains` with the stiffnesses (Cartesian, nullspace, integral) scaled by `scale` (0..1)
    and every damping kept at its full value (derived ones computed from the full stiffness):
    while the spring engages the arm stays damped, as in the damped state it comes from."""
    scale = min(1.0, max(0.0, float(scale))) if math.isfinite(scale) else 0.0
    if scale == 1.0:
        return gains
    vec = gains.packed()[0]
    return dataclasses.replace(
        gains,
        translational_stiffness=(vec[0:3] * scale).tolist(), rotational_stiffness=(vec[3:6] * scale).tolist(),
        translational_damping=vec[6:9].tolist(), rotational_damping=vec[9:12].tolist(),
        translational_integral_gain=(vec[12:15] * scale).tolist(),
        rotational_integral_gain=(vec[15:18] * scale).tolist(),
        nullspace_stiffness=(vec[18:25] * scale).tolist(), nullspace_damping=vec[25:32].tolist())
