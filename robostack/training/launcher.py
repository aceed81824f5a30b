"""`robostack train`: the main job in one command, as separate processes over ZeroMQ.

    robot server(s) (--backend mirror)  <-  actor(s)  ->  learner  ->  weights  ->  actor(s)

One thing: a run's processes, started, supervised and stopped together; the pieces that stand
alone (a child process, progress lines, CPU plans) are modules of their own already.

The launcher starts one robot server per actor (none with --arm-server: the one actor trains on
that robot server, run apart, e.g. a real arm's), the learner and the actors as child processes
talking over unix sockets (transport.ipc_endpoint, named after the run: a restarted process
comes back on the same ones, and another user cannot take them), prints live progress (from the
learner's "stats" request), supervises them (robostack/training/child.py)
(a process that crashes is restarted unless it crashed more than --restarts times within
--restart-window s, a crash loop: a restarted learner resumes from its checkpoint, actors
resend what it lacks; any child that exits while the run is unfinished is restarted, whatever
its exit code, since a robot server sent `shutdown` exits 0 too), and when the step budget is
spent runs `robostack eval` on the final policy. Each child's output goes to <run_dir>/logs/<name>.log
and is echoed here; <run_dir>/processes.json lists their pids. The endpoints go into
config.json only once the processes that bind them answer there, the learner with its proof
made with the run's secret (a process squatting its endpoint is named, and the run abandoned).

Ctrl-C / SIGTERM: actors stop first (their last episode ends as truncated, their transitions are
flushed to the learner), then the learner (it writes a checkpoint), then the robot servers. A
second Ctrl-C kills everything at once. Children also die with the launcher (PR_SET_PDEATHSIG),
so no process outlives it, even after kill -9. The same command resumes the run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from robostack import cpu_affinity, transport
from robostack.files import write_json_atomic
from robostack.training.child import Child
from robostack.training.progress import format_progress
from robostack.training.run_dir import RUN_FILE, Summary, read_run_identity, read_summary, start_run

# The run configuration (robostack/training/config.py) is imported where it is used: it brings
# torch with the SAC settings, and this module is also every child's entry (`--child`), robot
# servers included, which never need torch.
if TYPE_CHECKING:
    from robostack.training.config import RunConfig


class Launcher:
    def __init__(self, config: RunConfig, say=print, relay=None):
        self.config, self.options, self.say = config, config.launch, say
        # A person at the controls: their device runs here, in the process that holds the
        # terminal, and `relay` (robostack/env/teleop_relay.py: TeleopRelay) forwards it to actor 0.
        self.relay = relay
        self.run_dir = Path(config.run_dir)
        self.config_path = self.run_dir / "config.json"
        self.log_dir = self.run_dir / "logs"
        self.summary = Summary(self.run_dir, "launcher")
        self.stop_signal: int | None = None
        self.learner_answered = False
        self.endpoints_published = False
        self.next_endpoint_check = 0.0
        # The children, made by prepare_run_dir once the run has its identity (their endpoints
        # are named after it).
        self.learner: Child | None = None
        self.server_children: list[Child] = []
        self.actor_children: list[Child] = []
        self.children: list[Child] = []
        self.servers: list[tuple[str, str]] = []

    # --- the run -----------------------------------------------------------------------------
    def prepare_run_dir(self) -> None:
        """Once per run, before any child starts: refuse to resume a run recorded with other
        settings, move a previous run aside whole (--resume false), write the config.json the
        children read (run_dir.start_run; its endpoints come once they are bound:
        publish_endpoints), and make the children, on endpoints named after the run."""
        start_run(self.config, "actor-learner", self.say)
        self.run_id, self.run_secret = read_run_identity(self.run_dir / RUN_FILE)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "eval.json").unlink(missing_ok=True)  # the previous run's result
        self.make_children()

    def make_children(self) -> None:
        from robostack.training.config import ActorIdentity, LearnerIdentity, identity_argv
        from robostack.training.rollouts import server_options

        config = self.config

        def endpoint(role: str) -> str:
            # Unix sockets in the user's private folder, short names (a socket path has ~107
            # bytes), named after the run: the same after any restart, another run's elsewhere.
            return transport.ipc_endpoint(f"{self.run_id}-{role}")

        self.learner_endpoint, self.weights_endpoint = endpoint("l"), endpoint("w")
        arm = self.options.arm_server
        if arm:  # a robot server run apart (a real arm): the actor's, started by nobody here
            self.servers, self.server_children = [(arm, "")], []
        else:
            self.servers = [(endpoint(f"c{i}"), endpoint(f"s{i}")) for i in range(self.options.actors)]
            self.server_children = [
                Child(f"robot-server-{i}", "robostack.robot.server",
                      ["--task", config.task, "--backend", config.backend, "--clock", "lockstep", "--command-endpoint", command,
                       "--state-endpoint", state, "--log-level", "WARNING", *server_options(config, config.seed + i)],
                      self.log_dir)
                for i, (command, state) in enumerate(self.servers)]
        # Children read the run's options from its config.json; their command line says only
        # who they are. The learner resumes whatever checkpoint it finds: a previous run was
        # moved aside before it first started, so a checkpoint there is this run's own, written
        # before a crash it is restarted after.
        run_options = ["--config", str(self.config_path)]
        learner = LearnerIdentity(endpoint=self.learner_endpoint, weights_endpoint=self.weights_endpoint)
        self.learner = Child("learner", "robostack.training.learner",
                             [*run_options, "--resume", "true", *identity_argv(learner)], self.log_dir)
        self.actor_children = []
        for i, (command, _) in enumerate(self.servers):
            actor = ActorIdentity(actor_id=f"actor-{i}", index=i, learner=self.learner_endpoint,
                                  weights=self.weights_endpoint, robot_server=command,
                                  spool_dir=str(self.run_dir / "spool" / f"actor-{i}"),
                                  episode_log=str(self.run_dir / "episodes" / f"actor-{i}"),
                                  evaluator=i == 0, camera_server=self.options.arm_camera_server,
                                  actor_key=self.options.arm_key, robot_server_key=self.options.arm_server_key,
                                  camera_server_key=self.options.arm_camera_server_key)
            if self.relay is not None and i == 0:
                actor.teleop_readings, actor.teleop_view = self.relay.readings_endpoint, self.relay.view_endpoint
            self.actor_children.append(Child(f"actor-{i}", "robostack.training.actor",
                                             [*run_options, *identity_argv(actor)], self.log_dir))
        self.children = [*self.server_children, self.learner, *self.actor_children]
        self.cpu_plan = cpu_affinity.plan_training(self.options.actors) if self.options.pin_cpus else None
        for child in self.children:
            child.cpus = (self.cpu_plan or {}).get(child.name)

    def publish_endpoints(self, client: transport.RequestClient) -> str | None:
        """config.json's endpoints, written once every process that binds one answers on it:
        the learner with its proof over a fresh challenge (made with the run's secret), each
        robot server to a hello. Until then nothing outside the run reads an endpoint that
        another process could take first. Returns why the run cannot go on when what answers on
        the learner's endpoint is not this run's learner; checks at most once a second."""
        from robostack.training.config import write_run_config
        from robostack.training.transitions import proof_matches, welcome_proof

        if self.endpoints_published or time.monotonic() < self.next_endpoint_check:
            return None
        self.next_endpoint_check = time.monotonic() + 1.0
        challenge = secrets.token_hex(16)
        try:
            stats = client.request("stats", {"challenge": challenge}, timeout=0.5).meta
        except transport.RemoteError as exc:
            stats = {"error": exc.text}
        except transport.TransportError:
            return None  # not up yet
        if stats.get("run") != self.run_id or not proof_matches(
                welcome_proof(self.run_secret, self.run_id, "launcher", challenge), stats.get("proof")):
            return (f"the process answering at {self.learner_endpoint} is not run {self.run_id}'s "
                    f"learner (no proof made with this run's secret; it says run "
                    f"{str(stats.get('run'))[:40]!r}): another process holds that endpoint; stop it")
        # A robot server run apart is not the launcher's to wait for: the actor waits for it.
        for command, _ in [] if self.options.arm_server else self.servers:
            with transport.RequestClient(command, "launcher", timeout=0.5) as server:
                try:
                    server.request("hello", {"task": self.config.task})
                except transport.TransportError:
                    return None  # not up yet (or restarting): next time
        write_run_config(self.config, mode="actor-learner", endpoints={
            "learner": self.learner_endpoint, "weights": self.weights_endpoint,
            "robot_servers": [c for c, _ in self.servers]})
        self.endpoints_published = True
        return None

    def run(self) -> int:
        started = time.perf_counter()
        self.prepare_run_dir()
        servers = (f"the robot server at {self.options.arm_server} (run apart)" if self.options.arm_server
                   else f"{len(self.servers)} robot server(s) ({self.config.backend} mirror)")
        self.say(f"robostack train: {self.config.task}, {self.options.actors} actor(s), learner and "
                 f"{servers} as separate processes; run directory "
                 f"{self.run_dir} (logs in {self.log_dir})")
        if self.cpu_plan:
            self.say("cores: " + ", ".join(f"{name} {','.join(map(str, cpus))}"
                                           for name, cpus in self.cpu_plan.items()))
        for child in self.children:
            child.start()
        self.write_pids()
        self.summary.update(state="running", restarts={})
        stats_client = transport.RequestClient(self.learner_endpoint, "launcher", timeout=1.0,
                                               peer="the learner")
        last_progress, outcome = time.monotonic(), None
        try:
            while outcome is None:
                if self.stop_signal is not None:
                    outcome = "stopped"
                    break
                outcome = self.operator_outcome() or self.supervise() or self.publish_endpoints(stats_client)
                self.echo()
                if time.monotonic() - last_progress > self.options.progress_seconds and outcome is None:
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
        code = self.report(outcome, result, wall)
        self.summary.update(state=outcome if outcome in ("done", "stopped") else "abandoned",
                            why=outcome, exit_code=code, wall_seconds=round(wall, 1), final_eval=result)
        return code

    def report(self, outcome: str, result: dict | None, wall: float) -> int:
        """The closing lines; returns the exit code."""
        if outcome == "stopped":
            by = "the operator (stop key)" if self.stop_signal is None else signal.Signals(self.stop_signal).name
            self.say(f"\nstopped by {by} after {wall:.0f} s; "
                     f"checkpoint in {self.run_dir / 'checkpoints'}. Run the same command to resume.")
            if self.stop_signal is None:
                return 0  # the person ended the session as the key map says: not a failure
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
        """Restart any child that exited while the run is unfinished, whatever its exit code;
        'done' once the learner finished its budget."""
        for child in self.children:
            code = child.poll()
            if code is None or child.finished:
                continue
            if code == 0 and self.finished_on_purpose(child):
                child.finished = True
                if child is self.learner:
                    return "done"
                continue  # an actor told by the learner that the budget is spent
            self.echo()
            if child is not self.learner and child not in self.actor_children:
                pass  # a robot server's exit code says nothing the run can act on: restart it
            elif code == 2:
                # An actor refused by the learner (another task or spec), or a setting it cannot
                # run with (a teleop device missing); a learner whose run files cannot be read
                # (run_dir.RunFileError): a restart cannot help. Exit 2 is only ever deliberate
                # (usage errors, these refusals); a crash exits 1 or by a signal.
                return f"{child.name} cannot run: {self.last_error(child)}"
            # A crash loop, not a crash: more than --restarts exits within --restart-window s.
            now, window = time.monotonic(), self.options.restart_window
            child.exits = [t for t in child.exits if now - t < window] + [now]
            if len(child.exits) > self.options.restarts:
                return (f"{child.name} exited {len(child.exits)} times within {window:.0f} s "
                        f"(last: code {code}); see {child.log_path}")
            child.restarts += 1
            why = f"code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
            self.say(f"[launcher] {child.name} exited ({why}) while the run is unfinished; "
                     f"restarting it ({len(child.exits)}/{self.options.restarts} within "
                     f"{window:.0f} s, {child.restarts} in all)")
            child.start()
            self.write_pids()
            self.summary.update(restarts={c.name: c.restarts for c in self.children if c.restarts})
        return None

    def finished_on_purpose(self, child: Child) -> bool:
        """Whether a child that exited 0 is done with the run, by what it wrote on leaving
        (summary/<name>.json, of this very process): the learner when its step budget was
        reached, an actor when the learner said so (or its --max-steps was reached). Exit code 0
        alone proves nothing: a robot server sent `shutdown`, a learner or actor sent SIGTERM
        by someone else, also exit 0, and the run needs them back."""
        if child in self.server_children:
            return False  # the launcher stops them itself, at the end of the run
        summary = read_summary(self.run_dir, child.name) or {}
        if summary.get("pid") != child.process.pid:
            return False  # it died before writing its own
        if child is self.learner:
            return summary.get("state") == "finished"
        reason = str(summary.get("stop_reason", ""))
        if reason == "the learner reached its step budget" and summary.get("not_durable"):
            # The learner said done, then died before a checkpoint held the actor's last
            # transitions: the restarted learner is short of its budget and only this actor's
            # spool has them. Seen in CI: the run waited for actors forever.
            self.say(f"[launcher] {child.name} stopped with {summary['not_durable']} transitions "
                     "no learner checkpoint holds yet; restarting it to resend them from its spool")
            return False
        return summary.get("state") == "stopped" and (
            reason == "the learner reached its step budget" or reason.startswith("max_steps")
            or reason == "the operator pressed stop")

    def operator_outcome(self) -> str | None:
        """'stopped' when the person pressed the stop key, the reason when their device failed."""
        if self.relay is None:
            return None
        if self.relay.failure:
            return f"{self.relay.failure} (the actor's deadman released; no restart can bring the device back)"
        return "stopped" if self.relay.stop_requested else None

    def last_error(self, child: Child) -> str:
        """The last line a child wrote (its one-line reason for leaving)."""
        try:
            lines = child.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else f"exit code 2, see {child.log_path}"

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

    def arm_eval_options(self) -> list[str]:
        """`robostack eval`'s options for the arm's camera server and CURVE keys (--arm-*)."""
        o = self.options
        given = {"--camera-endpoint": o.arm_camera_server, "--curve-key": o.arm_key,
                 "--server-key": o.arm_server_key, "--camera-server-key": o.arm_camera_server_key}
        return [word for option, value in given.items() if value for word in (option, value)]

    def final_evaluation(self) -> dict | None:
        """The evaluator actor has normally run it (the learner wrote eval.json); if not, run
        `robostack eval` against robot server 0."""
        path = self.run_dir / "eval.json"
        episodes = self.config.final_episodes()
        if episodes <= 0:
            return None
        if path.is_file():
            return json.loads(path.read_text())
        self.say(f"[launcher] final evaluation: {episodes} episodes, deterministic policy")
        child = Child("eval", "robostack.commands.evaluate",
                      ["--run", str(self.run_dir), "--episodes", str(episodes),
                       "--robot-server", self.servers[0][0], "--seed", str(self.config.seed),
                       "--as-final-eval", *self.arm_eval_options()],
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

    def write_pids(self) -> None:
        pids = {c.name: c.process.pid for c in self.children if c.process is not None}
        write_json_atomic(self.run_dir / "processes.json", {"launcher": os.getpid(), **pids})


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
    from robostack.training.config import parse_run_options

    parser = argparse.ArgumentParser(
        prog="robostack train",
        description="Train a policy with SAC/RLPD: robot server(s), actor(s) and a learner as "
                    "separate processes over ZeroMQ.")
    config, _ = parse_run_options(parser, argv, starts_run=True)
    relay = open_operator_relay(parser, config)
    say = relay.say if relay is not None else (lambda text: print(text, flush=True))
    launcher = Launcher(config, say=say, relay=relay)

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
    try:
        return launcher.run()
    finally:
        if relay is not None:
            relay.close()  # the device released, the terminal's normal screen back


def open_operator_relay(parser, config):
    """With a person in the loop (--intervention keyboard|gamepad|spacemouse): their device,
    opened here before anything starts (a missing one is a one-line error, exit code 2), the
    live view, and the relay that forwards the device to actor 0. None otherwise."""
    from hardware.teleop.base import DeviceUnavailable
    from robostack.env.teleop import needs_pacing
    from robostack.env.teleop_relay import TeleopRelay, open_person_controls

    if needs_pacing(config.intervention) and config.launch.actors > 1:
        parser.error(f"--intervention {config.intervention}: one person drives one arm; "
                     f"run it with --actors 1 (got {config.launch.actors})")
    try:
        controls = open_person_controls(config.intervention, config.task,
                                        say=lambda text: print(text, flush=True))
    except DeviceUnavailable as exc:
        print(f"robostack train: --intervention {config.intervention}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    if controls is None:
        return None
    device, screen = controls
    relay = TeleopRelay(device, screen)
    relay.start()
    return relay


if __name__ == "__main__":
    sys.exit(main())
