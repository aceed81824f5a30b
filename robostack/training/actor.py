"""`robostack actor`: act in the env with the learner's latest weights, stream transitions to it.

One loop, one env step at a time:

    between steps: load newer weights if any (verified), pause if the learner asks (UTD), run an
                   evaluation if asked (evaluator actor, between episodes), stop if it says done
    step:          policy (or the intervening expert) -> env.step -> transition to the sender
    episode end:   summary (return, success, interventions, why it ended) rides with the batch

Failure behaviour:
* learner gone: keep acting with the last weights; transitions pile up in the spool (on disk)
  and are resent, without duplicates, when a learner answers again (transitions.py).
* robot server gone: the episode ends as truncated (its last transition is marked so, and the
  summary says "robot server lost"), then the actor waits for the server, up to robot_timeout.
* SIGTERM / Ctrl-C: the current episode ends as truncated ("stopped"), what is unsent is sent
  for up to a few seconds, the rest stays spooled for next time.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hardware.teleop.base import DeviceUnavailable
from robostack import transport
from robostack.data.episode_log.layout import image_timestamps
from robostack.env.learned_reward import episode_classifier_stats
from robostack.env.teleop import needs_pacing
from robostack.env.wrappers import make_training_env
from robostack.rl.featurize import policy_env
from robostack.training.config import ActorIdentity, RunConfig, parse_run_options
from robostack.training.rollouts import (check_server_backend, classifier_extras, collect_demonstrations, evaluate, open_env,
                                         rewarded_env, rollout_log)
from robostack.training.run_dir import RUN_FILE, Summary, read_run_identity, read_summary
from robostack.training.threads import exit_when_a_thread_dies
from robostack.training.transitions import (
    HandshakeRefused,
    Superseded,
    TransitionSender,
    action_spec,
    observation_spec,
)
from robostack.training.weights import WeightsSubscriber


class Actor:
    def __init__(self, config: RunConfig, identity: ActorIdentity | None = None, say=print):
        self.config, self.identity, self.say = config, identity or ActorIdentity(), say
        self.options = config.actor
        self.id = self.identity.actor_id
        self.seed = config.seed + self.identity.index  # episode resets, the autopilot's draws
        self.stop_reason: str | None = None
        self.steps = self.episodes = 0
        self.robot_server_losses = 0
        self.reset_events: list = []  # the last reset's supervisor transitions, logged with the next frame
        self.last_eval_step = -1
        # This actor's starts in the run (its summary says how many came before): a restarted
        # actor draws its reset seeds from a stream of its own (seed_stream), not the same
        # episodes again.
        self.starts = int((read_summary(config.run_dir, self.id) or {}).get("starts", 0)) + 1
        self.summary = Summary(config.run_dir, self.id)
        self.summary.update(state="starting", starts=self.starts)

    # --- set-up ----------------------------------------------------------------------------
    def connect(self) -> None:
        config, identity = self.config, self.identity
        torch.set_num_threads(1)
        self.env = open_env(config, self.seed, identity.robot_server, timeout=self.options.robot_timeout,
                            waiting=self.waiting_for_robot_server,
                            curve=transport.CurveKeys.from_options(identity.actor_key, identity.robot_server_key),
                            camera_endpoint=identity.camera_server or None,
                            camera_curve=transport.CurveKeys(identity.actor_key, identity.camera_server_key)
                            if identity.camera_server_key else None)
        check_server_backend(self.env, config)
        # What the policy observes: the env's observations, or with a frozen cached encoder each
        # camera's features, computed here once per frame (rl/featurize.py); the log keeps pixels.
        self.observed = policy_env(self.env, config.sac)
        # What training episodes and demonstrations step: with --reward-classifier a learned
        # reward decides success (robostack/env/learned_reward.py); evaluations step `observed`.
        self.rewarded = rewarded_env(self.observed, config)
        self.log = rollout_log(identity.episode_log, self.env, config.task, bool(config.reward_classifier)) \
            if identity.episode_log else None
        hello = {"task": config.task, "obs_spec": observation_spec(self.observed.observation_space),
                 "action_spec": action_spec(self.env.action_space)}
        spool = identity.spool_dir or str(Path(config.run_dir) / "spool" / self.id)
        # Both learner sockets, when the learner serves with CURVE (docs/security.md).
        curve = transport.CurveKeys.from_options(identity.actor_key, identity.learner_key)
        self.sender = TransitionSender(identity.learner, self.id, hello, spool, self.options.batch_steps,
                                       self.options.request_timeout, say=self.say,
                                       run_file=identity.run_file or Path(config.run_dir) / RUN_FILE,
                                       curve=curve)
        if self.sender.pending:
            self.say(f"{self.id}: {len(self.sender.pending)} spooled batches in {spool} will be resent")
        # Subscribed before the handshake: the learner resends its weights when we say hello.
        self.weights = WeightsSubscriber(identity.weights, say=self.say, name=self.id, curve=curve,
                                         signed=True)
        welcome = self.sender.connect(self.options.connect_timeout)
        self.weights.secret = read_run_identity(self.sender.run_file)[1]  # the learner proved it holds it
        self.rng, self.draw_seed = seed_stream(self.seed, self.starts, int(welcome["stored"]))
        # What training episodes step: the env, or the operator's wrapper around it (HIL-SERL).
        # A person's device is the launcher's (this process has no terminal): its readings come
        # over the launcher's relay (robostack/env/teleop_relay.py).
        device = None
        if config.intervention and identity.teleop_readings:
            from robostack.env.teleop_relay import RelayedDevice

            device = RelayedDevice(identity.teleop_readings, identity.teleop_view, source=self.id)
        self.acting = make_training_env(self.rewarded, config.intervention, config.autopilot,
                                        config.takeover_penalty, seed=self.draw_seed, device=device)
        # A person in the loop: the acting env steps in real time, and is paused for the
        # learner only between episodes, as on a real-time robot.
        self.realtime = self.env.realtime or needs_pacing(config.intervention)
        self.agent = self.build_agent(welcome["sac"])
        if not self.load_weights(wait=self.options.weights_timeout):
            self.say(f"{self.id}: no weights from {identity.weights} within "
                     f"{self.options.weights_timeout:.0f} s; acting with the initial parameters until some arrive")
        self.say(f"{self.id}: connected to the learner (run {welcome['run']}), acting with "
                 f"weights v{self.weights.version}; robot server {self.env.connection.endpoint}")
        self.write_summary(state="running", run=welcome["run"])
        self.record_demonstrations(welcome)

    def waiting_for_robot_server(self) -> None:
        if self.stop_reason:
            raise SystemExit(f"{self.id}: stopped ({self.stop_reason}) before the robot server answered")
        self.say(f"{self.id}: waiting for the robot server at {self.identity.robot_server}")

    def load_weights(self, wait: float = 0.0) -> bool:
        """Newer verified weights (state scaling included), between steps."""
        if wait > 0:
            return self.weights.wait(self.agent, wait)
        return self.weights.poll(self.agent)

    def build_agent(self, sac: dict):
        from robostack.rl.sac import SACConfig, build_agent

        names = {f.name for f in dataclasses.fields(SACConfig)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in sac.items() if k in names}
        config = dataclasses.replace(SACConfig(**values), compile=False, device="cpu")
        return build_agent(config, self.observed.observation_space, self.env.action_space)

    def record_demonstrations(self, welcome: dict) -> None:
        """Actor 0 records the expert demonstrations the learner still lacks (those already in
        this actor's spool count as delivered)."""
        if self.identity.index != 0:
            return
        spooled = sum(len(b.episodes) for b in self.sender.pending
                      if b.stream == "demo" and b.last_seq > self.sender.stored)
        wanted = int(welcome["demos"]) - int(welcome["demo_episodes"]) - spooled
        if wanted <= 0:
            return
        # A restarted actor 0 records the missing demonstrations from other resets than before.
        episodes = collect_demonstrations(self.rewarded, wanted, self.seed, self.config.demo_noise,
                                          progress=self.say, rng=None if self.draw_seed == self.seed else self.rng)
        for ep in episodes:
            observed = ep["observations"]  # {"state": (T + 1, S), "images/<camera>": ...}
            for t in range(len(ep["actions"])):
                self.sender.add({k: v[t] for k, v in observed.items()}, ep["actions"][t],
                                ep["rewards"][t], {k: v[t + 1] for k, v in observed.items()},
                                ep["terminations"][t], ep["truncations"][t], stream="demo")
            self.sender.end_episode({"demo": True, "return": float(ep["rewards"].sum()),
                                     "length": len(ep["actions"]), "success": True})
        self.sender.pump(budget=5.0)

    def write_summary(self, **fields) -> None:
        """summary/<actor id>.json: this actor's counts, for programs and tests."""
        sender = self.sender
        self.summary.update(steps=self.steps, episodes=self.episodes, last_seq=sender.seq,
                            learner_holds=sender.stored, unsent=sender.unsent,
                            weights_version=self.weights.version,
                            robot_server_losses=self.robot_server_losses, **fields)

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        sender, evaluator = self.sender, self.identity.evaluator
        obs = self.reset()
        episode = self.new_episode()
        last_note = time.monotonic()
        while self.stop_reason is None:
            # Between steps: newest weights, learner's requests.
            self.load_weights()
            sender.extra_meta = {"weights_version": self.weights.version, "evaluator": evaluator,
                                 "actor_steps": self.steps}
            reply = sender.reply
            if reply.get("done"):
                self.stop_reason = "the learner reached its step budget"
                if evaluator and reply.get("final_eval"):
                    if episode["length"]:
                        self.end_episode(episode, "stopped", truncate=True)
                        episode = self.new_episode()
                    self.final_evaluation()
                break
            at_start = episode["length"] == 0
            if reply.get("wait") and sender.connected and (at_start or not self.realtime):
                self.wait_for_learner()
            if at_start and evaluator and reply.get("eval") and reply["eval"]["step"] > self.last_eval_step:
                self.evaluate(reply["eval"])
                obs = self.reset()

            # One step: the policy acts, unless the operator holds the deadman (HIL-SERL).
            policy_action = self.agent.act(obs, deterministic=False)  # logged even when overridden
            logged = self.pixels(obs)  # the observation the log keeps (pixels, not features)
            try:
                next_obs, reward, terminated, truncated, info = self.acting.step(policy_action)
            except transport.TransportError as exc:
                self.end_episode(episode, f"robot server lost ({exc})", truncate=True)
                obs = self.recover_robot(exc)
                episode = self.new_episode()
                continue
            intervening = bool(info.get("intervention", False))
            action = info.get("executed_action", policy_action)
            if "stop" in info.get("teleop_events", ()):
                self.stop_reason = "the operator pressed stop"
            sender.add(obs, action, reward, next_obs, terminated, truncated,
                       stream="intervention" if intervening else "online")
            if self.log is not None:
                self.log.add_frame(logged, action, reward, terminated, truncated,
                                   success=bool(info["success"]), intervention=intervening,
                                   policy_action=policy_action,
                                   timestamps={"state": np.nan if info.get("time") is None
                                               else float(info["time"]), **self.obs_image_times},
                                   events=self.reset_events + list(info.get("supervisor_transitions", [])),
                                   extras=classifier_extras(info))
                self.reset_events = []
            self.obs_image_times = image_timestamps(info)  # of next_obs, logged with the next frame
            self.steps += 1
            episode["length"] += 1
            episode["return"] += float(reward)
            episode["interventions"] += int(intervening)
            episode["success"] = bool(info["success"])
            episode.update(episode_classifier_stats(info))  # at the end: frames vs the task's check
            obs = next_obs
            if terminated or truncated:
                if self.log is not None:
                    self.log.end_episode(self.pixels(next_obs), metadata={"reset_seed": self.reset_seed,
                                                             "weights_version": self.weights.version})
                self.end_episode(episode, "terminated" if terminated else "truncated")
                obs = self.reset()
                episode = self.new_episode()
            sender.pump(budget=0.2)
            if self.options.max_steps and self.steps >= self.options.max_steps:
                self.stop_reason = f"max_steps {self.options.max_steps} reached"
            if time.monotonic() - last_note > 30.0:
                last_note = time.monotonic()
                self.say(f"{self.id}: {self.steps} steps, {self.episodes} episodes, weights "
                         f"v{self.weights.version}, {sender.unsent} transitions unsent")
        if episode["length"]:
            self.end_episode(episode, "stopped", truncate=True)
        return self.shutdown()

    obs_image_times: dict = {}  # {"images/<camera>": s} of the observation about to be logged

    def pixels(self, obs: dict) -> dict:
        """The env's own observation of `obs`, the latest (with cached features: their pixels)."""
        return obs if self.observed is self.env else self.observed.raw

    def new_episode(self) -> dict:
        return {"length": 0, "return": 0.0, "success": False, "interventions": 0}

    def end_episode(self, episode: dict, end: str, truncate: bool = False) -> None:
        if truncate:
            self.sender.truncate_last()
            if self.log is not None:  # its last logged step says "not truncated": drop it
                self.log.discard_episode()
        self.episodes += 1
        summary = {k: v for k, v in episode.items() if not isinstance(v, dict)}
        self.sender.end_episode({**summary, "end": end, "weights_version": self.weights.version})
        if end.startswith("robot server lost"):
            self.say(f"{self.id}: episode {self.episodes} ended as truncated after "
                     f"{episode['length']} steps: {end}")

    def reset(self):
        while self.stop_reason is None:
            try:
                self.reset_seed = int(self.rng.integers(2**31))
                obs, info = self.acting.reset(seed=self.reset_seed)  # the operator's too
                # The reset's supervisor transitions go into the episode log with its first frame.
                self.reset_events = list(info.get("supervisor_transitions", []))
                self.obs_image_times = image_timestamps(info)
                return obs
            except transport.TransportError as exc:
                self.recover_robot(exc, reset=False)

    def recover_robot(self, exc: Exception, reset: bool = True):
        """Wait (up to robot_timeout, pumping transitions meanwhile) until the server answers."""
        endpoint = self.env.connection.endpoint
        self.robot_server_losses += 1
        self.write_summary(robot_server="lost")
        self.say(f"{self.id}: robot server at {endpoint} failed ({exc}); waiting up to "
                 f"{self.options.robot_timeout:.0f} s for it")
        start = last = time.monotonic()
        while self.stop_reason is None:
            self.sender.pump(budget=0.2)
            try:
                self.env.connection.request("hello", {"task": self.config.task}, timeout=1.0)
                self.say(f"{self.id}: robot server back after {time.monotonic() - start:.0f} s")
                self.write_summary(robot_server="back")
                return self.reset() if reset else None
            except transport.RemoteError as refusal:  # e.g. a server for another task took the port
                raise SystemExit(f"{self.id}: robot server refused: {refusal.text}")
            except transport.TransportError:
                pass
            if time.monotonic() - start > self.options.robot_timeout:
                raise SystemExit(f"{self.id}: robot server at {endpoint} did not come "
                                 f"back within {self.options.robot_timeout:.0f} s; giving up "
                                 f"({self.sender.unsent} transitions left in the spool)")
            if time.monotonic() - last > 10.0:
                last = time.monotonic()
                self.say(f"{self.id}: still waiting for the robot server "
                         f"({last - start:.0f} s)")
        return None

    def wait_for_learner(self) -> None:
        """The learner is more than max_lead steps behind its UTD target: pause until it catches
        up, or stops answering (then act on and spool)."""
        start = last = time.monotonic()
        while self.stop_reason is None:
            reply = self.sender.status()
            if reply is None or not reply.get("wait") or reply.get("done"):
                return
            self.load_weights()
            if time.monotonic() - last > 30.0:
                last = time.monotonic()
                self.say(f"{self.id}: paused {last - start:.0f} s for the learner to "
                         f"catch up ({reply.get('owed')} updates owed)")
            time.sleep(0.02)

    def final_evaluation(self) -> None:
        """The learner finishes its owed updates, then asks for an evaluation of its final
        weights: send what is unsent, wait for that request (and those weights), run it."""
        self.sender.flush(timeout=30.0)
        start = last = time.monotonic()
        while time.monotonic() - start < self.config.final_eval_timeout:
            reply = self.sender.status()
            if reply is None or not reply.get("final_eval"):
                return  # the learner is gone or no longer wants one
            self.load_weights()
            request = reply.get("eval")
            if request and request.get("final"):
                deadline = time.monotonic() + 10.0
                while self.weights.version < request["version"] and time.monotonic() < deadline:
                    self.load_weights(wait=0.5)
                self.evaluate(request)
                return
            if time.monotonic() - last > 30.0:
                last = time.monotonic()
                self.say(f"{self.id}: waiting for the learner's final weights "
                         f"({reply.get('owed')} updates owed)")
            time.sleep(0.05)

    def evaluate(self, request: dict) -> None:
        """The learner's evaluation request, on the run's evaluation seeds (as in one process)."""
        started = time.perf_counter()
        try:
            result = evaluate(self.agent, self.observed, int(request["episodes"]), self.config.seed)
        except transport.TransportError as exc:
            self.say(f"{self.id}: evaluation @ {request['step']} abandoned: {exc}")
            return
        self.last_eval_step = int(request["step"])
        self.sender.request("eval", {**result, "step": self.last_eval_step,
                                     "episodes": int(request["episodes"]),
                                     "final": bool(request.get("final")),
                                     "weights_version": self.weights.version,
                                     "seconds": time.perf_counter() - started})

    def shutdown(self) -> int:
        sender = self.sender
        delivered = sender.flush(timeout=10.0)
        # The run is over (not merely this actor stopped): once the learner's final checkpoint
        # holds everything sent, the spool is empty and goes, so that the next actor started
        # with this spool folder does not find a finished run's batches in it.
        finished = delivered and bool(sender.reply.get("done"))
        cleaned = False
        if sender.connected:
            sender.request("bye", {"awaiting_durable": finished})
            if finished and sender.wait_durable(timeout=60.0):
                cleaned = sender.spool.remove_if_empty()
        # Delivered is not durable: a learner killed before its next checkpoint comes back
        # without these, and the launcher restarts an actor that leaves any (launcher.py).
        not_durable = sum(b.count for b in sender.pending)
        self.say(f"{self.id}: stopped ({self.stop_reason}) after {self.steps} steps, "
                 f"{self.episodes} episodes; last transition #{sender.seq}, learner holds up to "
                 f"#{sender.stored}" + ("" if delivered else
                                         f"; {sender.unsent} left in the spool {sender.spool.dir}")
                 + (f"; {not_durable} not yet in a learner checkpoint, kept in the spool "
                    f"{sender.spool.dir}" if not_durable and delivered else "")
                 + (f"; spool {sender.spool.dir} cleaned (all durable)" if cleaned else ""))
        self.write_summary(state="stopped", stop_reason=self.stop_reason, delivered=delivered,
                           spool_cleaned=cleaned, not_durable=not_durable)
        return 0

    def close(self) -> None:
        # `acting` closes the operator's device (if any), then the env it wraps.
        env = getattr(self, "acting", None) or getattr(self, "env", None)
        for part in (getattr(self, "log", None), getattr(self, "weights", None),
                     getattr(self, "sender", None), env):
            if part is not None:
                part.close()


def seed_stream(seed: int, starts: int, held: int) -> tuple[np.random.Generator, int]:
    """The generator of an actor's reset seeds, and a seed for its other draws, for its
    `starts`-th start in the run when the learner holds `held` of its transitions. The first
    start of a fresh run draws what it always drew (a run is reproducible from --seed); any
    later one is keyed on both numbers, so that neither a lost summary (starts) nor a learner
    holding nothing yet (held) makes a restart repeat the episodes it already played."""
    if starts <= 1 and held == 0:
        return np.random.default_rng(seed + 7919), seed
    rng = np.random.default_rng([seed, 7919, starts, held])
    return rng, int(rng.integers(2**31))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack actor", description=__doc__.splitlines()[0])
    config, identity, _ = parse_run_options(parser, sys.argv[1:] if argv is None else argv, ActorIdentity)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    exit_when_a_thread_dies()  # a dead thread ends the process, so the launcher restarts it
    actor = Actor(config, identity, say=lambda text: print(text, flush=True))

    def stop(signum, frame):
        if actor.stop_reason is not None:
            raise SystemExit(1)  # second signal: leave now (the spool keeps what is unsent)
        actor.stop_reason = f"signal {signal.Signals(signum).name}"

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        actor.connect()
        return actor.run()
    except HandshakeRefused as exc:
        print(f"robostack actor: {exc}", file=sys.stderr, flush=True)
        actor.summary.update(state="refused", reason=str(exc))
        return 2
    except Superseded as exc:  # a newer copy of this actor took over; the spool keeps the rest
        print(f"robostack actor: {exc}", file=sys.stderr, flush=True)
        actor.summary.update(state="superseded", reason=str(exc))
        return 1
    except transport.PeerTimeout as exc:
        print(f"robostack actor: {exc}", file=sys.stderr, flush=True)
        actor.summary.update(state="gave up", reason=str(exc))
        return 3
    except DeviceUnavailable as exc:  # a restart cannot bring a missing device: one line, code 2
        print(f"robostack actor: --intervention {config.intervention}: {exc}", file=sys.stderr, flush=True)
        actor.summary.update(state="refused", reason=str(exc))
        return 2
    finally:
        actor.close()  # also stops a robot server this actor started


if __name__ == "__main__":
    sys.exit(main())
