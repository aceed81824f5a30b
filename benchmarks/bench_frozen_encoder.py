"""Frozen pretrained features vs an end-to-end pixel encoder, on one CPU thread.

  1. Per-frame cost of the frozen EfficientNet-Lite0 (robostack/rl/pretrained.py) cut at each
     candidate layer: 128 and 64 px, batch 1 (the actor, one frame per step) and batch 32 (a
     frame insertion batch), NCHW and channels_last; and each layer's float16 feature size.
  2. One SAC update (robostack.rl.sac.update: critic, actor, temperature) at batch 128 with two
     128x128 cameras + state, two critics:
       (a) end to end: the project's `conv` encoder trained through the critic, random shift on;
       (b) the same agent and update with each camera's encoder replaced by a FeatureHead on
           precomputed frozen features (no pixel augmentation: it has no pixels).
     ms per update, the ratio (issue 13's target: (b) >= 10x faster than (a)), and the bytes
     each transition stores (pixels vs features; next observations share the frame ring).

The process keeps freed heap memory (robostack.rl.runtime.keep_freed_memory), as the learner
does. Timings are best-of-rounds by this thread's CPU time (discounts other processes on a shared
machine), wall time beside it. Needs `pip install 'robostack[vision]'`. ~2 minutes.

    python benchmarks/bench_frozen_encoder.py [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from robostack.rl.pretrained import (DEFAULT_LAYER, LAYERS, FeatureHead, FrozenFeatures,  # noqa: E402
                                     load_efficientnet_lite0)
from robostack.rl.runtime import keep_freed_memory  # noqa: E402
from robostack.rl.sac import build_agent, update  # noqa: E402
from robostack.training.config import default_sac_config  # noqa: E402

torch.set_num_threads(1)
S, A, BATCH, HW = 24, 7, 128, 128
CAMERAS = ("front", "wrist")


def best(fn, budget_s: float, min_rounds: int = 3) -> tuple[float, float]:
    """(CPU s, wall s) per call, best over rounds, after one warm-up call; at least min_rounds,
    more while the budget lasts."""
    fn()
    cpu, wall, start = [], [], time.perf_counter()
    while len(cpu) < min_rounds or time.perf_counter() - start < budget_s:
        t0, w0 = time.thread_time(), time.perf_counter()
        fn()
        cpu.append(time.thread_time() - t0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall)


def scenes(n: int, hw: int, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 images (B, 3, H, W): blobs on a gradient, camera-like statistics
    (random noise would do for timing, but this keeps the activations realistic)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g) * 255
    img = torch.nn.functional.interpolate(low, size=(hw, hw), mode="bilinear", align_corners=False)
    return img.clamp(0, 255).to(torch.uint8)


def bench_layers(quick: bool) -> None:
    net = load_efficientnet_lite0()
    batches = (1, 8, 32)
    print("1. frozen EfficientNet-Lite0, ms per frame, one thread (CPU time, best round); "
          "NCHW | channels_last")
    print(f"   {'layer':7s} {'px':>4s} {'shape':>11s} {'fp16 kB':>7s}  "
          + "  ".join(f"{f'b{b}':>5s}" for b in batches) + "  |  " + "  ".join(f"{f'b{b}':>5s}" for b in batches))
    for hw in (128, 64):
        frames = {b: scenes(b, hw) for b in batches}
        for layer in LAYERS:
            cells = []
            for cl in (False, True):
                enc = FrozenFeatures(layer, channels_last=cl, model=net)
                for b in batches:
                    budget = (0.1 if quick else 0.3) * (1 + b / 16)
                    cells.append(f"{1e3 * best(lambda: enc(frames[b]), budget, 2)[0] / b:5.2f}")
            c, h, w = enc.out_shape(hw, hw)
            print(f"   {layer:7s} {hw:4d} {f'{c}x{h}x{w}':>11s} {enc.feature_bytes(hw, hw) / 1e3:7.1f}  "
                  + "  ".join(cells[:3]) + "  |  " + "  ".join(cells[3:]))
    print(f"   pixels: {3 * 128 * 128 / 1e3:.1f} kB per 128 px frame, {3 * 64 * 64 / 1e3:.1f} kB at 64 px")


def _transition(b: int, obs_fn, g: torch.Generator) -> dict:
    return {"observations": obs_fn(), "next_observations": obs_fn(),
            "actions": torch.rand(b, A, generator=g) * 2 - 1, "rewards": torch.randn(b, generator=g),
            "terminations": torch.zeros(b), "truncations": torch.zeros(b)}


def pixel_agent(**overrides):
    spaces = {"state": gym.spaces.Box(-1, 1, (S,), np.float32)}
    spaces.update({f"images/{c}": gym.spaces.Box(0, 255, (HW, HW, 3), np.uint8) for c in CAMERAS})
    # The agent `robostack train` builds (its --sac-* defaults: 128x128 MLPs; 2 critics with
    # cameras), at batch 128: the update the vision runs of docs/learning/pick_cube_vision.md ran.
    config = dataclasses.replace(default_sac_config(), batch_size=BATCH, **overrides)
    return build_agent(config, gym.spaces.Dict(spaces), gym.spaces.Box(-1, 1, (A,), np.float32))


def feature_agent(feature_shape: tuple[int, int, int], kind: str, channels: int):
    """The same agent with each camera's encoder swapped for a FeatureHead of the same out_dim
    (so actor and critics are unchanged), and the critic optimiser rebuilt over its parameters."""
    agent = pixel_agent(image_pad=0)
    cams = agent.encoder.cameras
    for name in list(cams):
        cams[name] = FeatureHead(feature_shape, agent.config.latent_dim, channels, kind)
    trainable = [p for p in agent.encoder.parameters() if p.requires_grad]
    agent.optimizers["critic"] = torch.optim.Adam([*agent.critic.parameters(), *trainable],
                                                  lr=agent.config.critic_lr, fused=True)
    return agent


def bench_update(quick: bool) -> None:
    g = torch.Generator().manual_seed(0)
    net = load_efficientnet_lite0()
    default = FrozenFeatures(DEFAULT_LAYER, model=net)

    def pixel_obs():
        return {"state": torch.randn(BATCH, S, generator=g),
                **{f"images/{c}": scenes(BATCH, HW, int(torch.randint(1 << 30, (1,), generator=g)))
                   for c in CAMERAS}}

    pixel_batch = _transition(BATCH, pixel_obs, g)
    n_frames = 2 * len(CAMERAS) * BATCH

    def feature_batch(frozen: FrozenFeatures) -> tuple[dict, float]:
        """Features of the very frames of (a)'s batch, as the buffer would hold them, and the CPU
        seconds per frame it took (batch 8: the cheapest per frame at 128 px, section 1)."""
        t0 = time.thread_time()
        out = {k: ({kk: torch.cat([frozen(x) for x in vv.split(8)]) if kk.startswith("images/") else vv
                    for kk, vv in v.items()} if isinstance(v, dict) else v) for k, v in pixel_batch.items()}
        return out, (time.thread_time() - t0) / n_frames

    end_to_end = pixel_agent()
    a_cpu, a_wall = best(lambda: update(end_to_end, pixel_batch), 3 if quick else 12)
    print(f"\n2. SAC update (critic + actor + temperature), batch {BATCH}, 2 cameras {HW}x{HW} + state {S}, "
          f"{end_to_end.config.num_critics} critics, one thread (ms per update: CPU / wall)")
    print(f"   (a) end to end, '{end_to_end.config.encoder}' encoder, random shift: "
          f"{1e3 * a_cpu:.1f} / {1e3 * a_wall:.1f}")
    batches = {DEFAULT_LAYER: feature_batch(default)}
    for layer, kind, channels in ((DEFAULT_LAYER, "embedding", 32), (DEFAULT_LAYER, "softmax", 32),
                                  (DEFAULT_LAYER, "embedding", 64), (DEFAULT_LAYER, "embedding", 16),
                                  ("stage5", "embedding", 32),
                                  ("stage4", "embedding", 32)):
        if layer not in batches:
            batches[layer] = feature_batch(FrozenFeatures(layer, model=net))
        fb, per_frame = batches[layer]
        agent = feature_agent(tuple(fb["observations"][f"images/{CAMERAS[0]}"].shape[1:]), kind, channels)
        cpu, wall = best(lambda: update(agent, fb), 1 if quick else 4, 10)
        shape = "x".join(map(str, fb["observations"][f"images/{CAMERAS[0]}"].shape[1:]))
        print(f"   (b) frozen {layer} {shape} cached, '{kind}' head {channels} ch: {1e3 * cpu:6.1f} / "
              f"{1e3 * wall:.1f}  -> {a_cpu / cpu:4.1f}x (a) (target >= 10x); features "
              f"{1e3 * per_frame:.1f} ms/frame once")
    a_cpu2, _ = best(lambda: update(end_to_end, pixel_batch), 1 if quick else 4)
    print(f"   (a) again, after (b): {1e3 * a_cpu2:.1f} ms (load drift check)")
    px, ft = 3 * HW * HW, default.feature_bytes(HW, HW)
    print(f"   bytes per transition (2 cameras, one frame each; state/action/reward not counted): "
          f"pixels {len(CAMERAS) * px / 1e3:.1f} kB uint8, {DEFAULT_LAYER} features "
          f"{len(CAMERAS) * ft / 1e3:.1f} kB float16 ({px / ft:.1f}x smaller)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, ~30 s)")
    args = parser.parse_args()
    # As the learner process runs (training/learner.py): freed multi-MB buffers are reused, not
    # page-faulted in again every update. Applies to both sides alike.
    print(f"keep_freed_memory: {keep_freed_memory()}")
    bench_layers(args.quick)
    bench_update(args.quick)


if __name__ == "__main__":
    main()
