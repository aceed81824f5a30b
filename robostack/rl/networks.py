"""Networks for the SAC/RLPD agent: MLP, batched critic ensemble, tanh-Gaussian actor, image encoders.

Shapes: B batch, E ensemble members, S state dim, A action dim, F feature dim.
Images enter every encoder as uint8 (B, 3, H, W) and become float only inside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE_PREFIX = "images/"
FEATURE_PREFIX = "features/"  # a frozen encoder's cached features of a camera (rl/featurize.py)


def writable_tensor(array) -> Tensor:
    """torch.from_numpy(array), copying it first when it is read-only: a frame decoded from a
    ZeroMQ message is a read-only view of that message, which torch will not wrap."""
    array = np.asarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int | None = None,
        layer_norm: bool = False) -> nn.Sequential:
    """Linear → [LayerNorm] → ReLU per hidden layer (RLPD order), then an optional linear head."""
    layers: list[nn.Module] = []
    for h in hidden_dims:
        layers += [nn.Linear(in_dim, h)] + ([nn.LayerNorm(h)] if layer_norm else []) + [nn.ReLU()]
        in_dim = h
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def ensemble_forward(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor],
                     ln_weights: Sequence[Tensor], ln_biases: Sequence[Tensor]) -> Tensor:
    """The ensemble MLP as a pure function of its (E', ...) stacked parameters (see EnsembleMLP);
    x (B, in) is shared by all members, or (E', B, in). No LayerNorm when ln_weights is empty.
    Pure so that one torch.compile'd copy serves every ensemble of the same shapes."""
    h = x if x.dim() == 3 else x.unsqueeze(0).expand(weights[0].shape[0], *x.shape)
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        if w.shape[-1] == 1:
            # A scalar head as multiply-and-sum: autograd's bmm backward for it (an outer
            # product, inner dim 1) is ~10x slower on CPU than this broadcast multiply.
            h = torch.sum(h * w.transpose(1, 2), -1, keepdim=True) + b
        else:
            h = torch.baddbmm(b, h, w)
        if i < last:
            if ln_weights:
                # Per-member affine after a unit-affine layer norm: ATen's CPU kernel is ~2x
                # faster with an affine than without, and the members' own gains differ.
                unit = h.new_ones(h.shape[-1])
                h = F.layer_norm(h, h.shape[-1:], unit, torch.zeros_like(unit))
                h = torch.addcmul(ln_biases[i], h, ln_weights[i])
            h = h.relu_()  # in place: one activation-sized allocation fewer per layer
    return h


class EnsembleMLP(nn.Module):
    """E independent MLPs (same layout as `mlp(..., layer_norm=True)`) evaluated as one network.

    Every weight has a leading ensemble axis, shape (E, in, out), so the whole ensemble is one
    `baddbmm` per layer instead of a Python loop over members. Member e is numerically the
    nn.Sequential with Linear.weight = weights[l][e].T, Linear.bias = biases[l][e, 0].
    `forward_fn` computes it; SACAgent(compile=True) swaps in a torch.compile'd ensemble_forward.
    """

    forward_fn = staticmethod(ensemble_forward)

    def __init__(self, num_members: int, in_dim: int, hidden_dims: Sequence[int], out_dim: int,
                 layer_norm: bool = True):
        super().__init__()
        dims = [in_dim, *hidden_dims, out_dim]
        self.num_members, self.layer_norm = num_members, layer_norm
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.ln_weights = nn.ParameterList()
        self.ln_biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            # nn.Linear's default init, drawn independently for every member.
            bound = 1.0 / math.sqrt(d_in)
            self.weights.append(nn.Parameter(torch.empty(num_members, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_members, 1, d_out).uniform_(-bound, bound)))
        if layer_norm:
            for h in hidden_dims:
                self.ln_weights.append(nn.Parameter(torch.ones(num_members, 1, h)))
                self.ln_biases.append(nn.Parameter(torch.zeros(num_members, 1, h)))

    def forward(self, x: Tensor, members: Tensor | None = None, detach_params: bool = False) -> Tensor:
        """x: (B, in) shared by all members, or (E', B, in). Returns (E', B, out).

        members: optional index tensor selecting E' members (only those are computed).
        detach_params: gradients flow to x but not to the weights (used by the actor loss).
        """
        def params(ps: nn.ParameterList) -> list[Tensor]:
            ps = list(ps) if members is None else [p[members] for p in ps]
            return [p.detach() for p in ps] if detach_params else ps

        return self.forward_fn(x, params(self.weights), params(self.biases), params(self.ln_weights),
                               params(self.ln_biases))


class Critic(nn.Module):
    """Q ensemble: Q_e(features, action) for e = 1..E, returned as (E, B)."""

    def __init__(self, feature_dim: int, action_dim: int, hidden_dims: Sequence[int],
                 num_members: int, layer_norm: bool = True):
        super().__init__()
        self.net = EnsembleMLP(num_members, feature_dim + action_dim, hidden_dims, 1, layer_norm)

    def forward(self, features: Tensor, actions: Tensor, members: Tensor | None = None,
                detach_params: bool = False) -> Tensor:
        return self.net(torch.cat([features, actions], -1), members, detach_params).squeeze(-1)


class TanhGaussianActor(nn.Module):
    """π(a|s) = tanh(N(μ(s), σ(s))), log σ clipped to [log_std_min, log_std_max] (RLPD)."""

    def __init__(self, feature_dim: int, action_dim: int, hidden_dims: Sequence[int],
                 layer_norm: bool = False, log_std_min: float = -20.0, log_std_max: float = 2.0):
        super().__init__()
        self.trunk = mlp(feature_dim, hidden_dims, layer_norm=layer_norm)
        self.head = nn.Linear(hidden_dims[-1] if hidden_dims else feature_dim, 2 * action_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def distribution(self, features: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.head(self.trunk(features)).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(self, features: Tensor, generator: torch.Generator | None = None,
               with_log_prob: bool = True) -> tuple[Tensor, Tensor | None]:
        """Reparameterised sample a ∈ (-1, 1)^A and its log-probability (B,) (None if not asked)."""
        mean, log_std = self.distribution(features)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + log_std.exp() * noise
        if not with_log_prob:
            return torch.tanh(u), None
        # log N(u) minus log|d tanh(u)/du|, with log(1 - tanh(u)^2) = 2(log 2 - u - softplus(-2u)).
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob

    def mode(self, features: Tensor) -> Tensor:
        return torch.tanh(self.distribution(features)[0])


# ---------------------------------------------------------------------------- image encoders


class ConvEncoder(nn.Module):
    """Small conv net trained from scratch (DrQ/SERL style): convs → linear → LayerNorm → tanh.

    The default layout is sized for a CPU learner: a non-overlapping 4x4, stride-4 first conv
    ("patchify": every pixel is read once, 16 channels) then two 3x3 stride-2 convs, 2.3 M
    multiply-adds per 128 px image and a 7x7x32 grid (1568 features). DrQ's layout (32 channels,
    strides 2, 2, 2, 1, `encoder="drq"`) costs 16 M and ~5x the time per update; at batch 256 and
    two cameras it is what made a pixel update take seconds on a 2-core CPU.

    Pixels enter as uint8 and the DrQ normalisation x / 255 - 0.5 is folded into the first conv
    (W / 255, b - 0.5 * sum W: exact for an unpadded conv), so the only full-resolution float
    pass is the uint8 → float conversion itself.
    """

    LAYOUTS = {  # name: channels, kernels, strides, channels-last memory format
        "conv": ((16, 32, 32), (4, 3, 3), (4, 2, 2), False),
        "drq": ((32, 32, 32, 32), (3, 3, 3, 3), (2, 2, 2, 1), True),
    }

    def __init__(self, image_shape: Sequence[int], latent_dim: int = 64,
                 channels: Sequence[int] = (16, 32, 32), kernels: Sequence[int] = (4, 3, 3),
                 strides: Sequence[int] = (4, 2, 2), channels_last: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c = image_shape[0]
        for ch, k, s in zip(channels, kernels, strides, strict=True):
            layers += [nn.Conv2d(c, ch, k, s), nn.ReLU(inplace=True)]
            c = ch
        # Channels-last (oneDNN's native layout) is ~2x faster for the DrQ layout's wide early
        # feature maps; the patchify layout is as fast in NCHW, which spares a transposing copy
        # of the full-resolution input.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.convs = nn.Sequential(*layers).to(memory_format=self.memory_format)
        with torch.no_grad():
            n = self.trunk(torch.zeros(1, *image_shape, dtype=torch.uint8)).numel()
        self.project = nn.Sequential(nn.Linear(n, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh())
        self.out_dim = latent_dim

    def trunk(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) → conv features (B, C', H', W')."""
        first = self.convs[0]
        x = images.to(torch.float32, memory_format=self.memory_format)
        x = F.conv2d(x, first.weight / 255.0, first.bias - 0.5 * first.weight.sum((1, 2, 3)), first.stride)
        return self.convs[2:](x.relu_())

    def forward(self, images: Tensor) -> Tensor:
        return self.project(self.trunk(images).flatten(1))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = norm(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetEncoder(nn.Module):
    """ResNet-10 (one basic block per stage) or ResNet-18 (two), global average pool, projection.

    Parameter names follow torchvision's ResNet (conv1, bn1, layer1.0.conv1, ...), so an
    ImageNet checkpoint saved as a plain state_dict loads with `pretrained_path`; nothing is
    downloaded. BatchNorm always uses its stored statistics (never batch statistics): RL batches
    are correlated and the actor sees single images, so running stats would only drift. With
    `frozen=True` the backbone gets no gradients; the projection head always trains.
    """

    IMAGENET_MEAN = (0.485, 0.456, 0.406)
    IMAGENET_STD = (0.229, 0.224, 0.225)

    def __init__(self, image_shape: Sequence[int], latent_dim: int = 64, depth: int = 10,
                 pretrained_path: str | Path | None = None, frozen: bool = False,
                 widths: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        blocks = {10: 1, 18: 2}[depth]
        self.conv1 = nn.Conv2d(image_shape[0], widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        c = widths[0]
        for i, w in enumerate(widths):
            stage = [_BasicBlock(c if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1, nn.BatchNorm2d)
                     for j in range(blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            c = w
        self.register_buffer("mean", torch.tensor(self.IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(self.IMAGENET_STD).view(1, 3, 1, 1) * 255.0)
        if pretrained_path is not None:
            self.load_backbone(pretrained_path)
        self.frozen = frozen
        if frozen:
            for p in self.parameters():
                p.requires_grad_(False)
        self.project = nn.Sequential(nn.Linear(c, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh())
        self.out_dim = latent_dim
        self.train(False)

    def load_backbone(self, path: str | Path) -> None:
        """Load torchvision-named backbone weights; the classifier head (fc.*) is ignored."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "project.", "mean", "std"))}
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("project.", "mean", "std"))]
        if missing or unexpected:
            raise ValueError(f"{path}: missing {missing[:5]}, unexpected {unexpected[:5]}")

    def train(self, mode: bool = True) -> ResNetEncoder:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def backbone(self, images: Tensor) -> Tensor:
        x = (images.to(torch.float32) - self.mean) / self.std
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        if self.frozen:
            with torch.no_grad():
                x = self.backbone(images)
        else:
            x = self.backbone(images)
        return self.project(x)


class ObservationEncoder(nn.Module):
    """Observation dict → feature vector (B, F) shared by actor and critics.

    State only: the state vector itself (RLPD). With cameras: one encoder per camera, plus the
    state projected to a small latent (SERL), all concatenated.

    The state is first standardised with a fixed affine map, (state - state_mean) / state_std
    (buffers: identity until `set_state_scale`). The state mixes metres of workspace position
    (spread ~0.1), a near-constant quaternion and centimetre offsets that decide a grasp; Adam
    moves every first-layer weight at about the same rate, so an input spread of 0.01 needs
    ~100x more steps to matter than one of 1. The trainers set the statistics once, from the
    demonstrations, before the first update. Living here, the scale travels with the agent:
    in its checkpoints and in the weights actors receive, and replay buffers keep raw states.
    """

    def __init__(self, state_dim: int, image_shapes: dict[str, Sequence[int]], encoder: str = "conv",
                 latent_dim: int = 64, proprio_latent_dim: int = 64,
                 pretrained_path: str | None = None, frozen: bool = False):
        super().__init__()
        # "auto" is resolved by a run (training/config.py pixel_encoder); images given to an
        # agent built directly get the end-to-end conv encoder.
        encoder = "conv" if encoder == "auto" else encoder
        self.camera_keys = sorted(image_shapes)
        self.cameras = nn.ModuleDict()
        for key in self.camera_keys:
            shape = image_shapes[key]
            if key.startswith(FEATURE_PREFIX):  # cached frozen features: only a head trains here
                from robostack.rl.pretrained import FeatureHead

                net = FeatureHead(tuple(shape), latent_dim)
            elif encoder in ConvEncoder.LAYOUTS:
                net: nn.Module = ConvEncoder(shape, latent_dim, *ConvEncoder.LAYOUTS[encoder])
            elif encoder == "efficientnet-lite0":
                raise ValueError(f"{key}: efficientnet-lite0 is a frozen encoder whose features the "
                                 "actor caches: the agent observes features/<camera>, not images "
                                 "(robostack/rl/featurize.py feature_space, FeatureObservations)")
            elif encoder in ("resnet10", "resnet18"):
                net = ResNetEncoder(shape, latent_dim, int(encoder[6:]), pretrained_path, frozen)
            else:
                raise ValueError(f"unknown encoder {encoder!r} (conv, drq, resnet10, resnet18, "
                                 "efficientnet-lite0)")
            self.cameras[_module_name(key)] = net
        self.state_dim = state_dim
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        self.proprio = None
        if self.camera_keys and state_dim:
            self.proprio = nn.Sequential(nn.Linear(state_dim, proprio_latent_dim),
                                         nn.LayerNorm(proprio_latent_dim), nn.Tanh())
        self.out_dim = (len(self.camera_keys) * latent_dim
                        + (proprio_latent_dim if self.proprio is not None else state_dim))

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        parts = [self.cameras[_module_name(k)](observations[k]) for k in self.camera_keys]
        if self.state_dim:
            state = (observations["state"] - self.state_mean) / self.state_std
            parts.append(state if self.proprio is None else self.proprio(state))
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)


    @torch.no_grad()
    def set_state_scale(self, mean, std) -> None:
        """Standardise states as (state - mean) / std from now on (arrays or tensors of shape (S,))."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.shape != self.state_mean.shape or std.shape != self.state_std.shape:
            raise ValueError(f"state scale must have shape ({self.state_dim},), got mean {tuple(mean.shape)}, "
                             f"std {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("state scale must be finite with std > 0")
        self.state_mean.copy_(mean)
        self.state_std.copy_(std)


def state_statistics(states, min_std: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per dimension of states (N, S) for `set_state_scale`. A std below `min_std`
    (a dimension the demonstrations barely move) is raised to it, so that dimension is not
    amplified past 1/min_std."""
    states = np.asarray(states)
    return (np.asarray(states.mean(0), np.float32),
            np.asarray(np.maximum(states.std(0), min_std), np.float32))


def _module_name(key: str) -> str:
    return key.replace("/", "__").replace(".", "_")
