"""Learner throughput: gradient updates per second of robostack's SAC/RLPD update, against
baselines measured in the same run on the same machine.

  (a) state, 256x256 MLPs, batch 256:
      2 critics  vs stable-baselines3 SAC.train() (same network sizes, batch, obs/action dims);
      10 critics vs a naive per-critic Python-loop implementation of the same update;
      each eager and with SACConfig(compile=True) (time to compile printed).
  (b) pixels, two 128x128 cameras, batch 256: updates/s (default encoder, eager and compiled,
      and the previous default: DrQ's conv layout with a target encoder) and where the time goes.

Every side runs with torch.set_num_threads(1) (and OMP_NUM_THREADS=1). Contenders are timed in
alternating rounds (A B C A B C ...) so load from other processes hits all alike. Each figure is
the best round, by wall clock and per CPU-second of this thread (which discounts time the OS gave
to other processes on a shared machine). Ratios: best round against best round, and the median
over rounds of the ratio within a round (neighbours in time, so a burst of load hits both).
stable-baselines3 is optional (`pip install stable-baselines3 -c constraints.txt`); without it
that comparison is skipped.

    python benchmarks/bench_learner.py [--quick] [--skip-pixels] [--no-compile] [--keep-freed-memory]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._dynamo  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from robostack.rl.augment import augment_observations  # noqa: E402
from robostack.rl.networks import TanhGaussianActor, mlp  # noqa: E402
from robostack.rl.runtime import keep_freed_memory  # noqa: E402
from robostack.rl.sac import (SACConfig, actor_and_temperature_losses, build_agent, critic_loss,  # noqa: E402
                              critic_target, polyak_update, update)

torch.set_num_threads(1)
# One process here compiles the ensemble for many agents (2, 10, 64-wide, pixel critics), each with
# its critic-loss, actor and target variants; a learner process has one agent (3-4 variants).
torch._dynamo.config.recompile_limit = 64
S, A, BATCH = 24, 7, 256  # a robot-arm-sized state and a 6-DoF delta + gripper action


Rates = dict[str, dict[str, list[float]]]  # contender -> {"wall": [...], "cpu": [...]} steps/s per round


def compare(contenders: dict[str, Callable[[int], None]], steps: int, rounds: int) -> Rates:
    """Steps/s of each contender (a function running k steps), per round, by wall clock and by
    this thread's CPU time. Rounds alternate between contenders (A B C A B C ...) so load from
    other processes hits every side alike; CPU time also discounts time the OS gave to them."""
    for run in contenders.values():
        run(max(1, steps // 4))  # warm-up: allocator, lazy init, caches
    rates: Rates = {name: {"wall": [], "cpu": []} for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            run(steps)
            rates[name]["wall"].append(steps / (time.perf_counter() - w0))
            rates[name]["cpu"].append(steps / max(time.thread_time() - c0, 1e-9))
    return rates


def loop(step: Callable[[], object]) -> Callable[[int], None]:
    def run(k: int) -> None:
        for _ in range(k):
            step()
    return run


def best(rates: Rates, name: str, clock: str = "wall") -> float:
    return max(rates[name][clock])


def rate_text(rates: Rates, name: str) -> str:
    return f"{best(rates, name):8.1f} updates/s wall, {best(rates, name, 'cpu'):6.1f} per CPU-second"


def ratio_text(rates: Rates, name: str, baseline: str) -> str:
    """Best round against best round, by wall clock and by CPU time; then the median over rounds
    of the CPU-time ratio within each round."""
    wall = best(rates, name) / best(rates, baseline)
    cpu = best(rates, name, "cpu") / best(rates, baseline, "cpu")
    paired = statistics.median(a / b for a, b in zip(rates[name]["cpu"], rates[baseline]["cpu"]))
    return f"{wall:.2f}x wall, {cpu:.2f}x CPU-time, {paired:.2f}x median per round"


class NumpyBuffer:
    """What a learner does per step before the update: random indices, gather, to torch."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.rng, self.n = rng, n
        self.obs = rng.standard_normal((n, S), dtype=np.float32)
        self.next_obs = rng.standard_normal((n, S), dtype=np.float32)
        self.actions = rng.uniform(-1, 1, (n, A)).astype(np.float32)
        self.rewards = rng.standard_normal(n, dtype=np.float32)
        self.terms = (rng.random(n) < 0.01).astype(np.float32)

    def sample(self, b: int) -> dict:
        i = self.rng.integers(0, self.n, b)
        t = torch.from_numpy
        return {"observations": {"state": t(self.obs[i])}, "next_observations": {"state": t(self.next_obs[i])},
                "actions": t(self.actions[i]), "rewards": t(self.rewards[i]),
                "terminations": t(self.terms[i]), "truncations": torch.zeros(b)}


