"""Random-shift augmentation: shape, dtype, bounded shifts, independence, reproducibility."""

import pytest
import torch
import torch.nn.functional as F

from robostack.rl.augment import augment_observations, random_shift

torch.set_num_threads(1)


def coordinate_images(b: int, h: int, w: int) -> torch.Tensor:
    """Channel 0 holds the row index, channel 1 the column index, channel 2 the sample index."""
    img = torch.zeros(b, 3, h, w, dtype=torch.uint8)
    img[:, 0] = torch.arange(h, dtype=torch.uint8)[:, None]
    img[:, 1] = torch.arange(w, dtype=torch.uint8)[None, :]
    img[:, 2] = torch.arange(b, dtype=torch.uint8)[:, None, None]
    return img


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shape_and_dtype_kept(dtype):
    img = torch.randint(0, 256, (5, 3, 20, 24)).to(dtype)
    out = random_shift(img, 4, torch.Generator().manual_seed(0))
    assert out.shape == img.shape and out.dtype == dtype


def test_each_sample_is_a_whole_image_shift_of_at_most_pad_with_replicated_edges():
    b, h, w, pad = 64, 20, 24, 4
    img = coordinate_images(b, h, w)
    out = random_shift(img, pad, torch.Generator().manual_seed(0))
    dy = out[:, 0, h // 2, w // 2].long() - h // 2
    dx = out[:, 1, h // 2, w // 2].long() - w // 2
    assert dy.abs().max() <= pad and dx.abs().max() <= pad
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 10  # per-sample shifts, not one for the batch
    assert dy.abs().max() == pad  # the full range is used
    for i in range(b):  # reference: replicate-pad then crop, sample by sample
        padded = F.pad(img[i:i + 1].float(), (pad,) * 4, mode="replicate")
        y0, x0 = pad + int(dy[i]), pad + int(dx[i])
        assert torch.equal(out[i], padded[0, :, y0:y0 + h, x0:x0 + w].to(torch.uint8))


def test_seeded_generator_reproduces_and_pad_zero_is_identity():
    img = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    a = random_shift(img, 4, torch.Generator().manual_seed(3))
    b = random_shift(img, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert random_shift(img, 0) is img


def test_every_camera_shifted_independently_state_untouched():
    b = 32
    obs = {"state": torch.randn(b, 4), "images/front": coordinate_images(b, 16, 16),
           "images/wrist": coordinate_images(b, 16, 16)}
    out = augment_observations(obs, 4, torch.Generator().manual_seed(0))
    assert out["state"] is obs["state"]
    assert not torch.equal(out["images/front"], obs["images/front"])
    assert not torch.equal(out["images/front"], out["images/wrist"])
