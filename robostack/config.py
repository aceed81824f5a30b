"""Typed dataclass configs <-> command-line options.

Every config is a dataclass whose fields carry defaults that work; each field becomes a
`--kebab-case` option whose help text is the comment written beside the field, so the source and
`--help` never disagree.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import re
import typing

# The simulated arms ("mirrors") that robostack.robot.backends.make_backend builds, for the
# `--backend` option of every command that starts a robot server. Named here because this module
# imports nothing of ours (DESIGN.md, rule 4); tests/test_backend_option.py checks the factory
# builds each one.
# mujoco-position: the MuJoCo mirror's Panda position-controlled (its own stiff servo follows the
# tcp), driven by the admittance law as a UR is (sim/mujoco_position.py, docs/admittance.md).
MIRRORS = ("mujoco", "pybullet", "mujoco-position")
# Real arms the factory also builds (hardware/): only `robostack robot-server --backend NAME
# --clock realtime` runs one, on the arm's machine; the other commands reach it with --endpoint.
REAL_ARMS = ("franka", "ur")


def check_backend(name: str, real_arms: bool = False) -> str:
    """`name` if it is one of MIRRORS (or REAL_ARMS, for the robot server), else a ValueError
    naming the choices (a usage error under `usage_errors`)."""
    if name in REAL_ARMS and not real_arms:
        raise ValueError(f"--backend {name!r} is a real arm: this command starts a mirror of its own. "
                         f"Run `robostack robot-server --backend {name} --clock realtime` for the "
                         "arm and give this command its address with --endpoint (or --robot-server)")
    if name not in MIRRORS + (REAL_ARMS if real_arms else ()):
        arms = f", or a real arm: {', '.join(REAL_ARMS)}" if real_arms else ""
        raise ValueError(f"--backend {name!r}: choose mujoco (the MuJoCo mirror), "
                         f"pybullet (the PyBullet mirror: the same Panda, tcp and controller) or "
                         f"mujoco-position (the MuJoCo mirror position-controlled, under the admittance "
                         f"law a UR runs){arms}")
    return name


_FIELD_COMMENT = re.compile(r"^\s*(\w+)\s*:[^#]*#\s*(.+)$")
_CONTINUATION = re.compile(r"^(\s+)#\s*(.+)$")  # a comment-only line under a field's comment


def field_help(cls) -> dict[str, str]:
    """Field name -> the comment on its line in the class source (empty if none), with the
    comment-only lines right below it that are indented deeper than the field (a comment too long
    for one line; a comment at the field's own indent starts a new section instead).
    """
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        name, column = None, -1
        for line in source.splitlines():
            match = _FIELD_COMMENT.match(line)
            if match:
                name, column = match.group(1), len(line) - len(line.lstrip())
                helps[name] = match.group(2).strip()
                continue
            more = _CONTINUATION.match(line)
            if name is not None and more and len(more.group(1)) > column:
                helps[name] += " " + more.group(2).strip()
            else:
                name = None
    return helps


def _parser_for(annotation):
    """(argparse type, nargs) for a field annotation given as a string or a type."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = text.replace(" ", "")
    if text.startswith("tuple[float") or text.startswith("tuple[int"):
        return (float if "float" in text else int), "+"
    if text.startswith("bool"):
        return _boolean, None
    if text.startswith("int"):
        return (lambda v: None if v.lower() == "none" else int(v)), None
    if text.startswith("float"):
        return (lambda v: None if v.lower() == "none" else float(v)), None
    return str, None


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def _field_default(f: dataclasses.Field, defaults=None):
    """The value a field starts from: the given instance's, else the field's own default."""
    if defaults is not None:
        return getattr(defaults, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def nested_prefix(f: dataclasses.Field) -> str:
    """The option prefix of a nested dataclass field: `--<field>-*` unless the field says
    otherwise with `field(metadata={"option_prefix": ""})` (its options read as the outer ones')."""
    return f.metadata.get("option_prefix", f"{f.name.replace('_', '-')}-")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, prefix: str = "",
                            defaults=None) -> None:
    """One option per field. A nested dataclass field `sac` gets its own group of `--sac-*`
    options whose defaults are those of the nested instance the outer default builds (so a
    `field(default_factory=lambda: SACConfig(init_temperature=0.01))` shows and parses as 0.01)."""
    helps = field_help(cls)
    doc = (cls.__doc__ or "").strip()
    if doc.startswith(cls.__name__ + "("):  # dataclass's generated signature, not a description
        doc = ""
    group = parser.add_argument_group(cls.__name__, doc.splitlines()[0] if doc else None)
    hints = typing.get_type_hints(cls) if not any(isinstance(f.type, str) for f in dataclasses.fields(cls)) else {}
    for f in dataclasses.fields(cls):
        default = _field_default(f, defaults)
        if default is dataclasses.MISSING:
            continue
        if dataclasses.is_dataclass(default):  # nested config: its own option group
            add_dataclass_arguments(parser, type(default), prefix + nested_prefix(f), default)
            continue
        kind, nargs = _parser_for(hints.get(f.name, f.type))
        help_text = helps.get(f.name, "")
        group.add_argument(
            f"--{prefix}{f.name.replace('_', '-')}", dest=f"{prefix.replace('-', '_')}{f.name}",
            type=kind, nargs=nargs, default=default,
            help=f"{help_text} (default: {default})" if help_text else f"(default: {default})",
        )


def dataclass_from_args(cls, args: argparse.Namespace, prefix: str = "", defaults=None):
    """The inverse of `add_dataclass_arguments`. Fields without an option keep their default; a
    nested dataclass starts from the instance the outer default builds, not its class defaults."""
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix.replace('-', '_')}{f.name}"
        default = _field_default(f, defaults)
        if dataclasses.is_dataclass(default):
            values[f.name] = dataclass_from_args(type(default), args, prefix + nested_prefix(f), default)
        elif hasattr(args, key):
            value = getattr(args, key)
            if isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
        elif defaults is not None and default is not dataclasses.MISSING:
            values[f.name] = default
    return cls(**values)


@contextlib.contextmanager
def usage_errors(parser: argparse.ArgumentParser):
    """A ValueError raised while building a config from the command line (a dataclass's
    __post_init__ check) becomes a usage error: the message and exit code 2, no traceback."""
    try:
        yield
    except ValueError as exc:
        parser.error(str(exc))
