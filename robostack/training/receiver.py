"""The learner's receiver thread: how it answers its actors and what it tells the launcher.

`Learner` (robostack/training/learner.py) is built from this part and its update loop. The
receiver polls the learner's ROUTER socket and answers each request under the learner's lock,
so buffers, counters and ledger change only between two of the update loop's steps:

    hello        check the actor's task and specs (transitions.hello_mismatch), that it is of
                 this run (run id, and its proof made with the run's secret), that the run has
                 a place for its actor id; welcome it with the seqs held of it, the run id, the
                 learner's own proof, the SAC config and the demonstrations wanted. A newer
                 session for an actor id replaces the older one (see on_hello)
    transitions  store the new part of a batch (transitions.Ledger drops resent prefixes) in
                 the online and/or demonstration buffer, count env steps, log finished episodes
    status       the ack alone: stored/durable seqs, wait (UTD pacing), done, eval requests
    eval         an evaluation result: a metrics.csv row (and the final result)
    bye          the actor left (at the end of a run it then asks "durable" until the final
                 checkpoint holds its transitions, and cleans its spool)
    stats        counters and rates (the launcher's progress lines), and the run id; with a
                 `challenge`, the learner's proof over it (how the launcher tells that the
                 process answering on an endpoint is this run's learner before it records it)

transitions, status, eval and bye are taken only from the session that said hello for their
actor id (anything else: "rehello", or "superseded" for a replaced session); durable from any
one, but only that session's may end the learner's wait for it.

Every request is hostile until validated: its numbers are read with transport.meta_int /
meta_float (types, finite, ranges a reply can carry), a batch's arrays are checked against the
learner's specs before anything (ledger included) changes. A malformed request is refused with
a named error and a log line; an unexpected error in a handler is logged with its traceback
and answered too: no request raises out of serve(). Should the thread die anyway (a socket
error), threads.exit_when_a_thread_dies (installed by the learner's and actor's main) takes the
process down with a non-zero code, so that the launcher restarts it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time


from robostack import transport
from robostack.training import run_dir
from robostack.training.progress import progress_stats
from robostack.training.transitions import (
    TO_DEMO_BUFFER,
    Superseded,
    hello_mismatch,
    hello_proof,
    proof_matches,
    split_observations,
    welcome_proof,
)

log = logging.getLogger("robostack.training.learner")

# The largest seq or count a batch may name: 2**53 transitions is beyond any run, and keeps
# stored seqs exact as floats (JSON readers, progress.csv) and far inside int64.
MAX_SEQ = 2**53
MAX_BATCH = 2**20  # transitions in one batch (actors send ~100)
MAX_EPISODES = 10_000  # episode summaries in one batch
MAX_NAME = 128  # characters of an actor id
RETIRED_SESSIONS = 16  # replaced sessions remembered per actor id (they are told "superseded")


class Receiver:
    """The request handlers of `Learner`; they use the learner's state (see Learner.__init__)."""

    def serve(self, server: transport.RequestServer) -> None:
        while self.receiving:
            request = server.poll(0.05)
            if request is not None:
                self.answer(server, request)

    def answer(self, server: transport.RequestServer, request: transport.Request) -> None:
        """Answer one request; never raises for anything the request holds."""
        kind = request.message.kind
        handler = getattr(self, f"on_{kind}", None)
        if handler is None:
            server.reply_error(request, f"unknown request {kind[:40]!r}: a learner answers hello, "
                                        f"transitions, status, eval, bye, durable and stats")
            return
        try:
            with self.lock:
                reply = handler(request.message)
                self.lock.notify_all()
        except Superseded as exc:  # a replaced session: its process must stop, not retry
            self.note_refusal(f"refused {kind!r} of a replaced session: {exc}")
            server.reply(request, "superseded", {"error": str(exc)})
            return
        except (ValueError, KeyError, TypeError, IndexError) as exc:  # bad data: refuse it
            self.refused = getattr(self, "refused", 0) + 1
            if self.refused <= 10 or self.refused % 1000 == 0:  # a flood is not a log flood
                log.warning("refused %r from %s (%d so far): %s", kind,
                            request.message.source[:40], self.refused, exc)
            server.reply_error(request, f"{kind}: {exc}")
            return
        except Exception as exc:  # a bug of ours, found by a request: log it, answer, go on
            log.exception("%r from %s failed unexpectedly", kind, request.message.source[:40])
            server.reply_error(request, f"{kind}: internal error ({type(exc).__name__}: {exc}); "
                                        f"the learner logged its traceback and goes on serving")
            return
        if reply[0] == "error":
            server.reply_error(request, reply[1])
        else:
            server.reply(request, reply[0], reply[1])

    def on_hello(self, msg):
        actor = msg.meta.get("actor", "?")
        if not isinstance(actor, str) or not 0 < len(actor) <= MAX_NAME:
            raise ValueError(f"actor id must be a str of 1..{MAX_NAME} characters, got "
                             f"{type(actor).__name__}")
        problem = hello_mismatch(self.expected, msg.meta) or self.identity_problem(actor, msg)
        if problem:
            self.note_refusal(f"refused hello of {actor[:40]!r}: {problem}")
            return "error", problem
        resend_from = transport.meta_int(msg.meta, "resend_from", low=1, high=MAX_SEQ + 1)
        known, info = actor in self.actors, self.actors.get(actor)
        if info is not None and info["session"] != msg.session:
            # A newer session replaces the older one rather than being refused: after kill -9
            # the learner cannot tell that the older one is dead (ZeroMQ says nothing), and the
            # restarted actor must not wait for it to time out. Both proved they are this run's
            # actor, so this is a restart or a duplicate copy, never an outsider; the older one
            # is told "superseded" and may not come back, so two copies cannot take turns.
            self.retired.setdefault(actor, []).append(info["session"])
            del self.retired[actor][:-RETIRED_SESSIONS]
            self.say(f"learner: a new session of {actor} replaces the previous one "
                     f"({'connected' if info['connected'] else 'gone'}, seen "
                     f"{time.monotonic() - info['seen']:.0f} s ago)")
        self.actors[actor] = {"session": msg.session, "connected": True, "seen": time.monotonic(),
                              "weights_version": -1, "unsent": 0, "evaluator": False,
                              "resend_from": resend_from}
        self.republish = True
        self.say(f"learner: {'re' if known else ''}connected {actor} (holding its transitions up "
                 f"to #{self.ledger.stored.get(actor, 0)})")
        return "welcome", {**self.ledger.ack(actor), "run": self.run_id, "demos": self.demo_target,
                           "proof": welcome_proof(self.run_secret, self.run_id, actor, msg.session),
                           "demo_episodes": self.demo_episodes,
                           "sac": _plain(dataclasses.asdict(self.agent.config))}

    def identity_problem(self, actor: str, msg) -> str | None:
        """Why a hello is not from this run's actor `actor`, or None (transitions.py: who may
        send). Raises Superseded for a session that a newer one replaced."""
        run, proof = msg.meta.get("run"), msg.meta.get("proof")
        if run != self.run_id:
            return (f"wrong run: the hello is of run {str(run)[:40]!r}, this learner runs "
                    f"{self.run_id} ({self.run_dir}); point the actor at its own run's learner, "
                    f"or give it this run's run.json (--run-file)")
        if not proof_matches(hello_proof(self.run_secret, run, actor, msg.session), proof):
            return (f"bad proof: the hello does not carry run {run}'s proof (HMAC with the run "
                    f"secret of {self.run_dir / run_dir.RUN_FILE}); give the actor this run's "
                    f"run.json (--run-file), not another run's")
        if actor not in self.actor_ids:
            return (f"unknown actor id: run {run} has actors {', '.join(sorted(self.actor_ids))} "
                    f"(--actors {len(self.actor_ids)}); start it with one of them (--actor-id)")
        if msg.session in self.retired.get(actor, ()):
            raise Superseded(f"a newer session of {actor} said hello since: this process is a "
                             f"replaced copy of {actor}; stop it")
        return None

    def note_refusal(self, text: str) -> None:
        """A refused hello or request, logged by name; a flood is not a log flood."""
        self.refusals = getattr(self, "refusals", 0) + 1
        if self.refusals <= 10 or self.refusals % 1000 == 0:
            log.warning("learner: %s (%d refusals so far)", text, self.refusals)

    def on_transitions(self, msg):
        actor = self._actor(msg)
        if actor is None:
            return "rehello", {}
        if self.closed:  # after the final checkpoint: not stored, so the actor keeps them spooled
            return self._ack(actor)
        m, stream = msg.meta, msg.meta.get("stream")
        if not isinstance(stream, str) or stream not in ("online",) + TO_DEMO_BUFFER:
            raise ValueError(f"unknown stream {str(stream)[:40]!r}: send online, "
                             f"{', '.join(TO_DEMO_BUFFER)}")
        first_seq = transport.meta_int(m, "first_seq", low=1, high=MAX_SEQ)
        count = transport.meta_int(m, "count", low=0, high=MAX_BATCH)
        episodes = _episodes(m.get("episodes", []))
        self._check_batch(msg.arrays, count)
        ledger, info = self.ledger, self.actors[actor]
        before = (ledger.stored.get(actor), ledger.lost.get(actor), ledger.duplicates)
        try:
            # SeqAhead (a ValueError) before anything changes: a batch the actor could not
            # have sent is refused by name.
            got = self.ledger.accept(actor, first_seq, count, episodes, info["resend_from"])
            if got.count:
                self._store(msg.arrays, got, stream)
        except Exception:  # refused by a buffer (e.g. non-finite values): the ledger as it was
            for table, value in ((ledger.stored, before[0]), (ledger.lost, before[1])):
                if value is None:
                    table.pop(actor, None)
                else:
                    table[actor] = value
            ledger.duplicates = before[2]
            raise
        if got.count:
            info["resend_from"] = None  # the declared gap is behind: from now on, no gap
        for episode in got.new_episodes:
            self.record_episode(actor, episode)
        return self._ack(actor)

    def _store(self, a: dict, got, stream: str) -> None:
        """The new part of a batch into its buffer(s); ReplayBuffer.add_batch checks everything
        before it writes, so a refusal leaves the buffers as they were."""
        s = got.skip
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

    def on_status(self, msg):
        actor = self._actor(msg)
        return ("rehello", {}) if actor is None else self._ack(actor)

    def on_eval(self, msg):
        actor = self._actor(msg)
        if actor is None:  # a result from outside this run's actors: no metrics row
            return "rehello", {}
        m = msg.meta
        step = transport.meta_int(m, "step", low=0, high=MAX_SEQ)
        # Checked before any of them is used: a refused result leaves no half-written row.
        transport.meta_float(m, "success_rate", low=0.0, high=1.0)
        transport.meta_float(m, "time_to_success_s", low=0.0, finite=False)  # NaN: no success
        transport.meta_float(m, "seconds", 0.0, low=0.0)
        transport.meta_int(m, "weights_version", low=-1)
        transport.meta_int(m, "episodes", 0, low=0, high=MAX_SEQ)
        final = bool(msg.meta.get("final")) and self.final_request is not None \
            and step == self.final_request["step"] and self.final_result is None
        if final or (step >= self.next_eval and self.config.eval_every > 0 and not msg.meta.get("final")):
            self.eval_seconds += float(msg.meta.get("seconds", 0.0))
            row = {"env_steps": step, "wall_seconds": round(self.wall(), 1),
                   "success_rate": float(msg.meta["success_rate"]),
                   "time_to_success_s": float(msg.meta["time_to_success_s"]),
                   "eval_seconds": round(self.eval_seconds, 1), "intervention_steps": self.interventions,
                   "weights_version": int(msg.meta["weights_version"]), "actor": actor,
                   "final": final}
            if final:
                self.final_result = {**row, "episodes": int(msg.meta["episodes"])}
            self.history.append(row)
            run_dir.write_metrics(self.run_dir, self.history)
            self.progress.evaluation(step, row["success_rate"], row["time_to_success_s"])
            self.say(f"{'final ' if final else ''}eval @ {step} steps ({row['wall_seconds']:.0f} s): success "
                     f"{row['success_rate']:.0%} over {msg.meta['episodes']} episodes "
                     f"(weights v{row['weights_version']})")
            while self.config.eval_every > 0 and self.next_eval <= max(step, self.env_steps):
                self.next_eval += self.config.eval_every
        return self._ack(actor)

    def on_bye(self, msg):
        actor = self._actor(msg)
        if actor is not None:
            self.actors[actor]["connected"] = False
            # A finished actor waits for a checkpoint holding its transitions (then it cleans
            # its spool); the update loop writes one (Learner.checkpoint_for_leavers).
            self.actors[actor]["awaiting_durable"] = bool(msg.meta.get("awaiting_durable"))
            self.say(f"learner: {actor} left (holding its transitions up to "
                     f"#{self.ledger.stored.get(actor, 0)})")
        return "bye", {}

    def on_durable(self, msg):
        """An actor that left asks whether a checkpoint holds its transitions yet; unlike the
        other requests this one does not count as the actor being back."""
        actor = msg.meta.get("actor")
        if not isinstance(actor, str):
            raise ValueError(f"'durable' names no actor (got {type(actor).__name__}): send its id")
        info, ack = self.actors.get(actor), self.ledger.ack(actor)
        # Answered to anyone (seqs only, as in stats: a restarted learner still tells an actor
        # that left what its checkpoint holds), but only the actor's own session ends the wait.
        if info is not None and info["session"] == msg.session and ack["durable"] >= ack["stored"]:
            info["awaiting_durable"] = False
        return "ack", {**ack, "done": True, "wait": False, "eval": None, "final_eval": False}

    def on_stats(self, msg):
        challenge = msg.meta.get("challenge")
        if challenge is None:
            return "stats", self.stats()
        if not isinstance(challenge, str) or not 16 <= len(challenge) <= 64:
            raise ValueError("'challenge' must be a str of 16..64 characters (a fresh random one)")
        # The launcher's check that this process is its run's learner (launcher.learner_proven).
        return "stats", {**self.stats(), "proof": welcome_proof(self.run_secret, self.run_id,
                                                                "launcher", challenge)}

    def _actor(self, msg) -> str | None:
        """The actor a request comes from, if it greeted this learner session."""
        actor = msg.meta.get("actor")
        info = self.actors.get(actor) if isinstance(actor, str) else None
        if info is None:
            return None
        if info["session"] != msg.session:
            if msg.session in self.retired.get(actor, ()):
                raise Superseded(f"a newer session of {actor} said hello since: this process "
                                 f"is a replaced copy of {actor}; stop it")
            return None  # a session this learner does not know: it must say hello (and prove)
        info.update(seen=time.monotonic(), connected=True,
                    weights_version=transport.meta_int(msg.meta, "weights_version", -1, low=-1),
                    unsent=transport.meta_int(msg.meta, "unsent", 0, low=0),
                    evaluator=bool(msg.meta.get("evaluator")))
        return actor

    def _check_batch(self, arrays: dict, count: int) -> None:
        """A batch's arrays against the learner's specs, before the ledger or a buffer changes
        (ReplayBuffer.add_batch checks values again, but a refusal there would leave the ledger
        counting transitions that no buffer holds)."""
        obs_keys = set(self.expected["obs_spec"])
        want = {"actions", "rewards", "terminations", "truncations",
                *(f"{p}{k}" for p in ("obs/", "next_obs/") for k in obs_keys)}
        if set(arrays) != want:
            missing, extra = sorted(want - set(arrays)), sorted(set(arrays) - want)
            raise ValueError(f"batch arrays: missing {missing}, unexpected {[k[:40] for k in extra][:8]}")
        for name, array in arrays.items():
            if array.ndim == 0 or len(array) != count:
                raise ValueError(f"batch array {name!r} has shape {array.shape}: every array "
                                 f"holds `count` = {count} rows")
            if array.dtype.kind not in "biuf":
                raise ValueError(f"batch array {name!r} has dtype {array.dtype}: send real numbers")

    def _ack(self, actor: str) -> tuple[str, dict]:
        owed = self.update_target() - self.update_calls
        wait = (self.config.learner.max_lead > 0 and owed > self.config.learner.max_lead
                and not (self.env_steps >= self.config.total_steps))
        done = self.done or self.env_steps >= self.config.total_steps
        evaluate = self.final_request
        if self.config.eval_every > 0 and self.env_steps >= self.next_eval and not done:
            evaluate = {"step": self.next_eval, "episodes": self.config.eval_episodes}
        final_eval = (done and self.config.final_episodes() > 0 and self.final_result is None
                      and not self.stopping.is_set())
        return "ack", {**self.ledger.ack(actor), "wait": wait, "owed": owed, "eval": evaluate,
                       "done": done, "final_eval": final_eval,
                       "weights_version": self.weights_version, "env_steps": self.env_steps}

    # --- bookkeeping ---------------------------------------------------------------------
    def record_episode(self, actor: str, episode: dict) -> None:
        if episode.get("demo"):
            self.demo_episodes += 1
        else:
            self.episodes += 1
            self.recent.append((float(episode.get("return", 0.0)), bool(episode.get("success"))))
        run_dir.append_episode(self.run_dir, {"actor": actor, "env_steps": self.env_steps, **episode})

    def stats(self) -> dict:
        """What both training modes report (progress.progress_stats), and the processes' part."""
        now = time.monotonic()
        stats = progress_stats(self.config, env_steps=self.env_steps, update_calls=self.update_calls,
                               critic_updates=self.agent.critic_updates, episodes=self.episodes,
                               demo_episodes=self.demo_episodes, interventions=self.interventions,
                               recent=self.recent, rates=self.rates, wall_seconds=self.wall(),
                               metrics=self.metrics)
        return {
            **stats, "owed": self.update_target() - self.update_calls,
            "weights_version": self.weights_version,
            "online": len(self.online), "demos": len(self.demos),
            "lost": sum(self.ledger.lost.values()), "duplicates": self.ledger.duplicates,
            "stored": dict(self.ledger.stored), "durable": dict(self.ledger.durable),
            "actors": {k: {"weights_version": v["weights_version"], "unsent": v["unsent"],
                           "connected": v["connected"], "silent_s": round(now - v["seen"], 1)}
                       for k, v in self.actors.items()},
            "done": self.done,
            "busy": self.update_seconds / max(1e-9, time.monotonic() - self.started),
            "phase": self.phase(), "run": self.run_id,
        }

    def phase(self) -> str:
        if self.done:
            return "done"
        if not any(a["connected"] for a in self.actors.values()):
            return "waiting for actors to connect"
        if not self.ready_to_learn() and self.env_steps >= self.config.learning_starts:
            return f"waiting for demonstrations ({self.demo_episodes}/{self.demo_target})"
        if self.env_steps < self.config.learning_starts:
            return "collecting"
        return "training"


def _episodes(episodes) -> list:
    """A batch's episode summaries (plain dicts with a valid last_seq and a finite return),
    or ValueError: they go to episodes.jsonl, which must stay readable."""
    if not isinstance(episodes, list) or len(episodes) > MAX_EPISODES:
        raise ValueError(f"episodes must be a list of at most {MAX_EPISODES} summaries")
    for episode in episodes:
        if not isinstance(episode, dict):
            raise ValueError(f"an episode summary is a {type(episode).__name__}, not a map")
        transport.meta_int(episode, "last_seq", low=1, high=MAX_SEQ)
        transport.meta_float(episode, "return", 0.0)
        for key, value in episode.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"episode summary field {key!r} is {value}: send finite numbers")
            if not isinstance(value, (str, int, float, bool, type(None), list)):
                raise ValueError(f"episode summary field {key!r} is a {type(value).__name__}")
    return episodes


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
