"""Which CPU cores each process of a run may use (Linux; elsewhere nothing is pinned).

A lock-step robot server and its env client (the actor) take strict turns: the client sends a
step and waits, the server runs 100 physics ticks and answers, the client picks an action and
sends the next one. Left to itself the scheduler wakes each of them on whichever core is idle,
so the two hop between cores: every hop is a cross-core wake-up (slow in a VM) and a cold cache
for the physics. On the 2-core machine this was measured on, pinning the pair to one core made
env steps over ZeroMQ 5-15 % faster and far less variable (benchmarks/bench_env.py); the
learner, which runs all the time, gets the other core(s) to itself.
"""

from __future__ import annotations

import os


def available_cpus() -> list[int]:
    """Cores this process may run on, sorted; [] where the OS does not tell (not Linux)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return []


def pin(pid: int, cpus: set[int] | list[int]) -> bool:
    """Restrict process `pid` (0: this one) to `cpus`. False where unsupported; a process that
    already exited is not an error (a supervisor notices that on its own)."""
    try:
        os.sched_setaffinity(pid, set(cpus))
        return True
    except AttributeError:
        return False
    except ProcessLookupError:
        return False


def plan_training(actors: int, cpus: list[int] | None = None) -> dict[str, list[int]] | None:
    """Cores for a training run: each actor and its robot server share one core, counted from
    the last, and the learner gets all the others. None (pin nothing) when there are not at
    least actors + 1 cores: squeezing two actor pairs onto one core would serialise them."""
    cpus = available_cpus() if cpus is None else sorted(cpus)
    if len(cpus) < actors + 1:
        return None
    plan = {"learner": cpus[: len(cpus) - actors]}
    for i in range(actors):
        plan[f"actor-{i}"] = plan[f"robot-server-{i}"] = [cpus[len(cpus) - 1 - i]]
    return plan
