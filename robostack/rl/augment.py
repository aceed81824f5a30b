"""Random-shift image augmentation (DrQ): pad 4 with edge pixels, random crop back to size.

Done by index arithmetic instead of an explicit pad: reading row clamp(i + dy) is exactly
"replicate-pad then crop at offset dy". Works on uint8 (no float copy), one shift per sample,
vectorised over the batch: a row gather (index_select of whole rows) then a column gather.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robostack.rl.networks import IMAGE_PREFIX


def random_shift(images: Tensor, pad: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """images (B, C, H, W), any dtype → same shape and dtype, each sample shifted by an integer
    (dy, dx) drawn uniformly from [-pad, pad]^2, borders replicated."""
    if pad == 0:
        return images
    b, c, h, w = images.shape
    dev = images.device
    shifts = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=dev) - pad
    rows = (torch.arange(h, device=dev) + shifts[:, :1]).clamp_(0, h - 1)          # (B, H)
    cols = (torch.arange(w, device=dev) + shifts[:, 1:]).clamp_(0, w - 1)          # (B, W)
    plane = (torch.arange(b, device=dev)[:, None] * c + torch.arange(c, device=dev)) * h  # (B, C)
    row_index = (plane[:, :, None] + rows[:, None, :]).reshape(-1)
    out = images.contiguous().view(b * c * h, w).index_select(0, row_index).view(b, c, h, w)
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def augment_observations(observations: dict[str, Tensor], pad: int = 4,
                         generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Random-shift every "images/<camera>" entry independently; other keys pass through."""
    return {k: random_shift(v, pad, generator) if k.startswith(IMAGE_PREFIX) else v
            for k, v in observations.items()}
