"""Child processes that never outlive the process that started them.

`python -m robostack.processes MODULE ARGS...` first asks Linux to send it SIGTERM when its
parent dies (PR_SET_PDEATHSIG), even by kill -9, then runs MODULE as __main__. The launcher
starts its robot servers, learner and actors this way, and so does `spawn_robot_server`, so a
library user who forgets `env.close()` (or whose script crashes) leaves no robot server behind.
On other systems the parent's own cleanup (close(), atexit) is all there is.

The death signal follows the parent *thread* that started the child: start children from the
main thread, or from a thread that lives as long as they should.
"""

from __future__ import annotations

import os
import signal
import sys

PARENT_VARIABLE = "ROBOSTACK_PARENT"


def child_command(module: str, *args: str) -> list[str]:
    """The argv that runs `module` (with `args`) as a child tied to this process."""
    return [sys.executable, "-m", "robostack.processes", module, *args]


def child_environment(**overrides: str) -> dict[str, str]:
    """os.environ plus the parent's pid (checked by the child) and `overrides`."""
    return dict(os.environ, **{PARENT_VARIABLE: str(os.getpid())}, **overrides)


def die_with_parent() -> None:
    """SIGTERM this process when its parent dies (Linux); exit now if it already has."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent's own shutdown still stops us
    expected = os.environ.get(PARENT_VARIABLE)
    if expected and os.getppid() != int(expected):  # the parent died before prctl took effect
        sys.exit("robostack: the parent process died while this one started")


def main(argv: list[str]) -> None:
    import runpy

    die_with_parent()
    module, rest = argv[0], argv[1:]
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
