from __future__ import annotations

import pytest
import torch
from torch import nn

from robench.errors import RobenchError
from robench.models import ARCHITECTURES, Normalize, build_model

# Image architectures; soundnet5 takes (1, 1, T) waveforms and is tested in tests/test_audio.py.
ALL_ARCHS = sorted(a for a in ARCHITECTURES if a != "soundnet5")

# (in_channels, image_size, archs expected to handle it)
SHAPES = {
    "digits": (1, (8, 8), ["small-cnn", "lenet"]),
    "mnist": (1, (28, 28), ALL_ARCHS),
    "cifar": (3, (32, 32), ALL_ARCHS),
}


def _stats(channels: int):
    return (0.5,) * channels, (0.25,) * channels


@pytest.mark.parametrize(
    "arch,channels,size",
    [(arch, c, size) for c, size, archs in SHAPES.values() for arch in archs],
)
def test_logits_shape(arch, channels, size):
    torch.manual_seed(0)
    model = build_model(arch, channels, 7, size, *_stats(channels)).eval()
    x = torch.rand(2, channels, *size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    # Attacks need input gradients through the whole model, Normalize included.
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["resnet18", "vgg16", "vgg19"])
def test_cifar_archs_also_run_at_digits_size(arch):
    model = build_model(arch, 1, 10, (8, 8), *_stats(1)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_non_square_and_odd_sizes():
    for arch in ALL_ARCHS:
        model = build_model(arch, 3, 4, (15, 9), *_stats(3)).eval()
        with torch.no_grad():
            assert model(torch.rand(2, 3, 15, 9)).shape == (2, 4)


def test_lenet_matches_bpfc_shape_at_mnist_size():
    model = build_model("lenet", 1, 10, (28, 28), *_stats(1))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert all(c.kernel_size == (5, 5) for c in convs)
    assert linears[0].in_features == 64 * 7 * 7


def test_param_counts_match_the_standard_cifar_variants():
    counts = {arch: sum(p.numel() for p in build_model(arch, 3, 10, (32, 32), *_stats(3)).parameters())
              for arch in ("resnet18", "vgg16")}
    assert counts["resnet18"] == 11_173_962
    assert counts["vgg16"] == 14_728_266


def test_model_layout_and_plain_layers():
    model = build_model("small-cnn", 1, 10, (8, 8), (0.3,), (0.4,))
    assert isinstance(model, nn.Sequential)
    assert isinstance(model[0], Normalize) and isinstance(model.normalize, Normalize)
    assert any(type(m) is nn.Conv2d for m in model.modules())
    assert any(type(m) is nn.Linear for m in model.modules())
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_normalize_normalizes():
    norm = Normalize((0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    assert norm.mean.shape == (1, 3, 1, 1) and norm.std.shape == (1, 3, 1, 1)
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.5, 0.25, 2.0]
    ).view(1, 3, 1, 1)
    assert torch.allclose(norm(x), expected)
    # Stored with the weights, so a reloaded model normalizes the same way.
    assert {"mean", "std"} <= set(norm.state_dict())


def test_model_normalize_uses_given_stats():
    model = build_model("lenet", 1, 10, (8, 8), (0.25,), (0.5,))
    x = torch.full((1, 1, 8, 8), 0.75)
    assert torch.allclose(model.normalize(x), torch.ones_like(x))


def test_unknown_arch_lists_close_matches():
    with pytest.raises(RobenchError) as info:
        build_model("resnet-18", 3, 10, (32, 32), *_stats(3))
    message = str(info.value)
    assert "unknown architecture 'resnet-18'" in message and "'resnet18'" in message


def test_stats_must_match_channels():
    with pytest.raises(RobenchError, match="input channel"):
        build_model("small-cnn", 3, 10, (32, 32), (0.5,), (0.25,))
    with pytest.raises(RobenchError, match="positive"):
        build_model("small-cnn", 1, 10, (8, 8), (0.5,), (0.0,))
