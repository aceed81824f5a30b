"""SAC/RLPD agent: targets, ensemble subset, temperature, gripper critic, encoder gradients, resume."""

import io
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from robostack.rl import sac
from robostack.rl.sac import (SACConfig, actor_and_temperature_losses, build_agent, critic_target,
                              gripper_choice, grasp_target, td_target, update)

torch.set_num_threads(1)
S, A, HW = 5, 4, 32


def spaces(cameras=(), action_dim=A):
    obs = {"state": gym.spaces.Box(-1, 1, (S,), np.float32)}
    for cam in cameras:
        obs[f"images/{cam}"] = gym.spaces.Box(0, 255, (HW, HW, 3), np.uint8)
    return gym.spaces.Dict(obs), gym.spaces.Box(-1, 1, (action_dim,), np.float32)


def make_agent(cameras=(), **overrides):
    kwargs = dict(hidden_dims=(32, 32), latent_dim=8, proprio_latent_dim=8, grasp_hidden_dims=(16,))
    kwargs.update(overrides)
    return build_agent(SACConfig(**kwargs), *spaces(cameras))


def make_batch(b=16, cameras=(), seed=0, action_dim=A):
    g = torch.Generator().manual_seed(seed)

    def obs():
        o = {"state": torch.randn(b, S, generator=g)}
        for cam in cameras:
            o[f"images/{cam}"] = torch.randint(0, 256, (b, 3, HW, HW), generator=g, dtype=torch.uint8)
        return o

    return {"observations": obs(), "next_observations": obs(),
            "actions": torch.rand(b, action_dim, generator=g) * 2 - 1,
            "rewards": torch.randn(b, generator=g),
            "terminations": (torch.rand(b, generator=g) < 0.3).float(),
            "truncations": (torch.rand(b, generator=g) < 0.3).float(),
            "grasp_penalties": -0.1 * (torch.rand(b, generator=g) < 0.5).float()}


def env_obs(cameras=(), seed=0):
    rng = np.random.default_rng(seed)
    o = {"state": rng.standard_normal(S).astype(np.float32)}
    for cam in cameras:
        o[f"images/{cam}"] = rng.integers(0, 256, (HW, HW, 3), dtype=np.uint8)
    return o


# ---------------------------------------------------------------------------- targets


def test_td_target_by_hand():
    r = torch.tensor([1.0, 2.0, -1.0])
    term = torch.tensor([0.0, 1.0, 0.0])
    v = torch.tensor([10.0, 10.0, -5.0])
    torch.testing.assert_close(td_target(r, term, v, 0.9), torch.tensor([10.0, 2.0, -5.5]))


def test_critic_target_equals_reward_plus_discounted_subset_min_masking_only_terminations():
    agent = make_agent(num_critics=6, critic_subset=3)
    batch = make_batch(8)
    next_obs = batch["next_observations"]["state"]
    batch["terminations"] = torch.tensor([0, 1, 0, 1, 0, 0, 0, 0], dtype=torch.float32)
    batch["truncations"] = torch.tensor([1, 0, 0, 1, 1, 0, 0, 0], dtype=torch.float32)
    agent.generator.manual_seed(7)
    y = critic_target(agent, next_obs, next_obs, batch["rewards"], batch["terminations"])

    # Reference: replay the same draws, evaluate target critics one by one with a Python loop.
    agent.generator.manual_seed(7)
    next_a, _ = agent.actor.sample(next_obs, agent.generator)
    subset = torch.randperm(6, generator=agent.generator)[:3]
    members = [agent.target_critic(next_obs, next_a, members=torch.tensor([int(e)]))[0] for e in subset]
    q_min = torch.stack(members).min(0).values
    expected = batch["rewards"] + 0.99 * q_min * (1 - batch["terminations"])
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-6)
    # Terminal rows are the reward alone; truncated-but-not-terminal rows bootstrap.
    torch.testing.assert_close(y[[1, 3]], batch["rewards"][[1, 3]])
    assert not torch.allclose(y[[0, 4]], batch["rewards"][[0, 4]])


