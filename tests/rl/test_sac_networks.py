"""Networks of the SAC agent, each checked against a plain reference implementation."""

import math

import pytest
import torch
from torch import nn

from robostack.rl.networks import (ConvEncoder, Critic, EnsembleMLP, ObservationEncoder, ResNetEncoder,
                                   TanhGaussianActor)

torch.set_num_threads(1)


def member_as_sequential(ens: EnsembleMLP, e: int) -> nn.Sequential:
    """Member e of the ensemble as an ordinary Linear/LayerNorm/ReLU stack with copied weights."""
    layers = []
    n = len(ens.weights)
    for i in range(n):
        w = ens.weights[i][e]
        lin = nn.Linear(w.shape[0], w.shape[1])
        lin.weight.data.copy_(w.T)
        lin.bias.data.copy_(ens.biases[i][e, 0])
        layers.append(lin)
        if i < n - 1:
            ln = nn.LayerNorm(w.shape[1])
            ln.weight.data.copy_(ens.ln_weights[i][e, 0])
            ln.bias.data.copy_(ens.ln_biases[i][e, 0])
            layers += [ln, nn.ReLU()]
    return nn.Sequential(*layers)


@pytest.fixture
def ensemble():
    torch.manual_seed(0)
    ens = EnsembleMLP(5, 7, (16, 16), 3, layer_norm=True)
    with torch.no_grad():  # non-trivial LayerNorm affine so the check covers it
        for p in [*ens.ln_weights, *ens.ln_biases]:
            p.normal_()
    return ens


def test_batched_ensemble_equals_members_one_by_one(ensemble):
    x = torch.randn(11, 7)
    out = ensemble(x)
    assert out.shape == (5, 11, 3)
    ref = torch.stack([member_as_sequential(ensemble, e)(x) for e in range(5)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # Per-member inputs (E, B, in) too.
    xs = torch.randn(5, 11, 7)
    ref = torch.stack([member_as_sequential(ensemble, e)(xs[e]) for e in range(5)])
    torch.testing.assert_close(ensemble(xs), ref, atol=1e-5, rtol=1e-5)


def test_member_subset_computes_only_those_members(ensemble):
    x = torch.randn(4, 7)
    idx = torch.tensor([3, 1])
    torch.testing.assert_close(ensemble(x, members=idx), ensemble(x)[idx], atol=1e-6, rtol=1e-6)


def test_members_differ_and_detach_params_blocks_weight_gradients(ensemble):
    x = torch.randn(4, 7, requires_grad=True)
    out = ensemble(x)
    assert not torch.allclose(out[0], out[1])
    ensemble(x, detach_params=True).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in ensemble.parameters())


def test_critic_shape():
    critic = Critic(6, 2, (8,), num_members=4)
    assert critic(torch.randn(3, 6), torch.randn(3, 2)).shape == (4, 3)


def test_tanh_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(1)
    actor = TanhGaussianActor(5, 3, (16,))
    feats = torch.randn(64, 5)
    g = torch.Generator().manual_seed(0)
    a, logp = actor.sample(feats, g)
    mean, log_std = actor.distribution(feats)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()])
    ref = dist.log_prob(a.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)
    assert a.abs().max() < 1
    torch.testing.assert_close(logp, ref, atol=1e-3, rtol=1e-4)
    assert torch.equal(actor.mode(feats), torch.tanh(mean))


def test_conv_encoder_takes_uint8_chw_and_hwc_views_alike():
    torch.manual_seed(0)
    enc = ConvEncoder((3, 32, 32), latent_dim=10)
    hwc = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    out_view = enc(hwc.permute(0, 3, 1, 2))
    out_contig = enc(hwc.permute(0, 3, 1, 2).contiguous())
    assert out_view.shape == (2, 10) and out_view.dtype == torch.float32
    torch.testing.assert_close(out_view, out_contig)


@pytest.mark.parametrize("layout", sorted(ConvEncoder.LAYOUTS))
def test_conv_encoder_equals_plain_normalise_then_conv_stack(layout):
    """The first conv's folded normalisation (W / 255, b - 0.5 sum W) is x / 255 - 0.5 then the conv."""
    torch.manual_seed(0)
    enc = ConvEncoder((3, 48, 48), 12, *ConvEncoder.LAYOUTS[layout])
    images = torch.randint(0, 256, (4, 3, 48, 48), dtype=torch.uint8)
    x = images.float() / 255.0 - 0.5
    for layer in enc.convs:  # nn.Conv2d / nn.ReLU exactly as constructed
        x = layer(x)
    ref = enc.project(x.flatten(1))
    torch.testing.assert_close(enc(images), ref, atol=1e-5, rtol=1e-5)
    ref.sum().backward()
    grads = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc(images).sum().backward()
    for g, p in zip(grads, enc.parameters()):
        torch.testing.assert_close(p.grad, g, atol=1e-4, rtol=1e-4)


def test_resnet_loads_local_torchvision_named_weights_and_freezes(tmp_path):
    torch.manual_seed(0)
    source = ResNetEncoder((3, 32, 32), latent_dim=8, depth=10)
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-default statistics must survive the load
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("project")}
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                "layer4.0.bn2.bias"):
        assert key in state  # torchvision's names
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # ignored
    path = tmp_path / "resnet10.pt"
    torch.save(state, path)

    torch.manual_seed(1)
    loaded = ResNetEncoder((3, 32, 32), latent_dim=8, depth=10, pretrained_path=path, frozen=True)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(loaded.backbone(images), source.backbone(images))
    loaded.train()  # BatchNorm must keep using the stored statistics
    torch.testing.assert_close(loaded.backbone(images), source.backbone(images))
    loaded(images).sum().backward()
    assert loaded.conv1.weight.grad is None and loaded.layer4[0].conv2.weight.grad is None
    assert loaded.project[0].weight.grad is not None

    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises((ValueError, RuntimeError)):
        ResNetEncoder((3, 32, 32), depth=10, pretrained_path=tmp_path / "bad.pt")


def test_trainable_resnet18_gets_gradients():
    enc = ResNetEncoder((3, 32, 32), latent_dim=4, depth=18, widths=(8, 8, 16, 16))
    assert len(enc.layer1) == 2
    enc(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)).sum().backward()
    assert enc.conv1.weight.grad.abs().sum() > 0


def test_observation_encoder_state_only_is_identity_and_cameras_are_fused():
    enc = ObservationEncoder(4, {})
    state = torch.randn(3, 4)
    assert torch.equal(enc({"state": state}), state) and enc.out_dim == 4  # identity until set_state_scale
    enc = ObservationEncoder(4, {"images/wrist": (3, 32, 32), "images/front": (3, 32, 32)}, latent_dim=5,
                             proprio_latent_dim=6)
    obs = {"state": state, "images/front": torch.zeros(3, 3, 32, 32, dtype=torch.uint8),
           "images/wrist": torch.zeros(3, 3, 32, 32, dtype=torch.uint8)}
    out = enc(obs)
    assert out.shape == (3, 16) == (3, enc.out_dim)
    assert math.isfinite(out.sum().item())
