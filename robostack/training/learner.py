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

What it writes into the run directory: see robostack/training/run_dir.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from robostack import transport
from robostack.rl.buffers import ReplayBuffer, sample_mixed
from robostack.rl.checkpoint import load_latest_checkpoint, save_checkpoint
from robostack.rl.networks import state_statistics
from robostack.rl.sac import build_agent, update
from robostack.training import run_dir
from robostack.training.config import TrainConfig
from robostack.training.transitions import (
    TO_DEMO_BUFFER,
    Ledger,
    action_spec,
    hello_mismatch,
    observation_spec,
    split_observations,
)
from robostack.training.weights import WeightsPublisher

log = logging.getLogger("robostack.training.learner")


@dataclass
class LearnerConfig:
    """Where the learner listens and how it paces itself (besides the training options)."""

    endpoint: str = "tcp://*:5600"  # actors' requests: hello, transitions, status (ROUTER, bound)
    weights_endpoint: str = "tcp://*:5601"  # weights broadcast to actors (PUB, bound)
    weights_every: float = 0.5  # s between weight broadcasts while training
    checkpoint_every: float = 60.0  # s between checkpoints; actors spool what none holds yet
    max_lead: int = 64  # env steps actors may run ahead of the update target (0: never pause them)
    demo_wait: float = 300.0  # s to wait for --demos demonstrations before training without them
    linger: float = 10.0  # s to collect actors' last transitions after the step budget is reached
    intervention_capacity: int = 50_000  # demo-buffer room for intervention transitions
    final_eval_episodes: int = -1  # final evaluation by the evaluator actor (-1: --eval-episodes, 0: none)
    final_eval_timeout: float = 900.0  # s to wait for the evaluator actor's final evaluation


def task_spaces(task_name: str, max_episode_steps: int | None = None):
    """(observation space, action space, task config) of a task, without a robot server: the
    env's state vector is the robot fields followed by the task's fields (robostack/env/env.py)."""
    from robostack.env import ROBOT_FIELDS
    from tasks import make_task

    task = make_task(task_name)
    config = task.config
    if max_episode_steps is not None:
        config = dataclasses.replace(config, max_episode_steps=max_episode_steps)
    size = sum(ROBOT_FIELDS.values()) + sum(task.state_fields.values())
    observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)})
    action_space = gym.spaces.Box(-1.0, 1.0, (config.action_dim(),), np.float32)
    return observation_space, action_space, config