def test_backup_entropy_adds_the_entropy_term():
    agent = make_agent(num_critics=2, backup_entropy=True)
    batch = make_batch(8)
    s = batch["next_observations"]["state"]
    term = torch.zeros(8)
    agent.generator.manual_seed(1)
    y = critic_target(agent, s, s, batch["rewards"], term)
    agent.generator.manual_seed(1)
    a, logp = agent.actor.sample(s, agent.generator)
    q = agent.target_critic(s, a).min(0).values
    torch.testing.assert_close(y, batch["rewards"] + 0.99 * (q - agent.temperature() * logp))


def test_truncations_never_change_an_update():
    batch = make_batch(32)
    results = []
    for trunc in (0.0, 1.0):
        agent = make_agent()
        b = dict(batch, truncations=torch.full((32,), trunc))
        update(agent, b)
        results.append(torch.cat([p.flatten() for p in agent.nets.parameters()]))
    assert torch.equal(results[0], results[1])


def test_target_is_min_over_a_random_subset_not_the_whole_ensemble():
    agent = make_agent(num_critics=10, critic_subset=2)
    out = agent.target_critic.net
    with torch.no_grad():  # member e outputs the constant 100 * e
        out.weights[-1].zero_()
        out.biases[-1].copy_(100.0 * torch.arange(10.0).view(10, 1, 1))
    s = torch.randn(4, S)
    seen = []
    for seed in range(200):
        agent.generator.manual_seed(seed)
        y = critic_target(agent, s, s, torch.zeros(4), torch.zeros(4))
        agent.generator.manual_seed(seed)
        agent.actor.sample(s, agent.generator)
        subset = torch.randperm(10, generator=agent.generator)[:2]
        torch.testing.assert_close(y, torch.full((4,), 0.99 * 100.0 * float(subset.min())))
        seen.append(int(subset.min()))
    assert 9 not in seen  # the min of two distinct members is never the largest member
    assert 0.1 < seen.count(0) / len(seen) < 0.3  # P(member 0 drawn) = 2/10


# ---------------------------------------------------------------------------- temperature, losses


@pytest.mark.parametrize("log_std, direction", [(-8.0, +1), (0.0, -1)])
def test_temperature_moves_toward_target_entropy(log_std, direction):
    agent = make_agent()
    head = agent.actor.head
    with torch.no_grad():  # pin the policy's spread: entropy far below / above -|A|/2
        head.weight[A:].zero_()
        head.bias[A:].fill_(log_std)
    before = agent.temperature().item()
    metrics = update(agent, make_batch(64))
    after = agent.temperature().item()
    assert agent.config.target_entropy == -A / 2
    assert (metrics["entropy"].item() - agent.config.target_entropy) * direction < 0
    assert (after - before) * direction > 0


def test_updates_reduce_critic_loss_on_a_fixed_batch():
    agent = make_agent(critic_lr=3e-3)
    batch = make_batch(64)
    batch["terminations"] = torch.ones(64)  # fixed targets: the loss can only fall by fitting them
    losses = [update(agent, batch)["critic_loss"].item() for _ in range(40)]
    assert losses[1] < losses[0]
    assert losses[-1] < 0.5 * losses[0]


def test_utd_splits_the_sample_and_actor_runs_once_per_ratio():
    agent = make_agent(utd_ratio=4)
    update(agent, make_batch(32))
    assert (agent.critic_updates, agent.actor_updates) == (4, 1)
    agent = make_agent(utd_ratio=4, critic_actor_ratio=2)
    update(agent, make_batch(32))
    assert (agent.critic_updates, agent.actor_updates) == (4, 2)
    update(agent, make_batch(16), utd_ratio=2)
    assert (agent.critic_updates, agent.actor_updates) == (6, 3)
    with pytest.raises(ValueError):
        update(agent, make_batch(30), utd_ratio=4)


def test_metrics_are_tensors_not_python_numbers():
    metrics = update(make_agent(), make_batch(16))
    assert {"critic_loss", "actor_loss", "temperature", "entropy", "q"} <= set(metrics)
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in metrics.values())


# ---------------------------------------------------------------------------- pixels


def test_encoder_is_trained_by_the_critic_loss_only():
    agent = make_agent(cameras=("front", "wrist"))
    batch = make_batch(8, cameras=("front", "wrist"))
    features = agent.encoder(batch["observations"])
    actor_loss, temperature_loss, _ = actor_and_temperature_losses(agent, features)
    (actor_loss + temperature_loss).backward()
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(p.grad is not None for p in agent.actor.parameters())

    loss, _, _ = sac.critic_loss(agent.encoder, agent.critic, batch["observations"],
                                 batch["actions"], torch.zeros(8))
    loss.backward()
    for key in ("images__front", "images__wrist"):
        assert agent.encoder.cameras[key].convs[0].weight.grad.abs().sum() > 0
    assert agent.encoder.proprio[0].weight.grad.abs().sum() > 0