def state_agent(num_critics: int, utd: int = 1, hidden: tuple[int, ...] = (256, 256), **overrides):
    obs = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (S,), np.float32)})
    config = SACConfig(num_critics=num_critics, utd_ratio=utd, hidden_dims=hidden, **overrides)
    return build_agent(config, obs, gym.spaces.Box(-1, 1, (A,), np.float32))


# ---------------------------------------------------------------------------- baselines


class DummyEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (S,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (A,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(S, np.float32), {}

    def step(self, action):
        return np.zeros(S, np.float32), 0.0, False, False, {}


def sb3_runner() -> Callable[[int], None] | None:
    """SB3's SAC with the same sizes; its train() samples from its own buffer each step."""
    try:
        from stable_baselines3 import SAC
        from stable_baselines3.common.logger import configure
    except ImportError:
        return None
    model = SAC("MlpPolicy", DummyEnv(), batch_size=BATCH, buffer_size=20_000, learning_starts=0,
                policy_kwargs=dict(net_arch=[256, 256], n_critics=2), device="cpu", seed=0)
    model.set_logger(configure(None, []))
    rng = np.random.default_rng(0)
    rb = model.replay_buffer
    rb.observations[:] = rng.standard_normal(rb.observations.shape, dtype=np.float32)
    rb.next_observations[:] = rng.standard_normal(rb.next_observations.shape, dtype=np.float32)
    rb.actions[:] = rng.uniform(-1, 1, rb.actions.shape).astype(np.float32)
    rb.rewards[:] = rng.standard_normal(rb.rewards.shape, dtype=np.float32)
    rb.full, rb.pos = True, 0
    torch.set_num_threads(1)  # in case SB3 touched it
    return lambda k: model.train(gradient_steps=k, batch_size=BATCH)


class NaiveEnsembleSAC:
    """The same RLPD update written the obvious way: a list of critics and Python loops over them
    (forward, loss, target subset, Polyak). Same LayerNorm MLPs, same subset-of-2 target (only the
    chosen target critics are evaluated), critic weights excluded from the actor backward: the same
    FLOPs as the batched update, so the ratio measures batching, fusing and compiling alone.

    freeze_critics=False is the actor step as stable-baselines3 and CleanRL write it: the critics
    keep requires_grad, so the actor backward also computes critic weight gradients (discarded by
    the next critic zero_grad), about a fifth more matmul work per update."""

    def __init__(self, num_critics: int, hidden: tuple[int, ...] = (256, 256), fused_adam: bool = False,
                 seed: int = 0, freeze_critics: bool = True):
        torch.manual_seed(seed)
        self.critics = nn.ModuleList(mlp(S + A, hidden, 1, layer_norm=True) for _ in range(num_critics))
        self.targets = copy.deepcopy(self.critics).requires_grad_(False)
        self.actor = TanhGaussianActor(S, A, hidden)
        self.log_alpha = nn.Parameter(torch.zeros(()))
        opt = dict(fused=True) if fused_adam else {}
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=3e-4, **opt)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=3e-4, **opt)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=3e-4, **opt)
        self.gen = torch.Generator().manual_seed(seed)
        self.freeze_critics = freeze_critics

    def update(self, b: dict) -> None:
        s, s2, a = b["observations"]["state"], b["next_observations"]["state"], b["actions"]
        with torch.no_grad():
            a2, _ = self.actor.sample(s2, self.gen)
            subset = torch.randperm(len(self.critics), generator=self.gen)[:2].tolist()
            q2 = torch.stack([self.targets[i](torch.cat([s2, a2], -1)).squeeze(-1) for i in subset]).min(0).values
            y = b["rewards"] + 0.99 * (1 - b["terminations"]) * q2
        sa = torch.cat([s, a], -1)
        loss = torch.stack([F.mse_loss(c(sa).squeeze(-1), y) for c in self.critics]).mean()
        self.critic_opt.zero_grad()
        loss.backward()
        self.critic_opt.step()
        for c, t in zip(self.critics, self.targets):
            for p, tp in zip(c.parameters(), t.parameters()):
                tp.data.lerp_(p.data, 0.005)
        self.critics.requires_grad_(not self.freeze_critics)
        pi, logp = self.actor.sample(s, self.gen)
        spi = torch.cat([s, pi], -1)
        q = torch.stack([c(spi).squeeze(-1) for c in self.critics]).mean(0)
        alpha = self.log_alpha.exp()
        actor_loss = (alpha.detach() * logp - q).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        self.critics.requires_grad_(True)
        alpha_loss = alpha * (-logp.detach().mean() + A / 2)
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()


