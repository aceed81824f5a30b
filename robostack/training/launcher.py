"""`robostack train`: the main job in one command, as separate processes over ZeroMQ.

    robot server(s) (MuJoCo mirror)  <-  actor(s)  ->  learner  ->  weights  ->  actor(s)

The launcher starts one robot server per actor, the learner and the actors as child processes on
loopback tcp, prints live progress (from the learner's "stats" request), supervises them
(a process that crashes is restarted, up to --restarts times: a restarted learner resumes from
its checkpoint, actors resend what it lacks), and when the step budget is spent runs
`robostack eval` on the final policy. Each child's output goes to <run_dir>/logs/<name>.log
and is echoed here; <run_dir>/processes.json lists their pids.

Ctrl-C / SIGTERM: actors stop first (their last episode ends as truncated, their transitions are
flushed to the learner), then the learner (it writes a checkpoint), then the robot servers. A
second Ctrl-C kills everything at once. Children also die with the launcher (PR_SET_PDEATHSIG),
so no process outlives it, even after kill -9. The same command resumes the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from robostack import cpu_affinity, transport
from robostack.training.run_dir import archive_previous_run, format_progress, update_config


@dataclass
class LaunchConfig:
    """Processes of a `robostack train` run (the learner's and actors' own options have defaults)."""

    actors: int = 1  # actor processes, each with its own robot server
    batch_steps: int = 32  # transitions per actor -> learner batch
    weights_every: float = 0.5  # s between weight broadcasts
    checkpoint_every: float = 30.0  # s between learner checkpoints
    max_lead: int = 64  # env steps actors may run ahead of the learner's UTD target (0: unlimited)
    final_eval_episodes: int = -1  # episodes of the final evaluation (-1: --eval-episodes, 0: none)
    progress_seconds: float = 10.0  # s between progress lines
    restarts: int = 3  # times a crashed process is restarted before the run is abandoned
    pin_cpus: bool = True  # each actor shares a core with its robot server, the learner gets the rest (Linux, needs actors + 1 cores)


class Child:
    """One supervised process; output appended to its log file."""

    def __init__(self, name: str, module: str, args: list[str], log_dir: Path,
                 cpus: list[int] | None = None):
        self.name, self.module, self.args = name, module, args
        self.cpus = cpus  # cores it may run on (None: any); see robostack/cpu_affinity.py
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.finished = False  # exited on purpose (0), not to be restarted
        self._offset = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self._offset = log.tell()
            # `-m robostack.training.launcher --child MODULE ...`: die with the launcher, then run MODULE.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "robostack.training.launcher", "--child", self.module, *self.args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the launcher only; it stops us in order
                env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                         ROBOSTACK_PARENT=str(os.getpid())))
        if self.cpus:
            cpu_affinity.pin(self.process.pid, self.cpus)

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def new_output(self) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._offset += end
        return data[:end].decode(errors="replace").splitlines()

    def signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> bool:
        try:
            self.process.wait(timeout=max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False


class Launcher:
    def __init__(self, config, lc: LaunchConfig, say=print):
        from robostack.env.teleop import InterventionProtocol
        from robostack.training.config import TrainConfig

        self.config, self.lc, self.say = config, lc, say
        self.run_dir = Path(config.run_dir)
        self.log_dir = self.run_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stop_signal: int | None = None
        self.learner_answered = False
        self.learner_endpoint = transport.free_tcp_endpoint()
        self.weights_endpoint = transport.free_tcp_endpoint()
        self.servers = [(transport.free_tcp_endpoint(), transport.free_tcp_endpoint())
                        for _ in range(lc.actors)]
        max_steps = getattr(config, "max_episode_steps", None)
        self.server_children = [
            Child(f"robot-server-{i}", "robostack.robot.server",
                  ["--task", config.task, "--clock", "lockstep", "--command-endpoint", command,
                   "--state-endpoint", state, "--seed", str(config.seed + i), "--log-level", "WARNING"],
                  self.log_dir)
            for i, (command, state) in enumerate(self.servers)]
        learner_args = _argv(config, TrainConfig()) + [
            "--endpoint", self.learner_endpoint, "--weights-endpoint", self.weights_endpoint,
            "--weights-every", str(lc.weights_every), "--checkpoint-every", str(lc.checkpoint_every),
            "--max-lead", str(lc.max_lead), "--final-eval-episodes", str(self.final_episodes())]
        self.learner = Child("learner", "robostack.training.learner", learner_args, self.log_dir)
        self.actor_children = []
        for i, (command, _) in enumerate(self.servers):
            args = ["--actor-id", f"actor-{i}", "--learner", self.learner_endpoint,
                    "--weights", self.weights_endpoint, "--robot-server", command,
                    "--task", config.task, "--seed", str(config.seed + i),
                    "--batch-steps", str(lc.batch_steps),
                    "--spool-dir", str(self.run_dir / "spool" / f"actor-{i}"),
                    "--episode-log", str(self.run_dir / "episodes" / f"actor-{i}"),
                    "--evaluator", str(i == 0).lower(),
                    "--demos", str(config.demos if i == 0 else 0),
                    "--demo-noise", str(config.demo_noise)]
            if max_steps is not None:
                args += ["--max-episode-steps", str(max_steps)]
            if config.intervention:  # the same options as --single-process: device, protocol, penalty
                args += ["--intervention", config.intervention,
                         "--takeover-penalty", str(config.takeover_penalty),
                         *_argv(config.autopilot, InterventionProtocol(), "autopilot-")]
            self.actor_children.append(Child(f"actor-{i}", "robostack.training.actor", args, self.log_dir))
        self.children = [*self.server_children, self.learner, *self.actor_children]
        self.cpu_plan = cpu_affinity.plan_training(lc.actors) if lc.pin_cpus else None
        for child in self.children:
            child.cpus = (self.cpu_plan or {}).get(child.name)

    # --- the run -----------------------------------------------------------------------------
    def run(self) -> int:
        started = time.perf_counter()
        if not self.config.resume:
            archive_previous_run(self.run_dir, self.say)
        self.write_snapshot()
        (self.run_dir / "eval.json").unlink(missing_ok=True)  # the previous run's result
        self.say(f"robostack train: {self.config.task}, {self.lc.actors} actor(s), learner and "
                 f"{len(self.servers)} robot server(s) as separate processes; run directory "
                 f"{self.run_dir} (logs in {self.log_dir})")
        if self.cpu_plan:
            self.say("cores: " + ", ".join(f"{name} {','.join(map(str, cpus))}"
                                           for name, cpus in self.cpu_plan.items()))
        for child in self.children:
            child.start()
        self.write_pids()
        stats_client = transport.RequestClient(self.learner_endpoint, "launcher", timeout=1.0,
                                               peer="the learner")
        last_progress, outcome = time.monotonic(), None
        try:
            while outcome is None:
                if self.stop_signal is not None:
                    outcome = "stopped"
                    break
                outcome = self.supervise()
                self.echo()
                if time.monotonic() - last_progress > self.lc.progress_seconds and outcome is None:
                    last_progress = time.monotonic()
                    self.progress(stats_client)
                time.sleep(0.2)
            self.echo()
            if outcome == "done":
                self.wait_for_actors(timeout=30.0)
                result = self.final_evaluation()
            else:
                result = None
        finally:
            stats_client.close()
            self.stop_all()
            self.echo()
        wall = time.perf_counter() - started
        if outcome == "stopped":
            self.say(f"\nstopped by {signal.Signals(self.stop_signal).name} after {wall:.0f} s; "
                     f"checkpoint in {self.run_dir / 'checkpoints'}. Run the same command to resume.")
            return 130 if self.stop_signal == signal.SIGINT else 143
        if outcome != "done":
            self.say(f"\nrun abandoned: {outcome}")
            return 1
        if result is not None:
            tts = float(result["time_to_success_s"])
            self.say(f"\nfinal: evaluation success {result['success_rate']:.0%} over "
                     f"{result['episodes']} episodes ("
                     + (f"mean time to success {tts:.2f} s" if tts == tts else "no success")
                     + f") after {result['env_steps']} env steps; "
                     f"wall time {wall:.0f} s; run directory {self.run_dir}")
        else:
            self.say(f"\nfinished in {wall:.0f} s; run directory {self.run_dir}")
        return 0

    def supervise(self) -> str | None:
        """Restart crashed children; 'done' once the learner finished its budget."""
        for child in self.children:
            code = child.poll()
            if code is None or child.finished:
                continue
            if code == 0 and child is self.learner:
                child.finished = True
                return "done"
            if code == 0:
                child.finished = True  # an actor told by the learner that the budget is spent
                continue
            self.echo()
            if child in self.actor_children and code == 2:
                return f"{child.name} was refused by the learner (see above)"
            if child.restarts >= self.lc.restarts:
                return (f"{child.name} exited with code {code} {child.restarts + 1} times; "
                        f"see {child.log_path}")
            child.restarts += 1
            self.say(f"[launcher] {child.name} exited with code {code}; restarting it "
                     f"({child.restarts}/{self.lc.restarts})")
            child.start()
            self.write_pids()
        return None

    def echo(self) -> None:
        for child in self.children:
            for line in child.new_output():
                if child is self.learner and line.startswith("step "):
                    continue  # the launcher prints its own progress lines
                self.say(f"[{child.name}] {line}")

    def progress(self, client: transport.RequestClient) -> None:
        try:
            stats = client.request("stats").meta
        except transport.TransportError:
            if self.learner.poll() is None and self.learner_answered:
                self.say("[launcher] the learner is not answering (busy saving, or restarting?)")
            return
        self.learner_answered = True
        self.say(format_progress(stats))

    def wait_for_actors(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for child in self.actor_children:
            if not child.wait(deadline - time.monotonic()):
                self.say(f"[launcher] {child.name} did not stop within {timeout:.0f} s of the "
                         f"learner finishing; stopping it")
                child.signal(signal.SIGTERM)

    def final_episodes(self) -> int:
        n = self.lc.final_eval_episodes
        return self.config.eval_episodes if n < 0 else n

    def final_evaluation(self) -> dict | None:
        """The evaluator actor has normally run it (the learner wrote eval.json); if not, run
        `robostack eval` against robot server 0."""
        path = self.run_dir / "eval.json"
        episodes = self.final_episodes()
        if episodes <= 0:
            return None
        if path.is_file():
            return json.loads(path.read_text())
        self.say(f"[launcher] final evaluation: {episodes} episodes, deterministic policy")
        child = Child("eval", "robostack.commands.evaluate",
                      ["--run", str(self.run_dir), "--episodes", str(episodes),
                       "--robot-server", self.servers[0][0], "--seed", str(self.config.seed)],
                      self.log_dir)
        self.children.append(child)
        child.start()
        while child.poll() is None:
            if self.stop_signal is not None:
                child.signal(signal.SIGTERM)
                child.wait(10.0)
                return None
            self.echo()
            time.sleep(0.2)
        self.echo()
        return json.loads(path.read_text()) if child.poll() == 0 and path.is_file() else None

    def stop_all(self) -> None:
        """Actors first (they flush to the learner), then the learner (checkpoint), then the rest."""
        for group, timeout in ((self.actor_children, 20.0), ([self.learner], 120.0),
                               (self.children, 10.0)):
            for child in group:
                child.signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for child in group:
                if child.process is not None and not child.wait(deadline - time.monotonic()):
                    self.say(f"[launcher] {child.name} ignored SIGTERM for {timeout:.0f} s; killing it")
                    child.signal(signal.SIGKILL)
                    child.wait(5.0)

    def kill_all(self) -> None:
        for child in self.children:
            child.signal(signal.SIGKILL)

    def write_snapshot(self) -> None:
        update_config(self.run_dir, {
            **dataclasses.asdict(self.config), "mode": "actor-learner",
            "launch": dataclasses.asdict(self.lc),
            "endpoints": {"learner": self.learner_endpoint, "weights": self.weights_endpoint,
                          "robot_servers": [c for c, _ in self.servers]}})

    def write_pids(self) -> None:
        pids = {c.name: c.process.pid for c in self.children if c.process is not None}
        (self.run_dir / "processes.json").write_text(json.dumps({"launcher": os.getpid(), **pids}))


def _argv(value, default, prefix: str = "") -> list[str]:
    """Command-line options for the fields of dataclass `value` that differ from `default`."""
    args = []
    for f in dataclasses.fields(value):
        v, d = getattr(value, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(v):
            args += _argv(v, d, f"{prefix}{f.name.replace('_', '-')}-")
        elif v != d:
            option = f"--{prefix}{f.name.replace('_', '-')}"
            if isinstance(v, (list, tuple)):
                args += [option, *map(str, v)]
            elif isinstance(v, bool):
                args += [option, str(v).lower()]
            else:
                args += [option, "none" if v is None else str(v)]
    return args


def _run_child(argv: list[str]) -> None:
    """Child entry: die with the launcher (Linux), then run the module as __main__."""
    import runpy

    module, rest = argv[0], argv[1:]
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the launcher dies
    except (OSError, AttributeError):
        pass  # not Linux: the launcher's own shutdown still stops us
    if os.environ.get("ROBOSTACK_PARENT") and os.getppid() != int(os.environ["ROBOSTACK_PARENT"]):
        sys.exit("robostack: the launcher died while this process started")
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:  # before importing anything the child module might be
        _run_child(argv[1:])
        return 0
    from robostack.config import add_dataclass_arguments, dataclass_from_args, usage_errors
    from robostack.training.learner import add_train_arguments, train_config_from_args
    parser = argparse.ArgumentParser(
        prog="robostack train",
        description="Train a policy with SAC/RLPD: robot server(s), actor(s) and a learner as "
                    "separate processes over ZeroMQ (default), or everything in one process "
                    "(--single-process).")
    parser.add_argument("--single-process", action="store_true",
                        help="train in this process (env, agent, buffers in one loop)")
    add_train_arguments(parser)
    add_dataclass_arguments(parser, LaunchConfig)
    args = parser.parse_args(argv)
    with usage_errors(parser):  # e.g. an unknown --intervention, --autopilot-start 5 2
        config = train_config_from_args(args)
    launcher = Launcher(config, dataclass_from_args(LaunchConfig, args),
                        say=lambda text: print(text, flush=True))

    def stop(signum, frame):
        if launcher.stop_signal is not None:
            launcher.say("[launcher] second signal: killing every process now")
            launcher.kill_all()
            raise SystemExit(130)
        launcher.stop_signal = signum
        launcher.say(f"[launcher] {signal.Signals(signum).name}: stopping actors, then the learner "
                     f"(checkpoint), then the robot servers")

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