def test_pixel_defaults_two_critics_and_no_target_encoder():
    agent = make_agent(cameras=("front",))
    assert agent.config.num_critics == 2 and agent.target_encoder is None


def test_pixel_update_moves_the_encoder_and_its_target():
    agent = make_agent(cameras=("front",), target_encoder=True)
    conv = agent.encoder.cameras["images__front"].convs[0].weight
    target_conv = agent.target_encoder.cameras["images__front"].convs[0].weight
    before, target_before = conv.detach().clone(), target_conv.detach().clone()
    metrics = update(agent, make_batch(8, cameras=("front",)))
    assert torch.isfinite(metrics["critic_loss"])
    assert not torch.equal(conv, before) and not torch.equal(target_conv, target_before)
    # Polyak: the target moved by tau of the gap, not all the way.
    torch.testing.assert_close(target_conv, target_before + 0.005 * (conv - target_before))


def test_without_target_encoder_the_online_features_serve_the_target():
    agent = make_agent(cameras=("front",), target_encoder=False)
    assert agent.target_encoder is None
    assert not any(k.startswith("target_encoder.") for k in agent.state_dict()["networks"])
    with_target = make_agent(cameras=("front",), target_encoder=True)
    assert any(k.startswith("target_encoder.") for k in with_target.state_dict()["networks"])
    batch = make_batch(8, cameras=("front",))
    for _ in range(2):
        assert torch.isfinite(update(agent, batch)["critic_loss"])
    state_agent = make_agent()  # state only: the encoder is the identity, nothing to copy
    assert state_agent.target_encoder is None


def test_frozen_pretrained_resnet_encoder_in_the_agent(tmp_path):
    from robostack.rl.networks import ResNetEncoder
    source = ResNetEncoder((3, HW, HW), depth=10)
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith("project")}, tmp_path / "r10.pt")
    agent = make_agent(cameras=("front",), encoder="resnet10", pretrained_encoder=str(tmp_path / "r10.pt"),
                       freeze_encoder=True)
    enc = agent.encoder.cameras["images__front"]
    torch.testing.assert_close(enc.conv1.weight, source.conv1.weight)
    trainable = {id(p) for group in agent.optimizers["critic"].param_groups for p in group["params"]}
    assert id(enc.conv1.weight) not in trainable and id(enc.project[0].weight) in trainable
    backbone, head = enc.layer4[0].conv2.weight.clone(), enc.project[0].weight.clone()
    update(agent, make_batch(8, cameras=("front",)))
    assert torch.equal(enc.layer4[0].conv2.weight, backbone) and not torch.equal(enc.project[0].weight, head)
    assert agent.act(env_obs(("front",)), deterministic=True).shape == (A,)


# ---------------------------------------------------------------------------- discrete gripper


def test_gripper_mapping():
    g = torch.tensor([-1.0, -0.6, -0.4, 0.0, 0.4, 0.6, 1.0])
    assert gripper_choice(g).tolist() == [0, 0, 1, 1, 1, 2, 2]