# ---------------------------------------------------------------------------- pixels


def pixel_batch(b: int, cams: tuple[str, ...], hw: int, g: torch.Generator) -> dict:
    def obs():
        o = {"state": torch.randn(b, S, generator=g)}
        for c in cams:
            o[f"images/{c}"] = torch.randint(0, 256, (b, 3, hw, hw), generator=g, dtype=torch.uint8)
        return o
    return {"observations": obs(), "next_observations": obs(), "actions": torch.rand(b, A, generator=g) * 2 - 1,
            "rewards": torch.randn(b, generator=g), "terminations": torch.zeros(b), "truncations": torch.zeros(b)}


def timed(fn, rounds: int) -> float:
    """CPU seconds per call (this thread), best of `rounds` after one warm-up call."""
    fn()
    ts = []
    for _ in range(rounds):
        t0 = time.thread_time()
        fn()
        ts.append(time.thread_time() - t0)
    return min(ts)


CAMERAS = ("front", "wrist")


def pixel_agent(hw: int = 128, **overrides):
    spaces = {"state": gym.spaces.Box(-1, 1, (S,), np.float32)}
    spaces.update({f"images/{c}": gym.spaces.Box(0, 255, (hw, hw, 3), np.uint8) for c in CAMERAS})
    return build_agent(SACConfig(**overrides), gym.spaces.Dict(spaces), gym.spaces.Box(-1, 1, (A,), np.float32))


def bench_pixels(rounds: int, compiled: bool = True, old_layout: bool = True) -> None:
    agent = pixel_agent()
    batch = pixel_batch(BATCH, CAMERAS, 128, torch.Generator().manual_seed(0))
    contenders = {"default": loop(lambda: update(agent, batch))}
    if compiled:
        fast, seconds = compiled_agent(lambda: pixel_agent(compile=True), lambda a: update(a, batch))
        contenders["compiled"] = loop(lambda: update(fast, batch))
    small = pixel_agent(84)  # DrQ's image size: what a mirror camera for vision training can render
    small_batch = pixel_batch(BATCH, CAMERAS, 84, torch.Generator().manual_seed(0))
    contenders["84px"] = loop(lambda: update(small, small_batch))
    if old_layout:  # the previous default: DrQ's conv layout and a Polyak target encoder
        old = pixel_agent(encoder="drq", target_encoder=True)
        contenders["drq"] = loop(lambda: update(old, batch))
    r = compare(contenders, 1, rounds)
    print(f"(b) pixels: 2 cameras 128x128 + state {S}, '{agent.config.encoder}' encoder (from scratch), "
          f"{agent.config.num_critics} critics, target_encoder={agent.config.target_encoder}, batch {BATCH}: "
          f"{best(r, 'default'):.2f} updates/s wall ({1 / best(r, 'default'):.2f} s/update), "
          f"{best(r, 'default', 'cpu'):.2f} per CPU-second")
    print(f"    same agent, two 84x84 cameras: {rate_text(r, '84px')}")
    if compiled:
        print(f"    compile=True ({seconds:.0f} s to compile): {rate_text(r, 'compiled')}; vs eager "
              f"{ratio_text(r, 'compiled', 'default')}")
    if old_layout:
        print(f"    previous default (encoder='drq', target_encoder=True): {best(r, 'drq'):.2f} updates/s wall, "
              f"{best(r, 'drq', 'cpu'):.2f} per CPU-second; default / previous: {ratio_text(r, 'default', 'drq')}")

    # The update's steps, replayed one at a time on the same data (best of `rounds` each).
    obs, nobs = batch["observations"], batch["next_observations"]
    aug, naug = augment_observations(obs, 4, agent.generator), augment_observations(nobs, 4, agent.generator)
    actions, rewards, terms = batch["actions"], batch["rewards"], batch["terminations"]
    target_encoder = agent.target_encoder or agent.encoder
    with torch.no_grad():
        nf, f = agent.encoder(naug), agent.encoder(aug)
        ntf = target_encoder(naug)
    parts: dict[str, float] = {}
    parts["augmentation (4 uint8 image tensors)"] = timed(
        lambda: (augment_observations(obs, 4, agent.generator), augment_observations(nobs, 4, agent.generator)),
        rounds)

    def next_encodes():
        with torch.no_grad():
            agent.encoder(naug)
            if agent.target_encoder is not None:
                agent.target_encoder(naug)
    parts["encoder fwd, s' (no grad)"] = timed(next_encodes, rounds)

    def target_only():
        with torch.no_grad():
            critic_target(agent, nf, ntf, rewards, terms)
    parts["TD target (actor sample + target critics)"] = timed(target_only, rounds)
    enc_fwd = timed(lambda: agent.encoder(aug), rounds)
    parts["encoder fwd, s (with grad)"] = enc_fwd

    def critic_only():
        loss = (agent.critic(f, actions) - rewards).pow(2).mean()
        agent.optimizers["critic"].zero_grad(set_to_none=True)
        loss.backward()
    critic_mlp = timed(critic_only, rounds)

    def critic_full():
        agent.optimizers["critic"].zero_grad(set_to_none=True)
        critic_loss(agent.encoder, agent.critic, aug, actions, rewards)[0].backward()
    full = timed(critic_full, rounds)
    parts["encoder bwd, s"] = max(full - enc_fwd - critic_mlp, 0.0)
    parts["critic ensemble fwd + bwd"] = critic_mlp
    parts["Adam step (critic + encoder)"] = timed(agent.optimizers["critic"].step, rounds)

    def actor_step():
        la, lt, _ = actor_and_temperature_losses(agent, f)
        agent.optimizers["actor"].zero_grad(set_to_none=True)
        (la + lt).backward()
        agent.optimizers["actor"].step()
    parts["actor + temperature step"] = timed(actor_step, rounds)
    parts["Polyak (target critic)"] = timed(lambda: polyak_update(agent), rounds)
    summed = sum(parts.values())
    print(f"    where the time goes (each step replayed alone, CPU time; sum {summed:.2f} s vs "
          f"{1 / best(r, 'default', 'cpu'):.2f} CPU-s per update measured):")
    for name, t in parts.items():
        print(f"      {name:44s} {t * 1e3:8.1f} ms  {100 * t / summed:5.1f}%")


