"""`robostack <command>`: the one entry point. Each command lives in its own module's main()."""

from __future__ import annotations

import importlib
import os
import sys

# One thread per process: two processes each using 2 threads on 2 cores slow down ~100x.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

COMMANDS = {
    "demo": ("robostack.commands.demo", "the main job in the MuJoCo mirror, multi-process, with a success rate"),
    "robot-server": ("robostack.robot.server", "run an arm (MuJoCo or PyBullet mirror) behind ZeroMQ at 1 kHz"),
    "robot": ("robostack.commands.robot", "a running robot server: state (--watch, --json), arm, disarm, home, gains, stop, fault-reset"),
    "train": ("robostack.commands.train", "train a policy with SAC/RLPD: robot server, actor(s), learner as processes (or --single-process)"),
    "learner": ("robostack.training.learner", "the learner process alone: replay buffers, updates, weights"),
    "actor": ("robostack.training.actor", "one actor process alone: acts with the learner's weights"),
    "eval": ("robostack.commands.evaluate", "success rate and time to success of a run's latest policy"),
    "runs": ("robostack.commands.runs", "the runs in a folder: task, env steps, last success rate, state"),
    "record-demos": ("robostack.commands.record", "drive the arm with a teleop device and log demonstrations"),
    "record-labels": ("robostack.commands.labels", "record camera frames labelled success / not success (simulator or operator) for a reward classifier"),
    "train-classifier": ("robostack.commands.classifier", "a success classifier from label logs, its threshold calibrated for a target false-positive rate"),
    "replay": ("robostack.commands.replay", "re-execute a logged episode in the mirror, report tracking error"),
    "view": ("robostack.commands.replay:view_main", "video with overlays and a plot of a logged episode"),
    "expert": ("robostack.commands.expert", "run a task's scripted expert through the env and report success"),
    "keys": ("robostack.commands.keys", "CURVE key pairs and the allow-list for serving other machines: create, list, allow, revoke"),
    "camera-server": ("robostack.cameras.server", "publish cameras over ZeroMQ (raw on ipc, JPEG on tcp) for CameraStream"),
    "cameras": ("robostack.commands.cameras", "list cameras (simulated, /dev/video*, RealSense, a camera server); --preview a PNG or MP4 of them"),
    "teleop": ("robostack.commands.teleop", "teleop devices (keyboard, gamepad, spacemouse, autopilot): --selftest"),
}


def usage() -> str:
    lines = ["usage: robostack <command> [options]   (robostack <command> --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<14} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"robostack: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, function = COMMANDS[name][0].partition(":")
    module = importlib.import_module(module_name)
    return int(getattr(module, function or "main")(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