def test_grasp_target_is_double_dqn():
    agent = make_agent(gripper="discrete")
    with torch.no_grad():  # online prefers "open" (0); target values "close" (2) highest
        agent.grasp_critic[-1].weight.zero_()
        agent.grasp_critic[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
        agent.target_grasp_critic[-1].weight.zero_()
        agent.target_grasp_critic[-1].bias.copy_(torch.tensor([3.0, 5.0, 10.0]))
    f = torch.randn(3, S)
    r, term, pen = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([-0.1, 0.0, -0.1])
    y = grasp_target(agent, f, f, r, term, pen)
    # Double DQN: Q_target(s', argmax Q_online) = 3; plain DQN would use max Q_target = 10.
    torch.testing.assert_close(y, torch.tensor([0.9 + 0.99 * 3.0, 1.0, -0.1 + 0.99 * 3.0]))


def test_discrete_gripper_agent_trains_both_critics_and_acts_in_three_values():
    agent = make_agent(gripper="discrete", grasp_lr=3e-3, grasp_hidden_dims=(32, 32))
    assert agent.sac_dim == A - 1 and agent.config.target_entropy == -(A - 1) / 2
    assert agent.critic.net.weights[0].shape[1] == S + A - 1
    batch = make_batch(32)
    batch["terminations"] = torch.ones(32)
    losses = [update(agent, batch)["grasp_loss"].item() for _ in range(60)]
    assert losses[-1] < 0.5 * losses[0]
    for det in (True, False):
        a = agent.act(env_obs(), deterministic=det)
        assert a.shape == (A,) and a[-1] in (-1.0, 0.0, 1.0)
    del batch["grasp_penalties"]  # optional: no penalty
    assert torch.isfinite(update(agent, batch)["grasp_loss"])


# ---------------------------------------------------------------------------- act, build, resume


def test_act_single_observation_with_hwc_images():
    agent = make_agent(cameras=("front",))
    obs = env_obs(("front",))
    a = agent.act(obs, deterministic=True)
    assert a.shape == (A,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
    assert np.array_equal(a, agent.act(obs, deterministic=True))
    assert not np.array_equal(agent.act(obs, deterministic=False), agent.act(obs, deterministic=False))
    # The HWC → CHW conversion matches what the buffer stores (CHW contiguous).
    chw = {"state": torch.as_tensor(obs["state"])[None],
           "images/front": torch.as_tensor(obs["images/front"]).permute(2, 0, 1).contiguous()[None]}
    with torch.no_grad():
        ref = agent.actor.mode(agent.encoder(chw))[0].numpy()
    np.testing.assert_allclose(a, ref, atol=1e-6)


def test_build_agent_defaults_and_validation():
    agent = build_agent(SACConfig(hidden_dims=(8,)), *spaces())
    assert agent.config.num_critics == 10 and agent.config.critic_subset == 2
    assert agent.config.target_entropy == -A / 2
    assert agent.config.tau == 0.005 and agent.config.discount == 0.99
    obs_space, _ = spaces()
    with pytest.raises(ValueError):
        build_agent(SACConfig(), obs_space, gym.spaces.Box(-2, 2, (A,), np.float32))
    with pytest.raises(ValueError):
        build_agent(SACConfig(critic_subset=3, num_critics=2), obs_space, spaces()[1])
    with pytest.raises(ValueError):
        build_agent(SACConfig(), gym.spaces.Dict({"joints": gym.spaces.Box(-1, 1, (3,))}), spaces()[1])


def test_state_dict_round_trip_reproduces_actions_and_training():
    cams = ("front",)
    agent = make_agent(cameras=cams, gripper="discrete")
    for seed in range(2):
        update(agent, make_batch(8, cameras=cams, seed=seed))
    buf = io.BytesIO()
    torch.save(agent.state_dict(), buf)
    buf.seek(0)
    restored = make_agent(cameras=cams, gripper="discrete", seed=123)
    restored.load_state_dict(torch.load(buf))  # the safe (weights_only) loader suffices
    assert (restored.critic_updates, restored.actor_updates) == (2, 2)
    obs = env_obs(cams)
    assert np.array_equal(agent.act(obs, True), restored.act(obs, True))
    assert np.array_equal(agent.act(obs, False), restored.act(obs, False))
    # Optimiser moments and RNG come back too: the next update is bit-identical.
    batch = make_batch(8, cameras=cams, seed=5)
    update(agent, batch)
    update(restored, batch)
    for (name, p), q in zip(agent.nets.named_parameters(), restored.nets.parameters()):
        assert torch.equal(p, q), name
    assert torch.equal(agent.temperature.log_alpha, restored.temperature.log_alpha)


def test_state_scale_is_applied_by_the_agent_and_survives_checkpoints():
    agent = make_agent()
    obs = env_obs()
    before = agent.act(obs, True)
    mean, std = np.full(S, 0.5, np.float32), np.full(S, 2.0, np.float32)
    agent.set_state_scale(mean, std)
    scaled = {**obs, "state": (obs["state"] - mean) / std}
    restored = make_agent(seed=9)
    restored.load_state_dict(agent.state_dict())
    agent.set_state_scale(np.zeros(S), np.ones(S))
    assert np.array_equal(agent.act(scaled, True), restored.act(obs, True))
    assert not np.array_equal(before, restored.act(obs, True))


def test_legacy_checkpoint_keeps_its_state_scale_beside_the_agent():
    agent = make_agent()
    mean, std = torch.full((S,), 0.5), torch.full((S,), 2.0)
    agent.set_state_scale(mean, std)
    state = agent.state_dict()
    # Written before the scale moved into the encoder: no encoder buffers, a "state_scale" entry.
    state["networks"] = {k: v for k, v in state["networks"].items() if "state_" not in k}
    legacy = make_agent(seed=9)
    legacy.load_state_dict(state, {"mean": mean, "std": std})
    assert torch.equal(legacy.encoder.state_std, std)
    obs = env_obs()
    assert np.array_equal(agent.act(obs, True), legacy.act(obs, True))
    plain = make_agent(seed=9)
    plain.load_state_dict(state)  # no scale anywhere: identity
    assert torch.equal(plain.encoder.state_std, torch.ones(S))


def test_compile_falls_back_to_eager_when_compilation_fails(monkeypatch):
    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    agent = make_agent(compile=True)
    eager = make_agent()
    batch = make_batch(16)
    with pytest.warns(UserWarning, match="eager"):
        m = update(agent, batch)
    torch.testing.assert_close(m["critic_loss"], update(eager, batch)["critic_loss"])


def test_compiled_update_matches_eager():
    """compile=True runs the same math: same losses and parameters after updates, up to float
    reassociation in the fused kernels (the critic target draws the same random subset)."""
    compiled, eager = make_agent(num_critics=4, compile=True), make_agent(num_critics=4)
    for seed in range(2):
        batch = make_batch(16, seed=seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mc = update(compiled, batch)
        fallback = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
        if fallback:
            pytest.skip(f"no working torch.compile here: {fallback[0][:200]}")
        me = update(eager, batch)
        for k in me:
            torch.testing.assert_close(mc[k], me[k], atol=1e-4, rtol=1e-4)
    for (name, p), q in zip(eager.nets.named_parameters(), compiled.nets.parameters()):
        torch.testing.assert_close(q, p, atol=1e-4, rtol=1e-4, msg=name)


# ---------------------------------------------------------------------------- learning sanity


def test_learns_a_one_step_bandit_quickly():
    """reward = -(a - 0.5)^2, every step terminal: the greedy action must reach 0.5."""
    start = time.thread_time()  # CPU time: other processes on a shared CI box must not flake this
    obs_space = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (1,), np.float32)})
    agent = build_agent(SACConfig(hidden_dims=(64, 64), num_critics=2, actor_lr=1e-3, critic_lr=1e-3,
                                  temperature_lr=1e-3, init_temperature=0.1), obs_space,
                        gym.spaces.Box(-1, 1, (1,), np.float32))
    g = torch.Generator().manual_seed(0)
    n = 2048
    actions = torch.rand(n, 1, generator=g) * 2 - 1
    data = {"observations": {"state": torch.zeros(n, 1)}, "next_observations": {"state": torch.zeros(n, 1)},
            "actions": actions, "rewards": -(actions[:, 0] - 0.5) ** 2,
            "terminations": torch.ones(n), "truncations": torch.zeros(n)}
    for _ in range(600):
        idx = torch.randint(0, n, (128,), generator=g)
        update(agent, {"observations": {"state": data["observations"]["state"][idx]},
                       "next_observations": {"state": data["next_observations"]["state"][idx]},
                       **{k: data[k][idx] for k in ("actions", "rewards", "terminations", "truncations")}})
    greedy = agent.act({"state": np.zeros(1, np.float32)}, deterministic=True)[0]
    assert abs(greedy - 0.5) < 0.1, greedy
    assert time.thread_time() - start < 20


