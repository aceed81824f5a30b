"""The learned reward: a binary success classifier on camera frames (HIL-SERL).

On a real arm nothing computes the reward. HIL-SERL trains a classifier on labelled frames
(`robostack record-labels`) and uses it as the only reward; its known failure is the false
positive, which the policy learns to exploit. So the decision threshold is not hand-tuned: it
is calibrated on held-out validation EPISODES (frames of one episode are near-duplicates; a
split by frame would grade the classifier on what it trained on) for a target false-positive
rate, and recall is what is left.

    model = fit(config, frames, labels, episodes)     # frames: {camera: (N, H, W, 3) uint8}
    save_classifier(path, model)                       # one file: weights, threshold, cameras,
    classifier = SuccessClassifier.load(path, task="pick_cube", camera_sizes={...})
    p = classifier.probability(obs)                    # obs: "images/<cam>" (or "features/<cam>")

Encoders are the agent's: the frozen pretrained EfficientNet-Lite0 (default; features computed
once per frame, a small FeatureHead trained over them) or the conv net trained end to end.
With the frozen encoder, augmentation (DrQ random shifts) is precomputed: `augment_views`
shifted copies of every training frame go through the backbone once. A deployed frozen
classifier without crops reuses the policy's cached features of a frame when the policy's
encoder is the same cut (`features_layer`), so it costs the actor nothing more.

The file (torch.save, loaded with weights_only=True: plain data and tensors only) carries a
sha256 of its content; a damaged, foreign or mismatched file (another task, other cameras or
sizes) is refused with a named error (ClassifierMismatch).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from robostack.files import atomic_write
from robostack.rl.augment import random_shift
from robostack.rl.checkpoint import state_digest
from robostack.rl.classifier_metrics import binary_report, threshold_for_fpr
from robostack.rl.networks import FEATURE_PREFIX, IMAGE_PREFIX, ConvEncoder

FORMAT_NAME = "robostack.success_classifier"
FORMAT_VERSION = 1
ENCODERS = ("efficientnet-lite0", "conv")


class ClassifierMismatch(ValueError):
    """A classifier file that does not fit where it is used (task, cameras, sizes, format)."""


@dataclass
class ClassifierConfig:
    """How a success classifier is trained (the `robostack train-classifier` options)."""

    cameras: str = ""  # cameras it looks at, comma-separated ("" all the label log's cameras)
    crops: str = ""  # per camera "name:top,left,height,width" (px), ';'-separated; "" whole frames
    encoder: str = "efficientnet-lite0"  # efficientnet-lite0 (frozen, pretrained) or conv (trained)
    encoder_layer: str = "stage6"  # where the frozen backbone is cut (rl/pretrained.py LAYERS)
    latent_dim: int = 64  # per-camera embedding size
    head_channels: int = 32  # the frozen head's 1x1 reduction
    hidden: int = 128  # width of the MLP over the cameras' embeddings
    dropout: float = 0.1  # in that MLP (a few thousand frames train it)
    steps: int = 1500  # gradient steps
    batch_size: int = 64  # half positives, half negatives (balanced, whatever the label ratio)
    lr: float = 3e-4
    weight_decay: float = 1e-3
    image_pad: int = 4  # px of random shift (DrQ augmentation); 0 off
    augment_views: int = 4  # frozen encoder: shifted copies of each training frame, precomputed
    validation_fraction: float = 0.25  # of the EPISODES, held out for calibration and the report
    target_fpr: float = 0.01  # the threshold is calibrated for this false-positive rate
    calibration_confidence: float = 0.95  # ... shown at this confidence on the validation negatives
        # (Clopper-Pearson; 0: the plain empirical rate, which a small validation set overshoots)
    seed: int = 0

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"--encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"--validation-fraction must be in (0, 1), got {self.validation_fraction}")
        if not 0.0 <= self.target_fpr < 1.0 or not 0.0 <= self.calibration_confidence < 1.0:
            raise ValueError(f"--target-fpr and --calibration-confidence must be in [0, 1), got "
                             f"{self.target_fpr}, {self.calibration_confidence}")
        if self.steps < 1 or self.batch_size < 2 or self.augment_views < 1:
            raise ValueError("--steps >= 1, --batch-size >= 2 and --augment-views >= 1, got "
                             f"{self.steps}, {self.batch_size}, {self.augment_views}")
        parse_crops(self.crops)

    def camera_list(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.cameras.split(",") if c.strip())


def parse_crops(text: str) -> dict[str, tuple[int, int, int, int]]:
    """"front:8,8,112,112;wrist:0,0,96,128" -> {"front": (8, 8, 112, 112), ...}."""
    crops = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, box = part.partition(":")
        try:
            top, left, height, width = (int(v) for v in box.split(","))
        except ValueError:
            raise ValueError(f"--crops {part!r}: write camera:top,left,height,width in px, e.g. "
                             "front:8,8,112,112") from None
        if min(top, left) < 0 or min(height, width) < 8:
            raise ValueError(f"--crops {part!r}: top/left >= 0 and height/width >= 8 px")
        crops[name.strip()] = (top, left, height, width)
    return crops


def crop(images: np.ndarray, box) -> np.ndarray:
    """(..., H, W, 3) cut to `box` (top, left, height, width); None: unchanged."""
    if box is None:
        return images
    top, left, height, width = box
    if top + height > images.shape[-3] or left + width > images.shape[-2]:
        raise ValueError(f"crop {tuple(box)} does not fit a {images.shape[-3]}x{images.shape[-2]} frame")
    return images[..., top:top + height, left:left + width, :]


# --- the network -----------------------------------------------------------------------------

class SuccessNet(nn.Module):
    """{camera: input} -> success logit (B,). Inputs are frozen features (B, C, h, w) float16
    ("features") or pixels (B, 3, H, W) uint8 ("pixels"); each camera has its own encoder
    head, the embeddings are concatenated into a small MLP."""

    def __init__(self, inputs: dict[str, tuple[int, int, int]], kind: str, latent_dim: int = 64,
                 head_channels: int = 32, hidden: int = 128, dropout: float = 0.1):
        super().__init__()
        from robostack.rl.pretrained import FeatureHead

        self.kind, self.cameras = kind, list(inputs)
        self.encoders = nn.ModuleDict({
            camera: FeatureHead(tuple(shape), latent_dim, head_channels) if kind == "features"
            else ConvEncoder(tuple(shape), latent_dim) for camera, shape in inputs.items()})
        self.mlp = nn.Sequential(nn.Linear(latent_dim * len(inputs), hidden), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.mlp(torch.cat([self.encoders[c](inputs[c]) for c in self.cameras], -1)).squeeze(-1)


class FrameInputs:
    """Frames (N, H, W, 3) uint8 of one camera -> the network's input for it: cropped, then
    (frozen) float16 features (N, C, h, w) or (conv) uint8 (N, 3, H, W)."""

    def __init__(self, encoder: str, layer: str, crops: dict, backbone=None):
        self.encoder, self.layer, self.crops = encoder, layer, crops
        self.backbone = backbone
        if encoder != "conv" and backbone is None:
            from robostack.rl.pretrained import FrozenFeatures

            self.backbone = FrozenFeatures(layer)

    def shape(self, camera: str, height: int, width: int) -> tuple[int, int, int]:
        box = self.crops.get(camera)
        h, w = (box[2], box[3]) if box else (height, width)
        if self.encoder == "conv":
            return 3, h, w
        from robostack.rl.pretrained import FrozenFeatures

        return FrozenFeatures.shape_at(self.layer, h, w)

    def pixels(self, camera: str, frames: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(crop(frames, self.crops.get(camera)))).permute(0, 3, 1, 2)

    def __call__(self, camera: str, frames: np.ndarray, shift_pad: int = 0,
                 generator: torch.Generator | None = None, chunk: int = 16) -> Tensor:
        # chunk 16: at 64 frames a call the backbone's large activations cost more in page
        # faults than in arithmetic (18 against 7 ms a 128 px frame on one core).
        chw = self.pixels(camera, frames)
        if shift_pad:
            chw = random_shift(chw, shift_pad, generator)
        if self.encoder == "conv":
            return chw.contiguous()
        return torch.cat([self.backbone(chw[i:i + chunk]).contiguous() for i in range(0, len(chw), chunk)])


# --- training --------------------------------------------------------------------------------

def split_by_episode(episodes: np.ndarray, labels: np.ndarray, fraction: float,
                     rng: np.random.Generator, tries: int = 100) -> np.ndarray:
    """A mask of the frames in held-out episodes (`fraction` of the episodes, at least one),
    drawn until both the held-out and the training part have positives and negatives."""
    ids = np.unique(episodes)
    if len(ids) < 2:
        raise ValueError(f"{len(ids)} labelled episode(s): a validation split by episode needs "
                         "at least 2 (record more with `robostack record-labels`)")
    n_val = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    for _ in range(tries):
        held = np.isin(episodes, rng.permutation(ids)[:n_val])
        if all(len(set(labels[m].tolist())) == 2 for m in (held, ~held)):
            return held
    raise ValueError(f"no split of {len(ids)} episodes puts positives and negatives on both sides "
                     "(train and validation): record more episodes with successes and near misses")


@dataclass
class TrainedClassifier:
    net: SuccessNet
    inputs: FrameInputs
    threshold: float
    camera_sizes: dict[str, tuple[int, int]]
    config: ClassifierConfig
    validation: dict  # binary_report on the validation episodes at `threshold`
    validation_scores: np.ndarray
    validation_labels: np.ndarray
    task: str = ""
    data: dict = dataclasses.field(default_factory=dict)  # what it was trained on


def _scores(net: SuccessNet, inputs: dict[str, Tensor], batch: int = 256) -> np.ndarray:
    net.eval()
    n = len(next(iter(inputs.values())))
    with torch.no_grad():
        out = [torch.sigmoid(net({c: x[i:i + batch] for c, x in inputs.items()})) for i in range(0, n, batch)]
    return torch.cat(out).numpy().astype(np.float64)


def fit(config: ClassifierConfig, frames: dict[str, np.ndarray], labels: np.ndarray,
        episodes: np.ndarray, task: str = "", progress=print) -> TrainedClassifier:
    """Train on `frames` {camera: (N, H, W, 3) uint8} with `labels` (N,) bool and the episode
    of each frame (N,), validate and calibrate on held-out episodes."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    labels, episodes = np.asarray(labels, bool), np.asarray(episodes)
    cameras = config.camera_list() or tuple(frames)
    missing = [c for c in cameras if c not in frames]
    if missing:
        raise ValueError(f"no frames of camera {missing} in the labels; they have {sorted(frames)}")
    crops = parse_crops(config.crops)
    unknown = sorted(set(crops) - set(cameras))
    if unknown:
        raise ValueError(f"--crops names camera {unknown}, the classifier looks at {list(cameras)}")
    held = split_by_episode(episodes, labels, config.validation_fraction, rng)
    train_idx, val_idx = np.flatnonzero(~held), np.flatnonzero(held)
    sizes = {c: tuple(frames[c].shape[1:3]) for c in cameras}
    inputs = FrameInputs(config.encoder, config.encoder_layer, crops)
    frozen = config.encoder != "conv"
    t0 = time.perf_counter()
    if frozen:  # every training frame's shifted views through the backbone, once
        views = {c: torch.stack([inputs(c, frames[c][train_idx], config.image_pad if v else 0, generator)
                                 for v in range(config.augment_views)]) for c in cameras}
        progress(f"features of {len(train_idx)} training frames x {config.augment_views} views x "
                 f"{len(cameras)} camera(s) in {time.perf_counter() - t0:.0f} s")
    else:
        views = {c: inputs.pixels(c, frames[c][train_idx]).contiguous()[None] for c in cameras}
    val_inputs = {c: inputs(c, frames[c][val_idx]) for c in cameras}
    net = SuccessNet({c: inputs.shape(c, *sizes[c]) for c in cameras}, "features" if frozen else "pixels",
                     config.latent_dim, config.head_channels, config.hidden, config.dropout)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    train_labels = labels[train_idx]
    positives, negatives = np.flatnonzero(train_labels), np.flatnonzero(~train_labels)
    half = config.batch_size // 2
    target = torch.cat([torch.ones(half), torch.zeros(half)])
    best, best_loss, report_every = None, math.inf, max(1, config.steps // 10)
    loss_fn = nn.BCEWithLogitsLoss()
    for step in range(1, config.steps + 1):
        net.train()
        index = torch.from_numpy(np.concatenate([rng.choice(positives, half), rng.choice(negatives, half)]))
        view = torch.from_numpy(rng.integers(0, len(next(iter(views.values()))), len(index)))
        batch = {c: x[view, index] for c, x in views.items()}
        if not frozen and config.image_pad:
            batch = {c: random_shift(x, config.image_pad, generator) for c, x in batch.items()}
        loss = loss_fn(net(batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % report_every == 0 or step == config.steps:
            scores = _scores(net, val_inputs)
            eps = 1e-6
            y = labels[val_idx]
            # Balanced validation loss: each class weighs half, as in training.
            val_loss = -0.5 * (np.log(np.clip(scores[y], eps, 1)).mean() + np.log(np.clip(1 - scores[~y], eps, 1)).mean())
            if val_loss < best_loss:
                best_loss, best = val_loss, {k: v.clone() for k, v in net.state_dict().items()}
            progress(f"step {step}/{config.steps}  train loss {loss.item():.4f}  validation loss "
                     f"{val_loss:.4f}{'  (best)' if best_loss == val_loss else ''}")
    net.load_state_dict(best)  # the step with the lowest validation loss
    scores, y = _scores(net, val_inputs), labels[val_idx]
    threshold = threshold_for_fpr(scores[~y], config.target_fpr, config.calibration_confidence)
    data = {"frames": int(len(labels)), "positives": int(labels.sum()),
            "episodes": int(len(np.unique(episodes))), "validation_episodes": int(len(np.unique(episodes[held]))),
            "validation_frames": int(len(val_idx)), "seconds": round(time.perf_counter() - t0, 1)}
    return TrainedClassifier(net.eval(), inputs, float(threshold), sizes, config,
                             binary_report(y, scores, threshold), scores, y, task, data)


# --- the file --------------------------------------------------------------------------------

def _plain(value):
    """Report values as the file may hold them (weights_only loading): floats, ints, str."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    return value


def save_classifier(path: str | Path, trained: TrainedClassifier) -> Path:
    """One file: weights, threshold, cameras and their sizes, crops, the config and the report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = trained.config
    content = {
        "task": trained.task, "cameras": {c: list(s) for c, s in trained.camera_sizes.items()},
        "crops": {c: list(b) for c, b in trained.inputs.crops.items()},
        "encoder": config.encoder, "encoder_layer": config.encoder_layer,
        "net": {"kind": trained.net.kind, "latent_dim": config.latent_dim,
                "head_channels": config.head_channels, "hidden": config.hidden, "dropout": config.dropout},
        "state_dict": dict(trained.net.state_dict()), "threshold": trained.threshold,
        "target_fpr": config.target_fpr, "config": _plain(dataclasses.asdict(config)),
        "validation": _plain(trained.validation), "data": _plain(trained.data),
    }
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "content": content,
               "sha256": state_digest(content)}
    with atomic_write(path) as f:
        torch.save(payload, f)
    return path


class SuccessClassifier:
    """A trained classifier, loaded for use as a reward: `probability(obs)` of the frame(s) in
    `obs` and `threshold` (positive iff probability >= threshold)."""

    def __init__(self, content: dict, path: str = ""):
        self.path, self.content = path, content
        self.task = content["task"]
        self.camera_sizes = {c: tuple(s) for c, s in content["cameras"].items()}
        self.crops = {c: tuple(b) for c, b in content["crops"].items()}
        self.threshold = float(content["threshold"])
        self.encoder, self.encoder_layer = content["encoder"], content["encoder_layer"]
        self.inputs = FrameInputs(self.encoder, self.encoder_layer, self.crops)
        arch = content["net"]
        self.net = SuccessNet({c: self.inputs.shape(c, *s) for c, s in self.camera_sizes.items()},
                              arch["kind"], arch["latent_dim"], arch["head_channels"], arch["hidden"],
                              arch["dropout"])
        self.net.load_state_dict(content["state_dict"])
        self.net.eval()
        self.features_layer: str | None = None  # the policy's cached features' cut, if reusable

    @classmethod
    def load(cls, path: str | Path, task: str | None = None,
             camera_sizes: dict[str, tuple[int, int]] | None = None) -> SuccessClassifier:
        """Load and verify; with `task` and `camera_sizes` (the env's {camera: (H, W)}), refuse
        a classifier trained for another task or camera layout (ClassifierMismatch)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no classifier file there (train one with "
                                    "`robostack train-classifier`)")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ClassifierMismatch(f"{path}: unreadable classifier file ({type(e).__name__}: {e}); "
                                     "train it again with `robostack train-classifier`") from e
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
            raise ClassifierMismatch(f"{path}: not a robostack success classifier (a checkpoint? "
                                     "pass the file `robostack train-classifier --out` wrote)")
        if payload.get("version") != FORMAT_VERSION:
            raise ClassifierMismatch(f"{path}: classifier format v{payload.get('version')}, this "
                                     f"robostack reads v{FORMAT_VERSION}: train it again")
        if state_digest(payload["content"]) != payload.get("sha256"):
            raise ClassifierMismatch(f"{path}: checksum mismatch, the file is damaged; restore it "
                                     "or train it again")
        classifier = cls(payload["content"], str(path))
        classifier.check(task, camera_sizes)
        return classifier

    def check(self, task: str | None, camera_sizes: dict | None) -> None:
        where = f"{self.path or 'the classifier'}"
        if task is not None and self.task and task != self.task:
            raise ClassifierMismatch(f"{where} was trained on labels of task {self.task!r}, this run's "
                                     f"task is {task!r}: train one on {task} labels")
        if camera_sizes is None:
            return
        wrong = {c: s for c, s in self.camera_sizes.items() if tuple(camera_sizes.get(c) or ()) != s}
        if wrong:
            raise ClassifierMismatch(
                f"{where} looks at cameras {self.camera_sizes} (height, width); this env observes "
                f"{ {c: tuple(s) for c, s in camera_sizes.items()} or 'none'}: run with --cameras "
                f"{','.join(self.camera_sizes)} at those sizes, or train a classifier on this layout")

    def _input(self, camera: str, obs: dict) -> Tensor:
        features = obs.get(FEATURE_PREFIX + camera)
        if features is not None and self.features_layer == self.encoder_layer and \
                self.encoder != "conv" and camera not in self.crops:
            return torch.from_numpy(np.ascontiguousarray(features))[None].permute(0, 3, 1, 2)
        image = obs.get(IMAGE_PREFIX + camera)
        if image is None:
            raise KeyError(f"the observation has no {IMAGE_PREFIX}{camera}: the classifier needs "
                           f"that camera (the env must observe it)")
        return self.inputs(camera, np.asarray(image)[None])

    def probability(self, obs: dict) -> float:
        with torch.no_grad():
            logit = self.net({c: self._input(c, obs) for c in self.camera_sizes})
        return float(torch.sigmoid(logit)[0])

    def probabilities(self, frames: dict[str, np.ndarray]) -> np.ndarray:
        """Scores of stacked frames {camera: (N, H, W, 3)}: evaluation on a label log."""
        return _scores(self.net, {c: self.inputs(c, frames[c]) for c in self.camera_sizes})
