"""A task's physical parameters: object sizes and masses, spawn region, table height, goal.

Each task declares a frozen dataclass of them (`PickCubeParams`, `ReachParams`) with a field per
parameter, made with `parameter(...)` so that it carries its unit and meaning. A value is a
number, or, for a parameter marked `per_episode`, a range `(low, high)`: the task draws it
uniformly at every reset from the reset's random generator, so the same seed gives the same
episode. Parameters that shape the compiled scene or the success check (sizes, table height,
thresholds) hold for a whole run and take one number.

On the command line the parameters are one string:

    --task-params "cube_half_size=0.025,table_height=0.03,cube_mass=0.05:0.2"

`low:high` is a per-episode range. The parameters travel in the task config (`TaskConfig.params`,
so in the robot server's `hello` reply) and are recorded with the run.

Draw order: per-episode parameters given as ranges are drawn in the order the fields are
declared, one draw each; a single number draws nothing. Tasks declare their spawn position
first, so randomising a mass leaves every seed's spawn position as it was.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

Range = tuple[float, float]


def parameter(default, unit: str, meaning: str, per_episode: bool = False,
              positive: bool = False):
    """A parameter field: its default (a number, or (low, high) for a per-episode range), its unit
    and meaning (shown in error messages), whether it may vary per episode, whether it must be > 0."""
    return field(default=default, metadata={"unit": unit, "meaning": meaning,
                                            "per_episode": per_episode, "positive": positive})


@dataclass(frozen=True)
class TaskParams:
    """Base of every task's parameters: validation, parsing, per-episode draws."""

    task_name = "task"  # set by each subclass, for messages

    # Every task has a table; its top is the plane z = table_height of the base frame, and the
    # robot base stays at z = 0. Objects spawn on it; the workspace box and the experts follow.
    table_height: float = parameter(0.0, "m", "z of the table top in the robot base frame")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _checked(self, f, getattr(self, f.name)))

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_value(cls, value) -> "TaskParams":
        """The parameters from None (defaults), an instance, or a mapping of some or all of them
        (as `parse` returns, or as the `hello` reply carries them: ranges as lists)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls().updated(value)
        raise TypeError(f"{cls.task_name} parameters: expected a dict or {cls.__name__}, "
                        f"got {type(value).__name__}")

    def updated(self, values: dict) -> "TaskParams":
        """A copy with `values` (name -> number or (low, high)) replacing the current ones."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown {self.task_name} parameter(s) {unknown}; "
                             f"valid ones:\n{self.describe()}")
        return dataclasses.replace(self, **{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in values.items()})

    @classmethod
    def parse(cls, text: str) -> dict:
        """'name=value,name=low:high,...' -> {name: value or (low, high)}, checked (unknown names,
        bad numbers, low > high, ranges for run-wide parameters, non-positive sizes)."""
        fields_ = {f.name: f for f in dataclasses.fields(cls)}
        values: dict = {}
        for item in (part.strip() for part in (text or "").split(",")):
            if not item:
                continue
            name, equals, value = (s.strip() for s in item.partition("="))
            if not equals or not name or not value:
                raise ValueError(f"task parameter {item!r}: write name=value or name=low:high; "
                                 f"{cls.task_name} parameters:\n{cls.describe()}")
            if name not in fields_:
                raise ValueError(f"unknown {cls.task_name} parameter {name!r}; valid ones:\n"
                                 f"{cls.describe()}")
            if name in values:
                raise ValueError(f"task parameter {name!r} given twice")
            parts = value.split(":")
            if len(parts) > 2:
                raise ValueError(f"task parameter {item!r}: a range is low:high")
            numbers = []
            for part in parts:
                try:
                    numbers.append(float(part))
                except ValueError:
                    unit = fields_[name].metadata["unit"]
                    raise ValueError(f"task parameter {item!r}: {part.strip()!r} is not a number "
                                     f"({name} is in {unit})") from None
            values[name] = numbers[0] if len(numbers) == 1 else tuple(numbers)
        cls().updated(values)  # every check, once, with the messages of _checked
        return values

    @classmethod
    def describe(cls) -> str:
        """One line per parameter: name, unit, default, meaning; per-episode ones say so."""
        lines = []
        for f in dataclasses.fields(cls):
            default = f.default
            shown = f"{default[0]:g}:{default[1]:g}" if isinstance(default, tuple) else f"{default:g}"
            episode = ", low:high = per episode" if f.metadata["per_episode"] else ""
            lines.append(f"  {f.name} ({f.metadata['unit']}, default {shown}{episode}): "
                         f"{f.metadata['meaning']}")
        return "\n".join(lines)

    # --- use --------------------------------------------------------------------------------------
    def is_range(self, name: str) -> bool:
        return isinstance(getattr(self, name), tuple)

    def value(self, name: str) -> float:
        """A parameter's run-wide value; for a range, its midpoint (e.g. to build the scene)."""
        value = getattr(self, name)
        return (value[0] + value[1]) / 2 if isinstance(value, tuple) else value

    def sample(self, rng: np.random.Generator) -> dict[str, float]:
        """This episode's value of every per-episode parameter: ranges drawn uniformly, in field
        order, one draw each; single numbers as they are, drawing nothing."""
        episode = {}
        for f in dataclasses.fields(self):
            if f.metadata["per_episode"]:
                value = getattr(self, f.name)
                episode[f.name] = float(rng.uniform(*value)) if isinstance(value, tuple) else value
        return episode


def _checked(params: TaskParams, f: dataclasses.Field, value):
    """The value as a float or a (low, high) tuple of floats, or a ValueError that says why not."""
    where = f"{params.task_name} parameter {f.name} ({f.metadata['unit']})"
    if isinstance(value, (tuple, list)):
        if not f.metadata["per_episode"]:
            per_episode = [g.name for g in dataclasses.fields(params) if g.metadata["per_episode"]]
            raise ValueError(f"{where} holds for the whole run and takes one number, not a range; "
                             f"per-episode {params.task_name} parameters: {', '.join(per_episode)}")
        if len(value) != 2:
            raise ValueError(f"{where}: a range is (low, high), got {value!r}")
        low, high = (_number(where, v) for v in value)
        if low > high:
            raise ValueError(f"{where}: range low {low:g} > high {high:g}")
        checked = (low, high)
    else:
        checked = _number(where, value)
    if f.metadata["positive"] and min(np.atleast_1d(checked)) <= 0:
        raise ValueError(f"{where} must be > 0, got {value!r}")
    return checked


def _number(where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)
