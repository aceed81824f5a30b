"""`robostack learner`: replay buffers and SAC/RLPD updates, fed by actor processes over ZeroMQ.

Two threads. The *receiver* answers actors on a ROUTER socket (hello, transitions, status,
eval, bye) and stores transitions the moment they arrive, so an actor never waits for an update
to finish. The *main thread* runs `run()`: the update loop below, weight broadcasts,
checkpoints and progress.

Update-to-data control. The target is `utd_ratio` critic updates per env step received (one
`update()` call per env step, as in the single-process trainer, starting at `learning_starts`):

* ahead of the data (every received step already paid for): the learner waits for data;
* behind (actors produce faster than it learns): it updates flat out, and when it is more than
  `max_lead` env steps behind it asks actors to pause (the `wait` flag of every ack). Actors
  pause between steps in lock-step simulation and only between episodes on a real-time robot,
  never mid-motion. With `--max-lead 0` actors are never paused and the achieved ratio simply
  falls below the target. Either way the achieved ratio is logged.

Durability. Every `checkpoint_every` s (and at the end) the learner writes a checkpoint with the
agent, counters, each actor's highest stored transition seq, and the buffers saved beside it;
only then does it tell actors those transitions are durable, and only then do they delete them
from their spools. A learner killed with -9 therefore resumes from its checkpoint, and the actors
resend everything after it: nothing lost, nothing counted twice (see transitions.py).

Actors come and go. An actor that dies leaves the learner finishing the updates it owes and then
waiting for data (the UTD target holds); a restarted actor with the same id is welcomed with
the highest seq the learner holds, and numbers on from there. At the end of the step budget the
learner finishes its owed updates, publishes the final weights, has the evaluator actor (the
one started with --evaluator true) evaluate them, waits for the actors' last transitions, and
writes the final checkpoint.

The receiver's side (what each request does, the stats) is robostack/training/receiver.py;
what the learner writes into the run directory: robostack/training/run_dir.py and run_state.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from robostack import transport
from robostack.env.spaces import action_space, observation_space
from robostack.files import write_json_atomic
from robostack.rl.buffers import ReplayBuffer, fitting_capacity, load_demonstrations, sample_mixed
from robostack.rl.featurize import feature_space
from robostack.rl.networks import state_statistics
from robostack.rl.sac import build_agent, update
from robostack.training import run_dir, run_state
from robostack.training.config import LearnerIdentity, RunConfig, parse_run_options, write_run_config
from robostack.training.progress import ProgressReport, Rates
from robostack.training.receiver import Receiver
from robostack.training.observed import task_config
from robostack.training.rollouts import logged_demonstrations
from robostack.training.threads import exit_when_a_thread_dies
from robostack.training.transitions import Ledger, action_spec, observation_spec
from robostack.training.weights import WeightsPublisher
from tasks import make_task


class Learner(Receiver):
    """The learner's state (set up here, resumed from a checkpoint of either training mode),
    its update loop (`run`) and its checkpoints; the answers to actors come from `Receiver`."""

    def __init__(self, config: RunConfig, identity: LearnerIdentity | None = None, say=print,
                 publish_endpoints: bool = False):
        self.config, self.identity, self.say = config, identity or LearnerIdentity(), say
        # Stand-alone: write the endpoints into config.json once they are bound (run()), so
        # that nothing reads an endpoint another process could still take first.
        self.publish_endpoints = publish_endpoints
        self.options = config.learner
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.run_dir = Path(config.run_dir)
        state = run_state.load_run_state(self.run_dir, say)
        if state is not None and not config.resume:
            # Moving a run aside is the launcher's job, done once: a learner it restarts after a
            # crash must find its checkpoint, and a stand-alone one must not delete a run.
            raise SystemExit(f"learner: {self.run_dir} holds a run ({state.checkpoint}); with --resume "
                             f"false move it aside first (`robostack train --resume false` does) "
                             f"or choose another --run-dir")
        (self.run_dir / "buffers").mkdir(parents=True, exist_ok=True)
        task = make_task(config.task, task_config(config))
        # The policy's observations: with a frozen cached encoder, features instead of pixels.
        obs_space = feature_space(config.sac, observation_space(task))
        act_space = action_space(task.config)  # --demo-log with cached features: refused by RunConfig
        self.expected = {"task": config.task, "obs_spec": observation_spec(obs_space),
                         "action_spec": action_spec(act_space)}
        sac = dataclasses.replace(config.sac, seed=config.seed, utd_ratio=config.utd_ratio)
        self.agent = build_agent(sac, obs_space, act_space)
        action_dim = act_space.shape[0]
        capacity = fitting_capacity(obs_space, action_dim, config.buffer_capacity,
                                    config.buffer_memory, say=lambda line: say(f"learner: {line}"))
        self.online = ReplayBuffer(capacity, obs_space, action_dim, seed=config.seed)
        # Fixed state scaling in the agent's encoder, as the single-process trainer does:
        # set once from the demonstrations before the first update, then never changed.
        self.scale_fixed = False
        self.demo_states: list[np.ndarray] = []
        # Demonstrations: a person's, from an episode log (--demo-log), loaded here as the
        # single-process trainer loads them (the launcher runs this learner beside the run and
        # its files; a stand-alone learner reads the log on its own machine); else the scripted
        # expert's, which actor 0 records and sends on the "demo" stream.
        logged = logged_demonstrations(config.demo_log, config.demos, say) \
            if config.demo_log and state is None else []
        if logged:
            self.demos = load_demonstrations(logged, seed=config.seed + 1,
                                             extra_capacity=self.options.intervention_capacity)
            self.demo_states = [np.concatenate([e["observations"]["state"] for e in logged])]
        else:
            demo_capacity = (config.demos * (task.config.max_episode_steps + 1)
                             + self.options.intervention_capacity)
            self.demos = ReplayBuffer(max(2, demo_capacity), obs_space, action_dim, seed=config.seed + 1)
        self.rng = np.random.default_rng(config.seed)

        # Counters (checkpointed, run_state.py). env_steps: online + intervention transitions received.
        self.env_steps = self.update_calls = self.episodes = self.interventions = 0
        self.weights_version = self.saves = 0
        self.demo_episodes = len(logged)
        self.wall_offset = self.eval_seconds = 0.0
        self.recent: deque = deque(maxlen=20)  # (return, success) of the last episodes
        self.history: list[dict] = []  # evaluation rows (metrics.csv)
        self.next_eval = config.eval_every
        self.summary = run_dir.Summary(self.run_dir, "learner")
        if state is not None:
            self.resume(state)
        # The run's identity, recorded before this process binds its sockets (the launcher has
        # written it before any child started): a learner restarted at any moment, even before
        # its first checkpoint, is the same run, so the actors' spools are accepted as its own.
        self.run_id = run_dir.run_identity(self.run_dir, state.counters.get("run_id") if state else None)
        # Its secret: what this run's actors prove themselves with (receiver.identity_problem).
        _, self.run_secret = run_dir.read_run_identity(self.run_dir / run_dir.RUN_FILE)
        # The actor ids this run has a place for: the launcher's actor-0 .. actor-<N-1>, and as
        # many for stand-alone actors (`robostack learner --actors N`).
        self.actor_ids = frozenset(f"actor-{i}" for i in range(config.launch.actors))
        self.retired: dict[str, list[str]] = {}  # actor id -> sessions a newer one replaced
        # The demonstrations learning waits for: the logged ones this run holds, or --demos
        # episodes of the scripted expert (actors record what is missing).
        self.demo_target = self.demo_episodes if config.demo_log else config.demos
        self.ledger = Ledger(state.ledger if state is not None else None)
        # Episodes after the checkpoint (all of them, restarted before the first one) come
        # again with the resends.
        run_dir.trim_episodes(self.run_dir, self.ledger.stored, say)
        self.lock = threading.Condition()  # guards buffers' writers, counters and ledger
        self.actors: dict[str, dict] = {}  # id -> {"seen", "weights_version", "unsent", ...}
        self.stopping = threading.Event()  # SIGTERM / Ctrl-C: checkpoint and leave
        self.done = False  # step budget reached: actors are told to stop
        self.final_request: dict | None = None  # the final evaluation, once the weights are final
        self.final_result: dict | None = None
        self.last_checkpoint: Path | None = None
        self.started = time.monotonic()
        self.receiving = True
        self.closed = False  # the final checkpoint is written: no transition is stored any more
        self.last_leaver_save = 0.0
        self.wall_start = time.perf_counter() - self.wall_offset
        self.metrics: dict = {}
        self.update_seconds = 0.0  # spent sampling and updating (this process)
        self.republish = False  # an actor connected: send it the weights without waiting
        self.rates = Rates()  # recent update and env-step rates
        # progress lines, progress.csv and TensorBoard scalars, as the single-process trainer writes them
        # A learner restarted before its first checkpoint continues the run's progress.csv too.
        self.progress = ProgressReport(self.run_dir, say, resume=state is not None or config.resume)
        self.tensorboard = self.progress.tensorboard
        self.summary.update(state="starting", run=self.run_id, env_steps=self.env_steps,
                            resumed_from=None if state is None else {
                                "checkpoint": str(state.checkpoint), "env_steps": self.env_steps})

    def resume(self, state) -> None:
        """Continue from a checkpoint of either training mode (run_state.py)."""
        c = state.counters
        self.agent.load_state_dict(state.agent, state.state_scale)
        self.scale_fixed = bool(c.get("scale_fixed", state.state_scale is not None))
        for name in ("env_steps", "update_calls", "episodes", "interventions", "demo_episodes",
                     "weights_version", "next_eval", "eval_seconds"):
            if name in c:
                setattr(self, name, c[name])
        self.saves, self.wall_offset = state.saves, float(c["wall_seconds"])
        self.recent = deque(map(tuple, c.get("recent", [])), maxlen=20)
        self.history, self.online, self.demos = state.history, state.online, state.demos
        self.say(f"learner: resumed from {state.checkpoint} at env step {self.env_steps} "
                 f"({self.agent.critic_updates} critic updates, {len(self.online)} online and "
                 f"{len(self.demos)} demo transitions)")

    # --- the update loop -----------------------------------------------------------------
    def run(self) -> None:
        cfg = self.config
        curve = transport.CurveKeys.from_options(self.identity.curve_key)
        server = transport.RequestServer(self.identity.endpoint, source="learner", curve=curve)
        self.weights = WeightsPublisher(self.identity.weights_endpoint, curve=curve, secret=self.run_secret)
        self.weights.publish(self.agent, self.weights_version)
        if self.publish_endpoints:  # both bound: now they may be read
            write_run_config(cfg, mode="actor-learner", endpoints={
                "learner": self.identity.endpoint, "weights": self.identity.weights_endpoint})
        receiver = threading.Thread(target=self.serve, args=(server,), name="receiver", daemon=True)
        receiver.start()
        self.summary.update(state="running")
        self.say(f"learner: run {self.run_id} in {self.run_dir}; actors -> {self.identity.endpoint}, "
                 f"weights -> {self.identity.weights_endpoint}; target {cfg.utd_ratio} critic updates "
                 f"per env step from step {cfg.learning_starts}, budget {cfg.total_steps} steps")
        last_weights = last_save = last_report = time.monotonic()
        reported_at, batch = self.env_steps, None
        while not self.stopping.is_set():
            with self.lock:
                target = self.update_target()
                if self.env_steps >= cfg.total_steps and self.update_calls >= target:
                    break
                if self.update_calls >= target or not self.ready_to_learn():
                    self.lock.wait(0.05)  # ahead of the data: wait for transitions
                    target = -1
            if target > self.update_calls:  # one RLPD update: UTD critic steps on one sample
                t0 = time.perf_counter()
                if not self.scale_fixed:
                    self.fix_scale()
                # Straight to the agent's device, frames in their stored dtype (uint8 pixels, float16
                # features: converted there); on the CPU into the previous batch's arrays.
                on_cpu = self.agent.device.type == "cpu"
                batch = sample_mixed(self.online, self.demos, self.agent.config.batch_size * cfg.utd_ratio,
                                     demo_fraction=cfg.demo_fraction, generator=self.rng,
                                     device=self.agent.device, out=batch if on_cpu else None)
                self.metrics = update(self.agent, batch)
                self.update_calls += 1
                self.update_seconds += time.perf_counter() - t0
            now = time.monotonic()
            if now - last_weights > self.options.weights_every and self.update_calls:
                self.weights_version += 1
                self.weights.publish(self.agent, self.weights_version)
                last_weights = now
            self.weights.repeat(now=self.republish)  # at once for a newly connected actor
            self.republish = False
            if now - last_save > self.options.checkpoint_every:
                self.save()
                last_save = now
            if self.env_steps - reported_at >= cfg.progress_every or now - last_report > 30:
                self.report()
                reported_at, last_report = self.env_steps, now
        self.finish(server, receiver)

    def fix_scale(self) -> None:
        """The encoder's (state - mean) / std from the demonstrations (identity without them)."""
        states = self.demo_states
        if not states and len(self.demos):  # resumed before the first update: sample them back
            b = self.demos.sample(min(len(self.demos), 8192), generator=np.random.default_rng(0))
            states = [b["observations"]["state"].numpy(), b["next_observations"]["state"].numpy()]
        if self.config.normalize_state and states:
            self.agent.set_state_scale(*state_statistics(np.concatenate(states)))
        self.scale_fixed, self.demo_states = True, []

    def update_target(self) -> int:
        """update() calls owed for the env steps received so far (one per step from learning_starts)."""
        return max(0, self.env_steps - self.config.learning_starts + 1)

    def ready_to_learn(self) -> bool:
        if len(self.online) + len(self.demos) == 0:
            return False
        if self.demo_episodes >= self.demo_target:
            return True
        return time.monotonic() - self.started > self.options.demo_wait  # then train without them

    def finish(self, server, receiver) -> None:
        self.done = True
        self.weights_version += 1
        self.weights.publish(self.agent, self.weights_version)
        if not self.stopping.is_set():
            self.final_evaluation()
            # Budget reached: keep answering (with done=True) until every actor said bye.
            deadline = time.monotonic() + self.options.linger
            while time.monotonic() < deadline and not self.stopping.is_set():
                with self.lock:
                    if not any(a["connected"] for a in self.actors.values()):
                        break
                    self.lock.wait(0.1)
                self.weights.repeat()
                self.checkpoint_for_leavers()
        # The final checkpoint, while the receiver still answers: an actor that left waits for
        # it to say that its transitions are durable, and then deletes its spool. Transitions
        # arriving after it are not stored (they stay in their actor's spool, for a resumed run).
        with self.lock:
            self.closed = True
        self.save()
        self.farewell()
        self.receiving = False
        receiver.join(timeout=5.0)
        server.close()
        if self.final_result is not None:
            write_json_atomic(self.run_dir / "eval.json",
                              {**self.final_result, "checkpoint": str(self.last_checkpoint)})
        run_dir.write_metrics(self.run_dir, self.history)  # also when no evaluation ran
        self.report()
        self.weights.close()
        self.progress.close()
        why = "stopped by signal" if self.stopping.is_set() else "step budget reached"
        self.summary.update(state="stopped" if self.stopping.is_set() else "finished", why=why,
                            env_steps=self.env_steps, final_eval=self.final_result)
        self.say(f"learner: {why} at env step {self.env_steps}; checkpoint written in "
                 f"{self.run_dir / 'checkpoints'}")

    def checkpoint_for_leavers(self, every: float = 1.0) -> None:
        """At the end of the run: an actor that said bye waits for a checkpoint holding its
        transitions (to clean its spool); write one now rather than after the others finish
        (the evaluator's final evaluation can take minutes). At most one per `every` s."""
        with self.lock:
            waiting = any(a.get("awaiting_durable") and self.ledger.stored.get(k, 0) >
                          self.ledger.durable.get(k, 0) for k, a in self.actors.items())
        if waiting and time.monotonic() - self.last_leaver_save > every:
            self.save()
            self.last_leaver_save = time.monotonic()

    def farewell(self, timeout: float = 10.0) -> None:
        """After the final checkpoint: answer actors asking whether it holds their transitions,
        until each one waiting has heard so (or `timeout` s)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            waited = any(a.get("awaiting_durable") for a in self.actors.values())
            while any(a.get("awaiting_durable") for a in self.actors.values()) \
                    and time.monotonic() < deadline and not self.stopping.is_set():
                self.lock.wait(0.05)
            # An actor whose request timed out on a loaded machine never read the answer that
            # told it: it asks again within its request timeout, and must still be answered
            # (else it waits a minute for a learner that is gone, its spool left behind).
            grace = min(deadline, time.monotonic() + self.config.actor.request_timeout + 0.5)
            while waited and time.monotonic() < grace and not self.stopping.is_set():
                self.lock.wait(0.05)

    def final_evaluation(self) -> None:
        """Ask the evaluator actor (already running, with an env) to evaluate the final weights."""
        with self.lock:
            evaluators = [k for k, a in self.actors.items() if a["evaluator"] and a["connected"]]
            if self.config.final_episodes() <= 0 or not evaluators:
                return
            self.final_request = {"step": self.env_steps, "episodes": self.config.final_episodes(),
                                  "final": True, "version": self.weights_version}
        self.say(f"learner: final evaluation of weights v{self.weights_version} by "
                 f"{evaluators[0]} ({self.config.final_episodes()} episodes)")
        deadline = time.monotonic() + self.config.final_eval_timeout
        while self.final_result is None and not self.stopping.is_set():
            with self.lock:
                if time.monotonic() > deadline or not self.actors[evaluators[0]]["connected"]:
                    self.say("learner: no final evaluation came back (the evaluator left or "
                             f"took over {self.config.final_eval_timeout:.0f} s)")
                    break
                self.lock.wait(0.1)
            self.weights.repeat()
            self.checkpoint_for_leavers()
        self.final_request = None

    # --- bookkeeping ---------------------------------------------------------------------
    def wall(self) -> float:
        return time.perf_counter() - self.wall_start

    def report(self) -> None:
        with self.lock:
            stats = self.stats()
        self.progress.report(stats, self.metrics)

    def save(self) -> None:
        """Checkpoint + buffers, consistent with the ledger: then tell actors it is durable."""
        self.saves += 1
        with self.lock:  # the receiver waits: buffers and ledger must match exactly
            counters = {k: getattr(self, k) for k in (
                "env_steps", "update_calls", "episodes", "interventions", "demo_episodes",
                "weights_version", "saves", "next_eval", "run_id", "scale_fixed", "eval_seconds")}
            counters.update(recent=list(self.recent), wall_seconds=self.wall())
            ledger = self.ledger.state_dict()
            state = run_state.snapshot(self.run_dir, self.saves, self.agent, self.online, self.demos,
                                       counters, self.history, ledger)
        self.last_checkpoint = run_state.commit(self.run_dir, self.saves, state)
        with self.lock:
            self.ledger.mark_durable(ledger["stored"])
        self.summary.update(env_steps=counters["env_steps"], checkpoint=str(self.last_checkpoint),
                            saves=self.saves, durable=ledger["stored"])


# --- command line ------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack learner", description=__doc__.splitlines()[0])
    config, identity, args = parse_run_options(parser, sys.argv[1:] if argv is None else argv,
                                               LearnerIdentity)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    exit_when_a_thread_dies()  # a dead thread ends the process, so the launcher restarts it
    from robostack.rl.runtime import keep_freed_memory

    keep_freed_memory()  # reuse the update's multi-MB buffers instead of page-faulting them in
    if not args.config:  # stand-alone: this command line is the run's configuration
        write_run_config(config, mode="actor-learner")  # its endpoints once bound (run())
    try:
        learner = Learner(config, identity, say=lambda text: print(text, flush=True),
                          publish_endpoints=not args.config)
    except (run_dir.RunFileError, run_state.CheckpointError) as exc:  # a restart cannot mend a file
        print(f"robostack learner: {exc}", file=sys.stderr, flush=True)
        return 2

    def stop(signum, frame):
        if learner.stopping.is_set():  # second signal: leave now
            raise SystemExit(1)
        learner.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    learner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
