"""`robostack train`: train a policy with SAC/RLPD, over processes (robot server(s), actor(s) and
a learner over ZeroMQ, robostack/training/launcher.py) or, with `--single-process`, in one loop
(robostack/training/train.py). Both modes take the same options (robostack/training/config.py)
and read and write the same run directory.
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--single-process" in argv:
        from hardware.teleop.base import DeviceUnavailable
        from robostack.training.train import main as train_in_one_process

        try:
            return train_in_one_process(argv)
        except DeviceUnavailable as exc:  # a person's device, opened before anything starts
            print(f"robostack train: --intervention: {exc}", file=sys.stderr, flush=True)
            return 2
    if "-h" in argv or "--help" in argv:
        print("robostack train [--single-process] [options]: the product path runs robot server(s), "
              "actor(s) and a learner as processes; --single-process runs everything in one loop "
              "with the same options.\n", flush=True)
    from robostack.training.launcher import main as launch

    return launch(argv)


if __name__ == "__main__":
    sys.exit(main())