def compiled_agent(build: Callable[[], object], first_update: Callable[[object], object]):
    """An agent built with compile=True and the wall-clock seconds its first two updates took
    (compilation: cold, or a few seconds when inductor's on-disk cache already has the graphs)."""
    agent = build()
    t0 = time.perf_counter()
    first_update(agent)
    first_update(agent)
    return agent, time.perf_counter() - t0


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds (noisier)")
    ap.add_argument("--skip-pixels", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="skip the SACConfig(compile=True) contenders")
    ap.add_argument("--keep-freed-memory", "--tune-malloc", action="store_true",
                    help="robostack.rl.runtime.keep_freed_memory(): glibc keeps freed heap memory "
                         "(applies to every side, whole process)")
    args = ap.parse_args()
    kept = args.keep_freed_memory and keep_freed_memory()
    steps, rounds = (20, 3) if args.quick else (50, 7)
    compiled = not args.no_compile

    print(f"torch {torch.__version__}, threads={torch.get_num_threads()} "
          f"(torch.set_num_threads(1) for every side), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"malloc {'keeps freed memory (mallopt)' if kept else 'default'}")
    print(f"state dim {S}, action dim {A}, hidden (256, 256), batch {BATCH}; one update = critic step + "
          f"actor step + temperature step + Polyak. {rounds} interleaved rounds of {steps} updates each.")
    rng = np.random.default_rng(0)
    buf = NumpyBuffer(20_000, rng)
    fixed = buf.sample(BATCH)

    ours2 = state_agent(2)
    contenders = {"ours": loop(lambda: update(ours2, buf.sample(BATCH))),
                  "ours_update_only": loop(lambda: update(ours2, fixed))}
    plain2 = state_agent(2, critic_layer_norm=False)  # SB3's critic layout: no LayerNorm
    contenders["ours_plain"] = loop(lambda: update(plain2, buf.sample(BATCH)))
    if compiled:
        fast2, seconds = compiled_agent(lambda: state_agent(2, compile=True), lambda a: update(a, fixed))
        contenders["compiled"] = loop(lambda: update(fast2, buf.sample(BATCH)))
    sb3 = sb3_runner()
    if sb3 is not None:
        contenders["sb3"] = sb3
    r = compare(contenders, steps, rounds)
    print("(a) state, 2 critics")
    print(f"    robostack sample + update      {rate_text(r, 'ours')}")
    print(f"    robostack update alone         {rate_text(r, 'ours_update_only')}")
    print(f"    robostack, critics without LN  {rate_text(r, 'ours_plain')}")
    if compiled:
        print(f"    compile=True, sample + update  {rate_text(r, 'compiled')}  ({seconds:.0f} s to compile)")
    if sb3 is None:
        print("    stable-baselines3              not installed, comparison skipped")
    else:
        print(f"    stable-baselines3 SAC.train    {rate_text(r, 'sb3')}  (samples its buffer too)")
        print(f"    ratio robostack / SB3: {ratio_text(r, 'ours', 'sb3')}  (target >= 1.2x; ours has "
              "LayerNorm critics as RLPD, SB3 plain ones)")
        print(f"    ratio robostack without LayerNorm (SB3's networks exactly) / SB3: "
              f"{ratio_text(r, 'ours_plain', 'sb3')}")
        if compiled:
            print(f"    ratio compiled / SB3:  {ratio_text(r, 'compiled', 'sb3')}")

    ours10, naive, naive_fused = state_agent(10), NaiveEnsembleSAC(10), NaiveEnsembleSAC(10, fused_adam=True)
    naive_sb3 = NaiveEnsembleSAC(10, freeze_critics=False)
    contenders = {"ours": loop(lambda: update(ours10, fixed)), "naive": loop(lambda: naive.update(fixed)),
                  "naive_fused": loop(lambda: naive_fused.update(fixed)),
                  "naive_sb3": loop(lambda: naive_sb3.update(fixed))}
    if compiled:
        fast10, seconds = compiled_agent(lambda: state_agent(10, compile=True), lambda a: update(a, fixed))
        contenders["compiled"] = loop(lambda: update(fast10, fixed))
    r = compare(contenders, max(4, steps // 4), rounds)
    print("(a) state, 10 critics (random subset of 2 for the target), same batch every step")
    print(f"    robostack batched ensemble     {rate_text(r, 'ours')}")
    if compiled:
        print(f"    compile=True                   {rate_text(r, 'compiled')}  ({seconds:.0f} s to compile)")
    print(f"    naive per-critic loop          {rate_text(r, 'naive')}")
    print(f"    naive loop + fused Adam        {rate_text(r, 'naive_fused')}")
    print(f"    ratio robostack / naive loop: {ratio_text(r, 'ours', 'naive')}  (target >= 1.5x)")
    if compiled:
        print(f"    ratio compiled / naive loop:  {ratio_text(r, 'compiled', 'naive')}")
    print(f"    ratio robostack / naive loop + fused Adam (batching alone): {ratio_text(r, 'ours', 'naive_fused')}")
    print(f"    naive loop, actor step as SB3/CleanRL write it (critic weight grads computed too): "
          f"{rate_text(r, 'naive_sb3')}")
    print(f"    ratio robostack / that loop: {ratio_text(r, 'ours', 'naive_sb3')}"
          + (f"; compiled: {ratio_text(r, 'compiled', 'naive_sb3')}" if compiled else "")
          + "  (not the target's baseline: it also does more work)")

    small, naive_small = state_agent(10, hidden=(64, 64)), NaiveEnsembleSAC(10, hidden=(64, 64))
    r = compare({"ours": loop(lambda: update(small, fixed)), "naive": loop(lambda: naive_small.update(fixed))},
                steps, rounds)
    print(f"    same with 64x64 MLPs (per-op overhead dominates): robostack {best(r, 'ours'):.1f}/s, naive "
          f"{best(r, 'naive'):.1f}/s, ratio {ratio_text(r, 'ours', 'naive')}")

    utd = 20
    big = buf.sample(BATCH * utd)
    ours_utd = state_agent(10, utd)
    r = compare({"utd": loop(lambda: update(ours_utd, big))}, 2, rounds)
    print(f"    RLPD setting, 10 critics, UTD {utd} (update() = {utd} critic steps on a {BATCH * utd} sample + 1 "
          f"actor step): {best(r, 'utd') * utd:.1f} critic steps/s")

    if not args.skip_pixels:
        bench_pixels(2 if args.quick else 3, compiled)


if __name__ == "__main__":
    main()