class Learner:
    def __init__(self, config: TrainConfig, lc: LearnerConfig, say=print):
        self.config, self.lc, self.say = config, lc, say
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.run_dir = Path(config.run_dir)
        if not config.resume:
            run_dir.archive_previous_run(self.run_dir, say)
        (self.run_dir / "buffers").mkdir(parents=True, exist_ok=True)
        max_steps = getattr(config, "max_episode_steps", None)
        obs_space, act_space, task_config = task_spaces(config.task, max_steps)
        self.expected = {"task": config.task, "obs_spec": observation_spec(obs_space),
                         "action_spec": action_spec(act_space)}
        sac = dataclasses.replace(config.sac, seed=config.seed, utd_ratio=config.utd_ratio)
        self.agent = build_agent(sac, obs_space, act_space)
        action_dim = act_space.shape[0]
        self.online = ReplayBuffer(config.buffer_capacity, obs_space, action_dim, seed=config.seed)
        demo_capacity = config.demos * (task_config.max_episode_steps + 1) + lc.intervention_capacity
        self.demos = ReplayBuffer(max(2, demo_capacity), obs_space, action_dim, seed=config.seed + 1)
        self.rng = np.random.default_rng(config.seed)
        # Fixed state scaling in the agent's encoder, as the single-process trainer does:
        # set once from the demonstrations before the first update, then never changed.
        self.normalize = bool(getattr(config, "normalize_state", False))
        self.scale_fixed = False
        self.demo_states: list[np.ndarray] = []

        # Counters (checkpointed). env_steps: online + intervention transitions received.
        self.env_steps = self.update_calls = self.episodes = self.interventions = 0
        self.demo_episodes = self.weights_version = self.saves = 0
        self.wall_offset = 0.0
        self.recent: deque = deque(maxlen=20)  # (return, success) of the last episodes
        self.history: list[dict] = []  # evaluation rows (metrics.csv)
        self.next_eval = config.eval_every
        self.run_id = uuid.uuid4().hex[:12]
        checkpoint = load_latest_checkpoint(self.run_dir) if config.resume else None
        ledger_state = None
        if checkpoint is not None:
            s = checkpoint.state
            self.agent.load_state_dict(s["agent"], s.get("state_scale"))
            counters = json.loads(s["counters"])
            self.scale_fixed = "state_scale" in s  # checkpoints from before the scale was counted
            for name, value in counters.items():
                setattr(self, name, value)
            self.recent = deque(map(tuple, counters["recent"]), maxlen=20)
            ledger_state = json.loads(s["ledger"])
            self.online = ReplayBuffer.load(self.run_dir / "buffers" / s["online_buffer"])
            self.demos = ReplayBuffer.load(self.run_dir / "buffers" / s["demo_buffer"])
            say(f"learner: resumed from {checkpoint.path} at env step {self.env_steps} "
                f"({self.agent.critic_updates} critic updates, {len(self.online)} online and "
                f"{len(self.demos)} demo transitions)")
        self.ledger = Ledger(ledger_state)
        if checkpoint is not None:  # episodes after the checkpoint come again with the resends
            run_dir.trim_episodes(self.run_dir, self.ledger.stored)
        self.lock = threading.Condition()  # guards buffers' writers, counters and ledger
        self.actors: dict[str, dict] = {}  # id -> {"seen", "weights_version", "unsent", ...}
        self.stopping = threading.Event()  # SIGTERM / Ctrl-C: checkpoint and leave
        self.done = False  # step budget reached: actors are told to stop
        self.final_request: dict | None = None  # the final evaluation, once the weights are final
        self.final_result: dict | None = None
        self.started = time.monotonic()
        self.receiving = True
        self.wall_start = time.perf_counter() - self.wall_offset
        self.metrics: dict = {}
        self.update_seconds = 0.0  # spent sampling and updating (this process)
        self.republish = False  # an actor connected: send it the weights without waiting
        self.rates: deque = deque()  # (time, critic updates, env steps) for recent rates
        self.write_config()
        self.progress_file = self.run_dir / "progress.csv"
        self.progress_rows = run_dir.read_csv(self.progress_file) if checkpoint is not None else []
        self.tensorboard = run_dir.tensorboard_writer(self.run_dir)

    # --- the update loop -----------------------------------------------------------------
    def run(self) -> None:
        cfg = self.config
        server = transport.RequestServer(self.lc.endpoint, source="learner")
        self.weights = WeightsPublisher(self.lc.weights_endpoint)
        self.weights.publish(self.agent, self.weights_version)
        receiver = threading.Thread(target=self.serve, args=(server,), name="receiver", daemon=True)
        receiver.start()
        self.say(f"learner: run {self.run_id} in {self.run_dir}; actors -> {self.lc.endpoint}, "
                 f"weights -> {self.lc.weights_endpoint}; target {cfg.utd_ratio} critic updates "
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
                batch = sample_mixed(self.online, self.demos, self.agent.config.batch_size * cfg.utd_ratio,
                                     demo_fraction=cfg.demo_fraction, generator=self.rng, out=batch)
                self.metrics = update(self.agent, batch)
                self.update_calls += 1
                self.update_seconds += time.perf_counter() - t0
            now = time.monotonic()
            if now - last_weights > self.lc.weights_every and self.update_calls:
                self.weights_version += 1
                self.weights.publish(self.agent, self.weights_version)
                last_weights = now
            self.weights.repeat(now=self.republish)  # at once for a newly connected actor
            self.republish = False
            if now - last_save > self.lc.checkpoint_every:
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
        if self.normalize and states:
            self.agent.set_state_scale(*state_statistics(np.concatenate(states)))
        self.scale_fixed, self.demo_states = True, []

    def update_target(self) -> int:
        """update() calls owed for the env steps received so far (one per step from learning_starts)."""
        return max(0, self.env_steps - self.config.learning_starts + 1)

    def ready_to_learn(self) -> bool:
        if len(self.online) + len(self.demos) == 0:
            return False
        if self.demo_episodes >= self.config.demos:
            return True
        return time.monotonic() - self.started > self.lc.demo_wait  # then train without them

    def finish(self, server, receiver) -> None:
        self.done = True
        self.weights_version += 1
        self.weights.publish(self.agent, self.weights_version)
        if not self.stopping.is_set():
            self.final_evaluation()
            # Budget reached: keep answering (with done=True) until every actor said bye.
            deadline = time.monotonic() + self.lc.linger
            while time.monotonic() < deadline and not self.stopping.is_set():
                with self.lock:
                    if not any(a["connected"] for a in self.actors.values()):
                        break
                    self.lock.wait(0.1)
                self.weights.repeat()
        self.receiving = False
        receiver.join(timeout=5.0)
        server.close()
        self.save()
        if self.final_result is not None:
            result = {**self.final_result, "checkpoint": str(self.last_checkpoint)}
            (self.run_dir / "eval.json").write_text(json.dumps(result, indent=2))
        self.write_metrics()  # also when no evaluation ran: the file is always there
        self.report()
        self.weights.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        why = "stopped by signal" if self.stopping.is_set() else "step budget reached"
        self.say(f"learner: {why} at env step {self.env_steps}; checkpoint written in "
                 f"{self.run_dir / 'checkpoints'}")

    def final_eval_episodes(self) -> int:
        n = self.lc.final_eval_episodes
        return self.config.eval_episodes if n < 0 else n

    def final_evaluation(self) -> None:
        """Ask the evaluator actor (already running, with an env) to evaluate the final weights."""
        with self.lock:
            evaluators = [k for k, a in self.actors.items() if a["evaluator"] and a["connected"]]
            if self.final_eval_episodes() <= 0 or not evaluators:
                return
            self.final_request = {"step": self.env_steps, "episodes": self.final_eval_episodes(),
                                  "final": True, "version": self.weights_version}
        self.say(f"learner: final evaluation of weights v{self.weights_version} by "
                 f"{evaluators[0]} ({self.final_eval_episodes()} episodes)")
        deadline = time.monotonic() + self.lc.final_eval_timeout
        while self.final_result is None and not self.stopping.is_set():
            with self.lock:
                if time.monotonic() > deadline or not self.actors[evaluators[0]]["connected"]:
                    self.say("learner: no final evaluation came back (the evaluator left or "
                             f"took over {self.lc.final_eval_timeout:.0f} s)")
                    break
                self.lock.wait(0.1)
            self.weights.repeat()
        self.final_request = None

    # --- the receiver thread -------------------------------------------------------------
    def serve(self, server: transport.RequestServer) -> None:
        while self.receiving:
            request = server.poll(0.05)
            if request is None:
                continue
            kind = request.message.kind
            handler = getattr(self, f"on_{kind}", None)
            if handler is None:
                server.reply_error(request, f"unknown request {kind!r}: a learner answers hello, "
                                            f"transitions, status, eval, bye and stats")
                continue
            try:
                with self.lock:
                    reply = handler(request.message)
                    self.lock.notify_all()
            except (ValueError, KeyError, TypeError) as exc:  # bad data: refuse it, keep serving
                log.warning("refused %r from %s: %s", kind, request.message.source, exc)
                server.reply_error(request, str(exc))
                continue
            if reply[0] == "error":
                server.reply_error(request, reply[1])
            else:
                server.reply(request, reply[0], reply[1])

    def on_hello(self, msg):
        problem = hello_mismatch(self.expected, msg.meta)
        actor = msg.meta.get("actor", "?")
        if problem:
            self.say(f"learner: refused {actor}: {problem}")
            return "error", problem
        known = actor in self.actors
        self.actors[actor] = {"session": msg.session, "connected": True, "seen": time.monotonic(),
                              "weights_version": -1, "unsent": 0, "evaluator": False}
        self.republish = True
        self.say(f"learner: {'re' if known else ''}connected {actor} (holding its transitions up "
                 f"to #{self.ledger.stored.get(actor, 0)})")
        return "welcome", {**self.ledger.ack(actor), "run": self.run_id, "demos": self.config.demos,
                           "demo_episodes": self.demo_episodes,
                           "sac": _plain(dataclasses.asdict(self.agent.config))}

    def on_transitions(self, msg):
        actor = self._actor(msg)
        if actor is None:
            return "rehello", {}
        m, stream = msg.meta, msg.meta.get("stream")
        if stream not in ("online",) + TO_DEMO_BUFFER:
            raise ValueError(f"unknown stream {stream!r}")
        got = self.ledger.accept(actor, int(m["first_seq"]), int(m["count"]), m.get("episodes", []))
        if got.count:
            a, s = msg.arrays, got.skip
            # HIL-SERL: an intervention step is a demonstration and also online experience.
            buffers = {"online": [self.online], "demo": [self.demos],
                       "intervention": [self.demos, self.online]}[stream]
            for buffer in buffers:
                buffer.add_batch(split_observations(a, "obs/", s), a["actions"][s:], a["rewards"][s:],
                                 split_observations(a, "next_obs/", s), a["terminations"][s:],
                                 a["truncations"][s:])
            if stream == "demo" and not self.scale_fixed:
                done = a["terminations"][s:] | a["truncations"][s:]
                self.demo_states += [a["obs/state"][s:].copy(), a["next_obs/state"][s:][done].copy()]
            if stream != "demo":
                self.env_steps += got.count
            if stream == "intervention":
                self.interventions += got.count
        for episode in got.new_episodes:
            self.record_episode(actor, episode)
        return self._ack(actor)

    def on_status(self, msg):
        actor = self._actor(msg)
        return ("rehello", {}) if actor is None else self._ack(actor)

    def on_eval(self, msg):
        actor = self._actor(msg)
        step = int(msg.meta["step"])
        final = bool(msg.meta.get("final")) and self.final_request is not None \
            and step == self.final_request["step"] and self.final_result is None
        if final or (step >= self.next_eval and self.config.eval_every > 0 and not msg.meta.get("final")):
            row = {"env_steps": step, "wall_seconds": round(self.wall(), 1),
                   "success_rate": float(msg.meta["success_rate"]),
                   "time_to_success_s": float(msg.meta["time_to_success_s"]),
                   "weights_version": int(msg.meta["weights_version"]), "actor": actor or "?",
                   "final": final}
            if final:
                self.final_result = {**row, "episodes": int(msg.meta["episodes"])}
            self.history.append(row)
            self.write_metrics()
            if self.tensorboard is not None:
                self.tensorboard.add_scalar("eval/success_rate", row["success_rate"], step)
                if row["time_to_success_s"] == row["time_to_success_s"]:  # not NaN
                    self.tensorboard.add_scalar("eval/time_to_success_s", row["time_to_success_s"], step)
                self.tensorboard.flush()
            self.say(f"{'final ' if final else ''}eval @ {step} steps ({row['wall_seconds']:.0f} s): success "
                     f"{row['success_rate']:.0%} over {msg.meta['episodes']} episodes "
                     f"(weights v{row['weights_version']})")
            while self.config.eval_every > 0 and self.next_eval <= max(step, self.env_steps):
                self.next_eval += self.config.eval_every
        return ("rehello", {}) if actor is None else self._ack(actor)

    def on_bye(self, msg):
        actor = self._actor(msg)
        if actor is not None:
            self.actors[actor]["connected"] = False
            self.say(f"learner: {actor} left (holding its transitions up to "
                     f"#{self.ledger.stored.get(actor, 0)})")
        return "bye", {}

    def on_stats(self, msg):
        return "stats", self.stats()

    def _actor(self, msg) -> str | None:
        """The actor a request comes from, if it greeted this learner session."""
        actor = msg.meta.get("actor")
        info = self.actors.get(actor)
        if info is None or info["session"] != msg.session:
            return None
        info.update(seen=time.monotonic(), connected=True,
                    weights_version=int(msg.meta.get("weights_version", -1)),
                    unsent=int(msg.meta.get("unsent", 0)), evaluator=bool(msg.meta.get("evaluator")))
        return actor

    def _ack(self, actor: str) -> tuple[str, dict]:
        owed = self.update_target() - self.update_calls
        wait = (self.lc.max_lead > 0 and owed > self.lc.max_lead
                and not (self.env_steps >= self.config.total_steps))
        done = self.done or self.env_steps >= self.config.total_steps
        evaluate = self.final_request
        if self.config.eval_every > 0 and self.env_steps >= self.next_eval and not done:
            evaluate = {"step": self.next_eval, "episodes": self.config.eval_episodes}
        final_eval = (done and self.final_eval_episodes() > 0 and self.final_result is None
                      and not self.stopping.is_set())
        return "ack", {**self.ledger.ack(actor), "wait": wait, "owed": owed, "eval": evaluate,
                       "done": done, "final_eval": final_eval,
                       "weights_version": self.weights_version, "env_steps": self.env_steps}

    # --- bookkeeping ---------------------------------------------------------------------
    def record_episode(self, actor: str, episode: dict) -> None:
        self.episodes += 1
        if episode.get("demo"):
            self.demo_episodes += 1
            self.episodes -= 1
        else:
            self.recent.append((float(episode.get("return", 0.0)), bool(episode.get("success"))))
        run_dir.append_episode(self.run_dir, {"actor": actor, "env_steps": self.env_steps, **episode})

    def wall(self) -> float:
        return time.perf_counter() - self.wall_start

    def stats(self) -> dict:
        now = time.monotonic()
        self.rates.append((now, self.agent.critic_updates, self.env_steps))
        while len(self.rates) > 2 and now - self.rates[1][0] > 30.0:  # rates over the last ~30 s
            self.rates.popleft()
        t0, u0, e0 = self.rates[0]
        learning_steps = max(0, self.env_steps - self.config.learning_starts + 1)
        owed = self.update_target() - self.update_calls
        return {
            "env_steps": self.env_steps, "total_steps": self.config.total_steps,
            "episodes": self.episodes, "demo_episodes": self.demo_episodes,
            "success_rate": float(np.mean([s for _, s in self.recent])) if self.recent else 0.0,
            "return": float(np.mean([r for r, _ in self.recent])) if self.recent else 0.0,
            "critic_updates": self.agent.critic_updates,
            "updates_per_s": (self.agent.critic_updates - u0) / max(now - t0, 1e-9) if now > t0 else 0.0,
            "env_steps_per_s": (self.env_steps - e0) / max(now - t0, 1e-9) if now > t0 else 0.0,
            "utd": self.update_calls * self.config.utd_ratio / max(1, learning_steps),
            "utd_target": self.config.utd_ratio, "owed": owed,
            "interventions": self.interventions, "weights_version": self.weights_version,
            "online": len(self.online), "demos": len(self.demos),
            "lost": sum(self.ledger.lost.values()), "duplicates": self.ledger.duplicates,
            "stored": dict(self.ledger.stored), "durable": dict(self.ledger.durable),
            "actors": {k: {"weights_version": v["weights_version"], "unsent": v["unsent"],
                           "connected": v["connected"], "silent_s": round(now - v["seen"], 1)}
                       for k, v in self.actors.items()},
            "wall_seconds": round(self.wall(), 1), "done": self.done,
            "busy": self.update_seconds / max(1e-9, time.monotonic() - self.started),
            "phase": self.phase(), "run": self.run_id,
        }

    def phase(self) -> str:
        if self.done:
            return "done"
        if not any(a["connected"] for a in self.actors.values()):
            return "waiting for actors to connect"
        if not self.ready_to_learn() and self.env_steps >= self.config.learning_starts:
            return f"waiting for demonstrations ({self.demo_episodes}/{self.config.demos})"
        if self.env_steps < self.config.learning_starts:
            return "collecting"
        return "training"

    def report(self) -> None:
        with self.lock:
            s = self.stats()
        row = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()
               if not isinstance(v, dict)}
        row.update({k: round(float(v), 5) for k, v in self.metrics.items()})
        self.progress_rows.append(row)
        run_dir.write_csv(self.progress_file, self.progress_rows)
        if self.tensorboard is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tensorboard.add_scalar(f"train/{k}", v, s["env_steps"])
            self.tensorboard.flush()  # on disk now, not after the writer's 2-minute timer
        self.say(run_dir.format_progress(s))

    def write_metrics(self) -> None:
        """metrics.csv: one row per evaluation (periodic and final); the header alone before any."""
        run_dir.write_csv(self.run_dir / "metrics.csv", self.history, run_dir.METRICS_FIELDS)

    def save(self) -> None:
        """Checkpoint + buffers, consistent with the ledger: then tell actors it is durable."""
        self.saves += 1
        names = (f"online_{self.saves:06d}.npz", f"demos_{self.saves:06d}.npz")
        with self.lock:  # the receiver waits: buffers and ledger must match exactly
            self.online.save(self.run_dir / "buffers" / names[0])
            self.demos.save(self.run_dir / "buffers" / names[1])
            counters = {k: getattr(self, k) for k in (
                "env_steps", "update_calls", "episodes", "interventions", "demo_episodes",
                "weights_version", "saves", "history", "next_eval", "run_id", "scale_fixed")}
            counters.update(recent=list(self.recent), wall_offset=self.wall())
            ledger = self.ledger.state_dict()
            state = {"agent": self.agent.state_dict(), "env_steps": self.env_steps,
                     "counters": json.dumps(counters), "ledger": json.dumps(ledger),
                     "online_buffer": names[0], "demo_buffer": names[1]}
        # Numbered by save (the env step is inside): two saves at one env step must not collide,
        # and the two checkpoints kept are exactly those whose buffers are kept.
        self.last_checkpoint = save_checkpoint(self.run_dir, self.saves, state, keep_last=2)
        with self.lock:
            self.ledger.mark_durable(ledger["stored"])
        keep = {f"{kind}_{n:06d}.npz" for kind in ("online", "demos") for n in (self.saves, self.saves - 1)}
        for path in (self.run_dir / "buffers").glob("*_*.npz"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def write_config(self) -> None:
        run_dir.update_config(self.run_dir, {**dataclasses.asdict(self.config), "mode": "actor-learner",
                                             "learner": dataclasses.asdict(self.lc)})


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --- command line ------------------------------------------------------------------------------

def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """TrainConfig's options (with its nested --sac-* options), as `robostack train` has them."""
    from robostack.config import add_dataclass_arguments
    from robostack.rl.sac import SACConfig

    add_dataclass_arguments(parser, TrainConfig)
    if "--sac-batch-size" not in parser._option_string_actions:  # older cli_config: not nested
        add_dataclass_arguments(parser, SACConfig, prefix="sac-")
        parser.set_defaults(sac_options_apart=True)


def train_config_from_args(args) -> TrainConfig:
    from robostack.config import dataclass_from_args
    from robostack.rl.sac import SACConfig

    config = dataclass_from_args(TrainConfig, args)
    if getattr(args, "sac_options_apart", False):
        config.sac = dataclass_from_args(SACConfig, args, prefix="sac-")
    return config


def main(argv=None) -> int:
    from robostack.config import add_dataclass_arguments, dataclass_from_args

    parser = argparse.ArgumentParser(prog="robostack learner", description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    add_dataclass_arguments(parser, LearnerConfig)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    from robostack.rl.runtime import keep_freed_memory

    keep_freed_memory()  # reuse the update's multi-MB buffers instead of page-faulting them in
    learner = Learner(train_config_from_args(args), dataclass_from_args(LearnerConfig, args),
                      say=lambda text: print(text, flush=True))

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