def plain_member_mlps(ensemble) -> list[torch.nn.Sequential]:
    """The ensemble rebuilt the obvious way, independently of its batched code: one ordinary
    torch.nn Linear -> LayerNorm -> ReLU stack per member, that member's weights copied in."""
    last = len(ensemble.weights) - 1
    members = []
    for e in range(ensemble.num_members):
        layers = []
        for i, (w, b) in enumerate(zip(ensemble.weights, ensemble.biases)):
            linear = torch.nn.Linear(*w.shape[1:])
            with torch.no_grad():
                linear.weight.copy_(w[e].T)
                linear.bias.copy_(b[e, 0])
            layers.append(linear)
            if i < last:
                if ensemble.layer_norm:
                    norm = torch.nn.LayerNorm(w.shape[-1])
                    with torch.no_grad():
                        norm.weight.copy_(ensemble.ln_weights[i][e, 0])
                        norm.bias.copy_(ensemble.ln_biases[i][e, 0])
                    layers.append(norm)
                layers.append(torch.nn.ReLU())
        members.append(torch.nn.Sequential(*layers))
    return members


@pytest.mark.parametrize("layer_norm", [True, False])
def test_batched_critic_equals_independent_per_member_networks(layer_norm):
    """No Python loop over members is needed: the batched critic gives what E ordinary MLPs
    holding the same weights give, in Q values, in the critic loss's weight gradients, for a
    member subset, and in the actor's gradient through Q with the critic weights held."""
    agent = make_agent(num_critics=3, critic_layer_norm=layer_norm)
    ensemble = agent.critic.net
    assert ensemble.layer_norm is layer_norm and len(ensemble.weights) == 3  # two hidden layers + head
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # members' norms start equal (1, 0): make them differ, or a mix-up would not show
        for p in [*ensemble.ln_weights, *ensemble.ln_biases]:
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    reference = plain_member_mlps(ensemble)
    batch = make_batch(16)
    observations, actions = batch["observations"], batch["actions"]
    target = torch.randn(16)
    inputs = torch.cat([agent.encoder(observations), actions], -1).detach()

    loss, qs, _ = sac.critic_loss(agent.encoder, agent.critic, observations, actions, target)
    loss.backward()
    reference_qs = torch.stack([member(inputs).squeeze(-1) for member in reference])
    torch.testing.assert_close(qs, reference_qs, atol=1e-5, rtol=1e-5)
    reference_loss = torch.stack([((q - target) ** 2).mean() for q in reference_qs]).mean()
    reference_loss.backward()
    torch.testing.assert_close(loss, reference_loss, atol=1e-5, rtol=1e-5)
    for e, member in enumerate(reference):
        linears = [m for m in member if isinstance(m, torch.nn.Linear)]
        norms = [m for m in member if isinstance(m, torch.nn.LayerNorm)]
        for i, linear in enumerate(linears):
            torch.testing.assert_close(ensemble.weights[i].grad[e], linear.weight.grad.T, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(ensemble.biases[i].grad[e, 0], linear.bias.grad, atol=1e-6, rtol=1e-5)
        assert len(norms) == len(ensemble.ln_weights)
        for i, norm in enumerate(norms):
            torch.testing.assert_close(ensemble.ln_weights[i].grad[e, 0], norm.weight.grad, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(ensemble.ln_biases[i].grad[e, 0], norm.bias.grad, atol=1e-6, rtol=1e-5)

    subset = agent.critic(inputs[:, :-A], actions, members=torch.tensor([2, 0]))
    torch.testing.assert_close(subset, reference_qs[[2, 0]], atol=1e-5, rtol=1e-5)

    agent.critic.zero_grad()
    features = inputs[:, :-A]
    policy_actions = actions.clone().requires_grad_(True)
    agent.critic(features, policy_actions, detach_params=True).mean(0).sum().backward()
    reference_actions = actions.clone().requires_grad_(True)
    reference_inputs = torch.cat([features, reference_actions], -1)
    torch.stack([member(reference_inputs).squeeze(-1) for member in reference]).mean(0).sum().backward()
    torch.testing.assert_close(policy_actions.grad, reference_actions.grad, atol=1e-6, rtol=1e-5)
    assert all(p.grad is None or not p.grad.any() for p in agent.critic.parameters())  # weights held


def test_device_auto_is_a_gpu_when_there_is_one_else_the_cpu():
    import gymnasium as gym

    from robostack.rl.sac import SACConfig, build_agent

    space = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,), np.float32)})
    agent = build_agent(SACConfig(device="auto", hidden_dims=(8,)), space, gym.spaces.Box(-1, 1, (2,), np.float32))
    assert agent.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert agent.config.device in ("cuda", "cpu")  # resolved: checkpoints record where it ran
