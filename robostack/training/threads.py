"""What happens when a thread of a training process dies: the process dies with it.

A learner whose receiver thread died stays up doing nothing: actors time out, the run stops,
and the launcher, which restarts only children that exit, cannot tell. So the processes' main()
install `exit_when_a_thread_dies`: an uncaught exception in any thread prints its traceback and
ends the process with a non-zero code (EXIT_THREAD_DIED), which the launcher restarts.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback

EXIT_THREAD_DIED = 70  # EX_SOFTWARE; any non-zero code but 2 (a usage error) is restarted


def exit_when_a_thread_dies(code: int = EXIT_THREAD_DIED) -> None:
    """From now on, an uncaught exception in any thread other than the main one prints its
    traceback to stderr and calls os._exit(code) (no cleanup: the state is unknown, the last
    checkpoint is what a restart resumes from)."""

    def die(args):
        if args.exc_type is SystemExit:
            return
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        name = args.thread.name if args.thread is not None else "?"
        print(f"fatal: thread {name!r} died; exiting with code {code} so that the process is "
              f"restarted:\n{text}", file=sys.stderr, flush=True)
        os._exit(code)

    threading.excepthook = die
